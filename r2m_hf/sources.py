"""Model references → local folders: local paths directly, Hub repo ids through ``huggingface_hub``.

``snapshot_download`` treats any string as a repo id, so a local folder is detected first. Downloads use the
standard cache, token (``HF_TOKEN`` or the stored login), ``HF_ENDPOINT`` and ``HF_HUB_OFFLINE``.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from dataclasses import dataclass, field
from pathlib import Path

from .config import SourceSpec
from .errors import SourceError
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

    @property
    def is_adapter(self) -> bool:
        return (self.path / "adapter_config.json").is_file()

    def read_json(self, name: str) -> dict | None:
        file = self.path / name
        if not file.is_file():
            return None
        try:
            return json.loads(file.read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError) as exc:
            raise SourceError(f"{file}: not valid JSON ({exc}); re-save the model or fix the file") from None

    def record(self) -> SourceRecord:
        """The recipe's record of this input: what was asked for and what was actually used."""
        files = dict(sorted(self.file_hashes.items()))
        if self.repo_id:
            return SourceRecord(
                reference=str(self.spec),
                repo_id=self.repo_id,
                revision=self.spec.revision or "main",
                commit=self.commit,
                files=files,
            )
        return SourceRecord(reference=str(self.spec), path=str(self.path), files=files)


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
    candidates = [Path(ref).expanduser()]
    if base_dir is not None and not Path(ref).is_absolute():
        candidates.insert(0, base_dir / ref)
    for candidate in candidates:
        if candidate.is_dir():
            if spec.revision is not None:
                raise SourceError(f"{ref}: a revision (@{spec.revision}) was given for a local folder")
            return ResolvedSource(spec=spec, path=candidate.resolve())
        if candidate.exists():
            raise SourceError(f"{ref}: is a file; give the model's folder (with config.json) or a Hub repo id")
    looks_local = ref.startswith((".", "/", "~")) or ref.count("/") > 1 or "\\" in ref
    if looks_local or not REPO_ID.match(ref):
        raise SourceError(f"{ref}: no such folder, and not a valid Hub repo id; check the path")
    from .hub import download_snapshot

    patterns = WEIGHT_PATTERNS + (PICKLE_PATTERNS if allow_pickle else [])
    path = download_snapshot(ref, spec.revision, allow_patterns=patterns)
    commit = path.name if re.fullmatch(r"[0-9a-f]{40}", path.name) else None
    return ResolvedSource(spec=spec, path=Path(path), repo_id=ref, commit=commit)


def sha256_file(path: Path, chunk: int = 1 << 22) -> str:
    """SHA-256 of a file, streamed; for a Hub-cache file stored through LFS, the blob name already is its SHA-256."""
    path = Path(path)
    if path.is_symlink():
        blob = Path(os.readlink(path)).name
        if re.fullmatch(r"[0-9a-f]{64}", blob) and path.resolve().parent.name == "blobs":
            return blob
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(chunk):
            digest.update(block)
    return digest.hexdigest()
