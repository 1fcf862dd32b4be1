"""DeepfakeBench checkpoints through the command line: ``r2m-hf merge`` of a recipe with ``dfb:`` entries (no
``base_model``: the backbone is the base), ``convert-dfb`` and ``export-dfb``, and their one-line refusals."""

from __future__ import annotations

import json

import pytest
import torch
import yaml
from conftest import assert_nothing_written, write_yaml
from safetensors.torch import load_file

from r2m_hf import MergeConfig, merge
from r2m_hf.deepfakebench import MODEL_CLASS_NOTE, materialize_dfb
from tests.deepfakebench.helpers import logits_of_folder, save_specialists
from tests.deepfakebench.reference import CLIPDetector, save_clip_base, save_malicious

TOLERANCE = 1e-5


@pytest.fixture(scope="module")
def dfb_root(tmp_path_factory):
    """A tiny CLIP base and three DeepfakeBench specialists fine-tuned from it (three file variants), with a cache."""
    root = tmp_path_factory.mktemp("dfb-cli")
    base = save_clip_base(root / "clip-base")
    save_specialists(root, base, (21, 22, 23))
    return root


@pytest.fixture
def dfb_cache(dfb_root, monkeypatch):
    monkeypatch.setenv("R2M_HF_DFB_CACHE", str(dfb_root / "cache"))
    return dfb_root / "cache"


@pytest.fixture(scope="module")
def images():
    return torch.randn(3, 3, 28, 28, generator=torch.Generator().manual_seed(5))


def dfb_recipe(root, **extra) -> dict:
    models = [{"model": f"dfb:spec{seed}.pth", "backbone": "clip-base", "name": f"s{seed}"} for seed in (21, 22, 23)]
    return {"merge_method": "r2m", "models": models, **extra}


def test_cli_merge_of_dfb_entries_matches_a_merge_of_the_converted_folders(dfb_root, dfb_cache, cli, images):
    recipe = write_yaml(dfb_root / "recipe.yaml", dfb_recipe(dfb_root))
    out = dfb_root / "merged"
    result = cli("merge", recipe, out, "--no-progress")
    assert result.code == 0, result.err

    # the same merge from the cached converted folders over the stock CLIP base
    folders = [materialize_dfb(dfb_root / f"spec{s}.pth", backbone=dfb_root / "clip-base") for s in (21, 22, 23)]
    assert all(f.parent == dfb_cache for f in folders)
    config = MergeConfig(
        merge_method="r2m",
        base_model=str(dfb_root / "clip-base"),
        models=[{"model": str(f), "name": f"s{s}"} for f, s in zip(folders, (21, 22, 23), strict=True)],
    )
    merge(config, dfb_root / "merged-folders", progress=False)
    ours, theirs = load_file(out / "model.safetensors"), load_file(dfb_root / "merged-folders" / "model.safetensors")
    assert ours.keys() == theirs.keys() and all(torch.equal(ours[k], theirs[k]) for k in ours)

    # a DeepfakeBench folder: its model class shipped, DeepfakeBench's preprocessing, the card says how to load it
    config_json = json.loads((out / "config.json").read_text())
    assert config_json["model_type"] == "deepfakebench_clip"
    assert config_json["auto_map"]["AutoModelForImageClassification"].startswith("modeling_deepfakebench_clip.")
    assert (out / "modeling_deepfakebench_clip.py").is_file()
    assert json.loads((out / "preprocessor_config.json").read_text())["image_mean"] == [0.5, 0.5, 0.5]
    card = (out / "README.md").read_text()
    assert MODEL_CLASS_NOTE in card and "trust_remote_code=True)" in card
    report = json.loads((out / "merge_report.json").read_text())
    assert any(n.startswith("base_model taken from the backbone of s21: clip-base") for n in report["notes"])
    recorded = yaml.safe_load((out / "merge_config.yaml").read_text())
    assert [m["source"]["reference"] for m in recorded["models"]] == [f"dfb:spec{s}.pth" for s in (21, 22, 23)]
    assert str(dfb_root) not in (out / "merge_config.yaml").read_text() + card  # no absolute local path recorded

    merged = logits_of_folder(out, images)
    assert not any(torch.allclose(merged, logits_of_folder(f, images), atol=1e-3) for f in folders)

    # export-dfb: a checkpoint DeepfakeBench's detector loads strictly, with the merged folder's logits
    result = cli("export-dfb", out, dfb_root / "merged.pth")
    assert result.code == 0, result.err
    assert result.out.strip() == f"wrote {dfb_root / 'merged.pth'}"
    detector = CLIPDetector(dfb_root / "clip-base")
    detector.load_state_dict(torch.load(dfb_root / "merged.pth", weights_only=True), strict=True)
    with torch.no_grad():
        assert float((detector.eval()(images) - merged).abs().max()) <= TOLERANCE


