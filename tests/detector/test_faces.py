"""Face detection on real photos that scikit-image ships, the crop policy, and the alignment math."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image, ImageOps

from r2m_hf.detector import CropPolicy, FaceBox, load_face_detector
from r2m_hf.detector.align import aligned_crop, similarity_transform, template
from r2m_hf.detector.boxes import nms, square
from r2m_hf.errors import ConfigError

from .conftest import astronaut, coffee, requires_mtcnn


def lfw_faces(count: int, start: int = 0) -> list[Image.Image]:
    """LFW crops (25×25, face filling the frame) enlarged and framed, so that a detector sees a whole head."""
    from skimage import data

    images = data.lfw_subset()[start : start + count]
    return [
        ImageOps.expand(Image.fromarray((a * 255).astype("uint8")).resize((100, 100)), 50, fill=128).convert("RGB")
        for a in images
    ]


@pytest.fixture(scope="module")
def mtcnn():
    return load_face_detector("mtcnn")


@requires_mtcnn
def test_mtcnn_finds_the_astronaut_with_landmarks_in_place(mtcnn):
    faces = mtcnn.detect(astronaut())
    assert len(faces) == 1
    face = faces[0]
    assert face.score > 0.99
    assert 160 < face.x0 < 200 and 240 < face.x1 < 290 and 40 < face.y0 < 80 and 150 < face.y1 < 190
    (lx, ly), (rx, ry), (nx, ny), (mlx, mly), (mrx, mry) = face.landmarks
    assert lx < nx < rx and mlx < mrx  # left/right as seen in the image
    assert max(ly, ry) < ny < min(mly, mry)  # eyes above the nose above the mouth
    assert all(face.x0 <= x <= face.x1 and face.y0 <= y <= face.y1 for x, y in face.landmarks)


@requires_mtcnn
def test_mtcnn_recall_on_lfw_and_no_false_positive(mtcnn):
    # measured on the whole subset: 99 of its 100 faces found, none of its 100 non-face patches flagged
    assert sum(bool(mtcnn.detect(image)) for image in lfw_faces(8)) >= 7
    assert not any(mtcnn.detect(image) for image in lfw_faces(4, start=100))
    assert mtcnn.detect(coffee()) == []


@requires_mtcnn
def test_mtcnn_finds_a_rotated_face_and_alignment_undoes_the_rotation(mtcnn):
    image = astronaut().rotate(25, resample=Image.Resampling.BICUBIC, expand=True)
    face = max(mtcnn.detect(image), key=lambda f: f.area)
    (lx, ly), (rx, ry) = face.landmarks[:2]
    assert ry < ly - 10  # the eye line is tilted
    crop = aligned_crop(image, face.landmarks, 112, margin=1.0)
    again = max(mtcnn.detect(ImageOps.expand(crop, 56)), key=lambda f: f.area)
    (lx, ly), (rx, ry) = again.landmarks[:2]
    assert abs(ly - ry) < 4  # level after alignment


def test_haar_finds_the_astronaut_and_not_the_coffee():
    haar = load_face_detector("haar")
    faces = haar.detect(astronaut())
    assert len(faces) == 1 and faces[0].landmarks is None
    assert 150 < faces[0].centre[0] < 300 and 60 < faces[0].centre[1] < 180
    assert haar.detect(coffee()) == []
    assert sum(bool(haar.detect(image)) for image in lfw_faces(8)) >= 5  # measured: 85 of 100


def test_auto_falls_back_to_haar_without_mtcnn(monkeypatch):
    import r2m_hf.detector.faces as faces

    monkeypatch.setattr(faces, "mtcnn_weights_dir", lambda: None)
    assert faces.load_face_detector("auto").name == "haar"
    for call in (
        lambda: faces.load_face_detector("mtcnn"),
        lambda: faces.load_face_detector("auto", need_landmarks=True),
    ):
        with pytest.raises(ConfigError, match="facenet-pytorch"):
            call()
    with pytest.raises(ConfigError, match="one of"):
        faces.load_face_detector("retinaface")


def test_similarity_transform_recovers_a_known_similarity():
    rng = np.random.default_rng(0)
    source = rng.uniform(0, 100, size=(5, 2))
    angle, scale, shift = 0.4, 1.7, np.array([12.0, -5.0])
    rotation = np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])
    target = scale * source @ rotation.T + shift
    matrix = similarity_transform(source, target)
    np.testing.assert_allclose(matrix[:, :2], scale * rotation, atol=1e-9)
    np.testing.assert_allclose(matrix[:, 2], shift, atol=1e-9)
    mirrored = target * np.array([-1.0, 1.0])  # a reflection is not a similarity: R stays a proper rotation
    assert np.linalg.det(similarity_transform(source, mirrored)[:, :2]) > 0


def test_template_margin_centres_and_shrinks_the_arcface_points():
    plain, wide = template(112, 1.0), template(256, 1.3)
    np.testing.assert_allclose(plain[0], [38.2946, 51.6963])
    centre = np.array([128.0, 128.0])
    np.testing.assert_allclose((wide - centre), (plain * 256 / 112 - centre) / 1.3, atol=1e-9)


def test_aligned_crop_puts_the_landmarks_on_the_template():
    marks = [(30.0, 40.0), (70.0, 40.0), (50.0, 60.0), (35.0, 80.0), (65.0, 80.0)]
    image = Image.new("RGB", (120, 120))
    for x, y in marks:
        image.putpixel((int(x), int(y)), (255, 255, 255))
    matrix = similarity_transform(np.array(marks), template(64, 1.3))
    mapped = np.array(marks) @ matrix[:, :2].T + matrix[:, 2]
    assert np.abs(mapped - template(64, 1.3)).max() < 3  # 5 points, 4 degrees of freedom: close, not exact
    assert aligned_crop(image, marks, 64).size == (64, 64)


def test_square_crop_is_1_3_times_the_box_and_padded_at_the_border():
    image = Image.new("RGB", (100, 100), (200, 10, 10))
    face = FaceBox(0, 0, 40, 20, 0.9)  # at the top-left corner, wider than tall
    policy = CropPolicy.build("auto", 52)
    crop = policy.crop(image, face)
    assert crop.size == (52, 52)  # side 1.3 × 40 = 52 around the centre (20, 10): starts at (-6, -16)
    pixels = np.asarray(crop)
    assert pixels[:10, :].max() == 0 and pixels[:, :4].max() == 0  # padding is black
    assert tuple(pixels[30, 30]) == (200, 10, 10)


def test_crop_policy_selection_and_presets():
    small, large = FaceBox(0, 0, 10, 10, 0.99), FaceBox(0, 0, 50, 50, 0.8)
    assert CropPolicy.build("auto", 224).select([small, large]) == [large]
    assert CropPolicy.build("auto", 224, all_faces=True).select([small, large]) == [large, small]
    bench = CropPolicy.build("deepfakebench", 224)
    assert (bench.align, bench.margin, bench.align_size, bench.size) == (True, 1.3, 256, 224)
    marks = ((20.0, 20.0), (40.0, 20.0), (30.0, 30.0), (22.0, 40.0), (38.0, 40.0))
    assert bench.crop(Image.new("RGB", (60, 60)), FaceBox(10, 10, 50, 50, 1.0, marks)).size == (224, 224)
    with pytest.raises(ConfigError, match="faces='portrait'"):
        CropPolicy.build("portrait", 224)
    with pytest.raises(ConfigError, match="faces='none'"):
        CropPolicy.build("none", 224, align=True)


def test_nms_and_square():
    boxes = torch.tensor([[0, 0, 10, 10], [1, 1, 11, 11], [20, 20, 30, 30], [0, 0, 4, 4]], dtype=torch.float)
    scores = torch.tensor([0.9, 0.95, 0.5, 0.8])
    assert nms(boxes, scores, 0.5).tolist() == [1, 3, 2]
    assert nms(boxes, scores, 0.5, overlap="min").tolist() == [1, 2]  # the small box lies inside box 0... and 1
    assert nms(torch.zeros(0, 4), torch.zeros(0), 0.5).numel() == 0
    assert square(torch.tensor([[0.0, 0.0, 10.0, 4.0]])).tolist() == [[0.0, -3.0, 10.0, 7.0]]
