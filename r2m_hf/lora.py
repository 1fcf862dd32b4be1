"""PEFT LoRA adapters: per-tensor deltas `ΔW = scaling · B A` over a base, checked against their own config.

A :class:`LoraAdapter` reads ``adapter_config.json`` and the adapter's weights (through
:class:`~r2m_hf.checkpoint.TensorFiles`, so every file stays inside the adapter's folder) and checks them against each
other before a merge starts, as peft would when loading: the rank ``r`` (and ``rank_pattern``) must be the rank of
the saved factors, A and B must share it, ``lora_alpha`` must be a number, and every factor must be floating-point.
The scaling is then peft's: ``lora_alpha / r`` (``/ √r`` with rsLoRA), with ``alpha_pattern`` honoured, and
fan-in-fan-out weights transposed. The head comes from ``modules_to_save``.
"""

from __future__ import annotations

import math
import re
from pathlib import Path

import torch

from .checkpoint import TensorFiles
from .errors import CheckpointError, clip
from .groups import ModelLayout
from .sources import read_model_json

_LORA_KEY = re.compile(
    r"^(?:base_model\.model\.)?(?P<module>.+)\.lora_(?P<part>A|B|embedding_A|embedding_B)(?:\.[^.]+)?\.(?P<param>weight|bias)$"
)
# rank_pattern / alpha_pattern keys are regular expressions from the adapter's repo: short, and without the nested or
# repeated quantifiers that make a regular expression take exponential (or high polynomial) time on a module name.
_MAX_PATTERN = 256
_MAX_QUANTIFIERS = 2
_QUANTIFIER = re.compile(r"(?<!\\)(?:[*+?]|\{\d*,?\d*\})")
_QUANTIFIED_GROUP = re.compile(r"\)(?:[*+?]|\{)")
_ABSENT = object()


