"""`Detector`: loading, face crops, batching, videos, thresholds; each bad input of the issue as a one-line note."""

from __future__ import annotations

import json
import shutil
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from r2m_hf.detector import Detector, Prediction
from r2m_hf.errors import ConfigError, LabelError, SourceError

from .conftest import astronaut, requires_mtcnn


def png_header_bomb(path, width: int, height: int):
    """A tiny PNG file declaring a huge 1-bit image (PIL refuses it from the header, before decoding)."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0)
    rows = zlib.compress(b"\x00" * (1 + width // 8) * 8)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", rows) + chunk(b"IEND", b""))
    return path


@pytest.fixture(scope="module")
def plain(model_dir):
    """The tiny model on inputs taken as crops already."""
    return Detector.from_pretrained(model_dir, faces="none", device="cpu")


@requires_mtcnn
def test_an_image_is_scored_on_its_largest_face_crop(model_dir, media, plain):
    detector = Detector.from_pretrained(model_dir, device="cpu")
    assert detector.face_detector.name == "mtcnn" and detector.crop.size == 32 and detector.fake_index == 1
    result = detector.predict(media.face)
    assert isinstance(result, Prediction) and result.kind == "image" and result.error is None
    assert result.threshold == 0.5 and result.threshold_source == "default"
    assert result.label == ("fake" if result.fake_probability >= 0.5 else "real")
    (face,) = result.faces
    assert face.fake_probability == result.fake_probability and len(face.landmarks) == 5
    crop = detector.crop.crop(Image.open(media.face).convert("RGB"), face)
    assert plain.predict(crop).fake_probability == pytest.approx(result.fake_probability, abs=1e-6)


def test_the_stock_pipeline_agrees_on_a_crop(model_dir, plain):
    from transformers import pipeline

    crop = astronaut().crop((160, 40, 290, 190))
    classify = pipeline("image-classification", model=str(model_dir), device="cpu")
    scores = {row["label"]: row["score"] for row in classify(crop)}
    assert scores["fake"] == pytest.approx(plain.predict(crop).fake_probability, abs=1e-5)


def test_fake_first_labels_are_read_from_id2label(fake_first_dir, model_dir):
    from transformers import AutoModelForImageClassification

    detector = Detector.from_pretrained(fake_first_dir, faces="none", device="cpu")
    assert detector.fake_index == 0
    image = astronaut().resize((64, 64))
    model = AutoModelForImageClassification.from_pretrained(str(fake_first_dir))
    pixels = detector.image_processor(images=[image], return_tensors="pt")["pixel_values"]
    expected = model(pixel_values=pixels).logits.softmax(-1)[0, 0].item()
    assert detector.predict(image).fake_probability == pytest.approx(expected, abs=1e-6)


def test_batching_does_not_change_scores(model_dir):
    images = [astronaut().rotate(angle).resize((48, 48)) for angle in range(0, 50, 10)]
    one = Detector.from_pretrained(model_dir, faces="none", batch_size=1, device="cpu").predict(images)
    many = Detector.from_pretrained(model_dir, faces="none", batch_size=16, device="cpu").predict(images)
    assert [p.fake_probability for p in one] == pytest.approx([p.fake_probability for p in many], abs=1e-6)
    assert len({round(p.fake_probability, 6) for p in one}) > 1


@requires_mtcnn
def test_all_faces_scores_each_face_and_keeps_the_highest(model_dir, tmp_path):
    pair = Image.new("RGB", (1024, 512))
    pair.paste(astronaut(), (0, 0))
    pair.paste(astronaut().transpose(Image.Transpose.FLIP_LEFT_RIGHT), (512, 0))
    detector = Detector.from_pretrained(model_dir, all_faces=True, device="cpu")
    result = detector.predict(pair)
    assert len(result.faces) == 2
    assert result.fake_probability == max(face.fake_probability for face in result.faces)


@requires_mtcnn
def test_deepfakebench_preset_and_aligned_crops(model_dir, media):
    for options in ({"faces": "deepfakebench"}, {"align": True}):
        detector = Detector.from_pretrained(model_dir, device="cpu", **options)
        assert detector.crop.align and detector.predict(media.face).ok


def test_haar_detector_can_be_chosen(model_dir, media):
    detector = Detector.from_pretrained(model_dir, face_detector="haar", device="cpu")
    result = detector.predict(media.face)
    assert result.ok and result.faces[0].landmarks is None
    with pytest.raises(ConfigError, match="landmarks"):
        Detector.from_pretrained(model_dir, face_detector="haar", align=True)


@requires_mtcnn
def test_videos_are_sampled_scored_and_aggregated(model_dir, media):
    detector = Detector.from_pretrained(model_dir, frames=4, device="cpu")
    result = detector.predict(media.face_video)
    assert result.kind == "video" and result.error is None and result.faces == []
    assert len(result.frames) == 4 and all(f.fake_probability is not None and f.faces for f in result.frames)
    probabilities = [f.fake_probability for f in result.frames]
    assert result.fake_probability == pytest.approx(np.mean(probabilities))
    empty = detector.predict(media.no_face_video)
    assert empty.fake_probability is None and empty.label is None
    assert empty.error == "no face found in any of the 4 sampled frames"
    assert all(f.note == "no face found (mtcnn)" for f in empty.frames)


def test_a_short_video_with_faces_none_scores_every_frame_with_a_note(model_dir, media):
    detector = Detector.from_pretrained(model_dir, faces="none", frames=64, aggregate="max", device="cpu")
    result = detector.predict(media.no_face_video)
    assert len(result.frames) == 20 and result.notes == ["20 of 64 frames sampled (the video is shorter)"]
    assert result.fake_probability == max(f.fake_probability for f in result.frames)
    assert result.to_dict()["notes"] == result.notes


def test_a_photo_without_a_face_is_reported_not_scored_whole(model_dir, media):
    result = Detector.from_pretrained(model_dir, device="cpu").predict(media.no_face)
    assert result.fake_probability is None and result.label is None and result.faces == []
    assert result.error.startswith("no face found") and "faces='none'" in result.error


def test_every_bad_input_is_a_one_line_note_and_the_run_goes_on(plain, media, tmp_path):
    folder = tmp_path / "inputs"
    folder.mkdir()
    shutil.copy(media.face, folder / "good.jpg")
    data = media.face.read_bytes()
    (folder / "truncated.jpg").write_bytes(data[: len(data) // 3])
    (folder / "corrupt.png").write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(range(256)) * 4)
    png_header_bomb(folder / "bomb.png", 30000, 30000)  # over twice PIL's limit: an error in PIL
    png_header_bomb(folder / "big.png", 12000, 12000)  # over the limit, under twice it: only a warning in PIL
    (folder / "empty.mp4").write_bytes(b"")
    (folder / "fake.avi").write_text("not a video")
    (folder / "readme.txt").write_text("notes")
    (folder / "empty").mkdir()
    results = {Path(p.path).name: p for p in plain.predict([folder, folder / "readme.txt", tmp_path / "missing.jpg"])}
    expected = {
        "truncated.jpg": "cannot read image",
        "corrupt.png": "not a readable image",
        "bomb.png": "decompression bomb",
        "big.png": "decompression bomb",
        "empty.mp4": "empty file (0 bytes)",
        "fake.avi": "not a readable video",
        "readme.txt": "not an image or video file",
        "missing.jpg": "no such file or folder",
        "inputs": "skipped 1 files that are not images or videos: readme.txt",
    }
    for name, message in expected.items():
        assert message in results[name].error, (name, results[name].error)
        assert "\n" not in results[name].error and results[name].fake_probability is None
    assert results["good.jpg"].ok and results["good.jpg"].error is None
    assert results["readme.txt"].kind == "other" and results["empty.mp4"].kind == "video"
    nothing = plain.predict(folder / "empty")
    assert [p.error for p in nothing] == ["no image or video files in this folder"]


def test_threshold_sources(model_copy):
    config = json.loads((model_copy / "config.json").read_text())
    config["r2m_hf"] = {"threshold": {"value": 0.25, "method": "eer", "n_real": 10, "n_fake": 10}}
    (model_copy / "config.json").write_text(json.dumps(config))
    calibrated = Detector.from_pretrained(model_copy, faces="none", device="cpu")
    assert (calibrated.threshold, calibrated.threshold_source) == (0.25, "calibrated")
    assert calibrated.calibration.method == "eer"
    user = Detector.from_pretrained(model_copy, faces="none", threshold=0.9, device="cpu")
    assert (user.threshold, user.threshold_source) == (0.9, "user")
    result = user.predict(astronaut().resize((32, 32)))
    assert result.threshold == 0.9 and result.label == ("fake" if result.fake_probability >= 0.9 else "real")


def test_bad_options_and_models_are_one_line_errors(model_dir, model_copy, tmp_path):
    for threshold in (-0.1, 1.5, float("nan"), "0.5", True):
        with pytest.raises(ConfigError, match=r"threshold must be a number in \[0, 1\]"):
            Detector.from_pretrained(model_dir, threshold=threshold)
    for options, message in (
        ({"faces": "maybe"}, "faces='maybe'"),
        ({"aggregate": "mode"}, "aggregate='mode'"),
        ({"frames": 0}, "frames must be a positive integer"),
        ({"batch_size": 2.5}, "batch_size must be a positive integer"),
    ):
        with pytest.raises(ConfigError, match=message):
            Detector.from_pretrained(model_dir, faces=options.pop("faces", "none"), **options)
    config = json.loads((model_copy / "config.json").read_text())
    config.update(id2label={"0": "cat", "1": "dog"}, label2id={"cat": 0, "dog": 1})
    (model_copy / "config.json").write_text(json.dumps(config))
    with pytest.raises(LabelError, match="cannot tell the fake class") as caught:
        Detector.from_pretrained(model_copy, faces="none")
    assert "\n" not in str(caught.value)
    assert Detector.from_pretrained(model_copy, faces="none", fake_label="dog").fake_index == 1
    with pytest.raises(SourceError, match="does not exist"):
        Detector.from_pretrained(tmp_path / "no" / "such" / "model")
    (tmp_path / "broken").mkdir()
    with pytest.raises(SourceError, match="cannot load image classifier"):
        Detector.from_pretrained(tmp_path / "broken")
