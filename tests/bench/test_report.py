"""The benchmark report renders any method from its own declarations, and re-renders committed results unchanged."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path
from typing import Any, ClassVar

import pytest
from pydantic import Field

from r2m_hf.bench.config import COLUMNS, ModelScores, tier_config
from r2m_hf.bench.report import markdown_table, results_markdown, write_report
from r2m_hf.bench.results import build_results, focus_of
from r2m_hf.methods import registry
from r2m_hf.methods.base import MergeMethod, MethodParameters

EXAMPLES = Path(__file__).resolve().parents[2] / "examples" / "offline_benchmark"
FAMILIES = ("FS", "FR", "EFS", "FE")


class ToyParameters(MethodParameters):
    lambda_: float = Field(1.0, alias="lambda")


class Toy(MergeMethod):
    """A plugin the benchmark has never heard of."""

    name: ClassVar[str] = "toy_plugin"
    parameters_model = ToyParameters

    @classmethod
    def summary_rows(cls, report):
        return [("toy strength", str(report.get("strength")))]


@pytest.fixture
def toy(monkeypatch):
    monkeypatch.setitem(registry._METHODS, Toy.name, Toy)


def _scored(name: str, kind: str, auc: float, **extra: Any) -> ModelScores:
    metrics = {"auc": auc, "eer": 0.2, "ap": auc, "acc": 0.6, "acc_threshold": 0.7}
    split = {"families": {f: dict(metrics) for f in FAMILIES}, "mean": dict(metrics), "threshold": 0.31}
    return ModelScores(name=name, kind=kind, splits={s: split for s in COLUMNS.values()}, **extra)


def _toy_results() -> dict[str, Any]:
    trials = [
        {"number": i, "state": state, "params": {"lambda": v}, "validation_auc": auc}
        for i, (v, auc, state) in enumerate(((1.0, 0.75, "COMPLETE"), (0.5, 0.6, "PRUNED"), (2.0, 0.9, "COMPLETE")))
    ]
    rows = {
        "joint training": _scored("joint training", "joint", 0.85),
        "average": _scored(
            "average", "merge", 0.7, params={"merge_method": "average"}, validation_auc=0.7, setting="defaults"
        ),
        "toy_plugin": _scored(
            "toy_plugin", "merge", 0.75, params={"merge_method": "toy_plugin"}, validation_auc=0.75, setting="defaults"
        ),
        "toy_plugin (tuned)": _scored(
            "toy_plugin (tuned)",
            "merge",
            0.8,
            params={"merge_method": "toy_plugin", "lambda": 2.0},
            validation_auc=0.9,
            tries=trials,
            setting="tuned",
            report={"strength": 3},
            warnings=["toy is weak"],
        ),
    }
    tuning = {
        "metric": "auc@families",
        "split": "validation",
        "trials_per_method": 3,
        "budgets": {"toy_plugin": 3},
        "counts": {"toy_plugin": {"COMPLETE": 2, "PRUNED": 1, "FAIL": 0}},
        "seconds": 6.0,
        "read_seconds": 0.5,
        "in_memory": True,
        "trials_per_minute": 30.0,
        "seconds_per_trial": 2.0,
        "merge_share": 0.25,
        "eval_share": 0.75,
        "trials": [
            {
                "method": "toy_plugin",
                "number": t["number"],
                "state": t["state"],
                "value": t["validation_auc"],
                "params": t["params"],
                "seconds": 2.0,
            }  # fmt: skip
            for t in trials
        ],
        "files": ["leaderboard.md"],
    }
    point = {"validation": 0.8, **{c: 0.7 for c in COLUMNS}}
    sweeps = {
        "toy-lambda": {
            "method": "toy_plugin",
            "row": "toy_plugin (tuned)",
            "parameter": "lambda",
            "fixed": {},
            "points": [{"lambda": 0.0, **point}, {"lambda": 1.0, **point}],
        }
    }
    auc = {c: {f: {"three": 0.7, "four": 0.8} for f in (*FAMILIES, "mean")} for c in COLUMNS}
    compose = {"method": "toy_plugin", "params": {"lambda": 2.0}, "three": ["FS", "FR", "EFS"], "added": "FE"}
    compose["auc"] = auc
    cfg = tier_config("quick", focus="toy_plugin")
    return build_results(
        cfg,
        rows,
        {"cross_family_auc": {f: {g: 0.9 for g in FAMILIES} for f in FAMILIES}},
        sweeps,
        compose,
        focus_row="toy_plugin (tuned)",
        tuning=tuning,
        runtime={"data": 1.0},
        manifest={"tier": "quick", "seed": 0, "image_size": 56, "n_per_cell": 80, "split_sizes": {"test": 480}},
    )


def test_a_plugin_is_reported_from_its_own_declarations(toy, tmp_path):
    results = _toy_results()
    assert focus_of(results) == ("toy_plugin", "toy_plugin (tuned)")
    write_report(results, tmp_path, plots=True)
    text = (tmp_path / "RESULTS.md").read_text()
    defaults_table = text.split("## AUC: trained detectors and merges at package defaults")[1].split("\n## ")[0]
    assert "| average |" in defaults_table and "| toy_plugin |" in defaults_table and "(tuned)" not in defaults_table
    tuned_table = text.split("## AUC: merges tuned on validation (3 trials per method)")[1].split("\n### ")[0]
    assert "| toy_plugin (tuned) |" in tuned_table and "| average |" not in tuned_table
    versus = text.split("### Tuned vs defaults")[1].split("\n### ")[0]
    assert "| toy_plugin | 0.750 → 0.900 | 0.750 → 0.800 |" in versus
    assert "## Where `toy_plugin` stands" in text
    assert "`toy_plugin` ranks toy_plugin (tuned) #1, toy_plugin #2 of 3 merges" in text
    assert "Diagnostics of toy_plugin (tuned):" in text and "| toy strength | 3 |" in text
    assert "### Merge warnings\n\n- toy_plugin (tuned): toy is weak\n" in text
    tuning = text.split("## Tuning")[1].split("\n## ")[0]
    assert "**30.0 trials/min**" in tuning and "25% merging, 75% scoring" in tuning
    # the first trial is the defaults (0.75); the best (0.9) came with the third
    assert "| toy_plugin | 3 of 3 (2 / 1 / 0) | 0.900 | 0.750 | 3 | lambda=2.0 |" in tuning
    accuracy = text.split("## Accuracy: at 0.5 and at a calibrated threshold")[1].split("\n## ")[0]
    assert "| toy_plugin (tuned) | 0.310 | 0.600 | 0.700 |" in accuracy
    assert "| mean ACC@0.5 | mean ACC@τ |" in text
    assert "`toy_plugin` over `lambda` around the point chosen for toy_plugin (tuned)" in text
    assert "`toy_plugin` (lambda=2.0) over FS, FR, EFS, then FE added" in text
    for name in ("auc_vs_toy-lambda", "auc_per_family", "tuned_vs_defaults"):
        assert (tmp_path / f"{name}.png").is_file(), name
    assert json.loads((tmp_path / "results.json").read_text())["selection"]["focus"] == "toy_plugin"


def test_a_method_that_is_not_installed_still_renders():
    results = _toy_results()  # toy_plugin is not registered here: no diagnostics
    text = results_markdown(results, [])
    assert "## Where `toy_plugin` stands" in text and "Diagnostics of" not in text


def _auc_cells(markdown: str) -> list[list[str]]:
    """The numeric cells of every table row (the `chosen` column's wording is left out)."""
    rows = []
    for line in markdown.splitlines():
        cells = [c.strip() for c in line.strip("|").split("|")]
        if line.startswith("| ") and any(re.fullmatch(r"-?\d\.\d{3}|—", c) for c in cells):
            rows.append([c for c in cells if re.fullmatch(r"-?\d\.\d{3}|—", c)])
    return rows


@pytest.mark.parametrize("folder", ["", "full"])
def test_committed_results_rerender_with_the_same_numbers(tmp_path, folder):
    from r2m_hf.bench.__main__ import rerender

    source = EXAMPLES / folder
    shutil.copy(source / "results.json", tmp_path / "results.json")
    assert rerender(tmp_path) == 0
    old, new = (source / "RESULTS.md").read_text(), (tmp_path / "RESULTS.md").read_text()
    section = lambda text: text.split("## AUC")[1].split("\n## ")[0]  # noqa: E731  headline and detail tables
    assert _auc_cells(section(new)) == _auc_cells(section(old)) != []
    results = json.loads((tmp_path / "results.json").read_text())
    assert markdown_table(results).count("\n") == len(results["methods"]) + 1
    assert "## Where `r2m` stands" in new and "| Gram eigenvalues |" in new  # the method's own summary rows
    if "grids" in results["selection"]:  # results of the grid-search benchmark (before it tuned with `tune`)
        assert "### Defaults: every `r2m` try on validation" in new
    else:
        assert "## Tuning" in new and "| r2m | " in new.split("## Tuning")[1]
    for name in ("auc_per_family", "auc_vs_rho", "auc_vs_alpha", "auc_vs_rho_cart", "cross_family_auc"):
        assert (tmp_path / f"{name}.png").is_file(), name
