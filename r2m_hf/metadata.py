"""Everything an output folder holds besides the weights: ``config.json``, the image processor, the recipe, the report.

:func:`write_metadata` builds the typed :class:`~r2m_hf.recipe.Recipe` and :class:`~r2m_hf.recipe.MergeReport` of a
finished merge from its plan and method, and writes them with the model config and the copied image processor.
:class:`InputHasher` computes the SHA-256 of every input weight file in a background thread while the merge runs
(hashlib releases the GIL), so the recipe can pin the exact files without a second pass over them. Unless asked to
(``record_local_paths``), nothing written here names a local input by its absolute path: the recipe records local
inputs relative to the recipe's folder (or by name) with their hashes, and the report's notes are rewritten the same
way, since the folder is meant to be pushed.
"""

from __future__ import annotations

import shutil
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path

from ._version import __version__
from .config import EvaluationSection, head_choice, path_exists
from .errors import R2MError
from .methods.base import MergeMethod
from .paths import is_within, model_file, real
from .planning import MergePlan
from .recipe import PROCESSOR_FILES, MergeReport, ModelRecord, Recipe
from .sources import ResolvedSource, sha256_file

HASHED_PATTERNS = ("*.safetensors", "*.bin", "*.pt")


def weight_files(folder: Path) -> list[Path]:
    """The weight files of a model folder (what the recipe pins by hash): those that resolve inside the folder."""
    found = []
    for file in sorted({f for p in HASHED_PATTERNS for f in Path(folder).glob(p) if f.is_file()}):
        try:
            found.append(model_file(folder, file.name))
        except R2MError:  # a symlink out of the folder: never read (the merge refuses it if it is a weight file)
            continue
    return found


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


def local_path_text(text: str, base_dir: Path | None) -> str:
    """A local path as records show it: relative to `base_dir` when inside it, else its last component."""
    path = Path(text).expanduser()
    if base_dir is not None and not path.is_absolute():
        path = base_dir / path
    if base_dir is not None and is_within(real(path), real(base_dir)) and real(path) != real(base_dir):
        return real(path).relative_to(real(base_dir)).as_posix()
    return real(path).name or text


def scrub_paths(text: str, plan: MergePlan) -> str:
    """`text` with every input's absolute path replaced by how the recipe records it."""
    replacements = {}
    for source in plan.sources():
        shown = source.display_path() if not source.repo_id else source.repo_id
        replacements[str(source.path)] = shown
        if Path(source.spec.reference).expanduser().is_absolute():
            replacements[source.spec.reference] = shown
    if plan.config_path is not None and len(real(plan.config_path.parent).parts) > 2:  # never "/" or "/home"
        replacements[str(real(plan.config_path.parent))] = "."
    for old in sorted(replacements, key=len, reverse=True):
        text = text.replace(old, replacements[old])
    return text


def _evaluation(plan: MergePlan, record_local_paths: bool) -> EvaluationSection | None:
    section = plan.config.evaluation
    if section is None or record_local_paths or not path_exists(section.dataset):
        return section
    base_dir = plan.config_path.parent if plan.config_path is not None else None
    return section.model_copy(update={"dataset": local_path_text(section.dataset, base_dir)})


def build_recipe(plan: MergePlan, method: MergeMethod, record_local_paths: bool = False) -> Recipe:
    """The resolved recipe of a plan: every input's source record and the method's full parameters.

    Args:
        plan (`MergePlan`): the merge's plan.
        method (`MergeMethod`): the method instance (its parameters, defaults filled in, are recorded).
        record_local_paths (`bool`): record local inputs by absolute path (default: relative to the recipe, or name).
    """
    models = [
        ModelRecord(
            name=s.name,
            kind=s.kind,
            fake_index=s.fake_index,
            fake_label=entry.fake_label,
            parameters=dict(entry.parameters),
            source=s.source.record(record_local_paths),
            adapter_base=None if s.adapter_base_source is None else s.adapter_base_source.record(record_local_paths),
        )
        for s, entry in zip(plan.specialists, plan.config.models, strict=True)
    ]
    return Recipe(
        r2m_hf_version=__version__,
        merge_method=plan.config.merge_method,
        base_model=None if plan.base_source is None else plan.base_source.record(record_local_paths),
        models=models,
        parameters={**method.parameters.model_dump(by_alias=True), "head": head_choice(plan.config)},
        dtype=plan.config.dtype,
        out_dtype=plan.config.out_dtype or plan.config.dtype,
        evaluation=_evaluation(plan, record_local_paths),
    )


