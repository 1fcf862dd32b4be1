"""What the benchmark runs, read from the merge methods' own declarations.

Every registered method (plugins included) is merged at its package defaults; a method that declares a search space
(`MergeMethod.search_space`) is also tuned on the validation split; a method's sensitivity sweeps
(`MergeMethod.sensitivity_sweeps`) are run around its tuned point. The benchmark knows no method's parameters.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any


def bench_methods(methods: tuple[str, ...] | None = None) -> list[str]:
    """The merge methods to run, in method-table order: every registered method, or those `methods` names.

    Raises:
        `ValueError`: a name that is not a registered method.
    """
    from ..methods.registry import available_methods, table_order

    known = list(available_methods())
    unknown = [m for m in methods or () if m not in known]
    if unknown:
        raise ValueError(f"unknown merge method(s) {', '.join(unknown)}; registered: {', '.join(sorted(known))}")
    return list(table_order(known if methods is None else methods))


def sensitivity_sweeps(methods: list[str], values: dict[str, tuple] | None = None) -> list[tuple[str, Any]]:
    """The sweeps the `methods` declare, as `(method, sweep)` pairs.

    Args:
        methods (`list[str]`): the methods whose tuned point the sweeps go around.
        values (`dict[str, tuple]`, *optional*): sweep name -> values that replace the declared ones.

    Returns:
        `list[tuple[str, Sweep]]`: in the order of `methods`.
    """
    from ..methods.registry import get_method

    sweeps = []
    for method in methods:
        for sweep in get_method(method).sensitivity_sweeps():
            if values and sweep.name in values:
                sweep = replace(sweep, values=tuple(values[sweep.name]))
            sweeps.append((method, sweep))
    return sweeps


__all__ = ["bench_methods", "sensitivity_sweeps"]
