"""Where r2m-hf may read and write: every file read for a model stays inside that model, and no output touches an input.

A model folder's files are read only when their real path (after every symlink, :func:`os.path.realpath`) lies inside
the folder itself or, for a snapshot of the Hugging Face cache (``models--org--name/snapshots/<commit>/``), inside
that repo's own blob store (``models--org--name/blobs/``), where the snapshot's symlinks point. A file name taken from
an input (a shard of an index) must be a plain file name. :func:`model_file` applies both rules; :func:`overlap`
tells whether an output path is, contains or lies inside an input, and :func:`hub_cache_dirs` lists the caches no
output may touch.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path

from .errors import CheckpointError, R2MError, clip

# Metadata files (config.json, adapter_config.json, shard indexes, processors, model cards) are small; a larger one
# is refused before it is read into memory.
MAX_METADATA_BYTES = 16 * 1024 * 1024
_HUB_REPO_PREFIXES = ("models--", "datasets--", "spaces--")


def real(path: str | Path) -> Path:
    """The path with every symlink resolved (missing components are kept as written)."""
    return Path(os.path.realpath(path))


def is_within(path: str | Path, root: str | Path) -> bool:
    """Whether `path` is `root` or lies below it (both taken as given: resolve them first)."""
    path, root = Path(path), Path(root)
    return path == root or root in path.parents


def model_roots(folder: str | Path) -> tuple[Path, ...]:
    """The folders a model's files may resolve into: the folder, and a Hub snapshot's own blob store."""
    folder = real(folder)
    roots = [folder]
    snapshots, repo = folder.parent, folder.parent.parent
    if snapshots.name == "snapshots" and repo.name.startswith(_HUB_REPO_PREFIXES) and (repo / "blobs").is_dir():
        roots.append(repo / "blobs")
    return tuple(roots)


def is_plain_name(name: object) -> bool:
    """A bare file name: a non-empty string without a folder part, ``..``, a drive or a NUL."""
    return (
        isinstance(name, str)
        and 0 < len(name) <= 255
        and name not in (".", "..")
        and not any(sep in name for sep in ("/", "\\", "\0"))
        and not os.path.isabs(name)
        and ":" not in name[:2]
    )


def check_inside(path: str | Path, folder: str | Path, error: type[R2MError] = CheckpointError) -> Path:
    """Raise `error` unless `path` resolves inside `folder` (or its Hub blob store); returns `path`."""
    target = real(path)
    if not any(is_within(target, root) for root in model_roots(folder)):
        raise error(
            f"{clip(str(path))}: resolves to {clip(str(target))}, outside the model folder {clip(str(folder))} "
            "(a symlink or path leading out of it); r2m-hf reads nothing outside a model's own folder"
        )
    return Path(path)


def model_file(folder: str | Path, name: object, error: type[R2MError] = CheckpointError, *, what: str = "") -> Path:
    """``folder/name`` once checked: `name` is a plain file name and the file resolves inside the model.

    Args:
        folder (`str` or `Path`): the model folder.
        name (`str`): a file name, possibly read from an input (a shard listed in an index).
        error (`type`): the error to raise (the kind of input at fault).
        what (`str`, *optional*): where the name came from, for the message (e.g. ``model.safetensors.index.json``).

    Returns:
        `Path`: the file's path (which may not exist).
    """
    if not is_plain_name(name):
        where = f" in {what}" if what else ""
        raise error(
            f"{clip(str(folder))}: {clip(name if isinstance(name, str) else repr(name))!r}{where} is not a plain file "
            "name (a path leading elsewhere); a model's files are read from its own folder only"
        )
    return check_inside(Path(folder) / name, folder, error)


def read_small_file(path: Path, error: type[R2MError]) -> bytes:
    """The bytes of a metadata file, refused above :data:`MAX_METADATA_BYTES` (checked before reading)."""
    try:
        with open(path, "rb") as handle:
            size = os.fstat(handle.fileno()).st_size
            if size > MAX_METADATA_BYTES:
                raise error(f"{path}: {size:,} bytes is too large for a metadata file (at most {MAX_METADATA_BYTES:,})")
            data = handle.read(MAX_METADATA_BYTES + 1)
    except OSError as exc:
        if isinstance(exc, R2MError):
            raise
        raise error(f"{path}: cannot read ({exc.strerror or exc})") from None
    if len(data) > MAX_METADATA_BYTES:
        raise error(f"{path}: too large for a metadata file (at most {MAX_METADATA_BYTES:,} bytes)")
    return data


def hub_cache_dirs() -> list[Path]:
    """The Hugging Face caches (hub and assets; ``HF_HOME`` itself is left to the output checks' other rules)."""
    from huggingface_hub import constants

    found = [constants.HF_HUB_CACHE, getattr(constants, "HF_ASSETS_CACHE", None)]
    return [real(p) for p in found if p]


def overlap(output: str | Path, inputs: Iterable[str | Path]) -> Path | None:
    """The first input that `output` is, contains or lies inside (all compared after resolving symlinks)."""
    out = real(output)
    for item in inputs:
        path = real(item)
        if is_within(out, path) or is_within(path, out):
            return Path(item)
    return None


__all__ = [
    "MAX_METADATA_BYTES",
    "check_inside",
    "hub_cache_dirs",
    "is_plain_name",
    "is_within",
    "model_file",
    "model_roots",
    "overlap",
    "read_small_file",
    "real",
]
