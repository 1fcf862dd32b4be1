"""TIES-merging of Yadav et al., "Resolving interference when merging models" (NeurIPS 2023).

Per tensor: trim each τt to its top-`density` entries by magnitude, weigh by wt, elect each entry's sign as the sign
of the sum, and average the entries that agree with it (the disjoint mean); θ = θ0 + λ · that. Trimming is per tensor
by default (peft's ``ties``); ``trim: global`` ranks each specialist's entries over the whole model, which needs two
statistics passes (see :class:`GlobalMagnitudeThreshold`). Every tensor, the vector group included, goes through
the same rule, as in peft and mergekit. The weights wt are rescaled to sum to N (wt · N / Σw), so only their ratios
matter and unit weights give the unweighted rule.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, Literal

from pydantic import Field

from ..groups import Group
from ._common import (
    GlobalMagnitudeThreshold,
    KeptCounter,
    ScaledParameters,
    disjoint_merge,
    elect_sign,
    format_numbers,
    magnitude_trim,
    weigh,
)
from .base import MergeMethod, TensorSlot, Tunable

if TYPE_CHECKING:
    import torch


class TiesParameters(ScaledParameters):
    """TIES's parameters."""

    density: float = Field(0.2, gt=0.0, le=1.0, description="fraction of each task vector kept by the trim")
    trim: Literal["tensor", "global"] = Field("tensor", description="rank magnitudes per tensor or over the model")
    merge: Literal["mean", "sum"] = Field("mean", description="disjoint mean (TIES) or sum of the agreeing entries")


class Ties(MergeMethod):
    """Trim, elect sign, disjoint merge."""

    name = "ties"
    parameters_model = TiesParameters
    description = "TIES: magnitude trim, sign election, disjoint mean of the agreeing entries"
    order = 30
    search_space = {
        "lambda": Tunable(0.3, 3.0),
        "density": Tunable(0.05, 1.0),
        "trim": Tunable(choices=("tensor", "global")),
    }

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

    def extra_memory_bytes(
        self, shapes: Mapping[str, tuple[int, ...]], groups: Mapping[str, Group], itemsize: int
    ) -> int:
        """The global trim's two count tables (N × 2¹⁵ and N × 2¹⁶ int64), whatever the model size."""
        if self._global is None:
            return 0
        return (self._global.high.numel() + self._global.low.numel()) * self._global.high.element_size()

    @classmethod
    def summary_rows(cls, report: Mapping[str, Any]) -> list[tuple[str, str]]:
        rows = [("kept fraction per specialist", format_numbers(report.get("kept_fraction"), ".3f"))]
        if "global_thresholds" in report:
            rows.append(("global magnitude thresholds", format_numbers(report["global_thresholds"])))
        return rows

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
