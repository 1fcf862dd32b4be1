"""Fixtures of the tuner's tests: a validation split whose labels are planted by one merge of the tiny zoo.

``planted``: 96 seeded noise images labelled fake exactly when the task-arithmetic merge of the zoo at λ* = 0.8
(merged to a folder by ``r2m_hf.merge.merge`` and scored by transformers directly, not by the tuner's code) gives
them a fake score above its median. That merge has AUC 1 on the split by construction; λ far from λ* and other
methods rank the images differently. Rows alternate between families ``a`` and ``b``; the DatasetDict has a
``validation`` and a ``test`` split, saved to disk.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

LAMBDA_STAR = 0.8
ROWS = 96


@dataclass
class Planted:
    """The planted split and what it was planted with."""

    data: Path
    recipe: dict
    planted_model: Path
    labels: np.ndarray
    images: list

    def write_recipe(self, folder: Path, tune: dict | None = None, name: str = "recipe.yaml", **changes) -> Path:
        """Write the zoo's recipe (with an optional ``tune:`` section) into `folder` and return its path."""
        data = {**self.recipe, **changes}
        if tune is not None:
            data["tune"] = tune
        path = Path(folder) / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(yaml.safe_dump(data, sort_keys=False))
        return path


def images(n: int = ROWS, seed: int = 0) -> list:
    from PIL import Image

    rng = np.random.default_rng(seed)
    return [Image.fromarray(rng.integers(0, 256, (32, 32, 3)).astype(np.uint8)) for _ in range(n)]


def save_split(folder: Path, pictures: list, labels, families=None) -> Path:
    """A DatasetDict (validation and test: the same rows) with ClassLabel real/fake labels, saved to `folder`."""
    import datasets

    columns = {"image": pictures, "label": [int(v) for v in labels]}
    if families is not None:
        columns["family"] = list(families)
    split = datasets.Dataset.from_dict(columns).cast_column("image", datasets.Image())
    split = split.cast_column("label", datasets.ClassLabel(names=["real", "fake"]))
    datasets.DatasetDict({"validation": split, "test": split}).save_to_disk(str(folder))
    return folder


@pytest.fixture(scope="session")
def planted(zoo, tmp_path_factory) -> Planted:
    from transformers import AutoImageProcessor, AutoModelForImageClassification

    from r2m_hf.merge import merge

    root = tmp_path_factory.mktemp("planted")
    recipe = {
        "merge_method": "task_arithmetic",
        "base_model": str(zoo.base),
        "models": [{"model": str(p), "name": n} for p, n in zip(zoo.specialists, zoo.names)],
    }
    config = root / "planted.yaml"
    config.write_text(yaml.safe_dump({**recipe, "parameters": {"lambda": LAMBDA_STAR}}))
    folder = merge(config, root / "planted-model", progress=False).output_dir
    model = AutoModelForImageClassification.from_pretrained(str(folder)).eval()
    processor = AutoImageProcessor.from_pretrained(str(folder))
    pictures = images()
    with torch.inference_mode():
        pixels = processor(images=pictures, return_tensors="pt")["pixel_values"]
        scores = model(pixel_values=pixels).logits.softmax(-1)[:, 1].numpy()
    labels = (scores > np.median(scores)).astype(np.int64)
    data = save_split(root / "data", pictures, labels, ["a" if i % 2 else "b" for i in range(ROWS)])
    return Planted(data=data, recipe=recipe, planted_model=folder, labels=labels, images=pictures)
