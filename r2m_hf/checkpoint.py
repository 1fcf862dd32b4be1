"""Lazy checkpoint reading: safetensors one tensor at a time, name maps, and LoRA adapter deltas.

A :class:`Checkpoint` maps the canonical (in-memory transformers 5) parameter names of a :class:`ModelLayout` to the
keys of the files on disk, whatever naming they were written with (transformers 4 or 5, with or without the base-model
prefix). A :class:`LoraAdapter` turns a PEFT LoRA folder into per-tensor deltas `ΔW = scaling · B A` (rsLoRA,
rank/alpha patterns and fan-in-fan-out honoured) over the base, with its head from ``modules_to_save``.
Pickle checkpoints are refused unless explicitly allowed.
"""

from __future__ import annotations

import json
import math
import os
import re
import struct
from collections.abc import Iterable
from pathlib import Path

import torch

from .errors import CheckpointError
from .groups import ModelLayout

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
        try:
            self._fd = os.open(self.path, os.O_RDONLY)
        except OSError as exc:
            raise CheckpointError(f"{self.path}: cannot open ({exc.strerror})") from None
        size = os.fstat(self._fd).st_size
        head = os.pread(self._fd, 8, 0)
        if len(head) < 8:
            raise self._broken("file too short for a header")
        (length,) = struct.unpack("<Q", head)
        if length > min(MAX_HEADER_BYTES, size - 8):
            raise self._broken("invalid header length")
        try:
            header = json.loads(os.pread(self._fd, length, 8))
        except ValueError:
            raise self._broken("header is not valid JSON") from None
        self.metadata = header.pop("__metadata__", None) or {}
        self.data_start = 8 + length
        self.entries: dict[str, tuple[torch.dtype, tuple[int, ...], int, int]] = {}
        spans = []
        for key, info in header.items():
            try:
                dtype = SAFETENSORS_TORCH_DTYPES[info["dtype"]]
                shape = tuple(int(d) for d in info["shape"])
                begin, end = (int(x) for x in info["data_offsets"])
            except (KeyError, TypeError, ValueError):
                raise self._broken(f"bad header entry for tensor {key}") from None
            if end - begin != math.prod(shape) * torch.empty((), dtype=dtype).element_size():
                raise self._broken(f"tensor {key}: data size does not match its shape and dtype")
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

    def _broken(self, why: str) -> CheckpointError:
        return CheckpointError(f"{self.path}: not a readable safetensors file ({why}); re-download or re-save it")

    def keys(self) -> list[str]:
        return list(self.entries)

    def get(self, key: str) -> torch.Tensor:
        dtype, shape, begin, end = self.entries[key]
        buffer = bytearray(end - begin)
        view = memoryview(buffer)
        done = 0
        while done < len(buffer):
            chunk = os.preadv(self._fd, [view[done:]], self.data_start + begin + done)
            if chunk <= 0:
                raise self._broken(f"tensor {key} ends early")
            done += chunk
        if not buffer:
            return torch.empty(shape, dtype=dtype)
        return torch.frombuffer(buffer, dtype=dtype).reshape(shape)

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
        single = self.folder / f"{stem}.safetensors"
        index = self.folder / f"{stem}.safetensors.index.json"
        if single.is_file():
            self.files = [single]
        elif index.is_file():
            try:
                weight_map = json.loads(index.read_text())["weight_map"]
            except (OSError, ValueError, KeyError) as exc:
                raise CheckpointError(f"{index}: unreadable shard index ({exc}); re-download the model") from None
            self.files = sorted({self.folder / f for f in weight_map.values()})
            missing = [f for f in self.files if not f.is_file()]
            if missing:
                raise CheckpointError(f"{missing[0]}: shard listed in {index.name} is missing; re-download the model")
        else:
            pickle_globs = (f"{stem}*.bin", f"pytorch_{stem}*.bin", "*.pt", "*.pth")
            pickles = sorted({f for pattern in pickle_globs for f in self.folder.glob(pattern)})
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
            try:
                state = torch.load(file, map_location="cpu", weights_only=True)
            except Exception as exc:
                raise CheckpointError(f"{file}: cannot load pickle checkpoint ({exc})") from None
            if isinstance(state, dict) and "state_dict" in state:
                state = state["state_dict"]
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
        # One reduction finds NaN/Inf without allocating a mask; the exact check confirms (a sum may overflow).
        if key in self._verified or not tensor.is_floating_point():
            return tensor
        self._verified.add(key)
        if not bool(torch.isfinite(tensor.sum())) and not bool(torch.isfinite(tensor).all()):
            raise CheckpointError(
                f"{self.key_to_file[key]}: tensor {key} contains NaN or Inf values; this checkpoint is broken"
            )
        return tensor

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
                    f"{self.label} ({self.folder}): tensor {name} has shape {list(shape)}, expected "
                    f"{list(layout.shapes[name])}; all specialists must share the base architecture and shapes"
                )


