"""Scoring the benchmark's models, through the package's evaluation runner, and the feature-similarity analysis.

:class:`BenchScorer` loads each model folder as a user does (:func:`r2m_hf.evaluation.load_classifier`: a
transformers folder, or a LoRA adapter merged into its base) and scores it with
:func:`r2m_hf.evaluation.evaluate_model` on the benchmark's splits, each split read once with its pixels kept, since
dozens of models are scored on the same images. :func:`feature_similarity` measures the paper's observation: how
close each specialist's class-token features are to the averaged model's, on real and on fake images (linear CKA).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np


class BenchScorer:
    """Scores models on the benchmark splits with `r2m_hf.evaluation` (per-family AUC/EER/AP/ACC and their mean).

    Accuracy is reported twice: at 0.5 (`acc`) and at a threshold chosen on the validation split at its equal
    error rate (`acc_threshold`, with the threshold stored as the split's `threshold`), as a user does with
    ``r2m-hf calibrate``: merged heads are not calibrated, so 0.5 says little about them.

    Args:
        dataset (`datasets.DatasetDict`): the benchmark.
        splits (`tuple[str, ...]`): the splits that will be scored (the calibration split is always kept).
        batch_size (`int`): images per forward pass.
        calibration_split (`str`): where thresholds are chosen.
    """

    def __init__(
        self, dataset: Any, splits: tuple[str, ...], batch_size: int, *, calibration_split: str = "validation"
    ) -> None:
        from ..evaluation import load_evaluation_data

        self.batch_size = batch_size
        self.calibration_split = calibration_split
        wanted = dict.fromkeys((calibration_split, *splits))
        self.data = {s: load_evaluation_data(dataset, split=s, cache_pixels=True) for s in wanted}

    def evaluate(self, model_dir: str | Path, splits: tuple[str, ...]) -> dict[str, dict[str, Any]]:
        """`{split: {"families": {family: metrics}, "mean": {...}}}` of a model folder or LoRA adapter folder.

        Every split other than the calibration split also gets `"threshold"` (chosen on the calibration split at
        its equal error rate) and `acc_threshold` in its metrics.
        """
        from ..detector.calibration import choose_threshold
        from ..evaluation import evaluate_model, load_classifier

        model = load_classifier(model_dir)[:2]
        result: dict[str, dict[str, Any]] = {}
        threshold = None
        if any(s != self.calibration_split for s in splits):
            val = evaluate_model(model, self.data[self.calibration_split], batch_size=self.batch_size, progress=False)
            threshold = choose_threshold(val.scores, val.labels, at="eer").value
            if self.calibration_split in splits:
                result[self.calibration_split] = {"families": val.families, "mean": val.mean}
        for split in splits:
            if split in result:
                continue
            t = None if split == self.calibration_split else threshold
            scored = evaluate_model(model, self.data[split], batch_size=self.batch_size, progress=False, threshold=t)
            result[split] = {"families": scored.families, "mean": scored.mean}
            if t is not None:
                result[split]["threshold"] = t
        return {s: result[s] for s in splits}


def mean_auc(split_scores: dict[str, Any]) -> float:
    """The headline number of one scored split: the mean AUC over its families."""
    return float(split_scores["mean"].get("auc", float("nan")))


def feature_similarity(scorer: BenchScorer, split: str, specialists, average_dir: Path) -> dict[str, Any]:
    """Linear CKA between each specialist's and the averaged model's class-token features, on real and fake images.

    Args:
        scorer (`BenchScorer`): holds the split's images.
        split (`str`): the split whose images are used.
        specialists (`list[tuple[str, Path]]`): (family, folder) of each specialist.
        average_dir (`Path`): the averaged model's folder.

    Returns:
        `dict`: `{"measure": ..., "specialists": {family: {"real", "fake_own_family", "fake_other_families"}}}`.
    """
    from ..evaluation import load_classifier, pixel_values

    data = scorer.data[split]
    average, processor, _ = load_classifier(average_dir)
    x = pixel_values(data, processor)
    labels, fams = data.labels, np.asarray(data.families)
    avg = backbone_features(average, x)
    out = {}
    for fam, folder in specialists:
        feats = backbone_features(load_classifier(folder)[0], x)
        real, own, other = labels == 0, fams == fam, (labels == 1) & (fams != fam)
        out[fam] = {
            "real": linear_cka(feats[real], avg[real]),
            "fake_own_family": linear_cka(feats[own], avg[own]),
            "fake_other_families": linear_cka(feats[other], avg[other]),
        }
    return {"measure": f"linear CKA, class-token features, {split} split", "specialists": out}


def backbone_features(model: Any, pixels: Any, *, batch_size: int = 128) -> Any:
    """The backbone's class-token features (after the final norm) of an image classifier.

    Args:
        model (`PreTrainedModel`): an image classifier.
        pixels (`torch.Tensor`): processed images.
        batch_size (`int`): images per forward pass.

    Returns:
        `torch.Tensor`: `(N, hidden)` features.
    """
    import torch

    model.eval()
    feats = []
    with torch.inference_mode():
        for start in range(0, pixels.shape[0], batch_size):
            out = model.base_model(pixel_values=pixels[start : start + batch_size])
            feats.append(out.last_hidden_state[:, 0].float())
    return torch.cat(feats)


def linear_cka(x: Any, y: Any) -> float:
    """Linear centred kernel alignment of two feature matrices over the same rows (1 = same up to rotation/scale)."""
    x = x.double() - x.double().mean(0)
    y = y.double() - y.double().mean(0)
    num = (y.T @ x).pow(2).sum()
    den = (x.T @ x).pow(2).sum().sqrt() * (y.T @ y).pow(2).sum().sqrt()
    return float(num / den) if den > 0 else float("nan")


__all__ = ["BenchScorer", "backbone_features", "feature_similarity", "linear_cka", "mean_auc"]
