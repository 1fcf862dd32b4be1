"""The tuner's typed results: one :class:`TrialRecord` per trial, read back from the study, and the :class:`TuneResult`.

Everything a trial measured is stored with it in the study database (Optuna user attributes), so a record can be
rebuilt by any worker on any machine that shares the storage, and every trial's recipe can be rebuilt from its
recorded parameters (:func:`~r2m_hf.tuning.recipe_for`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

STATES = ("COMPLETE", "PRUNED", "FAIL", "RUNNING", "WAITING")


@dataclass
class TrialRecord:
    """One trial of one method.

    Attributes:
        method (`str`): the merge method.
        number (`int`): the trial's number in its method's study (``r2m#3``).
        state (`str`): ``COMPLETE``, ``PRUNED`` (stopped early, clearly worse), ``FAIL`` or ``RUNNING``.
        value (`float`, *optional*): the objective on the whole split (complete trials), or on the rows scored when
            it was stopped (pruned trials).
        parameters (`dict`): the method's full parameters (YAML keys), fixed and sampled: the trial's recipe.
        overall (`dict`), mean (`dict`), families (`dict`): the runner's metrics (pooled, mean over families, per
            family) on the rows scored.
        rows (`int`, *optional*): rows scored.
        seconds (`float`, *optional*): wall time of the trial; `merge_seconds` and `eval_seconds` its two parts.
        worker (`str`, *optional*): ``host:pid`` of the process that ran it.
        error (`str`, *optional*): why it failed.
        warnings (`list[str]`): the method's warnings for this merge.
    """

    method: str
    number: int
    state: str
    value: float | None = None
    parameters: dict[str, Any] = field(default_factory=dict)
    overall: dict[str, Any] = field(default_factory=dict)
    mean: dict[str, Any] = field(default_factory=dict)
    families: dict[str, dict[str, Any]] = field(default_factory=dict)
    rows: int | None = None
    seconds: float | None = None
    merge_seconds: float | None = None
    eval_seconds: float | None = None
    worker: str | None = None
    error: str | None = None
    warnings: list[str] = field(default_factory=list)

    @property
    def label(self) -> str:
        return f"{self.method}#{self.number}"

    @classmethod
    def from_frozen(cls, method: str, trial) -> TrialRecord:
        """Read a record from an Optuna `FrozenTrial` of the method's study."""
        attrs = trial.user_attrs
        record = attrs.get("record") or {}
        metrics = record.get("metrics") or {}
        value = trial.value if trial.state.name == "COMPLETE" else record.get("last_value")
        return cls(
            method=method,
            number=trial.number,
            state=trial.state.name,
            value=None if value is None or _nan(value) else float(value),
            parameters=dict(attrs.get("parameters") or trial.params),
            overall=dict(metrics.get("overall") or {}),
            mean=dict(metrics.get("mean") or {}),
            families=dict(metrics.get("families") or {}),
            rows=record.get("rows"),
            seconds=record.get("seconds"),
            merge_seconds=record.get("merge_seconds"),
            eval_seconds=record.get("eval_seconds"),
            worker=attrs.get("worker"),
            error=attrs.get("error"),
            warnings=list(record.get("warnings") or []),
        )


@dataclass
class TuneResult:
    """What :func:`~r2m_hf.tuning.tune` found.

    Attributes:
        output_dir (`Path`): where the leaderboard, plots and ``best.yaml`` are.
        study_name (`str`), storage (`str`): the study family (one Optuna study per method, ``NAME/method``) and
            its database URL; calling `tune` again with both resumes it.
        metric (`str`), direction (`str`): the objective (``maximize`` except for ``eer``).
        split (`str`), dataset (`str`), rows (`int`): the validation data.
        budgets (`dict[str, int]`): trials per method (equal by default).
        trials (`list[TrialRecord]`): every trial of every method, all workers included.
        best (`TrialRecord`): the best complete trial (ties: the method listed first, then the lowest number);
            None only in the partial report of an interrupted run.
        best_per_method (`dict[str, TrialRecord]`): the best complete trial of each method.
        best_recipe (`dict`): ``best.yaml`` as a mapping (loadable by `load_config`, mergeable by `merge`).
        files (`dict[str, Path]`): ``leaderboard_md``, ``leaderboard_csv``, ``best_yaml`` and the plots.
        seconds (`float`): wall time of this call; `read_seconds`: reading the specialists once.
        in_memory (`bool`): whether the task vectors were kept in memory (else streamed from disk every trial).
        merged (`MergeResult`, *optional*): the best recipe merged to a folder (``merge_best``).
        notes (`list[str]`): what the run assumed or skipped.
    """

    output_dir: Path
    study_name: str
    storage: str
    metric: str
    direction: str
    split: str
    dataset: str
    rows: int
    budgets: dict[str, int]
    trials: list[TrialRecord]
    best: TrialRecord | None
    best_per_method: dict[str, TrialRecord]
    best_recipe: dict[str, Any]
    files: dict[str, Path] = field(default_factory=dict)
    seconds: float = 0.0
    read_seconds: float = 0.0
    in_memory: bool = True
    merged: Any = None
    notes: list[str] = field(default_factory=list)

    def counts(self) -> dict[str, dict[str, int]]:
        """Trials per method and state (the leaderboard's honesty table)."""
        table = {m: {s: 0 for s in STATES} for m in self.budgets}
        for t in self.trials:
            table.setdefault(t.method, {s: 0 for s in STATES})[t.state] = table[t.method].get(t.state, 0) + 1
        return table

    def trials_to_reach(self, method: str, value: float) -> int | None:
        """How many of `method`'s trials (in trial order) it took to first complete one at least as good as `value`
        (e.g. the best point of a hand-made grid); None if none did."""
        for count, t in enumerate(sorted((t for t in self.trials if t.method == method), key=lambda t: t.number), 1):
            if t.state == "COMPLETE" and t.value is not None and not better(value, t.value, self.direction):
                return count
        return None

    def timing(self) -> dict[str, float]:
        """Mean seconds per finished trial and the share of it spent merging and evaluating."""
        done = [t for t in self.trials if t.seconds is not None and t.state in ("COMPLETE", "PRUNED")]
        if not done:
            return {"seconds_per_trial": math.nan, "merge_share": math.nan, "eval_share": math.nan}
        total = sum(t.seconds for t in done)
        merge = sum(t.merge_seconds or 0.0 for t in done)
        evaluate = sum(t.eval_seconds or 0.0 for t in done)
        return {
            "seconds_per_trial": total / len(done),
            "merge_share": merge / total if total else math.nan,
            "eval_share": evaluate / total if total else math.nan,
        }


def better(a: float, b: float, direction: str) -> bool:
    """Whether value `a` beats `b` for this direction."""
    return a > b if direction == "maximize" else a < b


def rank(trials: list[TrialRecord], direction: str) -> list[TrialRecord]:
    """Complete trials best first, then pruned, then the rest (stable: method order, then number)."""

    def key(t: TrialRecord):
        value = t.value if t.value is not None else math.nan
        score = -value if direction == "maximize" else value
        group = {"COMPLETE": 0, "PRUNED": 1}.get(t.state, 2)
        return (group, math.inf if math.isnan(score) else score)

    return sorted(trials, key=key)


def _nan(value) -> bool:
    return isinstance(value, float) and math.isnan(value)


__all__ = ["TrialRecord", "TuneResult", "better", "rank"]
