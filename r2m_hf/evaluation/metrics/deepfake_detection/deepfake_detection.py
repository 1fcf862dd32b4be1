"""Deepfake-detection metrics as an `evaluate` metric module: AUC, EER, AP, ACC and video AUC.

This file is the one place where the metric math lives. `evaluate.load(<this directory>)` loads it by path (hub
metrics are unreachable offline), and `r2m_hf.evaluation.compute_metrics` imports its functions directly. It follows
the DeepfakeBench / DF40 conventions: label 0 = real, 1 = fake, the score is the fake probability and fake is the
positive class. It uses numpy only, so it must not import anything from `r2m_hf` or scikit-learn.
"""

from __future__ import annotations

import math
import warnings

import datasets
import evaluate
import numpy as np

_DESCRIPTION = """Frame-level AUC, EER, AP, ACC@0.5 and ACC at the EER threshold of a binary deepfake detector, plus
video-level AUC when `video_ids` are given (video score = mean frame score, video label = rounded mean label)."""

_KWARGS_DESCRIPTION = """
Args:
    predictions (`list` of `float`): fake score of each sample, e.g. softmax(logits)[fake index].
    references (`list` of `int`): label of each sample, 0 = real, 1 = fake.
    video_ids (`list`, *optional*): video id of each sample; adds `video_auc` and `n_videos`.
Returns:
    auc (`float`): area under the ROC curve (fake positive); NaN when only one class is present.
    eer (`float`): false-positive rate at the ROC threshold where |FNR - FPR| is smallest; NaN with one class.
    eer_threshold (`float`): that threshold (a sample is called fake when its score >= it).
    ap (`float`): average precision (fake positive); NaN with one class.
    acc (`float`): accuracy of `score > 0.5` (the argmax of a two-class softmax).
    acc_eer (`float`): accuracy of `score >= eer_threshold`, the calibrated threshold; NaN with one class.
    n, n_real, n_fake (`int`): sample counts.
    video_auc (`float`), n_videos (`int`): only when `video_ids` is given.
Examples:
    >>> metric = evaluate.load("r2m_hf/evaluation/metrics/deepfake_detection")
    >>> metric.compute(predictions=[0.1, 0.9, 0.4], references=[0, 1, 1])["auc"]
    1.0
"""

_CITATION = """@inproceedings{yan2023deepfakebench,
  title={DeepfakeBench: A Comprehensive Benchmark of Deepfake Detection},
  author={Yan, Zhiyuan and Zhang, Yong and Yuan, Xinhang and Lyu, Siwei and Wu, Baoyuan},
  booktitle={NeurIPS Datasets and Benchmarks},
  year={2023}
}"""

NAN = float("nan")


def _check_inputs(scores, labels) -> tuple[np.ndarray, np.ndarray]:
    scores = np.asarray(scores, dtype=np.float64).reshape(-1)
    labels = np.asarray(labels).reshape(-1)
    if scores.shape != labels.shape:
        raise ValueError(f"predictions ({scores.size}) and references ({labels.size}) differ in length")
    if not np.all(np.isfinite(scores)):
        raise ValueError("predictions contain NaN or infinite scores")
    if labels.size and not np.isin(labels, (0, 1)).all():
        bad = sorted({v.item() for v in np.unique(labels)} - {0, 1})
        raise ValueError(f"references must be 0 (real) or 1 (fake), got {bad[:5]}")
    return scores, labels.astype(np.int64)


