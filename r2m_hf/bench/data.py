"""Build, inspect and sub-select the offline forgery benchmark (a DF40 analogue made from bundled photos and code).

:func:`build_benchmark` writes a ``datasets`` ``DatasetDict`` (Arrow, ``save_to_disk``) with the columns ``image``,
``label`` (``ClassLabel(["real", "fake"])``, so 0 = real), ``family``, ``generator``, ``split``, ``domain`` and
``content``, in six splits: ``train``, ``validation``, ``test`` (seen generators), ``test_unseen_generators``,
``test_unseen_families`` and ``test_cross_domain`` (domain-B reals and fakes made from domain-B reals). Every split
holds one set of reals shared by all families, and each family has the same number of fakes as there are reals, so
:func:`specialist_subset` gives every specialist the same real images. :func:`contact_sheet` draws examples and
:func:`trivial_detector_check` runs the benchmark's validity checks.
"""

from __future__ import annotations

import io
import json
import logging
import os
import time
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
from PIL import Image, ImageDraw

from ..errors import ConfigError
from .camera import CameraConfig, camera_pipeline
from .families import GENERATORS, HELD_OUT_FAMILIES, SEEN_FAMILIES, generators_of
from .sources import RealSample, sample_real

logger = logging.getLogger(__name__)

SPLITS = (
    "train",
    "validation",
    "test",
    "test_unseen_generators",
    "test_unseen_families",
    "test_cross_domain",
)
LABEL_NAMES = ["real", "fake"]
REAL = "real"

_TIERS = {
    "quick": {"image_size": 56, "n_per_cell": 6},
    "full": {"image_size": 112, "n_per_cell": 150},
}


# The benchmark cannot be built or sub-selected as asked (unknown tier, family or split): a configuration error.
BenchmarkError = ConfigError


@dataclass(frozen=True)
class SplitPlan:
    """What one split holds.

    Args:
        name (`str`): split name.
        domain (`str`): `A` or `B`, for reals and for the reals the fakes are made from.
        families (`tuple[str, ...]`): forgery families present.
        held_out (`bool`): whether the families' held-out (`True`) or seen (`False`) sub-generators are used.
        n_per_family (`int`): fakes per family, spread evenly over its sub-generators; also the number of reals.
    """

    name: str
    domain: str
    families: tuple[str, ...]
    held_out: bool
    n_per_family: int

    def generator_counts(self) -> dict[str, int]:
        """Fakes per sub-generator, the remainder going to the first sub-generators."""
        counts: dict[str, int] = {}
        for fam in self.families:
            gens = generators_of(fam, held_out=True if fam in HELD_OUT_FAMILIES else self.held_out)
            base, rest = divmod(self.n_per_family, len(gens))
            for i, g in enumerate(gens):
                counts[g] = base + (1 if i < rest else 0)
        return counts


