"""Fixtures of the detector tests: a tiny classifier, real photos that scikit-image ships, and videos written here.

* ``model_dir``: a tiny ViT specialist (labels real/fake) from `r2m_hf.zoo.build_zoo`; ``fake_first_dir``: one
  saved with ``{0: FAKE, 1: REAL}``.
* ``media``: a folder with the astronaut photo (one face), the coffee photo (no face), a 3 s video of the
  astronaut's face and a 2 s video of the coffee cup, all written once per session.
* ``requires_mtcnn``: skips a test when the MTCNN weights (``facenet-pytorch``) are not installed — except on CI,
  where .ci/run installs them and their absence is a failure. ``requires_gradio`` does the same for the ``app``
  extra.
"""

from __future__ import annotations

import importlib.util
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from r2m_hf.detector.mtcnn import mtcnn_weights_dir

requires_mtcnn = pytest.mark.skipif(
    mtcnn_weights_dir() is None and os.environ.get("CI") != "true",
    reason="MTCNN weights not installed: pip install --no-deps facenet-pytorch==2.6.0",
)
requires_gradio = pytest.mark.skipif(
    importlib.util.find_spec("gradio") is None and os.environ.get("CI") != "true",
    reason="Gradio not installed: pip install -e '.[app]'",
)


def astronaut() -> Image.Image:
    from skimage import data

    return Image.fromarray(data.astronaut())


def coffee() -> Image.Image:
    from skimage import data

    return Image.fromarray(data.coffee())


def write_video(path: Path, frames: list[Image.Image], fps: int = 10, codec: str = "libx264") -> Path:
    """Encode RGB frames (all of one even size) into `path` with PyAV."""
    import av

    with av.open(str(path), "w") as container:
        stream = container.add_stream(codec, rate=fps)
        stream.width, stream.height = frames[0].size
        stream.pix_fmt = "yuv420p"
        for image in frames:
            for packet in stream.encode(av.VideoFrame.from_image(image)):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return path


def moving_face(count: int, size: int = 192) -> list[Image.Image]:
    """The astronaut's face drifting and turning a little, one frame per step."""
    base = astronaut().resize((size, size))
    return [base.rotate(2 * np.sin(i / 3), translate=(i % 5, 0), fillcolor=(0, 0, 0)) for i in range(count)]


@dataclass
class Media:
    root: Path
    face: Path
    no_face: Path
    face_video: Path
    no_face_video: Path


@pytest.fixture(scope="session")
def media(tmp_path_factory) -> Media:
    root = tmp_path_factory.mktemp("media")
    astronaut().save(root / "astronaut.jpg", quality=92)
    coffee().save(root / "coffee.png")
    write_video(root / "face.mp4", moving_face(30))  # 3 s at 10 fps
    cup = coffee().resize((160, 112))
    write_video(root / "cup.webm", [cup.rotate(i) for i in range(20)], codec="libvpx")
    return Media(root, root / "astronaut.jpg", root / "coffee.png", root / "face.mp4", root / "cup.webm")


@pytest.fixture(scope="session")
def zoo_dirs(tmp_path_factory):
    from r2m_hf.zoo import build_zoo

    zoo = build_zoo(tmp_path_factory.mktemp("detector-zoo"), names=("fs", "fr"), fake_first=("fr",))
    return zoo.specialists


@pytest.fixture(scope="session")
def model_dir(zoo_dirs) -> Path:
    return zoo_dirs[0]


@pytest.fixture(scope="session")
def fake_first_dir(zoo_dirs) -> Path:
    return zoo_dirs[1]


@pytest.fixture
def model_copy(model_dir, tmp_path) -> Path:
    """A private copy of the tiny model, for tests that write into its config.json."""
    import shutil

    return Path(shutil.copytree(model_dir, tmp_path / "model"))
