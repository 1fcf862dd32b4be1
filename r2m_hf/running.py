"""Run a planned merge: stream the tensors through the method's passes and write the output folder atomically.

:func:`run_merge` reads one backbone tensor at a time from the base and every specialist (:func:`iter_slots`), hands
it to the engine (:func:`r2m_hf.engine.run_passes`), and streams each merged tensor into safetensors files as soon as
it is final. The heads take the shared head policy. In a multi-process merge every rank writes its tensors into a
part file and rank 0 assembles the final files. The recipe, report and (unless told otherwise) the model card are
written into the temporary folder before it is renamed into place, so an output folder is complete or absent. Every
merged tensor is checked finite (and within the output dtype's range) before it is written; an OSError on the output
side (a full or read-only filesystem, a parent that is a file) is one :class:`~r2m_hf.errors.OutputError` line, and
the temporary folder is removed.
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
from .errors import ConfigError, MethodError, OutputError, R2MError
from .heads import merge_heads
from .metadata import InputHasher, build_report, write_metadata
from .methods.base import TensorSlot
from .planning import MergePlan
from .recipe import MergeReport
from .writer import DEFAULT_MAX_SHARD_BYTES, OutputFolder, StreamingSafetensorsWriter, output_error

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
    """Read the tensors of `names` one at a time (base + every specialist) as method slots.

    The next tensor is read in a background thread while the caller works on the current one (file reads release
    the GIL), so reading overlaps the method's math; errors still surface in order, at the tensor they concern.
    """
    from concurrent.futures import ThreadPoolExecutor

    from tqdm.auto import tqdm

    dtype = plan.compute_dtype
    shapes = plan.layout.shapes
    order = {name: i for i, name in enumerate(plan.layout.backbone_names)}

    def read(name: str) -> tuple[torch.Tensor | None, torch.Tensor]:
        base = None
        if plan.base is not None:
            base = torch.empty(shapes[name], dtype=dtype)
            plan.base.read_into(name, base)
        # each specialist's tensor is read straight into its row of the stack (no per-model buffer, no stack copy)
        models = torch.empty((len(plan.specialists), *shapes[name]), dtype=dtype)
        for row, specialist in zip(models, plan.specialists, strict=True):
            specialist.read_into(name, base, row)
        return base, models

    with (
        ThreadPoolExecutor(max_workers=1, thread_name_prefix="r2m-read") as pool,
        tqdm(total=len(names), desc=desc, unit="tensor", disable=not progress, leave=False) as bar,
    ):
        ahead = pool.submit(read, names[0]) if names else None
        for i, name in enumerate(names):
            base, models = ahead.result()
            ahead = pool.submit(read, names[i + 1]) if i + 1 < len(names) else None
            yield TensorSlot(
                name=name,
                group=plan.layout.groups[name],
                base=None if base is None else base.to(device),
                models=models.to(device),
                index=order[name],
            )
            bar.update()


def run_merge(
    plan: MergePlan,
    output_dir: str | Path,
    *,
    device: str = "cpu",
    overwrite: bool = False,
    progress: bool = True,
    max_shard_bytes: int = DEFAULT_MAX_SHARD_BYTES,
    write_card: bool = True,
    overwrite_any: bool = False,
    record_local_paths: bool = False,
    card_repo_id: str | None = None,
) -> MergeResult:
    """Merge and write the output folder (atomically). No evaluation, no push: :func:`r2m_hf.merge.merge` adds them.

    Args:
        plan (`MergePlan`): from :func:`~r2m_hf.planning.plan_merge`.
        output_dir (`str` or `Path`): the folder to create.
        device (`str`): ``cpu``, ``cuda`` or ``auto``: where the math runs.
        overwrite (`bool`): replace an existing non-empty output that r2m-hf wrote.
        progress (`bool`): show progress bars.
        max_shard_bytes (`int`): shard the weights above this size.
        write_card (`bool`): write the model card into the folder (``merge`` writes it itself, after evaluating).
        overwrite_any (`bool`): also replace an existing folder r2m-hf did not write (never an input).
        record_local_paths (`bool`): record local inputs by their absolute paths in the recipe and report.
        card_repo_id (`str`, *optional*): the Hub repo the card's usage snippet names (with `write_card`).

    Returns:
        `MergeResult`: the output folder and the merge report.

    Raises:
        `OutputError`: the output overlaps an input or the Hub cache, exists (and may not be replaced), is being
            written by another process, or cannot be written (nothing is left behind).
        `CheckpointError`: a tensor turns out unreadable, NaN or Inf while merging (nothing is written).
        `MethodError`: a merged tensor is NaN or infinite (nothing is written).
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
        inputs = [s.path for s in plan.sources()] + ([plan.config_path] if plan.config_path is not None else [])
        try:
            output = OutputFolder(output_dir, overwrite=overwrite, overwrite_any=overwrite_any, inputs=inputs)
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
                check_merged(slot.name, merged, plan, method)
                writer.add(disk_names[slot.name], merged)
            files = writer.close()
        except BaseException:
            writer.abort()
            raise
        group.barrier()
        if group.is_main and group.distributed:
            files = _assemble_parts(plan, tmp, disk_names, shapes, group.world_size, max_shard_bytes)
        seconds = time.perf_counter() - start
        report = build_report(
            plan,
            method,
            files,
            seconds=seconds,
            device=torch_device,
            processes=group.world_size,
            record_local_paths=record_local_paths,
        )
        if group.is_main:
            write_metadata(plan, tmp, method, report, hasher=hasher, record_local_paths=record_local_paths)
            if write_card:
                from .card import write_model_card

                write_model_card(tmp, repo_id=card_repo_id)
            final = output.commit()
        group.barrier()
    except BaseException as exc:
        if hasher is not None:
            hasher.cancel()
        if output is not None:
            output.abort()
        if isinstance(exc, OSError) and not isinstance(exc, R2MError):  # the output side: disk full, read-only, …
            raise output_error(Path(output_dir).absolute(), exc) from None
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
        tensor = weight if name.endswith("weight") else bias
        check_merged(name, tensor, plan, None)
        writer.add(disk_names[name], tensor)


