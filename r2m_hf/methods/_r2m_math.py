"""R²M's per-tensor rule as pure functions, in the order the method applies them (see ``docs/method.md``).

Symbols: N specialists with task vectors τi = θi − θ0 (already multiplied by their weights wi, which sum to N); for
one tensor l, T_l is the N × P_l matrix of its flattened task vectors. Over the subspace group S the Gram matrix
G = Σ_l w_l T_l T_lᵀ gives the real-core coefficients c = (1/N) U_k U_kᵀ 1 (U_k: its top-k eigenvectors); the real
core is τcore = (1 − β) τ̄ + β Σi ci τi (τ̄ on the vector group V); the fake residuals fi = τi − τcore are rank-truncated
to f̃i on the truncatable matrices M; the norm-matching mix a_i = m̄ / (N ni) (ni = ‖f̃i‖, m̄ their mean) averages them
into τres = Σi a_i f̃i; η follows from its mode; and θ* = θ0 + τcore + η τres. Nothing here holds state or opens a file:
``r2m.py`` accumulates the whole-model statistics (G, ‖τcore‖², the Gram of the f̃i) across passes and calls these.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Literal, TypeAlias

from ..groups import Group
from ..linalg import SvdMethod, gram, rank_from_energy, rank_from_ratio, svd, top_eigenvectors, truncated_svd

if TYPE_CHECKING:
    import torch

# A residual this small relative to the core is rounding noise (e.g. identical specialists); `eta: relative`
# would otherwise blow it up to α‖τcore‖.
RESIDUAL_DROP_TOLERANCE = 1e-6

# Warn when some c_i differs from 1/N by more than this fraction of 1/N, or the relative eigengap is below this.
NONUNIFORM_WARNING = 0.5
GAP_WARNING = 0.1

# Per residual: (U_r · S_r, Vh_r), whose product is the rank-r truncation f̃i.
Factors: TypeAlias = "tuple[torch.Tensor, torch.Tensor]"  # a string: torch is imported only where used


def gram_block(
    task_matrix: torch.Tensor, *, center: bool = False, block_weight: str = "none", product: torch.Tensor | None = None
) -> torch.Tensor:
    """One tensor's term w_l · T_l T_lᵀ of the Gram matrix G, in float64.

    The product is an exact float64 sum over column chunks (:func:`~r2m_hf.linalg.gram`): no float64 copy of the
    tensor is made.

    Args:
        task_matrix (`torch.Tensor`): T_l, the N weighted task vectors of one tensor as flattened rows (N × P_l).
        center (`bool`): subtract from every row the mean of its own entries before the product.
        block_weight (`str`): w_l = 1 (``none``), 1/‖T_l‖_F² (``fro``) or P_l/‖T_l‖_F² (``size``); a tensor no
            specialist changed (‖T_l‖ = 0) adds nothing.
        product (`torch.Tensor`, *optional*): T_l T_lᵀ when the caller already has it (not used with `center`).

    Returns:
        `torch.Tensor`: the N × N block.
    """
    import torch

    t = task_matrix
    if center:
        t = t - t.mean(dim=1, keepdim=True)
        block = gram(t)
    else:
        block = gram(t) if product is None else product
    if block_weight != "none":
        sq = float(block.diagonal().sum())
        if sq <= 0:
            return torch.zeros_like(block)
        block = block / sq * (t.shape[1] if block_weight == "size" else 1.0)
    return block


def real_core_coefficients(gram: torch.Tensor, real_rank: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The real-core coefficients c = (1/N) U_k U_kᵀ 1 of a Gram matrix, and its eigenvalues.

    c does not depend on the eigenvectors' signs (U_k U_kᵀ is the projector on their span); k = N gives c = 1/N.

    Args:
        gram (`torch.Tensor`): G, symmetric N × N.
        real_rank (`int`): k, the number of top eigenvectors spanning the real core.

    Returns:
        `(c, eigenvalues)`: c (N,) and G's eigenvalues in descending order, both float64.
    """
    import torch

    n = gram.shape[0]
    evals, u = top_eigenvectors(gram, real_rank)
    ones = torch.ones(n, dtype=torch.float64)
    return (u @ (u.mT @ ones)) / n, evals


