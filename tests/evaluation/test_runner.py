"""End to end: a tiny hand-set ViT scored on imagefolder and Arrow datasets through `evaluate_model`."""

from __future__ import annotations

import json

import datasets
import numpy as np
import pytest
import torch
from PIL import Image
from sklearn.metrics import roc_auc_score
from transformers import ViTImageProcessor

from r2m_hf.errors import LabelError
from r2m_hf.evaluation import EvaluationError, evaluate_model
from r2m_hf.evaluation.data import load_evaluation_data

from .tiny_vit import hand_set_vit as _vit

torch.set_num_threads(1)

# Brightness (0-255) of each test image: fakes are brighter; family "fr" overlaps the reals a little.
REAL = [20, 40, 60, 80, 100, 120, 140, 150]
FS = [170, 190, 210, 230, 240, 250]
FR = [90, 130, 160, 180, 200, 220]


def _image(value: int, seed: int) -> Image.Image:
    noise = np.random.default_rng(seed).integers(-3, 4, (32, 32, 3))
    return Image.fromarray(np.clip(value + noise, 0, 255).astype(np.uint8))


@pytest.fixture(autouse=True)
def _datasets_cache(tmp_path, monkeypatch):
    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", str(tmp_path / "hf_datasets_cache"))


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    path = tmp_path_factory.mktemp("model")
    _vit().save_pretrained(path)
    ViTImageProcessor(size={"height": 32, "width": 32}).save_pretrained(path)
    return path


@pytest.fixture(scope="module")
def imagefolder(tmp_path_factory):
    """test/{real,fake}/ with metadata.csv giving families, and a one-image train split."""
    root = tmp_path_factory.mktemp("imagefolder")
    rows = [("real", "real", v) for v in REAL] + [("fake", "fs", v) for v in FS] + [("fake", "fr", v) for v in FR]
    lines = ["file_name,family"]
    for i, (folder, family, value) in enumerate(rows):
        (root / "test" / folder).mkdir(parents=True, exist_ok=True)
        _image(value, i).save(root / "test" / folder / f"{i:02d}.png")
        lines.append(f"{folder}/{i:02d}.png,{family}")
    (root / "test" / "metadata.csv").write_text("\n".join(lines) + "\n")
    (root / "train" / "real").mkdir(parents=True)
    _image(30, 100).save(root / "train" / "real" / "0.png")
    return root


@pytest.fixture(scope="module")
def plain_folder(tmp_path_factory):
    """test/{real,fake}/ without metadata: imagefolder infers the labels from the folders."""
    root = tmp_path_factory.mktemp("plain")
    for i, (folder, value) in enumerate([("real", 30), ("real", 50), ("fake", 200), ("fake", 220)]):
        (root / "test" / folder).mkdir(parents=True, exist_ok=True)
        _image(value, 100 + i).save(root / "test" / folder / f"{i}.png")
    return root


def _direct_scores(model, values, seeds) -> np.ndarray:
    processor = ViTImageProcessor(size={"height": 32, "width": 32})
    pixels = processor(images=[_image(v, s) for v, s in zip(values, seeds)], return_tensors="pt")["pixel_values"]
    with torch.no_grad():
        return model(pixel_values=pixels).logits.softmax(-1)[:, model.config.label2id["fake"]].numpy()


