"""Tests of the element-wise baseline methods and what every baseline shares: peft cross-checks, TIES's global trim,
DARE's seeding, weights, and parameter validation. The SVD baselines and Model Stock are in test_svd_baselines.py.

Per-model weights reach every method rescaled to w·N/Σw (tests/methods/test_weights.py checks that for every
method); the cross-checks below hand the same rescaled weights to peft."""

from __future__ import annotations

import json
import warnings

import pytest
import torch

# tests/ is not a package: pytest puts this folder on sys.path
from baseline_cases import BASELINES, GROUPS, LAYOUT, T, close, make_models, rescaled, run, task_vectors
from peft.utils import merge_utils as peft_merge

from r2m_hf.engine import build_method, merge_state_dicts
from r2m_hf.errors import ConfigError
from r2m_hf.groups import Group
from r2m_hf.methods._common import dare_seed
from r2m_hf.methods.registry import available_methods

torch.set_num_threads(1)


# --- registry and validation -------------------------------------------------------------------------------------


def test_every_baseline_is_registered_with_a_description():
    assert set(BASELINES) <= set(available_methods())
    for name in BASELINES:
        method = build_method(name, None, ["a", "b", "c"])
        assert method.description and "\n" not in method.description


@pytest.mark.parametrize("method", BASELINES)
def test_unknown_parameter_key_is_a_config_error_naming_the_key(method):
    with pytest.raises(ConfigError, match="not_a_key"):
        run(method, {"not_a_key": 1})


@pytest.mark.parametrize(
    ("method", "parameters", "key"),
    [
        ("ties", {"density": 0.0}, "density"),
        ("dare_ties", {"density": 1.5}, "density"),
        ("task_arithmetic", {"lambda": -1.0}, "lambda"),
        ("ties", {"trim": "layer"}, "trim"),
        ("cart", {"rank_ratio": 0.0}, "rank_ratio"),
        ("iso_cts", {"common_fraction": 1.2}, "common_fraction"),
    ],
)
def test_out_of_range_values_are_config_errors(method, parameters, key):
    with pytest.raises(ConfigError, match=key):
        run(method, parameters)


def test_lambda_key_and_defaults():
    defaults = {"task_arithmetic": 0.3, "ties": 1.0, "dare_linear": 0.3, "dare_ties": 1.0, "cart": 1.0}
    defaults.update({"tsv_m": 1.0, "iso_c": 1.0, "iso_cts": 1.0})
    for name, lam in defaults.items():
        assert build_method(name, None, ["a", "b"]).parameters.lambda_ == lam
        assert build_method(name, {"lambda": 0.7}, ["a", "b"]).parameters.lambda_ == 0.7
    ties = build_method("ties", None, ["a", "b"]).parameters
    assert (ties.density, ties.trim, ties.merge) == (0.2, "tensor", "mean")
    dare = build_method("dare_ties", None, ["a", "b"]).parameters
    assert (dare.density, dare.seed) == (0.5, 0)
    assert build_method("cart", None, ["a", "b"]).parameters.rank_ratio == 0.1
    assert build_method("iso_cts", None, ["a", "b"]).parameters.common_fraction == 0.8


@pytest.mark.parametrize("method", BASELINES)
def test_reports_are_json(method):
    merged, report = run(method)
    assert set(merged) == set(LAYOUT)
    assert all(torch.isfinite(t).all() for t in merged.values())
    json.dumps(report)


# --- element-wise methods against peft ---------------------------------------------------------------------------


def test_average_needs_no_base_and_honours_weights():
    base, models = make_models()
    weights = [1.0, 2.0, 5.0]
    merged, _ = run("average", None, base=None, models=models, weights=weights)
    for name in LAYOUT:
        expected = sum(w * m[name] for w, m in zip(weights, models)) / sum(weights)
        assert close(merged[name], expected)


def test_task_arithmetic_matches_peft():
    base, models = make_models()
    weights = [0.5, 1.0, 2.0]
    merged, _ = run("task_arithmetic", {"lambda": 0.4}, base, models, weights=weights)
    for name in LAYOUT:
        tv = list(task_vectors(base, models, name))
        expected = base[name] + 0.4 * peft_merge.task_arithmetic(tv, rescaled(weights))
        assert close(merged[name], expected)


def test_ties_per_tensor_matches_peft():
    base, models = make_models()
    ones = torch.ones(T, dtype=torch.float64)
    merged, report = run("ties", {"density": 0.3, "lambda": 0.8}, base, models)
    for name in LAYOUT:
        tv = list(task_vectors(base, models, name))
        expected = base[name] + 0.8 * peft_merge.ties(tv, ones, 0.3, majority_sign_method="total")
        assert close(merged[name], expected)
    assert report["trim"] == "tensor" and all(abs(f - 0.3) < 0.05 for f in report["kept_fraction"])


