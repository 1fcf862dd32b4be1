"""The benchmark's merge rows and sensitivity sweeps, read from the merge methods' own declarations.

Every registered method (plugins included) declares its grid rows (`MergeMethod.grid_rows`: row label -> the
points tried on the validation split, with the same budget for every method that has a scaling factor) and its
sensitivity sweeps (`MergeMethod.sensitivity_sweeps`). The benchmark knows no method's parameters: it runs what
the methods declare (`r2m_hf.methods.registry.benchmark_grids`), in the order of the method tables.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any


@dataclass(frozen=True)
class GridRow:
    """One benchmark row of a merge method: the grid points tried on validation, best one kept.

    Args:
        label (`str`): the row's name in the results (e.g. the method name, or a variant's label).
        method (`str`): the YAML `merge_method`.
        points (`tuple[dict, ...]`): parameter sets, tried in order (`{}` = the method's defaults).
    """

    label: str
    method: str
    points: tuple[dict[str, Any], ...]

    @property
    def is_defaults(self) -> bool:
        """Whether the row is the method at its package defaults, untuned (one empty point)."""
        return self.points == ({},)


def benchmark_rows(methods: tuple[str, ...] | None = None, max_tries: int | None = None) -> dict[str, GridRow]:
    """The grid rows to run: every method's declared rows, or those `methods` names (as a method or a row label).

    Args:
        methods (`tuple[str, ...]`, *optional*): merge methods or row labels to keep (default: all).
        max_tries (`int`, *optional*): keep the first `max_tries` points of every grid.

    Returns:
        `dict[str, GridRow]`: row label -> row, in method-table order.
    """
    from ..methods.registry import benchmark_grids

    return {
        label: GridRow(label, method, tuple(points[:max_tries]))
        for label, (method, points) in benchmark_grids().items()
        if methods is None or label in methods or method in methods
    }


def sensitivity_sweeps(rows: dict[str, GridRow], values: dict[str, tuple] | None = None) -> list[Any]:
    """The sweeps declared by the methods of `rows` whose source row is among `rows`.

    Args:
        rows (`dict[str, GridRow]`): the rows that were run.
        values (`dict[str, tuple]`, *optional*): sweep name -> values that replace the declared ones.

    Returns:
        `list[Sweep]`: in method-table order.
    """
    from ..methods.registry import get_method

    sweeps = []
    for method in dict.fromkeys(row.method for row in rows.values()):
        for sweep in get_method(method).sensitivity_sweeps():
            if sweep.row not in rows:
                continue
            if values and sweep.name in values:
                sweep = replace(sweep, values=tuple(values[sweep.name]))
            sweeps.append(sweep)
    return sweeps


__all__ = ["GridRow", "benchmark_rows", "sensitivity_sweeps"]
