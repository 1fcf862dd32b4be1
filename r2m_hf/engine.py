"""Drives a merge method over a stream of tensors: the statistics passes, then the merge pass.

The same loop serves the file-streaming merge (``running.py``), multi-process merges and the in-memory helper
:func:`merge_state_dicts` used by tests and notebooks, so every path runs the same math.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import Any

import torch

from .errors import ConfigError, MethodError, format_validation_error
from .groups import Group
from .methods.base import MergeMethod, TensorSlot
from .methods.registry import get_method

AllReduce = Callable[[torch.Tensor], None]


def build_method(
    method_name: str,
    parameters: Mapping[str, Any] | None,
    names: Sequence[str],
    weights: Sequence[float] | None = None,
) -> MergeMethod:
    """Instantiate a registered method with validated parameters.

    Args:
        method_name (`str`): the registry name (``merge_method`` in the YAML).
        parameters (`dict`, *optional*): the method's parameters; unknown keys raise `ConfigError`.
        names (`list[str]`): the specialists' names.
        weights (`list[float]`, *optional*): per-model weights (default 1).

    Returns:
        `MergeMethod`: the ready method instance.
    """
    from pydantic import ValidationError

    cls = get_method(method_name)
    try:
        params = cls.parameters_model(**dict(parameters or {}))
    except ValidationError as exc:
        raise ConfigError(format_validation_error(exc, prefix="parameters")) from None
    w = torch.tensor([1.0] * len(names) if weights is None else list(weights), dtype=torch.float64)
    return cls(params, w, list(names))


def run_passes(
    method: MergeMethod,
    slots: Callable[[int], Iterable[TensorSlot]],
    *,
    all_reduce: AllReduce | None = None,
) -> Iterator[tuple[TensorSlot, torch.Tensor]]:
    """Run `method`'s statistics passes, then yield `(slot, merged tensor)` for every tensor of the merge pass.

    Args:
        method (`MergeMethod`): the method instance.
        slots (`Callable[[int], Iterable[TensorSlot]]`): called with the pass index (0 … statistics_passes; the last
            index is the merge pass), returns a fresh stream of this process's tensors.
        all_reduce (`Callable`, *optional*): sums a tensor across processes; given in multi-process merges.
    """
    for pass_index in range(method.statistics_passes):
        for slot in slots(pass_index):
            with _numerical_failure(method, slot):
                method.observe(pass_index, slot)
        if all_reduce is not None:
            method.reduce(pass_index, all_reduce)
        with _numerical_failure(method, None):
            method.end_pass(pass_index)
    for slot in slots(method.statistics_passes):
        with _numerical_failure(method, slot):
            merged = method.merge(slot)
        yield slot, merged


@contextmanager
def _numerical_failure(method: MergeMethod, slot: TensorSlot | None) -> Iterator[None]:
    """A decomposition that does not converge on these weights is a `MethodError` naming the method and tensor."""
    try:
        yield
    except torch.linalg.LinAlgError as exc:
        where = f"tensor {slot.name}" if slot is not None else "its whole-model statistics"
        first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise MethodError(
            f"{method.name}: a matrix decomposition failed on {where} ({first}); try other parameters for "
            f"{method.name} or another method"
        ) from None


def merge_state_dicts(
    method_name: str,
    parameters: Mapping[str, Any] | None,
    base: Mapping[str, torch.Tensor] | None,
    models: Sequence[Mapping[str, torch.Tensor]],
    groups: Mapping[str, Group],
    *,
    names: Sequence[str] | None = None,
    weights: Sequence[float] | None = None,
    dtype: torch.dtype = torch.float32,
) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Merge backbone state dicts held in memory (tests, notebooks). Heads are not handled here.

    Args:
        method_name (`str`): registry name of the method.
        parameters (`dict`, *optional*): method parameters.
        base (`dict[str, torch.Tensor]`, *optional*): θ0 (may be `None` for methods that need no base).
        models (`list[dict[str, torch.Tensor]]`): the specialists' tensors, same keys as `groups`.
        groups (`dict[str, Group]`): the parameter group of every tensor to merge (in merge order).
        names (`list[str]`, *optional*): specialist names (default ``m0, m1, …``).
        weights (`list[float]`, *optional*): per-model weights.
        dtype (`torch.dtype`): compute dtype.

    Returns:
        `(merged, report)`: the merged tensors and the method's diagnostics.
    """
    names = list(names) if names is not None else [f"m{i}" for i in range(len(models))]
    method = build_method(method_name, parameters, names, weights)
    if method.requires_base and base is None:
        raise ConfigError(f"merge_method {method_name!r} needs a base_model")
    order = list(groups)

    def slots(_pass: int) -> Iterator[TensorSlot]:
        for index, name in enumerate(order):
            yield TensorSlot(
                name=name,
                group=groups[name],
                base=None if base is None else base[name].to(dtype),
                models=torch.stack([m[name].to(dtype) for m in models]),
                index=index,
            )

    merged = {slot.name: tensor for slot, tensor in run_passes(method, slots)}
    return merged, method.report()
