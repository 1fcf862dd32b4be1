"""``r2m-hf eval`` end to end on a tiny imagefolder dataset and a zoo specialist (same numbers as the API), its user
errors as one line, and a recipe's ``evaluation:`` section run by ``r2m-hf merge``."""

from __future__ import annotations

import json

import numpy as np
import pytest
from conftest import recipe, write_imagefolder, write_yaml
from PIL import Image

from r2m_hf.evaluation import evaluate_model


@pytest.fixture(scope="module")
def imagefolder(tmp_path_factory):
    """test/{real,fake}/ (32×32 PNGs) with a metadata.csv giving two forgery families, fs and fr."""
    return write_imagefolder(tmp_path_factory.mktemp("imagefolder"))


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


@pytest.fixture()
def broken_imagefolder(tmp_path, monkeypatch):
    """test/{real,fake}/ with 8 good 32×32 PNGs plus four unreadable files: random bytes named .png, a truncated
    JPEG, a text file named .jpg, and an 80×80 PNG over PIL's pixel limit (lowered to 64×64 here)."""
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 64 * 64)
    root = tmp_path / "broken"
    rng = np.random.default_rng(1)
    for label in ("real", "fake"):
        (root / "test" / label).mkdir(parents=True)
        for i in range(4):
            pixels = rng.integers(0, 120 if label == "real" else 255, (32, 32, 3), dtype=np.uint8)
            Image.fromarray(pixels).save(root / "test" / label / f"{i:02d}.png")
    (root / "test" / "fake" / "corrupt.png").write_bytes(rng.bytes(600))
    jpeg = root / "test" / "real" / "truncated.jpg"
    Image.fromarray(rng.integers(0, 255, (48, 48, 3), dtype=np.uint8)).save(jpeg, quality=95)
    jpeg.write_bytes(jpeg.read_bytes()[: jpeg.stat().st_size // 2])
    (root / "test" / "real" / "notes.jpg").write_text("not an image at all\n")
    Image.fromarray(np.zeros((80, 80, 3), dtype=np.uint8)).save(root / "test" / "fake" / "bomb.png")
    return root


def test_eval_refuses_unreadable_images_in_one_line(zoo, broken_imagefolder, cli):
    result = cli("eval", zoo.specialists[0], "--dataset", broken_imagefolder, "--device", "cpu")
    assert result.code == 2 and result.out == ""
    lines = result.err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("r2m-hf: error: "), result.err
    assert "4 of 12 images cannot be read" in lines[0] and "--skip-unreadable" in lines[0]
    assert sum(name in lines[0] for name in ("corrupt.png", "truncated.jpg", "notes.jpg", "bomb.png")) == 3


def test_eval_skip_unreadable_scores_the_rest_and_says_so(zoo, broken_imagefolder, tmp_path, cli):
    output = tmp_path / "e.json"
    result = cli(
        "eval", zoo.specialists[0], "--dataset", broken_imagefolder, "--device", "cpu", "--skip-unreadable",
        "--output", output,
    )  # fmt: skip
    assert result.code == 0, result.err
    assert "skipped 4 unreadable images" in result.out
    assert "%|" not in result.err  # no progress bar off a terminal
    saved = json.loads(output.read_text())
    assert saved["n_samples"] == 8 and saved["n_unreadable_skipped"] == 4
    assert {name.split("/")[-1] for name in saved["unreadable_skipped"]} == {
        "corrupt.png",
        "truncated.jpg",
        "notes.jpg",
        "bomb.png",
    }


def test_eval_off_a_terminal_draws_no_progress_bar(zoo, imagefolder, cli):
    result = cli("eval", zoo.specialists[0], "--dataset", imagefolder, "--device", "cpu")
    assert result.code == 0, result.err
    assert "%|" not in result.err and "Scoring" not in result.err


@pytest.fixture()
def calibrated(zoo, tmp_path):
    """A copy of the fs specialist whose config.json holds a calibrated threshold of 0.3."""
    import shutil

    from r2m_hf.detector.calibration import CONFIG_KEY

    folder = shutil.copytree(zoo.specialists[0], tmp_path / "calibrated")
    config = json.loads((folder / "config.json").read_text())
    config[CONFIG_KEY] = {"threshold": {"value": 0.3, "method": "eer", "n_real": 6, "n_fake": 6, "achieved_fpr": 0.1}}
    (folder / "config.json").write_text(json.dumps(config))
    return folder


def test_eval_reports_accuracy_at_the_calibrated_threshold(calibrated, imagefolder, tmp_path, cli):
    from r2m_hf.detector.calibration import accuracy_at
    from r2m_hf.evaluation.runner import family_metrics

    api = evaluate_model(str(calibrated), str(imagefolder), device="cpu", progress=False)
    assert api.threshold == 0.3 and api.threshold_source == "calibration"
    assert api.overall["acc_threshold"] == accuracy_at(api.scores, api.labels, 0.3)
    assert "acc" in api.overall  # accuracy at 0.5 stays beside it
    plain, _ = family_metrics(api.scores, api.labels, api.sample_families)
    names = np.array(api.sample_families, dtype=object)
    for family, metrics in api.families.items():
        rows = (names == family) | ((api.labels == 0) & ~np.isin(names, list(api.families)))
        assert metrics["acc_threshold"] == accuracy_at(api.scores[rows], api.labels[rows], 0.3)
        assert metrics["acc"] == plain[family]["acc"]
    assert "acc_threshold" in api.mean
    table = api.to_markdown()
    assert "| ACC@thr |" in table and "threshold 0.3 (the model's calibration)" in table

    output = tmp_path / "e.json"
    given = cli("eval", calibrated, "--dataset", imagefolder, "--threshold", "0.7", "--output", output)
    assert given.code == 0, given.err
    saved = json.loads(output.read_text())
    assert saved["threshold"] == 0.7 and saved["threshold_source"] == "given"
    assert saved["overall"]["acc_threshold"] == accuracy_at(api.scores, api.labels, 0.7)
    assert "ACC@thr" in given.out


def test_eval_without_a_threshold_has_no_acc_at_threshold(zoo, imagefolder):
    result = evaluate_model(str(zoo.specialists[0]), str(imagefolder), device="cpu", progress=False)
    assert result.threshold is None and "acc_threshold" not in result.overall
    assert "ACC@thr" not in result.to_markdown() and result.to_dict()["threshold"] is None


@pytest.mark.parametrize("value", ["1.5", "-0.1", "nan"])
def test_eval_threshold_outside_0_1_is_one_line(zoo, imagefolder, cli, value):
    result = cli("eval", zoo.specialists[0], "--dataset", imagefolder, "--threshold", value)
    assert result.code == 2 and result.out == ""
    lines = result.err.strip().splitlines()
    assert len(lines) == 1 and "threshold must be a number in [0, 1]" in lines[0], result.err


def test_recipe_evaluation_section_passes_skip_unreadable(monkeypatch):
    import r2m_hf.evaluation
    from r2m_hf.config import EvaluationSection
    from r2m_hf.merge import evaluate_section

    seen = {}
    monkeypatch.setattr(r2m_hf.evaluation, "evaluate_model", lambda *a, **kw: seen.update(kw))
    evaluate_section("m", EvaluationSection(dataset="d", skip_unreadable=True))
    assert seen["skip_unreadable"] is True
    evaluate_section("m", EvaluationSection(dataset="d"))
    assert seen["skip_unreadable"] is False
