"""Tests of the baseline merge methods: peft cross-checks, the papers' equations written out independently in float64,
TIES's global trim, DARE's seeding, the vector-rule fallbacks, weights, and parameter validation."""

from __future__ import annotations

import json
import warnings

import pytest
import torch
from peft.utils import merge_utils as peft_merge

from r2m_hf.engine import build_method, merge_state_dicts
from r2m_hf.errors import ConfigError, MethodError
from r2m_hf.groups import Group
from r2m_hf.methods._common import dare_seed
from r2m_hf.methods.registry import available_methods

torch.set_num_threads(1)

T = 3
BASELINES = [
    "average",
    "task_arithmetic",
    "ties",
    "dare_linear",
    "dare_ties",
    "cart",
    "tsv_m",
    "iso_c",
    "iso_cts",
    "model_stock",
]
# name -> (shape, group). 12×8 and 6×10 are SVD-eligible (tall and wide); 3×7 is eligible but Iso-CTS has s = 0;
# 2×16 has a smaller side below T; "proj" is an eligible matrix outside the truncatable group.
LAYOUT = {
    "blocks.0.attn.query.weight": ((12, 8), Group.TRUNCATABLE),
    "blocks.0.mlp.fc2.weight": ((6, 10), Group.TRUNCATABLE),
    "blocks.0.attn.query.bias": ((12,), Group.VECTOR),
    "blocks.0.norm.weight": ((8,), Group.VECTOR),
    "patch.weight": ((4, 3, 2, 2), Group.SUBSPACE),
    "proj.weight": ((9, 5), Group.SUBSPACE),
    "narrow.weight": ((3, 7), Group.SUBSPACE),
    "tiny.weight": ((2, 16), Group.SUBSPACE),
}
GROUPS = {name: group for name, (_, group) in LAYOUT.items()}
MATRICES = ["blocks.0.attn.query.weight", "blocks.0.mlp.fc2.weight", "proj.weight", "narrow.weight"]


def make_models(seed: int = 0, n: int = T, layout=LAYOUT):
    """A base and `n` specialists with a shared and a private part in every task vector."""
    gen = torch.Generator().manual_seed(seed)
    base, models = {}, [{} for _ in range(n)]
    for name, (shape, _) in layout.items():
        base[name] = torch.randn(shape, generator=gen, dtype=torch.float64)
        shared = 0.5 * torch.randn(shape, generator=gen, dtype=torch.float64)
        for m in models:
            m[name] = base[name] + shared + torch.randn(shape, generator=gen, dtype=torch.float64)
    return base, models


def task_vectors(base, models, name):
    return torch.stack([m[name] - base[name] for m in models])


def run(method, parameters=None, base=None, models=None, groups=GROUPS, **kwargs):
    if models is None:
        base, models = make_models()
    return merge_state_dicts(method, parameters, base, models, groups, dtype=torch.float64, **kwargs)


def close(a, b, tol=1e-10):
    return torch.allclose(a, b, atol=tol, rtol=tol)


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
        expected = base[name] + 0.4 * peft_merge.task_arithmetic(tv, torch.tensor(weights, dtype=torch.float64))
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
        weighted = [w * tv for w, tv in zip(weights, task_vectors(base, models, name))]
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
    weights = torch.tensor([0.5, 1.0, 2.0], dtype=torch.float64)
    merged, _ = run("dare_linear", {"density": 0.4, "seed": 3}, base, models, weights=weights.tolist())
    for name in LAYOUT:
        dropped = seeded_peft_drop(task_vectors(base, models, name), 0.4, 3, name)
        assert close(merged[name], base[name] + 0.3 * peft_merge.task_arithmetic(dropped, weights))


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


# --- SVD methods against the papers' equations -------------------------------------------------------------------


def polar(a):
    u, _, vh = torch.linalg.svd(a, full_matrices=False)
    return u @ vh


def vector_rule(base, models, name, lam=1.0):
    return base[name] + lam * task_vectors(base, models, name).mean(0)


def reference_tsv_m(deltas):
    k = min(deltas.shape[1:]) // deltas.shape[0]
    us, ss, vs = [], [], []
    for d in deltas:
        u, s, vh = torch.linalg.svd(d, full_matrices=False)
        us.append(u[:, :k]), ss.append(s[:k]), vs.append(vh[:k].T)
    u, s, v = torch.cat(us, 1), torch.cat(ss), torch.cat(vs, 1)
    return polar(u) @ torch.diag(s) @ polar(v).T


def reference_iso_c(deltas):
    u, s, vh = torch.linalg.svd(deltas.sum(0), full_matrices=False)
    return s.mean() * u @ vh


