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
SMOKE_METHODS = ("average", "task_arithmetic", "r2m (η relative)", "r2m (η fixed)")


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
        max_tries=2,
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
        "r2m (η relative)",
        "r2m (η fixed)",
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


def test_hyperparameters_chosen_on_validation_with_equal_budgets(bench):
    _, results = bench
    details = results["details"]
    tried = {n: len(details[n]["tries"]) for n in SMOKE_METHODS if n != "average"}
    assert len(set(tried.values())) == 1, tried
    for name in tried:
        best = max(t["validation_auc"] for t in details[name]["tries"])
        assert details[name]["validation_auc"] == pytest.approx(best)


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


def test_report_records_the_defaults_evidence_and_rerenders(bench):
    from r2m_hf.bench.__main__ import rerender

    cfg, results = bench
    report = cfg.output / "RESULTS.md"
    text = report.read_text()
    # R²M declares a defaults row beside its tuned rows: every tuned validation try is listed once, beside the defaults
    section = text.split("### Defaults: every `r2m` try on validation")[1].split("The best validation try")[0]
    table = [line for line in section.splitlines() if line.startswith("| ")]
    assert table[0] == "| eta | residual_rank_ratio | alpha | validation AUC |"
    tries = [t for n in ("r2m (η relative)", "r2m (η fixed)") for t in results["details"][n]["tries"]]
    assert len(table) - 1 == len(tries) == 4
    assert "The package defaults of `r2m` are eta=" in section
    assert "## Where `r2m` stands" in text and "Diagnostics of r2m (η" in text
    report.unlink()
    assert rerender(cfg.output) == 0
    again = report.read_text()
    cut = text.index("## Runtime")  # the rerendered runtime table also lists the total
    assert again[:cut] == text[:cut]
