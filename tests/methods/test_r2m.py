"""R²M through the engine (`merge_state_dicts`) against the independent float64 reference, and the properties listed
in ``docs/method.md``. The pure steps of the rule are tested one by one in test_r2m_math.py, the report, warnings,
parameter errors and the parts' interactions in test_r2m_report.py."""

from __future__ import annotations

import math

import pytest
import torch

# tests/ is not a package: pytest puts this folder on sys.path
from r2m_cases import F64, GROUPS, TOL, make_models, max_diff, mean_model, per_matrix_ranks, run
from r2m_reference import coefficients_from_eigenvectors, r2m_reference

from r2m_hf.engine import build_method, merge_state_dicts
from r2m_hf.groups import Group

# ---------------------------------------------------------------------------------------------- against the reference
OPTION_CASES = [
    pytest.param({}, id="defaults"),
    pytest.param({"real_rank": 2}, id="k2"),
    pytest.param({"real_rank": 3}, id="k3"),
    pytest.param({"center": True}, id="center"),
    pytest.param({"block_weight": "fro"}, id="bw-fro"),
    pytest.param({"block_weight": "size"}, id="bw-size"),
    pytest.param({"real_scope": "layer"}, id="scope-layer"),
    pytest.param({"blend": 0.0}, id="blend0"),
    pytest.param({"blend": 0.5}, id="blend0.5"),
    pytest.param({"residual_rank_ratio": 0.0}, id="rho0"),
    pytest.param({"residual_rank_ratio": 0.25}, id="rho0.25"),
    pytest.param({"residual_rank_ratio": 0.5}, id="rho0.5"),
    pytest.param({"residual_rank_ratio": 1.0}, id="rho1"),
    pytest.param({"residual_energy": 0.5}, id="energy0.5"),
    pytest.param({"residual_energy": 0.9}, id="energy0.9"),
    pytest.param({"residual_energy": 1.0}, id="energy1"),
    pytest.param({"norm_matching": "layer"}, id="nm-layer"),
    pytest.param({"norm_matching": "none"}, id="nm-none"),
    pytest.param({"alpha": 0.0}, id="alpha0"),
    pytest.param({"alpha": 1.5}, id="alpha1.5"),
    pytest.param({"alpha": 3.0}, id="alpha3"),
    pytest.param({"eta": "kit"}, id="eta-kit"),
    pytest.param({"eta": "fixed"}, id="eta-fixed"),
    pytest.param({"svd": "exact"}, id="svd-exact"),
    pytest.param({"real_rank": 2, "center": True, "block_weight": "fro"}, id="combo-k2-center-fro"),
    pytest.param(
        {"real_scope": "layer", "block_weight": "size", "real_rank": 2, "norm_matching": "layer"},
        id="combo-layer-size-k2-nmlayer",
    ),
    pytest.param({"blend": 0.5, "residual_energy": 0.9, "eta": "fixed", "alpha": 3.0}, id="combo-blend-energy-fixed"),
    pytest.param(
        {"real_scope": "layer", "residual_rank_ratio": 0.5, "norm_matching": "none", "eta": "kit", "alpha": 0.2},
        id="combo-layer-rho0.5-nmnone-kit",
    ),
    pytest.param(
        {"center": True, "real_scope": "layer", "blend": 0.25, "residual_rank_ratio": 1.0, "norm_matching": "layer"},
        id="combo-center-layer-blend-rho1",
    ),
    pytest.param({"residual_rank_ratio": 0.0, "alpha": 0.0}, id="combo-rho0-alpha0"),
]


@pytest.mark.parametrize("params", OPTION_CASES)
@pytest.mark.parametrize("n", [3, 4])
def test_matches_reference(n, params):
    base, models = make_models(n, seed=n)
    merged, report = run(params, base, models)
    ref = r2m_reference(base, models, GROUPS, **params)
    assert max_diff(merged, ref.merged) < TOL

    assert report["core_norm"] == pytest.approx(ref.core_norm, rel=1e-9)
    assert report["residual_norm"] == pytest.approx(ref.residual_norm, rel=1e-9, abs=1e-12)
    assert report["eta"] == pytest.approx(ref.eta, rel=1e-9, abs=1e-12)
    assert report["residual_dropped"] == ref.residual_dropped
    assert report["residual_norms_before"] == pytest.approx(ref.residual_norms_before, rel=1e-9, abs=1e-12)
    assert report["residual_norms_after"] == pytest.approx(ref.residual_norms_after, rel=1e-9, abs=1e-12)
    assert per_matrix_ranks(report) == ref.ranks_kept
    if params.get("real_scope", "global") == "global":
        lam1 = ref.eigenvalues[0]
        assert report["gram_eigenvalues"] == pytest.approx(ref.eigenvalues, abs=1e-9 * lam1)
        assert report["coefficients"] == pytest.approx(ref.coefficients, abs=1e-10)