def reference_iso_cts(deltas, fraction):
    # the authors' layout: task-specific blocks first, then the common space
    n, r = deltas.shape[0], min(deltas.shape[1:])
    common = int(r * fraction)
    common = r - round((r - common) / n) * n
    per_task = (r - common) // n
    if per_task == 0:
        return None  # s = 0: the method falls back to the vector rule
    u, s, vh = torch.linalg.svd(deltas.sum(0), full_matrices=False)
    uc, sc, vhc = u[:, :common], s[:common], vh[:common]
    us, ss, vhs = [], [], []
    for d in deltas:
        ut, st, vht = torch.linalg.svd(d - uc @ uc.T @ d, full_matrices=False)
        us.append(ut[:, :per_task]), ss.append(st[:per_task]), vhs.append(vht[:per_task])
    u_all, s_all, vh_all = torch.cat(us + [uc], 1), torch.cat(ss + [sc]), torch.cat(vhs + [vhc], 0)
    return s_all.mean() * polar(u_all) @ polar(vh_all)


@pytest.mark.parametrize(
    ("method", "reference", "parameters"),
    [
        ("tsv_m", reference_tsv_m, {"lambda": 0.9}),
        ("iso_c", reference_iso_c, {"lambda": 0.9}),
        ("iso_cts", lambda d: reference_iso_cts(d, 0.8), {"lambda": 0.9}),
        ("iso_cts", lambda d: reference_iso_cts(d, 0.5), {"lambda": 0.9, "common_fraction": 0.5}),
    ],
)
def test_svd_methods_match_the_papers(method, reference, parameters):
    base, models = make_models(6)
    merged, report = run(method, parameters, base, models)
    svd_names = [n for n in MATRICES if reference(task_vectors(base, models, n)) is not None]
    for name in LAYOUT:
        if name in svd_names:
            expected = base[name] + 0.9 * reference(task_vectors(base, models, name))
        else:  # vector group, 4-D, smaller side below T, and (Iso-CTS) s = 0: the mean task vector, never zero
            expected = vector_rule(base, models, name, 0.9)
            assert not close(merged[name], base[name])
        assert close(merged[name], expected), name
    assert report["tensors"] == {"svd": len(svd_names), "vector_rule": len(LAYOUT) - len(svd_names)}
    # f = 0.8: s = 0 on the 9×5 and 3×7 matrices; f = 0.5 leaves every eligible matrix an s ≥ 1
    assert len(svd_names) == {"iso_cts": 2 if parameters.get("common_fraction", 0.8) == 0.8 else 4}.get(method, 4)


def test_tsv_m_sums_task_vectors_with_orthogonal_low_rank_supports():
    # the paper's motivation: with disjoint singular subspaces of rank ≤ ⌊r/T⌋, TSV-M is exact task arithmetic
    gen = torch.Generator().manual_seed(7)
    left, _ = torch.linalg.qr(torch.randn(12, 6, generator=gen, dtype=torch.float64))
    right, _ = torch.linalg.qr(torch.randn(8, 6, generator=gen, dtype=torch.float64))
    base = {"w": torch.randn(12, 8, generator=gen, dtype=torch.float64)}
    models = []
    for t in range(T):
        sigma = torch.diag(torch.rand(2, generator=gen, dtype=torch.float64) + 1)
        models.append({"w": base["w"] + left[:, 2 * t : 2 * t + 2] @ sigma @ right[:, 2 * t : 2 * t + 2].T})
    merged, _ = run("tsv_m", None, base, models, groups={"w": Group.TRUNCATABLE})
    assert close(merged["w"], base["w"] + task_vectors(base, models, "w").sum(0))


def test_iso_c_flattens_the_spectrum():
    base, models = make_models(8)
    merged, _ = run("iso_c", None, base, models)
    s = torch.linalg.svdvals(merged["proj.weight"] - base["proj.weight"])
    target = torch.linalg.svdvals(task_vectors(base, models, "proj.weight").sum(0)).mean()
    assert close(s, torch.full_like(s, target.item()), 1e-9)


def test_iso_cts_with_one_direction_per_task_on_a_square_matrix():
    # r = 3 = T with f = 0: s = 1, k = 0 (no common space) -- the smallest Iso-CTS that is not a fallback
    layout = {"w": ((3, 5), Group.SUBSPACE)}
    base, models = make_models(9, layout=layout)
    merged, report = run("iso_cts", {"common_fraction": 0.0}, base, models, groups={"w": Group.SUBSPACE})
    assert close(merged["w"], base["w"] + reference_iso_cts(task_vectors(base, models, "w"), 0.0))
    assert report["tensors"]["svd"] == 1


