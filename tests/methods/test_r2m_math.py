"""Each pure step of R²M's rule (``r2m_hf/methods/_r2m_math.py``) on its own, on small tensors against hand
computations, then the steps composed by hand for a one-tensor model against the float64 reference."""

from __future__ import annotations

import math

import pytest
import torch

# tests/ is not a package: pytest puts this folder on sys.path
from r2m_reference import coefficients_from_eigenvectors, r2m_reference

from r2m_hf.groups import Group
from r2m_hf.methods import _r2m_math as rule

F64 = torch.float64


def t(rows) -> torch.Tensor:
    return torch.tensor(rows, dtype=F64)


# ---------------------------------------------------------------------------------------------- G and c
def test_gram_block_plain_centred_and_weighted():
    tm = t([[1.0, 2.0], [3.0, 4.0], [0.0, 1.0]])
    assert torch.equal(rule.gram_block(tm), t([[5, 11, 2], [11, 25, 4], [2, 4, 1]]))
    # centring: every row minus the mean of its own entries → [-.5, .5], [-.5, .5], [-.5, .5]
    assert torch.allclose(rule.gram_block(tm, center=True), torch.full((3, 3), 0.5, dtype=F64))
    trace = 5 + 25 + 1
    assert torch.allclose(rule.gram_block(tm, block_weight="fro"), rule.gram_block(tm) / trace)
    assert torch.allclose(rule.gram_block(tm, block_weight="size"), rule.gram_block(tm) * 2 / trace)


@pytest.mark.parametrize("block_weight", ["fro", "size"])
def test_gram_block_of_an_unchanged_tensor_is_zero_not_nan(block_weight):
    assert torch.equal(rule.gram_block(torch.zeros(3, 4, dtype=F64), block_weight=block_weight), torch.zeros(3, 3))


def test_coefficients_by_hand():
    # G = diag(3, 1, 1): U_1 = e1, c = (1/3) e1 e1ᵀ 1 = [1/3, 0, 0]
    c, evals = rule.real_core_coefficients(torch.diag(t([3.0, 1.0, 1.0])), 1)
    assert torch.allclose(c, t([1 / 3, 0.0, 0.0]), atol=1e-15)
    assert evals.tolist() == [3.0, 1.0, 1.0]
    # alike specialists: G = 1 1ᵀ, U_1 = 1/√3, c = 1/N each
    c, _ = rule.real_core_coefficients(torch.ones(3, 3, dtype=F64), 1)
    assert torch.allclose(c, torch.full((3,), 1 / 3, dtype=F64))


@pytest.mark.parametrize("k", [1, 2, 4])
def test_coefficients_match_the_reference_and_k_equal_n_gives_the_mean(k):
    a = torch.randn(4, 6, generator=torch.Generator().manual_seed(k), dtype=F64)
    gram = a @ a.T
    c, evals = rule.real_core_coefficients(gram, k)
    u = torch.linalg.eigh(gram).eigenvectors.flip(1)[:, :k]
    assert torch.allclose(c, coefficients_from_eigenvectors(u), atol=1e-12)
    assert torch.all(evals[:-1] >= evals[1:])
    if k == 4:
        assert torch.allclose(c, torch.full((4,), 0.25, dtype=F64))


def test_spectral_gap():
    evals = t([4.0, 2.0, 1.0])
    assert rule.spectral_gap(evals, 1) == 0.5
    assert rule.spectral_gap(evals, 2) == 0.25
    assert rule.spectral_gap(evals, 3) is None
    assert rule.spectral_gap(torch.zeros(3, dtype=F64), 1) is None


# ---------------------------------------------------------------------------------------------- the core
def test_real_core_projection_blend_and_mean():
    tv = t([[1.0, 0.0], [0.0, 2.0], [3.0, 3.0]])
    c = t([0.5, 0.25, 0.0])
    projected = t([0.5, 0.5])  # Σ ci τi
    mean = t([4 / 3, 5 / 3])
    assert torch.allclose(rule.real_core(tv, c), projected)
    assert torch.allclose(rule.real_core(tv, c, blend=0.25), 0.75 * mean + 0.25 * projected)
    assert torch.allclose(rule.real_core(tv, c, blend=0.0), mean)
    assert torch.allclose(rule.real_core(tv, None, blend=0.25), mean)  # the vector group: τ̄
    assert torch.allclose(rule.real_core(tv, torch.full((3,), 1 / 3, dtype=F64)), mean)


# ---------------------------------------------------------------------------------------------- truncation
@pytest.mark.parametrize(
    ("group", "shape", "ratio", "energy", "route"),
    [
        (Group.TRUNCATABLE, (8, 6), 0.0, None, "drop"),
        (Group.VECTOR, (8,), 0.0, None, "drop"),  # ρ = 0 drops every residual, not only the matrices'
        (Group.TRUNCATABLE, (8, 6), 0.0, 0.9, "truncate"),
        (Group.TRUNCATABLE, (8, 6), 0.1, None, "truncate"),
        (Group.TRUNCATABLE, (2, 6), 0.1, None, "keep"),  # smaller side below N = 3
        (Group.SUBSPACE, (8, 6), 0.1, None, "keep"),
        (Group.VECTOR, (8,), 0.1, None, "keep"),
    ],
)
def test_truncation_route(group, shape, ratio, energy, route):
    assert rule.truncation_route(group, shape, 3, ratio, energy) == route


