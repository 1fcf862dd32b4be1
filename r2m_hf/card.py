"""The model card (``README.md``) of a merged output folder, written with ``huggingface_hub.ModelCard``.

Everything in the card is read back from the folder: the resolved recipe (``merge_config.yaml``), the method's
diagnostics (``merge_report.json``) and, when the merge was evaluated, ``eval_results.json``. So the card can be
(re)written at any time after the merge: :func:`write_model_card` is called once when the folder is written and again
by the CLI after the evaluation step or before a push (to name the repo in the usage snippet). The metadata follows
the Hub's conventions for merges (``base_model`` = the Hub inputs, ``base_model_relation: merge``) and carries a
``model-index`` with typed metrics per forgery family. Licences come from the inputs' own cards. No token ever reaches
this module.
"""

from __future__ import annotations

import json
import logging
import math
import re
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

logger = logging.getLogger("r2m_hf")

CARD_FILE = "README.md"
RECIPE_FILE = "merge_config.yaml"
REPORT_FILE = "merge_report.json"
EVAL_FILE = "eval_results.json"
PLOT_FILE = "eval_auc.png"
BASE_TAGS = ("deepfake-detection", "model-merging", "r2m")
# (key in the metrics dict, model-index metric type, display name)
INDEX_METRICS = (
    ("auc", "roc_auc", "AUC"),
    ("eer", "eer", "EER"),
    ("ap", "average_precision", "AP"),
    ("acc", "accuracy", "ACC@0.5"),
)
_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")


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
        listing = ", ".join(f"`{name}`: {lic}" for name, lic in declared.items())
        unknown = [k for k, v in self.by_input.items() if not v]
        text = f"Licences of the inputs: {listing}."
        if unknown:
            text += f" No licence found for: {', '.join(f'`{u}`' for u in unknown)}."
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
    recipe = _read_yaml(folder / RECIPE_FILE)
    report = _read_json(folder / REPORT_FILE) or {}
    evaluation = _evaluation_dict(folder, eval_results)
    card = build_model_card(recipe, report, evaluation, folder=folder, repo_id=repo_id)
    path = folder / CARD_FILE
    card.save(path)
    return path


def build_model_card(
    recipe: dict,
    report: dict,
    evaluation: dict | None = None,
    *,
    folder: Path | None = None,
    repo_id: str | None = None,
):
    """The `ModelCard` of a merge: metadata and body from the recipe, the report and the evaluation.

    Args:
        recipe (`dict`): the contents of ``merge_config.yaml``.
        report (`dict`): the contents of ``merge_report.json``.
        evaluation (`dict`, *optional*): ``EvaluationResult.to_dict()``.
        folder (`Path`, *optional*): where to save the AUC plot (no plot without it).
        repo_id (`str`, *optional*): the Hub repo id for the usage snippet.

    Returns:
        `huggingface_hub.ModelCard`: the card (not yet saved).
    """
    from huggingface_hub import ModelCard, ModelCardData

    method = str(recipe.get("merge_method") or report.get("merge_method") or "unknown")
    licence = collect_licence(recipe)
    if licence.conflict:
        warnings.warn(f"model card: {licence.describe()}", UserWarning, stacklevel=2)
    model_name = (repo_id or "").split("/")[-1] or _folder_name(folder)
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
    plot = _plot_auc(evaluation, folder / PLOT_FILE) if (evaluation and folder is not None) else None
    body = _body(recipe, report, evaluation, licence, repo_id=repo_id, model_name=model_name, plot=plot)
    return ModelCard(f"---\n{data.to_yaml()}\n---\n{body}")


def _folder_name(folder: Path | None) -> str:
    """The output folder's final name (the merge writes into ``.<name>.tmp-XXXX`` and renames it at the end)."""
    if folder is None:
        return "merged-detector"
    match = re.fullmatch(r"\.(.+)\.tmp-[^.]+", folder.name)
    return match[1] if match else folder.name


# ------------------------------------------------------------------------------------------------------ inputs
def _inputs(recipe: dict) -> list[tuple[str, dict]]:
    """(name, source record) of the base and every specialist (and adapter bases) in the recipe."""
    found = []
    if recipe.get("base_model"):
        found.append(("base_model", recipe["base_model"]))
    for model in recipe.get("models") or []:
        if model.get("source"):
            found.append((str(model.get("name")), model["source"]))
        if model.get("adapter_base"):
            found.append((f"{model.get('name')} (adapter base)", model["adapter_base"]))
    return found


