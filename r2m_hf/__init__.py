"""r2m-hf: merge deepfake-detector specialists on the Hugging Face Hub with R²M (Real-aware Residual Model Merging).

The public API is ``merge(config, output_dir)`` (plan, run, evaluate, write the card, push), its parts
``plan_merge`` / ``run_merge`` / ``push``, the recipe and report models, the method registry, and every error type.
The errors and the version load with the package; everything else loads on first use, so ``import r2m_hf`` (and
``r2m-hf --help``) does not import torch.
"""

from __future__ import annotations

import importlib
import sys
import types
from typing import TYPE_CHECKING, Any

from ._version import __version__
from .errors import (
    CheckpointError,
    ConfigError,
    DatasetError,
    HubError,
    LabelError,
    MethodError,
    OutputError,
    R2MError,
    SourceError,
)

# Public name -> the module that defines it, imported on first access.
_LAZY = {
    "MergeConfig": "config",
    "load_config": "config",
    "Group": "groups",
    "MergePlan": "merge",
    "MergeResult": "merge",
    "merge": "merge",
    "plan_merge": "merge",
    "run_merge": "merge",
    "push": "merge",
    "MergeReport": "recipe",
    "Recipe": "recipe",
    "MergeMethod": "methods.base",
    "MethodParameters": "methods.base",
    "TensorSlot": "methods.base",
    "available_methods": "methods.registry",
    "get_method": "methods.registry",
    "register_method": "methods.registry",
    "Detector": "detector",
    "Prediction": "detector",
    "FaceBox": "detector",
    "FrameScore": "detector",
    "Calibration": "detector",
    "calibrate": "detector",
    "tune": "tuning",
    "compare": "tuning",
    "TuneResult": "tuning",
    "TrialRecord": "tuning",
    "CompareResult": "tuning",
}

__all__ = [
    "CheckpointError",
    "ConfigError",
    "DatasetError",
    "Group",
    "HubError",
    "LabelError",
    "MergeConfig",
    "MergeMethod",
    "MergePlan",
    "MergeReport",
    "MergeResult",
    "MethodError",
    "MethodParameters",
    "OutputError",
    "R2MError",
    "Recipe",
    "SourceError",
    "TensorSlot",
    "__version__",
    "available_methods",
    "get_method",
    "load_config",
    "merge",
    "plan_merge",
    "push",
    "register_method",
    "run_merge",
    "Calibration",
    "CompareResult",
    "Detector",
    "FaceBox",
    "FrameScore",
    "Prediction",
    "TrialRecord",
    "TuneResult",
    "calibrate",
    "compare",
    "tune",
]


def __getattr__(name: str) -> Any:
    """Load a public name (or a submodule, e.g. ``r2m_hf.config``) on first access."""
    if name in _LAZY:
        value = getattr(importlib.import_module(f"{__name__}.{_LAZY[name]}"), name)
        globals()[name] = value
        return value
    try:
        return importlib.import_module(f"{__name__}.{name}")
    except ModuleNotFoundError as exc:
        if exc.name != f"{__name__}.{name}":
            raise
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))


class _Package(types.ModuleType):
    """Keeps a public name bound to its object when a submodule of the same name is imported.

    Importing ``r2m_hf.merge`` (the module) would otherwise rebind the attribute ``r2m_hf.merge`` (the function) to
    the module; the module stays reachable as ``sys.modules["r2m_hf.merge"]`` and through ``from r2m_hf.merge import``.
    """

    def __setattr__(self, name: str, value: Any) -> None:
        if name in _LAZY and isinstance(value, types.ModuleType):
            return
        super().__setattr__(name, value)


sys.modules[__name__].__class__ = _Package

if TYPE_CHECKING:
    from .config import MergeConfig, load_config
    from .detector import Calibration, Detector, FaceBox, FrameScore, Prediction, calibrate
    from .groups import Group
    from .merge import MergePlan, MergeResult, merge, plan_merge, push, run_merge
    from .methods.base import MergeMethod, MethodParameters, TensorSlot
    from .methods.registry import available_methods, get_method, register_method
    from .recipe import MergeReport, Recipe
    from .tuning import CompareResult, TrialRecord, TuneResult, compare, tune