def residuals_with_spectrum(spectra, m=7, n=5, seed=0):
    """N residuals fi = U diag(σi) Vᵀ with the given singular values."""
    g = torch.Generator().manual_seed(seed)
    out = []
    for sigma in spectra:
        u = torch.linalg.qr(torch.randn(m, len(sigma), generator=g, dtype=F64))[0]
        v = torch.linalg.qr(torch.randn(n, len(sigma), generator=g, dtype=F64))[0]
        out.append(u @ torch.diag(t(sigma)) @ v.T)
    return torch.stack(out)


def test_ratio_truncation_is_the_best_rank_r_approximation():
    residuals = residuals_with_spectrum([[5, 4, 3, 2, 1], [9, 1, 0.5, 0.2, 0.1], [2, 2, 2, 2, 2]])
    factors = rule.truncate_residuals(residuals, rank_ratio=0.5)  # r = ⌊0.5·5⌋ = 2
    assert [vh.shape[0] for _, vh in factors] == [2, 2, 2]
    truncated = rule.expand_factors(factors)
    for f, ft in zip(residuals, truncated, strict=True):
        u, s, vh = torch.linalg.svd(f, full_matrices=False)
        assert torch.allclose(ft, (u[:, :2] * s[:2]) @ vh[:2], atol=1e-12)
    assert rule.truncate_residuals(residuals, rank_ratio=1.0) is None  # r = min(m, n): nothing to truncate
    assert [vh.shape[0] for _, vh in rule.truncate_residuals(residuals, rank_ratio=0.01)] == [1, 1, 1]


def test_energy_truncation_picks_each_residuals_rank():
    # σ² = [9, 4, 1] (sum 14): e = 0.5 keeps 1 (9/14), e = 0.9 keeps 2 (13/14), e = 1 keeps 3
    residuals = residuals_with_spectrum([[3, 2, 1], [1, 1, 1]], m=6, n=4)
    for energy, ranks in ((0.5, [1, 2]), (0.9, [2, 3]), (1.0, [3, 3])):
        factors = rule.truncate_residuals(residuals, rank_ratio=0.03, energy=energy)
        assert [vh.shape[0] for _, vh in factors] == ranks
    full = rule.expand_factors(rule.truncate_residuals(residuals, rank_ratio=0.03, energy=1.0))
    assert torch.allclose(full, residuals, atol=1e-12)


def test_randomized_truncation_is_seeded():
    residuals = residuals_with_spectrum([[5, 4, 3, 2, 1]] * 3, m=40, n=30)
    first = rule.expand_factors(rule.truncate_residuals(residuals, rank_ratio=0.1, svd_method="randomized", seed=4))
    again = rule.expand_factors(rule.truncate_residuals(residuals, rank_ratio=0.1, svd_method="randomized", seed=4))
    assert torch.equal(first, again)


def test_core_weights_by_hand():
    c = t([0.5, 0.25, 0.0])
    assert torch.allclose(rule.core_weights(c, 3), c)
    assert torch.allclose(rule.core_weights(c, 3, blend=0.25), 0.75 * torch.full((3,), 1 / 3, dtype=F64) + 0.25 * c)
    assert torch.allclose(rule.core_weights(None, 4, blend=0.25), torch.full((4,), 0.25, dtype=F64))


@pytest.mark.parametrize("blend", [1.0, 0.3])
def test_residual_statistics_from_the_tensor_gram(blend):
    g = torch.Generator().manual_seed(4)
    tv = torch.randn(1, 40, generator=g, dtype=F64) + 0.2 * torch.randn(3, 40, generator=g, dtype=F64)
    c = t([0.4, 0.35, 0.2])
    core = rule.real_core(tv, c, blend)
    residuals = tv - core
    core_sq, residual_gram = rule.residual_statistics(tv @ tv.T, rule.core_weights(c, 3, blend))
    assert float(core_sq) == pytest.approx(float(core.pow(2).sum()), rel=1e-12)
    assert torch.allclose(residual_gram, residuals @ residuals.T, rtol=1e-10, atol=1e-14)


@pytest.mark.parametrize("energy", [None, 0.9])
def test_factor_gram_is_the_gram_of_the_truncated_residuals(energy):
    # the energy rule gives each residual its own rank: the blocks of the stacked factors differ in size
    residuals = residuals_with_spectrum([[5, 4, 3, 2, 1], [9, 1, 0.5, 0.2, 0.1], [2, 2, 2, 2, 2]], m=9, n=6)
    factors = rule.truncate_residuals(residuals, rank_ratio=0.5, energy=energy)
    if energy is not None:
        assert len({vh.shape[0] for _, vh in factors}) > 1
    flat = rule.expand_factors(factors).reshape(3, -1)
    assert torch.allclose(rule.factor_gram(factors), flat @ flat.T, atol=1e-12)


