"""Task arithmetic of Ilharco et al., "Editing models with task arithmetic" (ICLR 2023): θ = θ0 + λ Σ wt τt.

Applied to every tensor alike (an element-wise rule has no small-matrix case); with unit weights λ = 1/N is
weight averaging. The weights wt are rescaled to sum to N (wt · N / Σw, see :class:`MergeMethod`), so only their
ratios matter and unit weights give θ0 + λ Σ τt.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from pydantic import Field

from ._common import ScaledParameters, weigh
from .base import MergeMethod, TensorSlot, Tunable

if TYPE_CHECKING:
    import torch


class TaskArithmeticParameters(ScaledParameters):
    """Task arithmetic's parameters."""

    lambda_: float = Field(0.3, alias="lambda", ge=0.0, description="λ: scale of the summed task vectors")


class TaskArithmetic(MergeMethod):
    """Add the λ-scaled, weighted sum of the task vectors to the base."""

    name = "task_arithmetic"
    parameters_model = TaskArithmeticParameters
    description = "task arithmetic: θ = θ0 + λ Σ wt τt"
    order = 20
    search_space = {"lambda": Tunable(0.05, 1.5)}

    def __init__(self, parameters: TaskArithmeticParameters, weights: torch.Tensor, names: list[str]):
        super().__init__(parameters, weights, names)
        self._tensors = 0

    def merge(self, slot: TensorSlot) -> torch.Tensor:
        """Return θ0 + λ Σ wt τt for one tensor.

        Args:
            slot (`TensorSlot`): the tensor to merge.

        Returns:
            `torch.Tensor`: the merged tensor.
        """
        self._tensors += 1
        return slot.base + self.parameters.lambda_ * weigh(slot.task_vectors, self.weights).sum(dim=0)

    def report(self) -> dict[str, Any]:
        return {"lambda": self.parameters.lambda_, "weights": self.weights.tolist(), "tensors": self._tensors}
