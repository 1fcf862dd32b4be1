"""Weight averaging, the "uniform soup" of Wortsman et al., "Model soups" (ICML 2022): θ = Σ wt θt / Σ wt.

It needs no base model and treats every tensor alike. The weights wt only set each specialist's share (the method
is normalised by Σ wt, so multiplying every weight by a constant changes nothing).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .base import MergeMethod, MethodParameters, TensorSlot

if TYPE_CHECKING:
    import torch


class Average(MergeMethod):
    """Weighted mean of the specialists' tensors, normalised by the sum of the weights."""

    name = "average"
    requires_base = False
    description = "weight averaging (model soup): θ = Σ wt θt / Σ wt"
    order = 0

    def __init__(self, parameters: MethodParameters, weights: torch.Tensor, names: list[str]):
        super().__init__(parameters, weights, names)
        self._tensors = 0

    def merge(self, slot: TensorSlot) -> torch.Tensor:
        """Return the weighted mean of the specialists' tensors.

        Args:
            slot (`TensorSlot`): the tensor to merge (`slot.base` may be `None`).

        Returns:
            `torch.Tensor`: θ = Σ wt θt / Σ wt.
        """
        self._tensors += 1
        models = slot.models
        w = self.weights.to(dtype=models.dtype, device=models.device)
        # one (1 × N)·(N × size) product: a single read of the stack and no N × size temporary
        return (w @ models.reshape(models.shape[0], -1)).reshape(models.shape[1:]) / w.sum()

    def report(self) -> dict[str, Any]:
        return {"weights": self.weights.tolist(), "tensors": self._tensors}
