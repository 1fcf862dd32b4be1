"""An independent, float64, in-memory reference of R²M, written straight from ``docs/method.md``.

It deliberately does not import ``r2m_hf.methods.r2m``: the tests compare the real method with this file. It favours
plain, step-by-step code over speed (every tensor is held in memory). Step numbers follow the method page.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import torch

from r2m_hf.groups import Group

DROP_TOLERANCE = 1e-6  # a residual with ‖τres‖ ≤ 1e-6 · ‖τcore‖ is numerically zero and dropped


@dataclass
class ReferenceResult:
    """Everything the reference computes, for comparisons with the method and its report."""

    merged: dict[str, torch.Tensor]
    core: dict[str, torch.Tensor]  # τcore per tensor
    residual: dict[str, torch.Tensor]  # τres per tensor (after norm matching and averaging, before η)
    eta: float  # η that multiplies τres (0 when the residual is dropped)
    residual_dropped: bool
    core_norm: float
    residual_norm: float
    residual_norms_before: list[float]  # ‖fi‖ over all backbone tensors, before truncation
    residual_norms_after: list[float]  # ‖f̃i‖ after truncation
    ranks_kept: dict[str, list[int]] = field(default_factory=dict)  # per truncated matrix, per specialist
    gram: torch.Tensor | None = None  # global scope only
    eigenvalues: list[float] | None = None  # global scope only, descending
    coefficients: list[float] | None = None  # global scope only
    layer_coefficients: dict[str, list[float]] = field(default_factory=dict)  # layer scope only


def coefficients_from_eigenvectors(u_k: torch.Tensor) -> torch.Tensor:
    """c = (1/N) · U_k U_kᵀ 1 for the N × k matrix of eigenvectors `u_k` (sign-free: −U gives the same c)."""
    n = u_k.shape[0]
    ones = torch.ones(n, dtype=u_k.dtype)
    return u_k @ (u_k.T @ ones) / n


def block_matrix(task_vectors: torch.Tensor, center: bool) -> torch.Tensor:
    """T_l: the N flattened task vectors of one tensor as rows, optionally centred (rows minus their mean).

    "Rows minus their mean" is read as: every row minus the mean of its own entries. The other reading (every row
    minus the mean row) makes 1 an eigenvector of G with eigenvalue 0, so U_kᵀ 1 = 0 and c ≡ 0 for every k < N:
    the real core would vanish, which cannot be the intent.
    """
    t = task_vectors.reshape(task_vectors.shape[0], -1)
    if center:
        t = t - t.mean(dim=1, keepdim=True)
    return t


def block_weight_of(t: torch.Tensor, mode: str) -> float:
    """w_l: 1 (`none`), 1/‖T_l‖_F² (`fro`) or P_l/‖T_l‖_F² (`size`, P_l = elements of one task vector)."""
    if mode == "none":
        return 1.0
    sq = float((t * t).sum())
    if sq == 0.0:  # the tensor is unchanged by every specialist: it adds nothing to the Gram
        return 0.0
    if mode == "fro":
        return 1.0 / sq
    if mode == "size":
        return t.shape[1] / sq
    raise ValueError(mode)


def top_k(gram: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Eigenvalues (descending) and the top-k eigenvectors (columns) of the symmetric Gram matrix."""
    evals, evecs = torch.linalg.eigh(gram)
    order = torch.argsort(evals, descending=True)
    return evals[order], evecs[:, order][:, :k]


def truncation_rank(singular_values: torch.Tensor, shape: Sequence[int], ratio: float, energy: float | None) -> int:
    """r = max(1, ⌊ρ · min(m, n)⌋), or with the energy rule the smallest r holding a fraction e of Σσ²."""
    full = min(shape)
    if energy is None:
        return min(full, max(1, math.floor(ratio * full + 1e-9)))
    sq = singular_values**2
    total = float(sq.sum())
    if total == 0.0:
        return 1
    cumulative = torch.cumsum(sq, 0) / total
    for r in range(1, full + 1):
        if float(cumulative[r - 1]) >= energy - 1e-12:
            return r
    return full


def total_norm(tensors: Mapping[str, torch.Tensor]) -> float:
    """‖x‖ over several tensors together."""
    return math.sqrt(sum(float((t * t).sum()) for t in tensors.values()))