@pytest.mark.parametrize("ratio", [0.1, 0.25])
def test_randomized_svd_close_to_exact_and_seeded(ratio):
    # random residuals have a flat spectrum, the hardest case for a range finder: allow 1% of the merge delta
    base, models = make_models(3, seed=11)
    params = {"svd": "randomized", "residual_rank_ratio": ratio}
    merged, _ = run(params, base, models)
    ref = r2m_reference(base, models, GROUPS, residual_rank_ratio=ratio)
    scale = max(float((ref.merged[k] - base[k]).abs().max()) for k in base)
    assert max_diff(merged, ref.merged) < 1e-2 * scale
    again, _ = run(params, base, models)
    assert max_diff(merged, again) == 0.0


@pytest.mark.parametrize(
    "params",
    [
        {"block_weight": "fro", "norm_matching": "layer"},
        {"block_weight": "size", "real_scope": "layer", "norm_matching": "layer", "residual_rank_ratio": 1.0},
        {"center": True, "real_scope": "layer", "real_rank": 2},
    ],
)
def test_tensor_no_specialist_changed(params):
    """‖T_l‖ = 0 (block weight 1/0) and ni = 0 (a residual that contributes nothing) must not produce NaN."""
    base, models = make_models(3, seed=15)
    frozen = [
        "encoder.layer.0.output.dense.weight",
        "embeddings.position_embeddings",
        "encoder.layer.0.layernorm_before.bias",
    ]
    for m in models:
        for name in frozen:
            m[name] = base[name].clone()
    merged, report = run(params, base, models)
    assert all(torch.isfinite(t).all() for t in merged.values())
    for name in frozen[:2]:  # S tensors: core 0, residuals 0 (V tensors still get η·τres from the global mix)
        assert torch.equal(merged[name], base[name])
    ref = r2m_reference(base, models, GROUPS, **params)
    assert max_diff(merged, ref.merged) < TOL
    assert report["core_norm"] == pytest.approx(ref.core_norm, rel=1e-9)


def test_float32_compute_close_to_reference():
    base, models = make_models(3, seed=5)
    merged, _ = run({}, base, models, dtype=torch.float32)
    ref = r2m_reference(base, models, GROUPS)
    assert all(t.dtype == torch.float32 for t in merged.values())
    assert max_diff(merged, ref.merged) < 1e-4


@pytest.mark.parametrize("params", [{}, {"real_scope": "layer", "norm_matching": "layer"}])
def test_float32_statistics_of_large_tensors_match_float64(params):
    """G, the norms and the R^l are float64 products over column chunks: on tensors of millions of entries the
    float32 merge stays within float32 rounding of the float64 one. Here the residuals nearly cancel in τres
    (‖τres‖ ≈ ‖fi‖ / 40, η ≈ 90): float32 products per chunk already move η by 2e-5, one float32 product over
    every column by far more."""
    groups = {"pos": Group.SUBSPACE, "w": Group.TRUNCATABLE, "b": Group.VECTOR}
    shapes = {"pos": (1, 1 << 21), "w": (256, 192), "b": (1 << 20,)}
    g = torch.Generator().manual_seed(40)
    base = {k: 0.02 * torch.randn(s, generator=g) for k, s in shapes.items()}
    shared = {k: 1e-3 * torch.randn(s, generator=g) for k, s in shapes.items()}
    models = [{k: base[k] + shared[k] + 1e-3 * torch.randn(s, generator=g) for k, s in shapes.items()} for _ in "abc"]
    params = {"svd": "exact", "residual_rank_ratio": 0.05, **params}
    run32 = merge_state_dicts("r2m", params, base, models, groups, dtype=torch.float32)
    base64 = {k: v.double() for k, v in base.items()}
    run64 = merge_state_dicts("r2m", params, base64, [{k: v.double() for k, v in m.items()} for m in models], groups,
                              dtype=F64)  # fmt: skip
    assert run64[1]["eta"] > 50
    for key in ("core_norm", "residual_norm", "eta"):
        assert run32[1][key] == pytest.approx(run64[1][key], rel=2e-6)
    assert run32[1]["coefficients"] == pytest.approx(run64[1]["coefficients"], rel=1e-7)
    for k in shapes:  # the float32 SVD and residuals themselves err by ~1e-5 of the merge delta
        delta32, delta64 = run32[0][k].double() - base64[k], run64[0][k] - base64[k]
        assert float((delta32 - delta64).norm() / delta64.norm()) < 3e-5


