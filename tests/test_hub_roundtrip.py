"""End to end against the loopback Hub: specialists pushed, merged from repo ids, pushed back, pulled by `pipeline`."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import numpy as np
import pytest
import yaml
from huggingface_hub import HfApi, ModelCard
from PIL import Image

from r2m_hf.hub import push_folder
from tests.conftest import write_imagefolder, write_yaml
from tests.hub_server import HubServer

pytest_plugins = ["tests.hub_fixtures"]

NS = "r2m-tester"


def _with_card(src: Path, dst: Path, licence: str = "mit") -> Path:
    shutil.copytree(src, dst)
    (dst / "README.md").write_text(f"---\nlicense: {licence}\n---\n# {dst.name}\n")
    return dst


@pytest.fixture
def pushed(zoo, lora, hub_server: HubServer, hub_token: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> dict:
    """The zoo on the server: backbone, three full specialists (fr tagged v1) and a legacy LoRA adapter."""
    monkeypatch.setenv("HF_TOKEN", hub_token)
    commits = {}
    for name, folder in [("backbone", zoo.base), *zip(["vit-fs", "vit-fr", "vit-efs"], zoo.specialists, strict=True)]:
        commits[name] = push_folder(_with_card(folder, tmp_path / "up" / name), f"{NS}/{name}").commit_sha
    adapter = _with_card(lora.legacy, tmp_path / "up" / "lora-legacy")
    config = json.loads((adapter / "adapter_config.json").read_text())
    config["base_model_name_or_path"] = f"{NS}/backbone"  # as a Hub user would publish it
    (adapter / "adapter_config.json").write_text(json.dumps(config))
    commits["lora-legacy"] = push_folder(adapter, f"{NS}/lora-legacy").commit_sha
    HfApi(token=hub_token).create_tag(f"{NS}/vit-fr", tag="v1")
    # a later commit on main: the tag must still resolve to the tagged commit
    push_folder(_with_card(zoo.specialists[2], tmp_path / "up" / "fr-next"), f"{NS}/vit-fr")
    return commits


def test_merge_from_repo_ids_push_and_pull_back(cli, pushed: dict, hub_server: HubServer, tmp_path: Path) -> None:
    from transformers import pipeline

    config = write_yaml(
        tmp_path / "m.yaml",
        {
            "merge_method": "r2m",
            "base_model": f"{NS}/backbone",
            "models": [
                {"model": f"{NS}/vit-fs@{pushed['vit-fs']}", "name": "fs"},
                {"model": f"{NS}/vit-fr@v1", "name": "fr"},
                {"model": f"{NS}/lora-legacy", "name": "lora"},
            ],
        },
    )
    out = tmp_path / "out"
    result = cli("merge", config, out, "--push-to-hub", f"{NS}/merged", "--no-progress")
    assert result.code == 0, result.err
    assert "pushed to" in result.out

    recipe = yaml.safe_load((out / "merge_config.yaml").read_text())
    assert recipe["base_model"]["commit"] == pushed["backbone"]
    commits = {m["name"]: m["source"]["commit"] for m in recipe["models"]}
    assert commits == {"fs": pushed["vit-fs"], "fr": pushed["vit-fr"], "lora": pushed["lora-legacy"]}
    assert recipe["models"][1]["source"]["revision"] == "v1"

    classify = pipeline("image-classification", model=f"{NS}/merged")
    image = Image.fromarray(np.random.default_rng(0).integers(0, 255, (32, 32, 3), dtype=np.uint8))
    predictions = classify(image, top_k=2)
    assert {p["label"] for p in predictions} == {"real", "fake"}
    assert sum(p["score"] for p in predictions) == pytest.approx(1.0, abs=1e-5)

    card = ModelCard.load(f"{NS}/merged")
    assert card.data.base_model_relation == "merge"
    assert {"deepfake-detection", "model-merging", "r2m"} <= set(card.data.tags)
    assert card.data.base_model == [f"{NS}/backbone", f"{NS}/vit-fs", f"{NS}/vit-fr", f"{NS}/lora-legacy"]
    assert card.data.license == "mit"  # carried from the inputs' cards (read from the Hub cache)
    assert f'model="{NS}/merged"' in card.text
    assert set(hub_server.files(f"{NS}/merged")) >= {
        "README.md",
        "config.json",
        "merge_config.yaml",
        "merge_report.json",
        "model.safetensors",
    }


def test_check_specialist_against_a_hub_base(cli, pushed: dict, zoo) -> None:
    good = cli("check-specialist", f"{NS}/lora-legacy", "--base", f"{NS}/backbone")
    assert good.code == 0, good.out
    assert "✓ base: adapter_config.json names the base (r2m-tester/backbone)" in good.out
    wrong = cli("check-specialist", f"{NS}/lora-legacy", "--base", f"{NS}/vit-fs")
    assert wrong.code == 2 and "✗ base: " in wrong.out and "trained on base 'r2m-tester/backbone'" in wrong.out


def _local_recipe(zoo, tmp_path: Path, **extra) -> Path:
    return write_yaml(
        tmp_path / "m.yaml",
        {
            "merge_method": "r2m",
            "base_model": str(zoo.base),
            "models": [{"model": str(p), "name": n} for p, n in zip(zoo.specialists, zoo.names, strict=True)],
            **extra,
        },
    )


def test_failed_push_keeps_the_output_and_push_completes_it(
    cli, zoo, hub_server: HubServer, hub_token: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HF_TOKEN", hub_token)
    out = tmp_path / "out"
    hub_server.fail_next_commit(status=500)

    failed = cli("merge", _local_recipe(zoo, tmp_path), out, "--push-to-hub", f"{NS}/merged", "--no-progress")
    assert failed.code == 2
    error = failed.err.strip()
    assert "\n" not in error and "HTTP 500" in error and f"r2m-hf push {out} {NS}/merged" in error
    local = {p.name for p in out.iterdir()}
    assert {"config.json", "model.safetensors", "README.md", "merge_config.yaml", "merge_report.json"} <= local
    assert hub_server.repo(f"{NS}/merged").history()[0].title == "initial commit"  # created, nothing committed

    retried = cli("push", out, f"{NS}/merged")
    assert retried.code == 0, retried.err
    assert hub_server.repo(f"{NS}/merged").history()[0].title == "Merge fs, fr, efs with r2m (r2m-hf)"
    files = hub_server.files(f"{NS}/merged")
    assert files["model.safetensors"] == (out / "model.safetensors").read_bytes()
    assert files["README.md"] == (out / "README.md").read_bytes()


def test_private_repo_without_token_is_one_clear_line(
    cli, zoo, hub_server: HubServer, hub_token: str, tmp_path: Path
) -> None:
    push_folder(zoo.specialists[0], f"{NS}/secret-fs", token=hub_token, private=True)
    config = write_yaml(
        tmp_path / "m.yaml",
        {
            "merge_method": "r2m",
            "base_model": str(zoo.base),
            "models": [{"model": f"{NS}/secret-fs", "name": "fs"}, {"model": str(zoo.specialists[1]), "name": "fr"}],
        },
    )
    result = cli("merge", config, tmp_path / "out", "--no-progress")
    assert result.code == 2
    error = result.err.strip()
    assert "\n" not in error and error.startswith("r2m-hf: error:")
    assert f"'{NS}/secret-fs' not found, or it is private and no token was given" in error
    assert "HF_TOKEN" in error and not (tmp_path / "out").exists()

    (tmp_path / "folder").mkdir()
    (tmp_path / "folder" / "config.json").write_text("{}")
    not_merged = cli("push", tmp_path / "folder", f"{NS}/private-out", "--private")
    assert not_merged.code == 2 and "no merge_config.yaml; this is not the output folder" in not_merged.err

    from r2m_hf.merge import merge

    merged = merge(_local_recipe(zoo, tmp_path), tmp_path / "merged", progress=False).output_dir
    push = cli("push", merged, f"{NS}/private-out", "--private")
    assert push.code == 2 and "needs a Hugging Face token" in push.err and "\n" not in push.err.strip()


def test_evaluation_section_gives_eval_results_and_a_model_index(
    cli, zoo, hub_server: HubServer, hub_token: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import datasets

    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", str(tmp_path / "datasets-cache"))
    monkeypatch.setenv("HF_TOKEN", hub_token)
    data = write_imagefolder(tmp_path / "data", 16)
    config = _local_recipe(zoo, tmp_path, evaluation={"dataset": str(data), "split": "test", "batch_size": 8})
    out = tmp_path / "out"

    result = cli("merge", config, out, "--push-to-hub", f"{NS}/evaluated", "--no-progress")
    assert result.code == 0, result.err
    evaluation = json.loads((out / "eval_results.json").read_text())
    assert set(evaluation["families"]) == {"fs", "fr"} and evaluation["n_samples"] == 16
    assert (out / "eval_auc.png").is_file()

    card = ModelCard.load(f"{NS}/evaluated")
    results = card.data.eval_results
    assert {r.dataset_config for r in results} == {"fs", "fr", "mean"}
    assert {r.metric_type for r in results} >= {"roc_auc", "eer", "average_precision", "accuracy"}
    auc = {r.dataset_config: r.metric_value for r in results if r.metric_type == "roc_auc"}
    assert auc["fs"] == pytest.approx(evaluation["families"]["fs"]["auc"], abs=1e-6)
    assert "![AUC per forgery family](eval_auc.png)" in card.text
    assert re.search(r"Calibrated threshold from the evaluation below: \*\*0\.\d{4}\*\*", card.text)
    assert "eval_auc.png" in hub_server.files(f"{NS}/evaluated")


def test_examples_hub_run_sh_against_the_server(
    hub_server: HubServer, hub_token: str, hub_user: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The runnable Hub example works against any endpoint: here, the loopback server."""
    import os
    import subprocess

    script = Path(__file__).resolve().parents[1] / "examples" / "hub" / "run.sh"
    env = {**os.environ, "HF_TOKEN": hub_token, "WORKDIR": str(tmp_path / "work"), "PYTHONWARNINGS": "ignore"}
    done = subprocess.run(["bash", str(script), hub_user], env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    assert f"pushed to {hub_server.endpoint}/{hub_user}/r2m-demo-merged" in done.stdout
    assert "model-merging" in done.stdout  # the card's tags, read back with ModelCard.load
    assert "README.md" in hub_server.files(f"{hub_user}/r2m-demo-merged")
    assert hub_token not in done.stdout + done.stderr
