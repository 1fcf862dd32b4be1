"""R²M: Real-aware Residual Model Merging (arXiv 2509.24367), as fixed precisely in ``r2m-method.md``.

The merge runs in three streaming passes so that no model is ever held whole:

0. the Gram matrix G = Σ_l w_l T_l T_lᵀ of the task vectors over the subspace group → the real-core coefficients c;
1. per tensor: the real core τcore, the fake residuals fi = τi − τcore and their rank truncation f̃i; only small
   statistics are kept (‖τcore‖², and the N × N Gram R^l = ⟨f̃i, f̃j⟩ of the truncated residuals), plus, by
   default, the truncated residuals of the truncatable matrices as low-rank factors;
2. merge: θ* = θ0 + τcore + η · τres with τres = (1/N) Σ_i (m̄/ni) f̃i.

The norms ni = ‖f̃i‖ and ‖τres‖ both follow from the R^l without another pass: ni² = Σ_l R^l_ii and
‖τres‖² = Σ_l aᵀ R^l a with a_i = m̄ / (N ni).
"""

from __future__ import annotations

import math
import zlib
from typing import Any, Literal

import torch
from pydantic import Field

from ..groups import Group
from ..linalg import rank_from_energy, rank_from_ratio, svd, top_eigenvectors, truncated_svd
from .base import MergeMethod, MethodParameters, TensorSlot
from .registry import register_method

# A residual this small relative to the core is rounding noise (e.g. identical specialists); `eta: relative`
# would otherwise blow it up to α‖τcore‖.
RESIDUAL_DROP_TOLERANCE = 1e-6
# Warn when some c_i differs from 1/N by more than this fraction of 1/N, or the relative eigengap is below this.
NONUNIFORM_WARNING = 0.5
GAP_WARNING = 0.1


class R2MParameters(MethodParameters):
    """R²M's parameters; names and defaults as in ``r2m-method.md``."""

    real_rank: int = Field(1, ge=1, description="k: eigenvectors of the Gram matrix spanning the real core")
    center: bool = Field(False, description="centre each task-vector block (row mean over its entries) before the Gram")
    block_weight: Literal["none", "fro", "size"] = "none"
    real_scope: Literal["global", "layer"] = "global"
    blend: float = Field(1.0, ge=0.0, le=1.0, description="β: τcore ← (1−β)·τ̄ + β·τcore")
    # ρ = 0.03 and α = 1.5 (η relative) were chosen on the offline benchmark's validation split; the method notes'
    # brackets say ρ = 0.1, α = 0.6 (see examples/offline_benchmark/full/RESULTS.md, "Defaults").
    residual_rank_ratio: float = Field(0.03, ge=0.0, le=1.0, description="ρ: rank kept per truncatable matrix")
    residual_energy: float | None = Field(None, gt=0.0, le=1.0, description="e: energy rule instead of ρ")
    norm_matching: Literal["global", "layer", "none"] = "global"
    alpha: float = Field(1.5, ge=0.0, description="α: residual strength (see `eta`)")
    eta: Literal["relative", "kit", "fixed"] = "relative"
    svd: Literal["exact", "randomized"] = Field(
        "randomized",
        description="truncation SVD: seeded randomised range finder (default; error within ~1-2% of the optimal "
        "rank-r error, tested) or exact; the energy rule always uses the exact SVD (it needs the full spectrum)",
    )
    residual_cache: Literal["memory", "recompute"] = Field(
        "memory", description="keep truncated residuals as low-rank factors between passes, or recompute their SVDs"
    )