def test_imagefolder_per_family(model_dir, imagefolder, tmp_path):
    result = evaluate_model(str(model_dir), str(imagefolder), batch_size=8, device="cpu", progress=False)
    assert result.n_samples == 20 and result.split == "test" and result.fake_index == 1
    assert set(result.families) == {"fs", "fr"}  # "real" holds no fakes: it is the shared real pool

    # Rows come in file order (00..19) = REAL, FS, FR; labels come from the folder names.
    values = REAL + FS + FR
    expected = _direct_scores(_vit(), values, range(20))
    np.testing.assert_allclose(result.scores, expected, rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(result.labels, [0] * 8 + [1] * 12)

    reals = slice(0, 8)
    for family, rows in (("fs", slice(8, 14)), ("fr", slice(14, 20))):
        s = np.r_[result.scores[reals], result.scores[rows]]
        y = np.r_[np.zeros(8), np.ones(6)]
        assert result.families[family]["auc"] == pytest.approx(roc_auc_score(y, s))
        assert result.families[family]["n"] == 14
    assert result.families["fs"]["auc"] == 1.0
    assert result.families["fr"]["auc"] < 1.0
    assert result.mean["auc"] == pytest.approx((result.families["fs"]["auc"] + result.families["fr"]["auc"]) / 2)
    assert result.overall["auc"] == pytest.approx(roc_auc_score(result.labels, result.scores))

    table = result.to_markdown()
    assert "| fs | 1.0000 |" in table and "**mean**" in table and "all (pooled)" in table
    saved = json.loads(result.save(tmp_path / "out" / "eval.json").read_text())
    assert saved["families"]["fs"]["auc"] == 1.0 and saved["n_samples"] == 20 and "mean" in saved


def test_labels_are_mapped_by_name_and_flipped_heads_agree(model_dir, plain_folder, tmp_path):
    # Without metadata imagefolder infers ClassLabel(names=["fake", "real"]): fake = 0 there, 1 for us.
    data = load_evaluation_data(str(plain_folder))
    assert data.dataset.features["label"].names == ["fake", "real"]
    assert list(data.dataset["label"]) == [0, 0, 1, 1]
    np.testing.assert_array_equal(data.labels, [1, 1, 0, 0])

    flipped_dir = tmp_path / "flipped"
    _vit(fake_first=True).save_pretrained(flipped_dir)
    ViTImageProcessor(size={"height": 32, "width": 32}).save_pretrained(flipped_dir)
    a = evaluate_model(str(model_dir), str(plain_folder), device="cpu", progress=False)
    b = evaluate_model(str(flipped_dir), str(plain_folder), device="cpu", progress=False)
    assert (a.fake_index, b.fake_index) == (1, 0)
    np.testing.assert_allclose(a.scores, b.scores, rtol=1e-6)
    assert a.overall["auc"] == b.overall["auc"] == 1.0
    assert not a.families and a.mean["auc"] == a.overall["auc"]


def test_arrow_dataset_with_videos(model_dir, tmp_path):
    # Three videos per class, two frames each, string labels in mixed spellings.
    values = [30, 40, 60, 70, 90, 100, 150, 160, 200, 210, 240, 250]
    labels = ["Real"] * 6 + ["Deepfake"] * 6
    videos = ["r0", "r0", "r1", "r1", "r2", "r2", "f0", "f0", "f1", "f1", "f2", "f2"]
    ds = datasets.Dataset.from_dict(
        {
            "image": [_image(v, i) for i, v in enumerate(values)],
            "label": labels,
            "family": [None] * 6 + ["fs"] * 6,
            "video_id": videos,
        }
    ).cast_column("image", datasets.Image())
    datasets.DatasetDict({"test": ds}).save_to_disk(tmp_path / "arrow")

    result = evaluate_model(str(model_dir), str(tmp_path / "arrow"), device="cpu", progress=False)
    assert result.n_samples == 12
    np.testing.assert_allclose(result.scores, _direct_scores(_vit(), values, range(12)), rtol=1e-5, atol=1e-6)
    assert result.overall["video_auc"] == 1.0 and result.overall["n_videos"] == 6
    assert result.families["fs"]["n"] == 12 and result.families["fs"]["n_videos"] == 6
    assert "Video AUC" in result.to_markdown()

    # A loaded model + processor pair, a subset, and the same data given in memory.
    pair = (_vit(), ViTImageProcessor(size={"height": 32, "width": 32}))
    sub = evaluate_model(pair, datasets.DatasetDict({"test": ds}), max_samples=5, batch_size=2, progress=False)
    assert sub.n_samples == 5 and sub.scores.shape == (5,)


def test_user_errors(imagefolder, plain_folder):
    with pytest.raises(EvaluationError, match="no split 'validation'; available splits: test, train"):
        load_evaluation_data(str(imagefolder), split="validation")

    bad = datasets.Dataset.from_dict({"image": [_image(10, 0)] * 2, "label": ["real", "morph"]})
    with pytest.raises(EvaluationError, match="label 'morph' is neither"):
        load_evaluation_data(bad.cast_column("image", datasets.Image()))

    ints = datasets.Dataset.from_dict({"image": [_image(10, 0)] * 2, "label": [0, 1]})
    data = load_evaluation_data(ints.cast_column("image", datasets.Image()))
    assert any("assumed 0 = real, 1 = fake" in note for note in data.notes)
    with pytest.raises(EvaluationError, match=r"must be 0 \(real\) or 1 \(fake\), got \[0, 2\]"):
        load_evaluation_data(
            datasets.Dataset.from_dict({"image": [_image(10, 0)] * 2, "label": [0, 2]}).cast_column(
                "image", datasets.Image()
            )
        )

    anonymous = _vit()
    anonymous.config.id2label = {0: "LABEL_0", 1: "LABEL_1"}
    processor = ViTImageProcessor(size={"height": 32, "width": 32})
    with pytest.raises(LabelError, match="pass fake_label="):
        evaluate_model((anonymous, processor), str(plain_folder), progress=False)
    result = evaluate_model((anonymous, processor), str(plain_folder), fake_label="label_1", progress=False)
    assert result.overall["auc"] == 1.0


def test_classlabel_names_decide_not_indices():
    features = datasets.Features(
        {
            "image": datasets.Image(),
            "label": datasets.ClassLabel(names=["Real", "AI"]),
            "video": datasets.Value("string"),
        }
    )
    ds = datasets.Dataset.from_dict(
        {"image": [_image(10, 0)] * 3, "label": [1, 0, 1], "video": ["v1", "v2", "v1"]}, features=features
    )
    data = load_evaluation_data(ds)
    np.testing.assert_array_equal(data.labels, [1, 0, 1])
    assert data.label_mapping == {"AI": 1, "Real": 0} and data.video_ids == ["v1", "v2", "v1"]
    flipped = ds.cast_column("label", datasets.ClassLabel(names=["FAKE", "REAL"]))
    np.testing.assert_array_equal(load_evaluation_data(flipped).labels, [0, 1, 0])


def test_loaded_split_with_kept_pixels_scores_like_streaming(model_dir, imagefolder):
    from r2m_hf.evaluation import load_classifier, pixel_values

    streamed = evaluate_model(str(model_dir), str(imagefolder), batch_size=8, progress=False)
    data = load_evaluation_data(str(imagefolder), cache_pixels=True)
    model = load_classifier(str(model_dir))[:2]  # (model, processor)
    first = evaluate_model(model, data, batch_size=8, progress=False)
    assert len(data.pixel_cache) == 1  # processed once ...
    (kept,) = data.pixel_cache.values()
    again = evaluate_model(model, data, batch_size=8, progress=False)
    assert next(iter(data.pixel_cache.values())) is kept  # ... and reused
    np.testing.assert_array_equal(first.scores, streamed.scores)
    np.testing.assert_array_equal(again.scores, streamed.scores)
    assert first.families == streamed.families and first.mean == streamed.mean

    other = ViTImageProcessor(size={"height": 32, "width": 32}, image_mean=[0.4, 0.4, 0.4])
    assert not torch.equal(pixel_values(data, other), kept)  # another processor configuration: its own entry
    assert len(data.pixel_cache) == 2
    assert load_evaluation_data(str(imagefolder)).pixel_cache is None  # streaming unless asked