def binary_clf_curve(labels: np.ndarray, scores: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Count true and false positives at each distinct score, from the highest score down.

    Args:
        labels (`np.ndarray`): 0/1 labels, 1 = fake (positive).
        scores (`np.ndarray`): fake scores.

    Returns:
        `tuple`: `(fps, tps, thresholds)`; a sample is positive at threshold t when its score >= t.
    """
    order = np.argsort(scores, kind="mergesort")[::-1]
    scores, labels = scores[order], labels[order]
    # Tied scores form one operating point: keep only the last index of each run of equal scores.
    last_of_run = np.r_[np.flatnonzero(np.diff(scores)), labels.size - 1]
    tps = np.cumsum(labels)[last_of_run].astype(np.float64)
    fps = 1.0 + last_of_run - tps
    return fps, tps, scores[last_of_run]


def roc_curve(labels, scores, drop_intermediate: bool = True) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """ROC curve with fake as the positive class, point for point as `sklearn.metrics.roc_curve`.

    Args:
        labels (`array-like`): 0/1 labels, 1 = fake; both classes must be present.
        scores (`array-like`): fake scores.
        drop_intermediate (`bool`): drop collinear points as scikit-learn does by default (DeepfakeBench's EER is
            read off that curve).

    Returns:
        `tuple`: `(fpr, tpr, thresholds)`, starting at `(0, 0, inf)`.
    """
    scores, labels = _check_inputs(scores, labels)
    fps, tps, thresholds = binary_clf_curve(labels, scores)
    if drop_intermediate and fps.size > 2:
        keep = np.flatnonzero(np.r_[True, np.logical_or(np.diff(fps, 2), np.diff(tps, 2)), True])
        fps, tps, thresholds = fps[keep], tps[keep], thresholds[keep]
    fps, tps, thresholds = np.r_[0.0, fps], np.r_[0.0, tps], np.r_[np.inf, thresholds]
    return fps / fps[-1], tps / tps[-1], thresholds


def _both_classes(labels: np.ndarray, what: str) -> bool:
    n_fake = int(labels.sum())
    if 0 < n_fake < labels.size:
        return True
    only = "no samples" if labels.size == 0 else ("only fake" if n_fake else "only real") + " samples"
    warnings.warn(
        f"{what}: {only}, so AUC, EER and AP are undefined (NaN); add samples of both classes",
        RuntimeWarning,
        stacklevel=3,
    )
    return False


def auc_score(labels, scores) -> float:
    """Area under the ROC curve (trapezoidal, ties count half, as `sklearn.metrics.roc_auc_score`)."""
    scores, labels = _check_inputs(scores, labels)
    if not _both_classes(labels, "AUC"):
        return NAN
    fpr, tpr, _ = roc_curve(labels, scores, drop_intermediate=False)
    return float(np.sum(np.diff(fpr) * (tpr[1:] + tpr[:-1]) / 2.0))


def eer_score(labels, scores) -> tuple[float, float]:
    """Equal error rate: the FPR at the ROC threshold where |FNR − FPR| is smallest (first such point).

    Returns:
        `tuple`: `(eer, threshold)`; both NaN when only one class is present.
    """
    scores, labels = _check_inputs(scores, labels)
    if not _both_classes(labels, "EER"):
        return NAN, NAN
    fpr, tpr, thresholds = roc_curve(labels, scores)
    i = int(np.argmin(np.abs((1.0 - tpr) - fpr)))
    return float(fpr[i]), float(thresholds[i])


def average_precision(labels, scores) -> float:
    """Average precision Σ (Rₖ − Rₖ₋₁) Pₖ over distinct thresholds, as `sklearn.metrics.average_precision_score`."""
    scores, labels = _check_inputs(scores, labels)
    if not _both_classes(labels, "AP"):
        return NAN
    fps, tps, _ = binary_clf_curve(labels, scores)
    precision = tps / (tps + fps)
    recall = tps / tps[-1]
    return float(np.sum(np.diff(np.r_[0.0, recall]) * precision))


def accuracy(labels, scores, threshold: float = 0.5, inclusive: bool = False) -> float:
    """Fraction of samples classified right when a sample is fake iff its score > `threshold` (>= if inclusive)."""
    scores, labels = _check_inputs(scores, labels)
    if labels.size == 0:
        return NAN
    predicted = scores >= threshold if inclusive else scores > threshold
    return float(np.mean(predicted.astype(np.int64) == labels))


def video_level(scores, labels, video_ids) -> tuple[np.ndarray, np.ndarray]:
    """Pool frames into videos: score = mean frame score, label = mean frame label rounded half up.

    Returns:
        `tuple`: `(video_scores, video_labels)` in order of first appearance of each video.
    """
    scores, labels = _check_inputs(scores, labels)
    ids = np.asarray([str(v) for v in video_ids])
    if ids.size != scores.size:
        raise ValueError(f"video_ids ({ids.size}) and predictions ({scores.size}) differ in length")
    _, first, inverse = np.unique(ids, return_index=True, return_inverse=True)
    counts = np.bincount(inverse)
    mean_scores = np.bincount(inverse, weights=scores) / counts
    mean_labels = np.bincount(inverse, weights=labels) / counts
    if np.any((mean_labels > 0) & (mean_labels < 1)):
        warnings.warn(
            "some videos mix real and fake frames; their label is the rounded mean frame label",
            RuntimeWarning,
            stacklevel=2,
        )
    order = np.argsort(first, kind="mergesort")
    return mean_scores[order], np.floor(mean_labels[order] + 0.5).astype(np.int64)


def deepfake_metrics(scores, labels, video_ids=None) -> dict:
    """All frame-level metrics (and video AUC when `video_ids` is given) of one set of samples.

    Args:
        scores (`array-like`): fake scores.
        labels (`array-like`): 0 = real, 1 = fake.
        video_ids (`array-like`, *optional*): one id per sample.

    Returns:
        `dict`: `auc, eer, eer_threshold, ap, acc, acc_eer, n, n_real, n_fake` (+ `video_auc, n_videos`).
    """
    scores, labels = _check_inputs(scores, labels)
    with warnings.catch_warnings():
        # One warning for the whole set instead of one per metric.
        warnings.simplefilter("ignore", RuntimeWarning)
        auc = auc_score(labels, scores)
        eer, threshold = eer_score(labels, scores)
        ap = average_precision(labels, scores)
    defined = _both_classes(labels, "deepfake metrics")
    result = {
        "auc": auc,
        "eer": eer,
        "eer_threshold": threshold,
        "ap": ap,
        "acc": accuracy(labels, scores, 0.5),
        "acc_eer": accuracy(labels, scores, threshold, inclusive=True) if defined else NAN,
        "n": int(labels.size),
        "n_real": int((labels == 0).sum()),
        "n_fake": int(labels.sum()),
    }
    if video_ids is not None:
        video_scores, video_labels = video_level(scores, labels, video_ids)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            result["video_auc"] = auc_score(video_labels, video_scores)
        if math.isnan(result["video_auc"]) and defined:
            warnings.warn(
                "video AUC: all videos have the same label, so it is undefined (NaN)", RuntimeWarning, stacklevel=2
            )
        result["n_videos"] = int(video_labels.size)
    return result


@evaluate.utils.file_utils.add_start_docstrings(_DESCRIPTION, _KWARGS_DESCRIPTION)
class DeepfakeDetection(evaluate.Metric):
    """`evaluate` wrapper of :func:`deepfake_metrics`."""

    def _info(self) -> evaluate.MetricInfo:
        return evaluate.MetricInfo(
            description=_DESCRIPTION,
            citation=_CITATION,
            inputs_description=_KWARGS_DESCRIPTION,
            features=datasets.Features(
                {"predictions": datasets.Value("float32"), "references": datasets.Value("int32")}
            ),
            reference_urls=["https://github.com/SCLBD/DeepfakeBench"],
        )

    def _compute(self, predictions, references, video_ids=None) -> dict:
        return deepfake_metrics(predictions, references, video_ids=video_ids)
