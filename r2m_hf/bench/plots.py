"""The offline benchmark's figures, drawn from a `results.json` dict (matplotlib, Agg backend).

Per-family AUC bars of the detectors and merges, each tuned method beside its package defaults, one
AUC-versus-value figure per declared sensitivity sweep, the specialists' cross-family AUC and their feature
similarity to the averaged model.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from .config import COLUMN_TITLES


def make_plots(results: dict[str, Any], output: Path) -> list[str]:
    """Write the PNG figures into `output`; returns their paths."""
    import matplotlib

    matplotlib.use("Agg")

    paths = [_auc_per_family(results, output)]
    if any(d.get("setting") == "tuned" for d in results["details"].values()):
        paths.append(_tuned_vs_defaults(results, output / "tuned_vs_defaults.png"))
    for name, sweep in (results.get("sweeps") or {}).items():
        paths.append(_sweep(sweep, output / f"auc_vs_{name}.png"))
    if results["validity"].get("cross_family_auc"):
        paths.append(_cross_family(results["validity"]["cross_family_auc"], output / "cross_family_auc.png"))
    if results["validity"].get("feature_similarity"):
        paths.append(_feature_similarity(results["validity"]["feature_similarity"], output / "feature_similarity.png"))
    return paths


def _auc_per_family(results: dict[str, Any], output: Path) -> str:
    """Per-family AUC bars of the joint detector, the probe and every tuned merge (every merge in files without
    tuned rows), one panel per column."""
    import matplotlib.pyplot as plt

    methods, details = results["methods"], results["details"]
    merges = [n for n, d in details.items() if d["kind"] == "merge"]
    merges = [n for n in merges if details[n].get("setting") == "tuned"] or merges
    keep = [n for n, d in details.items() if d["kind"] in ("joint", "probe")] + merges
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
    return _save(fig, output / "auc_per_family.png")


def _tuned_vs_defaults(results: dict[str, Any], path: Path) -> str:
    """Mean test AUC of every method at its package defaults and tuned on validation, one panel per column."""
    import matplotlib.pyplot as plt

    methods, details = results["methods"], results["details"]
    names = [n for n, d in details.items() if d["kind"] == "merge" and d.get("setting") == "defaults"]
    fig, axes = plt.subplots(1, len(COLUMN_TITLES), figsize=(22, 4.5), sharey=True)
    xs = range(len(names))
    for ax, (col, title) in zip(axes, COLUMN_TITLES.items()):
        default = [methods[n].get(col, {}).get("mean") or 0 for n in names]
        tuned = [methods.get(f"{n} (tuned)", {}).get(col, {}).get("mean") or 0 for n in names]
        ax.bar([x - 0.2 for x in xs], default, 0.4, label="package defaults", color="#9db4d0")
        ax.bar([x + 0.2 for x in xs], tuned, 0.4, label="tuned on validation", color="#2b5d95")
        ax.set_xticks(list(xs), names, rotation=45, ha="right", fontsize=8)
        ax.set_title(f"{title} (test, mean AUC)")
        ax.axhline(0.5, color="grey", lw=0.8, ls="--")
        ax.set_ylim(0.3, 1.0)
    axes[0].set_ylabel("AUC")
    axes[-1].legend(fontsize=8, loc="lower right")
    fig.tight_layout()
    return _save(fig, path)


def _sweep(sweep: dict[str, Any], path: Path) -> str:
    """Mean AUC on validation and on each test column against the swept value."""
    import matplotlib.pyplot as plt

    key = sweep["parameter"]
    xs = [p[key] for p in sweep["points"]]
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for col, label in (("validation", "validation (seen families)"), *COLUMN_TITLES.items()):
        ax.plot(
            xs,
            [p.get(col) for p in sweep["points"]],
            marker="o",
            label=label if col == "validation" else f"test: {label}",
            ls="-" if col == "validation" else "--",
        )
    positive = [x for x in xs if isinstance(x, (int, float)) and x > 0]
    if positive and min(xs) >= 0 and max(positive) / min(positive) >= 100:  # values spanning decades, maybe 0
        ax.set_xscale("symlog", linthresh=min(positive))
    fixed = ", ".join(f"{k}={v}" for k, v in sweep["fixed"].items())
    ax.set_xlabel(key)
    ax.set_ylabel("mean AUC")
    ax.set_title(f"{sweep['method']}: AUC vs {key}" + (f" ({fixed})" if fixed else ""), fontsize=10)
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    return _save(fig, path)


def _cross_family(cross: dict[str, dict[str, float]], path: Path) -> str:
    import matplotlib.pyplot as plt
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
    return _save(fig, path)


def _feature_similarity(fs: dict[str, Any], path: Path) -> str:
    import matplotlib.pyplot as plt

    specs = list(fs["specialists"])
    fig, ax = plt.subplots(figsize=(7, 4))
    for i, (key, label) in enumerate(
        (("real", "real"), ("fake_own_family", "fake (own family)"), ("fake_other_families", "fake (others)"))
    ):
        ax.bar([x + i * 0.27 for x in range(len(specs))], [fs["specialists"][s][key] for s in specs], 0.27, label=label)
    ax.set_xticks([x + 0.27 for x in range(len(specs))], [f"{s} specialist" for s in specs])
    ax.set_ylabel("linear CKA with the averaged model")
    ax.set_title("Feature similarity to the averaged model (test images)")
    ax.set_ylim(0, 1.05)
    ax.legend(fontsize=8)
    fig.tight_layout()
    return _save(fig, path)


def _save(fig: Any, path: Path) -> str:
    import matplotlib.pyplot as plt

    fig.savefig(path, dpi=110)
    plt.close(fig)
    return str(path)


__all__ = ["make_plots"]
