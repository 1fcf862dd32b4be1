"""What every method declares about itself: the benchmark's sweeps, the tuner's search space, the memory it
holds beyond the engine, its warnings and the summary rows of its report."""

from __future__ import annotations

import pytest
import torch
from pydantic import ValidationError

from r2m_hf.engine import build_method, run_passes
from r2m_hf.groups import Group
from r2m_hf.methods.base import MergeMethod, Sweep, TensorSlot, Tunable
from r2m_hf.methods.registry import builtin_methods, get_method

BUILTINS = sorted(builtin_methods())


def test_sensitivity_sweeps():
    sweeps = {s.name: s for name in BUILTINS for s in get_method(name).sensitivity_sweeps()}
    assert sweeps == {
        "rho": Sweep("rho", "residual_rank_ratio", (0.0, 0.01, 0.1, 1.0)),
        "alpha": Sweep("alpha", "alpha", (0.0, 1.0, 2.0, 4.0)),
        "rho_cart": Sweep("rho_cart", "rank_ratio", (0.01, 0.1, 1.0)),
    }
    assert [s.name for s in get_method("r2m").sensitivity_sweeps()] == ["rho", "alpha"]
    tuned = {"eta": "relative", "real_rank": 2, "residual_rank_ratio": 0.1, "alpha": 4.0}
    assert sweeps["rho"].point(tuned, 0.01) == {**tuned, "residual_rank_ratio": 0.01}  # the rest of the point held
    held = Sweep("alpha", "alpha", (1.0,), hold={"eta": "fixed"})
    assert held.point(tuned, 2.0) == {**tuned, "eta": "fixed", "alpha": 2.0}


def test_every_sweep_point_validates_around_the_defaults_and_the_search_space_ends():
    for name in BUILTINS:
        cls = get_method(name)
        starts = [{}] + [{key: end} for key, t in cls.search_space.items() for end in t.endpoints()]
        for sweep in cls.sensitivity_sweeps():
            for chosen in starts:
                for value in sweep.values:
                    cls.parameters_model(**sweep.point(chosen, value))


# ---------------------------------------------------------------------------------------------- search space
def test_every_method_with_parameters_has_a_search_space():
    for name in BUILTINS:
        cls = get_method(name)
        keys = {info.alias or field for field, info in cls.parameters_model.model_fields.items()}
        if keys:
            assert cls.search_space, name
        assert set(cls.search_space) <= keys, name
        if "lambda" in keys:
            assert "lambda" in cls.search_space, name


@pytest.mark.parametrize("name", BUILTINS)
def test_search_space_endpoints_and_choices_validate(name):
    cls = get_method(name)
    for key, tunable in cls.search_space.items():
        values = tunable.endpoints()
        assert values, key
        for value in values:
            cls.parameters_model(**{key: value})
        if tunable.integer:
            assert all(isinstance(v, int) for v in values), key
        # the defaults lie inside the searched range (or among the choices)
        default = cls.parameters_model().model_dump(by_alias=True)[key]
        if tunable.choices is not None:
            assert default in tunable.choices, key
        else:
            assert tunable.low <= default <= tunable.high, key


def test_a_range_outside_the_parameters_model_is_caught():
    tunable = Tunable(-1.0, 1.0)
    with pytest.raises(ValidationError):
        for value in tunable.endpoints():
            get_method("task_arithmetic").parameters_model(**{"lambda": value})


@pytest.mark.parametrize(
    "kwargs", [{}, {"low": 1.0, "high": 0.5}, {"low": 0.0, "high": 1.0, "log": True}, {"low": 0.0, "choices": (1,)}]
)
def test_malformed_tunables_are_refused(kwargs):
    with pytest.raises(ValueError):
        Tunable(**kwargs)


def test_every_parameter_is_described():
    for name in BUILTINS:
        for field, info in get_method(name).parameters_model.model_fields.items():
            assert info.description, f"{name}.{field}"


# ---------------------------------------------------------------------------------------------- memory
SHAPES = {
    "big": (64, 32),
    "small": (2, 32),  # truncatable, but its smaller side is below N = 3
    "other": (64, 32),
    "bias": (32,),
}
GROUPS = {"big": Group.TRUNCATABLE, "small": Group.TRUNCATABLE, "other": Group.SUBSPACE, "bias": Group.VECTOR}


@pytest.mark.parametrize(
    ("params", "rank"),
    [
        ({}, 1),  # ρ = 0.03: r = max(1, ⌊0.96⌋) = 1 (a stale default of 0.1 would say 3)
        ({"residual_rank_ratio": 0.1}, 3),
        ({"residual_rank_ratio": 0.5}, 16),
        ({"residual_energy": 0.9}, 32),  # bounded by the full rank
        ({"residual_rank_ratio": 1.0}, 0),  # r = min(m, n): nothing truncated, nothing cached
        ({"residual_rank_ratio": 0.0}, 0),
        ({"residual_rank_ratio": 0.5, "residual_cache": "recompute"}, 0),
    ],
)
def test_r2m_extra_memory_is_the_factor_cache(params, rank):
    method = build_method("r2m", params, ["a", "b", "c"])
    assert method.extra_memory_bytes(SHAPES, GROUPS, 4) == 3 * rank * (64 + 32) * 4


