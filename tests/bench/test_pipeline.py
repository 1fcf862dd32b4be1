"""Smoke test of the offline benchmark end to end (quick tier, reduced grid): the table is produced and sane.

It asserts that the report exists with the documented schema and that the specialists of the learnable families
beat chance on their own family — not that R²M wins.
"""

from __future__ import annotations

import json
from dataclasses import replace

import pytest

pytest.importorskip("skimage")
pytest.importorskip("sklearn")
pytest.importorskip("matplotlib")

import torch  # noqa: E402

from r2m_hf.bench.config import COLUMNS, tier_config  # noqa: E402
from r2m_hf.bench.run import run_benchmark  # noqa: E402
from r2m_hf.bench.scoring import linear_cka  # noqa: E402

# Every family's specialist is expected to beat chance clearly on its own family, even on the smoke test's smaller data.
LEARNABLE = ("FS", "FR", "EFS", "FE")
SMOKE_METHODS = ("average", "task_arithmetic", "r2m")
TRIALS = 3


@pytest.fixture(scope="module")
def bench(tmp_path_factory: pytest.TempPathFactory):
    torch.manual_seed(0)
    root = tmp_path_factory.mktemp("bench-run")
    base = tier_config("quick")
    cfg = replace(
        base,
        cache=root / "cache",
        output=root / "report",
        n_per_cell=80,
        specialist=replace(base.specialist, epochs=8),
        lora=replace(base.lora, epochs=4),
        joint=replace(base.joint, epochs=2),
        probe=replace(base.probe, epochs=5),
        methods=SMOKE_METHODS,
        trials_per_method=TRIALS,
        sweeps=True,
        sweep_values={"rho": (0.0, 0.1), "alpha": (0.0, 4.0)},
        validity=False,
        progress=False,
    )
    results = run_benchmark(cfg)
    return cfg, results


def test_report_files_and_schema(bench):
    cfg, results = bench
    out = cfg.output
    figures = ("auc_per_family.png", "cross_family_auc.png", "auc_vs_rho.png", "auc_vs_alpha.png")
    figures += ("feature_similarity.png",)
    for name in ("RESULTS.md", "results.json", *figures):
        assert (out / name).is_file(), name
    on_disk = json.loads((out / "results.json").read_text())
    assert set(on_disk) >= {"methods", "validity"}
    rows = on_disk["methods"]
    for name in (
        "specialist FS",
        "specialist FR",
        "specialist EFS",
        "specialist FE",
        "specialist FS (LoRA)",
        "joint training",
        "linear probe",
        "average",
        "r2m",
        "r2m (tuned)",
        "task_arithmetic (tuned)",
    ):
        assert name in rows, name
        assert set(rows[name]) == set(COLUMNS), name
        for column, values in rows[name].items():
            assert "mean" in values, (name, column)
            assert all(v is None or 0.0 <= v <= 1.0 for v in values.values()), (name, column)
    assert set(rows["average"]["in_distribution"]) == {"FS", "FR", "EFS", "FE", "mean"}
    assert set(rows["average"]["unseen_families"]) == {"djpeg", "resample", "mean"}
    assert "| method |" in (out / "RESULTS.md").read_text()


def test_specialists_beat_chance_on_their_own_family(bench):
    _, results = bench
    cross = results["validity"]["cross_family_auc"]
    for fam in LEARNABLE:
        assert cross[fam][fam] > 0.6, (fam, cross[fam])


