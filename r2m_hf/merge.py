"""Plan and run a merge: config → sources → checkpoints → method → output folder.

:func:`plan_merge` resolves every source, builds the architecture's layout and checks that all inputs fit it, without
reading a tensor's data. :func:`run_merge` streams the tensors through the method's passes and writes the output
folder atomically. :func:`merge` does both.
"""

from __future__ import annotations

import json
import logging
import math
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import yaml

from . import __version__
from .checkpoint import Checkpoint, LoraAdapter, compare_to_base, looks_unrelated
from .config import MergeConfig, SourceSpec, head_choice, load_config, method_parameters
from .distributed import process_group
from .engine import build_method, run_passes
from .errors import CheckpointError, ConfigError, OutputError, SourceError
from .groups import Group, ModelLayout, build_layout
from .heads import ID2LABEL, LABEL2ID, align_head, fake_index_or_error, merge_heads
from .methods.base import MergeMethod, TensorSlot
from .sources import ResolvedSource, resolve_source, sha256_file
from .writer import DEFAULT_MAX_SHARD_BYTES, OutputFolder, StreamingSafetensorsWriter

logger = logging.getLogger("r2m_hf")

DTYPES = {"float32": torch.float32, "float64": torch.float64, "float16": torch.float16, "bfloat16": torch.bfloat16}
PROCESSOR_FILES = ("preprocessor_config.json",)


