"""The SVD baselines (TSV-M, Iso-C, Iso-CTS, CART) and Model Stock against their papers' equations, written out
independently in float64, with their vector-rule fallbacks and guards."""

from __future__ import annotations

import pytest
import torch

# tests/ is not a package: pytest puts this folder on sys.path
from baseline_cases import GROUPS, LAYOUT, MATRICES, T, close, make_models, run, task_vectors

from r2m_hf.errors import MethodError
from r2m_hf.groups import Group

torch.set_num_threads(1)


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
        return reference_iso_c(deltas)  # s = 0: no task-specific slot, the common space is everything
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
    svd_names = MATRICES
    for name in LAYOUT:
        if name in svd_names:
            expected = base[name] + 0.9 * reference(task_vectors(base, models, name))
        else:  # vector group, 4-D, smaller side below T: the mean task vector, never zero
            expected = vector_rule(base, models, name, 0.9)
            assert not close(merged[name], base[name])
        assert close(merged[name], expected), name
    assert report["tensors"] == {"svd": len(svd_names), "vector_rule": len(LAYOUT) - len(svd_names)}


def test_iso_cts_without_a_task_specific_slot_is_iso_c():
    # f = 0.8 leaves s = 0 on the 9×5 and 3×7 matrices (f = 0.5 gives them s ≥ 1): there Iso-CTS is Iso-C
    base, models = make_models(6)
    cts, _ = run("iso_cts", {"lambda": 0.9}, base, models)
    iso_c, _ = run("iso_c", {"lambda": 0.9}, base, models)
    half, _ = run("iso_cts", {"lambda": 0.9, "common_fraction": 0.5}, base, models)
    for name in ("proj.weight", "narrow.weight"):
        assert close(cts[name], iso_c[name]), name
        assert not close(half[name], iso_c[name]), name
    for name in ("blocks.0.attn.query.weight", "blocks.0.mlp.fc2.weight"):
        assert not close(cts[name], iso_c[name]), name


def test_iso_cts_tends_to_iso_c_as_the_common_fraction_tends_to_one():
    # r = 60, T = 3: s = round((60 − ⌊60 f⌋)/3) is 10, 2, 1, 0 at f = 0.5, 0.9, 0.95, 0.99; the distance to Iso-C
    # shrinks with s and is 0 once s = 0, so the result no longer jumps at the fraction where s reaches 0
    layout = {"w": ((60, 72), Group.SUBSPACE)}
    groups = {"w": Group.SUBSPACE}
    base, models = make_models(17, layout=layout)
    iso_c, _ = run("iso_c", None, base, models, groups=groups)

    def distance(fraction):
        merged, _ = run("iso_cts", {"common_fraction": fraction}, base, models, groups=groups)
        return float((merged["w"] - iso_c["w"]).norm() / (iso_c["w"] - base["w"]).norm())

    far, near, nearer = distance(0.5), distance(0.9), distance(0.95)
    assert far > near > nearer > 0
    assert distance(0.99) == distance(1.0) == 0.0


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
