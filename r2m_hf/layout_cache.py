"""The layout cache: a :class:`~r2m_hf.groups.ModelLayout` stored as a small JSON file per architecture and config.

Building a layout instantiates the architecture on the meta device, which imports transformers' modeling code (the
largest part of a merge's start-up). :func:`load_layout` builds it once and stores its names, shapes, groups, head
names, on-disk names and known checkpoint-key aliases under ``$R2M_HF_CACHE/layouts`` (default
``~/.cache/r2m_hf/layouts``); later runs read that file back. A file belongs to one key: the config (every field
but its provenance), the transformers and r2m-hf versions and the grouping rules' source, so any of them changing
builds a new one. The cache never fails a merge: a file that cannot be read, parsed or trusted is rebuilt and
rewritten, one that cannot be written is skipped, and files are replaced atomically, so concurrent merges only ever
see complete files.
"""

from __future__ import annotations

import functools
import hashlib
import json
import logging
import os
import tempfile
from pathlib import Path
from typing import Any

from ._version import __version__
from .groups import Group, ModelLayout, build_layout

logger = logging.getLogger(__name__)

FORMAT = 1
CACHE_ENV = "R2M_HF_CACHE"
# Config fields that say where a config came from, not what the model is.
_PROVENANCE = ("_name_or_path", "_commit_hash", "transformers_version")


def cache_root() -> Path:
    """r2m-hf's cache folder: ``$R2M_HF_CACHE``, else ``~/.cache/r2m_hf``."""
    root = os.environ.get(CACHE_ENV)
    return Path(root).expanduser() if root else Path.home() / ".cache" / "r2m_hf"


def cache_dir() -> Path:
    """Where layouts are cached: ``<cache_root>/layouts``."""
    return cache_root() / "layouts"


def layout_key(config) -> dict[str, str]:
    """What a cached layout depends on: the config's content, the library versions and the grouping rules."""
    import transformers

    fields = json.loads(config.to_json_string(use_diff=False))
    for name in _PROVENANCE:
        fields.pop(name, None)
    content = json.dumps(fields, sort_keys=True, separators=(",", ":"))
    return {
        "format": str(FORMAT),
        "model_type": str(getattr(config, "model_type", "") or "unknown"),
        "config": hashlib.sha256(content.encode()).hexdigest(),
        "transformers": transformers.__version__,
        "r2m_hf": __version__,
        "rules": _rules_digest(),
    }


def cache_file(key: dict[str, str], folder: Path | None = None) -> Path:
    """The file of one key: ``<model_type>-<digest>.json``."""
    digest = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:24]
    safe_type = "".join(c if c.isalnum() or c in "-_" else "_" for c in key["model_type"])[:64]
    return (folder or cache_dir()) / f"{safe_type}-{digest}.json"


def load_layout(config, *, folder: Path | None = None) -> ModelLayout:
    """The layout of `config`'s architecture: from the cache, else built on the meta device and stored.

    Args:
        config (`PretrainedConfig`): a config whose `AutoModelForImageClassification` class is the target.
        folder (`Path`, *optional*): the cache folder (default :func:`cache_dir`).

    Returns:
        `ModelLayout`: equal to :func:`~r2m_hf.groups.build_layout`'s (its meta instance is built only if needed).
    """
    try:
        key = layout_key(config)
    except (TypeError, ValueError, AttributeError) as exc:  # a config transformers cannot serialise: no caching
        logger.debug("layout cache: no key for %s (%s)", type(config).__name__, exc)
        return build_layout(config)
    path = cache_file(key, folder)
    layout = read_layout(path, key, config)
    if layout is not None:
        return layout
    layout = build_layout(config)
    layout.disk_names()
    for candidate in _alias_candidates(layout):
        layout.canonical_name(candidate)
    layout.cache_entry = (path, key)
    write_layout(layout, key, path)
    return layout


def remember_aliases(layout: ModelLayout) -> None:
    """Store the checkpoint keys a cached layout has learned to map since it was read (no-op otherwise)."""
    if layout.learned and layout.cache_entry is not None:
        path, key = layout.cache_entry
        write_layout(layout, key, path)