def check_merged(name: str, tensor: torch.Tensor, plan: MergePlan, method) -> None:
    """A merged tensor must be finite, and within the range of the output dtype.

    Raises:
        `MethodError`: naming the tensor and the parameter to look at (the largest of the method's numeric
        parameters, or the output dtype); the merge stops and nothing is written.
    """
    if tensor is None:
        return
    finite = bool(torch.isfinite(tensor.sum())) or bool(torch.isfinite(tensor).all())  # a sum may overflow
    if finite:
        out = plan.out_dtype
        if not out.is_floating_point or torch.finfo(out).max >= torch.finfo(tensor.dtype).max:
            return
        peak = float(tensor.abs().max())
        if peak <= torch.finfo(out).max:
            return
        out_name = str(out).removeprefix("torch.")
        raise MethodError(
            f"merged tensor {name} reaches |{peak:.4g}|, beyond the range of out_dtype {out_name} "
            f"(at most {torch.finfo(out).max:.4g}): use out_dtype: float32 or bfloat16{_parameter_hint(method)}; "
            "nothing was written"
        )
    dtype = str(plan.compute_dtype).removeprefix("torch.")
    low = " or use dtype: float32" if plan.compute_dtype in (torch.float16, torch.bfloat16) else ""
    raise MethodError(
        f"merged tensor {name} has NaN or infinite values although every input tensor is finite: the merge "
        f"overflows in {dtype}{_parameter_hint(method, prefix=': look at')}{low}; nothing was written"
    )


def _parameter_hint(method, prefix: str = ", or lower") -> str:
    """`` lower parameters.K (= V)``: the method's numeric parameter of largest magnitude, or the head policy."""
    if method is None:
        return f"{prefix} the specialists' heads and models[*].parameters.weight"
    values = method.parameters.model_dump(by_alias=True)
    numeric = {k: v for k, v in values.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}
    if not numeric:
        return f"{prefix} the specialists' weights (models[*].parameters.weight)"
    key = max(numeric, key=lambda k: abs(numeric[k]))
    return f"{prefix} parameters.{key} (= {numeric[key]:g})"


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


__all__ = ["MergeResult", "check_merged", "iter_slots", "resolve_device", "run_merge"]
