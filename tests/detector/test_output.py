"""Prediction files: JSON lines and CSV carry the same records, and a bad output name is a one-line error."""

from __future__ import annotations

import json

import pytest

from r2m_hf.detector import FaceBox, FrameScore, Prediction, read_predictions, write_predictions
from r2m_hf.errors import ConfigError

FACE = FaceBox(10.123, 20.0, 50.0, 70.0, 0.99, ((1.0, 2.0),) * 5, 0.7)
PREDICTIONS = [
    Prediction("a.jpg", "image", 0.7, "fake", 0.6, "calibrated", faces=[FACE]),
    Prediction("b.mp4", "video", 0.2, "real", 0.6, "calibrated", frames=[FrameScore(3, 0.3, 0.2, [FACE])]),
    Prediction("c.png", "image", None, None, 0.6, "calibrated", error="no face found (mtcnn)"),
    Prediction('notes, "quoted".txt', "other", None, None, 0.6, "calibrated", error="not an image or video file"),
]


@pytest.mark.parametrize("suffix", [".jsonl", ".csv"])
def test_round_trip(tmp_path, suffix):
    path = write_predictions(iter(PREDICTIONS), tmp_path / "out" / f"preds{suffix}")
    records = read_predictions(path)
    assert records == [json.loads(json.dumps(p.to_dict())) for p in PREDICTIONS]
    assert records[0]["faces"][0] == {
        "x0": 10.12, "y0": 20.0, "x1": 50.0, "y1": 70.0, "score": 0.99, "landmarks": [[1.0, 2.0]] * 5,
        "fake_probability": 0.7,
    }  # fmt: skip
    assert records[1]["frames"][0]["index"] == 3 and records[2]["frames"] is None


def test_unknown_output_suffix_is_a_config_error(tmp_path):
    with pytest.raises(ConfigError, match=r"use a \.jsonl or \.csv file name"):
        write_predictions(PREDICTIONS, tmp_path / "preds.txt")
