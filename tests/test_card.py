"""r2m_hf.card: the merged model's README.md (metadata, model-index, body), offline."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import yaml
from huggingface_hub import EvalResult, ModelCard, metadata_load
from huggingface_hub.repocard_data import model_index_to_eval_results

from r2m_hf.card import collect_licence, write_model_card
from r2m_hf.card_evaluation import md_text
from r2m_hf.recipe import Recipe
from tests.conftest import write_yaml

SHA = "0123456789abcdef0123456789abcdef01234567"


def _hub(repo_id: str, revision: str = "main") -> dict:
    return {"reference": repo_id, "repo_id": repo_id, "revision": revision, "commit": SHA, "files": {}}


def _local(path: Path) -> dict:
    return {"reference": str(path), "path": str(path), "files": {}}


def _input(folder: Path, licence: str | None) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    if licence is not None:
        (folder / "README.md").write_text(f"---\nlicense: {licence}\ntags:\n- vit\n---\n# input\n")
    return folder


def _recipe(base: dict, *sources: dict) -> dict:
    return {
        "r2m_hf_version": "0.1.0",
        "merge_method": "r2m",
        "base_model": base,
        "models": [
            {"name": f"m{i}", "kind": "full", "fake_index": 1, "parameters": {}, "source": s}
            for i, s in enumerate(sources)
        ],
        "parameters": {"alpha": 0.6, "head": "mean"},
        "dtype": "float32",
        "out_dtype": "float32",
    }


# A report as r2m-hf 0.1 wrote it: the method's warnings inside its diagnostics, no top-level "warnings".
REPORT = {
    "merge_method": "r2m",
    "architecture": "ViTForImageClassification",
    "specialists": ["m0", "m1"],
    "tensors": 40,
    "files": ["model.safetensors"],
    "seconds": 1.5,
    "device": "cpu",
    "processes": 1,
    "notes": ["base_model taken from models[0]'s adapter_config.json"],
    "image_processor": "from base_model",
    "method": {
        "gram_eigenvalues": [5.0, 1.0, 0.5],
        "spectral_gap": 0.8,
        "coefficients": [0.34, 0.33, 0.33],
        "core_norm": 1.9,
        "residual_norm": 1.4,
        "eta": 0.79,
        "eta_mode": "relative",
        "residual_norms_before": [2.4, 2.4, 2.4],
        "residual_norms_after": [2.1, 2.1, 2.1],
        "ranks_kept": {"per_matrix": {}, "min": 3, "max": 3, "mean": 3.0},
        "residual_dropped": False,
        "warnings": ["spectral gap is small"],
    },
}

EVALUATION = {
    "dataset": "org/df40-mini",
    "split": "test",
    "n_samples": 20,
    "model": "out",
    "fake_index": 1,
    "notes": [],
    "families": {
        "fs": {"auc": 1.0, "eer": 0.0, "eer_threshold": 0.51, "ap": 1.0, "acc": 0.9, "acc_eer": 1.0, "n": 14},
        "fr": {"auc": 0.8, "eer": 0.25, "eer_threshold": 0.49, "ap": 0.7, "acc": 0.6, "acc_eer": 0.7, "n": 14},
    },
    "mean": {"auc": 0.9, "eer": 0.125, "ap": 0.85, "acc": 0.75, "acc_eer": 0.85, "n_families": 2},
    "overall": {"auc": 0.88, "eer": 0.2, "eer_threshold": 0.4987, "ap": 0.8, "acc": 0.7, "acc_eer": 0.8, "n": 20},
}


def _folder(tmp_path: Path, recipe: dict, evaluation: dict | None = None) -> Path:
    out = tmp_path / "merged"
    out.mkdir()
    write_yaml(out / "merge_config.yaml", recipe)
    (out / "merge_report.json").write_text(json.dumps(REPORT))
    if evaluation is not None:
        (out / "eval_results.json").write_text(json.dumps(evaluation))
    return out


def test_card_of_a_real_merge_parses_and_carries_the_recipe(zoo, tmp_path: Path) -> None:
    from r2m_hf.merge import merge
    from r2m_hf.recipe import MergeReport

    config = write_yaml(
        tmp_path / "m.yaml",
        {
            "merge_method": "r2m",
            "base_model": str(zoo.base),
            "models": [{"model": str(p), "name": n} for p, n in zip(zoo.specialists, zoo.names, strict=True)],
        },
    )
    out = merge(config, tmp_path / "out", progress=False).output_dir
    readme = out / "README.md"
    card = ModelCard.load(readme)
    meta = metadata_load(readme)

    assert meta["pipeline_tag"] == "image-classification" and meta["library_name"] == "transformers"
    assert meta["base_model_relation"] == "merge"
    assert meta["tags"][:3] == ["deepfake-detection", "model-merging", "r2m"]
    assert "base_model" not in meta and "license" not in meta  # local inputs, no input declares a licence
    assert "model-index" not in meta and not (out / "eval_auc.png").exists()
    assert card.data.to_dict() == meta
    text = card.text
    assert "# out\n" in text and ".tmp-" not in text
    assert "softmax(logits)[1]" in text and 'pipeline("image-classification"' in text
    rows = MergeReport.read(out).summary_rows()
    assert rows and all(f"| {md_text(label)} | {md_text(value)} |" in text for label, value in rows)  # the method's
    assert "A deepfake detector made by merging 3 specialist detectors with `r2m` (r2m-hf): " in text
    recipe = text.split("```yaml\n", 1)[1].split("```", 1)[0]
    assert yaml.safe_load(recipe) == yaml.safe_load((out / "merge_config.yaml").read_text())


def test_card_metadata_with_hub_inputs_and_model_index(tmp_path: Path) -> None:
    recipe = _recipe(_hub("org/backbone"), _hub("org/vit-fs", "v1"), _local(tmp_path / "fr"), _hub("org/vit-efs"))
    out = _folder(tmp_path, recipe, EVALUATION)

    path = write_model_card(out, repo_id="org/merged")
    card = ModelCard.load(path)
    data = card.data.to_dict()

    assert data["base_model"] == ["org/backbone", "org/vit-fs", "org/vit-efs"]  # the local input is skipped
    assert data["base_model_relation"] == "merge"
    results = model_index_to_eval_results(data["model-index"])[1]
    assert all(isinstance(r, EvalResult) for r in results) and card.data.eval_results
    assert {r.dataset_config for r in results} == {"fs", "fr", "mean"}
    assert {r.metric_type for r in results} == {"roc_auc", "eer", "average_precision", "accuracy"}
    assert all(r.task_type == "image-classification" and r.dataset_type == "org/df40-mini" for r in results)
    auc = {r.dataset_config: r.metric_value for r in results if r.metric_type == "roc_auc"}
    assert auc == {"fs": 1.0, "fr": 0.8, "mean": 0.9}
    assert data["model-index"][0]["name"] == "merged"

    text = card.text
    assert 'model="org/merged"' in text
    assert "| fs | 1.0000 | 0.0000 | 1.0000 | 0.9000 | 14 |" in text and "| **mean** | 0.9000 |" in text
    assert "![AUC per forgery family](eval_auc.png)" in text
    assert (out / "eval_auc.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "**0.4987**" in text and "in-domain" in text
    assert "- spectral gap is small" in text  # an old report's warnings, read from its method diagnostics
    assert "- base_model taken from models\\[0]'s adapter_config.json" in text  # escaped: notes are input text
    assert "| real-core coefficients c | \\[0.3400, 0.3300, 0.3300] |" in text


def test_a_renamed_recipe_key_is_an_error_not_a_question_mark(tmp_path: Path) -> None:
    from r2m_hf.errors import ConfigError

    recipe = _recipe(_hub("org/backbone"), _hub("org/a"), _hub("org/b"))
    recipe["models"][1]["fake_idx"] = recipe["models"][1].pop("fake_index")
    out = _folder(tmp_path, recipe)
    with pytest.raises(ConfigError, match=r"models\.1\.fake_index: Field required.*models\.1\.fake_idx: unknown key"):
        write_model_card(out)
    assert not (out / "README.md").exists()


def test_undefined_metrics_are_left_out_of_the_model_index(tmp_path: Path) -> None:
    evaluation = json.loads(json.dumps(EVALUATION))
    evaluation["families"]["fr"]["auc"] = None  # NaN on disk becomes null
    out = _folder(tmp_path, _recipe(_local(tmp_path / "b"), _local(tmp_path / "a")))

    write_model_card(out, eval_results=evaluation)
    results = ModelCard.load(out / "README.md").data.eval_results
    assert ("fr", "roc_auc") not in {(r.dataset_config, r.metric_type) for r in results}
    assert all(math.isfinite(r.metric_value) for r in results)
    assert (out / "eval_auc.png").is_file()


@pytest.mark.parametrize(
    ("licences", "expected", "conflict"),
    [(("mit", "mit", None), "mit", False), (("mit", "apache-2.0", "mit"), "other", True), ((None, None), None, False)],
)
def test_licence_is_carried_from_the_inputs(tmp_path: Path, licences, expected, conflict) -> None:
    sources = [_local(_input(tmp_path / f"in{i}", lic)) for i, lic in enumerate(licences)]
    recipe = _recipe(sources[0], *sources[1:])
    out = _folder(tmp_path, recipe)

    if conflict:
        with pytest.warns(UserWarning, match="licences differ"):
            write_model_card(out)
    else:
        write_model_card(out)
    meta = metadata_load(out / "README.md")
    assert meta.get("license") == expected
    assert collect_licence(Recipe.model_validate(recipe)).conflict is conflict
    assert ("The inputs' licences differ" in (out / "README.md").read_text()) is conflict


def test_no_token_is_written(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    token = "hf_secretTokenThatMustNotLeak000"
    monkeypatch.setenv("HF_TOKEN", token)
    out = _folder(tmp_path, _recipe(_hub("org/backbone"), _hub("org/a"), _hub("org/b")), EVALUATION)
    write_model_card(out, repo_id="org/merged")
    assert all(token.encode() not in p.read_bytes() for p in out.iterdir())


def test_missing_recipe_is_a_clear_error(tmp_path: Path) -> None:
    from r2m_hf.errors import OutputError

    with pytest.raises(OutputError, match="no merge_config.yaml"):
        write_model_card(tmp_path)


# --------------------------------------------------------------------------------------------------------------------
# A threshold calibrated on the merged folder (``r2m-hf calibrate``) gets its section; DeepfakeBench detectors say
# which model class they need.


def test_a_calibrated_folder_gets_its_decision_threshold_section(tmp_path: Path) -> None:
    from r2m_hf.detector import read_calibration
    from r2m_hf.detector.calibration import choose_threshold, write_calibration

    out = _folder(tmp_path, _recipe(_hub("org/backbone"), _hub("org/a"), _hub("org/b")), EVALUATION)
    (out / "config.json").write_text(json.dumps({"model_type": "vit"}))
    text = write_model_card(out).read_text()
    assert "## Decision threshold" not in text  # not calibrated: the card says so only in its generic advice

    scores, labels = [0.1, 0.2, 0.3, 0.35, 0.6, 0.7, 0.8, 0.9], [0, 0, 0, 1, 0, 1, 1, 1]
    hostile = "org/val</td><script>x</script>"
    write_calibration(out, choose_threshold(scores, labels, at="eer", dataset=hostile, split="validation"))
    calibration = read_calibration(out)
    text = write_model_card(out).read_text()
    section = text.split("## Decision threshold\n", 1)[1].split("\n## ", 1)[0]
    assert text.index("## Decision threshold") < text.index("## Merge diagnostics")  # before the diagnostics
    assert f"| {md_text('Threshold (fake when P(fake) ≥ it)')} | {calibration.value:.4g} |" in section
    assert "4 real, 4 fake images" in section and "Chosen at the equal error rate on 4 real and 4 fake" in section
    assert "validation" in section and "<script>" not in text  # the data it was chosen on, escaped
    assert "`r2m-hf predict`" in section
    assert text.count("## Decision threshold") == 1


def test_a_specialists_threshold_is_not_inherited_by_the_merge(zoo, tmp_path: Path) -> None:
    import shutil

    from r2m_hf.detector.calibration import CONFIG_KEY, choose_threshold, write_calibration
    from r2m_hf.merge import merge

    calibrated = tmp_path / "calibrated"
    shutil.copytree(zoo.specialists[0], calibrated)
    write_calibration(calibrated, choose_threshold([0.1, 0.9], [0, 1], at="eer"))
    models = [{"model": str(calibrated), "name": "cal"}, *({"model": str(p)} for p in zoo.specialists[1:])]
    config = write_yaml(tmp_path / "m.yaml", {"merge_method": "r2m", "base_model": str(zoo.base), "models": models})
    out = merge(config, tmp_path / "out", progress=False).output_dir
    assert CONFIG_KEY not in json.loads((out / "config.json").read_text())
    assert "## Decision threshold" not in (out / "README.md").read_text()


def test_a_deepfakebench_merge_card_names_its_model_class(tmp_path: Path) -> None:
    from r2m_hf.deepfakebench import MODEL_CLASS_NOTE

    out = _folder(tmp_path, _recipe(_hub("org/backbone"), _hub("org/a"), _hub("org/b")))
    text = write_model_card(out, repo_id="org/merged").read_text()
    assert MODEL_CLASS_NOTE not in text and 'pipeline("image-classification", model="org/merged")' in text
    report = json.loads((out / "merge_report.json").read_text())
    (out / "merge_report.json").write_text(
        json.dumps({**report, "architecture": "DeepfakeBenchCLIPForImageClassification"})
    )
    text = write_model_card(out, repo_id="org/merged").read_text()
    assert MODEL_CLASS_NOTE in text
    assert 'pipeline("image-classification", model="org/merged", trust_remote_code=True)' in text