def hub_inputs(recipe: dict) -> list[str]:
    """Hub repo ids of the inputs (backbone first); local folders are not valid ``base_model`` values."""
    ids = [record.get("repo_id") for _, record in _inputs(recipe)]
    return list(dict.fromkeys(i for i in ids if i and _HUB_ID.match(i)))


def _input_card(record: dict) -> Path | None:
    """The README.md of one input: in its local folder, or in the Hub cache at the commit the merge used."""
    if record.get("path"):
        path = Path(record["path"]) / CARD_FILE
        return path if path.is_file() else None
    if record.get("repo_id"):
        from huggingface_hub import try_to_load_from_cache

        cached = try_to_load_from_cache(record["repo_id"], CARD_FILE, revision=record.get("commit") or None)
        return Path(cached) if isinstance(cached, str) else None
    return None


def collect_licence(recipe: dict) -> Licence:
    """The inputs' ``license`` metadata; one common value is carried over, differing values give ``other``."""
    from huggingface_hub import metadata_load

    by_input: dict[str, str | None] = {}
    for name, record in _inputs(recipe):
        card = _input_card(record)
        meta = None
        if card is not None:
            try:
                meta = metadata_load(card)
            except (ValueError, yaml.YAMLError):  # a broken input card tells us nothing
                meta = None
        value = (meta or {}).get("license")
        by_input[name] = str(value) if value else None
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


def _dataset_id(evaluation: dict) -> tuple[str, str]:
    """(type, name) of the evaluated dataset for the model-index: a Hub id as is, a local folder by its name."""
    dataset = str(evaluation.get("dataset") or "unknown")
    if _HUB_ID.match(dataset) and not Path(dataset).exists():
        return dataset, dataset
    return "imagefolder", Path(dataset).name or dataset


def _number(value) -> float | None:
    if value is None:
        return None
    value = float(value)
    return value if math.isfinite(value) else None


def eval_results_for_index(evaluation: dict) -> list:
    """`EvalResult`s for the model-index: one result (task + dataset config) per forgery family, plus the mean.

    Args:
        evaluation (`dict`): ``EvaluationResult.to_dict()``.

    Returns:
        `list[huggingface_hub.EvalResult]`: typed metrics (``roc_auc``, ``eer``, ``average_precision``,
        ``accuracy``); undefined (NaN) values are left out.
    """
    from huggingface_hub import EvalResult

    dataset_type, dataset_name = _dataset_id(evaluation)
    split = evaluation.get("split")
    families = evaluation.get("families") or {}
    groups = [(family, f"{dataset_name} ({family})", metrics) for family, metrics in families.items()]
    if families:
        groups.append(("mean", f"{dataset_name} (mean over {len(families)} families)", evaluation.get("mean") or {}))
    else:
        groups.append(("all", dataset_name, evaluation.get("overall") or {}))
    results = []
    for config, name, metrics in groups:
        for key, metric_type, metric_name in INDEX_METRICS:
            value = _number(metrics.get(key))
            if value is None:
                continue
            results.append(
                EvalResult(
                    task_type="image-classification",
                    task_name="Deepfake detection",
                    dataset_type=dataset_type,
                    dataset_name=name,
                    dataset_config=config,
                    dataset_split=split,
                    metric_type=metric_type,
                    metric_name=metric_name,
                    metric_value=round(value, 6),
                )
            )
    return results


def _plot_auc(evaluation: dict, path: Path) -> str | None:
    """Bar chart of AUC per family (and the mean) as a PNG; None when matplotlib is missing or nothing to plot."""
    try:
        import matplotlib

        matplotlib.use("Agg", force=False)
        import matplotlib.pyplot as plt
    except ImportError:
        logger.info("matplotlib is not installed: the model card has no AUC plot")
        return None
    families = evaluation.get("families") or {}
    rows = [(name, _number(m.get("auc"))) for name, m in families.items()]
    if not families:
        rows = [("all", _number((evaluation.get("overall") or {}).get("auc")))]
    rows = [(name, value) for name, value in rows if value is not None]
    if not rows:
        return None
    mean = _number((evaluation.get("mean") or {}).get("auc")) if families else None
    fig, ax = plt.subplots(figsize=(max(3.0, 0.8 * len(rows) + 1.5), 2.8), dpi=100)
    try:
        ax.bar([name for name, _ in rows], [value for _, value in rows], color="#4c72b0")
        if mean is not None:
            ax.axhline(mean, color="#c44e52", linestyle="--", label=f"mean {mean:.3f}")
            ax.legend(loc="lower right", fontsize=8)
        ax.set_ylim(0, 1)
        ax.set_ylabel("AUC")
        ax.set_title(f"AUC per forgery family ({_dataset_id(evaluation)[1]})", fontsize=9)
        fig.tight_layout()
        fig.savefig(path)
    finally:
        plt.close(fig)
    return path.name


