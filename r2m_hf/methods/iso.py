"""Iso-C and Iso-CTS of Marczak et al., "No task left behind: isotropic model merging with common and
task-specific subspaces" (ICML 2025).

Per 2-D tensor of the subspace group whose smaller side r is at least T. Iso-C flattens the spectrum of the summed
task matrix: Σt Δt = U S Vᵀ → Δ = mean(S) · U Vᵀ. Iso-CTS keeps the top k singular directions of Σt Δt as a common
space, adds each task's top s directions after projecting the common left space out of Δt (s = round((r − ⌊f·r⌋)/T),
k = r − T·s), orthogonalises the concatenated directions by polar factors and flattens their spectrum to the mean of
the kept singular values. A matrix with no task-specific slot (s = 0, e.g. ``common_fraction: 1.0``) takes Iso-C, the
method's limit as f → 1 (as the authors' code does). θ = θ0 + λ Δ; every other tensor takes the vector rule
θ0 + λ τ̄. The weights wt are rescaled to sum to N (wt · N / Σw), so only their ratios matter and unit weights give
the unweighted rule.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from pydantic import Field

from ..linalg import compute_dtype, polar_factor, svd, truncated_svd
from ._common import ScaledParameters, svd_path_rows, vector_rule, weigh
from .base import MergeMethod, TensorSlot, Tunable

if TYPE_CHECKING:
    import torch


class IsoCParameters(ScaledParameters):
    """Iso-C's parameters (the paper tunes λ ≈ 1.3–1.9)."""


class IsoCTSParameters(ScaledParameters):
    """Iso-CTS's parameters."""

    common_fraction: float = Field(0.8, ge=0.0, le=1.0, description="f: share of the rank given to the common space")


class _Isotropic(MergeMethod):
    """Shared fallback and report of the isotropic merges."""

    def __init__(self, parameters: ScaledParameters, weights: torch.Tensor, names: list[str]):
        super().__init__(parameters, weights, names)
        self._counts = {"svd": 0, "vector_rule": 0}

    def fallback(self, slot: TensorSlot) -> torch.Tensor:
        self._counts["vector_rule"] += 1
        return vector_rule(slot, self.weights, self.parameters.lambda_)

    def deltas(self, slot: TensorSlot) -> torch.Tensor:
        """The weighted task matrices wt Δt in the SVD's compute dtype."""
        self._counts["svd"] += 1
        return weigh(slot.task_vectors, self.weights).to(compute_dtype(slot.models))

    def report(self) -> dict[str, Any]:
        return {**self.parameters.model_dump(by_alias=True), "tensors": dict(self._counts)}

    @classmethod
    def summary_rows(cls, report: Mapping[str, Any]) -> list[tuple[str, str]]:
        return svd_path_rows(report)


def isotropic_sum(deltas: torch.Tensor) -> torch.Tensor:
    """Iso-C's update: Σt Δt = U S Vᵀ → mean(S) · U Vᵀ (the summed task matrix with a flat spectrum).

    Args:
        deltas (`torch.Tensor`): the weighted task matrices wt Δt, T × m × n.

    Returns:
        `torch.Tensor`: the m × n update (before λ).
    """
    u, s, vh = svd(deltas.sum(dim=0))
    return s.mean() * (u @ vh)


class IsoC(_Isotropic):
    """Isotropic merge in the common subspace: the summed task matrix with a flat spectrum."""

    name = "iso_c"
    parameters_model = IsoCParameters
    description = "Iso-C: Σt Δt with its singular values replaced by their mean"
    order = 70
    search_space = {"lambda": Tunable(0.3, 3.0)}

    def merge(self, slot: TensorSlot) -> torch.Tensor:
        """Return θ0 + λ · mean(S) · U Vᵀ with Σt wt Δt = U S Vᵀ, or the vector rule.

        Args:
            slot (`TensorSlot`): the tensor to merge.

        Returns:
            `torch.Tensor`: the merged tensor.
        """
        if not slot.svd_eligible:
            return self.fallback(slot)
        delta = isotropic_sum(self.deltas(slot))
        return slot.base + self.parameters.lambda_ * delta.to(slot.base.dtype)


class IsoCTS(_Isotropic):
    """Isotropic merge in common and task-specific subspaces."""

    name = "iso_cts"
    parameters_model = IsoCTSParameters
    description = "Iso-CTS: common + per-task singular directions, orthogonalised, with a flat spectrum"
    order = 80
    search_space = {"lambda": Tunable(0.3, 3.0), "common_fraction": Tunable(0.5, 1.0)}

    def subspace_sizes(self, r: int) -> tuple[int, int]:
        """Return (k, s): the common-space size and the per-task size for smaller side r."""
        n = self.n_models
        s = min(round((r - math.floor(self.parameters.common_fraction * r + 1e-9)) / n), r // n)
        return r - n * s, s

    def merge(self, slot: TensorSlot) -> torch.Tensor:
        """Return θ0 + λ · σ̄ · U* V*ᵀ over common and task-specific directions (Iso-C when s = 0), or the vector rule.

        Args:
            slot (`TensorSlot`): the tensor to merge.

        Returns:
            `torch.Tensor`: the merged tensor.
        """
        import torch

        if not slot.svd_eligible:
            return self.fallback(slot)
        k, s = self.subspace_sizes(min(slot.shape))
        deltas = self.deltas(slot)
        if s == 0:  # no task-specific slot: the common space is everything, the method's limit is Iso-C
            return slot.base + self.parameters.lambda_ * isotropic_sum(deltas).to(slot.base.dtype)
        # the common space: top-k singular directions of Σt Δt
        u, sigma, vh = truncated_svd(deltas.sum(dim=0), k)
        us, sigmas, vhs = [u], [sigma], [vh]
        # each task's top-s directions outside the common left space
        for delta in deltas:
            ut, st, vht = truncated_svd(delta - u @ (u.mT @ delta), s)
            us.append(ut), sigmas.append(st), vhs.append(vht)
        sigma_mean = torch.cat(sigmas).mean()
        delta = sigma_mean * (polar_factor(torch.cat(us, dim=1)) @ polar_factor(torch.cat(vhs, dim=0)))
        return slot.base + self.parameters.lambda_ * delta.to(slot.base.dtype)
