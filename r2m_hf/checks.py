"""Every check a merge makes on its inputs, each written once as a function that raises a typed error.

The planner (:mod:`r2m_hf.planning`) calls these fail-fast, before any tensor is merged; ``r2m-hf check-specialist``
(:mod:`r2m_hf.contrib`) calls the same functions on one model and collects their outcomes into a report. A check
returns what it found (a sentence, or the value it resolved) and raises an :class:`~r2m_hf.errors.R2MError` subclass
whose message names the input and says what to do. Checks read configs, shapes and file headers; only
:func:`check_shares_base` and :func:`check_adapter_base` (with a layout) read tensor data.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from .checkpoint import Checkpoint
from .config import path_exists
from .errors import CheckpointError, ConfigError, clip
from .groups import ModelLayout
from .heads import fake_index_or_error
from .lora import LoraAdapter
from .sources import ResolvedSource, read_model_json

# A full model whose tensors all differ from the base's by more than this (median ‖θ−θ0‖/‖θ0‖ over matrices) was
# not fine-tuned from that base: fine-tuning moves weights by a few percent, unrelated weights differ by ~√2.
UNRELATED_DISTANCE = 1.0


@dataclass(frozen=True)
class Finding:
    """What a check that passed found.

    Args:
        detail (`str`): one sentence for a report.
        verified (`bool`): False when the check could not be settled (the planner keeps the detail as a note).
    """

    detail: str
    verified: bool = True


# ------------------------------------------------------------------------------------------------- architecture
def read_model_config(folder: Path, who: str):
    """The transformers config of a model folder, or None when it has no ``config.json``.

    Raises:
        `CheckpointError`: ``config.json`` exists but transformers cannot read it.
    """
    from transformers import AutoConfig

    # inside the folder, small, a JSON object with well-typed labels: checked before transformers reads it
    data = read_model_json(Path(folder), "config.json", CheckpointError)
    if data is None:
        return None
    if data.get("model_type") == "deepfakebench_clip":
        # converted DeepfakeBench detectors are read without remote code; only they pay for importing the class
        from .deepfakebench import register

        register()
    file = Path(folder) / "config.json"
    try:
        config = AutoConfig.from_pretrained(str(folder), trust_remote_code=False)
    except Exception as exc:  # transformers raises ValueError/OSError/KeyError for unknown or broken configs
        raise CheckpointError(f"{who} ({file}): cannot be read by transformers: {clip(str(exc))}") from None
    check_config_sizes(config.to_dict(), f"{who} ({file})")
    return config


# Integer sizes of an architecture (``hidden_size``, ``num_hidden_layers``, ``patch_size``, nested vision/text
# configs included): the layout is built from them before any weight is read, so a negative or absurd value would
# crash or exhaust memory there. Counts (layers, heads, …) stay under MAX_COUNT, sizes under MAX_SIZE.
_SIZE_KEY = re.compile(r"(^num_|_size$|_dim$|^dim$|_layers$|_heads$|_channels$)")
MAX_COUNT, MAX_SIZE = 4096, 1 << 20


def check_config_sizes(config: Mapping[str, Any], who: str, prefix: str = "") -> None:
    """Every integer size of a model config must be non-negative and plausible.

    Raises:
        `CheckpointError`: naming the key and its value.
    """
    for key, value in config.items():
        if isinstance(value, Mapping):
            check_config_sizes(value, who, f"{prefix}{key}.")
            continue
        if not isinstance(key, str) or not _SIZE_KEY.search(key):
            continue
        limit = MAX_COUNT if key.startswith("num_") or key.endswith(("_layers", "_heads")) else MAX_SIZE
        low = 1 if key.endswith(("_heads", "_size", "_dim")) or key == "dim" else 0
        for item in value if isinstance(value, (list, tuple)) else [value]:
            if isinstance(item, int) and not isinstance(item, bool) and not low <= item <= limit:
                raise CheckpointError(
                    f"{who}: {prefix}{key} = {clip(repr(item), 40)} is out of range ({low} to {limit:,}); the config "
                    "does not describe a model r2m-hf can lay out"
                )


def require_model_config(folder: Path, who: str):
    """The config of a full specialist, which must have one.

    Raises:
        `CheckpointError`: no ``config.json``, or an unreadable one.
    """
    config = read_model_config(folder, who)
    if config is None:
        raise CheckpointError(f"{who}: no config.json; a full specialist is a transformers model folder")
    return config


def check_architectures(configs: Sequence[tuple[str, Any]], base_config, base_who: str = "base_model"):
    """The architecture every input shares: a full specialist's config, else the base's.

    Args:
        configs (`list[tuple[str, PretrainedConfig]]`): (who, config) of the full specialists.
        base_config (`PretrainedConfig`, *optional*): the base's config.
        base_who (`str`): how messages name the base.

    Returns:
        `PretrainedConfig`: the reference config (not a copy).

    Raises:
        `CheckpointError`: two inputs have different ``model_type``s.
        `ConfigError`: neither a full specialist nor the base has a config.
    """
    reference = next((cfg for _, cfg in configs), None)
    if reference is None:
        if base_config is None:
            raise ConfigError(f"{base_who}: no config.json, and no full specialist to take the architecture from")
        reference = base_config
    for who, cfg in configs:
        if cfg.model_type != reference.model_type:
            raise CheckpointError(
                f"{who}: architecture {cfg.model_type} differs from {reference.model_type}; all specialists must be "
                "fine-tuned from the same backbone"
            )
    # A stock CLIP is the base of DeepfakeBench CLIP detectors: such configs name the base model_types they accept.
    accepted = (reference.model_type, *getattr(reference, "compatible_base_model_types", ()))
    if base_config is not None and base_config.model_type not in accepted:
        raise CheckpointError(
            f"{base_who}: architecture {base_config.model_type} differs from the specialists' {reference.model_type}"
        )
    return reference


def check_image_classification(config) -> None:
    """Transformers must have an image-classification model for the architecture.

    Raises:
        `ConfigError`: it has none (a text or audio model, say).
    """
    from transformers import AutoModelForImageClassification

    if type(config) not in AutoModelForImageClassification._model_mapping:
        raise ConfigError(f"{config.model_type}: transformers has no image-classification model for this architecture")


# ------------------------------------------------------------------------------------------------------ weights
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


def check_shares_base(checkpoint: Checkpoint, base: Checkpoint, names: Sequence[str], who: str) -> Finding:
    """A full specialist must look fine-tuned from the base: some tensor equal, or its matrices close.

    Args:
        checkpoint (`Checkpoint`): the specialist.
        base (`Checkpoint`): the base θ0.
        names (`list[str]`): the tensors to compare (the planner samples a few matrices, the report takes all).
        who (`str`): how messages name the specialist.

    Raises:
        `CheckpointError`: no compared tensor equals the base's and the median matrix distance exceeds
        :data:`UNRELATED_DISTANCE`.
    """
    same, distances = compare_to_base(checkpoint, base, names)
    median = sorted(distances)[len(distances) // 2] if distances else 0.0
    detail = f"{same}/{len(names)} compared tensors equal the base's; median relative distance {median:.3g}"
    if same == 0 and distances and median > UNRELATED_DISTANCE:
        raise CheckpointError(
            f"{who} ({checkpoint.folder}): {detail}: it was not fine-tuned from this base; merge only specialists "
            "of one backbone"
        )
    return Finding(detail)


def check_adapter_shapes(adapter: LoraAdapter, layout: ModelLayout, who: str) -> Finding:
    """Every LoRA pair of an adapter must give a delta of its target matrix's shape (file headers only).

    Raises:
        `CheckpointError`: a pair's ``B A`` has another shape than the base's tensor.
    """
    for name, entry in adapter.targets.items():
        a, b = adapter.files.shape(entry["A"]), adapter.files.shape(entry["B"])
        expected = tuple(layout.shapes[name])
        out_in = (b[0], math.prod(a[1:]))
        if adapter.fan_in_fan_out:
            out_in = out_in[::-1]
        if len(expected) < 2 or out_in != (expected[0], math.prod(expected[1:])):
            raise CheckpointError(
                f"{who} ({adapter.folder}): LoRA pair of {name} gives a {out_in[0]}×{out_in[1]} delta, the base's "
                f"tensor is {list(expected)}; the adapter belongs to another base"
            )
    return Finding(f"{len(adapter.targets)} LoRA pairs fit the base's matrices")


def check_adapter_base(
    source: ResolvedSource,
    base: ResolvedSource,
    who: str,
    *,
    layout: ModelLayout | None = None,
    allow_pickle: bool = False,
) -> Finding:
    """An adapter must have been trained on the merge's base, as far as its ``adapter_config.json`` tells.

    Args:
        source (`ResolvedSource`): the adapter.
        base (`ResolvedSource`): the merge's base.
        who (`str`): how messages name the adapter.
        layout (`ModelLayout`, *optional*): when given and the adapter names another local folder as its base, the
            two folders' backbone weights are compared (reads both); without it that case is left unverified.
        allow_pickle (`bool`): accept pickle checkpoints when comparing.

    Raises:
        `CheckpointError`: it names another Hub base, or a local base whose weights differ from the given base's.
    """
    declared = (source.read_json("adapter_config.json") or {}).get("base_model_name_or_path")
    if not declared:
        return Finding("adapter_config.json names no base; the given base is assumed")
    shown = clip(declared)
    local = Path(declared).expanduser() if path_exists(declared) else None
    looks_local = local is not None or declared.startswith((".", "/", "~"))
    if base.repo_id and not looks_local:
        if declared.rstrip("/") != base.repo_id:
            raise CheckpointError(
                f"{who}: adapter was trained on base {shown!r} but base_model is {base.repo_id!r}; merge "
                "specialists of one backbone, or write the adapter as base+adapter"
            )
        return Finding(f"adapter_config.json names the base ({shown})")
    if local is None or not local.is_dir():
        return Finding(f"adapter_config.json names {shown}; cannot verify that it is the given base", False)
    if local.resolve() == base.path:
        return Finding(f"adapter_config.json names the base ({shown})")
    if layout is None or source.repo_id:  # a downloaded adapter does not get to choose a local folder to read
        return Finding(f"adapter_config.json names base {shown}, the given base is {base.path}", False)
    own = Checkpoint(local, layout, f"{who}'s declared base {shown}", allow_pickle=allow_pickle)
    own.check_covers(layout.backbone_names, layout, "the merge")
    given = Checkpoint(base.path, layout, "base_model", allow_pickle=allow_pickle)
    differing = sum(1 for n in layout.backbone_names if not _close(own.get(n), given.get(n)))
    if differing:
        raise CheckpointError(
            f"{who}: adapter was trained on base {shown}: {differing} of its backbone tensors differ from the "
            "given base's; merge specialists of one backbone, or write the adapter as base+adapter"
        )
    return Finding(f"adapter_config.json names {shown}, whose weights equal the given base's")


def _close(a: torch.Tensor, b: torch.Tensor) -> bool:
    return a.shape == b.shape and torch.allclose(a.float(), b.float())


# ------------------------------------------------------------------------------------------------ labels, heads
def check_labels(id2label: Mapping | None, fake_label: str | int | None, who: str) -> int:
    """The index of the fake class, from ``id2label`` or the YAML's ``fake_label``.

    Raises:
        `LabelError`: the names do not say which class is fake, or `fake_label` matches none of them.
    """
    labels = {int(k): str(v) for k, v in (id2label or {}).items()}
    return fake_index_or_error(labels, fake_label, who)


def check_head(
    shape: Sequence[int] | None, expected: Sequence[int], weight_name: str, who: str, *, adapter: bool = False
) -> Finding:
    """A specialist's classifier must be a binary head of the architecture's shape (shapes only).

    Args:
        shape (`tuple[int, ...]`, *optional*): the head weight's shape, None when the checkpoint has no head.
        expected (`tuple[int, ...]`): the binary head's shape in the merged architecture.
        weight_name (`str`): the head weight's canonical name.
        who (`str`): how messages name the specialist.
        adapter (`bool`): the specialist is a LoRA adapter (its head comes from ``modules_to_save``).

    Raises:
        `CheckpointError`: no head, not two classes, or another feature size.
    """
    if shape is None:
        if adapter:
            raise CheckpointError(
                f"{who}: the adapter saved no classifier head; train it with modules_to_save=['classifier'] so the "
                "specialist's head can be merged"
            )
        raise CheckpointError(
            f"{who}: no classifier ({weight_name}) in the checkpoint; save the full *ForImageClassification model "
            "with its binary head"
        )
    if shape[0] != 2:
        raise CheckpointError(
            f"{who}: classifier has {shape[0]} classes; a specialist must be a binary real/fake classifier"
        )
    if tuple(shape) != tuple(expected):
        raise CheckpointError(f"{who}: tensor {weight_name} has shape {list(shape)}, expected {list(expected)}")
    return Finding(f"2 classes over {shape[1]} features")


# -------------------------------------------------------------------------------------------------------- recipe
def check_method_base(merge_method: str, requires_base: bool, has_base: bool) -> None:
    """A method that works on task vectors τi = θi − θ0 needs a base.

    Raises:
        `ConfigError`: the method needs a base and the merge has none.
    """
    if requires_base and not has_base:
        raise ConfigError(f"merge_method {merge_method!r} needs a base_model")


def check_adapter_has_base(has_base: bool, who: str) -> None:
    """A LoRA adapter is a delta: it needs a base, the merge's or its own (``base+adapter``).

    Raises:
        `ConfigError`: neither is given.
    """
    if not has_base:
        raise ConfigError(f"{who}: a LoRA adapter needs a base; set base_model or write base+adapter")


def choose_processor(base: ResolvedSource | None, specialists: Sequence[ResolvedSource]) -> tuple[Path | None, str]:
    """The image processor to copy: the base's, else the first specialist's (noting when the specialists disagree).

    Returns:
        `(folder or None, note)`: where ``preprocessor_config.json`` is copied from, and a sentence saying so.
    """

    def read(path: Path) -> dict | None:
        return read_model_json(path, "preprocessor_config.json")

    if base is not None and read(base.path) is not None:
        return base.path, f"from base_model ({base.spec})"
    found = [(s, p) for s, p in ((s, read(s.path)) for s in specialists) if p is not None]
    if not found:
        return None, "none found (base and specialists have no preprocessor_config.json)"
    first_source, first = found[0]
    differing = [str(s.spec) for s, p in found[1:] if p != first]
    note = f"from specialist {first_source.spec}"
    if differing:
        note += f"; specialists disagree: {', '.join(differing)} use a different processor"
    return first_source.path, note


__all__ = [
    "UNRELATED_DISTANCE",
    "Finding",
    "check_adapter_base",
    "check_adapter_has_base",
    "check_adapter_shapes",
    "check_architectures",
    "check_head",
    "check_image_classification",
    "check_labels",
    "check_method_base",
    "check_shares_base",
    "choose_processor",
    "compare_to_base",
    "read_model_config",
    "require_model_config",
]