# -------------------------------------------------------------------------------------------------------- body
def _body(
    recipe: dict,
    report: dict,
    evaluation: dict | None,
    licence: Licence,
    *,
    repo_id: str | None,
    model_name: str,
    plot: str | None,
) -> str:
    method = recipe.get("merge_method", "unknown")
    models = recipe.get("models") or []
    lines = [
        f"# {model_name}",
        "",
        f"A deepfake detector made by merging {len(models)} specialist detectors with `{method}` "
        "(r2m-hf; R²M merges a shared real core and the specialists' fake residuals). It is a binary image classifier: "
        "`0 = real`, `1 = fake`.",
        "",
        "## Inputs",
        "",
        "| role | name | source | revision / commit | kind | fake index |",
        "|---|---|---|---|---|---:|",
    ]
    base = recipe.get("base_model")
    if base:
        lines.append(f"| base | — | {_source_cell(base)} | {_revision_cell(base)} | backbone | — |")
    for model in models:
        source = model.get("source") or {}
        lines.append(
            f"| specialist | `{model.get('name')}` | {_source_cell(source)} | {_revision_cell(source)} | "
            f"{model.get('kind', '?')} | {model.get('fake_index', '?')} |"
        )
    lines += ["", licence.describe(), ""]
    lines += _usage(repo_id, model_name)
    lines += _thresholds(evaluation)
    if evaluation:
        lines += _evaluation_section(evaluation, plot)
    lines += _diagnostics(report)
    recipe_text = yaml.safe_dump(recipe, sort_keys=False, allow_unicode=True).rstrip()
    lines += [
        "## Merge recipe",
        "",
        "The fully resolved recipe (`merge_config.yaml`): what was asked for (`reference`) and what was used (the "
        "commit and file hashes of every input). To reproduce the merge, write a merge YAML whose `model:` entries are "
        "these repo ids pinned at the recorded commits (`repo_id@commit`) with the same `parameters:`.",
        "",
        "```yaml",
        recipe_text,
        "```",
        "",
    ]
    return "\n".join(lines)


def _source_cell(record: dict) -> str:
    if record.get("repo_id"):
        return f"[`{record['repo_id']}`](https://huggingface.co/{record['repo_id']})"
    return f"`{record.get('reference') or record.get('path')}` (local)"


def _revision_cell(record: dict) -> str:
    if record.get("repo_id"):
        commit = record.get("commit") or "?"
        return f"`{record.get('revision', 'main')}` / `{commit[:12]}`"
    return "—"


def _usage(repo_id: str | None, model_name: str) -> list[str]:
    ref = repo_id or f"path/to/{model_name}"
    return [
        "## How to use",
        "",
        "```python",
        "from transformers import pipeline",
        "",
        f'detector = pipeline("image-classification", model="{ref}")',
        'predictions = detector("image.jpg", top_k=2)',
        'p_fake = next(p["score"] for p in predictions if p["label"] == "fake")',
        "```",
        "",
    ]


def _thresholds(evaluation: dict | None) -> list[str]:
    lines = [
        "## Scores and thresholds",
        "",
        "The score of an image is `softmax(logits)[1]`, the probability of `fake`. The default decision threshold is "
        "0.5. Merged detectors are often mis-calibrated on new data: **calibrate the threshold on in-domain "
        "validation data** (real and fake images from the source you will run on), e.g. at the equal-error-rate "
        "point or at the false-positive rate you can afford.",
        "",
    ]
    overall = (evaluation or {}).get("overall") or {}
    threshold = _number(overall.get("eer_threshold"))
    if threshold is not None:
        acc_eer = _number(overall.get("acc_eer"))
        extra = f"; accuracy {acc_eer:.4f} there vs {_fmt(overall.get('acc'))} at 0.5" if acc_eer is not None else ""
        lines += [
            f"Calibrated threshold from the evaluation below: **{threshold:.4f}** (the EER threshold on "
            f"`{_dataset_id(evaluation)[1]}` / `{evaluation.get('split')}`, all rows pooled{extra}). It is only valid "
            "for data like that set.",
            "",
        ]
    return lines


