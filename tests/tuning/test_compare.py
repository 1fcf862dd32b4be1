"""`compare`: several detectors on one split, scored by the evaluation runner, in one table and one plot."""

from __future__ import annotations

import csv
import json
import shutil

import numpy as np
import pytest
import torch

from r2m_hf.errors import ConfigError
from r2m_hf.evaluation import evaluate_model
from r2m_hf.tuning import compare

from .conftest import save_split

torch.set_num_threads(1)


@pytest.fixture(scope="module")
def videos(planted, tmp_path_factory):
    """The planted split with a video id per row: pairs of rows of one label form a video."""
    import datasets

    folder = tmp_path_factory.mktemp("videos")
    save_split(folder / "plain", planted.images, planted.labels, ["a" if i % 2 else "b" for i in range(96)])
    split = datasets.load_from_disk(str(folder / "plain"))["validation"]
    ids = [""] * len(planted.labels)
    for label in (0, 1):
        for rank, row in enumerate(np.flatnonzero(planted.labels == label)):
            ids[row] = f"{label}-{rank // 2}"
    datasets.DatasetDict({"validation": split.add_column("video_id", ids)}).save_to_disk(str(folder / "data"))
    return folder / "data"


def test_compare(planted, zoo, videos, tmp_path):
    # The planted model again, with a calibrated threshold in its config: the median fake score of the split, which
    # is where the labels were cut, so accuracy at the threshold is 1 while its scores all sit on one side of 0.5.
    scores = evaluate_model(str(planted.planted_model), str(planted.data), split="validation", progress=False).scores
    threshold = float(np.median(scores))
    calibrated = tmp_path / "calibrated"
    shutil.copytree(planted.planted_model, calibrated)
    config = json.loads((calibrated / "config.json").read_text())
    config["r2m_hf"] = {"threshold": {"value": threshold, "split": "validation"}}
    (calibrated / "config.json").write_text(json.dumps(config))

    models = [str(planted.planted_model), str(zoo.specialists[1]), str(calibrated)]
    result = compare(models, str(videos), split="validation", output_dir=tmp_path / "out", progress=False)

    assert [m.name for m in result.models] == ["planted-model", "fr", "calibrated"]
    planted_scores, specialist, with_threshold = result.models
    assert planted_scores.result.overall["auc"] == 1.0 and planted_scores.threshold is None
    direct = evaluate_model(str(zoo.specialists[1]), str(videos), split="validation", progress=False)
    np.testing.assert_array_equal(specialist.result.scores, direct.scores)  # the runner's scores, as they are
    assert specialist.result.overall == pytest.approx(direct.overall, nan_ok=True)
    assert with_threshold.threshold == threshold
    assert with_threshold.acc_threshold["overall"] == 1.0 and with_threshold.result.overall["acc"] == 0.5
    expected = float(np.mean((with_threshold.result.scores >= threshold) == with_threshold.result.labels))
    assert with_threshold.acc_threshold["overall"] == expected
    assert set(with_threshold.acc_threshold) == {"overall", "mean", "a", "b"}
    assert "video_auc" in specialist.result.overall

    table = result.markdown
    header = next(line for line in table.splitlines() if line.startswith("| rows |"))
    assert header == "| rows | model | AUC | EER | AP | ACC@0.5 | ACC@τ | τ | Video AUC | n |"
    body = [line for line in table.splitlines() if line.startswith("| ") and "---" not in line][1:]
    assert len(body) == 3 * 4  # mean, a, b, pooled for each model
    assert body[0].startswith("| **mean** | planted-model | 1.0000 |")
    calibrated_mean = next(line for line in body if "| calibrated |" in line)
    assert f"| 1.0000 | {threshold:.4f} |" in calibrated_mean and "| — | — |" in body[1]
    with open(result.files["csv"], newline="") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 12 and {r["rows"] for r in rows} == {"mean", "a", "b", "all (pooled)"}
    saved = json.loads(result.files["json"].read_text())
    assert [m["name"] for m in saved["models"]] == ["planted-model", "fr", "calibrated"]
    assert result.files["plot"].stat().st_size > 1000
    assert result.files["markdown"].read_text() == table


def test_compare_needs_models(planted, tmp_path):
    with pytest.raises(ConfigError, match="at least one model"):
        compare([], str(planted.data), output_dir=tmp_path)
