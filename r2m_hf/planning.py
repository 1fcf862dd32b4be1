"""Plan a merge: resolve every input, build the architecture's layout and check that all inputs fit it.

:func:`plan_merge` turns a recipe into a :class:`MergePlan` without reading a tensor's data: sources are resolved
(downloaded when they are Hub repos), configs and file headers are read, and every check of :mod:`r2m_hf.checks`
runs fail-fast, so a merge that starts does not stop on a bad input. :meth:`MergePlan.describe` is the
``--dry-run`` view and :meth:`MergePlan.memory_estimate` the peak tensor memory the run will need.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

import torch

from .checkpoint import Checkpoint
from .checks import (
    Finding,
    check_adapter_base,
    check_adapter_has_base,
    check_adapter_shapes,
    check_architectures,
    check_head,
    check_image_classification,
    check_labels,
    check_method_base,
    check_shares_base,
    choose_processor,
    read_model_config,
    require_model_config,
)
from .config import DFB_PREFIX, MergeConfig, SourceSpec, load_config, method_parameters, path_exists
from .engine import build_method
from .errors import CheckpointError, ConfigError, R2MError, clip
from .groups import Group, ModelLayout
from .heads import ID2LABEL, LABEL2ID, align_head
from .layout_cache import load_layout, remember_aliases
from .lora import LoraAdapter
from .methods.base import MergeMethod
from .sources import ResolvedSource, resolve_source

DTYPES = {"float32": torch.float32, "float64": torch.float64, "float16": torch.float16, "bfloat16": torch.bfloat16}


@dataclass
class Specialist:
    """One specialist, ready to be read tensor by tensor.

    Args:
        name (`str`): its name in the recipe.
        source (`ResolvedSource`): where its files are.
        weight (`float`): its per-model weight.
        who (`str`): how messages name it (``models[1] (fs)``).
        checkpoint (`Checkpoint`, *optional*): full weights.
        adapter (`LoraAdapter`, *optional*): a LoRA adapter over `adapter_base` (or the merge's base).
        adapter_base (`Checkpoint`, *optional*): the adapter's own base when given as ``base+adapter``.
        adapter_base_source (`ResolvedSource`, *optional*): where that base's files are.
        fake_index (`int`): which head row is fake.
        id2label (`dict[int, str]`): its class names.
    """

    name: str
    source: ResolvedSource
    weight: float
    who: str = ""
    checkpoint: Checkpoint | None = None
    adapter: LoraAdapter | None = None
    adapter_base: Checkpoint | None = None
    adapter_base_source: ResolvedSource | None = None
    fake_index: int = 1
    id2label: dict = field(default_factory=dict)

    @property
    def kind(self) -> str:
        return "lora" if self.adapter is not None else "full"

    def tensor(self, name: str, base: torch.Tensor | None, dtype: torch.dtype) -> torch.Tensor:
        """θi for one backbone tensor (an adapter adds its delta to its base)."""
        if self.checkpoint is not None:
            return self.checkpoint.get(name).to(dtype)
        own = self.adapter_base.get(name).to(dtype) if self.adapter_base is not None else base
        if own is None:
            raise CheckpointError(f"{self.who or self.name}: adapter needs its base tensor {name}")
        if name in self.adapter.saved:  # a backbone module listed in modules_to_save
            return self.adapter.files.get(self.adapter.saved[name]).to(dtype)
        delta = self.adapter.bias_delta(name, dtype) if name.endswith("bias") else self.adapter.delta(name, dtype)
        return own if delta is None else own + delta

    def read_into(self, name: str, base: torch.Tensor | None, out: torch.Tensor) -> None:
        """θi for one backbone tensor, written into `out` (read straight from the file for full weights)."""
        if self.checkpoint is not None:
            self.checkpoint.read_into(name, out)
        else:
            out.copy_(self.tensor(name, base, out.dtype))

    def _head_key(self, name: str | None):
        """(reader, key) of a head tensor, or None when this specialist has none."""
        if name is None:
            return None
        if self.checkpoint is not None:
            return (self.checkpoint, name) if self.checkpoint.has(name) else None
        return (self.adapter.files, self.adapter.saved[name]) if name in self.adapter.saved else None

    def check_head(self, layout: ModelLayout) -> Finding:
        """:func:`~r2m_hf.checks.check_head` on this specialist's head (shapes only)."""
        weight_name = next(n for n in layout.head_names if n.endswith("weight"))
        found = self._head_key(weight_name)
        shape = None if found is None else tuple(found[0].shape(found[1]))
        who = f"{self.who or self.name} ({self.source.path})"
        return check_head(shape, layout.shapes[weight_name], weight_name, who, adapter=self.adapter is not None)

    def head(self, layout: ModelLayout, dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor | None]:
        """The checked head, aligned to 0 = real, 1 = fake."""
        self.check_head(layout)
        weight_name = next(n for n in layout.head_names if n.endswith("weight"))
        reader, key = self._head_key(weight_name)
        bias_found = self._head_key(next((n for n in layout.head_names if n.endswith("bias")), None))
        bias = None if bias_found is None else bias_found[0].get(bias_found[1]).to(dtype)
        return align_head(reader.get(key).to(dtype), bias, self.fake_index)


@dataclass
class MergePlan:
    """Everything resolved and checked before any tensor is merged."""

    config: MergeConfig
    config_path: Path | None
    layout: ModelLayout
    base: Checkpoint | None
    base_source: ResolvedSource | None
    specialists: list[Specialist]
    processor_dir: Path | None
    processor_note: str | None
    notes: list[str] = field(default_factory=list)

    @property
    def compute_dtype(self) -> torch.dtype:
        return DTYPES[self.config.dtype]

    @property
    def out_dtype(self) -> torch.dtype:
        return DTYPES[self.config.out_dtype or self.config.dtype]

    @property
    def names(self) -> list[str]:
        return [s.name for s in self.specialists]

    def sources(self) -> list[ResolvedSource]:
        """Every input folder: the base, the specialists and the adapters' own bases."""
        found = [self.base_source]
        found += [s.source for s in self.specialists] + [s.adapter_base_source for s in self.specialists]
        return [s for s in found if s is not None]

    def method(self) -> MergeMethod:
        """A fresh instance of the recipe's method with its parameters and the specialists' weights."""
        return build_method(
            self.config.merge_method, method_parameters(self.config), self.names, [s.weight for s in self.specialists]
        )

    def memory_estimate(self) -> int:
        """Peak bytes of tensor data the merge holds at once.

        The engine streams one tensor at a time and holds N+1 copies of it (base and specialists), the N+1 copies of
        the next tensor being read meanwhile, plus working copies: (3N + 5) × the largest tensor. The method adds
        what it keeps across tensors (:meth:`~r2m_hf.methods.base.MergeMethod.extra_memory_bytes`).
        """
        item = torch.empty((), dtype=self.compute_dtype).element_size()
        largest = max(math.prod(s) for s in self.layout.shapes.values())
        engine = (3 * len(self.specialists) + 5) * largest * item
        backbone = self.layout.backbone_names
        shapes = {name: tuple(self.layout.shapes[name]) for name in backbone}
        groups = {name: self.layout.groups[name] for name in backbone}
        return engine + int(self.method().extra_memory_bytes(shapes, groups, item))

    def describe(self) -> str:
        """A human-readable plan (``--dry-run``)."""
        layout = self.layout
        counts = {g: 0 for g in Group}
        params = {g: 0 for g in Group}
        for name, group in layout.groups.items():
            counts[group] += 1
            params[group] += math.prod(layout.shapes[name])
        passes = self.method().statistics_passes + 1
        lines = [
            f"merge_method: {self.config.merge_method}  ({passes} pass(es) over the tensors)",
            f"architecture: {layout.model_class} ({layout.config.model_type})",
        ]
        if self.base_source is not None:
            lines.append(f"base: {describe_source(self.base_source)}")
        for s in self.specialists:
            extra = f", adapter over {describe_source(s.adapter_base_source)}" if s.adapter_base_source else ""
            lines.append(
                f"specialist {s.name}: {describe_source(s.source)} [{s.kind}{extra}] weight={s.weight} "
                f"fake index={s.fake_index} ({s.id2label.get(s.fake_index, '?')})"
            )
        lines.append("groups: " + ", ".join(f"{g.value} {counts[g]} tensors / {params[g]:,} params" for g in Group))
        lines.append(f"tensors to merge: {len(layout.backbone_names)} backbone + {len(layout.head_names)} head")
        lines.append(f"dtype: compute {self.config.dtype}, output {self.config.out_dtype or self.config.dtype}")
        lines.append(f"memory estimate (tensor data held at once): {human_bytes(self.memory_estimate())}")
        if self.processor_note:
            lines.append(f"image processor: {self.processor_note}")
        lines.extend(f"note: {n}" for n in self.notes)
        return "\n".join(lines)


def describe_source(source: ResolvedSource) -> str:
    """``repo@revision (commit …)`` for a Hub input, the folder for a local one."""
    if source.repo_id:
        return f"{source.repo_id}@{source.spec.revision or 'main'} (commit {source.commit or '?'})"
    return str(source.path)


def human_bytes(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024:
            return f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} TiB"


def layout_for(config) -> ModelLayout:
    """The layout of the merged model: the architecture of `config` with a binary real/fake head.

    It comes from the layout cache (:mod:`r2m_hf.layout_cache`) when an earlier run built it.

    Raises:
        `ConfigError`: transformers has no image-classification model for the architecture.
    """
    check_image_classification(config)
    target = config.__class__.from_dict(config.to_dict())
    target.num_labels = 2
    target.id2label = dict(ID2LABEL)
    target.label2id = dict(LABEL2ID)
    target.problem_type = "single_label_classification"
    try:
        return load_layout(target)
    except R2MError:
        raise
    except Exception as exc:  # sizes the config checks let through but no model can be built from
        raise CheckpointError(
            f"{config.model_type}: the config does not describe a buildable model ({clip(str(exc))})"
        ) from None


def adapter_base_spec(source: ResolvedSource, who: str) -> SourceSpec:
    """The base an adapter names in its ``adapter_config.json``.

    Raises:
        `ConfigError`: it names none (the YAML must then set ``base_model``).
    """
    cfg = source.read_json("adapter_config.json") or {}
    ref = cfg.get("base_model_name_or_path")
    if not ref:
        raise ConfigError(f"{who}: adapter_config.json names no base_model_name_or_path; set base_model in the YAML")
    if source.repo_id and (ref.startswith(("/", ".", "~")) or path_exists(ref)):
        # a downloaded adapter must not choose a local folder to read and merge
        raise ConfigError(
            f"{who}: adapter_config.json names a local base {clip(ref)}; a downloaded adapter cannot choose a local "
            "folder: set base_model in the YAML"
        )
    revision = cfg.get("revision")
    return SourceSpec(ref, revision) if revision else SourceSpec.parse(ref)


def adapter_labels(source: ResolvedSource, base_config) -> dict:
    """An adapter's labels: a config.json saved beside it (peft users often do), else its base config's."""
    cfg = source.read_json("config.json")
    if cfg and "id2label" in cfg:
        return cfg["id2label"]
    return dict(getattr(base_config, "id2label", {}) or {})


def _sampled_matrices(layout: ModelLayout) -> list[str]:
    """About eight backbone matrices spread over the depth: enough to tell a foreign base, cheap to read."""
    matrices = [n for n in layout.backbone_names if len(layout.shapes[n]) >= 2]
    return matrices[:: max(1, len(matrices) // 8)]


def plan_merge(
    config: MergeConfig | str | Path,
    *,
    config_path: Path | None = None,
    allow_pickle: bool = False,
) -> MergePlan:
    """Resolve and check every input of a merge without reading tensor data.

    Args:
        config (`MergeConfig`, `str` or `Path`): a validated config, or the path of a YAML file.
        config_path (`Path`, *optional*): the YAML's path (relative model paths are resolved against its folder).
        allow_pickle (`bool`): accept pickle checkpoints.

    Returns:
        `MergePlan`: the checked plan.

    Raises:
        `ConfigError`, `SourceError`, `CheckpointError`, `LabelError`: the first check that fails.
    """
    if not isinstance(config, MergeConfig):
        config_path = Path(config)
        config = load_config(config_path)
    base_dir = config_path.parent if config_path is not None else None

    def resolve(spec: SourceSpec) -> ResolvedSource:
        return resolve_source(spec, base_dir=base_dir, allow_pickle=allow_pickle)

    def resolve_entry(entry) -> ResolvedSource:
        _, spec = entry.sources()
        if not entry.is_dfb:
            return resolve(spec)
        from .deepfakebench import materialize_dfb

        # A DeepfakeBench checkpoint becomes, once, a cached model folder (keyed by its SHA-256) like any other.
        reference = entry.model[len(DFB_PREFIX) :]
        backbone = entry.backbone  # a relative folder is read from the recipe's folder first, as `model:` paths are
        if base_dir is not None and path_exists(str(base_dir / backbone)) and (base_dir / backbone).is_dir():
            backbone = str(base_dir / backbone)
        folder = materialize_dfb(reference, backbone=backbone, variant=entry.variant or "clip", base_dir=base_dir)
        return ResolvedSource(spec=spec, path=folder)

    notes: list[str] = []
    base_source = resolve(SourceSpec.parse(config.base_model)) if config.base_model else None
    if base_source is None:  # DeepfakeBench checkpoints name their base: the CLIP they were trained from
        dfb = next((e for e in config.models if e.is_dfb), None)
        if dfb is not None:
            base_source = resolve(SourceSpec.parse(dfb.backbone))
            notes.append(f"base_model taken from the backbone of {dfb.display_name()}: {dfb.backbone}")
    entries = []
    for i, entry in enumerate(config.models):
        own_base, _ = entry.sources()
        who = f"models[{i}] ({entry.display_name()})"
        entries.append((who, entry, resolve_entry(entry), resolve(own_base) if own_base is not None else None))

    if base_source is None:  # adapters bring their base when the YAML names none
        for who, _, source, adapter_base in entries:
            if source.is_adapter:
                ref = adapter_base.spec if adapter_base else adapter_base_spec(source, who)
                base_source = adapter_base or resolve(ref)
                notes.append(f"base_model taken from {who}'s adapter_config.json: {ref}")
                break
    for who, _, source, adapter_base in entries:
        if source.is_adapter and adapter_base is None and base_source is not None:
            finding = check_adapter_base(source, base_source, who)
            if not finding.verified:
                notes.append(f"{who}: {finding.detail}")

    base_config = read_model_config(base_source.path, "base_model") if base_source else None
    full_configs = {who: require_model_config(src.path, who) for who, _, src, _ in entries if not src.is_adapter}
    layout = layout_for(check_architectures(list(full_configs.items()), base_config, "base_model"))

    base = None
    if base_source is not None:
        base = Checkpoint(base_source.path, layout, "base_model", allow_pickle=allow_pickle)
        base.check_covers(layout.backbone_names, layout, "the merge")
    specialists = [
        _specialist(who, entry, source, own_base, layout, base, base_config, full_configs, allow_pickle)
        for who, entry, source, own_base in entries
    ]
    method_cls = build_method(config.merge_method, method_parameters(config), config.names()).__class__
    check_method_base(config.merge_method, method_cls.requires_base, base is not None)
    # A base of another model_type (a stock CLIP under DeepfakeBench detectors) lacks the specialists' preprocessing.
    same_kind = base_config is None or base_config.model_type == layout.config.model_type
    processor_base = base_source if same_kind else None
    processor_dir, processor_note = choose_processor(processor_base, [s.source for s in specialists])
    remember_aliases(layout)  # checkpoint keys the cached layout had to look up, for the next run
    return MergePlan(
        config=config,
        config_path=config_path,
        layout=layout,
        base=base,
        base_source=base_source,
        specialists=specialists,
        processor_dir=processor_dir,
        processor_note=processor_note,
        notes=notes,
    )


def _specialist(who, entry, source, own_base, layout, base, base_config, full_configs, allow_pickle) -> Specialist:
    """Open one specialist's weights and run its checks (head, shapes, base, labels)."""
    specialist = Specialist(name=entry.display_name(), source=source, weight=entry.weight, who=who)
    if source.is_adapter:
        specialist.adapter = LoraAdapter(source.path, layout, who, allow_pickle=allow_pickle)
        check_adapter_shapes(specialist.adapter, layout, who)
        if own_base is not None:
            specialist.adapter_base = Checkpoint(own_base.path, layout, f"{who} base", allow_pickle=allow_pickle)
            specialist.adapter_base.check_covers(layout.backbone_names, layout, "the merge")
            specialist.adapter_base_source = own_base
        check_adapter_has_base(own_base is not None or base is not None, who)
        labels_config = base_config if own_base is None else read_model_config(own_base.path, who)
        id2label = adapter_labels(source, labels_config)
        specialist.check_head(layout)
    else:
        specialist.checkpoint = Checkpoint(source.path, layout, who, allow_pickle=allow_pickle)
        specialist.checkpoint.check_covers(layout.backbone_names, layout, "the merge")
        specialist.check_head(layout)
        specialist.checkpoint.check_covers(layout.head_names, layout, "the merge")
        if base is not None:
            check_shares_base(specialist.checkpoint, base, _sampled_matrices(layout), who)
        id2label = dict(full_configs[who].id2label)
    specialist.id2label = {int(k): v for k, v in id2label.items()}
    specialist.fake_index = check_labels(specialist.id2label, entry.fake_label, who)
    return specialist


__all__ = [
    "DTYPES",
    "MergePlan",
    "Specialist",
    "adapter_base_spec",
    "adapter_labels",
    "describe_source",
    "human_bytes",
    "layout_for",
    "plan_merge",
]
