"""The benchmark's merges: YAML recipes merged through :func:`r2m_hf.merge`, the path users take.

Owns the merges at each method's package defaults, the tuning of every method on the validation split through
:func:`r2m_hf.tuning.tune` (the same budget of trials for every method with a search space; the test splits are
scored only for each method's best trial), the re-merge of a chosen recipe with the LoRA-trained specialist in place
of its full fine-tune, the declared sensitivity sweeps around each tuned point (reported on validation and test,
never used to choose) and the composability study (three specialists, then the fourth added by editing the YAML, as
a user would).
"""

from __future__ import annotations

import shutil
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml

from .config import COLUMNS, SELECTION_SPLIT, ModelScores
from .scoring import BenchScorer, mean_auc

# A mapping in a method's report with more entries than this is per-tensor detail (e.g. a rank per matrix): it stays
# in the merge folder's merge_report.json and is left out of results.json.
MAX_REPORT_ENTRIES = 16
# What the tuner ranks trials by: the benchmark's selection criterion (mean AUC over the validation families).
TUNE_METRIC = "auc@families"


class Merger:
    """Writes YAML recipes under `work/yaml` and merges them into `work/out` with :func:`r2m_hf.merge`.

    Args:
        work (`Path`): the scratch folder of this run's merges.
        base (`Path`): the backbone folder (`base_model`).
        models (`list[tuple[str, Path]]`): (name, folder) of the specialists merged by default.
        progress (`bool`): show progress bars.
    """

    def __init__(self, work: Path, base: Path, models: list[tuple[str, Path]], *, progress: bool = True) -> None:
        self.work, self.base, self.models, self.progress = work, base, models, progress
        self.count = 0

    def write_recipe(
        self, tag: str, method: str, params: Mapping[str, Any], models: list[tuple[str, Path]] | None = None
    ) -> Path:
        """Write the recipe `work/yaml/<tag>.yaml` and return its path."""
        recipe = {
            "merge_method": method,
            "base_model": str(self.base),
            "models": [{"model": str(folder), "name": name} for name, folder in (models or self.models)],
            "parameters": dict(params),
            "dtype": "float32",
        }
        path = self.work / "yaml" / f"{tag}.yaml"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(yaml.safe_dump(recipe, sort_keys=False, allow_unicode=True))
        return path

    def merge_recipe(self, path: Path, tag: str) -> tuple[Path, Any]:
        """Merge the recipe at `path` into `work/out/<tag>`; returns the folder and the `MergeReport`."""
        from .. import merge

        self.count += 1
        out = self.work / "out" / tag
        return out, merge(path, out, overwrite=True, progress=False).report

    def merge(
        self, tag: str, method: str, params: Mapping[str, Any], models: list[tuple[str, Path]] | None = None
    ) -> tuple[Path, Any]:
        """Write a recipe and merge it: the merged folder and the `MergeReport`."""
        return self.merge_recipe(self.write_recipe(tag, method, params, models), tag)


def compact_report(report: Mapping[str, Any]) -> dict[str, Any]:
    """A method's report without its per-tensor tables (mappings of more than `MAX_REPORT_ENTRIES` entries)."""

    def keep(value: Any) -> Any:
        if isinstance(value, Mapping):
            return {k: keep(v) for k, v in value.items() if not _per_tensor(v)}
        return value

    return keep(dict(report or {}))


def _per_tensor(value: Any) -> bool:
    return isinstance(value, Mapping) and len(value) > MAX_REPORT_ENTRIES


def merge_defaults(
    merger: Merger, scorer: BenchScorer, methods: list[str], *, progress: bool = True
) -> dict[str, ModelScores]:
    """Merge every method once at its package defaults and score it on validation and the test splits.

    Args:
        merger (`Merger`), scorer (`BenchScorer`): where merges are written and how they are scored.
        methods (`list[str]`): the merge methods, in table order.
        progress (`bool`): a progress bar over the methods.

    Returns:
        `dict[str, ModelScores]`: one row per method, named after it (`setting="defaults"`).
    """
    from tqdm.auto import tqdm

    rows = {}
    for method in tqdm(methods, desc="Merging (package defaults)", disable=not progress):
        out, report = merger.merge(f"defaults-{_slug(method)}", method, {})
        rows[method] = _scored(scorer, method, out, report, method, {}, setting="defaults")
    return rows


