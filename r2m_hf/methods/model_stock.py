"""Model Stock of Jang et al., "Model Stock: all we need is just a few fine-tuned models" (ECCV 2024).

Per tensor: cos φ is the mean pairwise cosine of the task vectors τt, t = T cos φ / (1 + (T − 1) cos φ), and
θ = t · θ̄ + (1 − t) · θ0 = θ0 + t τ̄ with θ̄ the (weighted) mean of the specialists. As in the paper, t is not clipped
(a negative cos φ extrapolates away from the average). Guards: a task vector of zero norm counts as orthogonal to
the others (cos 0, as mergekit's epsilon does), and when 1 + (T − 1) cos φ vanishes (the unit task vectors sum to
zero) t is set to 0, so the tensor stays θ0 instead of becoming infinite. The weights only enter τ̄, normalised by
their sum, so multiplying every weight by a constant changes nothing.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from ..errors import MethodError
from ._common import format_number
from .base import MergeMethod, MethodParameters, TensorSlot, mean_task_vector

if TYPE_CHECKING:
    import torch

# Below this 1 + (T − 1) cos φ is treated as zero (the interpolation ratio is undefined there).
DEGENERATE_DENOMINATOR = 1e-9


def model_stock_ratio(task_vectors: torch.Tensor) -> tuple[float, float]:
    """Return (cos φ, t) for task vectors stacked on the first dimension (T × shape), in float64.

    Args:
        task_vectors (`torch.Tensor`): τt, T × shape, T ≥ 2.

    Returns:
        `(float, float)`: the mean pairwise cosine and the interpolation ratio t.
    """
    import torch

    n = task_vectors.shape[0]
    flat = task_vectors.reshape(n, -1).double()
    norms = flat.norm(dim=1, keepdim=True)
    unit = torch.where(norms > 0, flat / norms.clamp(min=torch.finfo(torch.float64).tiny), 0.0)
    pairs = torch.triu_indices(n, n, offset=1)
    cos = float((unit @ unit.mT)[pairs[0], pairs[1]].mean().clamp(-1.0, 1.0))
    denominator = 1 + (n - 1) * cos
    ratio = n * cos / denominator if denominator > DEGENERATE_DENOMINATOR else 0.0
    return cos, ratio


class ModelStock(MergeMethod):
    """Interpolate between the base and the average by a ratio set by the task vectors' angle."""

    name = "model_stock"
    description = "Model Stock: θ = θ0 + t τ̄, t = T cos φ / (1 + (T − 1) cos φ) per tensor"
    order = 10

    def __init__(self, parameters: MethodParameters, weights: torch.Tensor, names: list[str]):
        super().__init__(parameters, weights, names)
        if self.n_models < 2:
            raise MethodError("model_stock needs at least two specialists (it measures the angle between them)")
        self._ratios: list[float] = []

    def merge(self, slot: TensorSlot) -> torch.Tensor:
        """Return θ0 + t τ̄ for one tensor.

        Args:
            slot (`TensorSlot`): the tensor to merge.

        Returns:
            `torch.Tensor`: the merged tensor.
        """
        _, ratio = model_stock_ratio(slot.task_vectors)
        self._ratios.append(ratio)
        return slot.base + ratio * mean_task_vector(slot, self.weights)

    @classmethod
    def summary_rows(cls, report: Mapping[str, Any]) -> list[tuple[str, str]]:
        t = [format_number(report.get(k)) for k in ("t_min", "t_mean", "t_max")]
        return [
            ("interpolation ratio t (min / mean / max)", " / ".join(t)),
            ("tensors with t < 0 (extrapolated)", format_number(report.get("negative_t"))),
        ]

    def report(self) -> dict[str, Any]:
        r = self._ratios
        if not r:
            return {"tensors": 0}
        return {
            "tensors": len(r),
            "t_min": min(r),
            "t_mean": sum(r) / len(r),
            "t_max": max(r),
            "negative_t": sum(x < 0 for x in r),
        }
