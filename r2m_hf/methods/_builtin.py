"""Imports every built-in method module so that each registers itself."""

from . import r2m  # noqa: F401

# isort: split
from . import average, cart, dare, iso, model_stock, task_arithmetic, ties, tsv_m  # noqa: F401
