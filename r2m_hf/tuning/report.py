"""The tuner's outputs: ``leaderboard.md`` / ``.csv``, the plots, and ``best.yaml``.

Written from the trials stored in the study, so every worker writes the same tables (the last one to finish writes
the complete ones). Files are replaced atomically; plots need matplotlib (``pip install matplotlib``) and are skipped
with a note without it.
"""

from __future__ import annotations

import csv
import io
import json
import math
import os
from pathlib import Path
from typing import Any

import yaml

from .records import TuneResult, rank
from .storage import redact_url

METRIC_COLUMNS = (("auc", "AUC"), ("eer", "EER"), ("ap", "AP"), ("acc", "ACC"))
METRIC_TITLES = {
    "auc": "pooled AUC (higher is better)",
    "eer": "pooled EER (lower is better)",
    "ap": "pooled AP (higher is better)",
    "auc@families": "AUC averaged over forgery families (higher is better)",
}


def write_outputs(result: TuneResult, spaces: dict[str, Any], *, plots: bool = True) -> dict[str, Path]:
    """Write every output file of a tuning run into `result.output_dir` and return them by key."""
    out = Path(result.output_dir)
    drawn = write_plots(result, spaces, out / "plots") if plots else {}
    if plots and not drawn:
        result.notes.append("plots skipped: matplotlib is not installed (pip install matplotlib)")
    files = {
        "leaderboard_md": _write(out / "leaderboard.md", leaderboard_markdown(result, spaces)),
        "leaderboard_csv": _write(out / "leaderboard.csv", leaderboard_csv(result)),
    }
    if result.best is not None:
        files["best_yaml"] = _write(
            out / "best.yaml",
            f"# Best of {len(result.trials)} trials ({result.best.label}, {result.metric} "
            f"{_fmt(result.best.value)} on {result.dataset} [{result.split}]); merge with: r2m-hf merge best.yaml OUT\n"
            + yaml.safe_dump(result.best_recipe, sort_keys=False, allow_unicode=True),
        )
    files.update(drawn)
    return files


def _write(path: Path, text: str) -> Path:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)
    return path


def _fmt(value, digits: int = 4) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "—"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return str(value)


def _params(parameters: dict[str, Any], searched: set[str]) -> str:
    shown = {k: v for k, v in parameters.items() if k in searched} or parameters
    return ", ".join(f"{k}={_fmt(v, 3) if isinstance(v, float) else v}" for k, v in shown.items()) or "defaults"


def leaderboard_markdown(result: TuneResult, spaces: dict[str, Any]) -> str:
    """The leaderboard: budgets and trials per method, the best of each method, then every trial."""
    timing = result.timing()
    counts = result.counts()
    families = sorted({f for t in result.trials for f in t.families})
    lines = [
        f"# Tuning leaderboard: {result.study_name}",
        "",
        f"Objective: **{result.metric}**, {METRIC_TITLES[result.metric]}, on `{result.dataset}` split "
        f"`{result.split}` ({result.rows} rows{f', {len(families)} families' if families else ''}). "
        f"Study storage: `{redact_url(result.storage)}`.",
        f"Budget: {sum(result.budgets.values())} trials, equal per method ("
        + ", ".join(f"{m}: {b}" for m, b in result.budgets.items())
        + "). A pruned trial was stopped early, clearly worse, on part of the split; its value is on the rows scored.",
        f"Time: {_fmt(timing['seconds_per_trial'], 2)} s per trial, {_fmt(100 * timing['merge_share'], 0)}% merging "
        f"and {_fmt(100 * timing['eval_share'], 0)}% evaluating; specialists "
        + ("kept in memory" if result.in_memory else "streamed from disk every trial (task vectors did not fit)")
        + ".",
        "",
        "## Trials per method",
        "",
        "| method | budget | complete | pruned | failed | running | best | searched |",
        "|---|---:|---:|---:|---:|---:|---:|---|",
    ]
    for method, budget in result.budgets.items():
        c = counts.get(method, {})
        best = result.best_per_method.get(method)
        searched = ", ".join(spaces[method].searched) if method in spaces else ""
        lines.append(
            f"| {method} | {budget} | {c.get('COMPLETE', 0)} | {c.get('PRUNED', 0)} | {c.get('FAIL', 0)} | "
            f"{c.get('RUNNING', 0)} | {_fmt(best.value if best else None)} | {searched} |"
        )
    lines += ["", "## Best per method", "", _table_header(families)]
    for method in result.budgets:
        best = result.best_per_method.get(method)
        if best is not None:
            lines.append(_row(best, spaces, families))
    lines += ["", "## Every trial, best first", "", _table_header(families)]
    lines += [_row(t, spaces, families) for t in rank(result.trials, result.direction)]
    if result.notes:
        lines += ["", "## Notes", ""] + [f"- {note}" for note in result.notes]
    return "\n".join(lines) + "\n"


