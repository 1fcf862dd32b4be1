"""TSV-Merge of Gargiulo et al., "Task Singular Vectors: reducing task interference in model merging" (CVPR 2025).

Per 2-D tensor of the subspace group whose smaller side r is at least T: keep the top k = ⌊r/T⌋ singular triplets of
each (weighted) Δt, stack U = [U1 … UT], Σ = diag(σ1 … σT), V = [V1 … VT], replace U and V by their orthogonal
polar factors and set Δ = U⊥ Σ V⊥ᵀ; θ = θ0 + λ Δ. Every other tensor takes the vector rule θ0 + λ τ̄. The weights
wt are rescaled to sum to N (wt · N / Σw), so only their ratios matter and unit weights give the unweighted rule.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from ..linalg import compute_dtype, polar_factor, truncated_svd
from ._common import ScaledParameters, svd_path_rows, vector_rule, weigh
from .base import MergeMethod, TensorSlot, Tunable

if TYPE_CHECKING:
    import torch


class TsvMParameters(ScaledParameters):
    """TSV-M's parameters."""


class TsvM(MergeMethod):
    """Task-singular-vector merge: per-task top-⌊r/T⌋ SVDs, decorrelated by polar factors."""

    name = "tsv_m"
    parameters_model = TsvMParameters
    description = "TSV-M: per-task top-⌊r/T⌋ singular vectors, orthogonalised by polar factors"
    order = 60
    search_space = {"lambda": Tunable(0.3, 2.0)}

    @classmethod
    def summary_rows(cls, report: Mapping[str, Any]) -> list[tuple[str, str]]:
        return svd_path_rows(report)

    def __init__(self, parameters: TsvMParameters, weights: torch.Tensor, names: list[str]):
        super().__init__(parameters, weights, names)
        self._counts = {"svd": 0, "vector_rule": 0}

    def merge(self, slot: TensorSlot) -> torch.Tensor:
        """Return θ0 + λ U⊥ Σ V⊥ᵀ for an SVD-eligible tensor, else the vector rule.

        Args:
            slot (`TensorSlot`): the tensor to merge.

        Returns:
            `torch.Tensor`: the merged tensor.
        """
        import torch

        k = min(slot.shape) // self.n_models if slot.svd_eligible else 0
        if k == 0:
            self._counts["vector_rule"] += 1
            return vector_rule(slot, self.weights, self.parameters.lambda_)
        self._counts["svd"] += 1
        deltas = weigh(slot.task_vectors, self.weights).to(compute_dtype(slot.models))
        us, sigmas, vhs = zip(*(truncated_svd(delta, k) for delta in deltas))
        u, sigma, vh = torch.cat(us, dim=1), torch.cat(sigmas), torch.cat(vhs, dim=0)
        delta = (polar_factor(u) * sigma) @ polar_factor(vh)
        return slot.base + self.parameters.lambda_ * delta.to(slot.base.dtype)

    def report(self) -> dict[str, Any]:
        return {"lambda": self.parameters.lambda_, "tensors": dict(self._counts)}
