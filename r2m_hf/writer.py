"""The output folder: written into a temporary sibling folder and renamed into place at the end.

Weights are streamed: the safetensors headers are computed up front from the known shapes and dtype, so each merged
tensor goes to disk as soon as it is final and no model is ever held whole. Above `max_shard_bytes` the weights are
sharded with a ``model.safetensors.index.json`` as transformers writes them.

The output never touches an input: a path that is, contains or lies inside an input or a Hugging Face cache is
refused, with or without ``overwrite``, and ``overwrite`` replaces only a folder r2m-hf wrote (or an empty one)
unless ``overwrite_any`` confirms it. While it is written the output path is locked (``.NAME.lock`` beside it, held
with ``flock`` and holding the writer's PID): a second writer is refused, temporary siblings left by a killed writer
are removed (and said so) by the next one, and the final rename never replaces a folder that appeared meanwhile.
"""

from __future__ import annotations

import ctypes
import errno
import fcntl
import json
import logging
import math
import os
import shutil
import struct
import tempfile
from collections.abc import Iterable
from pathlib import Path

import torch

from .errors import OutputError, clip
from .paths import hub_cache_dirs, overlap

SAFETENSORS_DTYPES = {torch.float32: "F32", torch.float64: "F64", torch.float16: "F16", torch.bfloat16: "BF16"}
DEFAULT_MAX_SHARD_BYTES = 5 * 1024**3
# A folder holding one of these was written by r2m-hf: `overwrite` may replace it.
MERGE_MARKERS = ("merge_config.yaml", "merge_report.json")

logger = logging.getLogger("r2m_hf")


def output_error(path: Path, exc: OSError, doing: str = "write the output") -> OutputError:
    """One line for an OSError on the output side, with what to do for the common causes."""
    hints = {
        errno.ENOSPC: "the filesystem is full: free space or choose another output folder",
        errno.EDQUOT: "the disk quota is exceeded: free space or choose another output folder",
        errno.EROFS: "the filesystem is read-only: choose a writable output folder",
        errno.EACCES: "permission denied: choose a folder you can write to",
        errno.EPERM: "operation not permitted: choose a folder you can write to",
        errno.ENOTDIR: "a part of the path is a file, not a folder: choose another output path",
        errno.EEXIST: "a file is in the way: choose another output path",
        errno.ENAMETOOLONG: "the path is too long: choose a shorter output path",
    }
    code = errno.errorcode.get(exc.errno or 0, "error")
    hint = hints.get(exc.errno or 0, "check the output path and the filesystem")
    return OutputError(f"{path}: cannot {doing}: {exc.strerror or exc} ({code}); {hint}; nothing was written")


def is_merge_output(folder: Path, markers: Iterable[str] = MERGE_MARKERS) -> bool:
    """Whether `folder` is an output r2m-hf wrote (it holds one of `markers`)."""
    return any((folder / marker).is_file() for marker in markers)


class OutputLock:
    """An exclusive lock on an output path, held by this process until :meth:`release` (or its death).

    The lock file ``.NAME.lock`` beside the output holds the owner's PID; ``flock`` makes the lock die with its
    process, so a lock file left by a killed writer is simply taken over.

    Args:
        path (`Path`): the (resolved) output path.
    """

    def __init__(self, path: Path):
        self.file = path.with_name(f".{path.name}.lock")
        while True:
            fd = os.open(self.file, os.O_RDWR | os.O_CREAT, 0o644)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                owner = os.pread(fd, 32, 0).decode(errors="replace").strip() or "?"
                os.close(fd)
                raise OutputError(
                    f"{path}: another r2m-hf process (PID {owner}) is writing this output; wait for it to finish or "
                    "choose another output folder"
                ) from None
            except BaseException:
                os.close(fd)
                raise
            try:  # the file we locked may have been unlinked by its previous owner meanwhile: lock the current one
                same = os.stat(self.file).st_ino == os.fstat(fd).st_ino
            except FileNotFoundError:
                same = False
            if same:
                break
            os.close(fd)
        self._fd = fd
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)

    def release(self) -> None:
        if self._fd < 0:
            return
        try:
            os.unlink(self.file)  # while still holding it, so no one locks a file about to vanish
        except OSError:
            pass
        os.close(self._fd)
        self._fd = -1