def test_the_caller_base_is_never_written_and_layer_scope_reads_twice():
    """R²M forms τi in place of the slot's stack of θi (the engine's own copy), never in θ0; with a per-tensor c
    the Gram and the residual statistics share one pass."""
    base, models = make_models(3, seed=6)
    kept = {k: v.clone() for k, v in base.items()}
    for params in ({}, {"real_scope": "layer"}, {"residual_cache": "recompute", "residual_energy": 0.8}):
        run(params, base, models)
        assert all(torch.equal(base[k], kept[k]) for k in base)
    assert build_method("r2m", {}, ["a", "b", "c"]).statistics_passes == 2
    assert build_method("r2m", {"real_scope": "layer"}, ["a", "b", "c"]).statistics_passes == 1


def test_small_truncatable_matrix_is_not_truncated():
    """docs/method.md: a matrix whose smaller side is below N never goes through an SVD (vector-group rule)."""
    groups = {"w": Group.TRUNCATABLE, "big": Group.TRUNCATABLE}
    g = torch.Generator().manual_seed(3)
    base = {"w": torch.randn(2, 12, generator=g, dtype=F64), "big": torch.randn(12, 12, generator=g, dtype=F64)}
    models = [{k: v + 0.1 * torch.randn(v.shape, generator=g, dtype=F64) for k, v in base.items()} for _ in range(3)]
    merged, _ = run({}, base, models, groups)
    ref = r2m_reference(base, models, groups)
    assert max_diff(merged, ref.merged) < TOL


# ---------------------------------------------------------------------------------------------- properties
IDENTICAL_GRID = [
    pytest.param({"residual_rank_ratio": rho, "alpha": alpha, "eta": eta}, id=f"rho{rho}-a{alpha}-{eta}")
    for rho in (0.0, 0.1, 0.5, 1.0)
    for alpha in (0.0, 0.6, 3.0)
    for eta in ("relative", "kit", "fixed")
] + [
    pytest.param(p, id=i)
    for i, p in [
        ("bw-fro", {"block_weight": "fro"}),
        ("bw-size", {"block_weight": "size"}),
        ("center", {"center": True}),
        ("scope-layer", {"real_scope": "layer", "residual_rank_ratio": 0.5}),
        ("nm-layer", {"norm_matching": "layer", "alpha": 3.0}),
        ("nm-none", {"norm_matching": "none", "eta": "fixed", "alpha": 3.0}),
        ("energy", {"residual_energy": 0.9, "alpha": 3.0}),
        ("k2", {"real_rank": 2}),
        ("blend", {"blend": 0.5, "residual_rank_ratio": 1.0}),
    ]
]


@pytest.mark.parametrize("params", IDENTICAL_GRID)
def test_identical_specialists_give_the_specialist(params):
    n = 3
    base, models = make_models(1, seed=7)
    models = [dict(models[0]) for _ in range(n)]
    merged, report = run(params, base, models)
    assert all(torch.isfinite(t).all() for t in merged.values())
    assert max_diff(merged, models[0]) < TOL
    assert report["coefficients"] == pytest.approx([1.0 / n] * n, abs=1e-12)
    tau_norm = math.sqrt(sum(float((models[0][k] - base[k]).pow(2).sum()) for k in base))
    assert report["core_norm"] == pytest.approx(tau_norm, rel=1e-12)
    assert max(report["residual_norms_before"]) < 1e-12 * tau_norm
    for key in ("core_norm", "residual_norm", "eta"):
        assert math.isfinite(report[key])
    assert report["eta"] * report["residual_norm"] < 1e-12 * tau_norm


PERMUTATION_CASES = [
    pytest.param({}, id="defaults"),
    pytest.param({"real_scope": "layer", "real_rank": 2}, id="layer-k2"),
    pytest.param({"residual_energy": 0.8, "norm_matching": "layer"}, id="energy-nmlayer"),
    pytest.param({"center": True, "block_weight": "fro", "blend": 0.5, "eta": "fixed", "alpha": 2.0}, id="mixed"),
]


@pytest.mark.parametrize("params", PERMUTATION_CASES)
def test_permutation_invariance(params):
    base, models = make_models(4, seed=21)
    perm = [2, 0, 3, 1]
    merged, report = run(params, base, models)
    merged_p, report_p = run(params, base, [models[j] for j in perm])
    assert max_diff(merged, merged_p) < TOL
    assert report_p["coefficients"] == pytest.approx([report["coefficients"][j] for j in perm], abs=1e-12)
    assert report_p["residual_norms_after"] == pytest.approx(
        [report["residual_norms_after"][j] for j in perm], rel=1e-9
    )