def build_report(
    plan: MergePlan,
    method: MergeMethod,
    files: list[str],
    *,
    seconds: float,
    device: str,
    processes: int = 1,
    record_local_paths: bool = False,
) -> MergeReport:
    """The report of a finished merge (every process can build it; the main process writes it).

    Args:
        plan (`MergePlan`): the merge's plan.
        method (`MergeMethod`): the method instance after the merge (its report and warnings are final).
        files (`list[str]`): the weight files written.
        seconds (`float`): the merge's wall time.
        device (`str`): where the math ran.
        processes (`int`): how many processes merged.
        record_local_paths (`bool`): keep absolute input paths in the notes (default: as the recipe records them).
    """

    def shown(text: str | None) -> str | None:
        return text if (text is None or record_local_paths) else scrub_paths(text, plan)

    return MergeReport(
        merge_method=plan.config.merge_method,
        architecture=plan.layout.model_class,
        specialists=plan.names,
        tensors=len(plan.layout.shapes),
        files=list(files),
        seconds=round(seconds, 3),
        device=str(device),
        processes=processes,
        notes=[shown(note) for note in plan.notes],
        image_processor=shown(plan.processor_note),
        method=method.report(),
        warnings=list(method.warnings()),
    )


def copy_remote_code(config, sources: list[Path], folder: Path) -> None:
    """Copy the modules a config's ``auto_map`` names (a DeepfakeBench detector's model class) from the first input
    folder that has them, so the merged folder loads with ``trust_remote_code=True`` as its inputs did.

    Args:
        config (`PretrainedConfig`): the merged model's config.
        sources (`list[Path]`): the input folders, in the order they are searched.
        folder (`Path`): the (temporary) output folder.
    """
    modules = {ref.split(".")[0] for ref in (getattr(config, "auto_map", None) or {}).values() if isinstance(ref, str)}
    for module in sorted(m for m in modules if m.isidentifier()):  # not a Hub reference (``repo--module``) or a path
        files = (model_file(s, f"{module}.py") for s in sources)  # each file resolved inside its own model folder
        found = next((f for f in files if f.is_file()), None)
        if found is not None:
            shutil.copyfile(found, folder / found.name)


def write_metadata(
    plan: MergePlan,
    folder: Path,
    method: MergeMethod,
    report: MergeReport,
    *,
    hasher: InputHasher | None = None,
    record_local_paths: bool = False,
) -> None:
    """Write ``config.json``, the image processor, ``merge_config.yaml`` and ``merge_report.json`` into `folder`.

    Args:
        plan (`MergePlan`): the merge's plan.
        folder (`Path`): the (temporary) output folder.
        method (`MergeMethod`): the method instance (its parameters, defaults filled in, go to the recipe).
        report (`MergeReport`): from :func:`build_report`.
        hasher (`InputHasher`, *optional*): the running hasher; the inputs are hashed now when not given.
        record_local_paths (`bool`): record local inputs by absolute path.
    """
    from .detector.calibration import CONFIG_KEY

    config = plan.layout.config
    config.architectures = [plan.layout.model_class]
    if hasattr(config, CONFIG_KEY):  # a specialist's calibrated threshold says nothing about the merged model
        delattr(config, CONFIG_KEY)
    config.dtype = plan.config.out_dtype or plan.config.dtype
    config.save_pretrained(folder)
    copy_remote_code(config, [s.source.path for s in plan.specialists], folder)
    if plan.processor_dir is not None:
        for name in PROCESSOR_FILES:
            source = model_file(plan.processor_dir, name)
            if source.is_file():
                shutil.copyfile(source, folder / name)
    (hasher or InputHasher(plan.sources())).finish()
    build_recipe(plan, method, record_local_paths).write(folder)
    report.write(folder)


__all__ = [
    "InputHasher",
    "build_recipe",
    "copy_remote_code",
    "build_report",
    "local_path_text",
    "scrub_paths",
    "weight_files",
    "write_metadata",
]