@dataclass
class Specialist:
    """One specialist, ready to be read tensor by tensor.

    Args:
        name (`str`): its name in the recipe.
        source (`ResolvedSource`): where its files are.
        weight (`float`): its per-model weight.
        checkpoint (`Checkpoint`, *optional*): full weights.
        adapter (`LoraAdapter`, *optional*): a LoRA adapter over `adapter_base` (or the merge's base).
        adapter_base (`Checkpoint`, *optional*): the adapter's own base when given as ``base+adapter``.
        fake_index (`int`): which head row is fake.
    """

    name: str
    source: ResolvedSource
    weight: float
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
            raise CheckpointError(f"{self.name}: adapter needs its base tensor {name}")
        if name in self.adapter.saved:  # a backbone module listed in modules_to_save
            return self.adapter.files.get(self.adapter.saved[name]).to(dtype)
        delta = self.adapter.bias_delta(name, dtype) if name.endswith("bias") else self.adapter.delta(name, dtype)
        return own if delta is None else own + delta

    def head(self, layout: ModelLayout, dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor | None]:
        weight_name = next(n for n in layout.head_names if n.endswith("weight"))
        bias_name = next((n for n in layout.head_names if n.endswith("bias")), None)
        if self.checkpoint is not None:
            weight = self.checkpoint.get(weight_name)
            bias = self.checkpoint.get(bias_name) if bias_name and self.checkpoint.has(bias_name) else None
        else:
            if weight_name not in self.adapter.saved:
                raise CheckpointError(
                    f"{self.name} ({self.source.path}): the adapter saved no classifier head; train it with "
                    "modules_to_save=['classifier'] so the specialist's head can be merged"
                )
            weight = self.adapter.files.get(self.adapter.saved[weight_name])
            bias = self.adapter.files.get(self.adapter.saved[bias_name]) if bias_name in self.adapter.saved else None
        if weight.shape[0] != 2:
            raise CheckpointError(
                f"{self.name} ({self.source.path}): classifier has {weight.shape[0]} classes; a specialist must be a "
                "binary real/fake classifier"
            )
        if tuple(weight.shape) != tuple(layout.shapes[weight_name]):
            raise CheckpointError(
                f"{self.name} ({self.source.path}): tensor {weight_name} has shape {list(weight.shape)}, expected "
                f"{list(layout.shapes[weight_name])}"
            )
        return align_head(weight.to(dtype), None if bias is None else bias.to(dtype), self.fake_index)


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

    def _sources(self) -> list[ResolvedSource]:
        found = [self.base_source]
        found += [s.source for s in self.specialists] + [s.adapter_base_source for s in self.specialists]
        return [s for s in found if s is not None]

    def start_hashing(self) -> None:
        """Hash the input weight files in a background thread while the merge runs (hashlib releases the GIL)."""
        from concurrent.futures import ThreadPoolExecutor

        jobs = [(s, f) for s in self._sources() if not s.file_hashes for f in _weight_files(s.path)]
        self._hash_pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="r2m-hash")
        self._hash_jobs = [(s, f, self._hash_pool.submit(sha256_file, f)) for s, f in jobs]

    def record_file_hashes(self) -> None:
        """Store every input weight file's SHA-256 in its source record (for the recipe)."""
        jobs = getattr(self, "_hash_jobs", None)
        if jobs is None:
            self.start_hashing()
            jobs = self._hash_jobs
        for source, file, future in jobs:
            source.file_hashes[file.name] = future.result()
        self._hash_pool.shutdown()
        self._hash_jobs = []

    def cancel_hashing(self) -> None:
        pool = getattr(self, "_hash_pool", None)
        if pool is not None:
            pool.shutdown(wait=False, cancel_futures=True)
            self._hash_jobs = None

    def method(self) -> MergeMethod:
        return build_method(
            self.config.merge_method,
            method_parameters(self.config),
            [s.name for s in self.specialists],
            [s.weight for s in self.specialists],
        )

    def memory_estimate(self) -> int:
        """Peak bytes of tensor data the merge holds: N+1 copies of the largest tensor (plus working copies) and,
        for R²M with the residual cache, the low-rank factors of the truncated residuals."""
        item = torch.empty((), dtype=self.compute_dtype).element_size()
        largest = max(math.prod(s) for s in self.layout.shapes.values())
        n = len(self.specialists)
        estimate = (2 * n + 4) * largest * item
        params = method_parameters(self.config)
        if self.config.merge_method == "r2m" and params.get("residual_cache", "memory") == "memory":
            ratio = float(params.get("residual_rank_ratio", 0.1))
            factors = sum(
                min(s) * ratio * (s[0] + s[1])
                for name, s in self.layout.shapes.items()
                if self.layout.groups[name] is Group.TRUNCATABLE
            )
            estimate += int(n * factors * item)
        return estimate

    def describe(self) -> str:
        """A human-readable plan (``--dry-run``)."""
        layout = self.layout
        counts = {g: 0 for g in Group}
        params = {g: 0 for g in Group}
        for name, group in layout.groups.items():
            counts[group] += 1
            params[group] += math.prod(layout.shapes[name])
        method = self.method()
        lines = [
            f"merge_method: {self.config.merge_method}  ({method.statistics_passes + 1} pass(es) over the tensors)",
            f"architecture: {layout.model_class} ({layout.config.model_type})",
        ]
        if self.base_source is not None:
            lines.append(f"base: {_describe_source(self.base_source)}")
        for s in self.specialists:
            extra = f", adapter over {_describe_source(s.adapter_base_source)}" if s.adapter_base_source else ""
            lines.append(
                f"specialist {s.name}: {_describe_source(s.source)} [{s.kind}{extra}] weight={s.weight} "
                f"fake index={s.fake_index} ({s.id2label.get(s.fake_index, '?')})"
            )
        lines.append("groups: " + ", ".join(f"{g.value} {counts[g]} tensors / {params[g]:,} params" for g in Group))
        lines.append(f"tensors to merge: {len(layout.backbone_names)} backbone + {len(layout.head_names)} head")
        lines.append(f"dtype: compute {self.config.dtype}, output {self.config.out_dtype or self.config.dtype}")
        lines.append(f"memory estimate (tensor data held at once): {_human_bytes(self.memory_estimate())}")
        if self.processor_note:
            lines.append(f"image processor: {self.processor_note}")
        lines.extend(f"note: {n}" for n in self.notes)
        return "\n".join(lines)


@dataclass
class MergeResult:
    """What a merge produced."""

    output_dir: Path
    report: dict[str, Any]
    plan: MergePlan
    is_main_process: bool = True

    @property
    def warnings(self) -> list[str]:
        return list(self.report.get("method", {}).get("warnings", []))


def _describe_source(source: ResolvedSource) -> str:
    if source.repo_id:
        return f"{source.repo_id}@{source.spec.revision or 'main'} (commit {source.commit or '?'})"
    return str(source.path)


def _human_bytes(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if n < 1024 or unit == "TiB":
            return f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} TiB"


def _load_config(folder: Path, who: str):
    from transformers import AutoConfig

    if not (folder / "config.json").is_file():
        return None
    try:
        return AutoConfig.from_pretrained(str(folder), trust_remote_code=False)
    except Exception as exc:  # transformers raises ValueError/OSError/KeyError for unknown or broken configs
        raise CheckpointError(f"{who} ({folder / 'config.json'}): cannot be read by transformers: {exc}") from None


