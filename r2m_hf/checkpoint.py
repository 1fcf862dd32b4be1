"""Lazy checkpoint reading: safetensors one tensor at a time, name maps, and LoRA adapter deltas.

A :class:`Checkpoint` maps the canonical (in-memory transformers 5) parameter names of a :class:`ModelLayout` to the
keys of the files on disk, whatever naming they were written with (transformers 4 or 5, with or without the base-model
prefix). LoRA adapters are read by :class:`r2m_hf.lora.LoraAdapter` over the same :class:`TensorFiles`.
Every file is opened inside its model's folder only (:mod:`r2m_hf.paths`), a malformed header or shard index is one
:class:`~r2m_hf.errors.CheckpointError`, and pickle checkpoints are refused unless explicitly allowed (and then
unpickled with ``weights_only=True``).
"""

from __future__ import annotations

import json
import math
import os
import struct
from collections.abc import Iterable
from pathlib import Path

import torch

from .errors import CheckpointError, clip
from .groups import ModelLayout
from .paths import check_inside, model_file, read_small_file

# transformers 5 ViT module names → the transformers 4 names most adapters on the Hub were trained with (the layout
# maps both; ``check-specialist`` says which naming an adapter uses, and the test zoo writes legacy adapters)
LEGACY_VIT_MODULES = (
    ("layers.", "encoder.layer."),
    ("attention.q_proj", "attention.attention.query"),
    ("attention.k_proj", "attention.attention.key"),
    ("attention.v_proj", "attention.attention.value"),
    ("attention.o_proj", "attention.output.dense"),
    ("mlp.fc1", "intermediate.dense"),
    ("mlp.fc2", "output.dense"),
)

SAFETENSORS_TORCH_DTYPES = {
    "F64": torch.float64, "F32": torch.float32, "F16": torch.float16, "BF16": torch.bfloat16,
    "I64": torch.int64, "I32": torch.int32, "I16": torch.int16, "I8": torch.int8, "U8": torch.uint8,
    "BOOL": torch.bool, "F8_E4M3": torch.float8_e4m3fn, "F8_E5M2": torch.float8_e5m2,
}  # fmt: skip
MAX_HEADER_BYTES = 100 * 1024 * 1024