class OutputFolder:
    """An output folder that appears only when complete.

    Args:
        path (`Path`): the final folder.
        overwrite (`bool`): replace an existing non-empty folder that r2m-hf wrote (it holds one of `markers`).
        overwrite_any (`bool`): also replace an existing folder r2m-hf did not write (an explicit confirmation).
        inputs (`list[Path]`): the inputs of the run; an output that is, contains or lies inside one is refused.
        markers (`tuple[str, ...]`): the files that mark a folder as r2m-hf's output.

    Raises:
        `OutputError`: the output overlaps an input or a Hugging Face cache, exists and may not be replaced, is being
        written by another process, or cannot be created (one line, nothing left behind).
    """

    def __init__(
        self,
        path: str | Path,
        *,
        overwrite: bool = False,
        overwrite_any: bool = False,
        inputs: Iterable[str | Path] = (),
        markers: tuple[str, ...] = MERGE_MARKERS,
    ):
        self.path = Path(os.path.abspath(path))
        try:
            self.path = self.path.resolve()
        except (OSError, RuntimeError) as exc:  # a symlink loop
            raise OutputError(f"{self.path}: cannot resolve the output path ({exc})") from None
        self.markers = markers
        self.overwrite = overwrite or overwrite_any
        self.overwrite_any = overwrite_any
        self.tmp: Path | None = None
        self._lock: OutputLock | None = None
        self._created: list[Path] = []
        self._check_inputs(list(inputs))
        try:
            self._create_parents()
            self._lock = OutputLock(self.path)
            self._clean_stale_siblings()
            self.replacing = self._check_existing()
            self.tmp = Path(tempfile.mkdtemp(prefix=f".{self.path.name}.tmp-", dir=self.path.parent))
        except BaseException as exc:
            self.abort()
            if isinstance(exc, OSError) and not isinstance(exc, OutputError):
                raise output_error(self.path, exc, "create the output folder") from None
            raise

    def _check_inputs(self, inputs: list) -> None:
        found = overlap(self.path, inputs)
        if found is not None:
            raise OutputError(
                f"{self.path}: the output folder would be, contain or lie inside the input {clip(str(found))}; "
                "choose an output folder apart from every input (it is refused even with --overwrite)"
            )
        cache = overlap(self.path, hub_cache_dirs())
        if cache is not None:
            raise OutputError(
                f"{self.path}: the output folder would be, contain or lie inside the Hugging Face cache {cache}; "
                "choose another output folder"
            )

    def _create_parents(self) -> None:
        missing = []
        parent = self.path.parent
        while not parent.exists():
            missing.append(parent)
            parent = parent.parent
        for folder in reversed(missing):
            folder.mkdir()
            self._created.append(folder)
        if not self.path.parent.is_dir():
            raise OutputError(f"{self.path}: the parent {self.path.parent} is a file, not a folder")

    def _clean_stale_siblings(self) -> None:
        """Temporary siblings of this output whose writer died (we hold the lock, so no live process owns them)."""
        siblings = [p for p in self.path.parent.iterdir() if p.is_dir() and not p.is_symlink()]
        stale = sorted(p for p in siblings if p.name.startswith(f".{self.path.name}.tmp-"))
        old = sorted(p for p in siblings if p.name.startswith(f".{self.path.name}.old-"))
        if old and not os.path.lexists(self.path):  # killed between moving the old output aside and the new in place
            os.rename(old.pop(), self.path)
            logger.warning(f"{self.path}: restored the previous output, moved aside by an interrupted r2m-hf run")
        for folder in stale + old:
            shutil.rmtree(folder, ignore_errors=True)
        if stale or old:
            names = ", ".join(p.name for p in stale + old)
            logger.warning(f"removed {len(stale) + len(old)} temporary folder(s) of an interrupted r2m-hf run: {names}")

    def _check_existing(self) -> bool:
        """Whether an existing output will be replaced (refusing one that may not be)."""
        if not os.path.lexists(self.path):
            return False
        if not self.path.is_dir():
            raise OutputError(f"{self.path}: exists and is not a folder; choose another output path")
        if not any(self.path.iterdir()):
            return True
        if not self.overwrite:
            raise OutputError(f"{self.path}: output folder exists and is not empty; pass --overwrite to replace it")
        if not self.overwrite_any and not is_merge_output(self.path, self.markers):
            raise OutputError(
                f"{self.path}: exists and was not written by r2m-hf (no {' or '.join(self.markers)}), so --overwrite "
                "does not replace it; move it away, or pass --overwrite-any to delete its contents"
            )
        return True

    def commit(self) -> Path:
        """Move the finished temporary folder into place (replacing an old output only now, never a new arrival).

        Raises:
            `OutputError`: the output path appeared meanwhile (or changed into something that may not be replaced);
            the temporary folder is removed.
        """
        try:
            if os.path.lexists(self.path):
                if not self.replacing:
                    raise OutputError(
                        f"{self.path}: appeared while merging (written by another program); it was not replaced and "
                        "this merge's result was discarded: choose another output folder"
                    )
                self._check_existing()  # still an output we may replace
                old = self.path.with_name(f".{self.path.name}.old-{os.getpid()}")
                os.rename(self.path, old)
                _rename_noreplace(self.tmp, self.path)
                shutil.rmtree(old, ignore_errors=True)
            else:
                _rename_noreplace(self.tmp, self.path)
        except BaseException as exc:
            self.abort()
            if isinstance(exc, FileExistsError) or (isinstance(exc, OSError) and exc.errno == errno.ENOTEMPTY):
                raise OutputError(
                    f"{self.path}: appeared while merging; it was not replaced and this merge's result was discarded"
                ) from None
            if isinstance(exc, OSError) and not isinstance(exc, OutputError):
                raise output_error(self.path, exc, "move the finished output into place") from None
            raise
        self.tmp = None
        self._release()
        return self.path

    def abort(self) -> None:
        """Remove the temporary folder, release the lock and remove the parent folders this output created."""
        if self.tmp is not None:
            shutil.rmtree(self.tmp, ignore_errors=True)
            self.tmp = None
        self._release()
        for folder in reversed(self._created):
            try:
                folder.rmdir()
            except OSError:
                break
        self._created = []

    def _release(self) -> None:
        if self._lock is not None:
            self._lock.release()
            self._lock = None

    def __enter__(self) -> OutputFolder:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is not None:
            self.abort()