def _target_config(configs: list[tuple[str, Any]], base_config, base_who: str):
    """The architecture all inputs must share: a full specialist's config, else the base's."""
    from transformers import AutoModelForImageClassification

    reference = next((cfg for _, cfg in configs), None)
    if reference is None:
        if base_config is None:
            raise ConfigError(f"{base_who}: no config.json, and no full specialist to take the architecture from")
        reference = base_config
    target = reference.__class__.from_dict(reference.to_dict())
    for who, cfg in configs:
        if cfg.model_type != target.model_type:
            raise CheckpointError(
                f"{who}: architecture {cfg.model_type} differs from {target.model_type}; all specialists must be "
                "fine-tuned from the same backbone"
            )
    if base_config is not None and base_config.model_type != target.model_type:
        raise CheckpointError(
            f"{base_who}: architecture {base_config.model_type} differs from the specialists' {target.model_type}"
        )
    if type(target) not in AutoModelForImageClassification._model_mapping:
        raise ConfigError(f"{target.model_type}: transformers has no image-classification model for this architecture")
    target.num_labels = 2
    target.id2label = dict(ID2LABEL)
    target.label2id = dict(LABEL2ID)
    target.problem_type = "single_label_classification"
    return target


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
    """
    if not isinstance(config, MergeConfig):
        config_path = Path(config)
        config = load_config(config_path)
    base_dir = config_path.parent if config_path is not None else None

    def resolve(spec: SourceSpec) -> ResolvedSource:
        return resolve_source(spec, base_dir=base_dir, allow_pickle=allow_pickle)

    notes: list[str] = []
    base_source = resolve(SourceSpec.parse(config.base_model)) if config.base_model else None
    entries = []
    for i, entry in enumerate(config.models):
        own_base, spec = entry.sources()
        who = f"models[{i}] ({entry.display_name()})"
        source = resolve(spec)
        adapter_base = resolve(own_base) if own_base is not None else None
        entries.append((who, entry, source, adapter_base))

    # Adapters bring their base when the YAML names none.
    if base_source is None:
        for who, _, source, adapter_base in entries:
            if source.is_adapter:
                ref = adapter_base.spec if adapter_base else _adapter_base_spec(source, who)
                base_source = adapter_base or resolve(ref)
                notes.append(f"base_model taken from {who}'s adapter_config.json: {ref}")
                break
    for who, _, source, adapter_base in entries:
        if source.is_adapter and adapter_base is None and base_source is not None:
            _check_adapter_base(source, base_source, who, notes)

    base_config = _load_config(base_source.path, "base_model") if base_source else None
    full_configs = [(who, _load_config(src.path, who)) for who, _, src, _ in entries if not src.is_adapter]
    for who, cfg in full_configs:
        if cfg is None:
            raise CheckpointError(f"{who}: no config.json; a full specialist is a transformers model folder")
    layout = build_layout(_target_config(full_configs, base_config, "base_model"))

    base = None
    if base_source is not None:
        base = Checkpoint(base_source.path, layout, "base_model", allow_pickle=allow_pickle)
        base.check_covers(layout.backbone_names, layout, "the merge")
    specialists = []
    for who, entry, source, adapter_base_source in entries:
        specialist = Specialist(name=entry.display_name(), source=source, weight=entry.weight)
        if source.is_adapter:
            specialist.adapter = LoraAdapter(source.path, layout, who, allow_pickle=allow_pickle)
            if adapter_base_source is not None:
                specialist.adapter_base = Checkpoint(
                    adapter_base_source.path, layout, f"{who} base", allow_pickle=allow_pickle
                )
                specialist.adapter_base.check_covers(layout.backbone_names, layout, "the merge")
                specialist.adapter_base_source = adapter_base_source
            elif base is None:
                raise ConfigError(f"{who}: a LoRA adapter needs a base; set base_model or write base+adapter")
            cfg = base_config if adapter_base_source is None else _load_config(adapter_base_source.path, who)
            id2label = _adapter_labels(source, cfg)
        else:
            specialist.checkpoint = Checkpoint(source.path, layout, who, allow_pickle=allow_pickle)
            specialist.checkpoint.check_covers(list(layout.shapes), layout, "the merge")
            if base is not None:
                _check_shares_base(specialist.checkpoint, base, layout, who)
            id2label = dict(next(cfg for w, cfg in full_configs if w == who).id2label)
        specialist.id2label = {int(k): v for k, v in id2label.items()}
        specialist.fake_index = fake_index_or_error(specialist.id2label, entry.fake_label, who)
        specialists.append(specialist)

    if config.merge_method and base is None:
        method_cls = build_method(config.merge_method, method_parameters(config), config.names()).__class__
        if method_cls.requires_base:
            raise ConfigError(f"merge_method {config.merge_method!r} needs a base_model")
    processor_dir, processor_note = _choose_processor(base_source, [s.source for s in specialists])
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


def _check_shares_base(checkpoint: Checkpoint, base: Checkpoint, layout: ModelLayout, who: str) -> None:
    """Refuse a full specialist that was evidently not fine-tuned from the base (sampled matrices, cheap)."""
    matrices = [n for n in layout.backbone_names if len(layout.shapes[n]) >= 2]
    step = max(1, len(matrices) // 8)
    same, distances = compare_to_base(checkpoint, base, matrices[::step])
    if looks_unrelated(same, distances):
        median = sorted(distances)[len(distances) // 2]
        raise CheckpointError(
            f"{who} ({checkpoint.folder}): its weights are far from base_model's (median relative distance "
            f"{median:.2f} over {len(distances)} sampled matrices): it was not fine-tuned from this base; "
            "merge only specialists of one backbone"
        )


def _adapter_base_spec(source: ResolvedSource, who: str) -> SourceSpec:
    cfg = source.read_json("adapter_config.json") or {}
    ref = cfg.get("base_model_name_or_path")
    if not ref:
        raise ConfigError(f"{who}: adapter_config.json names no base_model_name_or_path; set base_model in the YAML")
    revision = cfg.get("revision")
    return SourceSpec(ref, revision) if revision else SourceSpec.parse(ref)


def _check_adapter_base(source: ResolvedSource, base: ResolvedSource, who: str, notes: list[str]) -> None:
    """An adapter trained on another Hub base than the YAML's is an error; local paths can't be compared reliably."""
    cfg = source.read_json("adapter_config.json") or {}
    declared = cfg.get("base_model_name_or_path")
    if not declared:
        return
    declared_local = Path(declared).expanduser().exists() or declared.startswith((".", "/", "~"))
    if base.repo_id and not declared_local and declared.rstrip("/") != base.repo_id:
        raise CheckpointError(
            f"{who}: adapter was trained on base {declared!r} but base_model is {base.repo_id!r}; "
            "merge specialists of one backbone, or write the adapter as base+adapter"
        )
    if declared_local and Path(declared).expanduser().resolve() != base.path and not base.repo_id:
        notes.append(f"{who}: adapter_config.json names base {declared}, the YAML's base is {base.path}")


def _adapter_labels(source: ResolvedSource, base_config) -> dict:
    """An adapter's labels: a config.json saved beside it (peft users often do), else the base config's."""
    cfg = source.read_json("config.json")
    if cfg and "id2label" in cfg:
        return cfg["id2label"]
    return dict(getattr(base_config, "id2label", {}) or {})


def _choose_processor(base: ResolvedSource | None, specialists: list[ResolvedSource]) -> tuple[Path | None, str | None]:
    """The base's image processor, else the specialists' (reporting disagreements)."""

    def read(path: Path) -> dict | None:
        file = path / "preprocessor_config.json"
        return json.loads(file.read_text()) if file.is_file() else None

    if base is not None and read(base.path) is not None:
        return base.path, f"from base_model ({base.spec})"
    found = [(s, read(s.path)) for s in specialists]
    found = [(s, p) for s, p in found if p is not None]
    if not found:
        return None, "none found (base and specialists have no preprocessor_config.json)"
    first_source, first = found[0]
    differing = [str(s.spec) for s, p in found[1:] if p != first]
    note = f"from specialist {first_source.spec}"
    if differing:
        note += f"; specialists disagree: {', '.join(differing)} use a different processor"
    return first_source.path, note


# ---------------------------------------------------------------------------------------------------------------------


def resolve_device(device: str = "cpu") -> torch.device:
    """``cpu``, ``cuda[:N]`` (an error if absent) or ``auto`` (the accelerator accelerate finds, else the CPU)."""
    if device == "auto":
        from accelerate import PartialState

        return PartialState().device
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError(f"--device {device}: no CUDA device is available; use --device cpu or auto")
    try:
        return torch.device(device)
    except RuntimeError:
        raise ConfigError(f"--device {device}: not a device; use cpu, cuda or auto") from None


def iter_slots(plan: MergePlan, names: list[str], device: torch.device, desc: str, progress: bool):
    """Read the tensors of `names` one at a time (base + every specialist) as method slots."""
    from tqdm.auto import tqdm

    dtype = plan.compute_dtype
    order = {name: i for i, name in enumerate(plan.layout.backbone_names)}
    for name in tqdm(names, desc=desc, unit="tensor", disable=not progress, leave=False):
        base = plan.base.get(name).to(dtype) if plan.base is not None else None
        models = torch.stack([s.tensor(name, base, dtype) for s in plan.specialists])
        yield TensorSlot(
            name=name,
            group=plan.layout.groups[name],
            base=None if base is None else base.to(device),
            models=models.to(device),
            index=order[name],
        )


def run_merge(
    plan: MergePlan,
    output_dir: str | Path,
    *,
    device: str = "cpu",
    overwrite: bool = False,
    progress: bool = True,
    max_shard_bytes: int = DEFAULT_MAX_SHARD_BYTES,
) -> MergeResult:
    """Merge and write the output folder (atomically).

    Args:
        plan (`MergePlan`): from :func:`plan_merge`.
        output_dir (`str` or `Path`): the folder to create.
        device (`str`): ``cpu``, ``cuda`` or ``auto``: where the math runs.
        overwrite (`bool`): replace an existing non-empty output.
        progress (`bool`): show progress bars.
        max_shard_bytes (`int`): shard the weights above this size.

    Returns:
        `MergeResult`: the output folder and the merge report.
    """
    start = time.perf_counter()
    torch_device = resolve_device(device)
    group = process_group(torch_device)
    method = plan.method()
    layout = plan.layout
    names = layout.backbone_names
    mine = names[group.rank :: group.world_size]
    total_passes = method.statistics_passes + 1
    disk_names = layout.disk_names()
    shapes = {disk_names[n]: tuple(layout.shapes[n]) for n in layout.shapes}
    show = progress and group.is_main
    if group.is_main:
        plan.start_hashing()

    output = None
    if group.is_main:
        try:
            output = OutputFolder(output_dir, overwrite=overwrite)
        except BaseException:
            group.broadcast(None)
            raise
    tmp = group.broadcast(None if output is None else str(output.tmp))
    if tmp is None:
        raise OutputError(f"{output_dir}: rank 0 could not create the output folder")
    tmp = Path(tmp)
    try:
        if group.distributed:
            # Every rank streams its tensors into a part file; rank 0 then assembles them in file order.
            parts = tmp / ".parts"
            parts.mkdir(exist_ok=True)
            writer = StreamingSafetensorsWriter(
                parts,
                {disk_names[n]: shapes[disk_names[n]] for n in mine},
                plan.out_dtype,
                1 << 62,
                filename=f"rank-{group.rank:05d}.safetensors",
            )
        else:
            writer = StreamingSafetensorsWriter(tmp, shapes, plan.out_dtype, max_shard_bytes)
        try:
            if not group.distributed:
                _write_heads(plan, writer, disk_names)

            def slots(pass_index: int):
                return iter_slots(plan, mine, torch_device, f"pass {pass_index + 1}/{total_passes}", show)

            all_reduce = group.all_reduce if group.distributed else None
            for slot, merged in run_passes(method, slots, all_reduce=all_reduce):
                writer.add(disk_names[slot.name], merged)
            files = writer.close()
        except BaseException:
            writer.abort()
            raise
        group.barrier()
        report = None
        if group.is_main:
            if group.distributed:
                files = _assemble_parts(plan, tmp, disk_names, shapes, group.world_size, max_shard_bytes)
            report = _write_metadata(
                plan, tmp, method, files, time.perf_counter() - start, torch_device, processes=group.world_size
            )
            final = output.commit()
        group.barrier()
    except BaseException:
        plan.cancel_hashing()
        if output is not None:
            output.abort()
        raise
    if not group.is_main:
        return MergeResult(
            output_dir=Path(output_dir).resolve(), report={"method": method.report()}, plan=plan, is_main_process=False
        )
    for warning in report["method"].get("warnings", []):
        logger.warning(warning)
    return MergeResult(output_dir=final, report=report, plan=plan)


def _write_heads(plan: MergePlan, writer: StreamingSafetensorsWriter, disk_names: dict[str, str]) -> None:
    """The shared head policy: aligned heads, averaged (weighted) or one specialist's."""
    heads = [s.head(plan.layout, plan.compute_dtype) for s in plan.specialists]
    weight, bias = merge_heads(
        heads, [s.name for s in plan.specialists], head_choice(plan.config), [s.weight for s in plan.specialists]
    )
    for name in plan.layout.head_names:
        writer.add(disk_names[name], weight if name.endswith("weight") else bias)


