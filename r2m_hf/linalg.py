"""Linear-algebra helpers shared by the merge methods: truncated SVDs, polar factors, ranks, Gram matrices.

Every routine computes in at least float32 (float64 inputs stay float64) and returns the input's dtype where it
returns a matrix of the input's size. Wide matrices are decomposed in their tall orientation, which is several times
cheaper for LAPACK. Gram matrices are float64 products over column chunks: exact sums of the inputs' values, without
a float64 copy of a whole tensor.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Literal

if TYPE_CHECKING:
    import torch


SvdMethod = Literal["exact", "randomized"]

# Columns per float64 product of `gram`: a chunk (N × 65536 float64) is small, so the products are exact sums of
# float32 values at about the cost of float32 ones, without a float64 copy of the tensor. (float32 products per chunk
# err by ~1e-7 of ‖ri‖‖rj‖; R²M's ‖τres‖² = aᵀ R a cancels ~10³-fold when the residuals nearly sum to zero, which
# turned that into 2e-5 of η in a test.)
GRAM_CHUNK = 65536


def compute_dtype(tensor: torch.Tensor) -> torch.dtype:
    """Return float64 for float64 inputs and float32 for everything else (fp16/bf16 are promoted)."""
    import torch

    return torch.float64 if tensor.dtype == torch.float64 else torch.float32


def rank_from_ratio(shape: tuple[int, ...] | torch.Size, ratio: float) -> int:
    """Return r = max(1, ⌊ρ · min(m, n)⌋) for 0 < ρ ≤ 1, and 0 for ρ = 0."""
    if ratio <= 0:
        return 0
    full = min(shape[-2:])
    return min(full, max(1, math.floor(ratio * full + 1e-9)))


def rank_from_energy(singular_values: torch.Tensor, energy: float) -> int:
    """Return the smallest r whose top singular values hold a fraction `energy` of Σσ² (at least 1)."""
    import torch

    sq = singular_values.double() ** 2
    total = sq.sum()
    if total <= 0:
        return 1
    cumulative = torch.cumsum(sq, 0) / total
    r = int(torch.searchsorted(cumulative, torch.tensor(energy, dtype=cumulative.dtype) - 1e-12).item()) + 1
    return max(1, min(r, singular_values.numel()))


def gram(rows: torch.Tensor, *, chunk: int = GRAM_CHUNK) -> torch.Tensor:
    """The Gram matrix R Rᵀ of the rows of an N × P matrix in float64, one column chunk at a time.

    Args:
        rows (`torch.Tensor`): R, N × P (any floating dtype).
        chunk (`int`): columns per product; each chunk is converted to float64 on its own.

    Returns:
        `torch.Tensor`: the N × N float64 matrix of inner products ⟨ri, rj⟩.
    """
    import torch

    out = torch.zeros(rows.shape[0], rows.shape[0], dtype=torch.float64, device=rows.device)
    for part in rows.split(chunk, dim=1):
        part = part.double()
        out += part @ part.mT
    return out


def svd(matrix: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Thin SVD `A = U diag(S) Vh` (batched over leading dimensions), in the tall orientation and at least float32."""

    a = matrix.to(compute_dtype(matrix))
    if a.shape[-2] < a.shape[-1]:
        u, s, vh = _robust_svd(a.mT)
        return vh.mT, s, u.mT
    return _robust_svd(a)


