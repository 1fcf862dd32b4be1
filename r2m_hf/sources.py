"""Model references → local folders: local paths directly, Hub repo ids through ``huggingface_hub``.

``snapshot_download`` treats any string as a repo id, so a local folder is detected first. Downloads use the
standard cache, token (``HF_TOKEN`` or the stored login), ``HF_ENDPOINT`` and ``HF_HUB_OFFLINE``. Every metadata file
of a model is read through :func:`read_model_json` (inside the model's folder, size-limited, a JSON object whose
fields r2m-hf uses have the right types), and a source is recorded without the machine's absolute paths unless asked.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import time
from dataclasses import dataclass, field
from pathlib import Path

from .config import SourceSpec, load_yaml
from .errors import ConfigError, R2MError, SourceError, clip
from .paths import is_within, model_file, read_small_file, real
from .recipe import SourceRecord

REPO_ID = re.compile(r"^[A-Za-z0-9][\w.-]*(/[\w.-]+)?$")
WEIGHT_PATTERNS = ["*.json", "*.safetensors", "README.md", "LICENSE*"]
PICKLE_PATTERNS = ["*.bin", "*.pt", "*.pth"]


@dataclass
class ResolvedSource:
    """Where a model reference lives on disk, and how it got there.

    Args:
        spec (`SourceSpec`): the reference as written.
        path (`Path`): the local folder holding its files.
        repo_id (`str`, *optional*): the Hub repo id when downloaded.
        commit (`str`, *optional*): the commit the download resolved to.
    """

    spec: SourceSpec
    path: Path
    repo_id: str | None = None
    commit: str | None = None
    file_hashes: dict[str, str] = field(default_factory=dict)
    base_dir: Path | None = None

    @property
    def is_adapter(self) -> bool:
        return (self.path / "adapter_config.json").is_file()

    def read_json(self, name: str) -> dict | None:
        """A metadata file of this model as a dict, None when absent (see :func:`read_model_json`)."""
        return read_model_json(self.path, name)

    def display_path(self, record_local_paths: bool = False) -> str:
        """How records and messages name this local input: relative to the recipe's folder when inside it, else by its
        folder name; the absolute path only with `record_local_paths`."""
        if record_local_paths:
            return str(self.path)
        if self.base_dir is not None and is_within(real(self.path), real(self.base_dir)):
            relative = real(self.path).relative_to(real(self.base_dir)).as_posix()
            return relative if relative != "." else real(self.path).name
        return self.path.name

    def declared_license(self) -> str | None:
        """The ``license`` of this input's model card (``README.md`` front matter), None when it declares none."""
        try:
            file = model_file(self.path, "README.md", SourceError)
            if not file.is_file():
                return None
            text = read_small_file(file, SourceError).decode("utf-8", errors="replace")
        except R2MError:  # a card that cannot be read tells nothing about the licence
            return None
        match = re.match(r"^\s*---\r?\n(.*?)\r?\n---\s*(\r?\n|$)", text, re.DOTALL)
        if match is None:
            return None
        try:
            meta = load_yaml(match[1], str(file), max_nodes=5_000)
        except ConfigError:
            return None
        value = meta.get("license") if isinstance(meta, dict) else None
        return value if isinstance(value, str) and LICENSE_ID.match(value) else None

    def record(self, record_local_paths: bool = False) -> SourceRecord:
        """The recipe's record of this input: what was asked for and what was actually used.

        A Hub input is recorded by repo id, revision and commit. A local input is recorded by its path relative to the
        recipe's folder (or its folder name) and its files' SHA-256, never by the machine's absolute path unless
        `record_local_paths` is set.
        """
        files = dict(sorted(self.file_hashes.items()))
        licence = self.declared_license()
        if self.repo_id:
            return SourceRecord(
                reference=str(self.spec),
                repo_id=self.repo_id,
                revision=self.spec.revision or "main",
                commit=self.commit,
                files=files,
                license=licence,
            )
        shown = self.display_path(record_local_paths)
        written = self.spec.reference.removeprefix("dfb:")  # a DeepfakeBench file: its path after the prefix
        relative = not Path(written).is_absolute() and not written.startswith("~") and ".." not in Path(written).parts
        reference = str(self.spec) if (record_local_paths or relative) else shown
        return SourceRecord(reference=reference, path=shown, files=files, license=licence)


