"""The model card (``README.md``) of a merged output folder, written with ``huggingface_hub.ModelCard``.

Everything in the card is read back from the folder through the typed models of :mod:`r2m_hf.recipe`: the resolved
recipe (``merge_config.yaml``), the report (``merge_report.json``, whose method diagnostics the method formats itself)
and, when the merge was evaluated, ``eval_results.json``. So the card can be (re)written at any time after the merge;
:func:`r2m_hf.merge.merge` writes it once, after the evaluation, naming the repo it pushes to in the usage snippet. The
metadata follows the Hub's conventions for merges (``base_model`` = the Hub inputs, ``base_model_relation: merge``)
and carries a ``model-index`` with typed metrics per forgery family. Licences come from the inputs' own cards (as the
recipe recorded them). A threshold calibrated on the folder (``r2m-hf calibrate``, stored in ``config.json``) gets its
"Decision threshold" section. No token ever reaches this module. Everything that came from an input or the recipe
(names, references, revisions, notes, licences, dataset and family names) is escaped where it is written (see
:func:`~r2m_hf.card_evaluation.md_text`), so the card stays valid Markdown and valid ``ModelCard`` metadata whatever
the input.
"""

from __future__ import annotations

import json
import re
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .card_evaluation import (
    HUB_ID,
    code_fence,
    eval_results_for_index,
    evaluation_lines,
    md_code,
    md_text,
    plot_auc,
    threshold_lines,
)
from .config import safe_name
from .errors import R2MError
from .recipe import CARD_FILE, EVAL_FILE, PLOT_FILE, MergeReport, Recipe, SourceRecord

BASE_TAGS = ("deepfake-detection", "model-merging", "r2m")


@dataclass
class Licence:
    """The licence of the merged model, as far as its inputs' cards tell.

    Args:
        value (`str`, *optional*): the ``license`` metadata value (None when no input declares one).
        by_input (`dict[str, str | None]`): each input's declared licence (None when its card has none).
        conflict (`bool`): inputs declare different licences.
    """

    value: str | None
    by_input: dict[str, str | None] = field(default_factory=dict)
    conflict: bool = False

    def describe(self) -> str:
        declared = {k: v for k, v in self.by_input.items() if v}
        if not declared:
            return "No input declares a licence in its model card; check the inputs' terms before redistributing."
        listing = ", ".join(f"{md_code(name)}: {md_code(lic)}" for name, lic in declared.items())
        unknown = [k for k, v in self.by_input.items() if not v]
        text = f"Licences of the inputs: {listing}."
        if unknown:
            text += f" No licence found for: {', '.join(md_code(u) for u in unknown)}."
        if self.conflict:
            text += (
                " **The inputs' licences differ**, so this card says `license: other`: the merged weights derive from "
                "all of them; check that their terms are compatible and set the licence yourself."
            )
        return text


def write_model_card(
    folder: str | Path,
    *,
    eval_results: Any = None,
    repo_id: str | None = None,
) -> Path:
    """Write (or rewrite) ``README.md`` of a merged output folder from the files the merge left in it.

    Args:
        folder (`str` or `Path`): the output folder (with ``merge_config.yaml`` and ``merge_report.json``).
        eval_results (`EvaluationResult`, `dict` or `Path`, *optional*): evaluation of the merged model; defaults to
            ``eval_results.json`` in the folder when present. With results, ``eval_auc.png`` is also written.
        repo_id (`str`, *optional*): the Hub repo the model is pushed to, used in the usage snippet.

    Returns:
        `Path`: the written ``README.md``.
    """
    folder = Path(folder)
    recipe = Recipe.read(folder)
    report = MergeReport.read(folder)
    evaluation = _evaluation_dict(folder, eval_results)
    card = build_model_card(recipe, report, evaluation, folder=folder, repo_id=repo_id)
    path = folder / CARD_FILE
    card.save(path)
    return path