@register_method
class R2M(MergeMethod):
    """Real-aware Residual Model Merging: shared real core + truncated, norm-matched fake residuals."""

    name = "r2m"
    parameters_model = R2MParameters
    statistics_passes = 2
    description = "R²M: low-rank real core of the task vectors plus rank-truncated, norm-matched fake residuals"

    def __init__(self, parameters: R2MParameters, weights: torch.Tensor, names: list[str]):
        super().__init__(parameters, weights, names)
        p = self.parameters
        n = self.n_models
        if p.real_rank > n:
            from ..errors import ConfigError

            raise ConfigError(f"parameters.real_rank: {p.real_rank} exceeds the number of specialists ({n})")
        self._gram = torch.zeros(n, n, dtype=torch.float64)
        self.coefficients: torch.Tensor | None = None
        self.eigenvalues: torch.Tensor | None = None
        self._layer_coefficients: dict[int, torch.Tensor] = {}
        self._layer_names: dict[int, str] = {}
        # pass-1 statistics
        self._core_sq = torch.zeros((), dtype=torch.float64)
        self._before_sq = torch.zeros(n, dtype=torch.float64)
        self._residual_gram = torch.zeros(n, n, dtype=torch.float64)  # Σ_l R^l
        self._layer_grams: dict[int, torch.Tensor] = {}
        self._layer_res_sq = torch.zeros((), dtype=torch.float64)
        self._layer_res_reduced = False
        self._cache: dict[int, list[tuple[torch.Tensor, torch.Tensor]]] = {}
        self._ranks: dict[str, list[int]] = {}
        # final scalars
        self.mix: torch.Tensor | None = None  # a_i (global) — per-layer values are derived on the fly
        self.core_norm = 0.0
        self.residual_norm = 0.0
        self.eta = 0.0
        self.residual_dropped = False
        self.warnings: list[str] = []

    # ---------------------------------------------------------------- the math of one tensor
    def _task_matrix(self, slot: TensorSlot) -> torch.Tensor:
        """T_l: the N weighted task vectors of one tensor as flattened rows (float64 for the statistics)."""
        tv = slot.task_vectors.reshape(slot.n_models, -1)
        return tv * self.weights.to(tv.dtype).unsqueeze(1)

    def _gram_block(self, t: torch.Tensor) -> torch.Tensor:
        """w_l · T_l T_lᵀ for one tensor."""
        p = self.parameters
        if p.center:
            t = t - t.mean(dim=1, keepdim=True)
        t = t.double()
        block = t @ t.mT
        if p.block_weight != "none":
            sq = float(block.diagonal().sum())
            if sq <= 0:
                return torch.zeros_like(block)
            block = block / sq * (t.shape[1] if p.block_weight == "size" else 1.0)
        return block

    def _coefficients_from_gram(self, gram: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """c = (1/N) · U_k U_kᵀ 1 and the eigenvalues of G (descending)."""
        n = gram.shape[0]
        evals, u = top_eigenvectors(gram, self.parameters.real_rank)
        ones = torch.ones(n, dtype=torch.float64)
        return (u @ (u.mT @ ones)) / n, evals

    def _real_core(self, slot: TensorSlot, tv: torch.Tensor) -> torch.Tensor:
        """τcore^l: Σ_i c_i τi on the subspace group, the mean on the vector group, then the blend β."""
        mean = tv.mean(dim=0)
        if not slot.group.in_subspace:
            return mean
        c = self._layer_coefficients[slot.index] if self.parameters.real_scope == "layer" else self.coefficients
        core = torch.tensordot(c.to(tv.dtype), tv, dims=1)
        beta = self.parameters.blend
        return core if beta == 1.0 else (1.0 - beta) * mean + beta * core

    def _truncate(self, slot: TensorSlot, residuals: torch.Tensor) -> list[tuple[torch.Tensor, torch.Tensor] | None]:
        """Rank-truncate the N residuals of a truncatable matrix in one batched SVD.

        Returns per residual the factors (U·S, Vh) of f̃i, or None where the residual is kept whole.
        """
        p = self.parameters
        n = residuals.shape[0]
        # Matrices whose smaller side is below N never go through an SVD: they follow the vector-group rule.
        if slot.group is not Group.TRUNCATABLE or not slot.svd_eligible:
            return [None] * n
        shape = residuals.shape[1:]
        if p.residual_energy is not None:
            u, s, vh = svd(residuals)
            factors = []
            for i in range(n):
                r = rank_from_energy(s[i], p.residual_energy)
                factors.append(((u[i, :, :r] * s[i, :r]).to(residuals.dtype), vh[i, :r].to(residuals.dtype)))
            return factors
        r = rank_from_ratio(shape, p.residual_rank_ratio)
        if r >= min(shape):
            return [None] * n
        if r == 0:
            empty = (residuals.new_zeros(shape[0], 0), residuals.new_zeros(0, shape[1]))
            return [empty] * n
        u, s, vh = truncated_svd(residuals, r, method=p.svd, seed=zlib.crc32(slot.name.encode()))
        us = (u * s.unsqueeze(-2)).to(residuals.dtype)
        return [(us[i], vh[i].to(residuals.dtype)) for i in range(n)]

    def _truncated_residuals(self, slot: TensorSlot) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(τcore^l, f^l, f̃^l) for one tensor; f and f̃ stacked N × shape."""
        tv = slot.task_vectors * self.weights.to(slot.models.dtype).view(-1, *([1] * len(slot.shape)))
        core = self._real_core(slot, tv)
        residuals = tv - core.unsqueeze(0)
        if self.parameters.residual_rank_ratio == 0.0 and self.parameters.residual_energy is None:
            return core, residuals, torch.zeros_like(residuals)
        cached = self._cache.get(slot.index)
        factors = cached if cached is not None else self._truncate(slot, residuals)
        truncated = (
            torch.stack([residuals[i] if f is None else f[0] @ f[1] for i, f in enumerate(factors)])
            if any(f is not None for f in factors)
            else residuals
        )
        if slot.group is Group.TRUNCATABLE:
            self._ranks.setdefault(
                slot.name, [min(residuals.shape[1:]) if f is None else f[1].shape[0] for f in factors]
            )
            if self.parameters.residual_cache == "memory" and all(f is not None for f in factors):
                self._cache[slot.index] = factors
        return core, residuals, truncated

    def _mix_for(self, index: int) -> torch.Tensor:
        """a_i: the weight of residual i in τres for tensor `index` (norm matching and the 1/N)."""
        p = self.parameters
        n = self.n_models
        if p.norm_matching == "none":
            return torch.full((n,), 1.0 / n, dtype=torch.float64)
        if p.norm_matching == "global":
            return self.mix
        return _norm_matching_mix(self._layer_grams[index].diagonal())

    # ---------------------------------------------------------------- passes
    def observe(self, pass_index: int, slot: TensorSlot) -> None:
        if pass_index == 0:
            if slot.group.in_subspace:
                block = self._gram_block(self._task_matrix(slot))
                if self.parameters.real_scope == "layer":
                    self._layer_coefficients[slot.index] = self._coefficients_from_gram(block)[0]
                    self._layer_names[slot.index] = slot.name
                self._gram += block
            return
        core, residuals, truncated = self._truncated_residuals(slot)
        flat = truncated.reshape(slot.n_models, -1).double()
        gram = flat @ flat.mT
        self._core_sq += core.double().pow(2).sum()
        self._before_sq += residuals.reshape(slot.n_models, -1).double().pow(2).sum(dim=1)
        self._residual_gram += gram
        if self.parameters.norm_matching == "layer":
            self._layer_grams[slot.index] = gram

    def reduce(self, pass_index: int, all_reduce) -> None:
        if pass_index == 0:
            all_reduce(self._gram)
            return
        if self.parameters.norm_matching == "layer":
            self._layer_res_sq = self._local_layer_residual_sq()
            self._layer_res_reduced = True
        packed = torch.cat(
            [self._core_sq.view(1), self._before_sq, self._residual_gram.flatten(), self._layer_res_sq.view(1)]
        )
        all_reduce(packed)
        n = self.n_models
        self._core_sq = packed[0].clone()
        self._before_sq = packed[1 : 1 + n].clone()
        self._residual_gram = packed[1 + n : 1 + n + n * n].view(n, n).clone()
        self._layer_res_sq = packed[-1].clone()

    def _local_layer_residual_sq(self) -> torch.Tensor:
        total = torch.zeros((), dtype=torch.float64)
        for gram in self._layer_grams.values():
            a = _norm_matching_mix(gram.diagonal())
            total += a @ gram @ a
        return total

    def end_pass(self, pass_index: int) -> None:
        p = self.parameters
        if pass_index == 0:
            self.coefficients, self.eigenvalues = self._coefficients_from_gram(self._gram)
            return
        n = self.n_models
        residual_gram = self._residual_gram
        if p.norm_matching == "global":
            self.mix = _norm_matching_mix(residual_gram.diagonal())
            res_sq = self.mix @ residual_gram @ self.mix
        elif p.norm_matching == "none":
            self.mix = torch.full((n,), 1.0 / n, dtype=torch.float64)
            res_sq = self.mix @ residual_gram @ self.mix
        else:
            res_sq = self._layer_res_sq if self._layer_res_reduced else self._local_layer_residual_sq()
        self.core_norm = math.sqrt(max(float(self._core_sq), 0.0))
        self.residual_norm = math.sqrt(max(float(res_sq), 0.0))
        if self.residual_norm <= RESIDUAL_DROP_TOLERANCE * self.core_norm or self.residual_norm == 0.0:
            self.residual_dropped = True
            self.eta = 0.0
        elif p.eta == "relative":
            self.eta = p.alpha * self.core_norm / self.residual_norm
        elif p.eta == "kit":
            self.eta = p.alpha * self.core_norm
        else:
            self.eta = p.alpha
        self._collect_warnings()

    def merge(self, slot: TensorSlot) -> torch.Tensor:
        core, _, truncated = self._truncated_residuals(slot)
        self._cache.pop(slot.index, None)
        merged = slot.base + core
        if self.eta != 0.0:
            a = self._mix_for(slot.index).to(truncated.dtype)
            merged = merged + self.eta * torch.tensordot(a, truncated, dims=1)
        return merged

    # ---------------------------------------------------------------- diagnostics
    def _collect_warnings(self) -> None:
        n = self.n_models
        c = self.coefficients
        if self.parameters.real_scope == "global" and c is not None:
            deviation = float((c * n - 1.0).abs().max())
            if deviation > NONUNIFORM_WARNING:
                self.warnings.append(
                    f"real-core coefficients c = {[round(float(x), 4) for x in c]} are far from uniform (1/N = "
                    f"{1 / n:.4f}): the 'real core' is dominated by some specialists; the task vectors may share little"
                )
        gap = self.spectral_gap
        if gap is not None and gap < GAP_WARNING:
            self.warnings.append(
                f"small spectral gap ({gap:.3f} relative) after eigenvalue {self.parameters.real_rank}: "
                "the real core is poorly separated from the residuals"
            )

    @property
    def spectral_gap(self) -> float | None:
        """(λ_k − λ_{k+1}) / λ_1 of the Gram matrix, or None when k = N."""
        evals = self.eigenvalues
        k = self.parameters.real_rank
        if evals is None or k >= len(evals) or float(evals[0]) <= 0:
            return None
        return float((evals[k - 1] - evals[k]) / evals[0])

    def report(self) -> dict[str, Any]:
        ranks = [r for rs in self._ranks.values() for r in rs]
        return {
            "gram_eigenvalues": [] if self.eigenvalues is None else [float(x) for x in self.eigenvalues],
            "spectral_gap": self.spectral_gap,
            "coefficients": None if self.coefficients is None else [float(x) for x in self.coefficients],
            "core_norm": self.core_norm,
            "residual_norm": self.residual_norm,
            "eta": self.eta,
            "eta_mode": self.parameters.eta,
            "residual_norms_before": [math.sqrt(max(float(x), 0.0)) for x in self._before_sq],
            "residual_norms_after": [math.sqrt(max(float(x), 0.0)) for x in self._residual_gram.diagonal()],
            "ranks_kept": {
                "per_matrix": self._ranks,
                "min": min(ranks) if ranks else None,
                "max": max(ranks) if ranks else None,
                "mean": sum(ranks) / len(ranks) if ranks else None,
            },
            "residual_dropped": self.residual_dropped,
            **(
                {
                    "layer_coefficients": {
                        self._layer_names[i]: [round(float(x), 6) for x in c]
                        for i, c in sorted(self._layer_coefficients.items())
                    }
                }
                if self.parameters.real_scope == "layer"
                else {}
            ),
            "warnings": list(self.warnings),
        }


def _norm_matching_mix(norms_sq: torch.Tensor) -> torch.Tensor:
    """a_i = m̄ / (N · ni) with m̄ = mean_i ni; a residual with ni = 0 contributes nothing."""
    norms = norms_sq.clamp_min(0).sqrt()
    n = norms.numel()
    mean_norm = norms.mean()
    safe = torch.where(norms > 0, norms, torch.ones_like(norms))
    return torch.where(norms > 0, mean_norm / (n * safe), torch.zeros_like(norms))