def _robust_svd(a: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """`torch.linalg.svd` of a tall matrix; when LAPACK's divide-and-conquer driver does not converge (it can on
    matrices with many repeated singular values, e.g. stacked orthonormal bases), again in float64, then through the
    eigendecomposition of the small Gram matrix. The result has `a`'s dtype."""
    import torch

    try:
        return torch.linalg.svd(a, full_matrices=False)
    except torch.linalg.LinAlgError:
        pass
    d = a.double()
    try:
        u, s, vh = torch.linalg.svd(d, full_matrices=False)
        return u.to(a.dtype), s.to(a.dtype), vh.to(a.dtype)
    except torch.linalg.LinAlgError:
        pass
    evals, v = torch.linalg.eigh(d.mT @ d)  # ascending
    evals, v = evals.flip(-1), v.flip(-1)
    s = evals.clamp_min(0).sqrt()
    tiny = s.amax(-1, keepdim=True) * (torch.finfo(torch.float64).eps * max(a.shape[-2:]))
    u = (d @ v) / s.clamp_min(tiny.clamp_min(torch.finfo(torch.float64).tiny)).unsqueeze(-2)
    q, r = torch.linalg.qr(u)  # orthonormal columns also where s is (near) zero, signs kept
    u = q * torch.where(r.diagonal(dim1=-2, dim2=-1) < 0, -1.0, 1.0).to(q.dtype).unsqueeze(-2)
    return u.to(a.dtype), s.to(a.dtype), v.mT.to(a.dtype)


def randomized_svd(
    matrix: torch.Tensor,
    rank: int,
    *,
    oversample: int = 10,
    power_iterations: int = 2,
    seed: int = 0,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Top-`rank` SVD by a seeded randomised range finder (Halko, Martinsson & Tropp 2011, Alg. 4.4).

    Args:
        matrix (`torch.Tensor`): the m × n matrix A, or a batch of them (… × m × n, one sketch for all).
        rank (`int`): how many singular triplets to return.
        oversample (`int`): extra sample columns beyond `rank`.
        power_iterations (`int`): subspace iterations, each re-orthonormalised (sharpens decaying spectra).
        seed (`int`): seed of the Gaussian test matrix, so results are reproducible.

    Returns:
        `(U, S, Vh)` with U: … × m × rank, S: … × rank, Vh: … × rank × n.
    """
    import torch

    a = matrix.to(compute_dtype(matrix))
    transposed = a.shape[-2] < a.shape[-1]
    if transposed:
        a = a.mT
    n = a.shape[-1]
    k = min(n, rank + oversample)
    if k >= n:  # the sketch would be as large as the matrix: the exact route is as cheap
        u, s, vh = torch.linalg.svd(a, full_matrices=False)
    else:
        gen = torch.Generator(device="cpu").manual_seed(seed)
        omega = torch.randn(n, k, generator=gen, dtype=a.dtype).to(a.device)
        q, _ = torch.linalg.qr(a @ omega)
        for _ in range(power_iterations):
            z, _ = torch.linalg.qr(a.mT @ q)
            q, _ = torch.linalg.qr(a @ z)
        ub, s, vh = svd(q.mT @ a)  # k × n, wide: decomposed in its tall orientation, several times faster
        u = q @ ub
    u, s, vh = u[..., :rank], s[..., :rank], vh[..., :rank, :]
    if transposed:
        return vh.mT, s, u.mT
    return u, s, vh


def truncated_svd(
    matrix: torch.Tensor,
    rank: int,
    *,
    method: SvdMethod = "exact",
    oversample: int = 10,
    power_iterations: int = 2,
    seed: int = 0,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Top-`rank` singular triplets `(U, S, Vh)` of `matrix`, exactly or by the randomised range finder."""
    if method == "randomized":
        return randomized_svd(matrix, rank, oversample=oversample, power_iterations=power_iterations, seed=seed)
    u, s, vh = svd(matrix)
    return u[..., :rank], s[..., :rank], vh[..., :rank, :]


def low_rank_approximation(
    matrix: torch.Tensor,
    rank: int,
    *,
    method: SvdMethod = "exact",
    seed: int = 0,
) -> torch.Tensor:
    """Best rank-`rank` approximation SVD_r(A) (Eckart–Young), returned in `matrix`'s dtype."""
    import torch

    if rank <= 0:
        return torch.zeros_like(matrix)
    if rank >= min(matrix.shape):
        return matrix.clone()
    u, s, vh = truncated_svd(matrix, rank, method=method, seed=seed)
    return ((u * s) @ vh).to(matrix.dtype)


def polar_factor(matrix: torch.Tensor) -> torch.Tensor:
    """Orthogonal polar factor `P Qᵀ` of `matrix = P D Qᵀ` (the nearest matrix with orthonormal columns/rows)."""
    u, _, vh = svd(matrix)
    return (u @ vh).to(matrix.dtype)


def top_eigenvectors(symmetric: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Eigenvalues (descending) and the top-`k` eigenvectors (as columns) of a symmetric matrix, in float64."""
    import torch

    evals, evecs = torch.linalg.eigh(symmetric.double())
    order = torch.argsort(evals, descending=True)
    evals, evecs = evals[order], evecs[:, order]
    return evals, evecs[:, :k]
