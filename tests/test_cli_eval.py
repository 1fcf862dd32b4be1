"""``r2m-hf eval`` end to end on a tiny imagefolder dataset and a zoo specialist (same numbers as the API), its user
errors as one line, and a recipe's ``evaluation:`` section run by ``r2m-hf merge``."""

from __future__ import annotations

import json

import numpy as np
import pytest
from conftest import recipe, write_yaml
from PIL import Image

from r2m_hf.evaluation import evaluate_model


@pytest.fixture(scope="module")
def imagefolder(tmp_path_factory):
    """test/{real,fake}/ (32×32 PNGs) with a metadata.csv giving two forgery families, fs and fr."""
    root = tmp_path_factory.mktemp("imagefolder")
    rng = np.random.default_rng(0)
    lines = ["file_name,family"]
    for i in range(12):
        label = "real" if i < 6 else "fake"
        family = "real" if i < 6 else ("fs" if i % 2 else "fr")
        (root / "test" / label).mkdir(parents=True, exist_ok=True)
        pixels = rng.integers(0, 120 if label == "real" else 255, (32, 32, 3), dtype=np.uint8)
        Image.fromarray(pixels).save(root / "test" / label / f"{i:02d}.png")
        lines.append(f"{label}/{i:02d}.png,{family}")
    (root / "test" / "metadata.csv").write_text("\n".join(lines) + "\n")
    return root


@pytest.fixture(autouse=True)
def _datasets_cache(tmp_path, monkeypatch):
    import datasets

    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", str(tmp_path / "hf_datasets_cache"))


def test_eval_verb_prints_the_table_and_writes_the_same_metrics_as_the_api(zoo, imagefolder, tmp_path, cli):
    model = zoo.specialists[1]  # fr: stored as {0: FAKE, 1: REAL}
    output = tmp_path / "metrics" / "eval.json"
    result = cli("eval", model, "--dataset", imagefolder, "--device", "cpu", "--batch-size", "4", "--output", output)
    assert result.code == 0, result.err
    lines = result.out.splitlines()
    assert lines[0].startswith("| family | ")
    assert any(line.startswith("| fs | ") for line in lines) and any(line.startswith("| fr | ") for line in lines)
    assert any("**mean**" in line for line in lines) and any("all (pooled)" in line for line in lines)
    assert lines[-1] == f"metrics written to {output}"

    saved = json.loads(output.read_text())
    api = evaluate_model(str(model), str(imagefolder), batch_size=4, device="cpu", progress=False)
    assert saved == json.loads(json.dumps(api.to_dict()))
    assert saved["n_samples"] == 12 and saved["fake_index"] == 0 and set(saved["families"]) == {"fs", "fr"}
    assert result.out == api.to_markdown() + "\n" + lines[-1] + "\n"


def test_eval_verb_fake_label_and_max_samples_reach_the_api(zoo, imagefolder, tmp_path, cli):
    result = cli(
        "eval", zoo.specialists[0], "--dataset", imagefolder, "--max-samples", "5", "--output", tmp_path / "e.json"
    )
    assert result.code == 0, result.err
    assert json.loads((tmp_path / "e.json").read_text())["n_samples"] == 5

    flipped = cli(
        "eval", zoo.specialists[0], "--dataset", imagefolder, "--fake-label", "0", "--output", tmp_path / "f.json"
    )
    assert flipped.code == 0, flipped.err
    assert json.loads((tmp_path / "f.json").read_text())["fake_index"] == 0


@pytest.mark.parametrize(
    ("args", "fragment"),
    [
        (["--split", "validation"], "no split 'validation'"),
        (["--fake-label", "nonsense"], "fake_label 'nonsense'"),
    ],
)
def test_eval_user_errors_are_one_line(zoo, imagefolder, cli, args, fragment):
    result = cli("eval", zoo.specialists[0], "--dataset", imagefolder, *args)
    assert result.code == 2 and result.out == ""
    lines = result.err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("r2m-hf: error: ") and fragment in lines[0], result.err


def test_eval_of_a_missing_dataset_or_model_is_one_line(zoo, tmp_path, cli):
    missing = cli("eval", zoo.specialists[0], "--dataset", tmp_path / "absent")
    assert missing.code == 2 and missing.err.startswith("r2m-hf: error: ") and "absent" in missing.err
    no_model = cli("eval", tmp_path / "no-model", "--dataset", tmp_path)
    assert no_model.code == 2 and no_model.err.startswith("r2m-hf: error: ") and "no-model" in no_model.err
    assert len(missing.err.strip().splitlines()) == len(no_model.err.strip().splitlines()) == 1


def test_merge_runs_the_recipes_evaluation_section(zoo, imagefolder, tmp_path, cli):
    section = {"dataset": str(imagefolder), "batch_size": 4}
    config = write_yaml(tmp_path / "m.yaml", recipe(zoo, "average", evaluation=section))
    out = tmp_path / "out"
    result = cli("merge", config, out, "--no-progress")
    assert result.code == 0, result.err
    saved = json.loads((out / "eval_results.json").read_text())
    api = evaluate_model(str(out), str(imagefolder), batch_size=4, device="cpu", progress=False)
    assert saved["families"] == json.loads(json.dumps(api.to_dict()))["families"]
    assert api.to_markdown() in result.out