def test_hyperparameters_tuned_on_validation_with_equal_budgets(bench):
    _, results = bench
    details, tuning = results["details"], results["tuning"]
    assert tuning["budgets"] == {"task_arithmetic": TRIALS, "r2m": TRIALS}  # average has nothing to tune
    assert "average (tuned)" not in details
    for method in ("task_arithmetic", "r2m"):
        tuned, defaults = details[f"{method} (tuned)"], details[method]
        assert tuned["setting"] == "tuned" and defaults["setting"] == "defaults"
        assert len(tuned["tries"]) == TRIALS
        complete = [t for t in tuned["tries"] if t["state"] == "COMPLETE"]
        best = max(complete, key=lambda t: t["validation_auc"])
        assert {k: tuned["params"][k] for k in best["params"]} == best["params"]
        # The tuner's in-memory merge and chunked scoring agree with `r2m-hf merge` + the evaluation runner.
        assert tuned["validation_auc"] == pytest.approx(best["validation_auc"], abs=2e-3)
        # The first trial is the package defaults: tuning never ends below them on validation.
        first = tuned["tries"][0]
        assert first["state"] == "COMPLETE"
        assert first["validation_auc"] == pytest.approx(defaults["validation_auc"], abs=2e-3)
        assert tuned["validation_auc"] >= defaults["validation_auc"] - 2e-3


def test_accuracy_at_a_threshold_calibrated_on_validation(bench):
    _, results = bench
    for name in ("average", "r2m (tuned)", "joint training"):
        for column in COLUMNS:
            mean = results["details"][name]["metrics"][column]["mean"]
            assert 0.0 <= mean["acc_threshold"] <= 1.0 and 0.0 <= mean["acc"] <= 1.0, (name, column)
            assert 0.0 < results["details"][name]["metrics"][column]["threshold"] < 1.0


def test_labels_and_adapter_paths_are_exercised(bench):
    cfg, results = bench
    fr = json.loads((cfg.cache_dir / "models" / "specialist-FR" / "config.json").read_text())
    assert fr["id2label"] == {"0": "FAKE", "1": "REAL"}
    assert (cfg.cache_dir / "models" / "lora-FS" / "adapter_config.json").is_file()
    assert any("LoRA adapter" in n for n in results["methods"])


def test_composability_reports_every_family(bench):
    _, results = bench
    comp = results["composability"]
    assert comp["added"] == "FE" and comp["three"] == ["FS", "FR", "EFS"]
    assert set(comp["auc"]["in_distribution"]) == {"FS", "FR", "EFS", "FE", "mean"}


def test_linear_cka_properties():
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(50, 8, generator=gen)
    q, _ = torch.linalg.qr(torch.randn(8, 8, generator=gen))
    assert linear_cka(x, x) == pytest.approx(1.0)
    assert linear_cka(x, 3.0 * x @ q) == pytest.approx(1.0)
    assert linear_cka(x, torch.randn(50, 8, generator=gen)) < 0.5


def test_cli_bench_verb_dispatches(monkeypatch, cli, tmp_path):
    seen = {}

    def fake_run(cfg):
        seen["cfg"] = cfg
        return {}

    monkeypatch.setattr("r2m_hf.bench.run.run_benchmark", fake_run)
    result = cli("bench", "--tier", "quick", "--output", tmp_path / "o", "--cache", tmp_path / "c", "--no-progress")
    assert result.code == 0, result.err
    assert seen["cfg"].tier == "quick" and seen["cfg"].output == tmp_path / "o"


def test_report_records_the_tuning_and_rerenders(bench):
    from r2m_hf.bench.__main__ import rerender

    cfg, results = bench
    report = cfg.output / "RESULTS.md"
    text = report.read_text()
    tuning = text.split("## Tuning")[1].split("\n## ")[0]
    assert "trials/min" in tuning and "| r2m | 3 of 3 (" in tuning and "| task_arithmetic | 3 of 3 (" in tuning
    assert "## Accuracy: at 0.5 and at a calibrated threshold" in text and "### Tuned vs defaults" in text
    assert "## Where `r2m` stands" in text and "Diagnostics of r2m (tuned)" in text
    assert (cfg.output / "tuning" / "leaderboard.md").is_file() and (cfg.output / "tuned_vs_defaults.png").is_file()
    leaderboard = (cfg.output / "tuning" / "leaderboard.md").read_text()
    assert str(cfg.cache_dir) not in leaderboard and "<bench cache>" in leaderboard
    report.unlink()
    assert rerender(cfg.output) == 0
    again = report.read_text()
    cut = text.index("## Runtime")  # the rerendered runtime table also lists the total
    assert again[:cut] == text[:cut]