def _fmt(value) -> str:
    value = _number(value) if not isinstance(value, str) else value
    if value is None:
        return "—"
    return value if isinstance(value, str) else f"{value:.4f}"


def _evaluation_section(evaluation: dict, plot: str | None) -> list[str]:
    families = evaluation.get("families") or {}
    lines = [
        "## Evaluation",
        "",
        f"Dataset `{_dataset_id(evaluation)[1]}`, split `{evaluation.get('split')}`, {evaluation.get('n_samples')} "
        "images; fake = positive class. The headline is the mean over forgery families; fake-only families are "
        "scored against the shared real images.",
        "",
        "| family | AUC | EER | AP | ACC@0.5 | n |",
        "|---|---:|---:|---:|---:|---:|",
    ]

    def row(name: str, metrics: dict, n) -> str:
        cells = " | ".join(_fmt(metrics.get(key)) for key, _, _ in INDEX_METRICS)
        return f"| {name} | {cells} | {n} |"

    for family, metrics in families.items():
        lines.append(row(family, metrics, metrics.get("n", "")))
    if families:
        lines.append(row("**mean**", evaluation.get("mean") or {}, f"{len(families)} families"))
    lines.append(row("all (pooled)", evaluation.get("overall") or {}, evaluation.get("n_samples", "")))
    lines.append("")
    if plot:
        lines += [f"![AUC per forgery family]({plot})", ""]
    notes = evaluation.get("notes") or []
    lines += [f"- {note}" for note in notes] + ([""] if notes else [])
    return lines


def _diagnostics(report: dict) -> list[str]:
    method = report.get("method") or {}
    lines = ["## Merge diagnostics", ""]
    if report.get("seconds") is not None:
        lines.append(
            f"{report.get('architecture', '?')}, {report.get('tensors', '?')} tensors, merged in "
            f"{report['seconds']} s on `{report.get('device', '?')}`."
        )
        lines.append("")
    if method.get("coefficients") is not None:
        c = ", ".join(f"{x:.4f}" for x in method["coefficients"])
        eig = ", ".join(f"{x:.4g}" for x in method.get("gram_eigenvalues") or [])
        ranks = method.get("ranks_kept") or {}
        lines += [
            "| R²M quantity | value |",
            "|---|---|",
            f"| real-core coefficients c | [{c}] |",
            f"| Gram eigenvalues | [{eig}] |",
            f"| spectral gap | {_fmt(method.get('spectral_gap'))} |",
            f"| η ({method.get('eta_mode', '?')}) | {_fmt(method.get('eta'))} |",
            f"| ‖τcore‖ | {_fmt(method.get('core_norm'))} |",
            f"| ‖τres‖ | {_fmt(method.get('residual_norm'))} |",
            f"| residual norms before truncation | {_list(method.get('residual_norms_before'))} |",
            f"| residual norms after truncation | {_list(method.get('residual_norms_after'))} |",
            f"| ranks kept (min / mean / max) | {ranks.get('min')} / {_fmt(ranks.get('mean'))} / {ranks.get('max')} |",
            f"| residual dropped | {method.get('residual_dropped')} |",
            "",
        ]
    else:
        scalars = {k: v for k, v in method.items() if isinstance(v, (int, float, str)) and k != "warnings"}
        if scalars:
            lines += ["| quantity | value |", "|---|---|"]
            lines += [f"| {k} | {_fmt(v) if isinstance(v, float) else v} |" for k, v in scalars.items()]
            lines.append("")
    warnings_ = list(method.get("warnings") or []) + list(report.get("notes") or [])
    if warnings_:
        lines += ["Warnings and notes:", ""] + [f"- {w}" for w in warnings_] + [""]
    else:
        lines += ["No warnings.", ""]
    return lines


def _list(values) -> str:
    return "[" + ", ".join(f"{float(v):.4g}" for v in values or []) + "]"


def _read_yaml(path: Path) -> dict:
    if not path.is_file():
        from .errors import OutputError

        raise OutputError(f"{path.parent}: no {path.name}; the model card is written from a merged output folder")
    return yaml.safe_load(path.read_text(encoding="utf-8")) or {}


def _read_json(path: Path) -> dict | None:
    if not path.is_file():
        return None
    return json.loads(path.read_text(encoding="utf-8"))


__all__ = ["Licence", "build_model_card", "collect_licence", "eval_results_for_index", "hub_inputs", "write_model_card"]
