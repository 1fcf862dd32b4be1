"""Iso-C and Iso-CTS of Marczak et al., "No task left behind: isotropic model merging with common and
task-specific subspaces" (ICML 2025).

Per 2-D tensor of the subspace group whose smaller side r is at least T. Iso-C flattens the spectrum of the summed
task matrix: Σt Δt = U S Vᵀ → Δ = mean(S) · U Vᵀ. Iso-CTS keeps the top k singular directions of Σt Δt as a common
space, adds each task's top s directions after projecting the common left space out of Δt (s = round((r − ⌊f·r⌋)/T),
k = r − T·s), orthogonalises the concatenated directions by polar factors and flattens their spectrum to the mean of
the kept singular values. θ = θ0 + λ Δ; every other tensor (and any tensor with s = 0) takes the vector rule θ0 + λ τ̄.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from pydantic import Field

from ..linalg import compute_dtype, polar_factor, svd, truncated_svd
from ._common import ScaledParameters, vector_rule, weigh
from .base import MergeMethod, TensorSlot
from .registry import register_method


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


@register_method
class IsoC(_Isotropic):
    """Isotropic merge in the common subspace: the summed task matrix with a flat spectrum."""

    name = "iso_c"
    parameters_model = IsoCParameters
    description = "Iso-C: Σt Δt with its singular values replaced by their mean"

    def merge(self, slot: TensorSlot) -> torch.Tensor:
        """Return θ0 + λ · mean(S) · U Vᵀ with Σt wt Δt = U S Vᵀ, or the vector rule.

        Args:
            slot (`TensorSlot`): the tensor to merge.

        Returns:
            `torch.Tensor`: the merged tensor.
        """
        if not slot.svd_eligible:
            return self.fallback(slot)
        u, s, vh = svd(self.deltas(slot).sum(dim=0))
        delta = s.mean() * (u @ vh)
        return slot.base + self.parameters.lambda_ * delta.to(slot.base.dtype)


@register_method
class IsoCTS(_Isotropic):
    """Isotropic merge in common and task-specific subspaces."""

    name = "iso_cts"
    parameters_model = IsoCTSParameters
    description = "Iso-CTS: common + per-task singular directions, orthogonalised, with a flat spectrum"

    def subspace_sizes(self, r: int) -> tuple[int, int]:
        """Return (k, s): the common-space size and the per-task size for smaller side r."""
        n = self.n_models
        s = min(round((r - math.floor(self.parameters.common_fraction * r + 1e-9)) / n), r // n)
        return r - n * s, s

    def merge(self, slot: TensorSlot) -> torch.Tensor:
        """Return θ0 + λ · σ̄ · U* V*ᵀ over common and task-specific directions, or the vector rule.

        Args:
            slot (`TensorSlot`): the tensor to merge.

        Returns:
            `torch.Tensor`: the merged tensor.
        """
        if not slot.svd_eligible:
            return self.fallback(slot)
        k, s = self.subspace_sizes(min(slot.shape))
        if s == 0:
            return self.fallback(slot)
        deltas = self.deltas(slot)
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
