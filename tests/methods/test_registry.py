"""The registry: built-in methods found by scanning the package (no import cycle, no hand-kept list), run-time
registration, lookups, and the markdown method table."""

from __future__ import annotations

import pkgutil
import subprocess
import sys

import pytest

import r2m_hf.methods
from r2m_hf.errors import ConfigError
from r2m_hf.methods import registry
from r2m_hf.methods.base import MergeMethod, MethodParameters
from r2m_hf.methods.registry import (
    available_methods,
    builtin_methods,
    get_method,
    method_table_markdown,
    parameter_summary,
    register_method,
    table_order,
)

BUILTINS = {
    "average",
    "cart",
    "dare_linear",
    "dare_ties",
    "iso_c",
    "iso_cts",
    "model_stock",
    "r2m",
    "task_arithmetic",
    "ties",
    "tsv_m",
}


def test_scanning_finds_every_builtin_in_its_own_module():
    methods = builtin_methods()
    assert set(methods) == BUILTINS
    modules = {m.name for m in pkgutil.iter_modules(r2m_hf.methods.__path__)}
    assert "_builtin" not in modules
    scanned = {m for m in modules if not m.startswith("_") and m not in ("base", "registry")}
    assert {cls.__module__.rpartition(".")[2] for cls in methods.values()} == scanned
    assert all(issubclass(cls, MergeMethod) for cls in methods.values())
    assert set(available_methods()) >= BUILTINS


@pytest.mark.parametrize("module", ["r2m", "ties", "iso", "average"])
def test_a_method_module_does_not_import_the_registry(module):
    code = f"import sys, r2m_hf.methods.{module}; print('r2m_hf.methods.registry' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True)
    assert out.stdout.strip() == "False"


def test_unknown_method_lists_the_known_ones():
    with pytest.raises(ConfigError, match="known methods: .*r2m"):
        get_method("nope")


def test_register_method_at_run_time(monkeypatch):
    monkeypatch.setattr(registry, "_METHODS", {})

    @register_method
    class Mine(MergeMethod):
        name = "mine"

    assert get_method("mine") is Mine and "mine" in available_methods()
    assert table_order(["mine", "r2m", "average"]) == ["average", "r2m", "mine"]  # plugins after the built-ins

    class Impostor(MergeMethod):
        name = "r2m"

    with pytest.raises(ValueError, match="already registered"):
        register_method(Impostor)
    assert register_method(get_method("r2m")) is get_method("r2m")  # re-registering a built-in is harmless

    class Nameless(MergeMethod):
        pass

    with pytest.raises(TypeError, match="name"):
        register_method(Nameless)


def test_table_order_starts_simple_and_ends_with_r2m():
    order = table_order(BUILTINS)
    assert order[0] == "average" and order[-1] == "r2m"
    assert order.index("task_arithmetic") < order.index("ties") < order.index("cart")


def test_parameter_summary_shows_symbols_defaults_and_choices():
    from typing import Literal

    from pydantic import Field

    class Demo(MethodParameters):
        scale: float = Field(0.5, description="λ: a scale")
        mode: Literal["a", "b"] = Field("b", description="which mode")
        cap: float | None = Field(None, description="an optional cap")
        on: bool = Field(False, description="a switch")

    assert parameter_summary(Demo) == "`scale` (λ) 0.5, `mode` a\\|**b**, `cap` none, `on` false"
    assert parameter_summary(MethodParameters) == "–"


def test_method_table_markdown():
    table = method_table_markdown(BUILTINS)
    lines = table.splitlines()
    assert lines[:2] == ["| method | parameters (defaults) | rule |", "|---|---|---|"]
    assert [line.split(" | ")[0].removeprefix("| ").strip("`") for line in lines[2:]] == table_order(BUILTINS)
    rows = {line.split(" | ")[0].removeprefix("| ").strip("`"): line for line in lines[2:]}
    assert "`lambda` (λ) 0.3" in rows["task_arithmetic"]
    assert "`trim` **tensor**\\|global" in rows["ties"]
    assert "`residual_rank_ratio` (ρ) 0.03" in rows["r2m"] and "`alpha` (α) 1.5" in rows["r2m"]
    assert rows["average"].split(" | ")[1] == "–"
    for name in BUILTINS:
        assert get_method(name).rule() in rows[name].replace("\\|", "|")
        assert rows[name].count(" | ") == 2  # no unescaped pipe splits a row
    assert method_table_markdown().startswith(lines[0])  # every registered method, plugins included