def tune_methods(
    merger: Merger,
    scorer: BenchScorer,
    dataset: Any,
    methods: list[str],
    *,
    trials_per_method: int,
    seed: int,
    batch_size: int,
    plots: bool = True,
    progress: bool = True,
) -> tuple[dict[str, ModelScores], dict[str, Any]]:
    """Tune every method with a search space on the validation split (:func:`r2m_hf.tuning.tune`, the path users
    take, with the same budget for each), then merge each method's best trial and score it on the test splits.

    Args:
        merger (`Merger`), scorer (`BenchScorer`): where merges are written and how they are scored.
        dataset (`datasets.DatasetDict`): the benchmark (only its validation split is read by the tuner).
        methods (`list[str]`): the merge methods; those without a search space are left out.
        trials_per_method (`int`): the budget of every method.
        seed (`int`): the tuner's seed.
        batch_size (`int`): images per forward pass.
        plots (`bool`), progress (`bool`): the tuner's plots and progress bar.

    Returns:
        `tuple`: rows named ``method (tuned)`` (`setting="tuned"`, `tries` = every trial), and the tuning summary
        for `results.json` (budgets, trials per minute, time shares, every trial, the leaderboard and plot files).
    """
    from ..methods.registry import get_method
    from ..tuning import tune

    tunable = [m for m in methods if get_method(m).search_space]
    if not tunable or trials_per_method < 1:
        return {}, {}
    recipe = merger.write_recipe("tune", tunable[0], {})
    found = tune(
        recipe,
        dataset,
        output_dir=merger.work / "tune",
        split=SELECTION_SPLIT,
        methods=tunable,
        trials=trials_per_method * len(tunable),
        metric=TUNE_METRIC,
        seed=seed,
        batch_size=batch_size,
        plots=plots,
        progress=progress,
    )
    rows = {}
    for method in tunable:
        best = found.best_per_method.get(method)
        if best is None:
            continue
        label = f"{method} (tuned)"
        out, report = merger.merge(f"tuned-{_slug(method)}", method, best.parameters)
        tries = [
            {"number": t.number, "state": t.state, "params": t.parameters, "validation_auc": t.value}
            for t in sorted((t for t in found.trials if t.method == method), key=lambda t: t.number)
        ]
        rows[label] = _scored(scorer, label, out, report, method, best.parameters, setting="tuned", tries=tries)
    finished = [t for t in found.trials if t.state in ("COMPLETE", "PRUNED")]
    summary = {
        "metric": found.metric,
        "split": found.split,
        "trials_per_method": trials_per_method,
        "budgets": dict(found.budgets),
        "counts": found.counts(),
        "seconds": found.seconds,
        "read_seconds": found.read_seconds,
        "in_memory": found.in_memory,
        "trials_per_minute": 60.0 * len(finished) / found.seconds if found.seconds else None,
        **found.timing(),
        "trials": [
            {
                "method": t.method,
                "number": t.number,
                "state": t.state,
                "value": t.value,
                "params": t.parameters,
                "seconds": t.seconds,
            }  # fmt: skip
            for t in found.trials
        ],
        "files": {k: str(v) for k, v in found.files.items()},
    }
    return rows, summary


def _scored(
    scorer: BenchScorer, label: str, out: Path, report: Any, method: str, params: Mapping[str, Any], **extra: Any
) -> ModelScores:
    splits = scorer.evaluate(out, (SELECTION_SPLIT, *COLUMNS.values()))
    return ModelScores(
        name=label,
        kind="merge",
        folder=str(out),
        splits={s: splits[s] for s in COLUMNS.values()},
        params={"merge_method": method, **params},
        validation_auc=mean_auc(splits[SELECTION_SPLIT]),
        report=compact_report(report.method),
        warnings=list(report.warnings),
        **extra,
    )


