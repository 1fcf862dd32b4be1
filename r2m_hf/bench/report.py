"""The offline benchmark's report: `RESULTS.md` and the printed table, rendered from a `results.json` dict.

Pure formatting of what :mod:`r2m_hf.bench.run` measured (the dict is :mod:`r2m_hf.bench.results`'s, the figures
:mod:`r2m_hf.bench.plots`'s); nothing here trains, merges or scores, and no method is named: each method's
diagnostics are its own ``summary_rows``, its defaults its own parameters model. Files written by earlier versions
re-render too.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from .config import COLUMN_TITLES, COLUMNS
from .families import SEEN_FAMILIES
from .results import DETAIL_KEYS, focus_of, params_text, rows_of, setting_of, warnings_of, write_json


def write_report(results: dict[str, Any], output: Path, *, plots: bool = True) -> None:
    """Write `results.json`, `RESULTS.md` and (with `plots`) the PNG figures into `output`."""
    from .plots import make_plots

    output = Path(output)
    output.mkdir(parents=True, exist_ok=True)
    figures = make_plots(results, output) if plots else []
    write_json(results, output)
    (output / "RESULTS.md").write_text(results_markdown(results, figures), encoding="utf-8")


def summary_rows(method: str | None, report: dict[str, Any] | None) -> list[tuple[str, str]]:
    """The method's own summary rows of its report (none when the method is not installed here)."""
    if not method or not report:
        return []
    from ..errors import R2MError
    from ..methods.registry import get_method

    try:
        return list(get_method(method).summary_rows(report))
    except R2MError:
        return []


# ----------------------------------------------------------------------------------------------- markdown
def markdown_table(results: dict[str, Any], rows: list[str] | None = None) -> str:
    """The headline table: AUC per seen family in-distribution, then the mean of each column (every row, or
    `rows`)."""
    fams = list(SEEN_FAMILIES)
    head = (
        "| method | " + " | ".join(fams) + " | ID mean | unseen gen. | unseen fam. | cross-domain | val AUC | chosen |"
    )
    lines = [head, "|---|" + "---:|" * (len(fams) + 5) + "---|"]
    for name in rows if rows is not None else results["methods"]:
        m, d = results["methods"][name], results["details"][name]
        idd = m.get("in_distribution", {})
        cells = [_f(idd.get(f)) for f in fams] + [_f(m.get(c, {}).get("mean")) for c in COLUMNS]
        cells += [_f(d.get("validation_auc")), params_text(d.get("params") or {})]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def headline_tables(results: dict[str, Any]) -> list[str]:
    """The AUC tables: detectors and merges at their package defaults, then the merges tuned on validation (older
    files: one table)."""
    names = list(results["methods"])
    tuned = [n for n in names if setting_of(results, n) == "tuned"]
    if not tuned:
        return ["## AUC", "", markdown_table(results), ""]
    tuning = results.get("tuning") or {}
    return [
        "## AUC: trained detectors and merges at package defaults",
        "",
        markdown_table(results, [n for n in names if n not in tuned]),
        "",
        f"## AUC: merges tuned on validation ({tuning.get('trials_per_method', '?')} trials per method)",
        "",
        markdown_table(results, tuned),
        "",
        *_tuned_vs_defaults(results, tuned),
    ]


def _tuned_vs_defaults(results: dict[str, Any], tuned: list[str]) -> list[str]:
    """Each tuned method beside its package defaults: validation and the test columns' mean AUC."""
    methods, details = results["methods"], results["details"]
    lines = [
        "### Tuned vs defaults (mean AUC; defaults → tuned)",
        "",
        "| method | validation | " + " | ".join(COLUMN_TITLES.values()) + " |",
        "|---|" + "---:|" * (len(COLUMNS) + 1),
    ]
    for name in [n for n in tuned if n.endswith(" (tuned)")]:
        method = details[name]["params"].get("merge_method")
        defaults = next((n for n in rows_of(results, method) if setting_of(results, n) == "defaults"), None)
        pairs = [(details.get(defaults, {}).get("validation_auc"), details[name].get("validation_auc"))]
        pairs += [(_mean(methods, defaults, c), _mean(methods, name, c)) for c in COLUMNS]
        lines.append(f"| {method} | " + " | ".join(f"{_f(a)} → {_f(b)}" for a, b in pairs) + " |")
    lines.append("")
    return lines


