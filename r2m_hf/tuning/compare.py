"""`compare`: several detectors on the same split, in one table and one plot that paste into a model card.

Every model (a merged folder, a Hub repo id, a specialist, an adapter folder) is loaded and scored by the evaluation
runner (:func:`~r2m_hf.evaluation.evaluate_model`) on one :class:`~r2m_hf.evaluation.EvaluationData` loaded once,
its processed pixels shared by the models whose image processors agree. Next to the runner's AUC, EER, AP and
accuracy at 0.5, the table gives the accuracy at each model's calibrated threshold when its ``config.json`` holds
``"r2m_hf": {"threshold": {"value": t}}`` (a score ≥ t is fake), per family, their mean and pooled.
"""

from __future__ import annotations

import csv
import io
import json
import math
import os
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import ConfigError, OutputError
from ..evaluation import EvaluationResult, compute_metrics, evaluate_model, load_classifier, load_evaluation_data
from ..evaluation.runner import family_metrics


@dataclass
class ModelScores:
    """One model's row group in the comparison.

    Attributes:
        name (`str`): how the table names it.
        source (`str`): what was loaded (folder or repo id).
        result (`EvaluationResult`): the runner's metrics and scores.
        threshold (`float`, *optional*): its calibrated threshold, from ``config.json``.
        acc_threshold (`dict`): accuracy at that threshold: ``overall``, ``mean`` and one key per family.
    """

    name: str
    source: str
    result: EvaluationResult
    threshold: float | None = None
    acc_threshold: dict[str, float] = field(default_factory=dict)

    def rows(self) -> list[tuple[str, dict[str, Any]]]:
        """(section, metrics) for the mean over families, each family and the pooled rows."""
        r = self.result
        found = []
        if r.families:
            found.append(("mean", {**r.mean, "acc_threshold": self.acc_threshold.get("mean")}))
            found += [(f, {**m, "acc_threshold": self.acc_threshold.get(f)}) for f, m in r.families.items()]
        found.append(("all (pooled)", {**r.overall, "acc_threshold": self.acc_threshold.get("overall")}))
        return found


@dataclass
class CompareResult:
    """Several models on one split.

    Attributes:
        dataset (`str`), split (`str`), n_samples (`int`): the data.
        models (`list[ModelScores]`): every model, in the order given.
        markdown (`str`): the comparison table.
        files (`dict[str, Path]`): ``markdown``, ``csv``, ``json`` and ``plot`` under the output folder.
    """

    dataset: str
    split: str
    n_samples: int
    models: list[ModelScores]
    markdown: str = ""
    files: dict[str, Path] = field(default_factory=dict)


COLUMNS = (("auc", "AUC"), ("eer", "EER"), ("ap", "AP"), ("acc", "ACC@0.5"), ("acc_threshold", "ACC@τ"))


def compare(
    models: list,
    dataset,
    *,
    output_dir: str | Path,
    split: str = "test",
    label_column: str = "label",
    family_column: str | None = None,
    video_column: str | None = None,
    names: list[str] | None = None,
    batch_size: int = 32,
    device=None,
    max_samples: int | None = None,
    progress: bool = True,
) -> CompareResult:
    """Score several detectors on the same split; write ``comparison.md``/``.csv``/``.json`` and ``comparison.png``.

    Args:
        models (`list`): folders, Hub repo ids or loaded classifiers (anything `evaluate_model` takes).
        dataset: anything `load_evaluation_data` reads.
        output_dir (`str` or `Path`): where the files go (created if needed).
        split, label_column, family_column, video_column, max_samples: how the split is read.
        names (`list[str]`, *optional*): table names of the models (default: folder name or repo id).
        batch_size (`int`), device, progress: as in `evaluate_model`.

    Returns:
        `CompareResult`: the metrics of every model and the files written.
    """
    if not models:
        raise ConfigError("compare: give at least one model")
    if names is not None and len(names) != len(models):
        raise ConfigError(f"compare: {len(names)} names for {len(models)} models")
    out = Path(output_dir)
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise OutputError(f"output {out}: cannot be created: {exc.strerror or exc}") from None
    data = load_evaluation_data(
        dataset, split=split, label_column=label_column, family_column=family_column, video_column=video_column,
        max_samples=max_samples, cache_pixels=True,
    )  # fmt: skip
    scored = []
    for i, model in enumerate(models):
        loaded, processor, source = load_classifier(model)
        result = evaluate_model((loaded, processor), data, batch_size=batch_size, device=device, progress=progress)
        threshold = calibrated_threshold(loaded.config)
        name = names[i] if names else _display_name(source)
        scored.append(ModelScores(name, source, result, threshold, _acc_at(result, threshold)))
        del loaded
    _dedupe(scored)
    comparison = CompareResult(data.name, data.split, len(data), scored)
    comparison.markdown = comparison_markdown(comparison)
    comparison.files = _write_files(comparison, out)
    return comparison


def calibrated_threshold(config) -> float | None:
    """The threshold a model's config stores (``"r2m_hf": {"threshold": {"value": t}}``, written by ``calibrate``),
    or None."""
    from ..detector.calibration import read_calibration

    calibration = read_calibration(config)
    return None if calibration is None else calibration.value


