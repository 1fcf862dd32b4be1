"""Evaluation data: load a split through `datasets` and read its labels, forgery families and video ids.

Sources: a local imagefolder directory, a `save_to_disk` directory, parquet files, a Hub dataset repo id (the Hub
endpoint and offline mode come from `HF_ENDPOINT` / `HF_HUB_OFFLINE` / `HF_DATASETS_OFFLINE` as usual), or an
already loaded `Dataset` / `DatasetDict`. Labels are mapped by name to `0 = real, 1 = fake` with the same
synonyms as model heads (`r2m_hf.heads.label_kind`).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..errors import DatasetError
from ..heads import FAKE_NAMES, REAL_NAMES, label_kind

# Evaluation data or settings cannot be used (missing split or column, labels that do not say fake/real).
EvaluationError = DatasetError


VIDEO_COLUMNS = ("video_id", "video")
IMAGE_COLUMN_NAMES = ("image", "img", "images", "frame")


@dataclass
class EvaluationData:
    """One split ready for scoring.

    Attributes:
        dataset (`datasets.Dataset`): the rows, possibly subsampled.
        name (`str`): where it came from (path or repo id).
        split (`str`): the split used.
        image_column (`str`): column holding the images.
        labels (`np.ndarray`): int64, 0 = real, 1 = fake.
        families (`list[str | None] | None`): forgery family of each row, None where unset.
        video_ids (`list[str] | None`): video of each row.
        label_mapping (`dict[str, int]`): raw label value (as text) → 0/1.
        notes (`list[str]`): assumptions made (e.g. integer labels taken as 0 = real / 1 = fake).
        unreadable (`list[str]`): images left out because they cannot be decoded (`skip_unreadable=True`).
        pixel_cache (`dict | None`): processed pixel values kept per image-processor configuration (see
            `runner.pixel_values`); `None` streams the images batch by batch instead.
    """

    dataset: object
    name: str
    split: str
    image_column: str
    labels: np.ndarray
    families: list | None = None
    video_ids: list | None = None
    label_mapping: dict = field(default_factory=dict)
    notes: list = field(default_factory=list)
    pixel_cache: dict | None = field(default=None, repr=False)
    unreadable: list = field(default_factory=list)

    def __len__(self) -> int:
        return int(self.labels.size)


def load_evaluation_data(
    dataset,
    *,
    split: str = "test",
    label_column: str = "label",
    family_column: str | None = None,
    video_column: str | None = None,
    image_column: str | None = None,
    max_samples: int | None = None,
    seed: int = 0,
    cache_pixels: bool = False,
    skip_unreadable: bool = False,
) -> EvaluationData:
    """Load one split of an evaluation dataset and map its labels by name to 0 = real / 1 = fake.

    Args:
        dataset (`str | os.PathLike | datasets.Dataset | datasets.DatasetDict`): imagefolder, `save_to_disk` or
            parquet directory, a parquet file, a Hub dataset repo id, or a loaded dataset.
        split (`str`): split to evaluate; an error lists the available ones when it is missing.
        label_column (`str`): label column; for an imagefolder with a `metadata.csv` (where `datasets` infers no
            labels) the class folder name of each image is used instead.
        family_column (`str`, *optional*): forgery-family column; defaults to `family` when present.
        video_column (`str`, *optional*): video-id column; defaults to `video_id` or `video` when present.
        image_column (`str`, *optional*): image column; defaults to the first `Image` feature.
        max_samples (`int`, *optional*): evaluate a seeded random subset of this many rows.
        seed (`int`): seed of that subset.
        cache_pixels (`bool`): keep the processed pixels of the split in memory once computed (for scoring many
            models on the same split; costs `N × C × H × W` floats per processor configuration).
        skip_unreadable (`bool`): leave out images that cannot be decoded (corrupt, truncated, not an image, over
            PIL's decompression-bomb limit) and say so in `notes`; by default they are an error naming them.

    Returns:
        `EvaluationData`: the split, its 0/1 labels, families and video ids.
    """
    ds, name, split_used = _load_split(dataset, split)
    if max_samples is not None and max_samples < len(ds):
        if max_samples < 1:
            raise EvaluationError(f"max_samples must be >= 1, got {max_samples}")
        rng = np.random.default_rng(seed)
        ds = ds.select(np.sort(rng.choice(len(ds), size=max_samples, replace=False)).tolist())
    if len(ds) == 0:
        raise EvaluationError(f"dataset {name!r} split {split_used!r} has no rows; pick another split")
    image_column = _image_column(ds, name, image_column)
    bad_rows, bad_names = _unreadable_rows(ds, image_column)
    if bad_rows and not skip_unreadable:
        raise EvaluationError(
            f"dataset {name}: {len(bad_rows)} of {len(ds)} images cannot be read ({_first(bad_names)}): "
            "fix or remove them, or pass --skip-unreadable"
        )
    if bad_rows:
        if len(bad_rows) == len(ds):
            raise EvaluationError(f"dataset {name}: none of its {len(ds)} images can be read ({_first(bad_names)})")
        bad = set(bad_rows)
        ds = ds.select([i for i in range(len(ds)) if i not in bad])
    labels, mapping, notes = _labels(ds, name, label_column, image_column)

    if family_column is None and "family" in ds.column_names:
        family_column = "family"
    families = _text_column(ds, name, family_column) if family_column else None
    if video_column is None:
        video_column = next((c for c in VIDEO_COLUMNS if c in ds.column_names), None)
    video_ids = _text_column(ds, name, video_column) if video_column else None
    if video_ids is not None and any(v is None for v in video_ids):
        raise EvaluationError(
            f"dataset {name!r}: column {video_column!r} has empty video ids; fill them or drop the column"
        )
    if bad_rows:
        notes.append(f"skipped {len(bad_rows)} unreadable images ({_first(bad_names)})")
    cache = {} if cache_pixels else None
    return EvaluationData(
        ds, name, split_used, image_column, labels, families, video_ids, mapping, notes, cache, bad_names
    )


def _first(names: list, n: int = 3) -> str:
    return ", ".join(names[:n]) + ("…" if len(names) > n else "")


def _unreadable_rows(ds, image_column: str) -> tuple[list[int], list[str]]:
    """Rows whose image cannot be decoded, and a short name for each (file name, or ``row i``)."""
    import datasets

    if isinstance(ds.features.get(image_column), datasets.Image):
        values = ds.cast_column(image_column, datasets.Image(decode=False))[image_column]
    else:
        values = ds[image_column]
    rows, names = [], []
    for i, value in enumerate(values):
        if isinstance(value, dict):  # an undecoded Image feature
            path, data = value.get("path"), value.get("bytes")
        else:
            path = value if isinstance(value, (str, os.PathLike)) else None
            data = value if isinstance(value, (bytes, bytearray)) else None
        if path is None and data is None:
            continue  # an already decoded image (or None, which the processor reports)
        if not _readable(data if data is not None else path):
            rows.append(i)
            names.append("/".join(Path(os.fspath(path)).parts[-2:]) if path else f"row {i}")
    return rows, names


def _readable(source) -> bool:
    """Whether PIL can open, verify and decode `source` (bytes or a path); decompression bombs count as unreadable."""
    import io
    import warnings

    from PIL import Image, UnidentifiedImageError

    errors = (
        UnidentifiedImageError, OSError, SyntaxError, ValueError,
        Image.DecompressionBombError, Image.DecompressionBombWarning,
    )  # fmt: skip

    def opened():
        return Image.open(io.BytesIO(source) if isinstance(source, (bytes, bytearray)) else source)

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with opened() as image:
                image.verify()  # checksums (PNG); a no-op for JPEG, so decode too: that catches truncation
            with opened() as image:
                image.load()
    except errors:
        return False
    return True


def _load_split(dataset, split: str):
    import datasets

    if isinstance(dataset, (datasets.Dataset, datasets.DatasetDict)):
        return _select_split(dataset, split, "<in-memory dataset>")
    name = os.fspath(dataset)
    path = Path(name).expanduser()
    if path.is_file():
        if path.suffix != ".parquet":
            raise EvaluationError(f"dataset file {name!r} is not parquet; give a parquet file or a dataset folder")
        # A single file is the split asked for.
        ds = _call_datasets(name, datasets.load_dataset, "parquet", data_files={split: str(path)}, split=split)
        return ds, name, split
    if path.is_dir():
        if (path / "dataset_dict.json").is_file() or (path / "state.json").is_file():
            return _select_split(_call_datasets(name, datasets.load_from_disk, str(path)), split, name)
        builder = "parquet" if next(path.rglob("*.parquet"), None) is not None else "imagefolder"
        return _select_split(_call_datasets(name, datasets.load_dataset, builder, data_dir=str(path)), split, name)
    if path.is_absolute() or name.startswith((".", "~")) or name.count("/") > 1:
        raise EvaluationError(f"dataset path {name!r} does not exist; give an existing folder or a Hub repo id")
    try:
        ds = datasets.load_dataset(name, split=split)
    except ValueError as err:
        if "split" not in str(err).lower():
            raise EvaluationError(f"cannot load dataset {name!r}: {_one_line(err)}") from err
        raise EvaluationError(f"dataset {name!r} has no split {split!r} ({_one_line(err)}); pass split=") from err
    except Exception as err:  # network, auth, missing repo: all say the same thing to the user
        raise EvaluationError(
            f"cannot load dataset {name!r} from the Hub: {_one_line(err)}; check the repo id, HF_ENDPOINT, "
            "HF_TOKEN and HF_HUB_OFFLINE"
        ) from err
    return ds, name, split


def _call_datasets(name: str, fn, *args, **kwargs):
    try:
        return fn(*args, **kwargs)
    except Exception as err:
        raise EvaluationError(f"cannot load dataset {name!r}: {_one_line(err)}") from err


def _select_split(ds, split: str, name: str):
    import datasets

    if isinstance(ds, datasets.DatasetDict):
        if split not in ds:
            raise EvaluationError(
                f"dataset {name!r} has no split {split!r}; available splits: {', '.join(sorted(ds))}; pass split="
            )
        return ds[split], name, split
    # A bare Dataset is one split already: use it whole and say which it is.
    return ds, name, str(ds.split) if ds.split is not None else split


def _one_line(err: BaseException) -> str:
    text = " ".join(str(err).split())
    return text[:300] or type(err).__name__


def _image_column(ds, name: str, image_column: str | None) -> str:
    import datasets

    if image_column is not None:
        if image_column not in ds.column_names:
            raise EvaluationError(
                f"dataset {name!r} has no image column {image_column!r}; columns: {', '.join(ds.column_names)}"
            )
        return image_column
    found = [c for c, f in ds.features.items() if isinstance(f, datasets.Image)]
    found += [c for c in IMAGE_COLUMN_NAMES if c in ds.column_names and c not in found]
    if not found:
        raise EvaluationError(
            f"dataset {name!r} has no Image column; columns: {', '.join(ds.column_names)}; pass image_column="
        )
    return found[0]


def _map_names(values, name: str, column: str) -> tuple[np.ndarray, dict]:
    """Map raw label values (names) to 0/1, naming the first value that says neither fake nor real."""
    mapping = {}
    for value in dict.fromkeys(values):
        kind = label_kind(value) if isinstance(value, str) else None
        if kind is None:
            raise EvaluationError(
                f"dataset {name!r} column {column!r}: label {value!r} is neither a fake name ({'/'.join(FAKE_NAMES)}) "
                f"nor a real one ({'/'.join(REAL_NAMES)}); rename it or relabel the data"
            )
        mapping[str(value)] = 1 if kind == "fake" else 0
    return np.array([mapping[str(v)] for v in values], dtype=np.int64), mapping


def _labels(ds, name: str, column: str, image_column: str) -> tuple[np.ndarray, dict, list]:
    import datasets

    if column not in ds.column_names:
        folders = _image_folders(ds, image_column)
        if folders is None:
            raise EvaluationError(
                f"dataset {name!r} has no label column {column!r}; columns: "
                f"{', '.join(ds.column_names)}; pass label_column="
            )
        labels, mapping = _map_names(folders, name, f"{image_column} folder")
        return labels, mapping, [f"labels read from the class folder of each image (no {column!r} column)"]

    feature = ds.features[column]
    values = list(ds[column])
    if isinstance(feature, datasets.ClassLabel):
        if any(v is None or v < 0 for v in values):
            raise EvaluationError(f"dataset {name!r} column {column!r} has unlabeled rows (-1); drop them first")
        labels, mapping = _map_names([feature.names[v] for v in values], name, column)
        return labels, mapping, []
    dtype = getattr(feature, "dtype", None)
    if isinstance(feature, datasets.Value) and (dtype == "bool" or dtype.startswith(("int", "uint"))):
        present = {int(v) for v in values if v is not None}
        if any(v is None for v in values) or not present <= {0, 1}:
            raise EvaluationError(
                f"dataset {name!r} column {column!r}: integer labels without class names must "
                f"be 0 (real) or 1 (fake), got {sorted(present)[:5]}; cast it to ClassLabel"
            )
        note = f"column {column!r} has integer labels without names: assumed 0 = real, 1 = fake"
        return np.asarray(values, dtype=np.int64), {"0": 0, "1": 1}, [note]
    if isinstance(feature, datasets.Value) and dtype in ("string", "large_string"):
        labels, mapping = _map_names(values, name, column)
        return labels, mapping, []
    raise EvaluationError(
        f"dataset {name!r} column {column!r} has type {feature}; labels must be ClassLabel, integer 0/1 or names"
    )


def _image_folders(ds, image_column: str) -> list | None:
    """Parent folder name of each image file, when the images are local files (imagefolder with metadata)."""
    import datasets

    if not isinstance(ds.features.get(image_column), datasets.Image):
        return None
    undecoded = ds.cast_column(image_column, datasets.Image(decode=False))[image_column]
    paths = [(row or {}).get("path") for row in undecoded]
    if not paths or any(not p for p in paths):
        return None
    return [Path(p).parent.name for p in paths]


def _text_column(ds, name: str, column: str) -> list:
    import datasets

    if column not in ds.column_names:
        raise EvaluationError(f"dataset {name!r} has no column {column!r}; columns: {', '.join(ds.column_names)}")
    feature = ds.features[column]
    values = list(ds[column])
    if isinstance(feature, datasets.ClassLabel):
        return [feature.names[v] if v is not None and v >= 0 else None for v in values]
    return [None if v is None or str(v).strip() == "" else str(v) for v in values]
