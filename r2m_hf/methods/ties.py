"""TIES-merging of Yadav et al., "Resolving interference when merging models" (NeurIPS 2023).

Per tensor: trim each τt to its top-`density` entries by magnitude, weigh by wt, elect each entry's sign as the sign
of the sum, and average the entries that agree with it (the disjoint mean); θ = θ0 + λ · that. Trimming is per tensor
by default (peft's ``ties``); ``trim: global`` ranks each specialist's entries over the whole model, which needs two
statistics passes (see :class:`GlobalMagnitudeThreshold`). Every tensor, the vector group included, goes through
the same rule, as in peft and mergekit.
"""

from __future__ import annotations

from typing import Any, Literal

import torch
from pydantic import Field

from ._common import (
    GlobalMagnitudeThreshold,
    KeptCounter,
    ScaledParameters,
    disjoint_merge,
    elect_sign,
    magnitude_trim,
    weigh,
)
from .base import MergeMethod, TensorSlot
from .registry import register_method


class TiesParameters(ScaledParameters):
    """TIES's parameters."""

    density: float = Field(0.2, gt=0.0, le=1.0, description="fraction of each task vector kept by the trim")
    trim: Literal["tensor", "global"] = Field("tensor", description="rank magnitudes per tensor or over the model")
    merge: Literal["mean", "sum"] = Field("mean", description="disjoint mean (TIES) or sum of the agreeing entries")


@register_method
class Ties(MergeMethod):
    """Trim, elect sign, disjoint merge."""

    name = "ties"
    parameters_model = TiesParameters
    description = "TIES: magnitude trim, sign election, disjoint mean of the agreeing entries"

    def __init__(self, parameters: TiesParameters, weights: torch.Tensor, names: list[str]):
        super().__init__(parameters, weights, names)
        p = self.parameters
        self._global = (
            GlobalMagnitudeThreshold(self.n_models, p.density) if p.trim == "global" and p.density < 1 else None
        )
        self.statistics_passes = 2 if self._global is not None else 0
        self._tracker = KeptCounter(self.n_models)

    def observe(self, pass_index: int, slot: TensorSlot) -> None:
        self._global.observe(pass_index, slot.task_vectors)

    def reduce(self, pass_index: int, all_reduce) -> None:
        self._global.reduce(pass_index, all_reduce)

    def end_pass(self, pass_index: int) -> None:
        self._global.end_pass(pass_index)

    def merge(self, slot: TensorSlot) -> torch.Tensor:
        """Return θ0 + λ · disjoint_merge(elect_sign(wt · trim(τt))) for one tensor.

        Args:
            slot (`TensorSlot`): the tensor to merge.

        Returns:
            `torch.Tensor`: the merged tensor.
        """
        p = self.parameters
        tv = slot.task_vectors
        # 1. trim each τt to its top-density magnitudes (per tensor or against the whole-model threshold)
        trimmed = self._global.trim(tv) if self._global is not None else magnitude_trim(tv, p.density)
        self._tracker.add(trimmed)
        # 2. weigh, 3. elect the sign of Σ wt τt, 4. combine the entries that agree with it
        weighted = weigh(trimmed, self.weights)
        merged = disjoint_merge(weighted, elect_sign(weighted), p.merge)
        return slot.base + p.lambda_ * merged

    def report(self) -> dict[str, Any]:
        p = self.parameters
        report = {
            "trim": p.trim,
            "density": p.density,
            "merge": p.merge,
            "lambda": p.lambda_,
            "kept_fraction": self._tracker.fractions(),
        }
        if self._global is not None:
            report["global_thresholds"] = self._global.threshold_values()
        return report