def test_ties_weights_enter_before_the_sign_election():
    # mergekit's order: the sign is elected on Σ wt τt. peft elects on the unweighted τt and only then weighs, so
    # for non-uniform weights we compare with peft's ties of the pre-weighted task vectors (unit weights); trimming
    # is unaffected because a positive factor per model does not change that model's magnitude ranking.
    base, models = make_models(1)
    weights = [0.2, 1.0, 3.0]
    ones = torch.ones(T, dtype=torch.float64)
    merged, _ = run("ties", {"density": 0.5}, base, models, weights=weights)
    for name in LAYOUT:
        weighted = [w * tv for w, tv in zip(rescaled(weights), task_vectors(base, models, name))]
        assert close(merged[name], base[name] + peft_merge.ties(weighted, ones, 0.5, majority_sign_method="total"))


def test_ties_sum_merge():
    base, models = make_models()
    merged, _ = run("ties", {"density": 1.0, "merge": "sum"}, base, models)
    for name in LAYOUT:
        tv = task_vectors(base, models, name)
        elected = torch.where(tv.sum(0) >= 0, 1.0, -1.0)
        expected = base[name] + (tv * (tv.sign() == elected)).sum(0)
        assert close(merged[name], expected)


def seeded_peft_drop(tv, density, seed, name):
    """peft's random pruning with torch's global RNG seeded as our per-tensor generator is (same draw, same mask)."""
    dropped = []
    for t, tensor in enumerate(tv):
        torch.manual_seed(dare_seed(seed, name, t))
        dropped.append(peft_merge.prune(tensor, density, method="random", rescale=True))
    return dropped


def test_dare_linear_matches_peft_with_the_same_drop_mask():
    base, models = make_models()
    weights = [0.5, 1.0, 2.0]
    merged, _ = run("dare_linear", {"density": 0.4, "seed": 3}, base, models, weights=weights)
    for name in LAYOUT:
        dropped = seeded_peft_drop(task_vectors(base, models, name), 0.4, 3, name)
        assert close(merged[name], base[name] + 0.3 * peft_merge.task_arithmetic(dropped, rescaled(weights)))


def test_dare_ties_matches_peft_with_the_same_drop_mask():
    base, models = make_models()
    ones = torch.ones(T, dtype=torch.float64)
    merged, _ = run("dare_ties", {"density": 0.6, "seed": 5}, base, models)
    for name in LAYOUT:
        dropped = seeded_peft_drop(task_vectors(base, models, name), 0.6, 5, name)
        with warnings.catch_warnings():  # density 1: peft's sign election and disjoint merge without pruning
            warnings.simplefilter("ignore")
            expected = base[name] + peft_merge.ties(dropped, ones, 1.0, majority_sign_method="total")
        assert close(merged[name], expected)


def test_dare_at_full_density_is_the_undropped_method():
    base, models = make_models()
    a, _ = run("dare_linear", {"density": 1.0}, base, models)
    b, _ = run("task_arithmetic", None, base, models)
    c, _ = run("dare_ties", {"density": 1.0}, base, models)
    d, _ = run("ties", {"density": 1.0}, base, models)
    assert all(close(a[n], b[n]) and close(c[n], d[n]) for n in LAYOUT)


def test_dare_is_seeded_order_independent_and_rescales():
    big = {"w": ((60, 50), Group.TRUNCATABLE), "b": ((50,), Group.VECTOR)}
    base, models = make_models(2, layout=big)
    groups = {n: g for n, (_, g) in big.items()}
    parameters = {"density": 0.3, "seed": 11, "lambda": 1.0}
    one, report = run("dare_linear", parameters, base, models, groups=groups)
    again, _ = run("dare_linear", parameters, base, models, groups=dict(reversed(groups.items())))
    other, _ = run("dare_linear", {**parameters, "seed": 12}, base, models, groups=groups)
    assert all(torch.equal(one[n], again[n]) for n in big)
    assert not torch.equal(one["w"], other["w"])
    assert all(abs(f - 0.3) < 0.03 for f in report["kept_fraction"])
    # one specialist alone: every entry is either dropped or rescaled by exactly 1/density
    single, _ = run("dare_linear", parameters, base, models[:1], groups=groups)
    tv, out = models[0]["w"] - base["w"], single["w"] - base["w"]
    kept = out != 0
    assert close(out[kept], tv[kept] / 0.3)
    assert abs(kept.double().mean().item() - 0.3) < 0.03