def write_layout(layout: ModelLayout, key: dict[str, str], path: Path) -> bool:
    """Write `layout` to `path` atomically; returns False (and logs) when the cache cannot be written."""
    disk = layout.disk_names()
    data = {
        "key": key,
        "model_class": layout.model_class,
        "base_model_prefix": layout.base_model_prefix,
        "tensors": [[n, list(shape), layout.groups[n].value, disk[n]] for n, shape in layout.shapes.items()],
        "aliases": layout.aliases,
    }
    if not write_json_atomic(path, data):
        return False
    layout.learned = False
    return True


def write_json_atomic(path: Path, data: Any) -> bool:
    """Write `data` as JSON to `path` through a temporary file and a rename, so that readers only ever see a
    complete file; returns False (and logs) when it cannot be written. A cache write never fails the caller."""
    tmp = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.stem}.", suffix=".tmp", dir=path.parent)
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            json.dump(data, handle, separators=(",", ":"))
        os.chmod(tmp, 0o644)  # mkstemp's 0600 would hide a shared cache from other users
        os.replace(tmp, path)
    except (OSError, TypeError, ValueError) as exc:
        logger.debug("cache: cannot write %s (%s)", path, exc)
        if tmp is not None:
            Path(tmp).unlink(missing_ok=True)
        return False
    return True


def read_layout(path: Path, key: dict[str, str], config) -> ModelLayout | None:
    """The layout stored at `path` for `key`, or None when there is none or it cannot be trusted."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        return _parse(data, key, config, path)
    except FileNotFoundError:
        return None
    except (OSError, ValueError, TypeError, KeyError, AttributeError, RecursionError) as exc:
        logger.debug("layout cache: ignoring %s (%s)", path, exc)
        return None


def _parse(data: Any, key: dict[str, str], config, path: Path) -> ModelLayout:
    """A layout from a cache file's JSON; `ValueError` (or a type error) when it is not one for `key`."""
    import torch

    if not isinstance(data, dict) or data.get("key") != key:
        raise ValueError("written for another key")
    shapes: dict[str, torch.Size] = {}
    groups: dict[str, Group] = {}
    disk: dict[str, str] = {}
    for name, shape, group, disk_name in data["tensors"]:
        if not (isinstance(name, str) and isinstance(disk_name, str)) or name in shapes:
            raise ValueError(f"bad tensor entry {name!r}")
        if not all(isinstance(d, int) and not isinstance(d, bool) and d >= 0 for d in shape):
            raise ValueError(f"bad shape of {name}")
        shapes[name] = torch.Size(shape)
        groups[name] = Group(group)
        disk[name] = disk_name
    aliases = data["aliases"]
    if not shapes or len(set(disk.values())) != len(disk) or not isinstance(aliases, dict):
        raise ValueError("bad tensor or alias table")
    if any(not isinstance(k, str) or (v is not None and v not in shapes) for k, v in aliases.items()):
        raise ValueError("an alias names no tensor of the layout")
    if not isinstance(data["model_class"], str) or not isinstance(data["base_model_prefix"], str):
        raise ValueError("bad model class or prefix")
    head_names = [n for n in shapes if groups[n] is Group.HEAD]
    if not head_names:
        raise ValueError("no head")
    return ModelLayout(
        config=config,
        model_class=data["model_class"],
        shapes=shapes,
        groups=groups,
        head_names=head_names,
        base_model_prefix=data["base_model_prefix"],
        aliases=dict(aliases),
        disk=disk,
        cache_entry=(path, key),
    )


def _alias_candidates(layout: ModelLayout) -> list[str]:
    """Checkpoint keys worth knowing up front: the on-disk names, and every name without the base-model prefix."""
    prefix = f"{layout.base_model_prefix}." if layout.base_model_prefix else None
    disk = layout.disk_names()
    found = []
    for name in layout.shapes:
        for key in (disk[name], name):
            found.append(key)
            if prefix and key.startswith(prefix):
                found.append(key[len(prefix) :])
    return found


@functools.cache
def _rules_digest() -> str:
    """A digest of the grouping code, so that changing the rules invalidates layouts built with the old ones."""
    from . import groups

    try:
        return hashlib.sha256(Path(groups.__file__).read_bytes()).hexdigest()[:16]
    except (OSError, TypeError):  # no source file (a frozen install): the version alone decides
        return ""


__all__ = [
    "CACHE_ENV",
    "cache_dir",
    "cache_file",
    "cache_root",
    "layout_key",
    "load_layout",
    "read_layout",
    "remember_aliases",
    "write_json_atomic",
    "write_layout",
]