def split_plans(n_per_cell: int) -> list[SplitPlan]:
    """The six splits for `n_per_cell` training fakes per seen sub-generator (evaluation splits are smaller)."""
    n_seen = max(len(generators_of(f, held_out=False)) for f in SEEN_FAMILIES)
    n_train = n_seen * n_per_cell
    n_val = n_seen * max(2, n_per_cell // 5)
    n_test = n_seen * max(3, round(n_per_cell * 0.4))
    return [
        SplitPlan("train", "A", SEEN_FAMILIES, False, n_train),
        SplitPlan("validation", "A", SEEN_FAMILIES, False, n_val),
        SplitPlan("test", "A", SEEN_FAMILIES, False, n_test),
        SplitPlan("test_unseen_generators", "A", SEEN_FAMILIES, True, n_test),
        SplitPlan("test_unseen_families", "A", HELD_OUT_FAMILIES, True, n_test),
        SplitPlan("test_cross_domain", "B", SEEN_FAMILIES, False, n_test),
    ]


def _png(image_u8: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(image_u8, mode="RGB").save(buf, format="PNG", compress_level=3)
    return buf.getvalue()


def render_row(
    seed: int, split_index: int, row: int, generator: str, domain: str, size: int, camera: CameraConfig
) -> tuple[np.ndarray, RealSample]:
    """Render one benchmark image (real when `generator == "real"`) deterministically from its coordinates.

    Returns:
        `tuple[np.ndarray, RealSample]`: the `uint8` image after the camera pipeline, and the real it came from.
    """
    rng = np.random.default_rng([seed, split_index, row])
    base = sample_real(rng, size, domain)
    if generator == REAL:
        img = base.image
    else:
        img = GENERATORS[generator].fn(base, rng, lambda: sample_real(rng, size, domain))
        img = np.clip(np.nan_to_num(img), 0.0, 1.0).astype(np.float32)
    if img.shape != (size, size, 3):
        raise BenchmarkError(f"generator {generator!r} returned shape {img.shape}, expected {(size, size, 3)}")
    return camera_pipeline(img, rng, camera), base


def _versions() -> dict[str, str]:
    import importlib.metadata as md

    out = {}
    for pkg in ("r2m-hf", "numpy", "scipy", "pillow", "scikit-image", "scikit-learn", "datasets"):
        try:
            out[pkg] = md.version(pkg)
        except md.PackageNotFoundError:
            out[pkg] = "unknown"
    return out


def build_benchmark(
    output_dir: str | os.PathLike[str],
    *,
    image_size: int | None = None,
    n_per_cell: int | None = None,
    seed: int = 0,
    tier: str = "quick",
) -> str:
    """Generate the benchmark and save it as a `DatasetDict` (Arrow) with a `manifest.json` recipe.

    Args:
        output_dir (`str` or `os.PathLike`): folder to write (created; existing dataset files are replaced).
        image_size (`int`, *optional*): side in pixels; default 56 for `quick`, 112 for `full`.
        n_per_cell (`int`, *optional*): training fakes per seen sub-generator; default 6 (`quick`) or 150 (`full`).
            Each split has as many reals as each family has fakes (3 · `n_per_cell` in train).
        seed (`int`): the same seed gives byte-identical images.
        tier (`str`): `quick` (CI) or `full` (DINOv2-small size).

    Returns:
        `str`: the dataset folder, loadable with `datasets.load_from_disk`.
    """
    import datasets

    if tier not in _TIERS:
        raise BenchmarkError(f"unknown tier {tier!r}; use one of {sorted(_TIERS)}")
    size = int(image_size or _TIERS[tier]["image_size"])
    n_cell = int(n_per_cell or _TIERS[tier]["n_per_cell"])
    if size < 16 or size % 8:
        raise BenchmarkError(f"image_size must be a multiple of 8 and at least 16, got {size}")
    camera = CameraConfig()
    features = datasets.Features(
        {
            "image": datasets.Image(),
            "label": datasets.ClassLabel(names=LABEL_NAMES),
            "family": datasets.Value("string"),
            "generator": datasets.Value("string"),
            "split": datasets.Value("string"),
            "domain": datasets.Value("string"),
            "content": datasets.Value("string"),
        }
    )
    t0 = time.perf_counter()
    plans = split_plans(n_cell)
    out: dict[str, datasets.Dataset] = {}
    counts: dict[str, dict[str, int]] = {}
    for si, plan in enumerate(plans):
        gens = [REAL] * plan.n_per_family
        for g, c in plan.generator_counts().items():
            gens += [g] * c
        cols: dict[str, list[Any]] = {k: [] for k in features}
        for row, g in enumerate(gens):
            img, base = render_row(seed, si, row, g, plan.domain, size, camera)
            cols["image"].append({"bytes": _png(img), "path": None})
            cols["label"].append(0 if g == REAL else 1)
            cols["family"].append(REAL if g == REAL else GENERATORS[g].family)
            cols["generator"].append(g)
            cols["split"].append(plan.name)
            cols["domain"].append(plan.domain)
            cols["content"].append(base.kind)
        out[plan.name] = datasets.Dataset.from_dict(cols, features=features)
        counts[plan.name] = {g: gens.count(g) for g in dict.fromkeys(gens)}
        logger.info("built %s: %d images (%.1fs)", plan.name, len(gens), time.perf_counter() - t0)
    path = os.fspath(output_dir)
    datasets.DatasetDict(out).save_to_disk(path)
    manifest = {
        "name": "r2m-hf offline forgery benchmark",
        "tier": tier,
        "seed": seed,
        "image_size": size,
        "n_per_cell": n_cell,
        "labels": {"0": "real", "1": "fake"},
        "splits": {
            p.name: asdict(p) | {"counts": counts[p.name], "total": sum(counts[p.name].values())} for p in plans
        },
        "families": {
            fam: {
                g: {"held_out": GENERATORS[g].held_out, "doc": (GENERATORS[g].fn.__doc__ or "").strip()}
                for g in generators_of(fam)
            }
            for fam in (*SEEN_FAMILIES, *HELD_OUT_FAMILIES)
        },
        "held_out_families": list(HELD_OUT_FAMILIES),
        "camera": asdict(camera),
        "versions": _versions(),
    }
    with open(os.path.join(path, "manifest.json"), "w", encoding="utf-8") as fh:
        json.dump(manifest, fh, indent=2, sort_keys=False)
    logger.info("benchmark written to %s in %.1fs", path, time.perf_counter() - t0)
    return path


def load_benchmark(dataset_dir: str | os.PathLike[str]) -> Any:
    """Load a benchmark written by :func:`build_benchmark` (a `datasets.DatasetDict`)."""
    import datasets

    return datasets.load_from_disk(os.fspath(dataset_dir))


def _as_dict(dataset: Any) -> Any:
    if isinstance(dataset, (str, os.PathLike)):
        return load_benchmark(dataset)
    return dataset


# -------------------------------------------------------------------------------------------- sub-selection
def _balanced_take(labels: list[str], idx: list[int], k: int, rng: np.random.Generator) -> list[int]:
    """Take `k` of `idx`, round-robin over the distinct `labels` (each group in a seeded random order)."""
    groups: dict[str, list[int]] = {}
    for i in idx:
        groups.setdefault(labels[i], []).append(i)
    queues = [list(rng.permutation(g)) for _, g in sorted(groups.items())]
    taken: list[int] = []
    while len(taken) < k:
        for q in queues:
            if q and len(taken) < k:
                taken.append(int(q.pop(0)))
    return taken


def specialist_subset(dataset: Any, family: str, *, seed: int = 0) -> Any:
    """The rows a `family` specialist sees in one split: the split's shared reals and that family's fakes, balanced.

    When the counts differ, the larger side is subsampled: fakes evenly over sub-generators, reals as a fixed
    seeded prefix, so every specialist's reals are the same images (or nested subsets of them).

    Args:
        dataset (`datasets.Dataset`): one split of the benchmark.
        family (`str`): `FS`, `FR`, `EFS`, `FE`, `djpeg` or `resample`.
        seed (`int`): seed of the subsampling.

    Returns:
        `datasets.Dataset`: the selected rows, in their original order.
    """
    fams = list(dataset["family"])
    gens = list(dataset["generator"])
    real = [i for i, f in enumerate(fams) if f == REAL]
    fake = [i for i, f in enumerate(fams) if f == family]
    if not fake:
        raise BenchmarkError(f"family {family!r} has no rows in this split; present: {sorted(set(fams) - {REAL})}")
    n = min(len(real), len(fake))
    rng = np.random.default_rng(seed)
    keep_real = [int(i) for i in rng.permutation(real)[:n]] if n < len(real) else real
    keep_fake = _balanced_take(gens, fake, n, rng) if n < len(fake) else fake
    return dataset.select(sorted(keep_real + keep_fake))


def joint_subset(
    dataset: Any, *, families: tuple[str, ...] | None = None, mode: str = "repeat_real", seed: int = 0
) -> Any:
    """Rows for a jointly trained detector, balanced between real and fake and across families.

    Args:
        dataset (`datasets.Dataset`): one split of the benchmark.
        families (`tuple[str, ...]`, *optional*): the fake families to include (default: all present).
        mode (`str`): `repeat_real` keeps an equal number of fakes per family (all of them when the families are
            the same size) and repeats the reals to match, i.e. class weighting by duplication; `subsample` keeps
            every real and `n_real / n_families` fakes per family.
        seed (`int`): seed of the subsampling.

    Returns:
        `datasets.Dataset`: the selected rows (reals may repeat in `repeat_real` mode).
    """
    fams = list(dataset["family"])
    gens = list(dataset["generator"])
    present = sorted(set(fams) - {REAL})
    chosen = list(families or present)
    missing = sorted(set(chosen) - set(present))
    if missing:
        raise BenchmarkError(f"families {missing} have no rows in this split; present: {present}")
    real = [i for i, f in enumerate(fams) if f == REAL]
    by_fam = {f: [i for i, x in enumerate(fams) if x == f] for f in chosen}
    rng = np.random.default_rng(seed)
    if mode == "subsample":
        per = len(real) // len(chosen)
        fake = [i for f in chosen for i in _balanced_take(gens, by_fam[f], min(per, len(by_fam[f])), rng)]
        return dataset.select(sorted(real + fake))
    if mode != "repeat_real":
        raise BenchmarkError(f"unknown joint_subset mode {mode!r}; use 'repeat_real' or 'subsample'")
    per = min(len(v) for v in by_fam.values())
    fake = sorted(i for f in chosen for i in _balanced_take(gens, by_fam[f], per, rng))
    reps = [real[k % len(real)] for k in range(len(fake))] if real else []
    return dataset.select(sorted(reps) + fake)


# ------------------------------------------------------------------------------------------- contact sheet
def contact_sheet(dataset: Any, path: str | os.PathLike[str], *, per_generator: int = 4, tile: int = 96) -> str:
    """Write a labelled PNG grid: a row of reals per domain, then a row per forgery sub-generator.

    Args:
        dataset (`str`, `os.PathLike` or `datasets.DatasetDict`): the benchmark folder or the loaded benchmark.
        path (`str` or `os.PathLike`): the PNG to write.
        per_generator (`int`): images per row.
        tile (`int`): displayed side of each image (nearest-neighbour enlarged, so artifacts stay visible).

    Returns:
        `str`: `path`.
    """
    dd = _as_dict(dataset)
    rows: dict[str, list[tuple[str, int]]] = {}
    for split in dd:
        ds = dd[split]
        for i, (g, d) in enumerate(zip(ds["generator"], ds["domain"], strict=True)):
            key = f"real ({d})" if g == REAL else g
            rows.setdefault(key, [])
            if len(rows[key]) < per_generator:
                rows[key].append((split, i))
    order = sorted(rows, key=lambda k: (k != "real (A)", k != "real (B)", _family_rank(k), k))
    label_w, pad = 230, 4
    sheet = Image.new("RGB", (label_w + per_generator * (tile + pad), len(order) * (tile + pad) + pad), "white")
    draw = ImageDraw.Draw(sheet)
    for r, key in enumerate(order):
        y = pad + r * (tile + pad)
        if key.startswith(REAL):
            text = key
        else:
            gen = GENERATORS[key]
            text = f"{gen.family} / {key}" + ("\n(held out)" if gen.held_out else "")
        draw.multiline_text((6, y + tile // 2 - 12), text, fill="black")
        for c, (split, i) in enumerate(rows[key]):
            im = dd[split][i]["image"].convert("RGB").resize((tile, tile), Image.Resampling.NEAREST)
            sheet.paste(im, (label_w + c * (tile + pad), y))
    out = os.fspath(path)
    sheet.save(out, format="PNG")
    return out


def _family_rank(key: str) -> int:
    fams = (*SEEN_FAMILIES, *HELD_OUT_FAMILIES)
    return fams.index(GENERATORS[key].family) if key in GENERATORS else -1


# ------------------------------------------------------------------------------------------ validity checks
def spectral_colour_features(images: np.ndarray, n_bins: int = 16) -> np.ndarray:
    """Hand-made features of a trivial detector: log radial power spectrum of the luminance plus colour statistics.

    Args:
        images (`np.ndarray`): `(N, H, W, 3)` `uint8` images.
        n_bins (`int`): radial frequency bins between 0 and Nyquist.

    Returns:
        `np.ndarray`: `(N, n_bins + 11)` features.
    """
    x = images.astype(np.float32) / 255.0
    lum = x.mean(axis=3)
    lum = lum - lum.mean(axis=(1, 2), keepdims=True)
    n = lum.shape[1]
    power = np.abs(np.fft.fft2(lum)) ** 2
    fy, fx = np.meshgrid(np.fft.fftfreq(n), np.fft.fftfreq(lum.shape[2]), indexing="ij")
    radius = np.sqrt(fy**2 + fx**2)
    which = np.minimum((radius / 0.5 * n_bins).astype(int), n_bins)  # bin n_bins = corners beyond Nyquist
    radial = np.stack([power[:, which == b].mean(axis=1) for b in range(1, n_bins + 1)], axis=1)
    spec = np.log(radial + 1e-8)
    sat = x.max(axis=3) - x.min(axis=3)
    lap = x[:, 1:-1, 1:-1] * 4 - x[:, :-2, 1:-1] - x[:, 2:, 1:-1] - x[:, 1:-1, :-2] - x[:, 1:-1, 2:]
    colour = np.concatenate(
        [
            x.mean(axis=(1, 2)),
            x.std(axis=(1, 2)),
            sat.mean(axis=(1, 2))[:, None],
            sat.std(axis=(1, 2))[:, None],
            np.log(lap.std(axis=(1, 2)) + 1e-6),
        ],
        axis=1,
    )
    return np.concatenate([spec, colour], axis=1)


def _images(ds: Any) -> np.ndarray:
    return np.stack([np.asarray(im.convert("RGB")) for im in ds["image"]])


def _fit_auc(x_tr: np.ndarray, y_tr: np.ndarray, tests: dict[str, tuple[np.ndarray, np.ndarray]]) -> dict[str, float]:
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import roc_auc_score
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    clf = make_pipeline(StandardScaler(), LogisticRegression(C=1.0, max_iter=2000))
    clf.fit(x_tr, y_tr)
    return {k: float(roc_auc_score(y, clf.predict_proba(x)[:, 1])) for k, (x, y) in tests.items()}


def trivial_detector_check(dataset: Any, *, seed: int = 0) -> dict[str, Any]:
    """Validity checks: a trivial spectral/colour detector per family, and bookkeeping uniformity.

    For each seen family a logistic regression on :func:`spectral_colour_features` is trained on the family's
    balanced `train` rows and scored (AUC) on its `test` rows (`auc`), on every other family's `test` rows
    (`cross`), on its held-out sub-generator (`auc_unseen_generator`) and on the cross-domain split
    (`auc_cross_domain`). A held-out family is scored by 2-fold cross-validation inside `test_unseen_families`.
    The benchmark is healthy when not every `auc` is ≈ 1.0. Needs scikit-learn.

    Args:
        dataset (`str`, `os.PathLike` or `datasets.DatasetDict`): the benchmark.
        seed (`int`): seed of the folds.

    Returns:
        `dict`: `{"families": {family: {...}}, "bookkeeping": {...}, "all_near_one": bool}`.
    """
    dd = _as_dict(dataset)
    feats = {s: spectral_colour_features(_images(dd[s])) for s in dd}
    fams = {s: np.array(dd[s]["family"]) for s in dd}
    result: dict[str, Any] = {}

    def rows(split: str, family: str) -> tuple[np.ndarray, np.ndarray]:
        m = (fams[split] == REAL) | (fams[split] == family)
        return feats[split][m], (fams[split][m] != REAL).astype(int)

    for fam in SEEN_FAMILIES:
        tests = {f"cross:{g}": rows("test", g) for g in SEEN_FAMILIES}
        tests["unseen_generator"] = rows("test_unseen_generators", fam)
        tests["cross_domain"] = rows("test_cross_domain", fam)
        aucs = _fit_auc(*rows("train", fam), tests)
        result[fam] = {
            "auc": aucs[f"cross:{fam}"],
            "cross": {g: aucs[f"cross:{g}"] for g in SEEN_FAMILIES},
            "auc_unseen_generator": aucs["unseen_generator"],
            "auc_cross_domain": aucs["cross_domain"],
        }
    rng = np.random.default_rng(seed)
    for fam in HELD_OUT_FAMILIES:
        x, y = rows("test_unseen_families", fam)
        fold = np.zeros(len(y), bool)
        for cls in (0, 1):
            idx = np.flatnonzero(y == cls)
            fold[rng.permutation(idx)[: len(idx) // 2]] = True
        a = _fit_auc(x[fold], y[fold], {"t": (x[~fold], y[~fold])})["t"]
        b = _fit_auc(x[~fold], y[~fold], {"t": (x[fold], y[fold])})["t"]
        result[fam] = {"auc": (a + b) / 2, "protocol": "2-fold CV in test_unseen_families"}
    sizes, modes, formats = set(), set(), set()
    for s in dd:
        for raw in dd[s].cast_column("image", _undecoded())["image"]:
            with Image.open(io.BytesIO(raw["bytes"])) as im:
                sizes.add(im.size)
                modes.add(im.mode)
                formats.add(im.format)
    book = {
        "sizes": sorted(sizes),
        "modes": sorted(modes),
        "formats": sorted(formats),
        "uniform": len(sizes) == len(modes) == len(formats) == 1,
    }
    return {
        "families": result,
        "bookkeeping": book,
        "all_near_one": all(v["auc"] > 0.98 for v in result.values()),
    }


def _undecoded() -> Any:
    import datasets

    return datasets.Image(decode=False)
