"""CART of Choi et al., "Revisiting weight averaging for model merging" (2024): the average plus low-rank centred
task vectors.

θ̄ = θ0 + τ̄ for every tensor; for the truncatable matrices (encoder-block linear weights) whose smaller side r is at
least T, θ = θ̄ + λ Σt wt SVD_k(τt − τ̄) with k = max(1, ⌊ρ·r⌋). Every other tensor is θ̄ (no λ). τ̄ is the weighted
mean Σ wt τt / Σ wt (the plain mean for unit weights). The weights wt are rescaled to sum to N (wt · N / Σw), so only
their ratios matter and unit weights give the unweighted rule.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, Literal

from pydantic import Field

from ..groups import Group
from ..linalg import low_rank_approximation, rank_from_ratio
from ._common import ScaledParameters, broadcast_weights, format_number
from .base import MergeMethod, Sweep, TensorSlot, Tunable, mean_task_vector

if TYPE_CHECKING:
    import torch


class CartParameters(ScaledParameters):
    """CART's parameters."""

    rank_ratio: float = Field(0.1, gt=0.0, le=1.0, description="ρ: rank kept per matrix, k = max(1, ⌊ρ·r⌋)")
    svd: Literal["exact", "randomized"] = Field("randomized", description="seeded randomised SVD, or the exact one")


class Cart(MergeMethod):
    """Weight average plus the λ-scaled sum of the rank-k centred task vectors."""

    name = "cart"
    parameters_model = CartParameters
    description = "CART: θ̄ + λ Σ SVD_k(τt − τ̄) on the truncatable matrices, θ̄ elsewhere"
    order = 90
    search_space = {"rank_ratio": Tunable(0.01, 0.5, log=True), "lambda": Tunable(0.3, 2.0)}

    @classmethod
    def sensitivity_sweeps(cls) -> list[Sweep]:
        """ρ over the positive values of R²M's ρ sweep, at the tuned λ."""
        return [Sweep("rho_cart", "rank_ratio", (0.01, 0.1, 1.0))]

    @classmethod
    def summary_rows(cls, report: Mapping[str, Any]) -> list[tuple[str, str]]:
        tensors = report.get("tensors") or {}
        ranks = report.get("ranks") or {}
        return [
            ("matrices with low-rank centred task vectors", format_number(tensors.get("low_rank"))),
            ("tensors averaged", format_number(tensors.get("average"))),
            ("ranks kept (min / max)", f"{format_number(ranks.get('min'))} / {format_number(ranks.get('max'))}"),
        ]

    def __init__(self, parameters: CartParameters, weights: torch.Tensor, names: list[str]):
        super().__init__(parameters, weights, names)
        self._counts = {"low_rank": 0, "average": 0}
        self._ranks: list[int] = []

    def merge(self, slot: TensorSlot) -> torch.Tensor:
        """Return θ̄ + λ Σ wt SVD_k(τt − τ̄) for a truncatable matrix, θ̄ for any other tensor.

        Args:
            slot (`TensorSlot`): the tensor to merge.

        Returns:
            `torch.Tensor`: the merged tensor.
        """
        import torch

        p = self.parameters
        mean = mean_task_vector(slot, self.weights)
        averaged = slot.base + mean
        if not (slot.group is Group.TRUNCATABLE and slot.svd_eligible):
            self._counts["average"] += 1
            return averaged
        self._counts["low_rank"] += 1
        k = rank_from_ratio(slot.shape, p.rank_ratio)
        self._ranks.append(k)
        centred = slot.task_vectors - mean
        low_rank = torch.stack([low_rank_approximation(c, k, method=p.svd) for c in centred])
        return averaged + p.lambda_ * (broadcast_weights(self.weights, low_rank) * low_rank).sum(dim=0)

    def report(self) -> dict[str, Any]:
        p = self.parameters
        ranks = {"min": min(self._ranks), "max": max(self._ranks)} if self._ranks else None
        return {"rank_ratio": p.rank_ratio, "lambda": p.lambda_, "svd": p.svd, "ranks": ranks, "tensors": self._counts}