def _number(value: object) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _rank(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 1


class LoraAdapter:
    """A PEFT LoRA adapter: deltas `scaling · B A` for its target modules and its saved head.

    Args:
        folder (`Path`): the adapter folder (``adapter_config.json`` + ``adapter_model.safetensors``).
        layout (`ModelLayout`): the target architecture (transformers 4 and 5 module names are both mapped to it).
        label (`str`): how errors name this adapter.
        allow_pickle (`bool`): accept ``adapter_model.bin``.

    Raises:
        `CheckpointError`: an unreadable or inconsistent adapter (the message names the file, key or tensor).
    """

    def __init__(self, folder: Path, layout: ModelLayout, label: str, *, allow_pickle: bool = False):
        self.folder = Path(folder)
        self.label = label
        self.config_path = self.folder / "adapter_config.json"
        config = read_model_json(self.folder, "adapter_config.json", CheckpointError)
        if config is None:
            raise CheckpointError(f"{self.config_path}: missing; a LoRA adapter folder has an adapter_config.json")
        self.config = config
        peft_type = str(self.config.get("peft_type", "LORA")).upper()
        if peft_type != "LORA":
            raise CheckpointError(
                f"{self.config_path}: peft_type {clip(peft_type)} is not supported; only LoRA adapters are"
            )
        if self.config.get("use_dora"):
            raise CheckpointError(
                f"{self.config_path}: DoRA adapters are not supported (use_dora: true); merge it first"
            )
        self._read_ranks_and_alphas()
        self.files = TensorFiles(self.folder, "adapter_model", allow_pickle=allow_pickle)
        self.layout = layout
        self.fan_in_fan_out = bool(self.config.get("fan_in_fan_out", False))
        # target parameter name → {"module": module, "A": key, "B": key, "bias": key}
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
                f"{self.label} ({self.folder}): adapter tensor {clip(unmatched[0])} (and {len(unmatched) - 1} more) "
                f"matches no module of {layout.model_class}; the adapter was trained on another architecture"
            )
        if not self.targets:
            raise CheckpointError(
                f"{self.label} ({self.folder}): the adapter has no LoRA weights that land on any module "
                f"(target_modules={clip(self.config.get('target_modules'))}); it would merge as a no-op"
            )
        for name, entry in self.targets.items():
            if "A" not in entry or "B" not in entry:
                raise CheckpointError(
                    f"{self.label} ({self.folder}): LoRA pair for {name} is incomplete (A or B missing)"
                )
            self._check_pair(name, entry)
        for name, key in self.saved.items():
            self.files.check_floating(key, f"{name} of {layout.model_class}")

    # ------------------------------------------------------------------------------------------ config checks
    def _read_ranks_and_alphas(self) -> None:
        """``r``, ``lora_alpha`` and their per-module patterns, with the types and ranges peft accepts."""
        where = self.config_path
        r = self.config.get("r")
        if r is not None and not _rank(r):
            raise CheckpointError(f"{where}: r must be a positive integer (the LoRA rank), not {clip(repr(r))}")
        self.r: int | None = r
        alpha = self.config.get("lora_alpha", _ABSENT)
        if alpha is not _ABSENT and not _number(alpha):
            raise CheckpointError(f"{where}: lora_alpha must be a finite number, not {clip(repr(alpha))}")
        self.lora_alpha: float | None = None if alpha is _ABSENT else float(alpha)
        self.rank_pattern = self._patterns("rank_pattern", _rank, "a positive integer")
        self.alpha_pattern = self._patterns("alpha_pattern", _number, "a finite number")

    def _patterns(self, key: str, valid, what: str) -> list[tuple[re.Pattern, object, str]]:
        found = []
        for pattern, value in (self.config.get(key) or {}).items():
            shown = clip(repr(pattern), 80)
            if not valid(value):
                raise CheckpointError(f"{self.config_path}: {key}[{shown}] must be {what}, not {clip(repr(value))}")
            too_complex = (
                len(pattern) > _MAX_PATTERN
                or _QUANTIFIED_GROUP.search(pattern)
                or len(_QUANTIFIER.findall(pattern)) > _MAX_QUANTIFIERS
                or re.search(r"\\\d", pattern)
            )
            if too_complex:
                raise CheckpointError(
                    f"{self.config_path}: {key} key {shown} is too complex a pattern (at most {_MAX_QUANTIFIERS} "
                    "quantifiers, none on a group, no back-references); name the modules instead"
                )
            try:
                regex = re.compile(rf"(?:^|\.)(?:{pattern})$")
            except re.error as exc:
                raise CheckpointError(f"{self.config_path}: {key} key {shown} is not a valid pattern ({exc})") from None
            found.append((regex, value, pattern))
        return found

    @staticmethod
    def _lookup(patterns, module: str):
        """peft's rule: the first pattern (in file order) that matches the end of the module name."""
        return next(((value, pattern) for regex, value, pattern in patterns if regex.search(module)), None)

    def expected_rank(self, module: str) -> tuple[int | None, str]:
        """The rank the config declares for `module` (None when it declares none) and where it says so."""
        found = self._lookup(self.rank_pattern, module)
        if found is not None:
            return int(found[0]), f"rank_pattern[{clip(repr(found[1]), 80)}]"
        return self.r, "r"

    def _check_pair(self, name: str, entry: dict[str, str]) -> None:
        """A and B share a rank, the config's rank; both are floating-point (shapes from the headers only)."""
        for part in ("A", "B", "bias"):
            if part in entry:
                self.files.check_floating(entry[part], f"the LoRA {part} factor of {name}")
        a, b = self.files.shape(entry["A"]), self.files.shape(entry["B"])
        if len(a) < 2 or len(b) < 2:
            raise CheckpointError(
                f"{self.label} ({self.folder}): LoRA factors of {name} have shapes {clip(list(a))} and "
                f"{clip(list(b))}; A and B are matrices"
            )
        if a[0] != b[1]:
            raise CheckpointError(
                f"{self.label} ({self.folder}): LoRA factors of {name} disagree on the rank: A has {a[0]} rows, B has "
                f"{b[1]} columns; the adapter is damaged"
            )
        expected, where = self.expected_rank(entry["module"])
        if expected is not None and expected != a[0]:
            raise CheckpointError(
                f"{self.config_path}: {where} is {expected}, but the saved factors of {name} have rank {a[0]}; the "
                "config does not belong to these weights (peft refuses to load it)"
            )

    # ----------------------------------------------------------------------------------------------- deltas
    def _scaling(self, module: str, rank: int) -> float:
        found = self._lookup(self.alpha_pattern, module)
        if found is not None:
            alpha = float(found[0])
        else:
            alpha = self.lora_alpha if self.lora_alpha is not None else float(rank)
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


__all__ = ["LoraAdapter"]
