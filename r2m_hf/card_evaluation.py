"""The evaluation part of a merged model's card: the ``model-index`` results, the AUC plot, the metrics table and
the calibrated threshold, all rendered from ``EvaluationResult.to_dict()`` (``eval_results.json``). Also the escaping
every part of the card uses for text that came from an input (:func:`md_text`, :func:`md_code`): family names,
dataset names and notes are data, and must not become Markdown or HTML of the published card."""

from __future__ import annotations

import html
import logging
import math
import re
from pathlib import Path

from .errors import clip

logger = logging.getLogger("r2m_hf")

# a Hub repo id (namespace/name), told apart from a local path
HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")

# Text shown as inline code as is; anything else is escaped (see md_code).
_PLAIN_CODE = re.compile(r"^[\w./@:+=,-]{1,200}$")
_MD_SPECIALS = re.compile(r"([\\`\[|$])")  # code, links and images, table columns, maths
_BLOCK_START = re.compile(r"^([#+*-]|\d{1,9}[.)](?=\s|$))")  # a heading or list marker if it opened a line


def md_text(value: object, limit: int = 200) -> str:
    """Text from an input, safe inside a Markdown paragraph, list item or table cell of the card.

    One line, at most `limit` characters, HTML special characters as entities, and the Markdown that could add
    content backslash-escaped (code, links, images, table columns, maths, and a heading, quote or list opening the
    text), so a name or note cannot add a heading, a link, an image, HTML or a table column.
    """
    text = html.escape(clip(str(value), limit), quote=False)
    text = _MD_SPECIALS.sub(r"\\\1", text)
    return _BLOCK_START.sub(lambda m: m[1][:-1] + "\\" + m[1][-1], text)


def md_code(value: object) -> str:
    """`value` as inline code when it is a plain identifier or path, else as escaped text (:func:`md_text`)."""
    text = str(value)
    return f"`{text}`" if _PLAIN_CODE.match(text) else md_text(text)


def code_fence(text: str) -> str:
    """A backtick fence longer than any backtick run in `text`, so the text cannot close it."""
    longest = max((len(run) for run in re.findall(r"`+", text)), default=0)
    return "`" * max(3, longest + 1)


# (key in the metrics dict, model-index metric type, display name)
INDEX_METRICS = (
    ("auc", "roc_auc", "AUC"),
    ("eer", "eer", "EER"),
    ("ap", "average_precision", "AP"),
    ("acc", "accuracy", "ACC@0.5"),
)


def dataset_id(evaluation: dict) -> tuple[str, str]:
    """(type, name) of the evaluated dataset for the model-index: a Hub id as is, a local folder by its name."""
    from .config import path_exists

    dataset = clip(str(evaluation.get("dataset") or "unknown"))
    if HUB_ID.match(dataset) and not path_exists(dataset):
        return dataset, dataset
    return "imagefolder", Path(dataset).name or dataset


def finite_number(value) -> float | None:
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

    dataset_type, dataset_name = dataset_id(evaluation)
    split = evaluation.get("split")
    families = evaluation.get("families") or {}
    groups = [
        (clip(str(family), 64), f"{dataset_name} ({clip(str(family), 64)})", metrics)
        for family, metrics in families.items()
    ]
    if families:
        groups.append(("mean", f"{dataset_name} (mean over {len(families)} families)", evaluation.get("mean") or {}))
    else:
        groups.append(("all", dataset_name, evaluation.get("overall") or {}))
    results = []
    for config, name, metrics in groups:
        for key, metric_type, metric_name in INDEX_METRICS:
            value = finite_number(metrics.get(key))
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


