"""Score a classifier on an evaluation split and report deepfake metrics per forgery family.

Owns the batched inference loop (`accelerate`, so it runs the same on CPU, one GPU or several processes), the image
processing that feeds it (streamed batch by batch, or kept once per split when the same split is scored by many
models) and the `EvaluationResult` tables. Model loading is in `models.py`, the metric math in the
`deepfake_detection` metric module, the data reading in `data.py`.
"""

from __future__ import annotations

import json
import math
import os
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..detector.calibration import accuracy_at, read_calibration
from ..errors import ConfigError
from .data import EvaluationData, EvaluationError, load_evaluation_data
from .metric import compute_metrics
from .models import fake_index_of, load_classifier

MEAN_KEYS = ("auc", "eer", "ap", "acc", "acc_eer", "acc_threshold", "video_auc")
TABLE_COLUMNS = (("auc", "AUC"), ("eer", "EER"), ("ap", "AP"), ("acc", "ACC"))


@dataclass
class EvaluationResult:
    """Metrics of one model on one split: per forgery family, their mean (the headline) and pooled over all rows.

    Attributes:
        dataset (`str`), split (`str`), n_samples (`int`): what was scored.
        families (`dict[str, dict]`): metrics of each family (fake-only families are paired with the shared reals).
        mean (`dict`): mean over families of each metric (equal to `overall` without families).
        overall (`dict`): metrics of all rows pooled.
        model (`str | None`), fake_index (`int | None`): the classifier and the logit index read as fake.
        notes (`list[str]`): assumptions made on the way.
        threshold (`float | None`): the decision threshold behind `acc_threshold` (fake when P(fake) >= it), from
            the model's calibration or given; None reports accuracy at 0.5 only.
        threshold_source (`str | None`): ``"calibration"`` or ``"given"``.
        unreadable (`list[str]`): images left out because they cannot be decoded.
        scores, labels, sample_families: per-row fake scores, 0/1 labels and families (not serialized).
    """

    dataset: str
    split: str
    n_samples: int
    families: dict
    mean: dict
    overall: dict
    model: str | None = None
    fake_index: int | None = None
    notes: list = field(default_factory=list)
    threshold: float | None = None
    threshold_source: str | None = None
    unreadable: list = field(default_factory=list)
    scores: np.ndarray | None = field(default=None, repr=False)
    labels: np.ndarray | None = field(default=None, repr=False)
    sample_families: list | None = field(default=None, repr=False)

    def to_dict(self) -> dict:
        """JSON-able summary; NaN and infinite values become None."""
        return _json_safe(
            {
                "dataset": self.dataset,
                "split": self.split,
                "n_samples": self.n_samples,
                "model": self.model,
                "fake_index": self.fake_index,
                "notes": list(self.notes),
                "threshold": self.threshold,
                "threshold_source": self.threshold_source,
                "n_unreadable_skipped": len(self.unreadable),
                "unreadable_skipped": list(self.unreadable),
                "families": self.families,
                "mean": self.mean,
                "overall": self.overall,
            }
        )

    def to_markdown(self) -> str:
        """A Markdown table: one row per family, then the mean over families and the pooled numbers."""
        columns = list(TABLE_COLUMNS) + ([("acc_threshold", "ACC@thr")] if self.threshold is not None else [])
        columns += [("video_auc", "Video AUC")] if "video_auc" in self.overall else []
        lines = [
            "| family | " + " | ".join(title for _, title in columns) + " | n |",
            "|---|" + "---:|" * (len(columns) + 1),
        ]

        def row(name: str, metrics: dict, n) -> str:
            cells = [_fmt(metrics.get(key)) for key, _ in columns]
            return f"| {name} | " + " | ".join(cells) + f" | {n} |"

        for family, metrics in self.families.items():
            lines.append(row(family, metrics, metrics.get("n", "")))
        if self.families:
            lines.append(row("**mean**", self.mean, f"{len(self.families)} families"))
        lines.append(row("all (pooled)", self.overall, self.n_samples))
        if self.threshold is not None:
            source = "the model's calibration" if self.threshold_source == "calibration" else "given"
            lines.append(f"\nACC@thr: accuracy at threshold {self.threshold:.4g} ({source}); ACC is at 0.5.")
        if self.unreadable:
            names = ", ".join(self.unreadable[:3]) + ("…" if len(self.unreadable) > 3 else "")
            lines.append(f"\nskipped {len(self.unreadable)} unreadable images ({names}).")
        return "\n".join(lines) + "\n"

    def save(self, path) -> Path:
        """Write `to_dict()` as JSON to `path` (parents created) and return the path."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(self.to_dict(), indent=2, allow_nan=False) + "\n", encoding="utf-8")
        return path


def evaluate_model(
    model,
    dataset,
    *,
    split: str = "test",
    label_column: str = "label",
    family_column: str | None = None,
    video_column: str | None = None,
    batch_size: int = 32,
    device=None,
    max_samples: int | None = None,
    progress: bool = True,
    image_processor=None,
    fake_label: int | str | None = None,
    threshold: float | None = None,
    skip_unreadable: bool = False,
) -> EvaluationResult:
    """Score a deepfake detector on one dataset split and compute AUC/EER/AP/ACC per family, mean and pooled.

    Args:
        model (`str | os.PathLike | PreTrainedModel | tuple`): local folder (a model or a PEFT adapter folder)
            or Hub repo id, a loaded image classifier, or a `(model, image_processor)` pair (see `load_classifier`).
        dataset: see `load_evaluation_data` (folder, parquet, Hub repo id, or a loaded `Dataset`/`DatasetDict`),
            or an `EvaluationData` already loaded (then `split`, the columns and `max_samples` are not read again).
        split (`str`), label_column (`str`), family_column (`str`, *optional*), video_column (`str`, *optional*):
            which rows and columns to read; family and video columns default to `family` / `video_id` / `video`.
        batch_size (`int`): images per forward pass (per process).
        device (`str | torch.device`, *optional*): defaults to the `accelerate` device of this process.
        max_samples (`int`, *optional*): score a seeded random subset of this many rows.
        progress (`bool`): show a progress bar (main process only).
        image_processor (*optional*): processor for a loaded `model`; defaults to the one saved with it.
        fake_label (`int | str`, *optional*): fake class index or name, for heads whose `id2label` does not say.
        threshold (`float`, *optional*): report `acc_threshold`, accuracy calling P(fake) >= it fake, beside
            accuracy at 0.5; defaults to the threshold in the model's config.json (`r2m-hf calibrate`), if any.
        skip_unreadable (`bool`): leave out images that cannot be decoded instead of refusing (see
            `load_evaluation_data`).

    Returns:
        `EvaluationResult`: per-family, mean and pooled metrics, plus per-row scores.
    """
    if batch_size < 1:
        raise EvaluationError(f"batch_size must be >= 1, got {batch_size}")
    if threshold is not None and (
        isinstance(threshold, bool) or not isinstance(threshold, (int, float)) or not 0.0 <= threshold <= 1.0
    ):
        raise ConfigError(f"threshold must be a number in [0, 1], got {threshold!r}")
    # The model first: a wrong repo id or unreadable head fails before a large dataset is fetched.
    model, processor, model_name = load_classifier(model, image_processor)
    fake_index = fake_index_of(model, fake_label, model_name)
    source = "given" if threshold is not None else None
    if threshold is None:
        calibration = read_calibration(getattr(model, "config", None))
        if calibration is not None:
            threshold, source = calibration.value, "calibration"
    if isinstance(dataset, EvaluationData):
        data = dataset
    else:
        data = load_evaluation_data(
            dataset,
            split=split,
            label_column=label_column,
            family_column=family_column,
            video_column=video_column,
            max_samples=max_samples,
            skip_unreadable=skip_unreadable,
        )
    scores = score_images(model, processor, data, fake_index, batch_size=batch_size, device=device, progress=progress)
    families, mean = family_metrics(scores, data.labels, data.families, data.video_ids, threshold=threshold)
    overall = compute_metrics(scores, data.labels, data.video_ids)
    if threshold is not None:
        overall["acc_threshold"] = accuracy_at(scores, data.labels, threshold)
    if not families:
        mean = dict(overall)
    return EvaluationResult(
        dataset=data.name,
        split=data.split,
        n_samples=len(data),
        families=families,
        mean=mean,
        overall=overall,
        model=model_name,
        fake_index=fake_index,
        notes=list(data.notes),
        threshold=None if threshold is None else float(threshold),
        threshold_source=source,
        unreadable=list(data.unreadable),
        scores=scores,
        labels=data.labels,
        sample_families=data.families,
    )


def family_metrics(scores, labels, families, video_ids=None, *, threshold: float | None = None) -> tuple[dict, dict]:
    """Metrics per forgery family and their mean over families.

    A family holding both classes is scored on its own rows. A family holding only fakes (DF40 style) is scored
    against the shared real pool: the real rows with no family or in families without fakes. Families without
    fakes form that pool and get no row of their own.

    Args:
        scores (`np.ndarray`): fake scores.
        labels (`np.ndarray`): 0 = real, 1 = fake.
        families (`list[str | None] | None`): family of each row; None gives no families.
        video_ids (`list | None`): video of each row.
        threshold (`float`, *optional*): also report `acc_threshold`, accuracy at this threshold.

    Returns:
        `tuple`: `(families, mean)`, `{family: metrics}` and `{metric: mean over families}` (NaN families skipped).
    """
    if families is None:
        return {}, {}
    scores, labels = np.asarray(scores), np.asarray(labels)
    names = np.array(["" if f is None else str(f) for f in families], dtype=object)
    fake_families = sorted({f for f, y in zip(names, labels) if f and y == 1})
    pool = (labels == 0) & ~np.isin(names, fake_families)
    results = {}
    for family in fake_families:
        rows = names == family
        if not (labels[rows] == 0).any():
            rows = rows | pool
        ids = None if video_ids is None else [video_ids[i] for i in np.flatnonzero(rows)]
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            results[family] = compute_metrics(scores[rows], labels[rows], ids)
        if threshold is not None:
            results[family]["acc_threshold"] = accuracy_at(scores[rows], labels[rows], threshold)
    undefined = [f for f, m in results.items() if math.isnan(m["auc"])]
    if undefined:
        warnings.warn(
            f"families {', '.join(undefined)} have fakes but no real samples to compare with, so their "
            "AUC/EER/AP are NaN and left out of the mean; add real rows (family empty or 'real')",
            RuntimeWarning,
            stacklevel=2,
        )
    mean = {}
    for key in MEAN_KEYS:
        values = [m[key] for m in results.values() if key in m and not math.isnan(m[key])]
        if any(key in m for m in results.values()):
            mean[key] = float(np.mean(values)) if values else float("nan")
    mean["n_families"] = len(results)
    return results, mean


def score_images(
    model, processor, data: EvaluationData, fake_index: int, *, batch_size: int = 32, device=None, progress: bool = True
) -> np.ndarray:
    """Fake score softmax(logits)[fake_index] of every row, batched through `accelerate`.

    Args:
        model (`PreTrainedModel`): an image classifier.
        processor: its image processor.
        data (`EvaluationData`): rows to score (their processed pixels are reused when `data.pixel_cache` is set).
        fake_index (`int`): logit index of the fake class.
        batch_size (`int`), device (*optional*), progress (`bool`): as in `evaluate_model`.

    Returns:
        `np.ndarray`: float64 scores in row order (gathered over processes).
    """
    import torch
    from accelerate import Accelerator
    from tqdm.auto import tqdm

    accelerator = Accelerator()
    device = torch.device(device) if device is not None else accelerator.device
    cached = pixel_values(data, processor) if data.pixel_cache is not None else None

    def collate(indices):
        pixels = cached[list(indices)] if cached is not None else _process(data, processor, list(indices))
        return pixels, torch.as_tensor(indices, dtype=torch.long)

    loader = torch.utils.data.DataLoader(range(len(data)), batch_size=batch_size, shuffle=False, collate_fn=collate)
    model = accelerator.prepare_model(model.to(device).eval(), device_placement=False, evaluation_mode=True)
    loader = accelerator.prepare_data_loader(loader, device_placement=False)
    dtype = next(model.parameters()).dtype
    all_scores, all_indices = [], []
    with torch.inference_mode():
        for pixels, indices in tqdm(
            loader, desc="Scoring", unit="batch", disable=not progress or not accelerator.is_main_process
        ):
            logits = model(pixel_values=pixels.to(device, dtype=dtype)).logits
            scores = logits.float().softmax(dim=-1)[:, fake_index]
            scores, indices = accelerator.gather_for_metrics((scores, indices.to(device)))
            all_scores.append(scores.cpu())
            all_indices.append(indices.cpu())
    scores = torch.cat(all_scores).double().numpy()
    indices = torch.cat(all_indices).numpy()
    ordered = np.full(len(data), np.nan)
    ordered[indices] = scores
    if np.isnan(ordered).any():
        raise EvaluationError(f"dataset {data.name!r}: {int(np.isnan(ordered).sum())} rows were not scored")
    return ordered


def pixel_values(data: EvaluationData, processor, *, batch_size: int = 256):
    """The processed pixel values of every row of `data`, `(N, C, H, W)`, in row order.

    With `data.pixel_cache` set (`load_evaluation_data(..., cache_pixels=True)`) they are computed once per processor
    configuration and kept, so scoring many models on one split, or reading features from the same images, processes
    each image once.

    Args:
        data (`EvaluationData`): the rows.
        processor: an image processor (`processor(images=..., return_tensors="pt")`).
        batch_size (`int`): images per processor call.

    Returns:
        `torch.Tensor`: the pixel values the processor returns.
    """
    import torch

    key = processor.to_json_string() if hasattr(processor, "to_json_string") else id(processor)
    if data.pixel_cache is not None and key in data.pixel_cache:
        return data.pixel_cache[key]
    rows = range(len(data))
    pixels = torch.cat([_process(data, processor, list(rows[i : i + batch_size])) for i in rows[::batch_size]])
    if data.pixel_cache is not None:
        data.pixel_cache[key] = pixels
    return pixels


def _process(data: EvaluationData, processor, indices: list[int]):
    batch = data.dataset.select_columns([data.image_column])[indices][data.image_column]
    return processor(images=[_to_rgb(image) for image in batch], return_tensors="pt")["pixel_values"]


def _to_rgb(image):
    from PIL import Image

    if isinstance(image, dict):  # undecoded Image feature
        image = image.get("path") or image.get("bytes")
    if isinstance(image, (bytes, bytearray)):
        import io

        image = Image.open(io.BytesIO(image))
    elif isinstance(image, (str, os.PathLike)):
        image = Image.open(image)
    return image.convert("RGB")


def _fmt(value) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "—"
    return f"{value:.4f}" if isinstance(value, float) else str(value)


def _json_safe(value):
    if isinstance(value, dict):
        return {str(k): _json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_safe(v) for v in value]
    if isinstance(value, (np.floating, float)):
        return float(value) if math.isfinite(value) else None
    if isinstance(value, np.integer):
        return int(value)
    return value
