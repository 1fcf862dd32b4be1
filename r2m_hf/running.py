"""Run a planned merge: stream the tensors through the method's passes and write the output folder atomically.

:func:`run_merge` reads one backbone tensor at a time from the base and every specialist (:func:`iter_slots`), hands
it to the engine (:func:`r2m_hf.engine.run_passes`), and streams each merged tensor into safetensors files as soon as
it is final. The heads take the shared head policy. In a multi-process merge every rank writes its tensors into a
part file and rank 0 assembles the final files. The recipe, report and (unless told otherwise) the model card are
written into the temporary folder before it is renamed into place, so an output folder is complete or absent.
"""

from __future__ import annotations

import logging
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import torch

from .config import head_choice
from .distributed import process_group
from .engine import run_passes
from .errors import ConfigError, OutputError
from .heads import merge_heads
from .metadata import InputHasher, build_report, write_metadata
from .methods.base import TensorSlot
from .planning import MergePlan
from .recipe import MergeReport
from .writer import DEFAULT_MAX_SHARD_BYTES, OutputFolder, StreamingSafetensorsWriter

if TYPE_CHECKING:
    from .evaluation import EvaluationResult
    from .hub import PushResult

logger = logging.getLogger("r2m_hf")


@dataclass
class MergeResult:
    """What a merge produced.

    Args:
        output_dir (`Path`): the output folder.
        report (`MergeReport`): what the merge did (also in ``merge_report.json``).
        plan (`MergePlan`): the plan it ran.
        is_main_process (`bool`): False on the other ranks of a multi-process merge (they write nothing).
        evaluation (`EvaluationResult`, *optional*): the recipe's ``evaluation:`` step, when it ran.
        pushed (`PushResult`, *optional*): the Hub commit, when the folder was pushed.
        warnings (`list[str]`): the method's warnings (also in the report and the model card).
    """

    output_dir: Path
    report: MergeReport
    plan: MergePlan
    is_main_process: bool = True
    evaluation: EvaluationResult | None = None
    pushed: PushResult | None = None
    warnings: list[str] = field(default_factory=list)


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
    write_card: bool = True,
) -> MergeResult:
    """Merge and write the output folder (atomically). No evaluation, no push: :func:`r2m_hf.merge.merge` adds them.

    Args:
        plan (`MergePlan`): from :func:`~r2m_hf.planning.plan_merge`.
        output_dir (`str` or `Path`): the folder to create.
        device (`str`): ``cpu``, ``cuda`` or ``auto``: where the math runs.
        overwrite (`bool`): replace an existing non-empty output.
        progress (`bool`): show progress bars.
        max_shard_bytes (`int`): shard the weights above this size.
        write_card (`bool`): write the model card into the folder (``merge`` writes it itself, after evaluating).

    Returns:
        `MergeResult`: the output folder and the merge report.

    Raises:
        `OutputError`: the output folder exists (without `overwrite`) or cannot be written.
        `CheckpointError`: a tensor turns out unreadable, NaN or Inf while merging (nothing is written).
    """
    start = time.perf_counter()
    torch_device = resolve_device(device)
    group = process_group(torch_device)
    method = plan.method()
    layout = plan.layout
    mine = layout.backbone_names[group.rank :: group.world_size]
    total_passes = method.statistics_passes + 1
    disk_names = layout.disk_names()
    shapes = {disk_names[n]: tuple(layout.shapes[n]) for n in layout.shapes}
    hasher = InputHasher(plan.sources()) if group.is_main else None

    output = None
    if group.is_main:
        try:
            output = OutputFolder(output_dir, overwrite=overwrite)
        except BaseException:
            hasher.cancel()
            group.broadcast(None)
            raise
    tmp = group.broadcast(None if output is None else str(output.tmp))
    if tmp is None:
        raise OutputError(f"{output_dir}: rank 0 could not create the output folder")
    tmp = Path(tmp)
    try:
        if group.distributed:  # every rank streams its tensors into a part file; rank 0 assembles them in order
            parts = tmp / ".parts"
            parts.mkdir(exist_ok=True)
            own_shapes = {disk_names[n]: shapes[disk_names[n]] for n in mine}
            filename = f"rank-{group.rank:05d}.safetensors"
            writer = StreamingSafetensorsWriter(parts, own_shapes, plan.out_dtype, 1 << 62, filename=filename)
        else:
            writer = StreamingSafetensorsWriter(tmp, shapes, plan.out_dtype, max_shard_bytes)
        try:
            if not group.distributed:
                _write_heads(plan, writer, disk_names)

            def slots(pass_index: int):
                desc = f"pass {pass_index + 1}/{total_passes}"
                return iter_slots(plan, mine, torch_device, desc, progress and group.is_main)

            all_reduce = group.all_reduce if group.distributed else None
            for slot, merged in run_passes(method, slots, all_reduce=all_reduce):
                writer.add(disk_names[slot.name], merged)
            files = writer.close()
        except BaseException:
            writer.abort()
            raise
        group.barrier()
        if group.is_main and group.distributed:
            files = _assemble_parts(plan, tmp, disk_names, shapes, group.world_size, max_shard_bytes)
        seconds = time.perf_counter() - start
        report = build_report(plan, method, files, seconds=seconds, device=torch_device, processes=group.world_size)
        if group.is_main:
            write_metadata(plan, tmp, method, report, hasher=hasher)
            if write_card:
                from .card import write_model_card

                write_model_card(tmp)
            final = output.commit()
        group.barrier()
    except BaseException:
        if hasher is not None:
            hasher.cancel()
        if output is not None:
            output.abort()
        raise
    if not group.is_main:
        return MergeResult(Path(output_dir).resolve(), report, plan, is_main_process=False, warnings=report.warnings)
    for warning in report.warnings:
        logger.warning(warning)
    return MergeResult(output_dir=final, report=report, plan=plan, warnings=list(report.warnings))


def _write_heads(plan: MergePlan, writer: StreamingSafetensorsWriter, disk_names: dict[str, str]) -> None:
    """The shared head policy: aligned heads, averaged (weighted) or one specialist's."""
    heads = [s.head(plan.layout, plan.compute_dtype) for s in plan.specialists]
    weight, bias = merge_heads(heads, plan.names, head_choice(plan.config), [s.weight for s in plan.specialists])
    for name in plan.layout.head_names:
        writer.add(disk_names[name], weight if name.endswith("weight") else bias)


def _assemble_parts(
    plan: MergePlan, tmp: Path, disk_names: dict[str, str], shapes, world_size: int, max_shard_bytes: int
) -> list[str]:
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


__all__ = ["MergeResult", "iter_slots", "resolve_device", "run_merge"]