def _mean(methods: dict[str, Any], name: str | None, column: str) -> float | None:
    return methods.get(name, {}).get(column, {}).get("mean")


def _accuracy_md(results: dict[str, Any]) -> list[str]:
    """Accuracy at 0.5 beside accuracy at each model's threshold calibrated on validation (mean over families)."""
    details = results["details"]
    if not any(
        (d["metrics"].get(c) or {}).get("mean", {}).get("acc_threshold") is not None
        for d in details.values()
        for c in COLUMNS
    ):
        return []
    calibration = (results.get("selection") or {}).get("calibration", "a threshold chosen on validation")
    lines = [
        "## Accuracy: at 0.5 and at a calibrated threshold",
        "",
        f"Mean accuracy over families at the default 0.5 and at τ, the {calibration}. A merged head is not "
        "calibrated (its scores shift with the merge), so 0.5 understates what it can do; `r2m-hf calibrate` stores τ "
        "with a model. τ is the threshold of the first test column; the test splits never chose it.",
        "",
        "| model | τ | " + " | ".join(f"{t} @0.5 | {t} @τ" for t in COLUMN_TITLES.values()) + " |",
        "|---|---:|" + "---:|---:|" * len(COLUMNS),
    ]
    for name, d in details.items():
        metrics = d["metrics"]
        tau = (metrics.get(next(iter(COLUMNS))) or {}).get("threshold")
        cells = []
        for c in COLUMNS:
            mean = (metrics.get(c) or {}).get("mean", {})
            cells += [_f(mean.get("acc")), _f(mean.get("acc_threshold"))]
        lines.append(f"| {name} | {_f(tau)} | " + " | ".join(cells) + " |")
    lines.append("")
    return lines


def results_markdown(results: dict[str, Any], figures: list[str]) -> str:
    """The body of `RESULTS.md`."""
    b = results["benchmark"]
    data = b["data"]
    out = [
        "# Offline forgery benchmark: results",
        "",
        f"Tier **{b['tier']}**, seed {b['seed']}, backbone: {b['backbone']}, images {data['image_size']} px, "
        f"split sizes {data['split_sizes']}. Regenerate with `python -m r2m_hf.bench --tier {b['tier']}` "
        "(or `r2m-hf bench`); docs/benchmark.md describes the benchmark. AUC with fake as the positive class; each "
        "family is scored against the split's shared reals; means are over families. " + _selection_text(results),
        "",
        *headline_tables(results),
    ]
    for col, title in COLUMN_TITLES.items():
        out += [f"### {title} (AUC per family; EER/AP/ACC means)", "", _detail_table(results, col), ""]
    out += _accuracy_md(results)
    out += _focus_md(results)
    out += _tuning_md(results)
    out += _warnings_md(results)
    out += _defaults_md(results)
    out += _validity_md(results)
    out += _sweeps_md(results)
    out += _composability_md(results)
    if figures:
        out += ["## Plots", ""] + [f"![{Path(f).stem}]({Path(f).name})" for f in figures] + [""]
    out += [
        "## Runtime (seconds)",
        "",
        "| step | s |",
        "|---|---:|",
        *[f"| {k} | {v} |" for k, v in results["runtime_s"].items()],
        "",
    ]
    return "\n".join(out)


def _selection_text(results: dict[str, Any]) -> str:
    sel = results["selection"]
    grids = sel.get("grids")
    if grids is not None:  # files before the benchmark tuned with `r2m_hf.tuning.tune`
        untuned = [f"`{n}`" for n, g in grids.items() if g["tries"] == [{}]]
        return (
            f"Hyperparameters were chosen on the `{sel['split']}` split ({sel['criterion']}) with the same budget of "
            f"tries for every method that has a scaling factor ({_budget(results)}; {_join(untuned) or 'no row'} are "
            "one untuned try each, at the package defaults); the test splits were never used to choose."
        )
    tuning = results.get("tuning") or {}
    return (
        "Every method is merged once at its package defaults (untuned) and, when it declares a search space, tuned "
        f"on the `{sel['split']}` split with `r2m-hf tune` (Optuna TPE, seeded, pruning clearly worse trials; "
        f"objective: {sel['criterion']}) with the same budget for every method "
        f"({tuning.get('trials_per_method', '?')} trials); the best trial of each method is merged with `r2m-hf merge` "
        "and scored on the test splits, which were never used to choose."
    )


