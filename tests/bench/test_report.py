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
from r2m_hf.bench.grids import GridRow
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
    metrics = {"auc": auc, "eer": 0.2, "ap": auc, "acc": 0.7}
    split = {"families": {f: dict(metrics) for f in FAMILIES}, "mean": dict(metrics)}
    return ModelScores(name=name, kind=kind, splits={s: split for s in COLUMNS.values()}, **extra)


def _toy_results() -> dict[str, Any]:
    tries = [{"params": {"lambda": v}, "validation_auc": auc} for v, auc in ((0.5, 0.8), (2.0, 0.9))]
    rows = {
        "joint training": _scored("joint training", "joint", 0.85),
        "average": _scored("average", "merge", 0.7, params={"merge_method": "average"}, validation_auc=0.7),
        "toy (defaults)": _scored(
            "toy (defaults)", "merge", 0.75, params={"merge_method": "toy_plugin"}, validation_auc=0.75
        ),
        "toy (tuned)": _scored(
            "toy (tuned)",
            "merge",
            0.8,
            params={"merge_method": "toy_plugin", "lambda": 2.0},
            validation_auc=0.9,
            tries=tries,
            report={"strength": 3},
            warnings=["toy is weak"],
        ),
    }
    grids = {
        "average": GridRow("average", "average", ({},)),
        "toy (defaults)": GridRow("toy (defaults)", "toy_plugin", ({},)),
        "toy (tuned)": GridRow("toy (tuned)", "toy_plugin", ({"lambda": 0.5}, {"lambda": 2.0})),
    }
    point = {"validation": 0.8, **{c: 0.7 for c in COLUMNS}}
    sweeps = {
        "toy-lambda": {
            "method": "toy_plugin",
            "row": "toy (tuned)",
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
        focus_row="toy (tuned)",
        grids=grids,
        runtime={"data": 1.0},
        manifest={"tier": "quick", "seed": 0, "image_size": 56, "n_per_cell": 80, "split_sizes": {"test": 480}},
    )


def test_a_plugin_is_reported_from_its_own_declarations(toy, tmp_path):
    results = _toy_results()
    assert focus_of(results) == ("toy_plugin", "toy (tuned)")
    write_report(results, tmp_path, plots=True)
    text = (tmp_path / "RESULTS.md").read_text()
    assert "## Where `toy_plugin` stands" in text
    assert "`toy_plugin` ranks toy (tuned) #1, toy (defaults) #2 of 3 merges" in text
    assert "The validation-chosen row is **toy (tuned)** (lambda=2.0)" in text
    assert "Diagnostics of toy (tuned):" in text and "| toy strength | 3 |" in text
    assert "### Merge warnings\n\n- toy (tuned): toy is weak\n" in text
    defaults = text.split("### Defaults: every `toy_plugin` try on validation")[1].split("\n## ")[0]
    assert "The package defaults of `toy_plugin` are lambda=1.0" in defaults
    assert "at them (row toy (defaults)) the validation mean AUC is 0.750" in defaults
    assert re.findall(r"^\| [\d.]+ \| [\d.]+ \|$", defaults, re.M) == ["| 2.0 | 0.900 |", "| 0.5 | 0.800 |"]
    assert "(lambda=2.0) is **not** the package default" in defaults
    assert "`toy_plugin` over `lambda` around the point chosen for toy (tuned)" in text
    assert "`toy_plugin` (lambda=2.0) over FS, FR, EFS, then FE added" in text
    assert "`average` and `toy (defaults)` are one untuned try each" in text
    assert (tmp_path / "auc_vs_toy-lambda.png").is_file() and (tmp_path / "auc_per_family.png").is_file()
    assert json.loads((tmp_path / "results.json").read_text())["selection"]["focus"] == "toy_plugin"


def test_a_method_that_is_not_installed_still_renders():
    results = _toy_results()  # toy_plugin is not registered here: no diagnostics, no known defaults
    text = results_markdown(results, [])
    assert "## Where `toy_plugin` stands" in text and "Diagnostics of" not in text
    assert "The package defaults of `toy_plugin` are not known here" in text


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
    assert "### Defaults: every `r2m` try on validation" in new
    for name in ("auc_per_family", "auc_vs_rho", "auc_vs_alpha", "auc_vs_rho_cart", "cross_family_auc"):
        assert (tmp_path / f"{name}.png").is_file(), name