# A licence identifier as the Hub's metadata has them (``apache-2.0``, ``cc-by-nc-4.0``, ``other``).
LICENSE_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9.+-]{0,63}$")


def read_model_json(folder: Path, name: str, error: type[R2MError] = SourceError) -> dict | None:
    """Read a model's metadata file as a JSON object, None when the folder has no such file.

    The file must resolve inside the model's folder, be at most a few MiB, hold a JSON object, and the fields r2m-hf
    reads from ``config.json`` and ``adapter_config.json`` must have the types transformers and peft write.

    Raises:
        `SourceError` (or `error`): naming the file and what is wrong with it.
    """
    file = model_file(folder, name, error)
    if not file.is_file():
        return None
    raw = read_small_file(file, error)
    try:
        data = json.loads(raw)
    except (ValueError, RecursionError) as exc:  # JSONDecodeError, UnicodeDecodeError, nesting too deep
        detail = clip(str(exc)) if not isinstance(exc, RecursionError) else "nested too deeply"
        raise error(f"{file}: not valid JSON ({detail}); re-save the model or fix the file") from None
    if not isinstance(data, dict):
        raise error(f"{file}: expected a JSON object, found {type(data).__name__}; re-save the model or fix the file")
    problem = _field_problem(name, data)
    if problem:
        raise error(f"{file}: {problem}; re-save the model or fix the file")
    return data


# The fields of metadata files that r2m-hf reads, and the types they must have.
_FIELD_TYPES = {
    "config.json": {"model_type": (str,), "id2label": (dict,), "label2id": (dict,)},
    "adapter_config.json": {
        "base_model_name_or_path": (str, type(None)),
        "revision": (str, type(None)),
        "peft_type": (str,),
        "use_dora": (bool, type(None)),
        "use_rslora": (bool, type(None)),
        "fan_in_fan_out": (bool, type(None)),
        "rank_pattern": (dict, type(None)),
        "alpha_pattern": (dict, type(None)),
        "target_modules": (list, str, type(None)),
        "modules_to_save": (list, type(None)),
    },
}


def _field_problem(name: str, data: dict) -> str | None:
    for key, types in _FIELD_TYPES.get(name, {}).items():
        if key in data and not isinstance(data[key], types):
            allowed = " or ".join("null" if t is type(None) else t.__name__ for t in types)
            return f"{key} must be {allowed}, not {type(data[key]).__name__}"
    labels = data.get("id2label") if name == "config.json" else None
    for key, value in (labels or {}).items():
        if not (isinstance(key, str) and key.lstrip("-").isdigit()) or not isinstance(value, str):
            return f"id2label must map class indices to names (found {clip(repr(key), 40)}: {clip(repr(value), 40)})"
    return None


def resolve_source(spec: SourceSpec, *, base_dir: Path | None = None, allow_pickle: bool = False) -> ResolvedSource:
    """Resolve a model reference to a local folder.

    Args:
        spec (`SourceSpec`): folder path or repo id, with an optional revision.
        base_dir (`Path`, *optional*): folder of the YAML file; relative paths are tried there first.
        allow_pickle (`bool`): also download pickle checkpoints (``*.bin``) from the Hub.

    Returns:
        `ResolvedSource`: the local folder and its provenance.
    """
    ref = spec.reference
    shown = clip(ref)
    try:
        candidates = [Path(ref).expanduser()]
        if base_dir is not None and not Path(ref).is_absolute():
            candidates.insert(0, base_dir / ref)
        for candidate in candidates:
            if candidate.is_dir():
                if spec.revision is not None:
                    raise SourceError(f"{shown}: a revision (@{clip(spec.revision)}) was given for a local folder")
                return ResolvedSource(spec=spec, path=candidate.resolve(), base_dir=base_dir)
            if candidate.exists():
                raise SourceError(f"{shown}: is a file; give the model's folder (with config.json) or a Hub repo id")
    except (OSError, ValueError) as exc:  # a name too long for the filesystem, a NUL byte, a loop of symlinks
        if isinstance(exc, R2MError):
            raise
        raise SourceError(f"{shown}: not a usable path ({clip(str(exc))}); check the reference") from None
    looks_local = ref.startswith((".", "/", "~")) or ref.count("/") > 1 or "\\" in ref
    if looks_local or not REPO_ID.match(ref) or len(ref) > 96:
        raise SourceError(f"{shown}: no such folder, and not a valid Hub repo id; check the path")
    from .hub import download_snapshot

    patterns = WEIGHT_PATTERNS + (PICKLE_PATTERNS if allow_pickle else [])
    path = download_snapshot(ref, spec.revision, allow_patterns=patterns)
    commit = path.name if re.fullmatch(r"[0-9a-f]{40}", path.name) else None
    return ResolvedSource(spec=spec, path=Path(path), repo_id=ref, commit=commit, base_dir=base_dir)