def plot_auc(evaluation: dict, path: Path) -> str | None:
    """Bar chart of AUC per family (and the mean) as a PNG; None when matplotlib is missing or nothing to plot."""
    try:
        import matplotlib

        matplotlib.use("Agg", force=False)
        import matplotlib.pyplot as plt
    except ImportError:
        logger.info("matplotlib is not installed: the model card has no AUC plot")
        return None
    families = evaluation.get("families") or {}
    rows = [(name, finite_number(m.get("auc"))) for name, m in families.items()]
    if not families:
        rows = [("all", finite_number((evaluation.get("overall") or {}).get("auc")))]
    rows = [(name, value) for name, value in rows if value is not None]
    if not rows:
        return None
    mean = finite_number((evaluation.get("mean") or {}).get("auc")) if families else None
    fig, ax = plt.subplots(figsize=(max(3.0, 0.8 * len(rows) + 1.5), 2.8), dpi=100)
    try:
        ax.bar([name for name, _ in rows], [value for _, value in rows], color="#4c72b0")
        if mean is not None:
            ax.axhline(mean, color="#c44e52", linestyle="--", label=f"mean {mean:.3f}")
            ax.legend(loc="lower right", fontsize=8)
        ax.set_ylim(0, 1)
        ax.set_ylabel("AUC")
        ax.set_title(f"AUC per forgery family ({dataset_id(evaluation)[1]})", fontsize=9)
        fig.tight_layout()
        fig.savefig(path)
    finally:
        plt.close(fig)
    return path.name


def threshold_lines(evaluation: dict | None) -> list[str]:
    """The card's "Scores and thresholds" section, with the calibrated (EER) threshold when there is an evaluation."""
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
    threshold = finite_number(overall.get("eer_threshold"))
    if threshold is not None:
        acc_eer = finite_number(overall.get("acc_eer"))
        extra = f"; accuracy {acc_eer:.4f} there vs {_fmt(overall.get('acc'))} at 0.5" if acc_eer is not None else ""
        lines += [
            f"Calibrated threshold from the evaluation below: **{threshold:.4f}** (the EER threshold on "
            f"{md_code(dataset_id(evaluation)[1])} / {md_code(evaluation.get('split'))}, all rows pooled{extra}). "
            "It is only valid for data like that set.",
            "",
        ]
    return lines


def _fmt(value) -> str:
    value = finite_number(value) if not isinstance(value, str) else value
    if value is None:
        return "—"
    return value if isinstance(value, str) else f"{value:.4f}"


def evaluation_lines(evaluation: dict, plot: str | None) -> list[str]:
    """The card's "Evaluation" section: metrics per family, their mean and pooled, the plot and the notes."""
    families = evaluation.get("families") or {}
    lines = [
        "## Evaluation",
        "",
        f"Dataset {md_code(dataset_id(evaluation)[1])}, split {md_code(evaluation.get('split'))}, "
        f"{md_text(evaluation.get('n_samples'))} images; fake = positive class. The headline is the mean over "
        "forgery families; fake-only families are "
        "scored against the shared real images.",
        "",
        "| family | AUC | EER | AP | ACC@0.5 | n |",
        "|---|---:|---:|---:|---:|---:|",
    ]

    def row(name: str, metrics: dict, n) -> str:
        cells = " | ".join(md_text(_fmt(metrics.get(key))) for key, _, _ in INDEX_METRICS)
        return f"| {name} | {cells} | {md_text(n)} |"

    for family, metrics in families.items():
        lines.append(row(md_text(family, 64), metrics, metrics.get("n", "")))
    if families:
        lines.append(row("**mean**", evaluation.get("mean") or {}, f"{len(families)} families"))
    lines.append(row("all (pooled)", evaluation.get("overall") or {}, evaluation.get("n_samples", "")))
    lines.append("")
    if plot:
        lines += [f"![AUC per forgery family]({plot})", ""]
    notes = evaluation.get("notes") or []
    lines += [f"- {md_text(note, 500)}" for note in notes] + ([""] if notes else [])
    return lines


__all__ = [
    "HUB_ID",
    "code_fence",
    "md_code",
    "md_text",
    "INDEX_METRICS",
    "dataset_id",
    "eval_results_for_index",
    "evaluation_lines",
    "finite_number",
    "plot_auc",
    "threshold_lines",
]