# --- TIES global trim ----------------------------------------------------------------------------------------------


def brute_force_global_ties(base, models, density, names):
    """Per specialist, the ⌊density·P⌋ largest |τt| over the whole model, then sign election and disjoint mean."""
    tvs = {n: task_vectors(base, models, n) for n in names}
    flat = torch.cat([tvs[n].reshape(T, -1) for n in names], dim=1)
    k = int(density * flat.shape[1])
    thresholds = flat.abs().topk(k, dim=1).values[:, -1]
    merged = {}
    for n in names:
        tv = tvs[n]
        trimmed = tv * (tv.abs() >= thresholds.view(-1, *([1] * (tv.dim() - 1))))
        agree = trimmed.sign() == torch.where(trimmed.sum(0) >= 0, 1.0, -1.0)
        merged[n] = base[n] + (trimmed * agree).sum(0) / agree.sum(0).clamp(min=1)
    return merged


def test_ties_global_matches_brute_force_and_differs_from_per_tensor():
    base, models = make_models(3)
    merged, report = run("ties", {"density": 0.25, "trim": "global"}, base, models)
    per_tensor, _ = run("ties", {"density": 0.25}, base, models)
    expected = brute_force_global_ties(base, models, 0.25, list(LAYOUT))
    assert all(close(merged[n], expected[n]) for n in LAYOUT)
    assert any(not close(merged[n], per_tensor[n]) for n in LAYOUT)
    assert report["trim"] == "global" and len(report["global_thresholds"]) == T


def test_ties_global_keeps_exactly_k_in_float32():
    base, models = make_models(4)
    base = {n: t.float() for n, t in base.items()}
    models = [{n: t.float() for n, t in m.items()} for m in models]
    _, report = merge_state_dicts("ties", {"density": 0.1, "trim": "global"}, base, models, GROUPS)
    total = sum(torch.Size(s).numel() for s, _ in LAYOUT.values())
    assert all(round(f * total) == int(0.1 * total) for f in report["kept_fraction"])


def test_ties_global_statistics_reduce_across_processes():
    base, models = make_models(5)
    names = list(LAYOUT)
    halves = [names[::2], names[1::2]]
    whole, _ = run("ties", {"density": 0.3, "trim": "global"}, base, models)
    parts = [build_method("ties", {"density": 0.3, "trim": "global"}, ["a", "b", "c"]) for _ in halves]

    def slots(half):
        from r2m_hf.methods.base import TensorSlot

        return [TensorSlot(n, GROUPS[n], base[n], torch.stack([m[n] for m in models]), i) for i, n in enumerate(half)]

    for pass_index in range(parts[0].statistics_passes):
        for method, half in zip(parts, halves):
            for slot in slots(half):
                method.observe(pass_index, slot)
        buffers = [[], []]
        for method, buffer in zip(parts, buffers):
            method.reduce(pass_index, buffer.append)
        for a, b in zip(*buffers):
            a += b
            b.copy_(a)
        for method in parts:
            method.end_pass(pass_index)
    for method, half in zip(parts, halves):
        for slot in slots(half):
            assert torch.equal(method.merge(slot), whole[slot.name])


# --- shared properties -------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("method", "parameters"),
    [
        ("average", None),
        ("task_arithmetic", {"lambda": 1 / T}),
        ("ties", {"density": 1.0}),
        ("ties", {"density": 1.0, "trim": "global"}),
        ("dare_linear", {"density": 1.0, "lambda": 1 / T}),
        ("dare_ties", {"density": 1.0}),
        ("cart", None),
        ("model_stock", None),
    ],
)
def test_identical_specialists_give_the_specialist(method, parameters):
    base, models = make_models(14)
    same = [models[0]] * T
    merged, _ = run(method, parameters, base, same)
    assert all(close(merged[n], models[0][n]) for n in LAYOUT)


@pytest.mark.parametrize(
    ("method", "parameters"),
    [
        ("average", None),
        ("task_arithmetic", {"lambda": 1 / T}),
        ("ties", {"density": 1.0, "lambda": 1 / T}),
        ("dare_linear", {"density": 1.0, "lambda": 1 / T}),
        ("dare_ties", {"density": 1.0, "lambda": 1 / T}),
        ("cart", None),
    ],
)
def test_a_zero_weight_removes_a_specialist(method, parameters):
    # weights [1, 0, 0] reach the method as [T, 0, 0] (w·N/Σw): a summing rule needs λ = 1/T to give the specialist
    base, models = make_models(15)
    merged, _ = run(method, parameters, base, models, weights=[1.0, 0.0, 0.0])
    assert all(close(merged[n], models[0][n]) for n in LAYOUT)