def _table_header(families: list[str]) -> str:
    titles = ["trial", "method", "parameters", "objective"] + [t for _, t in METRIC_COLUMNS]
    titles += [f"{f} AUC" for f in families] + ["state", "s"]
    aligns = ["---", "---", "---"] + ["---:"] * (len(titles) - 5) + ["---", "---:"]
    return "| " + " | ".join(titles) + " |\n|" + "|".join(aligns) + "|"


def _row(t, spaces, families) -> str:
    searched = set(spaces[t.method].searched) if t.method in spaces else set()
    cells = [t.label, t.method, _params(t.parameters, searched), _fmt(t.value)]
    cells += [_fmt(t.overall.get(k)) for k, _ in METRIC_COLUMNS]
    cells += [_fmt(t.families.get(f, {}).get("auc")) for f in families]
    state = t.state.lower() + (f" ({t.rows} rows)" if t.state == "PRUNED" and t.rows else "")
    cells += [state, _fmt(t.seconds, 2)]
    return "| " + " | ".join(cells) + " |"


def leaderboard_csv(result: TuneResult) -> str:
    """Every trial, one row each: parameters, metrics (pooled, mean, per family), state and timing."""
    params = sorted({k for t in result.trials for k in t.parameters})
    families = sorted({f for t in result.trials for f in t.families})
    keys = sorted({k for t in result.trials for part in (t.overall, t.mean) for k in part})
    fkeys = sorted({k for t in result.trials for m in t.families.values() for k in m})
    header = ["trial", "method", "number", "state", "objective", "rows", "seconds", "merge_seconds", "eval_seconds"]
    header += ["parameters"] + [f"param:{p}" for p in params]
    header += [f"overall:{k}" for k in keys] + [f"mean:{k}" for k in keys]
    header += [f"family:{f}:{k}" for f in families for k in fkeys] + ["worker", "error"]
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(header)
    for t in sorted(result.trials, key=lambda t: (list(result.budgets).index(t.method), t.number)):
        row = [t.label, t.method, t.number, t.state, t.value, t.rows, t.seconds, t.merge_seconds, t.eval_seconds]
        row += [json.dumps(t.parameters, sort_keys=True)] + [t.parameters.get(p) for p in params]
        row += [t.overall.get(k) for k in keys] + [t.mean.get(k) for k in keys]
        row += [t.families.get(f, {}).get(k) for f in families for k in fkeys] + [t.worker, t.error]
        writer.writerow(["" if v is None else v for v in row])
    return buffer.getvalue()


def write_plots(result: TuneResult, spaces: dict[str, Any], folder: Path) -> dict[str, Path]:
    """``plots/<method>.png`` (the objective against each searched parameter) and ``plots/best_per_method.png``."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return {}
    folder.mkdir(parents=True, exist_ok=True)
    files: dict[str, Path] = {}
    for method, space in spaces.items():
        done = [t for t in result.trials if t.method == method and t.state == "COMPLETE" and t.value is not None]
        keys = list(space.searched)
        fig, axes = plt.subplots(1, len(keys), figsize=(4 * len(keys), 3.2), squeeze=False)
        best = result.best_per_method.get(method)
        for ax, key in zip(axes[0], keys):
            xs = [t.parameters.get(key) for t in done]
            categorical = space.searched[key].choices is not None
            if categorical:
                choices = [str(c) for c in space.searched[key].choices]
                ax.set_xticks(range(len(choices)), choices)
                xs = [choices.index(str(x)) for x in xs]
            ax.scatter(xs, [t.value for t in done], s=18, alpha=0.7)
            if best is not None:
                bx = best.parameters.get(key)
                ax.scatter([choices.index(str(bx)) if categorical else bx], [best.value], marker="*", s=160, c="C3")
            if space.searched[key].log and not categorical:
                ax.set_xscale("log")
            ax.set_xlabel(key)
            ax.set_ylabel(result.metric)
        fig.suptitle(f"{method}: {len(done)} complete trials (star: best)")
        fig.tight_layout()
        files[f"plot_{method}"] = _save(fig, folder / f"{method}.png", plt)
    methods = [m for m in result.budgets if m in result.best_per_method]
    fig, ax = plt.subplots(figsize=(max(4, 1.2 * len(methods) + 2), 3.2))
    values = [result.best_per_method[m].value for m in methods]
    winner = result.best.method if result.best else None
    ax.bar(range(len(methods)), values, color=["C3" if m == winner else "C0" for m in methods])
    ax.set_xticks(range(len(methods)), methods, rotation=30, ha="right")
    ax.set_ylabel(f"best {result.metric}")
    ax.set_title(f"Best per method ({result.split}, {sum(result.budgets.values())} trials)")
    fig.tight_layout()
    files["plot_best_per_method"] = _save(fig, folder / "best_per_method.png", plt)
    return files


def _save(fig, path: Path, plt) -> Path:
    tmp = path.with_name(f".{path.stem}.{os.getpid()}.png")
    fig.savefig(tmp, dpi=110)
    plt.close(fig)
    os.replace(tmp, path)
    return path


__all__ = ["leaderboard_csv", "leaderboard_markdown", "write_outputs", "write_plots"]
