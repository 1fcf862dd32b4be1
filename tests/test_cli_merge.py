"""End-to-end tests of ``r2m-hf merge`` on tiny seeded models: tensors, heads, metadata, LoRA adapters, every method,
the printed summary and plan, and the real ``python -m r2m_hf`` process."""

from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
import yaml
from conftest import assert_nothing_written, load_model, lora_only_recipe, recipe, state, write_yaml
from safetensors.torch import load_file

import r2m_hf
from r2m_hf.recipe import MergeReport

Q0 = "vit.layers.0.attention.q_proj.weight"
V1 = "vit.layers.1.attention.v_proj.weight"
K0 = "vit.layers.0.attention.k_proj.weight"


# --------------------------------------------------------------------------------------------------------------------
# The default R²M merge: loadable, labelled, recorded, summarised.


def test_r2m_output_loads_without_missing_keys_and_classifies_real_fake(r2m_out):
    import numpy as np
    from PIL import Image
    from transformers import pipeline

    model = load_model(r2m_out)
    assert model.config.id2label == {0: "real", 1: "fake"}
    assert model.config.label2id == {"real": 0, "fake": 1}
    classify = pipeline("image-classification", model=str(r2m_out))
    image = Image.fromarray(np.random.default_rng(0).integers(0, 255, (32, 32, 3), dtype=np.uint8))
    predictions = classify(image)
    assert {p["label"] for p in predictions} == {"real", "fake"}
    assert sum(p["score"] for p in predictions) == pytest.approx(1.0, abs=1e-5)


def test_config_json_has_the_real_fake_labels(r2m_out):
    config = json.loads((r2m_out / "config.json").read_text())
    assert config["id2label"] == {"0": "real", "1": "fake"}
    assert config["label2id"] == {"real": 0, "fake": 1}
    assert config["architectures"] == ["ViTForImageClassification"]
    assert (r2m_out / "preprocessor_config.json").is_file()


def test_merge_config_records_sources_and_sha256(r2m_out, zoo):
    recorded = yaml.safe_load((r2m_out / "merge_config.yaml").read_text())
    assert recorded["merge_method"] == "r2m"
    assert recorded["r2m_hf_version"] == r2m_hf.__version__

    def sha(path):
        return hashlib.sha256(Path(path).read_bytes()).hexdigest()

    # local inputs outside the recipe's folder are recorded by name (never the machine's absolute path) + SHA-256
    assert recorded["base_model"]["path"] == recorded["base_model"]["reference"] == "backbone"
    assert recorded["base_model"]["files"] == {"model.safetensors": sha(zoo.base / "model.safetensors")}
    assert [m["name"] for m in recorded["models"]] == ["fs", "fr", "efs"]
    for entry, folder in zip(recorded["models"], zoo.specialists):
        assert entry["kind"] == "full"
        assert entry["source"]["path"] == entry["source"]["reference"] == folder.name
        assert entry["source"]["files"] == {"model.safetensors": sha(folder / "model.safetensors")}
    assert [m["fake_index"] for m in recorded["models"]] == [1, 0, 1]
    assert recorded["parameters"]["alpha"] == 1.5 and recorded["parameters"]["head"] == "mean"
    # The recorded recipe is itself a valid recipe (paths aside, every key is known).
    r2m_hf.config.parse_config(
        {k: v for k, v in recorded.items() if k in ("merge_method", "parameters", "dtype")}
        | {"models": [{"model": "a"}, {"model": "b"}], "base_model": "x"}
    )


def test_merge_report_has_the_r2m_diagnostics(r2m_out):
    report = json.loads((r2m_out / "merge_report.json").read_text())
    assert report["merge_method"] == "r2m"
    assert report["architecture"] == "ViTForImageClassification"
    assert report["specialists"] == ["fs", "fr", "efs"]
    assert report["files"] == ["model.safetensors"]
    method = report["method"]
    for key in ("coefficients", "core_norm", "residual_norm", "eta", "gram_eigenvalues", "ranks_kept"):
        assert key in method, key
    assert len(method["coefficients"]) == 3
    assert method["core_norm"] > 0 and method["residual_norm"] > 0 and method["eta"] > 0


