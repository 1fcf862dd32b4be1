"""Everything an output folder holds besides the weights: ``config.json``, the image processor, the recipe, the report.

:func:`write_metadata` builds the typed :class:`~r2m_hf.recipe.Recipe` and :class:`~r2m_hf.recipe.MergeReport` of a
finished merge from its plan and method, and writes them with the model config and the copied image processor.
:class:`InputHasher` computes the SHA-256 of every input weight file in a background thread while the merge runs
(hashlib releases the GIL), so the recipe can pin the exact files without a second pass over them.
"""

from __future__ import annotations

import shutil
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path

from ._version import __version__
from .config import head_choice
from .methods.base import MergeMethod
from .planning import MergePlan
from .recipe import PROCESSOR_FILES, MergeReport, ModelRecord, Recipe
from .sources import ResolvedSource, sha256_file

HASHED_PATTERNS = ("*.safetensors", "*.bin", "*.pt")


def weight_files(folder: Path) -> list[Path]:
    """The weight files of a model folder (what the recipe pins by hash)."""
    return sorted(f for p in HASHED_PATTERNS for f in Path(folder).glob(p) if f.is_file())


class InputHasher:
    """Hash the input weight files of a plan in one background thread; :meth:`finish` stores the hashes.

    Args:
        sources (`list[ResolvedSource]`): the inputs; those already hashed are skipped.
    """

    def __init__(self, sources: list[ResolvedSource]):
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="r2m-hash")
        files = [(s, f) for s in sources if not s.file_hashes for f in weight_files(s.path)]
        self._jobs: list[tuple[ResolvedSource, Path, Future]] = [
            (s, f, self._pool.submit(sha256_file, f)) for s, f in files
        ]

    def finish(self) -> None:
        """Wait for every hash and store it in its source's ``file_hashes``."""
        for source, file, future in self._jobs:
            source.file_hashes[file.name] = future.result()
        self._jobs = []
        self._pool.shutdown()

    def cancel(self) -> None:
        """Drop the pending hashes (the merge failed)."""
        self._jobs = []
        self._pool.shutdown(wait=False, cancel_futures=True)


def build_recipe(plan: MergePlan, method: MergeMethod) -> Recipe:
    """The resolved recipe of a plan: every input's source record and the method's full parameters."""
    models = [
        ModelRecord(
            name=s.name,
            kind=s.kind,
            fake_index=s.fake_index,
            fake_label=entry.fake_label,
            parameters=dict(entry.parameters),
            source=s.source.record(),
            adapter_base=None if s.adapter_base_source is None else s.adapter_base_source.record(),
        )
        for s, entry in zip(plan.specialists, plan.config.models, strict=True)
    ]
    return Recipe(
        r2m_hf_version=__version__,
        merge_method=plan.config.merge_method,
        base_model=None if plan.base_source is None else plan.base_source.record(),
        models=models,
        parameters={**method.parameters.model_dump(by_alias=True), "head": head_choice(plan.config)},
        dtype=plan.config.dtype,
        out_dtype=plan.config.out_dtype or plan.config.dtype,
        evaluation=plan.config.evaluation,
    )


def build_report(
    plan: MergePlan, method: MergeMethod, files: list[str], *, seconds: float, device: str, processes: int = 1
) -> MergeReport:
    """The report of a finished merge (every process can build it; the main process writes it).

    Args:
        plan (`MergePlan`): the merge's plan.
        method (`MergeMethod`): the method instance after the merge (its report and warnings are final).
        files (`list[str]`): the weight files written.
        seconds (`float`): the merge's wall time.
        device (`str`): where the math ran.
        processes (`int`): how many processes merged.
    """
    return MergeReport(
        merge_method=plan.config.merge_method,
        architecture=plan.layout.model_class,
        specialists=plan.names,
        tensors=len(plan.layout.shapes),
        files=list(files),
        seconds=round(seconds, 3),
        device=str(device),
        processes=processes,
        notes=list(plan.notes),
        image_processor=plan.processor_note,
        method=method.report(),
        warnings=list(method.warnings()),
    )


def write_metadata(
    plan: MergePlan, folder: Path, method: MergeMethod, report: MergeReport, *, hasher: InputHasher | None = None
) -> None:
    """Write ``config.json``, the image processor, ``merge_config.yaml`` and ``merge_report.json`` into `folder`.

    Args:
        plan (`MergePlan`): the merge's plan.
        folder (`Path`): the (temporary) output folder.
        method (`MergeMethod`): the method instance (its parameters, defaults filled in, go to the recipe).
        report (`MergeReport`): from :func:`build_report`.
        hasher (`InputHasher`, *optional*): the running hasher; the inputs are hashed now when not given.
    """
    config = plan.layout.config
    config.architectures = [plan.layout.model_class]
    config.dtype = plan.config.out_dtype or plan.config.dtype
    config.save_pretrained(folder)
    if plan.processor_dir is not None:
        for name in PROCESSOR_FILES:
            if (plan.processor_dir / name).is_file():
                shutil.copyfile(plan.processor_dir / name, folder / name)
    (hasher or InputHasher(plan.sources())).finish()
    build_recipe(plan, method).write(folder)
    report.write(folder)


__all__ = ["InputHasher", "build_recipe", "build_report", "weight_files", "write_metadata"]
