"""The contract between the merge engine and a merge method.

A method is pure tensor math: it never opens a file. The engine streams the backbone one tensor at a time and hands
the method a :class:`TensorSlot` (the base tensor θ0 and the N specialists' tensors θi, already in the compute dtype
on the merge device). Methods that need whole-model statistics (R²M's Gram matrix and norms, global TIES trimming)
declare ``statistics_passes``; the engine then streams every tensor through :meth:`MergeMethod.observe` that many
times, calling :meth:`MergeMethod.end_pass` after each, before the final pass that calls :meth:`MergeMethod.merge`.
Heads never reach a method: every method shares one head policy (see ``heads.py``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

import torch
from pydantic import BaseModel, ConfigDict

from ..groups import Group


class MethodParameters(BaseModel):
    """Base class of a method's typed parameters; unknown keys are rejected."""

    model_config = ConfigDict(extra="forbid", frozen=True)


@dataclass
class TensorSlot:
    """One backbone tensor as a method sees it.

    Args:
        name (`str`): canonical (in-memory transformers) parameter name.
        group (`Group`): the tensor's parameter group (never `Group.HEAD`).
        base (`torch.Tensor` or `None`): θ0 for this tensor; `None` only for methods that do not need a base.
        models (`torch.Tensor`): the N specialists' tensors stacked on a new leading dimension (N × shape).
        index (`int`): position of the tensor in the merge plan (stable across passes and processes).
    """

    name: str
    group: Group
    base: torch.Tensor | None
    models: torch.Tensor
    index: int = 0

    @property
    def n_models(self) -> int:
        return self.models.shape[0]

    @property
    def shape(self) -> torch.Size:
        return self.models.shape[1:]

    @property
    def task_vectors(self) -> torch.Tensor:
        """τi = θi − θ0 stacked (N × shape)."""
        if self.base is None:
            raise ValueError(f"tensor {self.name}: this method needs a base model")
        return self.models - self.base.unsqueeze(0)

    @property
    def svd_eligible(self) -> bool:
        """Whether SVD-based rules apply: a 2-D tensor of S whose smaller side is at least N."""
        return self.group.in_subspace and len(self.shape) == 2 and min(self.shape) >= self.n_models


class MergeMethod:
    """Base class of a merge method.

    Subclasses set ``name`` (the YAML ``merge_method``), ``parameters_model`` (a :class:`MethodParameters`
    subclass holding the defaults) and implement :meth:`merge`.

    Args:
        parameters (`MethodParameters`): the validated parameters.
        weights (`torch.Tensor`): per-model weights (mergekit's ``weight``), shape (N,), float64.
        names (`list[str]`): the specialists' names, in YAML order.
    """

    name: ClassVar[str]
    parameters_model: ClassVar[type[MethodParameters]] = MethodParameters
    requires_base: ClassVar[bool] = True
    statistics_passes: ClassVar[int] = 0
    description: ClassVar[str] = ""

    def __init__(self, parameters: MethodParameters, weights: torch.Tensor, names: list[str]):
        self.parameters = parameters
        self.weights = weights
        self.names = list(names)

    @property
    def n_models(self) -> int:
        return len(self.names)

    def observe(self, pass_index: int, slot: TensorSlot) -> None:
        """Accumulate whole-model statistics from one tensor during statistics pass `pass_index`."""

    def end_pass(self, pass_index: int) -> None:
        """Finish statistics pass `pass_index` (e.g. eigendecompose an accumulated Gram matrix)."""

    def reduce(self, pass_index: int, all_reduce) -> None:
        """Sum this process's statistics of pass `pass_index` across processes.

        `all_reduce(tensor)` sums a tensor in place over all processes. Methods with statistics override this so a
        multi-process merge sees the statistics of every tensor; it is called before :meth:`end_pass`.
        """

    def merge(self, slot: TensorSlot) -> torch.Tensor:
        """Return the merged tensor θ* for `slot` (same shape as one specialist's tensor)."""
        raise NotImplementedError

    def report(self) -> dict[str, Any]:
        """Diagnostics for ``merge_report.json`` and the model card (JSON-serialisable)."""
        return {}


def mean_task_vector(slot: TensorSlot, weights: torch.Tensor | None = None) -> torch.Tensor:
    """Return the (weighted) mean task vector τ̄ = Σ wt τt / Σ wt of a slot."""
    tv = slot.task_vectors
    if weights is None:
        return tv.mean(dim=0)
    w = weights.to(tv.dtype).view(-1, *([1] * (tv.dim() - 1)))
    return (w * tv).sum(dim=0) / weights.sum().to(tv.dtype)


__all__ = ["Group", "MergeMethod", "MethodParameters", "TensorSlot", "mean_task_vector"]