def _acc_at(result: EvaluationResult, threshold: float | None) -> dict[str, float]:
    """Accuracy of `score ≥ threshold`, on the runner's rows for each family, their mean and pooled.

    The scores are binarised (0.75 fake, 0.25 real) so the runner's own accuracy at 0.5 is the accuracy at the
    threshold, on the very rows `family_metrics` pairs with each family.
    """
    if threshold is None:
        return {}
    binary = np.where(result.scores >= threshold, 0.75, 0.25)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        families, mean = family_metrics(binary, result.labels, result.sample_families)
        overall = compute_metrics(binary, result.labels)
    found = {f: m["acc"] for f, m in families.items()}
    found["overall"] = overall["acc"]
    found["mean"] = mean.get("acc", overall["acc"]) if families else overall["acc"]
    return found


def _display_name(source: str) -> str:
    path = Path(os.fspath(source))
    return path.name if path.is_dir() else str(source)


def _dedupe(scored: list[ModelScores]) -> None:
    seen: dict[str, int] = {}
    for s in scored:
        seen[s.name] = seen.get(s.name, 0) + 1
        if seen[s.name] > 1:
            s.name = f"{s.name} ({seen[s.name]})"


def _fmt(value) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "—"
    return f"{value:.4f}" if isinstance(value, float) else str(value)


def comparison_markdown(comparison: CompareResult) -> str:
    """One Markdown table: for the mean over families, each family and the pooled rows, every model's metrics."""
    video = any("video_auc" in s.result.overall for s in comparison.models)
    columns = list(COLUMNS) + [("threshold", "τ")] + ([("video_auc", "Video AUC")] if video else [])
    lines = [
        f"Detectors compared on `{comparison.dataset}` split `{comparison.split}` ({comparison.n_samples} rows). "
        "ACC@τ: accuracy at the model's calibrated threshold (— when it has none).",
        "",
        "| rows | model | " + " | ".join(t for _, t in columns) + " | n |",
        "|---|---|" + "---:|" * (len(columns) + 1),
    ]
    sections = list(dict.fromkeys(section for s in comparison.models for section, _ in s.rows()))
    for section in sections:
        for i, s in enumerate(comparison.models):
            metrics = dict(s.rows()).get(section)
            if metrics is None:
                continue
            metrics = {**metrics, "threshold": s.threshold}
            label = f"**{section}**" if i == 0 else ""
            n = f"{metrics.get('n_families')} families" if section == "mean" else metrics.get("n", "")
            cells = [_fmt(metrics.get(k)) for k, _ in columns]
            lines.append(f"| {label} | {s.name} | " + " | ".join(cells) + f" | {n} |")
    return "\n".join(lines) + "\n"


def _write_files(comparison: CompareResult, out: Path) -> dict[str, Path]:
    files = {"markdown": out / "comparison.md", "csv": out / "comparison.csv", "json": out / "comparison.json"}
    files["markdown"].write_text(comparison.markdown, encoding="utf-8")
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    keys = ["auc", "eer", "ap", "acc", "acc_eer", "acc_threshold", "video_auc", "n"]
    writer.writerow(["model", "source", "rows", "threshold", *keys])
    for s in comparison.models:
        for section, metrics in s.rows():
            writer.writerow([s.name, s.source, section, s.threshold, *[metrics.get(k) for k in keys]])
    files["csv"].write_text(buffer.getvalue(), encoding="utf-8")
    payload = {
        "dataset": comparison.dataset,
        "split": comparison.split,
        "n_samples": comparison.n_samples,
        "models": [
            {"name": s.name, "source": s.source, "threshold": s.threshold, "acc_threshold": s.acc_threshold,
             **s.result.to_dict()}
            for s in comparison.models
        ],
    }  # fmt: skip
    files["json"].write_text(json.dumps(payload, indent=2, default=_json_default) + "\n", encoding="utf-8")
    plot = _plot(comparison, out / "comparison.png")
    if plot is not None:
        files["plot"] = plot
    return files


def _json_default(value):
    if isinstance(value, (np.floating, np.integer)):
        return value.item()
    raise TypeError(type(value).__name__)


def _plot(comparison: CompareResult, path: Path) -> Path | None:
    """AUC per family (and their mean, or pooled without families), one bar per model."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    sections = list(dict.fromkeys(sec for s in comparison.models for sec, _ in s.rows() if sec != "all (pooled)"))
    sections = sections or ["all (pooled)"]
    width = 0.8 / len(comparison.models)
    fig, ax = plt.subplots(figsize=(max(4.0, 1.1 * len(sections) * max(1, len(comparison.models) / 2) + 2), 3.4))
    for i, s in enumerate(comparison.models):
        rows = dict(s.rows())
        values = [(rows.get(sec) or {}).get("auc", math.nan) for sec in sections]
        ax.bar(np.arange(len(sections)) + i * width, [math.nan if v is None else v for v in values], width,
               label=s.name)  # fmt: skip
    ax.set_xticks(np.arange(len(sections)) + width * (len(comparison.models) - 1) / 2, sections)
    ax.set_ylabel("AUC")
    ax.set_ylim(0, 1)
    ax.set_title(f"{comparison.dataset} [{comparison.split}]")
    ax.legend(fontsize="small")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


__all__ = ["CompareResult", "ModelScores", "calibrated_threshold", "compare", "comparison_markdown"]
