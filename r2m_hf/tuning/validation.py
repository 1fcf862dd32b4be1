"""The tuner's validation data: loaded and preprocessed once, scored chunk by chunk so bad trials stop early.

A :class:`ValidationSet` reads the split through :func:`~r2m_hf.evaluation.load_evaluation_data` (labels mapped by
name, families, video ids), refuses a split without both real and fake rows, and cuts it into chunks whose every
prefix holds the same share of each (label, family) group. Each chunk keeps its processed pixels, so an image is
processed once per run. :meth:`ValidationSet.evaluate` scores a model chunk by chunk with the evaluation runner's
``score_images`` and yields the metrics of every prefix, the last one being the whole split; the metric code is the
runner's (``family_metrics``, ``compute_metrics``).
"""

from __future__ import annotations

import dataclasses
import math
import warnings
from collections.abc import Iterator

import numpy as np

from ..errors import ConfigError, DatasetError
from ..evaluation import EvaluationResult, compute_metrics, load_evaluation_data, pixel_values
from ..evaluation.runner import family_metrics, score_images

# metric name → (where it is read, key, direction)
OBJECTIVES = {
    "auc": ("overall", "auc", "maximize"),
    "eer": ("overall", "eer", "minimize"),
    "ap": ("overall", "ap", "maximize"),
    "auc@families": ("mean", "auc", "maximize"),
}
MIN_CHUNK_ROWS = 16


def objective_value(metric: str, overall: dict, mean: dict) -> float:
    """The number a trial is ranked by: pooled AUC / EER / AP, or the mean AUC over families."""
    where, key, _ = OBJECTIVES[metric]
    value = (overall if where == "overall" else mean).get(key, math.nan)
    return float("nan") if value is None else float(value)


class ValidationSet:
    """One split, ready to score many models.

    Args:
        dataset: anything :func:`~r2m_hf.evaluation.load_evaluation_data` reads.
        processor: the image processor of the merged model.
        split, label_column, family_column, video_column, max_samples: as in `load_evaluation_data`.
        metric (`str`): the objective (``auc@families`` needs a family column).
        chunks (`int`): how many chunks to score in (1 disables early stopping).
        seed (`int`): seed of the chunk order.
        batch_size (`int`), device: as in `evaluate_model`.
    """

    def __init__(
        self,
        dataset,
        processor,
        *,
        split: str,
        label_column: str = "label",
        family_column: str | None = None,
        video_column: str | None = None,
        max_samples: int | None = None,
        metric: str = "auc",
        chunks: int = 4,
        seed: int = 0,
        batch_size: int = 32,
        device=None,
    ):
        data = load_evaluation_data(
            dataset,
            split=split,
            label_column=label_column,
            family_column=family_column,
            video_column=video_column,
            max_samples=max_samples,
            seed=seed,
        )
        present = set(np.unique(data.labels).tolist())
        if present != {0, 1}:
            missing = "fake" if 1 not in present else "real"
            raise DatasetError(
                f"dataset {data.name!r} split {data.split!r} has no {missing} rows; tuning ranks detectors, so the "
                "validation split needs both real and fake examples"
            )
        if metric == "auc@families" and data.families is None:
            raise ConfigError(
                f"metric auc@families: dataset {data.name!r} has no family column; pass family_column= or use auc"
            )
        self.data = data
        self.processor = processor
        self.batch_size = batch_size
        self.device = device
        self.metric = metric
        order = _stratified_order(data, seed)
        n_chunks = max(1, min(chunks, len(data) // MIN_CHUNK_ROWS))
        self.rows = [np.sort(part) for part in np.array_split(order, n_chunks)]
        self.chunks = [_subset(data, rows) for rows in self.rows]
        for chunk in self.chunks:
            pixel_values(chunk, processor)

    def __len__(self) -> int:
        return len(self.data)

    def evaluate(self, model, fake_index: int = 1) -> Iterator[tuple[int, float, EvaluationResult]]:
        """Score `model` chunk by chunk; yield `(rows scored, objective value, result)` after each chunk.

        The last yield covers the whole split: its result is what `evaluate_model` reports for this model.
        """
        scores: list[np.ndarray] = []
        for i, chunk in enumerate(self.chunks):
            scores.append(
                score_images(
                    model,
                    self.processor,
                    chunk,
                    fake_index,
                    batch_size=self.batch_size,
                    device=self.device,
                    progress=False,
                )
            )
            rows = np.concatenate(self.rows[: i + 1])
            result = self.result(np.concatenate(scores), rows, final=i == len(self.chunks) - 1)
            yield len(rows), objective_value(self.metric, result.overall, result.mean), result

    def result(self, scores: np.ndarray, rows: np.ndarray, *, final: bool = True) -> EvaluationResult:
        """The runner's metrics of `scores` given for `rows` (row indices of the split)."""
        data = self.data
        order = np.argsort(rows, kind="stable")
        rows, scores = rows[order], scores[order]
        labels = data.labels[rows]
        families = None if data.families is None else [data.families[i] for i in rows]
        videos = None if data.video_ids is None else [data.video_ids[i] for i in rows]
        with warnings.catch_warnings():
            if not final:  # a prefix may miss a family's reals: its NaN is expected, not worth a warning
                warnings.simplefilter("ignore", RuntimeWarning)
            per_family, mean = family_metrics(scores, labels, families, videos)
            overall = compute_metrics(scores, labels, videos)
        return EvaluationResult(
            dataset=data.name,
            split=data.split,
            n_samples=int(rows.size),
            families=per_family,
            mean=mean if per_family else dict(overall),
            overall=overall,
            notes=list(data.notes),
            scores=scores,
            labels=labels,
            sample_families=families,
        )


def _stratified_order(data, seed: int) -> np.ndarray:
    """A seeded row order in which every prefix holds about the same share of each (label, family) group."""
    rng = np.random.default_rng(seed)
    families = data.families or [None] * len(data)
    keys = [f"{label}\0{family}" for label, family in zip(data.labels.tolist(), families)]
    position = np.empty(len(keys))
    for key in sorted(set(keys)):
        rows = rng.permutation(np.flatnonzero(np.array(keys, dtype=object) == key))
        position[rows] = (np.arange(rows.size) + rng.random()) / rows.size
    return np.argsort(position, kind="stable")


def _subset(data, rows: np.ndarray):
    def pick(values):
        return None if values is None else [values[i] for i in rows]

    return dataclasses.replace(
        data,
        dataset=data.dataset.select(rows.tolist()),
        labels=data.labels[rows],
        families=pick(data.families),
        video_ids=pick(data.video_ids),
        pixel_cache={},
    )


__all__ = ["OBJECTIVES", "ValidationSet", "objective_value"]
