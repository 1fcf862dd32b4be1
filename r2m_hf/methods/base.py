"""The contract between the merge engine and a merge method, and the declarations a method makes about itself.

A method is pure tensor math: it never opens a file. The engine streams the backbone one tensor at a time and hands
the method a :class:`TensorSlot` (the base tensor θ0 and the N specialists' tensors θi, already in the compute dtype
on the merge device). Methods that need whole-model statistics (R²M's Gram matrix and norms, global TIES trimming)
declare ``statistics_passes``; the engine then streams every tensor through :meth:`MergeMethod.observe` that many
times, calling :meth:`MergeMethod.end_pass` after each, before the final pass that calls :meth:`MergeMethod.merge`.
Heads never reach a method: every method shares one head policy (see ``heads.py``). Besides the math, a method
declares what the rest of the package shows or plans with, so that no module outside ``methods/`` names a
method-specific quantity: its tuning ranges (:class:`Tunable`), its benchmark grid and sensitivity sweeps
(:class:`Sweep`), the memory it holds beyond the engine's tensor copies, its warnings and the summary rows of its
report.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar

from pydantic import BaseModel, ConfigDict

from ..errors import ConfigError
from ..groups import Group

if TYPE_CHECKING:
    import torch


class MethodParameters(BaseModel):
    """Base class of a method's typed parameters; unknown keys are rejected."""

    model_config = ConfigDict(extra="forbid", frozen=True)


@dataclass(frozen=True)
class Tunable:
    """How one parameter is searched (the hyperparameter tuner and the benchmark's grids read this).

    Either a numeric range (`low`, `high`, inclusive; on a log scale when `log`; integers when `integer`) or a
    categorical parameter (`choices`). Every endpoint and choice is a valid value of the method's parameters model.

    Args:
        low (`float`, *optional*): lower end of the range.
        high (`float`, *optional*): upper end of the range.
        log (`bool`): sample on a log scale (`low` must then be positive).
        integer (`bool`): sample integers.
        choices (`tuple`, *optional*): the values of a categorical parameter.
    """

    low: float | None = None
    high: float | None = None
    log: bool = False
    integer: bool = False
    choices: tuple | None = None

    def __post_init__(self) -> None:
        if self.choices is not None:
            if self.low is not None or self.high is not None or not self.choices:
                raise ValueError("a Tunable has either non-empty `choices` or a `low`-`high` range, not both")
        elif self.low is None or self.high is None or self.low > self.high:
            raise ValueError(f"a Tunable range needs low ≤ high (got {self.low}, {self.high})")
        elif self.log and self.low <= 0:
            raise ValueError(f"a log-scale Tunable needs low > 0 (got {self.low})")

    def endpoints(self) -> tuple:
        """The values that bound the search: the range's two ends, or every choice."""
        if self.choices is not None:
            return tuple(self.choices)
        if self.integer:
            return (int(self.low), int(self.high))
        return (self.low, self.high)


@dataclass(frozen=True)
class Sweep:
    """A one-parameter sensitivity sweep the benchmark plots around the method's tuned point (never used to choose).

    Args:
        name (`str`): file and plot key, e.g. ``rho``.
        parameter (`str`): the YAML key swept, e.g. ``residual_rank_ratio``.
        values (`tuple`): the values it takes, in order.
        hold (`dict`): parameters fixed during the sweep on top of the tuned point, e.g. ``{"eta": "fixed"}``.
    """

    name: str
    parameter: str
    values: tuple
    hold: dict = field(default_factory=dict)

    def point(self, chosen: Mapping[str, Any], value: Any) -> dict[str, Any]:
        """The parameters of one sweep point: the tuned point `chosen`, `hold` over it, and `parameter` = `value`."""
        return {**chosen, **self.hold, self.parameter: value}


