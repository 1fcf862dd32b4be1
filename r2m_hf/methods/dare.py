"""DARE of Yu et al., "Language models are Super Mario" (ICML 2024): drop and rescale, then merge.

Each entry of each τt is kept with probability p = `density` and the kept ones are rescaled by 1/p; the drop mask is
seeded per tensor and model from (`seed`, tensor name, model index), so a merge is reproducible whatever the tensor
order or process split. ``dare_linear`` then applies task arithmetic (θ0 + λ Σ wt τ̃t), ``dare_ties`` TIES's sign
election and disjoint mean (no magnitude trim), as peft's ``dare_linear`` and ``dare_ties``. Every tensor goes
through the same rule. The weights wt are rescaled to sum to N (wt · N / Σw), so only their ratios matter and unit
weights give the unweighted rule.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from pydantic import Field

from ._common import KeptCounter, ScaledParameters, dare_drop, disjoint_merge, elect_sign, format_numbers, weigh
from .base import MergeMethod, TensorSlot, Tunable

if TYPE_CHECKING:
    import torch


class DareParameters(ScaledParameters):
    """DARE's parameters (λ default of ``dare_ties``)."""

    density: float = Field(0.5, gt=0.0, le=1.0, description="p: probability of keeping an entry")
    seed: int = Field(0, ge=0, description="seed of the drop masks")


class DareLinearParameters(DareParameters):
    """``dare_linear``'s parameters."""

    lambda_: float = Field(0.3, alias="lambda", ge=0.0, description="λ: scale of the summed task vectors")


class _Dare(MergeMethod):
    """Shared drop step and report of the DARE methods."""

    def __init__(self, parameters: DareParameters, weights: torch.Tensor, names: list[str]):
        super().__init__(parameters, weights, names)
        self._tracker = KeptCounter(self.n_models)

    def drop(self, slot: TensorSlot) -> torch.Tensor:
        """Return the weighted, dropped and rescaled task vectors wt · τ̃t of one tensor."""
        dropped = dare_drop(slot.task_vectors, self.parameters.density, self.parameters.seed, slot.name)
        self._tracker.add(dropped)
        return weigh(dropped, self.weights)

    @classmethod
    def summary_rows(cls, report: Mapping[str, Any]) -> list[tuple[str, str]]:
        return [("kept fraction per specialist", format_numbers(report.get("kept_fraction"), ".3f"))]

    def report(self) -> dict[str, Any]:
        p = self.parameters
        return {"density": p.density, "seed": p.seed, "lambda": p.lambda_, "kept_fraction": self._tracker.fractions()}


class DareLinear(_Dare):
    """Drop and rescale, then task arithmetic."""

    name = "dare_linear"
    parameters_model = DareLinearParameters
    description = "DARE + task arithmetic: θ = θ0 + λ Σ wt · drop(τt)/p"
    order = 40
    search_space = {"lambda": Tunable(0.05, 1.5), "density": Tunable(0.1, 1.0)}

    def merge(self, slot: TensorSlot) -> torch.Tensor:
        """Return θ0 + λ Σ wt τ̃t for one tensor.

        Args:
            slot (`TensorSlot`): the tensor to merge.

        Returns:
            `torch.Tensor`: the merged tensor.
        """
        return slot.base + self.parameters.lambda_ * self.drop(slot).sum(dim=0)


class DareTies(_Dare):
    """Drop and rescale, then TIES's sign election and disjoint mean."""

    name = "dare_ties"
    parameters_model = DareParameters
    description = "DARE + TIES: drop and rescale, elect sign, disjoint mean"
    order = 50
    search_space = {"lambda": Tunable(0.3, 3.0), "density": Tunable(0.1, 1.0)}

    def merge(self, slot: TensorSlot) -> torch.Tensor:
        """Return θ0 + λ · disjoint_merge(elect_sign(wt τ̃t)) for one tensor.

        Args:
            slot (`TensorSlot`): the tensor to merge.

        Returns:
            `torch.Tensor`: the merged tensor.
        """
        weighted = self.drop(slot)
        return slot.base + self.parameters.lambda_ * disjoint_merge(weighted, elect_sign(weighted), "mean")