@pytest.mark.parametrize("k", [1, 2])
def test_eigenvector_sign_flip_changes_nothing(monkeypatch, k):
    base, models = make_models(4, seed=8)
    params = {"real_rank": k}
    merged, report = run(params, base, models)
    original = torch.linalg.eigh
    calls = []

    def flipped_eigh(a, *args, **kwargs):
        evals, evecs = original(a, *args, **kwargs)
        calls.append(1)
        signs = torch.tensor([(-1.0) ** (j + 1) for j in range(evecs.shape[-1])], dtype=evecs.dtype)
        return evals, evecs * signs

    monkeypatch.setattr(torch.linalg, "eigh", flipped_eigh)
    merged_f, report_f = run(params, base, models)
    if not calls:
        pytest.skip("the method does not use torch.linalg.eigh; the reference test below covers the sign")
    assert max_diff(merged, merged_f) < TOL
    assert report_f["coefficients"] == pytest.approx(report["coefficients"], abs=1e-12)


def test_reference_coefficients_are_sign_free():
    base, models = make_models(4, seed=9)
    u = torch.linalg.qr(torch.randn(4, 2, generator=torch.Generator().manual_seed(0), dtype=F64))[0]
    c = coefficients_from_eigenvectors(u)
    for signs in ([-1.0, -1.0], [-1.0, 1.0], [1.0, -1.0]):
        assert torch.allclose(coefficients_from_eigenvectors(u * torch.tensor(signs, dtype=F64)), c, atol=1e-15)
    plain = r2m_reference(base, models, GROUPS, real_rank=2)
    flipped = r2m_reference(base, models, GROUPS, real_rank=2, eigenvector_signs=[-1.0, 1.0])
    assert max_diff(plain.merged, flipped.merged) < 1e-14


@pytest.mark.parametrize("params", [{}, {"block_weight": "size"}, {"center": True}, {"real_scope": "layer"}])
@pytest.mark.parametrize("n", [3, 4])
def test_full_rank_core_is_the_mean(n, params):
    base, models = make_models(n, seed=30 + n)
    mean = mean_model(base, models)
    merged, report = run({**params, "real_rank": n, "residual_rank_ratio": 0.0}, base, models)
    assert max_diff(merged, mean) < TOL
    if params.get("real_scope", "global") == "global":
        assert report["coefficients"] == pytest.approx([1.0 / n] * n, abs=1e-12)
    _, report_full = run({**params, "real_rank": n}, base, models)
    mean_norm = math.sqrt(sum(float((mean[k] - base[k]).pow(2).sum()) for k in base))
    assert report_full["core_norm"] == pytest.approx(mean_norm, rel=1e-12)


def test_blend_zero_gives_the_mean():
    base, models = make_models(3, seed=12)
    mean = mean_model(base, models)
    merged, _ = run({"blend": 0.0, "residual_rank_ratio": 0.0}, base, models)
    assert max_diff(merged, mean) < TOL
    # untruncated, unweighted residuals of the mean core sum to zero: the residual term vanishes
    merged, report = run({"blend": 0.0, "residual_rank_ratio": 1.0, "norm_matching": "none"}, base, models)
    assert max_diff(merged, mean) < TOL
    assert report["residual_dropped"] is True


@pytest.mark.parametrize("eta", ["relative", "kit", "fixed"])
@pytest.mark.parametrize("core", [{}, {"real_rank": 2, "block_weight": "fro"}, {"real_scope": "layer"}])
def test_no_residual_gives_the_core(core, eta):
    base, models = make_models(3, seed=13)
    ref = r2m_reference(base, models, GROUPS, **core, residual_rank_ratio=0.0)
    expected = {k: base[k] + ref.core[k] for k in base}
    merged_rho0, report = run({**core, "eta": eta, "alpha": 2.0, "residual_rank_ratio": 0.0}, base, models)
    assert max_diff(merged_rho0, expected) < TOL
    assert report["residual_norm"] == 0.0
    merged_alpha0, _ = run({**core, "eta": eta, "alpha": 0.0, "residual_rank_ratio": 0.5}, base, models)
    assert max_diff(merged_alpha0, expected) < TOL


@pytest.mark.parametrize(
    "params", [{}, {"residual_energy": 0.8}, {"norm_matching": "layer", "real_rank": 2}, {"real_scope": "layer"}]
)
@pytest.mark.parametrize("s", [0.05, 3.0])
def test_scaling_task_vectors_scales_the_merge(params, s):
    base, models = make_models(3, seed=14)
    scaled = [{k: base[k] + s * (m[k] - base[k]) for k in base} for m in models]
    merged, report = run(params, base, models)
    merged_s, report_s = run(params, base, scaled)
    delta = {k: s * (merged[k] - base[k]) for k in base}
    delta_s = {k: merged_s[k] - base[k] for k in base}
    assert max_diff(delta, delta_s) < TOL * max(1.0, s)
    assert report_s["core_norm"] == pytest.approx(s * report["core_norm"], rel=1e-10)
    assert report_s["eta"] == pytest.approx(report["eta"], rel=1e-9)
    assert report_s["coefficients"] == pytest.approx(report["coefficients"], abs=1e-12)