# A file hashed once is not hashed again while it stays the same file with the same contents: its SHA-256 is kept
# under ``<cache_root>/hashes`` keyed by what any change to it changes (device, inode, size, modification and change
# times in ns; the change time cannot be set back by a user). An entry is stored only for a file last changed well
# before the hash began (a later write then gets a later time) and unchanged while it was read.
HASH_CACHE_SETTLED_NS = 2_000_000_000
_SHA256 = re.compile(r"[0-9a-f]{64}")


def _hash_cache_entry(path: Path, st: os.stat_result) -> tuple[Path, str] | None:
    """The cache file and key of `path` as `st` describes it, or None when there is no cache folder to use."""
    from .layout_cache import cache_root

    try:
        key = f"{st.st_dev}:{st.st_ino}:{st.st_size}:{st.st_mtime_ns}:{st.st_ctime_ns}:{real(path)}"
        name = hashlib.sha256(key.encode("utf-8", "surrogateescape")).hexdigest()[:32]
        return cache_root() / "hashes" / f"{name}.json", key
    except (OSError, RuntimeError, ValueError):  # no home folder, an unresolvable path
        return None


def _cached_sha256(entry: tuple[Path, str] | None) -> str | None:
    if entry is None:
        return None
    try:
        data = json.loads(entry[0].read_text(encoding="utf-8"))
    except (OSError, ValueError, UnicodeError):
        return None
    if isinstance(data, dict) and data.get("key") == entry[1] and _SHA256.fullmatch(str(data.get("sha256", ""))):
        return data["sha256"]
    return None


def sha256_file(path: Path, chunk: int = 1 << 22, *, cache: bool = True) -> str:
    """SHA-256 of a file, streamed; for a Hub-cache file stored through LFS, the blob name already is its SHA-256.

    With `cache`, a file hashed by an earlier run and unchanged since (same device, inode, size, modification and
    change times) is not read again: its hash comes from ``<cache_root>/hashes`` (:mod:`r2m_hf.layout_cache`).
    """
    path = Path(path)
    try:
        if path.is_symlink():
            blob = Path(os.readlink(path)).name
            if _SHA256.fullmatch(blob) and path.resolve().parent.name == "blobs":
                return blob
        started = time.time_ns()
        before = os.stat(path)
        entry = _hash_cache_entry(path, before) if cache else None
        known = _cached_sha256(entry)
        if known is not None:
            return known
        digest = hashlib.sha256()
        with open(path, "rb") as fh:
            while block := fh.read(chunk):
                digest.update(block)
        after = os.stat(path)
    except OSError as exc:
        raise SourceError(f"{path}: cannot be read to hash it ({exc.strerror or exc})") from None
    settled = max(before.st_mtime_ns, before.st_ctime_ns) < started - HASH_CACHE_SETTLED_NS
    unchanged = (before.st_ino, before.st_size, before.st_mtime_ns, before.st_ctime_ns) == (
        after.st_ino,
        after.st_size,
        after.st_mtime_ns,
        after.st_ctime_ns,
    )
    if entry is not None and settled and unchanged:
        from .layout_cache import write_json_atomic

        write_json_atomic(entry[0], {"key": entry[1], "sha256": digest.hexdigest()})
    return digest.hexdigest()