def core_weights(coefficients: torch.Tensor | None, n_models: int, blend: float = 1.0) -> torch.Tensor:
    """The weights γ of τcore = Σi γi τi: γ = (1 − β)/N + β c, or 1/N (τ̄) where there are no coefficients.

    Args:
        coefficients (`torch.Tensor`, *optional*): c (N,) on the subspace group; `None` on the vector group.
        n_models (`int`): N.
        blend (`float`): β ∈ [0, 1]; 1 is the pure projection, 0 the mean.

    Returns:
        `torch.Tensor`: γ, float64, shape (N,).
    """
    import torch

    mean = torch.full((n_models,), 1.0 / n_models, dtype=torch.float64)
    if coefficients is None:
        return mean
    c = coefficients.to(torch.float64)
    return c if blend == 1.0 else (1.0 - blend) * mean + blend * c


def real_core(task_vectors: torch.Tensor, coefficients: torch.Tensor | None, blend: float = 1.0) -> torch.Tensor:
    """The real core τcore = (1 − β) τ̄ + β Σi ci τi of one tensor (τ̄ alone where there are no coefficients).

    Args:
        task_vectors (`torch.Tensor`): the weighted τi, N × shape.
        coefficients (`torch.Tensor`, *optional*): c (N,) on the subspace group; `None` on the vector group.
        blend (`float`): β ∈ [0, 1]; 1 is the pure projection, 0 the mean.

    Returns:
        `torch.Tensor`: τcore, shape of one task vector.
    """
    import torch

    weights = core_weights(coefficients, task_vectors.shape[0], blend)
    return torch.tensordot(weights.to(dtype=task_vectors.dtype, device=task_vectors.device), task_vectors, dims=1)