def r2m_reference(
    base: Mapping[str, torch.Tensor],
    models: Sequence[Mapping[str, torch.Tensor]],
    groups: Mapping[str, Group],
    *,
    real_rank: int = 1,
    center: bool = False,
    block_weight: str = "none",
    real_scope: str = "global",
    blend: float = 1.0,
    residual_rank_ratio: float = 0.03,
    residual_energy: float | None = None,
    norm_matching: str = "global",
    alpha: float = 1.5,
    eta: str = "relative",
    svd: str = "exact",
    eigenvector_signs: Sequence[float] | None = None,
) -> ReferenceResult:
    """Merge `models` over `base` with R²M, in float64. Heads are not part of it (`groups` has no HEAD).

    `svd` is accepted for symmetry with the method's parameters; the reference always uses the exact SVD.
    `eigenvector_signs` (length k) multiplies the chosen eigenvectors, to check that the result is sign-free.
    """
    n = len(models)
    if not 1 <= real_rank <= n:
        raise ValueError(f"real_rank must be in [1, N={n}]")
    names = list(groups)
    subspace = [name for name in names if groups[name].in_subspace]
    tau = {name: torch.stack([m[name].double() - base[name].double() for m in models]) for name in names}
    mean = {name: tau[name].mean(dim=0) for name in names}

    def coefficients(block_names: Sequence[str]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        gram = torch.zeros(n, n, dtype=torch.float64)
        for name in block_names:
            t = block_matrix(tau[name], center)
            gram += block_weight_of(t, block_weight) * (t @ t.T)
        evals, u_k = top_k(gram, real_rank)
        if eigenvector_signs is not None:
            u_k = u_k * torch.tensor(list(eigenvector_signs), dtype=u_k.dtype)
        return gram, evals, coefficients_from_eigenvectors(u_k)

    # 1. Real core: c from the Gram of S (one for the model, or one per tensor), the mean on V; then the blend.
    result_extra: dict = {}
    coeff_of: dict[str, torch.Tensor] = {}
    if real_scope == "global":
        gram, evals, c = coefficients(subspace)
        coeff_of = {name: c for name in subspace}
        result_extra = {"gram": gram, "eigenvalues": evals.tolist(), "coefficients": c.tolist()}
    elif real_scope == "layer":
        for name in subspace:
            coeff_of[name] = coefficients([name])[2]
        result_extra = {"layer_coefficients": {name: c.tolist() for name, c in coeff_of.items()}}
    else:
        raise ValueError(real_scope)
    core = {}
    for name in names:
        if name in coeff_of:
            c = coeff_of[name].view(-1, *([1] * (tau[name].dim() - 1)))
            projected = (c * tau[name]).sum(dim=0)
        else:
            projected = mean[name]
        core[name] = (1.0 - blend) * mean[name] + blend * projected

    # 2. Fake residuals for every backbone tensor.
    residuals = {name: tau[name] - core[name].unsqueeze(0) for name in names}
    before = [math.sqrt(sum(float((residuals[name][i] ** 2).sum()) for name in names)) for i in range(n)]

    # 3. Rank truncation on M (ρ = 0 drops every residual of every tensor; the energy rule replaces ρ when set).
    truncated: dict[str, torch.Tensor] = {}
    ranks: dict[str, list[int]] = {}
    for name in names:
        f = residuals[name]
        if residual_energy is None and residual_rank_ratio == 0:
            truncated[name] = torch.zeros_like(f)
            continue
        shape = f.shape[1:]
        if groups[name] is Group.TRUNCATABLE and len(shape) == 2 and min(shape) >= n:
            kept = []
            ranks[name] = []
            for i in range(n):
                u, s, vh = torch.linalg.svd(f[i], full_matrices=False)
                r = truncation_rank(s, shape, residual_rank_ratio, residual_energy)
                ranks[name].append(r)
                kept.append((u[:, :r] * s[:r]) @ vh[:r])
            truncated[name] = torch.stack(kept)
        else:
            truncated[name] = f.clone()
    after = [math.sqrt(sum(float((truncated[name][i] ** 2).sum()) for name in names)) for i in range(n)]

    # 4. Norm matching, then the average: τres = (1/N) Σ (m̄/ni) f̃i; a residual with ni = 0 contributes nothing.
    def matched_average(norms: Sequence[float], stacked: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        m_bar = sum(norms) / n
        scale = torch.tensor([m_bar / x if x > 0 else 0.0 for x in norms], dtype=torch.float64)
        return {k: (scale.view(-1, *([1] * (v.dim() - 1))) * v).sum(dim=0) / n for k, v in stacked.items()}

    if norm_matching == "global":
        residual = matched_average(after, truncated)
    elif norm_matching == "layer":
        residual = {}
        for name in names:
            norms = [float(truncated[name][i].norm()) for i in range(n)]
            residual.update(matched_average(norms, {name: truncated[name]}))
    elif norm_matching == "none":
        residual = {name: truncated[name].mean(dim=0) for name in names}
    else:
        raise ValueError(norm_matching)

    # 5. Merge: θ* = θ0 + τcore + η · τres, unless the residual is numerically zero.
    core_norm = total_norm(core)
    residual_norm = total_norm(residual)
    dropped = residual_norm <= DROP_TOLERANCE * core_norm
    if dropped:
        eta_value = 0.0
    elif eta == "relative":
        eta_value = alpha * core_norm / residual_norm
    elif eta == "kit":
        eta_value = alpha * core_norm
    elif eta == "fixed":
        eta_value = alpha
    else:
        raise ValueError(eta)
    merged = {name: base[name].double() + core[name] + eta_value * residual[name] for name in names}
    return ReferenceResult(
        merged=merged,
        core=core,
        residual=residual,
        eta=eta_value,
        residual_dropped=dropped,
        core_norm=core_norm,
        residual_norm=residual_norm,
        residual_norms_before=before,
        residual_norms_after=after,
        ranks_kept=ranks,
        **result_extra,
    )