class SafetensorsFile:
    """One safetensors file read with positioned reads (no memory map), so that reading every tensor of a model
    leaves only the tensors still in use in memory, not the whole file.

    The header is validated as the safetensors library does: its length, JSON, dtypes, and data offsets that tile the
    data section exactly, so a truncated or padded file is caught when it is opened.

    Args:
        path (`Path`): the ``.safetensors`` file.
    """

    def __init__(self, path: Path):
        self.path = Path(path)
        self._fd = -1
        try:
            self._fd = os.open(self.path, os.O_RDONLY)
            size = os.fstat(self._fd).st_size
            head = os.pread(self._fd, 8, 0)
        except OSError as exc:
            self.close()
            raise CheckpointError(f"{self.path}: cannot open ({exc.strerror or exc})") from None
        try:
            self._read_header(size, head)
        except BaseException:
            self.close()
            raise

    def _read_header(self, size: int, head: bytes) -> None:
        if len(head) < 8:
            raise self._broken("file too short for a header")
        (length,) = struct.unpack("<Q", head)
        if length > min(MAX_HEADER_BYTES, size - 8):
            raise self._broken("invalid header length")
        try:
            header = json.loads(os.pread(self._fd, length, 8))
        except (ValueError, RecursionError):  # not JSON, not UTF-8, or nested too deeply
            raise self._broken("header is not valid JSON") from None
        except OSError as exc:
            raise self._broken(f"header cannot be read: {exc.strerror or exc}") from None
        if not isinstance(header, dict):
            raise self._broken(f"header is a JSON {type(header).__name__}, not an object")
        metadata = header.pop("__metadata__", None) or {}
        if not isinstance(metadata, dict):
            raise self._broken("__metadata__ is not an object")
        self.metadata = metadata
        self.data_start = 8 + length
        self.entries: dict[str, tuple[torch.dtype, tuple[int, ...], int, int]] = {}
        spans = []
        for key, info in header.items():
            try:
                dtype = SAFETENSORS_TORCH_DTYPES[info["dtype"]]
                shape = tuple(_index(d) for d in info["shape"])
                begin, end = (_index(x) for x in info["data_offsets"])
            except (KeyError, TypeError, ValueError):
                raise self._broken(f"bad header entry for tensor {clip(key)}") from None
            if end - begin != math.prod(shape) * torch.empty((), dtype=dtype).element_size():
                raise self._broken(f"tensor {clip(key)}: data size does not match its shape and dtype")
            self.entries[key] = (dtype, shape, begin, end)
            spans.append((begin, end))
        spans.sort()
        position = 0
        for begin, end in spans:
            if begin != position:
                raise self._broken("data offsets leave gaps or overlap")
            position = end
        if self.data_start + position != size:
            raise self._broken("incomplete data, file not fully covered (truncated download?)")

    def dtype(self, key: str) -> torch.dtype:
        return self.entries[key][0]

    def _broken(self, why: str) -> CheckpointError:
        return CheckpointError(f"{self.path}: not a readable safetensors file ({why}); re-download or re-save it")

    def keys(self) -> list[str]:
        return list(self.entries)

    def get(self, key: str) -> torch.Tensor:
        dtype, shape, _, _ = self.entries[key]
        tensor = torch.empty(shape, dtype=dtype)  # read into directly: no zero-filled buffer, no copy
        self.read_into(key, tensor)
        return tensor

    def read_into(self, key: str, out: torch.Tensor) -> None:
        """Read tensor `key` straight into `out` (contiguous, same dtype and size): no buffer, no copy."""
        _, _, begin, end = self.entries[key]
        if not out.is_contiguous() or out.device.type != "cpu":
            raise ValueError(f"tensor {key}: read_into needs a contiguous CPU tensor")
        view = memoryview(out.reshape(-1).view(torch.uint8).numpy())
        if len(view) != end - begin:
            raise ValueError(f"tensor {key}: {end - begin} bytes do not fit a buffer of {len(view)}")
        done = 0
        while done < len(view):
            chunk = os.preadv(self._fd, [view[done:]], self.data_start + begin + done)  # an OSError: see TensorFiles
            if chunk <= 0:
                raise self._broken(f"tensor {key} ends early")
            done += chunk

    def close(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1

    def __del__(self) -> None:
        try:
            self.close()
        except Exception:
            pass


class TensorFiles:
    """The raw tensors of one folder's weight files, read lazily by key.

    Args:
        folder (`Path`): the model folder.
        stem (`str`): ``model`` for full weights, ``adapter_model`` for PEFT adapters.
        allow_pickle (`bool`): accept ``*.bin`` pickle files (loaded with ``weights_only=True``).
    """

    def __init__(self, folder: Path, stem: str = "model", *, allow_pickle: bool = False):
        self.folder = Path(folder)
        self._handles: dict[Path, SafetensorsFile] = {}
        self._pickled: dict[str, torch.Tensor] | None = None
        self._verified: set[str] = set()  # keys already checked for NaN/Inf (multi-pass merges re-read tensors)
        self.key_to_file: dict[str, Path] = {}
        self.files: list[Path] = []
        single = model_file(self.folder, f"{stem}.safetensors")
        index = model_file(self.folder, f"{stem}.safetensors.index.json")
        if single.is_file():
            self.files = [single]
        elif index.is_file():
            weight_map = _read_weight_map(index)
            self.files = sorted({model_file(self.folder, f, what=index.name) for f in weight_map.values()})
            missing = [f for f in self.files if not f.is_file()]
            if missing:
                raise CheckpointError(f"{missing[0]}: shard listed in {index.name} is missing; re-download the model")
        else:
            pickle_globs = (f"{stem}*.bin", f"pytorch_{stem}*.bin", "*.pt", "*.pth")
            pickles = sorted({f for pattern in pickle_globs for f in self.folder.glob(pattern) if f.is_file()})
            if pickles and not allow_pickle:
                raise CheckpointError(
                    f"{pickles[0]}: pickle checkpoints can run code when loaded and are refused; convert it to "
                    "safetensors, or pass --allow-pickle if you trust its source"
                )
            if not pickles:
                raise CheckpointError(f"{self.folder}: no {stem}.safetensors (or shard index) found")
            self._load_pickles(pickles)
            return
        for file in self.files:
            handle = self._open(file)
            for key in handle.keys():
                self.key_to_file[key] = file

    def _open(self, file: Path) -> SafetensorsFile:
        if file not in self._handles:
            self._handles[file] = SafetensorsFile(file)
        return self._handles[file]

    def _load_pickles(self, files: list[Path]) -> None:
        self._pickled = {}
        for file in files:
            check_inside(file, self.folder)
            try:
                state = torch.load(file, map_location="cpu", weights_only=True)
            except Exception as exc:  # UnpicklingError, a damaged zip, a truncated file, …: five lines of torch text
                raise CheckpointError(
                    f"{file}: pickle checkpoint refused: {_pickle_refusal(exc)}; only plain tensors are ever unpickled "
                    "(weights_only=True): convert a checkpoint you trust to safetensors"
                ) from None
            if isinstance(state, dict) and isinstance(state.get("state_dict"), dict):
                state = state["state_dict"]
            if not isinstance(state, dict):
                raise CheckpointError(
                    f"{file}: pickle checkpoint holds a {type(state).__name__}, not a state dict of named tensors"
                )
            for key, value in state.items():
                if isinstance(value, torch.Tensor):
                    self._pickled[key] = value
                    self.key_to_file[key] = file
        self.files = files

    def keys(self) -> list[str]:
        return list(self.key_to_file)

    def shape(self, key: str) -> tuple[int, ...]:
        if self._pickled is not None:
            return tuple(self._pickled[key].shape)
        return self._open(self.key_to_file[key]).entries[key][1]

    def dtype(self, key: str) -> torch.dtype:
        """The stored dtype of a tensor (from the header: no data is read)."""
        if self._pickled is not None:
            return self._pickled[key].dtype
        return self._open(self.key_to_file[key]).dtype(key)

    def check_floating(self, key: str, what: str) -> None:
        """Refuse an integer or bool tensor where the architecture has floats (it would be cast and merged).

        Raises:
            `CheckpointError`: naming the file, the tensor and its dtype.
        """
        dtype = self.dtype(key)
        if not dtype.is_floating_point:
            raise CheckpointError(
                f"{self.key_to_file[key]}: tensor {clip(key)} is stored as {str(dtype).removeprefix('torch.')}, but "
                f"{what} is a floating-point parameter; this checkpoint is not a model of that architecture"
            )

    def read_into(self, key: str, out: torch.Tensor) -> None:
        """Read one tensor into `out` (contiguous, the stored shape): straight from the file when the dtypes match,
        else converted; checked like :meth:`get`."""
        if self._pickled is not None or self.dtype(key) != out.dtype:
            out.copy_(self.get(key).reshape(out.shape))
            return
        file = self.key_to_file[key]
        try:
            self._open(file).read_into(key, out)
        except OSError as exc:
            raise CheckpointError(f"{file}: tensor {key} cannot be read ({exc}); re-download the file") from None
        self._check_finite(key, out)

    def get(self, key: str) -> torch.Tensor:
        """Read one tensor; a damaged file or a NaN/Inf value is a `CheckpointError` naming file and key."""
        if self._pickled is not None:
            tensor = self._pickled[key]
        else:
            file = self.key_to_file[key]
            try:
                tensor = self._open(file).get(key)
            except OSError as exc:
                raise CheckpointError(f"{file}: tensor {key} cannot be read ({exc}); re-download the file") from None
        self._check_finite(key, tensor)
        return tensor

    def _check_finite(self, key: str, tensor: torch.Tensor) -> None:
        """A `CheckpointError` for NaN/Inf values, checked once per key (multi-pass merges re-read tensors)."""
        # One reduction finds NaN/Inf without allocating a mask; the exact check confirms (a sum may overflow).
        if key in self._verified or not tensor.is_floating_point():
            return
        self._verified.add(key)
        if not bool(torch.isfinite(tensor.sum())) and not bool(torch.isfinite(tensor).all()):
            raise CheckpointError(
                f"{self.key_to_file[key]}: tensor {key} contains NaN or Inf values; this checkpoint is broken"
            )

    def close(self) -> None:
        for handle in self._handles.values():
            handle.close()
        self._handles.clear()
        self._pickled = None


class Checkpoint:
    """A full model's weights, addressed by canonical parameter names.

    Args:
        folder (`Path`): the model folder.
        layout (`ModelLayout`): the target architecture.
        label (`str`): how errors name this model (e.g. ``models[1] (fs)``).
        allow_pickle (`bool`): accept pickle checkpoints.
    """

    def __init__(self, folder: Path, layout: ModelLayout, label: str, *, allow_pickle: bool = False):
        self.folder = Path(folder)
        self.label = label
        self.files = TensorFiles(self.folder, "model", allow_pickle=allow_pickle)
        self.names: dict[str, str] = {}
        for key in self.files.keys():
            name = layout.canonical_name(key)
            if name is None:
                continue
            if name in self.names:
                raise CheckpointError(f"{self.folder}: keys {self.names[name]} and {key} both map to {name}")
            self.names[name] = key

    def has(self, name: str) -> bool:
        return name in self.names

    def shape(self, name: str) -> tuple[int, ...]:
        return self.files.shape(self.names[name])

    def get(self, name: str) -> torch.Tensor:
        return self.files.get(self.names[name])

    def read_into(self, name: str, out: torch.Tensor) -> None:
        self.files.read_into(self.names[name], out)

    def check_covers(self, names: Iterable[str], layout: ModelLayout, what: str) -> None:
        """Every name present with the layout's shape, else a `CheckpointError` naming the first bad tensor."""
        for name in names:
            if name not in self.names:
                raise CheckpointError(
                    f"{self.label} ({self.folder}): tensor {name} is missing; all models must share the base "
                    f"architecture ({layout.model_class}) for {what}"
                )
            shape = self.shape(name)
            if tuple(shape) != tuple(layout.shapes[name]):
                raise CheckpointError(
                    f"{self.label} ({self.folder}): tensor {name} has shape {clip(list(shape))}, expected "
                    f"{list(layout.shapes[name])}; all specialists must share the base architecture and shapes"
                )
            self.files.check_floating(self.names[name], f"{name} of {layout.model_class}")


def _index(value) -> int:
    """A shape or offset entry of a safetensors header: a non-negative integer (not a bool, not a float)."""
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ValueError(f"{value!r} is not a non-negative integer")
    return value


def _read_weight_map(index: Path) -> dict[str, str]:
    """The ``weight_map`` of a shard index: tensor name → shard file name, both strings.

    Raises:
        `CheckpointError`: the index is unreadable, not JSON, or its ``weight_map`` is not such a mapping.
    """
    try:
        data = json.loads(read_small_file(index, CheckpointError))
    except (ValueError, RecursionError):
        raise CheckpointError(f"{index}: unreadable shard index (not valid JSON); re-download the model") from None
    weight_map = data.get("weight_map") if isinstance(data, dict) else data
    if not isinstance(weight_map, dict) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in weight_map.items()
    ):
        found = {dict: "a mapping with non-string entries", type(None): "none"}.get(
            type(weight_map), f"a JSON {type(weight_map).__name__}"
        )
        raise CheckpointError(
            f"{index}: unreadable shard index (weight_map must map tensor names to shard file names, found "
            f"{found}); re-download the model"
        )
    return weight_map


def _pickle_refusal(exc: Exception) -> str:
    """The one line of torch's weights-only refusal that says what was refused (e.g. an unsupported global)."""
    skip = ("weights only load failed", "check the documentation", "please file an issue", "in pytorch 2.6")
    for line in str(exc).splitlines():
        line = line.strip().removeprefix("WeightsUnpickler error:").strip()
        if line and not line.lower().startswith(skip):
            return clip(line)
    return clip(f"{type(exc).__name__}: {str(exc).strip().splitlines()[0] if str(exc).strip() else 'unreadable'}")