def test_cli_prints_a_summary(zoo, tmp_path, cli):
    config = write_yaml(tmp_path / "m.yaml", recipe(zoo))
    result = cli("merge", config, tmp_path / "out", "--no-progress")
    assert result.code == 0, result.err
    lines = result.out.splitlines()
    assert lines[0].startswith("merged 3 specialists with r2m → ") and lines[0].endswith("out")
    rows = MergeReport.read(tmp_path / "out").summary_rows()
    assert rows, "R²M has summary rows (its real core, norms, η)"
    for label, value in rows:
        assert f"{label}: {value}" in lines
    assert lines[-1].endswith(" s; recipe in merge_config.yaml, diagnostics in merge_report.json")
    assert result.err == ""


def _fake_result(**changes):
    report = SimpleNamespace(
        specialists=["a", "b"], merge_method="m", seconds=1.25, summary_rows=lambda: [("c", "[0.5, 0.5]"), ("η", "2")]
    )
    result = SimpleNamespace(
        output_dir=Path("/x/out"),
        report=report,
        is_main_process=True,
        evaluation=SimpleNamespace(to_markdown=lambda: "| family | AUC |"),
        pushed=SimpleNamespace(commit_url="https://hub/commit/1", pr_url=None),
        warnings=["the residual term vanished"],
    )
    result.__dict__.update(changes)
    return result


def test_merge_flags_reach_the_api_and_its_result_is_printed(monkeypatch, cli, tmp_path):
    calls = []
    monkeypatch.setattr(r2m_hf, "merge", lambda *args, **kwargs: calls.append((args, kwargs)) or _fake_result())
    flags = ["--device", "auto", "--overwrite", "--allow-pickle", "--push-to-hub", "org/x", "--private"]
    flags += ["--overwrite-any", "--record-local-paths"]
    result = cli("merge", tmp_path / "m.yaml", tmp_path / "out", *flags, "--revision", "dev", "--create-pr")
    assert (result.code, result.err) == (0, "")
    options = {"device": "auto", "overwrite": True, "allow_pickle": True, "progress": False, "push_to_hub": "org/x"}
    options |= {"private": True, "revision": "dev", "create_pr": True, "overwrite_any": True}
    options |= {"record_local_paths": True}
    assert calls == [((tmp_path / "m.yaml", tmp_path / "out"), options)]
    assert result.out.splitlines() == [
        "merged 2 specialists with m → /x/out",
        "c: [0.5, 0.5]",
        "η: 2",
        "warning: the residual term vanished",
        "1.2 s; recipe in merge_config.yaml, diagnostics in merge_report.json",
        "| family | AUC |",
        "pushed to https://hub/commit/1",
    ]

    calls.clear()
    monkeypatch.setattr(
        r2m_hf, "merge", lambda *args, **kwargs: calls.append(kwargs) or _fake_result(is_main_process=False)
    )
    result = cli("merge", tmp_path / "m.yaml", tmp_path / "out")
    assert (result.code, result.out, result.err) == (0, "", "")  # another rank of a multi-process merge: rank 0 reports
    assert calls == [
        {
            **options,
            "device": "cpu",
            "overwrite": False,
            "overwrite_any": False,
            "record_local_paths": False,
            "allow_pickle": False,
            "push_to_hub": None,
            "private": False,
            "revision": None,
            "create_pr": False,
        }
    ]


def test_dry_run_prints_the_plan_and_writes_nothing(zoo, tmp_path, cli):
    config = write_yaml(tmp_path / "m.yaml", recipe(zoo))
    out = tmp_path / "out"
    result = cli("merge", config, out, "--dry-run")
    assert result.code == 0, result.err
    assert "merge_method: r2m" in result.out
    assert "architecture: ViTForImageClassification (vit)" in result.out
    assert "specialist fr:" in result.out and "fake index=0 (FAKE)" in result.out
    assert "groups: head" in result.out
    assert "dry run: nothing written" in result.out
    assert_nothing_written(out)


def test_processor_from_specialists_when_the_base_has_none_and_disagreement_is_reported(zoo, tmp_path):
    from r2m_hf.merge import plan_merge

    base = tmp_path / "base"
    shutil.copytree(zoo.base, base)
    (base / "preprocessor_config.json").unlink()
    odd = tmp_path / "odd"
    shutil.copytree(zoo.specialists[1], odd)
    processor = json.loads((odd / "preprocessor_config.json").read_text())
    processor["image_mean"] = [0.1, 0.2, 0.3]
    (odd / "preprocessor_config.json").write_text(json.dumps(processor))
    data = {
        "merge_method": "average",
        "base_model": str(base),
        "models": [{"model": str(zoo.specialists[0])}, {"model": str(odd), "name": "odd"}],
    }
    plan = plan_merge(write_yaml(tmp_path / "m.yaml", data))
    assert plan.processor_dir == zoo.specialists[0].resolve()
    assert "disagree" in plan.processor_note and str(odd) in plan.processor_note


