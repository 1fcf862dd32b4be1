"""Thresholds from planted score distributions, the real-only mode, and the config.json round trip."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from r2m_hf.detector import Detector, accuracy_at, calibrate, choose_threshold, rates_at, read_calibration
from r2m_hf.errors import ConfigError, SourceError

from .conftest import astronaut


def planted(n_real=400, n_fake=400, seed=0):
    """Reals ~ N(0.3, 0.1²), fakes ~ N(0.7, 0.1²)."""
    rng = np.random.default_rng(seed)
    scores = np.concatenate([rng.normal(0.3, 0.1, n_real), rng.normal(0.7, 0.1, n_fake)])
    return scores, np.array([0] * n_real + [1] * n_fake)


def test_eer_and_max_accuracy_find_the_planted_thresholds():
    scores, labels = planted(6000, 2000)
    eer = choose_threshold(scores, labels, at="eer")
    assert eer.value == pytest.approx(0.5, abs=0.01)  # equal spreads: FPR = FNR halfway between the means
    assert eer.achieved_fpr == pytest.approx(1 - eer.achieved_tpr, abs=0.002)
    best = choose_threshold(scores, labels, at="max-accuracy")
    bayes = 0.5 + 0.1**2 / 0.4 * math.log(6000 / 2000)  # three reals per fake move the best cut up to 0.527
    assert best.value == pytest.approx(bayes, abs=0.015) and best.accuracy >= eer.accuracy
    assert best.accuracy == accuracy_at(scores, labels, best.value)
    assert (best.n_real, best.n_fake, best.method) == (6000, 2000, "max-accuracy")


def test_separable_scores_give_a_perfect_threshold():
    scores, labels = np.array([0.1, 0.2, 0.3, 0.7, 0.8]), np.array([0, 0, 0, 1, 1])
    for at in ("eer", "max-accuracy"):
        result = choose_threshold(scores, labels, at=at)
        assert 0.3 < result.value <= 0.7 and result.accuracy == 1.0
        assert (result.achieved_fpr, result.achieved_tpr) == (0.0, 1.0)


@pytest.mark.parametrize("target", [0.0, 0.01, 0.05, 0.1, 0.5])
def test_real_only_mode_meets_the_target_on_the_calibration_set(target):
    rng = np.random.default_rng(1)
    real = rng.beta(2, 5, 1000)
    result = choose_threshold(real, np.zeros(1000, dtype=int), target_fpr=target, dataset="faces", split="val")
    assert result.achieved_fpr <= target
    assert result.achieved_fpr == pytest.approx(target, abs=0.0015)  # the tightest such threshold
    assert result.value == pytest.approx(np.quantile(real, 1 - target), abs=0.01)
    assert result.achieved_tpr is None and result.accuracy is None and result.n_fake == 0
    assert "says nothing about how many fakes are caught" in result.statement
    assert "faces (val)" in result.statement


def test_target_fpr_with_ties_and_fakes():
    scores = np.array([0.2, 0.5, 0.5, 0.5, 0.9, 0.6, 0.95])
    labels = np.array([0, 0, 0, 0, 0, 1, 1])
    result = choose_threshold(scores, labels, target_fpr=0.25)  # one real of five may be flagged: only 0.9 is
    assert 0.5 < result.value <= 0.9 and result.achieved_fpr == 0.2
    assert rates_at(scores, labels, result.value) == (0.2, 1.0)
    loose = choose_threshold(scores, labels, target_fpr=0.9)  # four of five reals may be flagged
    assert 0.2 < loose.value <= 0.5 and loose.achieved_fpr == 0.8


def test_calibrate_writes_config_json_and_the_detector_uses_it(model_copy):
    before = json.loads((model_copy / "config.json").read_text())
    scores, labels = planted(100, 100)
    result = calibrate(model_copy, scores, labels, target_fpr=0.05, dataset_name="planted", split="validation")
    after = json.loads((model_copy / "config.json").read_text())
    stored = after.pop("r2m_hf")["threshold"]
    assert after == before  # every other key kept
    assert stored["value"] == result.value and stored["method"] == "target-fpr" and stored["target_fpr"] == 0.05
    assert (stored["dataset"], stored["split"], stored["n_real"], stored["n_fake"]) == (
        "planted",
        "validation",
        100,
        100,
    )
    assert read_calibration(model_copy) == result
    assert not list(model_copy.glob(".config.*"))  # no temporary file left
    detector = Detector.from_pretrained(model_copy, faces="none", device="cpu")
    assert (detector.threshold, detector.threshold_source) == (result.value, "calibrated")
    again = calibrate(model_copy, scores, labels, at="eer")  # recalibrating replaces the threshold
    assert read_calibration(model_copy).method == "eer" == again.method


def test_detector_calibrate_scores_writes_and_switches_threshold(model_copy, tmp_path):
    detector = Detector.from_pretrained(model_copy, faces="none", device="cpu")
    images = [astronaut().rotate(angle).resize((40, 40)) for angle in (0, 30, 60, 90)]
    scores = detector.score(images + [tmp_path / "missing.png"])
    assert scores.shape == (5,) and np.isfinite(scores[:4]).all() and np.isnan(scores[4])
    result = detector.calibrate(images + [tmp_path / "missing.png"], [0] * 5, target_fpr=0.25, dataset_name="tiny")
    assert result.achieved_fpr <= 0.25 and result.n_real == 4 and result.n_unscored == 1
    assert (detector.threshold, detector.threshold_source) == (result.value, "calibrated")
    assert read_calibration(model_copy) == result
    card = result.to_markdown()
    assert card.startswith("## Decision threshold") and "target false-positive rate 25.0%" in card
    assert "Images left out (no face or unreadable) | 1 |" in card
    with pytest.raises(ConfigError, match="expand folders first"):
        detector.score([tmp_path])
    with pytest.raises(ConfigError, match="2 inputs but 1 labels"):
        detector.calibrate(images[:2], [0], target_fpr=0.1)


def test_bad_calibration_inputs(tmp_path):
    scores, labels = planted(10, 10)
    cases = [
        ({"target_fpr": 0.05, "at": "eer"}, "exactly one"),
        ({}, "exactly one"),
        ({"target_fpr": 1.0}, r"target_fpr must be in \[0, 1\)"),
        ({"at": "auc"}, "use 'eer' or 'max-accuracy'"),
    ]
    for options, message in cases:
        with pytest.raises(ConfigError, match=message):
            choose_threshold(scores, labels, **options)
    with pytest.raises(ConfigError, match="needs real and fake images"):
        choose_threshold([0.1, 0.2], [0, 0], at="eer")
    with pytest.raises(ConfigError, match="needs real images"):
        choose_threshold([0.1, 0.2], [1, 1], target_fpr=0.1)
    with pytest.raises(ConfigError, match="NaN"):
        choose_threshold([0.1, math.nan], [0, 0], target_fpr=0.1)
    with pytest.raises(ConfigError, match="2 scores but 3 labels"):
        choose_threshold([0.1, 0.2], [0, 0, 1], target_fpr=0.1)
    with pytest.raises(ConfigError, match="0 \\(real\\) or 1 \\(fake\\)"):
        choose_threshold([0.1, 0.2], [0, 2], target_fpr=0.1)
    with pytest.raises(SourceError, match="no config.json"):
        calibrate(tmp_path, scores, labels, at="eer")
    with pytest.raises(ConfigError, match="threshold.value must be a number"):
        read_calibration({"r2m_hf": {"threshold": {"value": 3}}})
    assert read_calibration({"r2m_hf": {}}) is None and read_calibration({}) is None
