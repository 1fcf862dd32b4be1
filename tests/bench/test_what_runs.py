"""The benchmark runs what the merge methods declare: every registered method, their search spaces and sweeps,
plugins included."""

from __future__ import annotations

from pathlib import Path
from typing import ClassVar

import pytest

from r2m_hf.bench.declarations import bench_methods, sensitivity_sweeps
from r2m_hf.methods import registry
from r2m_hf.methods.base import MergeMethod, Sweep, Tunable

BENCH_DIR = Path(__file__).resolve().parents[2] / "r2m_hf" / "bench"


class Toy(MergeMethod):
    """A plugin: θ0 + λ τ̄ with a search space and one sweep."""

    name: ClassVar[str] = "toy_plugin"
    order: ClassVar[int] = 10_000
    search_space: ClassVar[dict] = {"lambda": Tunable(0.1, 2.0)}

    @classmethod
    def sensitivity_sweeps(cls) -> list[Sweep]:
        return [Sweep("toy-lambda", "lambda", (0.0, 1.0))]


@pytest.fixture
def toy(monkeypatch):
    monkeypatch.setitem(registry._METHODS, Toy.name, Toy)
    return Toy


def test_every_registered_method_runs_unless_narrowed(toy):
    methods = bench_methods()
    assert set(methods) == set(registry.available_methods())
    assert methods[-1] == "toy_plugin"  # plugins after the built-ins
    assert bench_methods(("toy_plugin", "average")) == ["average", "toy_plugin"]  # table order
    with pytest.raises(ValueError, match="unknown merge method.*nope"):
        bench_methods(("average", "nope"))


def test_sweeps_of_the_methods_that_ran(toy):
    pairs = sensitivity_sweeps(["toy_plugin", "cart"])
    assert [(m, s.name) for m, s in pairs] == [("toy_plugin", "toy-lambda"), ("cart", "rho_cart")]
    assert sensitivity_sweeps(["average"]) == []
    ((method, sweep),) = [p for p in sensitivity_sweeps(["toy_plugin"], {"toy-lambda": [3.0]})]
    assert method == "toy_plugin" and sweep.values == (3.0,)


def test_the_benchmark_names_no_method_quantity():
    # Issue 9: search spaces, sweeps, diagnostics and defaults come from the methods; nothing under bench/ names them.
    names = ("residual_rank_ratio", "rank_ratio", "eta_mode", "gram_eigenvalues", "spectral_gap", "core_norm")
    names += ("R2MParameters", "(η ", '"lambda"', '"alpha"', '"eta"')
    for path in sorted(BENCH_DIR.rglob("*.py")):
        text = path.read_text(encoding="utf-8")
        found = [n for n in names if n in text]
        assert not found, (path.name, found)
