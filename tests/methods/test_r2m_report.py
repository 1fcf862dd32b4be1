"""R²M's interactions (the rank budget decides whether the residual exists), its report and warnings, and its
parameter errors, through the engine on the miniature backbone of r2m_cases.py."""

from __future__ import annotations

import itertools
import json

import pytest
import torch

# tests/ is not a package: pytest puts this folder on sys.path
from r2m_cases import F64, GROUPS, SHAPES, make_models, mean_model, per_matrix_ranks, run, warnings_of
from r2m_reference import r2m_reference

from r2m_hf.errors import ConfigError
from r2m_hf.groups import Group


# ---------------------------------------------------------------------------------------------- interactions
def test_rank_budget_decides_whether_the_residual_exists():
    """τi = shared + si (shared rank 6, own parts rank 4, width 120, N = 3): at r = 4 and η = N the merge gets
    close to shared + Σ si; a budget that covers the others' parts falls back to averaging's error."""
    n, width = 3, 120
    g = torch.Generator().manual_seed(0)

    def low_rank(r):
        m = torch.randn(width, r, generator=g, dtype=F64) @ torch.randn(r, width, generator=g, dtype=F64)
        return m / m.norm()

    shared, own = low_rank(6), [low_rank(4) for _ in range(n)]
    base = {"w": torch.randn(width, width, generator=g, dtype=F64)}
    models = [{"w": base["w"] + shared + s} for s in own]
    groups = {"w": Group.TRUNCATABLE}
    target = shared + sum(own)

    def error(merged_w):
        return float((merged_w - base["w"] - target).norm() / target.norm())

    avg_error = error(mean_model(base, models)["w"])
    assert avg_error > 0.4

    def r2m_error(ratio, alpha):
        merged, report = run({"residual_rank_ratio": ratio, "eta": "fixed", "alpha": alpha}, base, models, groups)
        return error(merged["w"]), report

    err_n, report = r2m_error(4.5 / width, float(n))  # r = ⌊4.5⌋ = 4
    assert per_matrix_ranks(report) == {"w": [4, 4, 4]}
    err_1, _ = r2m_error(4.5 / width, 1.0)
    assert err_n < 0.5 * avg_error
    assert err_n < err_1 < avg_error
    for ratio in (0.1, 0.5):  # r = 12, 60: the other specialists' parts are kept too and cancel
        for alpha in (1.0, float(n)):
            err, _ = r2m_error(ratio, alpha)
            assert abs(err - avg_error) < 0.05 * avg_error


# ---------------------------------------------------------------------------------------------- report
def test_report_is_sane():
    n = 4
    base, models = make_models(n, seed=40)
    _, report = run({"real_rank": 2, "residual_rank_ratio": 0.25}, base, models)
    json.dumps(report)
    evals = report["gram_eigenvalues"]
    assert len(evals) == n and all(a >= b for a, b in itertools.pairwise(evals))
    ref = r2m_reference(base, models, GROUPS, real_rank=2, residual_rank_ratio=0.25)
    c = report["coefficients"]
    assert len(c) == n
    assert sum(c) == pytest.approx(sum(ref.coefficients), abs=1e-12)
    assert 0.0 < sum(c) <= 1.0 + 1e-12  # Σc = ‖U_kᵀ 1‖² / N
    assert isinstance(report["spectral_gap"], float) and 0.0 <= report["spectral_gap"] <= 1.0
    before, after = report["residual_norms_before"], report["residual_norms_after"]
    assert len(before) == len(after) == n
    assert all(a <= b * (1 + 1e-12) for a, b in zip(after, before, strict=True))
    assert any(a < b * 0.999 for a, b in zip(after, before, strict=True))
    assert report["core_norm"] > 0 and report["residual_norm"] > 0 and report["eta"] > 0
    assert report["residual_dropped"] is False
    assert "warnings" not in report  # the merge report carries them, from MergeMethod.warnings()


def _orthogonal_specialists(sizes, seed=0):
    """Specialists whose task vectors live on disjoint entries of one matrix (exactly orthogonal), of given norms."""
    n = len(sizes)
    groups = {"w": Group.TRUNCATABLE}
    g = torch.Generator().manual_seed(seed)
    base = {"w": torch.randn(12, 12, generator=g, dtype=F64)}
    models = []
    for i, size in enumerate(sizes):
        tau = torch.zeros(12, 12, dtype=F64)
        rows = slice(i * (12 // n), (i + 1) * (12 // n))
        tau[rows] = torch.randn(12 // n, 12, generator=g, dtype=F64)
        models.append({"w": base["w"] + size * tau / tau.norm()})
    return base, models, groups


def test_warns_when_c_is_far_from_uniform():
    base, models, groups = _orthogonal_specialists([10.0, 1.0, 0.5])
    _, report = run({}, base, models, groups)
    c = report["coefficients"]
    assert c[0] == pytest.approx(1 / 3, abs=1e-3) and abs(c[1]) < 0.01 and abs(c[2]) < 0.01
    text = " ".join(warnings_of({}, base, models, groups)).lower()
    assert "uniform" in text or "coefficient" in text


def test_warns_when_the_spectral_gap_is_small():
    base, models, groups = _orthogonal_specialists([1.0, 1.001, 1.002])
    _, report = run({}, base, models, groups)
    assert report["spectral_gap"] < 0.01
    assert any("gap" in w.lower() for w in warnings_of({}, base, models, groups))


def test_no_warning_for_alike_specialists():
    base, models = make_models(3, seed=41, shared=1.0, own=0.05)
    _, report = run({}, base, models)
    assert report["coefficients"] == pytest.approx([1 / 3] * 3, abs=0.02)
    assert warnings_of({}, base, models) == []


# ---------------------------------------------------------------------------------------------- bad parameters
@pytest.mark.parametrize(
    "params, key",
    [
        ({"rank": 2}, "rank"),
        ({"eta": "foo"}, "eta"),
        ({"residual_rank_ratio": 1.5}, "residual_rank_ratio"),
        ({"residual_rank_ratio": -0.1}, "residual_rank_ratio"),
        ({"real_rank": 0}, "real_rank"),
        ({"real_rank": 4}, "real_rank"),  # k > N = 3
        ({"blend": 1.5}, "blend"),
        ({"alpha": -1.0}, "alpha"),
        ({"residual_energy": 0.0}, "residual_energy"),
        ({"residual_energy": 1.5}, "residual_energy"),
        ({"block_weight": "bar"}, "block_weight"),
        ({"real_scope": "model"}, "real_scope"),
        ({"norm_matching": "all"}, "norm_matching"),
        ({"svd": "lanczos"}, "svd"),
    ],
)
def test_bad_parameters_raise_config_error(params, key):
    base, models = make_models(3, seed=1)
    with pytest.raises(ConfigError, match=key):
        run(params, base, models)


def test_layer_scope_reports_each_tensors_coefficients():
    base, models = make_models(3)
    _, report = run({"real_scope": "layer"}, base, models)
    layer = report["layer_coefficients"]
    subspace = [name for name, (_, group) in SHAPES.items() if group.in_subspace]
    assert sorted(layer) == sorted(subspace)
    assert all(len(c) == 3 for c in layer.values())
    _, report = run({}, base, models)
    assert "layer_coefficients" not in report