def remerge(merger: Merger, scorer: BenchScorer, name: str, chosen: ModelScores, models, tag: str) -> ModelScores:
    """Merge the recipe chosen for `chosen` again over other specialist folders `models`, scored on the test splits."""
    params = _parameters(chosen)
    out, report = merger.merge(tag, chosen.method, params, models)
    return ModelScores(
        name=name,
        kind="merge",
        folder=str(out),
        splits=scorer.evaluate(out, tuple(COLUMNS.values())),
        params={"merge_method": chosen.method, **params},
        report=compact_report(report.method),
        warnings=list(report.warnings),
        setting=chosen.setting,
    )


def run_sweep(merger: Merger, scorer: BenchScorer, sweep: Any, chosen: ModelScores) -> dict[str, Any]:
    """One declared sensitivity sweep around the method's tuned point, scored on validation and test.

    Args:
        merger (`Merger`), scorer (`BenchScorer`): where merges are written and how they are scored.
        sweep (`Sweep`): the method's declaration (parameter, values, held and kept parameters).
        chosen (`ModelScores`): the method's tuned row (its parameters are held, `sweep.hold` applied on top).

    Returns:
        `dict`: `{"method", "row", "parameter", "fixed", "points": [{parameter: v, "validation": auc, column: auc}]}`.
    """
    from tqdm.auto import tqdm

    fixed = {k: v for k, v in sweep.point(_parameters(chosen), None).items() if k != sweep.parameter}
    points = []
    for value in tqdm(sweep.values, desc=f"Sweep {sweep.name}", leave=False, disable=not merger.progress):
        out, _ = merger.merge(f"sweep-{sweep.name}-{value}", chosen.method, {**fixed, sweep.parameter: value})
        res = scorer.evaluate(out, (SELECTION_SPLIT, *COLUMNS.values()))
        points.append(
            {
                sweep.parameter: value,
                "validation": mean_auc(res[SELECTION_SPLIT]),
                **{col: mean_auc(res[split]) for col, split in COLUMNS.items()},
            }
        )
        shutil.rmtree(out, ignore_errors=True)
    return {"method": chosen.method, "row": chosen.name, "parameter": sweep.parameter, "fixed": fixed, "points": points}


def composability(merger: Merger, scorer: BenchScorer, chosen: ModelScores, specialists) -> dict[str, Any]:
    """Merge the chosen recipe over three specialists, then add the fourth by editing the YAML; test AUC of both."""
    params = _parameters(chosen)
    three = specialists[:3]
    path = merger.write_recipe("compose", chosen.method, params, three)
    out3, _ = merger.merge_recipe(path, "compose-3")
    res3 = scorer.evaluate(out3, tuple(COLUMNS.values()))
    recipe = yaml.safe_load(path.read_text())  # the fourth specialist is added by editing the YAML, as a user would
    name, folder = specialists[3]
    recipe["models"].append({"model": str(folder), "name": name})
    path.write_text(yaml.safe_dump(recipe, sort_keys=False, allow_unicode=True))
    out4, _ = merger.merge_recipe(path, "compose-4")
    res4 = scorer.evaluate(out4, tuple(COLUMNS.values()))
    table = {}
    for col, split in COLUMNS.items():
        fams = sorted(set(res3[split]["families"]) | set(res4[split]["families"]))
        table[col] = {
            f: {"three": res3[split]["families"][f]["auc"], "four": res4[split]["families"][f]["auc"]} for f in fams
        }
        table[col]["mean"] = {"three": mean_auc(res3[split]), "four": mean_auc(res4[split])}
    return {"method": chosen.method, "params": params, "three": [n for n, _ in three], "added": name, "auc": table}


def _parameters(row: ModelScores) -> dict[str, Any]:
    return {k: v for k, v in row.params.items() if k != "merge_method"}


def _slug(text: str) -> str:
    return "".join(c if c.isalnum() else "-" for c in text).strip("-").replace("--", "-")


__all__ = ["Merger", "compact_report", "composability", "merge_defaults", "remerge", "run_sweep", "tune_methods"]