def build_model_card(
    recipe: Recipe,
    report: MergeReport,
    evaluation: dict | None = None,
    *,
    folder: Path | None = None,
    repo_id: str | None = None,
):
    """The `ModelCard` of a merge: metadata and body from the recipe, the report and the evaluation.

    Args:
        recipe (`Recipe`): the resolved recipe (``merge_config.yaml``).
        report (`MergeReport`): the merge report (``merge_report.json``).
        evaluation (`dict`, *optional*): ``EvaluationResult.to_dict()``.
        folder (`Path`, *optional*): where to save the AUC plot (no plot without it).
        repo_id (`str`, *optional*): the Hub repo id for the usage snippet.

    Returns:
        `huggingface_hub.ModelCard`: the card (not yet saved).
    """
    from huggingface_hub import ModelCard, ModelCardData

    method = recipe.merge_method
    licence = collect_licence(recipe)
    if licence.conflict:
        warnings.warn(f"model card: {licence.describe()}", UserWarning, stacklevel=2)
    model_name = safe_name((repo_id or "").split("/")[-1] or _folder_name(folder))
    data = ModelCardData(
        model_name=model_name if evaluation else None,  # only the model-index needs it
        base_model=hub_inputs(recipe) or None,
        base_model_relation="merge",
        library_name="transformers",
        pipeline_tag="image-classification",
        license=licence.value,
        tags=list(dict.fromkeys([*BASE_TAGS, method])),
        eval_results=eval_results_for_index(evaluation) if evaluation else None,
    )
    plot = plot_auc(evaluation, folder / PLOT_FILE) if (evaluation and folder is not None) else None
    body = _body(recipe, report, evaluation, licence, repo_id=repo_id, model_name=model_name, plot=plot)
    calibration = read_folder_calibration(folder) if folder is not None else None
    if calibration is not None:
        from .detector.card import threshold_markdown

        body = _insert_before(body, "## Merge diagnostics", threshold_markdown(calibration))
    return ModelCard(f"---\n{data.to_yaml()}\n---\n{body}")


def read_folder_calibration(folder: Path):
    """The decision threshold calibrated on a model folder (``r2m_hf.threshold`` in its ``config.json``), else None.

    Raises:
        `ConfigError`: the stored threshold is malformed.
    """
    from .detector.calibration import read_calibration

    try:
        return read_calibration(folder)
    except (OSError, TypeError, ValueError) as exc:  # an unreadable config.json: reported by whoever reads weights
        if isinstance(exc, R2MError):
            raise
        return None


def _insert_before(body: str, heading: str, section: str) -> str:
    """`body` with `section` inserted before the line `heading` (appended when there is none)."""
    at = body.find(f"\n{heading}\n")
    if at < 0:
        return body.rstrip("\n") + "\n\n" + section
    return body[: at + 1] + section + "\n" + body[at + 1 :]


def _folder_name(folder: Path | None) -> str:
    """The output folder's final name (the merge writes into ``.<name>.tmp-XXXX`` and renames it at the end)."""
    if folder is None:
        return "merged-detector"
    match = re.fullmatch(r"\.(.+)\.tmp-[^.]+", folder.name)
    return match[1] if match else folder.name


# ------------------------------------------------------------------------------------------------------ inputs
def hub_inputs(recipe: Recipe) -> list[str]:
    """Hub repo ids of the inputs (backbone first); local folders are not valid ``base_model`` values."""
    ids = [record.repo_id for _, record in recipe.inputs()]
    return list(dict.fromkeys(i for i in ids if i and HUB_ID.match(i)))


def _input_folder(record: SourceRecord) -> Path | None:
    """Where an input's README.md is, for a recipe that did not record its licence: the Hub cache at the commit the
    merge used, or a local folder recorded by absolute path (``--record-local-paths``, or an older recipe)."""
    if record.repo_id:
        from huggingface_hub import try_to_load_from_cache

        try:
            cached = try_to_load_from_cache(record.repo_id, CARD_FILE, revision=record.commit or None)
        except Exception:  # an invalid repo id or revision in an edited recipe: no card
            return None
        return Path(cached).parent if isinstance(cached, str) else None
    if record.path and Path(record.path).is_absolute() and Path(record.path).is_dir():
        return Path(record.path)
    return None


def _input_licence(record: SourceRecord) -> str | None:
    from .config import SourceSpec
    from .sources import LICENSE_ID, ResolvedSource

    if record.license:
        return record.license if LICENSE_ID.match(record.license) else None
    folder = _input_folder(record)
    if folder is None:
        return None
    return ResolvedSource(spec=SourceSpec(str(folder)), path=folder).declared_license()


def collect_licence(recipe: Recipe) -> Licence:
    """The inputs' ``license`` metadata; one common value is carried over, differing values give ``other``."""
    by_input: dict[str, str | None] = {}
    for name, record in recipe.inputs():
        by_input[name] = _input_licence(record)
    declared = sorted({v for v in by_input.values() if v})
    if not declared:
        return Licence(None, by_input)
    if len(declared) == 1:
        return Licence(declared[0], by_input)
    return Licence("other", by_input, conflict=True)


# -------------------------------------------------------------------------------------------------- evaluation
def _evaluation_dict(folder: Path, eval_results: Any) -> dict | None:
    if eval_results is None:
        return _read_json(folder / EVAL_FILE)
    if isinstance(eval_results, (str, Path)):
        return _read_json(Path(eval_results))
    if hasattr(eval_results, "to_dict"):
        return eval_results.to_dict()
    return dict(eval_results)