def test_cart_matches_the_paper():
    base, models = make_models(10)
    merged, report = run("cart", {"rank_ratio": 0.3, "lambda": 0.7}, base, models)
    for name in LAYOUT:
        tv = task_vectors(base, models, name)
        mean = tv.mean(0)
        expected = base[name] + mean
        if GROUPS[name] is Group.TRUNCATABLE:
            k = max(1, int(0.3 * min(tv.shape[1:])))
            for c in tv - mean:
                u, s, vh = torch.linalg.svd(c, full_matrices=False)
                expected = expected + 0.7 * (u[:, :k] * s[:k]) @ vh[:k]
        assert close(merged[name], expected), name
    assert report["tensors"] == {"low_rank": 2, "average": len(LAYOUT) - 2}
    assert report["ranks"] == {"min": 1, "max": 2}


def test_cart_randomized_svd_is_close_to_exact():
    # task vectors with a decaying spectrum plus noise, as fine-tuning deltas have
    gen = torch.Generator().manual_seed(11)
    base = {"w": torch.randn(80, 60, generator=gen, dtype=torch.float64)}
    spectrum = 10 * torch.exp(-torch.arange(30, dtype=torch.float64) / 3)
    models = []
    for _ in range(T):
        u, _ = torch.linalg.qr(torch.randn(80, 30, generator=gen, dtype=torch.float64))
        v, _ = torch.linalg.qr(torch.randn(60, 30, generator=gen, dtype=torch.float64))
        noise = 0.01 * torch.randn(80, 60, generator=gen, dtype=torch.float64)
        models.append({"w": base["w"] + (u * spectrum) @ v.T + noise})
    groups = {"w": Group.TRUNCATABLE}
    exact, _ = run("cart", {"rank_ratio": 0.1}, base, models, groups=groups)
    fast, _ = run("cart", {"rank_ratio": 0.1, "svd": "randomized"}, base, models, groups=groups)
    average, _ = run("average", None, base, models, groups=groups)
    low_rank = (exact["w"] - average["w"]).norm()
    assert (exact["w"] - fast["w"]).norm() < 0.02 * low_rank


def test_model_stock_matches_the_paper():
    base, models = make_models(12)
    merged, report = run("model_stock", None, base, models)
    for name in LAYOUT:
        tv = task_vectors(base, models, name).reshape(T, -1)
        pairs = [(i, j) for i in range(T) for j in range(i + 1, T)]
        cosines = [torch.nn.functional.cosine_similarity(tv[i], tv[j], dim=0) for i, j in pairs]
        cos = torch.stack(cosines).mean()
        t = T * cos / (1 + (T - 1) * cos)
        expected = t * torch.stack([m[name] for m in models]).mean(0) + (1 - t) * base[name]
        assert close(merged[name], expected), name
    assert report["tensors"] == len(LAYOUT) and 0 < report["t_min"] <= report["t_max"] < 1


def test_model_stock_guards():
    layout = {"w": ((4, 5), Group.SUBSPACE)}
    base, models = make_models(13, layout=layout)
    groups = {"w": Group.SUBSPACE}
    # a zero task vector counts as orthogonal: finite, and pulled towards θ0
    frozen = [models[0], models[1], {"w": base["w"].clone()}]
    merged, _ = run("model_stock", None, base, frozen, groups=groups)
    assert torch.isfinite(merged["w"]).all()
    # opposite task vectors (1 + (T−1) cos φ = 0): θ0, not inf
    opposite = [models[0], {"w": 2 * base["w"] - models[0]["w"]}]
    merged, _ = run("model_stock", None, base, opposite, groups=groups)
    assert close(merged["w"], base["w"])
    with pytest.raises(MethodError):
        run("model_stock", None, base, models[:1], groups=groups)


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
        ("task_arithmetic", {"lambda": 1.0}),
        ("ties", {"density": 1.0}),
        ("dare_linear", {"density": 1.0, "lambda": 1.0}),
        ("dare_ties", {"density": 1.0}),
        ("cart", None),
    ],
)
def test_a_zero_weight_removes_a_specialist(method, parameters):
    base, models = make_models(15)
    merged, _ = run(method, parameters, base, models, weights=[1.0, 0.0, 0.0])
    assert all(close(merged[n], models[0][n]) for n in LAYOUT)


@pytest.mark.parametrize("method", ["tsv_m", "iso_c", "iso_cts"])
def test_svd_methods_scale_with_uniform_weights_and_keep_the_normalised_vector_rule(method):
    base, models = make_models(16)
    one, _ = run(method, None, base, models)
    two, _ = run(method, None, base, models, weights=[2.0] * T)
    for name in LAYOUT:
        eligible = name in MATRICES and (method != "iso_cts" or name not in ("narrow.weight", "proj.weight"))
        factor = 2.0 if eligible else 1.0
        assert close(two[name] - base[name], factor * (one[name] - base[name]), 1e-9), name