# --------------------------------------------------------------------------------------------------------------------
# Heads: alignment to 0 = real, 1 = fake; mean or one specialist's head.


def aligned_heads(zoo):
    heads = []
    for folder in zoo.specialists:
        tensors = load_file(folder / "model.safetensors")
        fake = json.loads((folder / "config.json").read_text())["id2label"]["0"].lower() == "fake"
        w, b = tensors["classifier.weight"], tensors["classifier.bias"]
        heads.append((w.flip(0), b.flip(0)) if fake else (w, b))
    return heads


def test_fake_first_head_rows_are_swapped_and_averaged(zoo, tmp_path, cli, specialist_states):
    assert json.loads((zoo.specialists[1] / "config.json").read_text())["id2label"] == {"0": "FAKE", "1": "REAL"}
    config = write_yaml(tmp_path / "m.yaml", recipe(zoo, "average"))
    assert cli("merge", config, tmp_path / "out", "--no-progress").code == 0
    merged = state(tmp_path / "out")
    heads = aligned_heads(zoo)
    torch.testing.assert_close(merged["classifier.weight"], torch.stack([w for w, _ in heads]).mean(0))
    torch.testing.assert_close(merged["classifier.bias"], torch.stack([b for _, b in heads]).mean(0))
    # The swap is not a no-op: without it fr's rows would be averaged the wrong way round.
    unswapped = torch.stack([s["classifier.weight"] for s in specialist_states]).mean(0)
    assert not torch.allclose(merged["classifier.weight"], unswapped)
    # `average` treats the backbone like any tensor: the plain mean of the specialists.
    torch.testing.assert_close(merged[Q0], torch.stack([s[Q0] for s in specialist_states]).mean(0))


@pytest.mark.parametrize("keep", ["fr", "efs"])
def test_head_option_keeps_that_specialists_aligned_head(zoo, tmp_path, cli, keep):
    config = write_yaml(tmp_path / "m.yaml", recipe(zoo, parameters={"head": keep}))
    result = cli("merge", config, tmp_path / "out", "--no-progress")
    assert result.code == 0, result.err
    merged = state(tmp_path / "out")
    w, b = aligned_heads(zoo)[zoo.names.index(keep)]
    torch.testing.assert_close(merged["classifier.weight"], w, rtol=0, atol=0)
    torch.testing.assert_close(merged["classifier.bias"], b, rtol=0, atol=0)
    assert yaml.safe_load((tmp_path / "out" / "merge_config.yaml").read_text())["parameters"]["head"] == keep


# --------------------------------------------------------------------------------------------------------------------
# LoRA adapters (transformers 5 names, legacy transformers 4 names).


def lora_delta(adapter: Path, module_key: str) -> torch.Tensor:
    """scaling · B A from the adapter's files, with peft's semantics (lora_alpha / r, or / √r for rsLoRA)."""
    cfg = json.loads((adapter / "adapter_config.json").read_text())
    tensors = load_file(adapter / "adapter_model.safetensors")
    a = tensors[f"base_model.model.{module_key}.lora_A.weight"].double()
    b = tensors[f"base_model.model.{module_key}.lora_B.weight"].double()
    rank = a.shape[0]
    assert rank == cfg["r"]
    scaling = cfg["lora_alpha"] / (rank**0.5 if cfg.get("use_rslora") else rank)
    return scaling * (b @ a)


def test_lora_adapter_merges_as_base_plus_scaled_ba(zoo, lora, base_state, tmp_path, cli):
    config = write_yaml(tmp_path / "m.yaml", lora_only_recipe(zoo, str(lora.v5)))
    result = cli("merge", config, tmp_path / "out", "--no-progress")
    assert result.code == 0, result.err
    merged = state(tmp_path / "out")
    for name in (Q0, V1, "vit.layers.1.attention.q_proj.weight", "vit.layers.0.attention.v_proj.weight"):
        module = name.removesuffix(".weight")
        expected = base_state[name].double() + lora_delta(lora.v5, module)
        torch.testing.assert_close(merged[name].double(), expected, rtol=1e-5, atol=1e-6, msg=name)
    for name in (K0, "vit.layers.0.attention.q_proj.bias", "vit.layers.0.mlp.fc1.weight"):
        torch.testing.assert_close(merged[name], base_state[name], rtol=0, atol=1e-7, msg=name)
    recorded = yaml.safe_load((tmp_path / "out" / "merge_config.yaml").read_text())
    assert recorded["models"][0]["kind"] == "lora"
    assert "adapter_model.safetensors" in recorded["models"][0]["source"]["files"]