def _detail_table(results: dict[str, Any], column: str) -> str:
    fams = sorted({f for m in results["methods"].values() for f in m.get(column, {}) if f != "mean"})
    means = {n: d["metrics"].get(column, {}).get("mean", {}) for n, d in results["details"].items()}
    calibrated = any(m.get("acc_threshold") is not None for m in means.values())  # older files have none
    keys = DETAIL_KEYS if calibrated else tuple(k for k in DETAIL_KEYS if k != "acc_threshold")
    titles = {
        "auc": "mean AUC",
        "eer": "mean EER",
        "ap": "mean AP",
        "acc": "mean ACC@0.5",
        "acc_threshold": "mean ACC@τ",
    }
    lines = ["| method | " + " | ".join(fams) + " | " + " | ".join(titles[k] for k in keys) + " |"]
    lines.append("|---|" + "---:|" * (len(fams) + len(keys)))
    for name, m in results["methods"].items():
        col = m.get(column, {})
        cells = [_f(col.get(f)) for f in fams] + [_f(means[name].get(k)) for k in keys]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _focus_md(results: dict[str, Any]) -> list[str]:
    """Where the focus method's rows rank among the merges, its rows on validation and its diagnostics."""
    methods, details = results["methods"], results["details"]
    focus, chosen = focus_of(results)
    merges = [n for n, d in details.items() if d["kind"] == "merge"]
    if not merges or focus is None:
        return []
    lines = [f"## Where `{focus}` stands", ""]
    for col, title in COLUMN_TITLES.items():
        ranked = sorted(merges, key=lambda n: -(methods[n].get(col, {}).get("mean") or -1))
        best = ranked[0]
        pos = [f"{n} #{ranked.index(n) + 1}" for n in ranked if details[n]["params"].get("merge_method") == focus]
        lines.append(
            f"- **{title}** (test, mean AUC): best merge {best} ({_f(methods[best].get(col, {}).get('mean'))}); "
            f"`{focus}` ranks {', '.join(pos) or 'n/a'} of {len(ranked)} merges; joint training "
            f"{_f(methods.get('joint training', {}).get(col, {}).get('mean'))}."
        )
    own = rows_of(results, focus)
    if len(own) > 1 and chosen in details:
        lines += [
            "",
            f"`{focus}`'s rows on validation (mean AUC at each row's chosen point): "
            + ", ".join(f"{n}: {_f(details[n]['validation_auc'])}" for n in own)
            + f". The validation-chosen row is **{chosen}** ({params_text(details[chosen]['params'])}).",
        ]
    diagnostics = summary_rows(focus, details.get(chosen, {}).get("merge_report"))
    if diagnostics:
        lines += ["", f"Diagnostics of {chosen}:", "", "| quantity | value |", "|---|---|"]
        lines += [f"| {label} | {value} |" for label, value in diagnostics]
    lines.append("")
    return lines


def _tuning_md(results: dict[str, Any]) -> list[str]:
    """The tuner's budgets, speed and per-method outcome, with how many trials it took to reach its best."""
    tuning = results.get("tuning") or {}
    if not tuning:
        return []
    details = results["details"]
    share = tuning.get("merge_share")
    lines = [
        "## Tuning",
        "",
        f"`r2m-hf tune` on the `{tuning['split']}` split, objective `{tuning['metric']}`: "
        f"{sum(tuning['budgets'].values())} trials ({tuning['trials_per_method']} per method) in "
        f"{tuning['seconds']:.0f} s, **{tuning.get('trials_per_minute') or 0:.1f} trials/min** "
        f"({tuning.get('seconds_per_trial') or 0:.2f} s per trial, "
        + (f"{share:.0%} merging, {tuning.get('eval_share') or 0:.0%} scoring" if share is not None else "")
        + f"); the specialists were read once ({tuning.get('read_seconds') or 0:.1f} s) and merged "
        + ("in memory" if tuning.get("in_memory") else "streamed from disk")
        + " in every trial. The full leaderboard is `tuning/leaderboard.md`.",
        "",
        "| method | trials (complete / pruned / failed) | best validation | defaults' validation (trial 1) | "
        "trials to reach the best | best parameters |",
        "|---|---|---:|---:|---:|---|",
    ]
    for method, budget in tuning["budgets"].items():
        counts = (tuning.get("counts") or {}).get(method, {})
        trials = sorted((t for t in tuning["trials"] if t["method"] == method), key=lambda t: t["number"])
        complete = [t["value"] for t in trials if t["state"] == "COMPLETE" and t["value"] is not None]
        best = max(complete) if complete else None
        defaults = details[method]["validation_auc"] if method in details else None
        reach = _trials_to_reach(trials, best)
        tuned = details.get(f"{method} (tuned)", {})
        lines.append(
            f"| {method} | {len(trials)} of {budget} ({counts.get('COMPLETE', 0)} / {counts.get('PRUNED', 0)} / "
            f"{counts.get('FAIL', 0)}) | {_f(best)} | {_f(defaults)} | "
            f"{reach or '—'} | "
            f"{params_text(tuned.get('params') or {})} |"
        )
    lines.append("")
    return lines


