"""The deepfake_detection metric module against scikit-learn, loaded by path through `evaluate`."""

from __future__ import annotations

import math

import numpy as np
import pytest
from sklearn.metrics import average_precision_score, roc_auc_score, roc_curve

from r2m_hf.evaluation import compute_metrics, load_metric


@pytest.fixture(scope="module")
def metric():
    return load_metric()


def _cases():
    rng = np.random.default_rng(0)
    for n in (2, 7, 50, 300):
        labels = rng.integers(0, 2, n)
        labels[:2] = (0, 1)
        yield labels, rng.random(n).astype(np.float32)  # float32: what the metric's features store
        yield labels, np.round(rng.random(n), 1).astype(np.float32)  # many ties


@pytest.mark.parametrize("labels,scores", list(_cases()))
def test_matches_sklearn(metric, labels, scores):
    out = metric.compute(predictions=scores.tolist(), references=labels.tolist())
    assert out["auc"] == pytest.approx(roc_auc_score(labels, scores), abs=1e-12)
    assert out["ap"] == pytest.approx(average_precision_score(labels, scores), abs=1e-12)
    fpr, tpr, thresholds = roc_curve(labels, scores)
    i = np.nanargmin(np.abs((1 - tpr) - fpr))  # DeepfakeBench's EER
    assert out["eer"] == pytest.approx(fpr[i], abs=1e-12)
    assert out["eer_threshold"] == pytest.approx(thresholds[i])
    assert out["acc"] == pytest.approx(np.mean((scores > 0.5) == labels))
    assert out["acc_eer"] == pytest.approx(np.mean((scores >= thresholds[i]) == labels))
    # The plain-python entry point runs the same code.
    plain = compute_metrics(scores, labels)
    assert {k: plain[k] for k in ("auc", "ap", "eer")} == pytest.approx({k: out[k] for k in ("auc", "ap", "eer")})


def test_video_auc_hand_example(metric):
    # video a: frames 0.9, 0.5 → 0.7 fake; b: 0.2, 0.4 → 0.3 real; c: 0.6 real; d: 0.8, 0.2, 0.2 → 0.4 fake
    scores = [0.9, 0.5, 0.2, 0.4, 0.6, 0.8, 0.2, 0.2]
    labels = [1, 1, 0, 0, 0, 1, 1, 1]
    videos = ["a", "a", "b", "b", "c", "d", "d", "d"]
    out = metric.compute(predictions=scores, references=labels, video_ids=videos)
    # positives (0.7, 0.4) vs negatives (0.3, 0.6): 3 of 4 pairs ranked right
    assert out["video_auc"] == pytest.approx(0.75)
    assert out["n_videos"] == 4
    assert out["auc"] == pytest.approx(roc_auc_score(labels, np.float32(scores)))


def test_single_class_is_nan_not_a_crash(metric):
    with pytest.warns(RuntimeWarning, match="only fake"):
        out = metric.compute(predictions=[0.2, 0.9, 0.7], references=[1, 1, 1])
    assert math.isnan(out["auc"]) and math.isnan(out["ap"]) and math.isnan(out["eer"])
    assert out["acc"] == pytest.approx(2 / 3)
    with pytest.warns(RuntimeWarning, match="only real"):
        assert math.isnan(compute_metrics([0.1], [0])["auc"])


def test_rejects_bad_labels():
    with pytest.raises(ValueError, match="0 \\(real\\) or 1 \\(fake\\)"):
        compute_metrics([0.1, 0.2], [0, 2])
