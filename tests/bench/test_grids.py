"""The benchmark runs what the merge methods declare: their grid rows and sweeps, plugins included."""

from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar

import pytest

from r2m_hf.bench.grids import GridRow, benchmark_rows, sensitivity_sweeps
from r2m_hf.methods import registry
from r2m_hf.methods.base import MergeMethod, Sweep

BENCH_DIR = Path(__file__).resolve().parents[2] / "r2m_hf" / "bench"


class Toy(MergeMethod):
    """A plugin: θ0 + λ τ̄ with two grid rows and one sweep."""

    name: ClassVar[str] = "toy_plugin"

    @classmethod
    def grid_rows(cls) -> dict[str, list[dict[str, Any]]]:
        return {"toy (defaults)": [{}], "toy (tuned)": [{"lambda": 0.5}, {"lambda": 1.0}, {"lambda": 2.0}]}

    @classmethod
    def sensitivity_sweeps(cls) -> list[Sweep]:
        return [Sweep("toy-lambda", "lambda", (0.0, 1.0), row="toy (tuned)")]


@pytest.fixture
def toy(monkeypatch):
    monkeypatch.setitem(registry._METHODS, Toy.name, Toy)
    return Toy


def test_every_registered_method_runs_unless_narrowed(toy):
    rows = benchmark_rows()
    assert {row.method for row in rows.values()} == set(registry.available_methods())
    assert list(rows)[-2:] == ["toy (defaults)", "toy (tuned)"]  # plugins after the built-ins
    points = ({"lambda": 0.5}, {"lambda": 1.0}, {"lambda": 2.0})
    assert rows["toy (tuned)"] == GridRow("toy (tuned)", "toy_plugin", points)
    assert rows["toy (defaults)"].is_defaults and not rows["toy (tuned)"].is_defaults

    narrowed = benchmark_rows(("average", "toy (tuned)"), max_tries=2)  # a method name and a row label
    assert list(narrowed) == ["average", "toy (tuned)"]
    assert narrowed["toy (tuned)"].points == ({"lambda": 0.5}, {"lambda": 1.0})
    assert set(benchmark_rows(("toy_plugin",))) == {"toy (defaults)", "toy (tuned)"}


def test_sweeps_follow_the_rows_that_ran(toy):
    rows = benchmark_rows(("toy_plugin", "cart"))
    names = [s.name for s in sensitivity_sweeps(rows)]
    assert "toy-lambda" in names and "rho-cart" in names and "rho" not in names  # no R²M row ran
    assert sensitivity_sweeps(benchmark_rows(("toy (defaults)",))) == []  # the sweep's row did not run
    (sweep,) = [s for s in sensitivity_sweeps(rows, {"toy-lambda": [3.0]}) if s.name == "toy-lambda"]
    assert sweep.values == (3.0,) and sweep.row == "toy (tuned)"


def test_the_benchmark_names_no_method_quantity():
    # Issue 9: grids, sweeps, diagnostics and defaults come from the methods; nothing under bench/ names them.
    names = ("residual_rank_ratio", "rank_ratio", "eta_mode", "gram_eigenvalues", "spectral_gap", "core_norm")
    names += ("R2MParameters", "(η ", '"lambda"', '"alpha"', '"eta"')
    for path in sorted(BENCH_DIR.rglob("*.py")):
        text = path.read_text(encoding="utf-8")
        found = [n for n in names if n in text]
        assert not found, (path.name, found)