# -------------------------------------------------------------------------------------------------------- body
def _body(
    recipe: Recipe,
    report: MergeReport,
    evaluation: dict | None,
    licence: Licence,
    *,
    repo_id: str | None,
    model_name: str,
    plot: str | None,
) -> str:
    lines = [
        f"# {model_name}",
        "",
        f"A deepfake detector made by merging {len(recipe.models)} specialist detectors with "
        f"{md_code(recipe.merge_method)} (r2m-hf){_rule(recipe.merge_method)}. It is a binary image classifier: "
        "`0 = real`, `1 = fake`.",
        "",
        "## Inputs",
        "",
        "| role | name | source | revision / commit | kind | fake index |",
        "|---|---|---|---|---|---:|",
    ]
    base = recipe.base_model
    if base is not None:
        lines.append(f"| base | — | {_source_cell(base)} | {_revision_cell(base)} | backbone | — |")
    for model in recipe.models:
        source = model.source
        lines.append(
            f"| specialist | {md_code(model.name)} | {_source_cell(source)} | {_revision_cell(source)} | "
            f"{md_text(model.kind)} | {md_text(model.fake_index)} |"
        )
    lines += ["", licence.describe(), ""]
    remote_code = report.architecture == "DeepfakeBenchCLIPForImageClassification"
    if remote_code:  # DeepfakeBench detectors: their own model class, shipped in the folder
        from .deepfakebench import MODEL_CLASS_NOTE

        lines += [MODEL_CLASS_NOTE, ""]
    lines += _usage(repo_id, model_name, remote_code=remote_code)
    lines += threshold_lines(evaluation)
    if evaluation:
        lines += evaluation_lines(evaluation, plot)
    lines += _diagnostics(report)
    recipe_text = recipe.to_yaml().rstrip()
    fence = code_fence(recipe_text)
    lines += [
        "## Merge recipe",
        "",
        "The fully resolved recipe (`merge_config.yaml`): what was asked for (`reference`) and what was used (the "
        "commit and file hashes of every input). To reproduce the merge, write a merge YAML whose `model:` entries are "
        "these repo ids pinned at the recorded commits (`repo_id@commit`) with the same `parameters:`.",
        "",
        f"{fence}yaml",
        recipe_text,
        fence,
        "",
    ]
    return "\n".join(lines)


def _rule(method: str) -> str:
    """``: <the method's one-line rule>`` from the registry; nothing for a method not installed here."""
    from .methods.registry import get_method

    try:
        rule = get_method(method).rule()
    except R2MError:
        return ""
    return f": {rule.rstrip('.')}" if rule else ""


def _source_cell(record: SourceRecord) -> str:
    if record.repo_id and HUB_ID.match(record.repo_id):
        return f"[`{record.repo_id}`](https://huggingface.co/{record.repo_id})"
    if record.repo_id:
        return md_code(record.repo_id)
    return f"{md_code(record.reference)} (local)"


def _revision_cell(record: SourceRecord) -> str:
    if record.repo_id:
        return f"{md_code(record.revision or 'main')} / {md_code((record.commit or '?')[:12])}"
    return "—"


def _usage(repo_id: str | None, model_name: str, *, remote_code: bool = False) -> list[str]:
    ref = repo_id if (repo_id and HUB_ID.match(repo_id)) else f"path/to/{safe_name(model_name)}"
    options = ", trust_remote_code=True" if remote_code else ""
    return [
        "## How to use",
        "",
        "```python",
        "from transformers import pipeline",
        "",
        f'detector = pipeline("image-classification", model="{ref}"{options})',
        'predictions = detector("image.jpg", top_k=2)',
        'p_fake = next(p["score"] for p in predictions if p["label"] == "fake")',
        "```",
        "",
    ]


def _diagnostics(report: MergeReport) -> list[str]:
    lines = [
        "## Merge diagnostics",
        "",
        f"{md_text(report.architecture)}, {report.tensors} tensors, merged in {report.seconds} s on "
        f"{md_code(report.device)}" + (f" ({report.processes} processes)." if report.processes > 1 else "."),
        "",
    ]
    rows = report.summary_rows()
    if rows:
        lines += [f"| {md_text(report.merge_method)} | value |", "|---|---|"]
        lines += [f"| {md_text(label)} | {md_text(value)} |" for label, value in rows]
        lines.append("")
    messages = list(report.warnings) + list(report.notes)
    if messages:
        lines += ["Warnings and notes:", ""] + [f"- {md_text(m, 1000)}" for m in messages] + [""]
    else:
        lines += ["No warnings.", ""]
    return lines


def _read_json(path: Path) -> dict | None:
    if not path.is_file():
        return None
    return json.loads(path.read_text(encoding="utf-8"))


__all__ = [
    "Licence",
    "build_model_card",
    "collect_licence",
    "eval_results_for_index",
    "hub_inputs",
    "read_folder_calibration",
    "write_model_card",
]
