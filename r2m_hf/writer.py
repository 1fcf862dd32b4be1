"""The output folder: written into a temporary sibling folder and renamed into place at the end.

Weights are streamed: the safetensors headers are computed up front from the known shapes and dtype, so each merged
tensor goes to disk as soon as it is final and no model is ever held whole. Above `max_shard_bytes` the weights are
sharded with a ``model.safetensors.index.json`` as transformers writes them.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import struct
import tempfile
from pathlib import Path

import torch

from .errors import OutputError

SAFETENSORS_DTYPES = {torch.float32: "F32", torch.float64: "F64", torch.float16: "F16", torch.bfloat16: "BF16"}
DEFAULT_MAX_SHARD_BYTES = 5 * 1024**3


class OutputFolder:
    """An output folder that appears only when complete.

    Args:
        path (`Path`): the final folder.
        overwrite (`bool`): replace an existing non-empty folder.
    """

    def __init__(self, path: str | Path, *, overwrite: bool = False):
        self.path = Path(path).resolve()
        if self.path.exists() and not self.path.is_dir():
            raise OutputError(f"{self.path}: exists and is not a folder; choose another output path")
        if self.path.is_dir() and any(self.path.iterdir()) and not overwrite:
            raise OutputError(f"{self.path}: output folder exists and is not empty; pass --overwrite to replace it")
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.tmp = Path(tempfile.mkdtemp(prefix=f".{self.path.name}.tmp-", dir=self.path.parent))

    def commit(self) -> Path:
        """Move the finished temporary folder into place (replacing an old output only now)."""
        old = None
        if self.path.exists():
            old = self.path.with_name(f".{self.path.name}.old-{os.getpid()}")
            os.replace(self.path, old)
        os.replace(self.tmp, self.path)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
        return self.path

    def abort(self) -> None:
        shutil.rmtree(self.tmp, ignore_errors=True)

    def __enter__(self) -> OutputFolder:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is not None:
            self.abort()


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
            shard["handle"].write(ready.reshape(-1).view(torch.uint8).numpy().tobytes())
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