@dataclass
class TensorSlot:
    """One backbone tensor as a method sees it.

    Args:
        name (`str`): canonical (in-memory transformers) parameter name.
        group (`Group`): the tensor's parameter group (never `Group.HEAD`).
        base (`torch.Tensor` or `None`): θ0 for this tensor; `None` only for methods that do not need a base.
        models (`torch.Tensor`): the N specialists' tensors stacked on a new leading dimension (N × shape). The
            stack is the method's own: whoever builds slots hands a fresh one for every slot of every pass (the
            engine stacks the tensors it reads), so a method may overwrite it (R²M forms τi = θi − θ0 in place).
            `base` may be the caller's tensor and is never written.
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
        return svd_eligible(self.group, tuple(self.shape), self.n_models)


def svd_eligible(group: Group, shape: tuple[int, ...], n_models: int) -> bool:
    """Whether a tensor of `group` and `shape` takes an SVD rule: 2-D, in S, smaller side at least N."""
    return group.in_subspace and len(shape) == 2 and min(shape) >= n_models


def normalised_weights(weights: torch.Tensor) -> torch.Tensor:
    """Rescale per-model weights to w_i · N / Σw, so that only their ratios matter (unit weights stay 1).

    Args:
        weights (`torch.Tensor`): the weights w_i ≥ 0 as written in the YAML, shape (N,).

    Returns:
        `torch.Tensor`: weights summing to N; raises `ConfigError` when every weight is 0.
    """
    total = float(weights.sum())
    if not total > 0:
        raise ConfigError(
            "models[*].parameters.weight: the weights sum to 0; give at least one specialist a weight > 0"
        )
    return weights * (weights.numel() / total)


class MergeMethod:
    """Base class of a merge method.

    Subclasses set ``name`` (the YAML ``merge_method``), ``parameters_model`` (a :class:`MethodParameters`
    subclass holding the defaults) and implement :meth:`merge`; the class docstring's first line or ``description``
    is the method's one-line rule in ``r2m-hf methods`` and the README.

    Per-model weights are scale-free: they are rescaled to w_i · N / Σw before any method sees them, so multiplying
    every weight by a constant changes nothing and unit weights give the unweighted rule.

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
    # Position in the method tables (README, `r2m-hf methods`, benchmark rows); plugins come after the built-ins.
    order: ClassVar[int] = 1000
    # YAML key -> how the tuner searches it.
    search_space: ClassVar[dict[str, Tunable]] = {}

    def __init__(self, parameters: MethodParameters, weights: torch.Tensor, names: list[str]):
        self.parameters = parameters
        self.weights = normalised_weights(weights)
        self.names = list(names)

    @property
    def n_models(self) -> int:
        return len(self.names)

    # ---------------------------------------------------------------- the math
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

    # ---------------------------------------------------------------- what the rest of the package reads
    def report(self) -> dict[str, Any]:
        """Diagnostics for ``merge_report.json`` and the model card (JSON-serialisable)."""
        return {}

    def warnings(self) -> list[str]:
        """Warnings about this merge for the user (written to the merge report's ``warnings``)."""
        return []

    def extra_memory_bytes(
        self, shapes: Mapping[str, tuple[int, ...]], groups: Mapping[str, Group], itemsize: int
    ) -> int:
        """Bytes this method holds beyond the engine's N + 1 copies of the tensor being merged.

        Args:
            shapes (`Mapping[str, tuple[int, ...]]`): every backbone tensor's shape.
            groups (`Mapping[str, Group]`): every backbone tensor's group.
            itemsize (`int`): bytes per element of the compute dtype.

        Returns:
            `int`: an upper bound of the extra bytes held at once (0 by default).
        """
        return 0

    @classmethod
    def sensitivity_sweeps(cls) -> list[Sweep]:
        """The one-parameter sweeps the benchmark runs and plots for this method (none by default)."""
        return []

    @classmethod
    def summary_rows(cls, report: Mapping[str, Any]) -> list[tuple[str, str]]:
        """(label, formatted value) rows of this method's :meth:`report` for the CLI, the model card and the benchmark.

        Args:
            report (`Mapping[str, Any]`): a dict written by this method's :meth:`report` (maybe by an older version:
                missing keys show as ``—``).

        Returns:
            `list[tuple[str, str]]`: the rows worth showing (none by default).
        """
        return []

    @classmethod
    def rule(cls) -> str:
        """The method's one-line rule: ``description``, else the first line of the class docstring."""
        if cls.description:
            return cls.description
        doc = (cls.__doc__ or "").strip()
        return doc.splitlines()[0].strip() if doc else ""


def mean_task_vector(slot: TensorSlot, weights: torch.Tensor | None = None) -> torch.Tensor:
    """Return the (weighted) mean task vector τ̄ = Σ wt τt / Σ wt of a slot."""
    tv = slot.task_vectors
    if weights is None:
        return tv.mean(dim=0)
    w = weights.to(tv.dtype).view(-1, *([1] * (tv.dim() - 1)))
    return (w * tv).sum(dim=0) / weights.sum().to(tv.dtype)


__all__ = [
    "Group",
    "MergeMethod",
    "MethodParameters",
    "Sweep",
    "TensorSlot",
    "Tunable",
    "mean_task_vector",
    "normalised_weights",
    "svd_eligible",
]