_LORA_KEY = re.compile(
    r"^(?:base_model\.model\.)?(?P<module>.+)\.lora_(?P<part>A|B|embedding_A|embedding_B)(?:\.[^.]+)?\.(?P<param>weight|bias)$"
)


class LoraAdapter:
    """A PEFT LoRA adapter: deltas `scaling · B A` for its target modules and its saved head.

    Args:
        folder (`Path`): the adapter folder (``adapter_config.json`` + ``adapter_model.safetensors``).
        layout (`ModelLayout`): the target architecture (transformers 4 and 5 module names are both mapped to it).
        label (`str`): how errors name this adapter.
        allow_pickle (`bool`): accept ``adapter_model.bin``.
    """

    def __init__(self, folder: Path, layout: ModelLayout, label: str, *, allow_pickle: bool = False):
        self.folder = Path(folder)
        self.label = label
        config_path = self.folder / "adapter_config.json"
        try:
            self.config = json.loads(config_path.read_text())
        except (OSError, ValueError) as exc:
            raise CheckpointError(f"{config_path}: unreadable adapter config ({exc})") from None
        peft_type = str(self.config.get("peft_type", "LORA")).upper()
        if peft_type != "LORA":
            raise CheckpointError(f"{config_path}: peft_type {peft_type} is not supported; only LoRA adapters are")
        if self.config.get("use_dora"):
            raise CheckpointError(f"{config_path}: DoRA adapters are not supported (use_dora: true); merge it first")
        self.files = TensorFiles(self.folder, "adapter_model", allow_pickle=allow_pickle)
        self.layout = layout
        self.fan_in_fan_out = bool(self.config.get("fan_in_fan_out", False))
        # target parameter name → {"A": key, "B": key, "bias": key}
        self.targets: dict[str, dict[str, str]] = {}
        self.saved: dict[str, str] = {}  # canonical name → key, for modules_to_save (the head, …)
        unmatched: list[str] = []
        for key in self.files.keys():
            match = _LORA_KEY.match(key)
            if match is None:
                name = layout.canonical_name(key.removeprefix("base_model.model."))
                if name is None:
                    unmatched.append(key)
                else:
                    self.saved[name] = key
                continue
            module = match["module"]
            weight_name = layout.canonical_name(f"{module}.weight")
            if weight_name is None:
                unmatched.append(key)
                continue
            entry = self.targets.setdefault(weight_name, {"module": module})
            part = match["part"].removeprefix("embedding_")
            entry["bias" if (part == "B" and match["param"] == "bias") else part] = key
        if unmatched:
            raise CheckpointError(
                f"{self.label} ({self.folder}): adapter tensor {unmatched[0]} (and {len(unmatched) - 1} more) "
                f"matches no module of {layout.model_class}; the adapter was trained on another architecture"
            )
        if not self.targets:
            raise CheckpointError(
                f"{self.label} ({self.folder}): the adapter has no LoRA weights that land on any module "
                f"(target_modules={self.config.get('target_modules')}); it would merge as a no-op"
            )
        for name, entry in self.targets.items():
            if "A" not in entry or "B" not in entry:
                raise CheckpointError(
                    f"{self.label} ({self.folder}): LoRA pair for {name} is incomplete (A or B missing)"
                )

    def _scaling(self, module: str, rank: int) -> float:
        alpha = float(self.config.get("lora_alpha", rank))
        for pattern, value in (self.config.get("alpha_pattern") or {}).items():
            if re.search(rf"(^|\.){pattern}$", module):
                alpha = float(value)
        if self.config.get("use_rslora"):
            return alpha / math.sqrt(rank)
        return alpha / rank

    def delta(self, name: str, dtype: torch.dtype) -> torch.Tensor | None:
        """`ΔW = scaling · B A` for a target weight (None if the adapter does not touch `name`)."""
        entry = self.targets.get(name)
        if entry is None:
            return None
        a = self.files.get(entry["A"]).to(dtype)
        b = self.files.get(entry["B"]).to(dtype)
        rank = a.shape[0]
        delta = (b.flatten(1) @ a.flatten(1)) * self._scaling(entry["module"], rank)
        if self.fan_in_fan_out:
            delta = delta.mT
        shape = self.layout.shapes[name]
        if delta.numel() != math.prod(shape):
            raise CheckpointError(
                f"{self.label} ({self.folder}): LoRA delta for {name} has {list(delta.shape)} entries, "
                f"expected shape {list(shape)}; the adapter belongs to another base"
            )
        return delta.reshape(shape)

    def bias_delta(self, bias_name: str, dtype: torch.dtype) -> torch.Tensor | None:
        """The delta of a module's bias when the adapter trained a LoRA bias (``lora_bias: true``)."""
        weight_name = bias_name.removesuffix("bias") + "weight"
        entry = self.targets.get(weight_name)
        if entry is None or "bias" not in entry:
            return None
        rank = self.files.shape(entry["A"])[0]
        return self.files.get(entry["bias"]).to(dtype) * self._scaling(entry["module"], rank)