def _rename_noreplace(src: Path, dst: Path) -> None:
    """Rename `src` to `dst`, failing with `FileExistsError` when `dst` exists (atomically where Linux allows)."""
    renameat2 = getattr(_libc(), "renameat2", None)
    if renameat2 is not None:
        at_fdcwd, rename_noreplace = -100, 1
        if renameat2(at_fdcwd, os.fsencode(src), at_fdcwd, os.fsencode(dst), rename_noreplace) == 0:
            return
        code = ctypes.get_errno()
        if code not in (errno.ENOSYS, errno.EINVAL, errno.ENOTSUP):  # else: the filesystem lacks the flag
            raise OSError(code, os.strerror(code), str(dst))
    if os.path.lexists(dst):
        raise FileExistsError(errno.EEXIST, os.strerror(errno.EEXIST), str(dst))
    os.rename(src, dst)


def _libc():
    try:
        return ctypes.CDLL(None, use_errno=True)
    except OSError:
        return None


class StreamingSafetensorsWriter:
    """Write tensors with known names, shapes and dtype into (sharded) safetensors files as they arrive.

    Args:
        folder (`Path`): where to write.
        shapes (`dict[str, tuple]`): the on-disk name and shape of every tensor, in file order.
        dtype (`torch.dtype`): the stored dtype.
        max_shard_bytes (`int`): shard size limit.
        filename (`str`, *optional*): the file's name when unsharded (default ``model.safetensors``).
    """

    def __init__(
        self,
        folder: Path,
        shapes: dict[str, tuple[int, ...]],
        dtype: torch.dtype,
        max_shard_bytes: int,
        *,
        filename: str | None = None,
    ):
        self.folder = Path(folder)
        self.dtype = dtype
        item = torch.empty((), dtype=dtype).element_size()
        shards: list[list[str]] = [[]]
        size = 0
        for name, shape in shapes.items():
            nbytes = math.prod(shape) * item
            if shards[-1] and size + nbytes > max_shard_bytes:
                shards.append([])
                size = 0
            shards[-1].append(name)
            size += nbytes
        self.total_size = sum(math.prod(s) * item for s in shapes.values())
        count = len(shards)
        self.file_of: dict[str, str] = {}
        self._files = []
        for i, names in enumerate(shards):
            if filename is not None and count == 1:
                name_of_file = filename
            else:
                name_of_file = "model.safetensors" if count == 1 else f"model-{i + 1:05d}-of-{count:05d}.safetensors"
            header: dict[str, object] = {"__metadata__": {"format": "pt"}}
            offset = 0
            for name in names:
                nbytes = math.prod(shapes[name]) * item
                header[name] = {
                    "dtype": SAFETENSORS_DTYPES[dtype],
                    "shape": list(shapes[name]),
                    "data_offsets": [offset, offset + nbytes],
                }
                offset += nbytes
                self.file_of[name] = name_of_file
            blob = json.dumps(header, separators=(",", ":")).encode()
            blob += b" " * (-len(blob) % 8)
            handle = open(self.folder / name_of_file, "wb")
            handle.write(struct.pack("<Q", len(blob)))
            handle.write(blob)
            self._files.append({"handle": handle, "order": names, "next": 0})
        self._pending: dict[str, torch.Tensor] = {}
        self._shard_index = {name: i for i, names in enumerate(shards) for name in names}
        self._shapes = shapes

    def add(self, name: str, tensor: torch.Tensor) -> None:
        """Queue a tensor; it is written as soon as every tensor before it in its file has been."""
        if name not in self._shard_index:
            raise KeyError(f"unexpected tensor {name}")
        if tuple(tensor.shape) != tuple(self._shapes[name]):
            raise ValueError(f"tensor {name}: shape {list(tensor.shape)} != planned {list(self._shapes[name])}")
        self._pending[name] = tensor.detach().to("cpu", self.dtype).contiguous()
        shard = self._files[self._shard_index[name]]
        while shard["next"] < len(shard["order"]) and shard["order"][shard["next"]] in self._pending:
            ready = self._pending.pop(shard["order"][shard["next"]])
            shard["handle"].write(ready.reshape(-1).view(torch.uint8).numpy())  # the buffer itself: no copy
            shard["next"] += 1

    def close(self) -> list[str]:
        """Finish the files (every tensor must have arrived) and write the shard index when sharded."""
        for shard in self._files:
            shard["handle"].close()
            if shard["next"] != len(shard["order"]):
                raise RuntimeError(f"tensor {shard['order'][shard['next']]} was never written")
        files = sorted(set(self.file_of.values()))
        if len(files) > 1:
            index = {"metadata": {"total_size": self.total_size}, "weight_map": dict(sorted(self.file_of.items()))}
            (self.folder / "model.safetensors.index.json").write_text(json.dumps(index, indent=2) + "\n")
        return files

    def abort(self) -> None:
        for shard in self._files:
            shard["handle"].close()
