"""Entry points to the `deepfake_detection` metric: through `evaluate` (by path, offline) or as plain Python.

The math lives only in `metrics/deepfake_detection/deepfake_detection.py`; this module finds it and calls it.
"""

from __future__ import annotations

from pathlib import Path

from .metrics.deepfake_detection.deepfake_detection import deepfake_metrics

METRIC_DIR = Path(__file__).resolve().parent / "metrics" / "deepfake_detection"


def load_metric(**kwargs):
    """Load the deepfake-detection metric as an `evaluate.Metric`, by path (no Hub access needed).

    Args:
        **kwargs: passed to `evaluate.load` (e.g. `experiment_id`, `num_process`, `process_id`).

    Returns:
        `evaluate.EvaluationModule`: call `.compute(predictions=scores, references=labels, video_ids=...)`.
    """
    import evaluate

    return evaluate.load(str(METRIC_DIR), **kwargs)


def compute_metrics(scores, labels, video_ids=None) -> dict:
    """Compute AUC, EER, AP, ACC@0.5, ACC at the EER threshold (and video AUC) without `evaluate`.

    Args:
        scores (`array-like`): fake score of each sample.
        labels (`array-like`): 0 = real, 1 = fake.
        video_ids (`array-like`, *optional*): video id of each sample; adds `video_auc` and `n_videos`.

    Returns:
        `dict`: `auc, eer, eer_threshold, ap, acc, acc_eer, n, n_real, n_fake` (+ `video_auc, n_videos`); the
        ranking metrics are NaN, with a warning, when only one class is present.
    """
    return deepfake_metrics(scores, labels, video_ids=video_ids)
