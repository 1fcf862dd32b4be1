"""The benchmark's merges: YAML recipes merged through :func:`r2m_hf.merge`, the path users take.

Owns the selection of every grid row on the validation split (the same budget of tries for every method with a
scaling factor; the test splits are scored only for the chosen point), the re-merge of a chosen recipe with the
LoRA-trained specialist in place of its full fine-tune, the declared sensitivity sweeps (reported on validation and
test, never used to choose) and the composability study (three specialists, then the fourth added by editing the
YAML, as a user would).
"""

from __future__ import annotations

import shutil
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from .config import COLUMNS, SELECTION_SPLIT, ModelScores
from .grids import GridRow
from .scoring import BenchScorer, mean_auc

# A mapping in a method's report with more entries than this is per-tensor detail (e.g. a rank per matrix): it stays
# in the merge folder's merge_report.json and is left out of results.json.
MAX_REPORT_ENTRIES = 16


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


def select_on_validation(
    merger: Merger, scorer: BenchScorer, rows: dict[str, GridRow], *, progress: bool = True
) -> dict[str, ModelScores]:
    """Merge every point of every row, keep the best on validation and score it on the test splits.

    Args:
        merger (`Merger`), scorer (`BenchScorer`): where merges are written and how they are scored.
        rows (`dict[str, GridRow]`): the grid rows.
        progress (`bool`): a progress bar over every try.

    Returns:
        `dict[str, ModelScores]`: one scored row per grid row (`tries` lists every point's validation AUC).
    """
    from tqdm.auto import tqdm

    scored = {}
    bar = tqdm(total=sum(len(r.points) for r in rows.values()), desc="Merging (validation grid)", disable=not progress)
    for label, row in rows.items():
        tries = []
        for i, params in enumerate(row.points):
            out, report = merger.merge(f"{_slug(label)}-{i}", row.method, params)
            val = scorer.evaluate(out, (SELECTION_SPLIT,))[SELECTION_SPLIT]
            tries.append({"params": params, "validation_auc": mean_auc(val), "folder": out, "merge_report": report})
            bar.update(1)
        best = max(tries, key=lambda t: np.nan_to_num(t["validation_auc"], nan=-1.0))
        for t in tries:
            if t is not best:
                shutil.rmtree(t["folder"], ignore_errors=True)
        scored[label] = ModelScores(
            name=label,
            kind="merge",
            folder=str(best["folder"]),
            splits=scorer.evaluate(best["folder"], tuple(COLUMNS.values())),
            params={"merge_method": row.method, **best["params"]},
            validation_auc=best["validation_auc"],
            tries=[{"params": t["params"], "validation_auc": t["validation_auc"]} for t in tries],
            report=compact_report(best["merge_report"].method),
            warnings=list(best["merge_report"].warnings),
        )
    bar.close()
    return scored


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
    )


def run_sweep(merger: Merger, scorer: BenchScorer, sweep: Any, chosen: ModelScores) -> dict[str, Any]:
    """One declared sensitivity sweep around the point chosen for its row, scored on validation and test.

    Args:
        merger (`Merger`), scorer (`BenchScorer`): where merges are written and how they are scored.
        sweep (`Sweep`): the method's declaration (parameter, values, held and kept parameters).
        chosen (`ModelScores`): the scored row named by `sweep.row`.

    Returns:
        `dict`: `{"method", "parameter", "fixed", "points": [{parameter: v, "validation": auc, column: auc, ...}]}`.
    """
    from tqdm.auto import tqdm

    params = _parameters(chosen)
    fixed = {**sweep.hold, **{k: params[k] for k in sweep.keep}}
    points = []
    for value in tqdm(sweep.values, desc=f"Sweep {sweep.name}", leave=False, disable=not merger.progress):
        out, _ = merger.merge(f"sweep-{sweep.name}-{value}", chosen.method, sweep.point(params, value))
        res = scorer.evaluate(out, (SELECTION_SPLIT, *COLUMNS.values()))
        points.append(
            {
                sweep.parameter: value,
                "validation": mean_auc(res[SELECTION_SPLIT]),
                **{col: mean_auc(res[split]) for col, split in COLUMNS.items()},
            }
        )
        shutil.rmtree(out, ignore_errors=True)
    return {"method": chosen.method, "row": sweep.row, "parameter": sweep.parameter, "fixed": fixed, "points": points}


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


__all__ = ["Merger", "compact_report", "composability", "remerge", "run_sweep", "select_on_validation"]