def test_combine_from_factors_equals_combine_from_the_truncated_residuals():
    residuals = residuals_with_spectrum([[5, 4, 3, 2, 1], [3, 1, 0.5, 0.2, 0.1]], m=7, n=5)
    factors = rule.truncate_residuals(residuals, rank_ratio=0.03, energy=0.8)
    g = torch.Generator().manual_seed(1)
    base, core = torch.randn(7, 5, generator=g, dtype=F64), torch.randn(7, 5, generator=g, dtype=F64)
    mix = t([0.7, 0.2])
    expected = rule.combine(base, core, rule.expand_factors(factors), 1.5, mix)
    assert torch.allclose(rule.combine(base, core, factors, 1.5, mix), expected, atol=1e-12)
    assert torch.equal(rule.combine(base, core, factors, 0.0, None), base + core)


# ---------------------------------------------------------------------------------------------- mix, η, combination
def test_norm_matching_mix_by_hand():
    a = rule.norm_matching_mix(t([1.0, 4.0, 9.0]))  # ni = 1, 2, 3; m̄ = 2
    assert torch.allclose(a, t([2 / 3, 1 / 3, 2 / 9]))
    assert torch.allclose(a * t([1.0, 2.0, 3.0]), torch.full((3,), 2 / 3, dtype=F64))  # every a_i ni = m̄/N
    assert torch.allclose(rule.norm_matching_mix(t([0.0, 4.0])), t([0.0, 0.25]))  # ni = 0 contributes nothing
    assert torch.allclose(rule.uniform_mix(4), torch.full((4,), 0.25, dtype=F64))


@pytest.mark.parametrize(
    ("mode", "expected"),
    [("relative", 1.5 * 4.0 / 0.5), ("kit", 1.5 * 4.0), ("fixed", 1.5)],
)
def test_residual_strength_modes(mode, expected):
    assert rule.residual_strength(mode, 1.5, 4.0, 0.5) == (pytest.approx(expected), False)
    assert rule.residual_strength(mode, 1.5, 4.0, 0.0) == (0.0, True)
    assert rule.residual_strength(mode, 1.5, 4.0, 1e-7 * 4.0) == (0.0, True)  # rounding noise is dropped


def test_residual_strength_rejects_an_unknown_mode():
    with pytest.raises(ValueError, match="eta"):
        rule.residual_strength("loud", 1.0, 1.0, 1.0)


def test_combine_by_hand():
    base, core = t([1.0, 1.0]), t([0.5, -0.5])
    truncated = t([[1.0, 0.0], [0.0, 2.0]])
    mix = t([0.5, 0.25])
    assert torch.allclose(rule.combine(base, core, truncated, 2.0, mix), t([2.5, 1.5]))
    assert torch.equal(rule.combine(base, core, truncated, 0.0, None), base + core)


def test_norm():
    assert rule.norm(t(9.0)) == 3.0
    assert rule.norm(-1e-18) == 0.0


# ---------------------------------------------------------------------------------------------- composed
@pytest.mark.parametrize(
    "params",
    [
        {},
        {"real_rank": 2, "blend": 0.5, "residual_rank_ratio": 0.25, "eta": "kit", "alpha": 0.6},
        {"center": True, "block_weight": "size", "residual_energy": 0.8, "eta": "fixed", "alpha": 2.0},
    ],
)
def test_the_steps_composed_give_the_reference(params):
    """A one-matrix model merged by calling the steps in order, as docs/method.md writes the rule."""
    p = {
        "real_rank": 1,
        "center": False,
        "block_weight": "none",
        "blend": 1.0,
        "residual_rank_ratio": 0.03,
        "residual_energy": None,
        "alpha": 1.5,
        "eta": "relative",
        **params,
    }
    n, g = 3, torch.Generator().manual_seed(2)
    base = {"w": torch.randn(16, 12, generator=g, dtype=F64)}
    shared = torch.randn(16, 12, generator=g, dtype=F64)
    models = [{"w": base["w"] + shared + 0.5 * torch.randn(16, 12, generator=g, dtype=F64)} for _ in range(n)]
    tau = torch.stack([m["w"] - base["w"] for m in models])

    gram = rule.gram_block(tau.reshape(n, -1), center=p["center"], block_weight=p["block_weight"])
    c, _ = rule.real_core_coefficients(gram, p["real_rank"])
    core = rule.real_core(tau, c, p["blend"])
    residuals = tau - core
    factors = rule.truncate_residuals(residuals, rank_ratio=p["residual_rank_ratio"], energy=p["residual_energy"])
    truncated = rule.expand_factors(factors)
    mix = rule.norm_matching_mix(truncated.reshape(n, -1).pow(2).sum(dim=1))
    eta, dropped = rule.residual_strength(
        p["eta"], p["alpha"], float(core.norm()), float(torch.tensordot(mix, truncated, dims=1).norm())
    )
    merged = rule.combine(base["w"], core, truncated, eta, mix)

    ref = r2m_reference(base, models, {"w": Group.TRUNCATABLE}, **params)
    assert not dropped and math.isclose(eta, ref.eta, rel_tol=1e-9)
    assert torch.allclose(merged, ref.merged["w"], atol=1e-10)
