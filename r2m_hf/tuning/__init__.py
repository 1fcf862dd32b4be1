"""Tune and compare: choose the merge method and its hyperparameters on the user's own validation data.

:func:`tune` searches every method's declared space with Optuna (seeded TPE, early stopping on part of the split,
studies in an RDB so runs resume and several workers share them), merging in memory and scoring with the evaluation
runner; it writes a leaderboard, plots and ``best.yaml``. :func:`compare` scores several detectors on one split into
one table and one plot.
"""

from .compare import CompareResult, ModelScores, compare
from .records import TrialRecord, TuneResult
from .space import MethodSpace, TuneSection
from .tuner import recipe_for, tune

__all__ = [
    "CompareResult",
    "MethodSpace",
    "ModelScores",
    "TrialRecord",
    "TuneResult",
    "TuneSection",
    "compare",
    "recipe_for",
    "tune",
]
