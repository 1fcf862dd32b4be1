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
import re
from collections.abc import Iterable
from pathlib import Path

import torch

from .errors import CheckpointError
from .groups import ModelLayout

SAFETENSORS_INDEX = "model.safetensors.index.json"
# A full model whose tensors all differ from the base's by more than this (median ‖θ−θ0‖/‖θ0‖ over matrices) was
# not fine-tuned from that base: fine-tuning moves weights by a few percent, unrelated weights differ by ~√2.
UNRELATED_DISTANCE = 1.0
PICKLE_FILES = ("pytorch_model.bin", "pytorch_model.bin.index.json", "model.pt", "adapter_model.bin")


class TensorFiles:
    """The raw tensors of one folder's weight files, read lazily by key.

    Args:
        folder (`Path`): the model folder.
        stem (`str`): ``model`` for full weights, ``adapter_model`` for PEFT adapters.
        allow_pickle (`bool`): accept ``*.bin`` pickle files (loaded with ``weights_only=True``).
    """

    def __init__(self, folder: Path, stem: str = "model", *, allow_pickle: bool = False):
        self.folder = Path(folder)
        self._handles: dict[Path, object] = {}
        self._pickled: dict[str, torch.Tensor] | None = None
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

    def _open(self, file: Path):
        from safetensors import SafetensorError, safe_open

        if file not in self._handles:
            try:
                self._handles[file] = safe_open(str(file), framework="pt")
            except (SafetensorError, OSError) as exc:
                raise CheckpointError(
                    f"{file}: not a readable safetensors file ({exc}); re-download or re-save it"
                ) from None
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
        return tuple(self._open(self.key_to_file[key]).get_slice(key).get_shape())

    def dtype_name(self, key: str) -> str:
        if self._pickled is not None:
            return str(self._pickled[key].dtype).removeprefix("torch.")
        return str(self._open(self.key_to_file[key]).get_slice(key).get_dtype())

    def get(self, key: str) -> torch.Tensor:
        """Read one tensor; a damaged file or a NaN/Inf value is a `CheckpointError` naming file and key."""
        if self._pickled is not None:
            tensor = self._pickled[key]
        else:
            file = self.key_to_file[key]
            try:
                tensor = self._open(file).get_tensor(key)
            except Exception as exc:
                raise CheckpointError(f"{file}: tensor {key} cannot be read ({exc}); re-download the file") from None
        if tensor.is_floating_point() and not bool(torch.isfinite(tensor).all()):
            raise CheckpointError(
                f"{self.key_to_file[key]}: tensor {key} contains NaN or Inf values; this checkpoint is broken"
            )
        return tensor

    def close(self) -> None:
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
        self.unused: list[str] = []
        for key in self.files.keys():
            name = layout.canonical_name(key)
            if name is None:
                self.unused.append(key)
            elif name in self.names:
                raise CheckpointError(f"{self.folder}: keys {self.names[name]} and {key} both map to {name}")
            else:
                self.names[name] = key

    def has(self, name: str) -> bool:
        return name in self.names

    def shape(self, name: str) -> tuple[int, ...]:
        return self.files.shape(self.names[name])

    def dtype_name(self, name: str) -> str:
        return self.files.dtype_name(self.names[name])

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

    @property
    def base_reference(self) -> str | None:
        return self.config.get("base_model_name_or_path")

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


def compare_to_base(model: Checkpoint, base: Checkpoint, names: Iterable[str]) -> tuple[int, list[float]]:
    """How many of `names` equal the base's tensor, and ‖θ−θ0‖/‖θ0‖ of each matrix among them."""
    same, distances = 0, []
    for name in names:
        a, b = model.get(name).float(), base.get(name).float()
        if torch.equal(a, b):
            same += 1
        if b.dim() >= 2:
            distances.append(float((a - b).norm() / b.norm().clamp_min(1e-12)))
    return same, distances


def looks_unrelated(same: int, distances: list[float]) -> bool:
    """True when no tensor equals the base's and the median matrix distance says another base."""
    if same or not distances:
        return False
    ordered = sorted(distances)
    return ordered[len(ordered) // 2] > UNRELATED_DISTANCE