def _trials_to_reach(trials: list[dict[str, Any]], value: float | None) -> int | None:
    """1-based count of trials (in trial order) until the first complete one scores at least `value`."""
    if value is None:
        return None
    for count, t in enumerate(trials, 1):
        if t["state"] == "COMPLETE" and t["value"] is not None and t["value"] >= value:
            return count
    return None


def _warnings_md(results: dict[str, Any]) -> list[str]:
    """The warnings each merge raised about itself (see each method's `warnings()`)."""
    raised = {n: warnings_of(d) for n, d in results["details"].items() if d["kind"] == "merge" and warnings_of(d)}
    if not raised:
        return []
    return ["### Merge warnings", ""] + [f"- {n}: {w}" for n, ws in raised.items() for w in ws] + [""]


def _defaults_md(results: dict[str, Any]) -> list[str]:
    """For each method that declares an untuned defaults row beside tuned rows: every tuned try beside its defaults."""
    grids = (results.get("selection") or {}).get("grids") or {}
    out = []
    for method in dict.fromkeys(g["method"] for g in grids.values()):
        declared = [n for n, g in grids.items() if g["method"] == method and g["tries"] == [{}]]
        tuned = [n for n in rows_of(results, method) if n not in declared]
        if declared and tuned:
            out += _defaults_section(results, method, declared[0], tuned)
    return out


def _defaults_section(results: dict[str, Any], method: str, defaults_row: str, tuned: list[str]) -> list[str]:
    details = results["details"]
    tries = [(t["validation_auc"], t["params"]) for n in tuned for t in details[n].get("tries") or []]
    tries.sort(key=lambda t: -(t[0] if t[0] is not None else -1.0))
    keys = list(dict.fromkeys(k for _, p in tries for k in p))
    defaults, where = _package_defaults(method)
    stated = {k: defaults[k] for k in keys if k in defaults}
    at_defaults = (
        f"; at them (row {defaults_row}) the validation mean AUC is {_f(details[defaults_row]['validation_auc'])}"
        if defaults_row in details
        else ""
    )
    lines = [
        f"### Defaults: every `{method}` try on validation",
        "",
        f"The package defaults of `{method}` are {params_text(stated) or 'not known here'}"
        + (f" (`{where}`)" if where else "")
        + f"{at_defaults}. Validation mean AUC of every setting tried in its tuned rows, best first:",
        "",
        "| " + " | ".join(keys) + " | validation AUC |",
        "|" + "---|" * len(keys) + "---:|",
    ]
    lines += ["| " + " | ".join(str(p.get(k, "")) for k in keys) + f" | {_f(auc)} |" for auc, p in tries]
    best = tries[0][1] if tries else {}
    same = bool(stated) and all(best.get(k) == v for k, v in stated.items())
    lines += [
        "",
        "The best validation try "
        + ("is the package default." if same else f"({params_text(best)}) is **not** the package default here."),
        "",
    ]
    return lines


def _package_defaults(method: str) -> tuple[dict[str, Any], str | None]:
    """A method's default parameters by YAML key, and the module that declares them ({} when not installed)."""
    from ..errors import R2MError
    from ..methods.registry import get_method

    try:
        cls = get_method(method)
    except R2MError:
        return {}, None
    return cls.parameters_model().model_dump(by_alias=True), cls.__module__


