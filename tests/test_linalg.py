"""Tests of the shared linear-algebra helpers: randomised SVD accuracy and seeding, polar factors, rank rules."""

from __future__ import annotations

import pytest
import torch

from r2m_hf.linalg import (
    gram,
    low_rank_approximation,
    polar_factor,
    randomized_svd,
    rank_from_energy,
    rank_from_ratio,
    svd,
    truncated_svd,
)

torch.set_num_threads(1)


def realistic(m: int, n: int, seed: int = 0) -> torch.Tensor:
    """A fine-tuning-like delta: a geometrically decaying spectrum plus a noise floor."""
    gen = torch.Generator().manual_seed(seed)
    r = min(m, n)
    u, _ = torch.linalg.qr(torch.randn(m, r, generator=gen, dtype=torch.float64))
    v, _ = torch.linalg.qr(torch.randn(n, r, generator=gen, dtype=torch.float64))
    spectrum = torch.exp(-torch.arange(r, dtype=torch.float64) / 8)
    return (u * spectrum) @ v.T + 0.02 * torch.randn(m, n, generator=gen, dtype=torch.float64) / (m * n) ** 0.25


@pytest.mark.parametrize("shape", [(200, 120), (120, 200)])
@pytest.mark.parametrize("rank", [5, 20])
def test_randomized_svd_error_is_near_optimal(shape, rank):
    a = realistic(*shape)
    s = torch.linalg.svdvals(a)
    optimal = s[rank:].square().sum().sqrt()  # Eckart–Young
    u, sr, vh = randomized_svd(a, rank)
    assert u.shape == (shape[0], rank) and sr.shape == (rank,) and vh.shape == (rank, shape[1])
    error = (a - (u * sr) @ vh).norm()
    assert error <= 1.02 * optimal
    assert torch.allclose(u.T @ u, torch.eye(rank, dtype=a.dtype), atol=1e-10)
    assert torch.allclose(vh @ vh.T, torch.eye(rank, dtype=a.dtype), atol=1e-10)


def test_randomized_svd_in_float32_is_near_optimal():
    a = realistic(150, 90, seed=3).float()
    optimal = torch.linalg.svdvals(a.double())[10:].square().sum().sqrt()
    approx = low_rank_approximation(a, 10, method="randomized")
    assert approx.dtype == torch.float32
    assert (a.double() - approx.double()).norm() <= 1.02 * optimal


def test_randomized_svd_is_reproducible_from_its_seed():
    a = realistic(200, 120, seed=1)
    first = randomized_svd(a, 8, seed=4, power_iterations=0)
    again = randomized_svd(a, 8, seed=4, power_iterations=0)
    other = randomized_svd(a, 8, seed=5, power_iterations=0)
    assert all(torch.equal(x, y) for x, y in zip(first, again))
    assert not torch.equal(first[0], other[0])


def test_randomized_svd_falls_back_to_exact_when_the_sketch_covers_the_matrix():
    a = realistic(30, 12, seed=2)
    u, s, vh = randomized_svd(a, 8)  # 8 + 10 oversampling ≥ 12 columns
    eu, es, evh = truncated_svd(a, 8)
    assert torch.allclose(s, es, atol=1e-12)
    assert torch.allclose((u * s) @ vh, (eu * es) @ evh, atol=1e-10)


@pytest.mark.parametrize("kind", ["zero", "rank-4"])
def test_randomized_svd_of_a_degenerate_batch_is_finite_and_exact(kind):
    gen = torch.Generator().manual_seed(2)
    a = torch.zeros(3, 200, 120)
    if kind == "rank-4":
        a = torch.randn(3, 200, 4, generator=gen) @ torch.randn(3, 4, 120, generator=gen)
    u, s, vh = randomized_svd(a, 8)
    assert torch.isfinite(u).all() and torch.isfinite(s).all() and torch.isfinite(vh).all()
    assert torch.allclose((u * s.unsqueeze(-2)) @ vh, a, atol=1e-4)


