"""``r2m-hf demo`` end to end: builds its seeded zoo, merges it with R²M and the baselines, prints the table, and
leaves folders that load with stock transformers."""

from __future__ import annotations

import re

import numpy as np
import pytest
from conftest import load_model
from PIL import Image

from r2m_hf.demo import DEMO_RECIPES
from r2m_hf.recipe import MergeReport


def test_demo_verb_merges_every_recipe_into_loadable_folders(tmp_path, cli):
    from transformers import pipeline

    workdir = tmp_path / "demo"
    result = cli("demo", "--workdir", workdir, "--no-progress")
    assert result.code == 0, result.err
    assert "Traceback" not in result.err
    merged = workdir / "merged"
    rows = {}
    for line in result.out.splitlines():
        match = re.match(r"^  (.+?)\s+(\d+\.\d+)\s+(\S+)$", line)
        if match:
            rows[match[1]] = (float(match[2]), match[3])
    assert set(rows) == set(DEMO_RECIPES)
    folders = {path for _, path in rows.values()}
    assert folders == {str(p) for p in merged.iterdir()}
    for label, (error, folder) in rows.items():
        assert 0 < error < 2, (label, error)
        report = MergeReport.read(folder)
        assert report.merge_method == DEMO_RECIPES[label]["merge_method"]
        assert report.specialists == ["fs", "fr", "efs"]
        load_model(folder)
    assert f"closest to the ideal: {min(rows, key=lambda k: rows[k][0])}." in result.out
    assert "(see docs/method.md" in result.out

    classify = pipeline("image-classification", model=rows["r2m (defaults)"][1])
    image = Image.fromarray(np.random.default_rng(0).integers(0, 255, (32, 32, 3), dtype=np.uint8))
    predictions = classify(image)
    assert {p["label"] for p in predictions} == {"real", "fake"}
    assert sum(p["score"] for p in predictions) == pytest.approx(1.0, abs=1e-5)