def test_dfb_recipe_errors_are_one_line(dfb_root, dfb_cache, cli, tmp_path):
    no_backbone = dfb_recipe(dfb_root)
    del no_backbone["models"][0]["backbone"]
    result = cli("merge", write_yaml(dfb_root / "no-backbone.yaml", no_backbone), tmp_path / "out")
    assert result.code == 2 and "needs `backbone:`" in result.err and result.err.count("\n") == 1
    missing = dfb_recipe(dfb_root)
    missing["models"][1]["model"] = "dfb:./absent.pth"
    result = cli("merge", write_yaml(dfb_root / "missing.yaml", missing), tmp_path / "out")
    assert result.code == 2 and "no such checkpoint file" in result.err and result.err.count("\n") == 1
    assert_nothing_written(tmp_path / "out")


def test_convert_dfb_writes_a_folder_and_overwrites_only_its_own(dfb_root, cli, tmp_path, images):
    out = tmp_path / "converted"
    args = ("convert-dfb", dfb_root / "spec21.pth", out, "--backbone", dfb_root / "clip-base")
    result = cli(*args)
    assert result.code == 0, result.err
    assert result.out.strip() == f"wrote {out}"
    assert (out / "modeling_deepfakebench_clip.py").is_file()
    detector = CLIPDetector(dfb_root / "clip-base")
    detector.load_state_dict(torch.load(dfb_root / "spec21.pth", weights_only=True), strict=True)
    with torch.no_grad():
        assert float((detector.eval()(images) - logits_of_folder(out, images)).abs().max()) <= TOLERANCE

    result = cli(*args)
    assert result.code == 2 and "--overwrite" in result.err
    assert cli(*args, "--overwrite").code == 0  # a folder convert-dfb wrote may be replaced

    other = tmp_path / "notes"
    other.mkdir()
    (other / "keep.txt").write_text("mine")
    result = cli("convert-dfb", dfb_root / "spec21.pth", other, "--backbone", dfb_root / "clip-base", "--overwrite")
    assert result.code == 2 and "was not written by r2m-hf" in result.err
    assert [p.name for p in other.iterdir()] == ["keep.txt"]


@pytest.mark.parametrize("zipped", [True, False], ids=["torch-zip", "legacy-pickle"])
def test_convert_dfb_refuses_a_malicious_pickle_in_one_line(dfb_root, cli, tmp_path, zipped):
    marker = tmp_path / "pwned"
    evil = save_malicious(tmp_path / "evil.pth", marker, zipped=zipped)
    result = cli("convert-dfb", evil, tmp_path / "out", "--backbone", dfb_root / "clip-base")
    assert result.code == 2 and result.out == ""
    assert result.err.startswith("r2m-hf: error: ") and result.err.count("\n") == 1
    assert not marker.exists()
    assert_nothing_written(tmp_path / "out")


def test_export_dfb_refuses_pickle_weights_in_one_line(dfb_root, cli, tmp_path):
    folder = tmp_path / "pickled"
    folder.mkdir()
    sizes = {"hidden_size": 32, "num_attention_heads": 4, "intermediate_size": 64, "num_hidden_layers": 2}
    (folder / "config.json").write_text(json.dumps({"model_type": "deepfakebench_clip", **sizes}))
    marker = tmp_path / "pwned"
    save_malicious(folder / "pytorch_model.bin", marker, zipped=True)
    result = cli("export-dfb", folder, tmp_path / "out.pth")
    assert result.code == 2 and "safetensors" in result.err and result.err.count("\n") == 1
    assert not marker.exists() and not (tmp_path / "out.pth").exists()
    result = cli("export-dfb", folder, folder / "inside.pth")  # never into the folder it reads
    assert result.code == 2 and "inside the model folder" in result.err and not (folder / "inside.pth").exists()
    (folder / "config.json").write_text(json.dumps({"model_type": "deepfakebench_clip", "hidden_size": 30}))
    result = cli("export-dfb", folder, tmp_path / "out.pth")
    assert result.code == 2 and "not a valid CLIP vision config" in result.err and result.err.count("\n") == 1
