"""r2m_hf.recipe: the typed recipe and report round-trip, read what 0.1 wrote, and refuse renamed or missing keys."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import yaml

from r2m_hf.errors import ConfigError, OutputError
from r2m_hf.methods.registry import get_method
from r2m_hf.recipe import RECIPE_FILE, REPORT_FILE, MergeReport, ModelRecord, Recipe, SourceRecord

OLD = Path(__file__).parent / "data" / "v0.1"
SHA = "0123456789abcdef0123456789abcdef01234567"


def _recipe() -> Recipe:
    hub = SourceRecord(reference="org/fs@v1", repo_id="org/fs", revision="v1", commit=SHA, files={"a": "b"})
    local = SourceRecord(reference="fr", path="/models/fr")
    return Recipe(
        r2m_hf_version="0.2.0",
        merge_method="ties",
        base_model=None,
        models=[
            ModelRecord(name="fs", kind="full", fake_index=1, parameters={"weight": 2.0}, source=hub),
            ModelRecord(name="fr", kind="lora", fake_index=0, fake_label="FAKE", parameters={}, source=local,
                        adapter_base=SourceRecord(reference="base", path="/models/base")),
        ],
        parameters={"density": 0.2, "lambda": 1.0, "missing": None, "head": "mean"},
        dtype="float32",
        out_dtype="bfloat16",
    )  # fmt: skip


def test_recipe_round_trip_and_layout(tmp_path: Path) -> None:
    recipe = _recipe()
    path = recipe.write(tmp_path)
    assert path == tmp_path / RECIPE_FILE
    assert Recipe.read(tmp_path) == recipe

    data = yaml.safe_load(path.read_text())
    assert list(data) == ["r2m_hf_version", "merge_method", "base_model", "models", "parameters", "dtype", "out_dtype"]
    assert data["base_model"] is None  # explicit, as 0.1 wrote it
    assert data["parameters"]["missing"] is None  # a method parameter set to None is kept
    assert "fake_label" not in data["models"][0] and data["models"][1]["fake_label"] == "FAKE"
    assert list(data["models"][0]["source"]) == ["reference", "repo_id", "revision", "commit", "files"]
    assert recipe.names == ["fs", "fr"]
    assert [role for role, _ in recipe.inputs()] == ["fs", "fr", "fr (adapter base)"]


def test_report_round_trip(tmp_path: Path) -> None:
    report = MergeReport(
        merge_method="average", architecture="ViTForImageClassification", specialists=["a", "b"], tensors=3,
        files=["model.safetensors"], seconds=0.5, device="cpu", processes=1, notes=["n"], image_processor=None,
        method={"x": [1.0, 2.0]}, warnings=["w"],
    )  # fmt: skip
    assert report.write(tmp_path) == tmp_path / REPORT_FILE
    assert MergeReport.read(tmp_path) == report
    assert json.loads((tmp_path / REPORT_FILE).read_text())["warnings"] == ["w"]


def test_reads_what_version_0_1_wrote(tmp_path: Path) -> None:
    recipe = Recipe.read(OLD)
    assert recipe.r2m_hf_version == "0.1.0" and recipe.merge_method == "r2m"
    assert recipe.names == ["fs", "fr", "lora"]
    assert recipe.models[0].parameters == {"weight": 2.0}
    assert recipe.models[1].fake_index == 0 and recipe.models[1].fake_label == "FAKE"
    assert recipe.models[2].kind == "lora" and recipe.models[2].adapter_base.path == "/r2m/work/zoo/backbone"
    assert recipe.base_model.files["model.safetensors"].startswith("eaa4af24")
    assert recipe.parameters["residual_rank_ratio"] == 0.03 and recipe.parameters["head"] == "mean"
    assert recipe.evaluation.dataset == "data/test-set" and recipe.evaluation.batch_size == 4

    report = MergeReport.read(OLD)
    old_warnings = json.loads((OLD / REPORT_FILE).read_text())["method"]["warnings"]
    assert report.warnings == old_warnings and len(old_warnings) == 1  # moved up from the method's diagnostics
    assert report.specialists == ["fs", "fr", "lora"] and report.processes == 1
    assert report.summary_rows() == get_method("r2m").summary_rows(report.method)
    assert ("spectral gap", "0.8099") in report.summary_rows()

    # and writes them back in today's layout, which reads the same
    recipe.write(tmp_path)
    report.write(tmp_path)
    assert Recipe.read(tmp_path) == recipe and MergeReport.read(tmp_path) == report


def _edited(tmp_path: Path, name: str, edit) -> Path:
    folder = tmp_path / "edited"
    shutil.copytree(OLD, folder, dirs_exist_ok=True)
    path = folder / name
    if name == RECIPE_FILE:
        data = yaml.safe_load(path.read_text())
        edit(data)
        path.write_text(yaml.safe_dump(data, sort_keys=False))
    else:
        data = json.loads(path.read_text())
        edit(data)
        path.write_text(json.dumps(data))
    return folder


@pytest.mark.parametrize(
    ("name", "edit", "message"),
    [
        (RECIPE_FILE, lambda d: d.__setitem__("merge_methd", d.pop("merge_method")),
         r"merge_method: Field required; merge_methd: unknown key"),
        (RECIPE_FILE, lambda d: d["models"][0].pop("kind"), r"models\.0\.kind: Field required"),
        (RECIPE_FILE, lambda d: d["models"][1]["source"].pop("path"), r"models\.1\.source: .*repo_id .* or path"),
        (RECIPE_FILE, lambda d: d.__setitem__("models", "fs, fr"), r"models: Input should be a valid list"),
        (REPORT_FILE, lambda d: d.pop("architecture"), r"architecture: Field required"),
        (REPORT_FILE, lambda d: d.__setitem__("secs", d.pop("seconds")), r"seconds: Field required; secs: unknown key"),
    ],
    ids=["renamed-top-key", "missing-model-key", "source-without-location", "wrong-type", "report-missing",
         "report-renamed"],
)  # fmt: skip
def test_a_renamed_or_missing_key_is_an_error_naming_it(tmp_path: Path, name, edit, message) -> None:
    folder = _edited(tmp_path, name, edit)
    model = Recipe if name == RECIPE_FILE else MergeReport
    with pytest.raises(ConfigError, match=message) as caught:
        model.read(folder)
    assert str(folder / name) in str(caught.value) and "re-run the merge" in str(caught.value)


def test_unreadable_or_absent_files(tmp_path: Path) -> None:
    with pytest.raises(OutputError, match="no merge_config.yaml; this is not the output folder"):
        Recipe.read(tmp_path)
    with pytest.raises(OutputError, match="no merge_report.json"):
        MergeReport.read(tmp_path)
    (tmp_path / RECIPE_FILE).write_text("models: [unclosed\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        Recipe.read(tmp_path)
    (tmp_path / RECIPE_FILE).write_text("- a list\n")
    with pytest.raises(ConfigError, match="expected a mapping"):
        Recipe.read(tmp_path)
    (tmp_path / REPORT_FILE).write_text("{not json")
    with pytest.raises(ConfigError, match="not valid JSON"):
        MergeReport.read(tmp_path)


def test_summary_rows_of_a_method_not_installed_here_are_empty() -> None:
    report = MergeReport.read(OLD).model_copy(update={"merge_method": "some_plugin_not_installed"})
    assert report.summary_rows() == []