def _assemble_parts(plan, tmp: Path, disk_names, shapes, world_size: int, max_shard_bytes: int) -> list[str]:
    """Rank 0: stream the ranks' part files into the final (sharded) safetensors files, in file order."""
    from .checkpoint import SafetensorsFile

    parts_dir = tmp / ".parts"
    parts = [SafetensorsFile(parts_dir / f"rank-{r:05d}.safetensors") for r in range(world_size)]
    where = {key: part for part in parts for key in part.keys()}
    writer = StreamingSafetensorsWriter(tmp, shapes, plan.out_dtype, max_shard_bytes)
    try:
        _write_heads(plan, writer, disk_names)
        for name in plan.layout.backbone_names:
            key = disk_names[name]
            writer.add(key, where[key].get(key))
        files = writer.close()
    except BaseException:
        writer.abort()
        raise
    finally:
        for part in parts:
            part.close()
    shutil.rmtree(parts_dir, ignore_errors=True)
    return files


def _write_metadata(
    plan: MergePlan, folder: Path, method: MergeMethod, files: list[str], seconds: float, device, processes: int = 1
) -> dict:
    config = plan.layout.config
    config.architectures = [plan.layout.model_class]
    config.dtype = plan.config.out_dtype or plan.config.dtype
    config.save_pretrained(folder)
    if plan.processor_dir is not None:
        for name in PROCESSOR_FILES:
            if (plan.processor_dir / name).is_file():
                shutil.copyfile(plan.processor_dir / name, folder / name)
    plan.record_file_hashes()
    recipe = {
        "r2m_hf_version": __version__,
        "merge_method": plan.config.merge_method,
        "base_model": None if plan.base_source is None else plan.base_source.record(),
        "models": [
            {
                "name": s.name,
                "kind": s.kind,
                "fake_index": s.fake_index,
                **({"fake_label": e.fake_label} if e.fake_label is not None else {}),
                "parameters": dict(e.parameters),
                "source": s.source.record(),
                **({"adapter_base": s.adapter_base_source.record()} if s.adapter_base_source else {}),
            }
            for s, e in zip(plan.specialists, plan.config.models, strict=True)
        ],
        "parameters": {**method.parameters.model_dump(by_alias=True), "head": head_choice(plan.config)},
        "dtype": plan.config.dtype,
        "out_dtype": plan.config.out_dtype or plan.config.dtype,
    }
    if plan.config.evaluation is not None:
        recipe["evaluation"] = plan.config.evaluation.model_dump(exclude_none=True)
    (folder / "merge_config.yaml").write_text(yaml.safe_dump(recipe, sort_keys=False, allow_unicode=True))
    report = {
        "merge_method": plan.config.merge_method,
        "architecture": plan.layout.model_class,
        "specialists": [s.name for s in plan.specialists],
        "tensors": len(plan.layout.shapes),
        "files": files,
        "seconds": round(seconds, 3),
        "device": str(device),
        "processes": processes,
        "notes": plan.notes,
        "image_processor": plan.processor_note,
        "method": method.report(),
    }
    (folder / "merge_report.json").write_text(json.dumps(report, indent=2, default=str) + "\n")
    from .card import write_model_card

    write_model_card(folder)  # rewritten by the CLI after an `evaluation:` step
    return report


def _weight_files(folder: Path) -> list[Path]:
    patterns = ("*.safetensors", "*.bin", "*.pt")
    return sorted(f for p in patterns for f in folder.glob(p) if f.is_file())


def merge(
    config: MergeConfig | str | Path,
    output_dir: str | Path,
    *,
    device: str = "cpu",
    overwrite: bool = False,
    allow_pickle: bool = False,
    progress: bool = True,
) -> MergeResult:
    """Merge the specialists of a recipe into one detector folder.

    Args:
        config (`MergeConfig`, `str` or `Path`): the recipe or the path of its YAML file.
        output_dir (`str` or `Path`): the folder to write.
        device (`str`): ``cpu``, ``cuda`` or ``auto``.
        overwrite (`bool`): replace an existing non-empty output.
        allow_pickle (`bool`): accept pickle checkpoints.
        progress (`bool`): show progress bars.

    Returns:
        `MergeResult`: the output folder and report.
    """
    plan = plan_merge(config, allow_pickle=allow_pickle)
    return run_merge(plan, output_dir, device=device, overwrite=overwrite, progress=progress)


__all__ = ["MergePlan", "MergeResult", "Specialist", "merge", "plan_merge", "run_merge", "SourceError"]