@pytest.mark.parametrize("shape", [(12, 8), (8, 12)])
def test_svd_reconstructs_in_both_orientations(shape):
    a = torch.randn(*shape, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    u, s, vh = svd(a)
    r = min(shape)
    assert u.shape == (shape[0], r) and vh.shape == (r, shape[1])
    assert torch.allclose((u * s) @ vh, a, atol=1e-12)
    assert torch.all(s[:-1] >= s[1:])


def test_svd_promotes_half_precision():
    a = torch.randn(6, 4).to(torch.bfloat16)
    u, s, vh = svd(a)
    assert s.dtype == torch.float32


def test_low_rank_approximation_edges():
    a = realistic(10, 6, seed=4)
    assert torch.equal(low_rank_approximation(a, 0), torch.zeros_like(a))
    full = low_rank_approximation(a, 6)
    assert torch.equal(full, a) and full is not a
    rank2 = low_rank_approximation(a, 2)
    assert torch.linalg.matrix_rank(rank2).item() == 2


@pytest.mark.parametrize("shape", [(12, 5), (5, 12), (6, 6)])
def test_polar_factor_is_orthogonal_and_nearest(shape):
    gen = torch.Generator().manual_seed(5)
    a = torch.randn(*shape, generator=gen, dtype=torch.float64)
    q = polar_factor(a)
    r = min(shape)
    gram = q.T @ q if shape[0] >= shape[1] else q @ q.T
    assert torch.allclose(gram, torch.eye(r, dtype=a.dtype), atol=1e-12)
    # the polar factor of A (tall) is A (AᵀA)^(-1/2)
    tall = a if shape[0] >= shape[1] else a.T
    evals, evecs = torch.linalg.eigh(tall.T @ tall)
    expected = tall @ (evecs * evals.rsqrt()) @ evecs.T
    assert torch.allclose(q if shape[0] >= shape[1] else q.T, expected, atol=1e-10)
    # an orthonormal input is its own polar factor; the factor is at least as close to A as a random orthonormal one
    assert torch.allclose(polar_factor(q), q, atol=1e-12)
    other, _ = torch.linalg.qr(torch.randn(max(shape), r, generator=gen, dtype=torch.float64))
    other = other if shape[0] >= shape[1] else other.T
    assert (a - q).norm() <= (a - other).norm()


def test_polar_factor_keeps_the_dtype():
    assert polar_factor(torch.randn(5, 3, dtype=torch.float16)).dtype == torch.float16


@pytest.mark.parametrize(
    ("shape", "ratio", "expected"),
    [
        ((768, 3072), 0.1, 76),
        ((3072, 768), 0.1, 76),
        ((10, 8), 0.0, 0),
        ((10, 8), -0.5, 0),
        ((10, 8), 0.01, 1),  # at least one direction for any positive ratio
        ((10, 8), 1.0, 8),
        ((10, 8), 1.5, 8),  # never above the full rank
        ((100, 100), 0.29, 29),  # 0.29 · 100 = 28.999… in floating point
        ((4, 10, 10), 0.5, 5),  # the last two dimensions count
    ],
)
def test_rank_from_ratio(shape, ratio, expected):
    assert rank_from_ratio(shape, ratio) == expected


@pytest.mark.parametrize(
    ("values", "energy", "expected"),
    [
        ([3.0, 4.0, 0.0], 1.0, 2),  # trailing zero singular values are never needed
        ([4.0, 3.0], 0.64, 1),  # exactly the first value's share
        ([4.0, 3.0], 0.65, 2),
        ([4.0, 3.0], 1e-9, 1),
        ([0.0, 0.0], 0.9, 1),  # a zero matrix still keeps rank 1
        ([5.0], 0.9, 1),
        ([1.0] * 10, 0.9, 9),
    ],
)
def test_rank_from_energy(values, energy, expected):
    assert rank_from_energy(torch.tensor(values), energy) == expected


@pytest.mark.parametrize("chunk", [1, 7, 4096, 1 << 20])
def test_gram_is_an_exact_float64_sum_whatever_the_chunk(chunk):
    rows = torch.randn(3, 10_000, generator=torch.Generator().manual_seed(6))
    exact = rows.double() @ rows.double().T  # products of float32 values are exact in float64
    got = gram(rows, chunk=chunk)
    assert got.dtype == torch.float64 and got.shape == (3, 3)
    assert torch.allclose(got, exact, rtol=1e-13, atol=0)


def test_gram_over_millions_of_columns_keeps_float64_accuracy():
    """A float32 product over 4M columns errs by ~2e-4; the chunked float64 products stay at float64 rounding."""
    g = torch.Generator().manual_seed(7)
    rows = 1e-3 * (torch.randn(1, 1 << 22, generator=g) + torch.randn(3, 1 << 22, generator=g))
    exact = rows.double() @ rows.double().T
    assert torch.allclose(gram(rows), exact, rtol=1e-12, atol=0)
    assert torch.equal(gram(torch.zeros(2, 0)), torch.zeros(2, 2, dtype=torch.float64))


def test_gram_accepts_half_precision():
    rows = torch.randn(2, 300, generator=torch.Generator().manual_seed(8)).to(torch.bfloat16)
    assert torch.allclose(gram(rows), rows.double() @ rows.double().T, rtol=1e-13, atol=0)


@pytest.mark.parametrize("failures", [1, 2])
def test_svd_falls_back_when_lapack_does_not_converge(monkeypatch, failures):
    """LAPACK's divide-and-conquer SVD can fail on matrices with many repeated singular values (seen on Iso-CTS's
    stacked bases): the SVD is retried in float64, then taken from the Gram matrix's eigendecomposition."""
    import torch

    from r2m_hf import linalg

    gen = torch.Generator().manual_seed(0)
    a = torch.randn(3, 40, 12, generator=gen)
    a[:, :, -1] = 0.0  # a zero singular value: the fallback must still give orthonormal U
    real_svd = torch.linalg.svd
    calls = []

    def flaky(x, *args, **kwargs):
        calls.append(x.dtype)
        if len(calls) <= failures:
            raise torch.linalg.LinAlgError("linalg.svd: The algorithm failed to converge")
        return real_svd(x, *args, **kwargs)

    monkeypatch.setattr(torch.linalg, "svd", flaky)
    for matrix in (a, a.mT):
        calls.clear()
        u, s, vh = linalg.svd(matrix)
        assert u.dtype == s.dtype == vh.dtype == torch.float32
        assert torch.allclose(u @ torch.diag_embed(s) @ vh, matrix, atol=1e-4)
        eye = torch.eye(u.shape[-1]).expand(3, -1, -1)
        assert torch.allclose(u.mT @ u, eye, atol=1e-4) and torch.allclose(vh @ vh.mT, eye, atol=1e-4)
        assert torch.all(s[..., :-1] >= s[..., 1:])
        assert calls[:failures] == [torch.float32, torch.float64][:failures]