def residual_statistics(tensor_gram: torch.Tensor, weights: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """‖τcore‖² and the Gram ⟨fi, fj⟩ of the untruncated residuals of one tensor, from its Gram alone.

    With τcore = Σj γj τj, fi = τi − τcore = Σj K_ij τj for K = I − 1γᵀ, so ⟨fi, fj⟩ = (K T Tᵀ Kᵀ)_ij and
    ‖τcore‖² = γᵀ T Tᵀ γ: no pass over the tensor. T Tᵀ is an exact float64 sum of the task vectors' products
    (:func:`~r2m_hf.linalg.gram`), so the cancellation in K T Tᵀ Kᵀ (residuals much smaller than the τi) costs only
    float64 digits.

    Args:
        tensor_gram (`torch.Tensor`): T Tᵀ of the tensor's weighted task vectors (N × N, float64).
        weights (`torch.Tensor`): γ, the core weights (:func:`core_weights`).

    Returns:
        `(core_sq, residual_gram)`: ‖τcore‖² (0-d) and the N × N Gram of the fi, both float64.
    """
    import torch

    g = tensor_gram.to(torch.float64)
    gamma = weights.to(dtype=torch.float64, device=g.device)
    k = torch.eye(len(gamma), dtype=torch.float64, device=g.device) - gamma.unsqueeze(0)
    return gamma @ g @ gamma, k @ g @ k.mT


def truncation_route(
    group: Group, shape: tuple[int, ...], n_models: int, rank_ratio: float, energy: float | None
) -> Literal["drop", "truncate", "keep"]:
    """How the fake residuals of one tensor reach τres.

    ``drop``: ρ = 0 without the energy rule removes every residual of every tensor. ``truncate``: a matrix of M whose
    smaller side is at least N is rank-truncated (:func:`truncate_residuals`). ``keep``: every other tensor (the
    vector group, the rest of S, matrices too small for an SVD) keeps its residuals whole.
    """
    if rank_ratio == 0.0 and energy is None:
        return "drop"
    if group is Group.TRUNCATABLE and len(shape) == 2 and min(shape) >= n_models:
        return "truncate"
    return "keep"


def truncate_residuals(
    residuals: torch.Tensor,
    *,
    rank_ratio: float,
    energy: float | None = None,
    svd_method: SvdMethod = "exact",
    seed: int = 0,
) -> list[Factors] | None:
    """Rank-truncate the N residuals fi of one m × n matrix in one batched SVD: f̃i = SVD_r(fi).

    r = max(1, ⌊ρ · min(m, n)⌋) for every residual, or with the energy rule the smallest ri whose singular values hold
    a fraction e of Σσ² (exact SVD: it needs the whole spectrum).

    Args:
        residuals (`torch.Tensor`): fi stacked, N × m × n.
        rank_ratio (`float`): ρ ∈ (0, 1].
        energy (`float`, *optional*): e ∈ (0, 1]; replaces ρ when set.
        svd_method (`str`): ``exact`` or ``randomized`` (seeded range finder) for the ρ rule.
        seed (`int`): seed of the randomised SVD.

    Returns:
        `list[tuple]` or `None`: per residual the factors (U_r · S_r, Vh_r) of f̃i, in the residuals' dtype; `None`
        when r covers the full rank (nothing to truncate).
    """
    if energy is not None:
        u, s, vh = svd(residuals)
        factors = []
        for i in range(residuals.shape[0]):
            r = rank_from_energy(s[i], energy)
            factors.append(((u[i, :, :r] * s[i, :r]).to(residuals.dtype), vh[i, :r].to(residuals.dtype)))
        return factors
    shape = residuals.shape[1:]
    r = rank_from_ratio(shape, rank_ratio)
    if r >= min(shape):
        return None
    u, s, vh = truncated_svd(residuals, r, method=svd_method, seed=seed)
    us = (u * s.unsqueeze(-2)).to(residuals.dtype)
    return [(us[i], vh[i].to(residuals.dtype)) for i in range(residuals.shape[0])]


def expand_factors(factors: list[Factors]) -> torch.Tensor:
    """f̃i = (U_r S_r) Vh_r for every residual, stacked N × m × n (the merge never forms them; tests do)."""
    import torch

    return torch.stack([us @ vh for us, vh in factors])


def factor_gram(factors: list[Factors]) -> torch.Tensor:
    """R = ⟨f̃i, f̃j⟩ of truncated residuals from their factors alone, in float64: f̃i is never formed.

    With f̃i = Ai Bi (Ai = U_r S_r, m × ri; Bi = Vh_r, ri × n), ⟨Ai Bi, Aj Bj⟩ = Σ (Aiᵀ Aj) ∘ (Bi Bjᵀ): two
    products of the (Σ ri)-wide stacked factors, O((m + n)(Σ ri)²) instead of O(m n Σ ri).

    Args:
        factors (`list[tuple]`): per residual (U_r · S_r, Vh_r).

    Returns:
        `torch.Tensor`: the N × N float64 Gram matrix of the f̃i.
    """
    import torch

    a = torch.cat([us for us, _ in factors], dim=1).double()
    b = torch.cat([vh for _, vh in factors], dim=0).double()
    # E (Σ ri × N) marks which residual each stacked column belongs to: R = Eᵀ ((AᵀA) ∘ (BBᵀ)) E
    owner = torch.cat([torch.full((vh.shape[0],), i) for i, (_, vh) in enumerate(factors)]).to(a.device)
    blocks = torch.nn.functional.one_hot(owner, len(factors)).double()
    return blocks.mT @ ((a.mT @ a) * (b @ b.mT)) @ blocks


def norm_matching_mix(norms_sq: torch.Tensor) -> torch.Tensor:
    """The mix a_i = m̄ / (N · ni) that rescales every truncated residual to the mean norm m̄ before averaging.

    Args:
        norms_sq (`torch.Tensor`): ni² = ‖f̃i‖² (N,), over the whole model (``global``) or one tensor (``layer``).

    Returns:
        `torch.Tensor`: a (N,); a residual with ni = 0 gets a_i = 0 (it contributes nothing).
    """
    import torch

    norms = norms_sq.clamp_min(0).sqrt()
    n = norms.numel()
    mean_norm = norms.mean()
    safe = torch.where(norms > 0, norms, torch.ones_like(norms))
    return torch.where(norms > 0, mean_norm / (n * safe), torch.zeros_like(norms))


def uniform_mix(n_models: int) -> torch.Tensor:
    """The mix a_i = 1/N of ``norm_matching: none`` (τres is the plain mean of the f̃i)."""
    import torch

    return torch.full((n_models,), 1.0 / n_models, dtype=torch.float64)


def residual_strength(mode: str, alpha: float, core_norm: float, residual_norm: float) -> tuple[float, bool]:
    """η from its mode: α‖τcore‖/‖τres‖ (``relative``), α‖τcore‖ (``kit``) or α (``fixed``).

    A residual with ‖τres‖ ≤ 10⁻⁶ ‖τcore‖ (or 0) is rounding noise and is dropped (η = 0).

    Args:
        mode (`str`): ``relative``, ``kit`` or ``fixed``.
        alpha (`float`): α ≥ 0.
        core_norm (`float`): ‖τcore‖ over the backbone.
        residual_norm (`float`): ‖τres‖ over the backbone.

    Returns:
        `(eta, dropped)`: η, and whether the residual was dropped.
    """
    if residual_norm <= RESIDUAL_DROP_TOLERANCE * core_norm or residual_norm == 0.0:
        return 0.0, True
    if mode == "relative":
        return alpha * core_norm / residual_norm, False
    if mode == "kit":
        return alpha * core_norm, False
    if mode == "fixed":
        return alpha, False
    raise ValueError(f"unknown eta mode {mode!r}")


def combine(
    base: torch.Tensor,
    core: torch.Tensor,
    truncated: torch.Tensor | list[Factors],
    eta: float,
    mix: torch.Tensor | None,
) -> torch.Tensor:
    """The merged tensor θ* = θ0 + τcore + η Σi a_i f̃i.

    Args:
        base (`torch.Tensor`): θ0.
        core (`torch.Tensor`): τcore.
        truncated (`torch.Tensor` or `list[tuple]`): f̃i stacked (N × shape), or the factors (U_r S_r, Vh_r) of
            the truncated residuals of a matrix: then Σi a_i f̃i is one product [a_1 A_1 … a_N A_N] [B_1; …; B_N]
            added in place, and no f̃i is formed.
        eta (`float`): η (0 skips the residual term).
        mix (`torch.Tensor`, *optional*): a (N,); unused (may be `None`) when η = 0.

    Returns:
        `torch.Tensor`: θ*.
    """
    import torch

    merged = base + core
    if eta == 0.0:
        return merged
    if isinstance(truncated, torch.Tensor):
        mix = mix.to(dtype=truncated.dtype, device=truncated.device)
        return merged.add_(torch.tensordot(mix, truncated, dims=1), alpha=eta)
    left = torch.cat([us * a for (us, _), a in zip(truncated, mix.tolist(), strict=True)], dim=1)
    right = torch.cat([vh for _, vh in truncated], dim=0)
    return merged.addmm_(left.to(merged.dtype), right.to(merged.dtype), alpha=eta)


def spectral_gap(eigenvalues: torch.Tensor | None, real_rank: int) -> float | None:
    """(λ_k − λ_{k+1}) / λ_1 of the Gram matrix, or `None` when k = N (or G = 0)."""
    if eigenvalues is None or real_rank >= len(eigenvalues) or float(eigenvalues[0]) <= 0:
        return None
    return float((eigenvalues[real_rank - 1] - eigenvalues[real_rank]) / eigenvalues[0])


def diagnose(coefficients: torch.Tensor | None, gap: float | None, real_rank: int) -> list[str]:
    """The user warnings about the real core: coefficients far from uniform, or a small spectral gap.

    Args:
        coefficients (`torch.Tensor`, *optional*): the global c (`None` with ``real_scope: layer``).
        gap (`float`, *optional*): the relative spectral gap after eigenvalue k (:func:`spectral_gap`).
        real_rank (`int`): k.

    Returns:
        `list[str]`: the warnings (empty when neither applies).
    """
    warnings = []
    if coefficients is not None:
        n = len(coefficients)
        if float((coefficients * n - 1.0).abs().max()) > NONUNIFORM_WARNING:
            warnings.append(
                f"real-core coefficients c = {[round(float(x), 4) for x in coefficients]} are far from uniform (1/N = "
                f"{1 / n:.4f}): the 'real core' is dominated by some specialists; the task vectors may share little"
            )
    if gap is not None and gap < GAP_WARNING:
        warnings.append(
            f"small spectral gap ({gap:.3f} relative) after eigenvalue {real_rank}: "
            "the real core is poorly separated from the residuals"
        )
    return warnings


def norm(sq: torch.Tensor | float) -> float:
    """√x for an accumulated squared norm (clamped at 0 against rounding)."""
    return math.sqrt(max(float(sq), 0.0))