@pytest.mark.parametrize("params", [{}, {"residual_rank_ratio": 0.25}, {"residual_energy": 0.9}])
def test_r2m_extra_memory_bounds_the_cache_it_holds(params):
    g = torch.Generator().manual_seed(0)
    base = {name: torch.randn(shape, generator=g) for name, shape in SHAPES.items()}
    stacks = {name: base[name] + 0.1 * torch.randn(3, *shape, generator=g) for name, shape in SHAPES.items()}
    method = build_method("r2m", {"svd": "exact", **params}, ["a", "b", "c"])

    def slots(_pass):  # a fresh stack per slot, as the engine hands them (methods may overwrite it)
        for index, name in enumerate(SHAPES):
            yield TensorSlot(name, GROUPS[name], base[name], stacks[name].clone(), index)

    for pass_index in range(method.statistics_passes):
        for slot in slots(pass_index):
            method.observe(pass_index, slot)
        method.end_pass(pass_index)
        if pass_index == 0:  # every tensor's N × N Gram (uncounted: bytes), held until pass 1 uses it
            assert sorted(method._tensor_grams) == list(range(len(SHAPES)))
    assert not method._tensor_grams
    held = sum(t.numel() * t.element_size() for factors in method._cache.values() for pair in factors for t in pair)
    estimate = method.extra_memory_bytes(SHAPES, GROUPS, 4)
    assert 0 < held <= estimate
    if "residual_energy" not in params:
        assert held == estimate


def test_ties_global_trim_declares_its_count_tables():
    assert build_method("ties", None, ["a", "b", "c"]).extra_memory_bytes(SHAPES, GROUPS, 4) == 0
    tables = 3 * (2**15 + 2**16) * 8
    assert build_method("ties", {"trim": "global"}, ["a", "b", "c"]).extra_memory_bytes(SHAPES, GROUPS, 4) == tables


# ---------------------------------------------------------------------------------------------- report rows, warnings
def merged_inputs():
    g = torch.Generator().manual_seed(3)
    base = {k: torch.randn(s, generator=g, dtype=torch.float64) for k, s in SHAPES.items()}
    models = [
        {k: v + 0.1 * torch.randn(v.shape, generator=g, dtype=torch.float64) for k, v in base.items()} for _ in "abc"
    ]
    return base, models


def merged_report(name: str, parameters: dict | None = None) -> tuple[MergeMethod, dict]:
    """Merge three random specialists of SHAPES with `name`; return the method (for its hooks) and its report."""
    base, models = merged_inputs()
    method = build_method(name, parameters, ["a", "b", "c"])

    def slots(_pass):
        for index, key in enumerate(SHAPES):
            yield TensorSlot(key, GROUPS[key], base[key], torch.stack([m[key] for m in models]), index)

    for _ in run_passes(method, slots):
        pass
    return method, method.report()


@pytest.mark.parametrize("name", BUILTINS)
def test_summary_rows_are_strings_and_tolerate_missing_keys(name):
    method, report = merged_report(name)
    rows = type(method).summary_rows(report)
    assert all(isinstance(label, str) and isinstance(value, str) for label, value in rows)
    assert all("None" not in value and "nan" not in value for _, value in rows), rows
    empty = type(method).summary_rows({})
    assert len(empty) == len(rows)
    assert isinstance(method.warnings(), list)


def test_r2m_summary_rows():
    method, report = merged_report("r2m", {"real_rank": 2})
    rows = dict(type(method).summary_rows(report))
    c = report["coefficients"]
    assert rows["real-core coefficients c"] == "[" + ", ".join(f"{x:.4f}" for x in c) + "]"
    assert rows["η (relative)"] == f"{report['eta']:.4g}"
    assert rows["‖τcore‖"] == f"{report['core_norm']:.4g}" and rows["‖τres‖"] == f"{report['residual_norm']:.4g}"
    assert rows["spectral gap"] == f"{report['spectral_gap']:.4f}"
    assert rows["ranks kept (min / mean / max)"] == "1 / 1 / 1"
    assert rows["residual dropped"] == "False"
    _, layer = merged_report("r2m", {"real_scope": "layer"})
    assert dict(type(method).summary_rows(layer))["real-core coefficients c"] == "one per tensor (real_scope: layer)"
    assert set(dict(type(method).summary_rows({})).values()) <= {"—", "— / — / —"}
    _, fixed_full_rank = merged_report("r2m", {"real_rank": 3})  # k = N: no gap
    assert dict(type(method).summary_rows(fixed_full_rank))["spectral gap"] == "—"


def test_svd_method_rows_count_the_paths():
    method, report = merged_report("tsv_m")
    rows = dict(type(method).summary_rows(report))
    assert rows == {"tensors on the SVD path": "2", "tensors on the vector rule θ0 + λ τ̄": "2"}
    _, iso = merged_report("iso_cts", {"common_fraction": 1.0})
    assert dict(get_method("iso_cts").summary_rows(iso))["tensors on the SVD path"] == "2"


def test_baselines_warn_about_nothing_and_r2m_returns_a_copy():
    for name in BUILTINS:
        method, _ = merged_report(name)
        if name != "r2m":
            assert method.warnings() == []
    method, _ = merged_report("r2m")
    method.warnings().append("x")
    assert "x" not in method.warnings()


def test_default_hooks_of_a_bare_method():
    class Bare(MergeMethod):
        """A bare method: one line of doc."""

        name = "bare"

    assert Bare.sensitivity_sweeps() == [] and Bare.summary_rows({"x": 1}) == [] and Bare.search_space == {}
    assert Bare.rule() == "A bare method: one line of doc."
    bare = Bare(Bare.parameters_model(), torch.ones(2, dtype=torch.float64), ["a", "b"])
    assert bare.extra_memory_bytes(SHAPES, GROUPS, 4) == 0 and bare.warnings() == []