def test_lora_adapter_matches_peft_merge_and_unload(zoo, lora, tmp_path, cli):
    from peft import PeftModel
    from transformers import AutoModelForImageClassification

    config = write_yaml(tmp_path / "m.yaml", lora_only_recipe(zoo, str(lora.v5)))
    assert cli("merge", config, tmp_path / "out", "--no-progress").code == 0
    merged = state(tmp_path / "out")
    base = AutoModelForImageClassification.from_pretrained(
        str(zoo.base), num_labels=2, id2label={0: "real", 1: "fake"}, label2id={"real": 0, "fake": 1}
    )
    reference = PeftModel.from_pretrained(base, str(lora.v5)).merge_and_unload().state_dict()
    assert set(reference) == set(merged)
    for name, tensor in reference.items():
        torch.testing.assert_close(merged[name], tensor, rtol=1e-5, atol=1e-6, msg=name)


def test_legacy_named_adapter_is_not_a_silent_no_op(zoo, lora, base_state, tmp_path, cli):
    keys = load_file(lora.legacy / "adapter_model.safetensors")
    assert any("attention.attention.query.lora_A" in k for k in keys)  # really the transformers 4 names
    config = write_yaml(tmp_path / "m.yaml", lora_only_recipe(zoo, str(lora.legacy)))
    result = cli("merge", config, tmp_path / "out", "--no-progress")
    assert result.code == 0, result.err
    merged = state(tmp_path / "out")
    legacy_modules = {
        Q0: "vit.encoder.layer.0.attention.attention.query",
        V1: "vit.encoder.layer.1.attention.attention.value",
    }
    for name, legacy_module in legacy_modules.items():
        delta = lora_delta(lora.legacy, legacy_module)
        assert delta.abs().max() > 1e-3
        assert not torch.allclose(merged[name], base_state[name])
        torch.testing.assert_close(merged[name].double(), base_state[name].double() + delta, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(merged[K0], base_state[K0], rtol=0, atol=1e-7)


def test_adapters_and_full_specialists_merge_together_with_r2m(zoo, lora, tmp_path, cli):
    models = [
        {"model": str(lora.v5), "name": "l5"},
        {"model": str(lora.legacy), "name": "l4"},
        {"model": str(zoo.specialists[1])},
    ]
    config = write_yaml(tmp_path / "m.yaml", recipe(zoo, models=models))
    result = cli("merge", config, tmp_path / "out", "--no-progress")
    assert result.code == 0, result.err
    merged = state(tmp_path / "out")
    assert all(torch.isfinite(t).all() for t in merged.values())


# --------------------------------------------------------------------------------------------------------------------
# Every registered method through the CLI, and the real process.


@pytest.mark.parametrize("method", r2m_hf.available_methods())
def test_every_method_runs_through_the_cli(zoo, tmp_path, cli, method, base_state):
    config = write_yaml(tmp_path / "m.yaml", recipe(zoo, method))
    result = cli("merge", config, tmp_path / "out", "--no-progress")
    assert result.code == 0, result.err
    model = load_model(tmp_path / "out")
    assert model.config.id2label == {0: "real", 1: "fake"}
    merged = model.state_dict()
    assert all(torch.isfinite(t).all() for t in merged.values())
    assert not torch.equal(merged[Q0], base_state[Q0])  # the specialists moved the backbone
    with torch.no_grad():
        logits = model(pixel_values=torch.zeros(1, 3, 32, 32)).logits
    assert logits.shape == (1, 2)
    report = json.loads((tmp_path / "out" / "merge_report.json").read_text())
    assert report["merge_method"] == method


def test_python_dash_m_merges_in_a_subprocess(zoo, tmp_path):
    config = write_yaml(tmp_path / "m.yaml", recipe(zoo, "average"))
    proc = subprocess.run(
        [sys.executable, "-m", "r2m_hf", "merge", str(config), str(tmp_path / "out"), "--no-progress"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    assert "Traceback" not in proc.stderr
    assert "merged 3 specialists with average" in proc.stdout
    assert "diagnostics in merge_report.json" in proc.stdout  # flushed before the process ends itself (cli.entry)
    assert (tmp_path / "out" / "model.safetensors").is_file()