def _validity_md(results: dict[str, Any]) -> list[str]:
    v = results["validity"]
    out = ["## Validity checks", ""]
    cross = v.get("cross_family_auc") or {}
    if cross:
        fams = list(next(iter(cross.values())).keys())
        out += ["Specialists' cross-family AUC (rows: specialist; columns: test family):", ""]
        out += ["| specialist | " + " | ".join(fams) + " |", "|---|" + "---:|" * len(fams)]
        out += [f"| {s} | " + " | ".join(_f(row.get(f)) for f in fams) + " |" for s, row in cross.items()]
        out.append("")
        weak = [s for s, row in cross.items() if (row.get(s) or 0.0) < 0.6]
        if weak:
            out += [
                f"**Not learned:** the {', '.join(weak)} specialist(s) stay below AUC 0.6 on their own family, so "
                "their columns cannot rank merge methods (merging has nothing to keep there).",
                "",
            ]
    triv = v.get("trivial_detector")
    if triv:
        out += [
            "Trivial detector (logistic regression on radial spectrum + colour statistics), AUC per family: "
            + ", ".join(f"{f} {_f(x['auc'])}" for f, x in triv["families"].items())
            + f"; solves every family: {triv['all_near_one']}; bookkeeping uniform: {triv['bookkeeping']['uniform']}.",
            "",
        ]
    fs = v.get("feature_similarity")
    if fs:
        out += [f"Feature similarity to the averaged model ({fs['measure']}):", ""]
        out += ["| specialist | real | fake (own family) | fake (other families) |", "|---|---:|---:|---:|"]
        out += [
            f"| {s} | {_f(x['real'])} | {_f(x['fake_own_family'])} | {_f(x['fake_other_families'])} |"
            for s, x in fs["specialists"].items()
        ]
        out.append("")
    return out


def _sweeps_md(results: dict[str, Any]) -> list[str]:
    sw = results.get("sweeps") or {}
    if not sw:
        return []
    out = ["## Sweeps (reported on validation and test; not used for selection)", ""]
    for s in sw.values():
        key = s["parameter"]
        around = f" around the point chosen for {s['row']}" if s.get("row") else ""
        out += [f"`{s['method']}` over `{key}`{around}, with {params_text(s['fixed'])}:", ""]
        cols = ["validation", *COLUMN_TITLES]
        titles = ["validation", *(f"test: {t}" for t in COLUMN_TITLES.values())]
        out += [f"| {key} | " + " | ".join(titles) + " |", "|---:|" + "---:|" * len(cols)]
        for p in s["points"]:
            out.append(f"| {p[key]} | " + " | ".join(_f(p.get(c)) for c in cols) + " |")
        out.append("")
    return out


def _composability_md(results: dict[str, Any]) -> list[str]:
    c = results.get("composability")
    if not c:
        return []
    method = c.get("method") or focus_of(results)[0]
    out = [
        "## Composability",
        "",
        f"`{method}` ({params_text(c['params'])}) over {', '.join(c['three'])}, then "
        f"{c['added']} added by editing the YAML and re-merging (test AUC):",
        "",
        "| column | family | three | four | change |",
        "|---|---|---:|---:|---:|",
    ]
    for col, fams in c["auc"].items():
        for f, x in fams.items():
            ch = None if x["three"] is None or x["four"] is None else x["four"] - x["three"]
            out.append(f"| {COLUMN_TITLES[col]} | {f} | {_f(x['three'])} | {_f(x['four'])} | {_f(ch)} |")
    out.append("")
    return out


# ------------------------------------------------------------------------------------------------ helpers
def _budget(results: dict[str, Any]) -> int:
    """Tries per tuned method (the same for every method with a scaling factor)."""
    return max((len(d.get("tries") or []) for d in results["details"].values()), default=0)


def _join(items: list[str]) -> str:
    if len(items) < 2:
        return "".join(items)
    return ", ".join(items[:-1]) + " and " + items[-1]


def _f(v: Any) -> str:
    return "—" if v is None or (isinstance(v, float) and not math.isfinite(v)) else f"{v:.3f}"


__all__ = ["markdown_table", "results_markdown", "write_report"]
