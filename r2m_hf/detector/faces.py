"""Face finding and the crop policy: which detector runs, which faces are scored, and how each is cut out.

Deepfake detectors are trained on face crops, so a whole frame is never scored in place of a face: ``faces="auto"``
detects faces (MTCNN when its weights are installed, else OpenCV's Haar cascade), keeps the largest (or all) and
crops each one; ``faces="deepfakebench"`` reproduces DeepfakeBench's preprocessing (5-point alignment, margin 1.3,
a 256-pixel crop, then the model's input size); ``faces="none"`` takes inputs that are already crops as they are.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from PIL import Image

from ..errors import ConfigError
from .align import aligned_crop, square_crop
from .haar import HaarFaceDetector, haar_cascade_path
from .mtcnn import INSTALL_HINT, MTCNN, mtcnn_weights_dir
from .types import FaceBox

FACE_MODES = ("auto", "none", "deepfakebench")
DETECTORS = ("auto", "mtcnn", "haar")
MARGIN = 1.3
DEEPFAKEBENCH_SIZE = 256


class FaceDetector(Protocol):
    """Anything with ``detect(image) -> list[FaceBox]``; `has_landmarks` says whether boxes carry 5 points."""

    name: str
    has_landmarks: bool

    def detect(self, image: Image.Image) -> list[FaceBox]: ...


@dataclass(frozen=True)
class CropPolicy:
    """How faces become model inputs.

    Attributes:
        mode (`str`): ``"auto"``, ``"none"`` or ``"deepfakebench"``.
        size (`int`): side of the crop handed to the image processor (the model's input size).
        margin (`float`): crop side as a multiple of the face box (or of the aligned template).
        align (`bool`): warp the 5 landmarks onto the ArcFace template instead of a box crop.
        align_size (`int`, *optional*): side of the aligned crop before it is resized to `size` (256 for
            DeepfakeBench).
        all_faces (`bool`): score every face found instead of the largest.
    """

    mode: str = "auto"
    size: int = 224
    margin: float = MARGIN
    align: bool = False
    align_size: int | None = None
    all_faces: bool = False

    @classmethod
    def build(cls, mode: str, size: int, *, align: bool = False, all_faces: bool = False) -> CropPolicy:
        """Check the options and apply the ``deepfakebench`` preset."""
        if mode not in FACE_MODES:
            raise ConfigError(f"faces={mode!r} is not one of {', '.join(FACE_MODES)}")
        if mode == "deepfakebench":
            return cls(mode, size, MARGIN, True, DEEPFAKEBENCH_SIZE, all_faces)
        if mode == "none" and (align or all_faces):
            raise ConfigError("align and all_faces need face detection; they do not apply with faces='none'")
        return cls(mode, size, MARGIN, align, None, all_faces)

    def select(self, faces: list[FaceBox]) -> list[FaceBox]:
        """The faces to score: the largest, or all of them largest first."""
        ordered = sorted(faces, key=lambda face: -face.area)
        return ordered if self.all_faces else ordered[:1]

    def crop(self, image: Image.Image, face: FaceBox) -> Image.Image:
        """The model input for one face of `image`."""
        if self.align and face.landmarks is not None:
            crop = aligned_crop(image, face.landmarks, self.align_size or self.size, self.margin)
            return crop if crop.size == (self.size, self.size) else crop.resize((self.size,) * 2, Image.BICUBIC)
        return square_crop(image, face, self.size, self.margin)


def load_face_detector(name: str = "auto", *, device=None, need_landmarks: bool = False) -> FaceDetector:
    """The face detector to use.

    Args:
        name (`str`): ``"mtcnn"``, ``"haar"``, or ``"auto"`` (MTCNN when its weights are installed, else Haar).
        device (`str`, *optional*): torch device for MTCNN.
        need_landmarks (`bool`): refuse a detector without landmarks (aligned crops).

    Returns:
        `FaceDetector`: an object with ``detect(image) -> list[FaceBox]``.
    """
    if name not in DETECTORS:
        raise ConfigError(f"face detector {name!r} is not one of {', '.join(DETECTORS)}")
    has_mtcnn = mtcnn_weights_dir() is not None
    if name == "mtcnn" or need_landmarks or (name == "auto" and has_mtcnn):
        if name == "haar":
            raise ConfigError("aligned crops need landmarks, which the Haar detector does not give; use mtcnn")
        if not has_mtcnn:
            why = "aligned crops need MTCNN's landmarks" if need_landmarks else "MTCNN is not installed"
            raise ConfigError(f"{why}: install its weights with `{INSTALL_HINT}`")
        return MTCNN(device=device)
    if haar_cascade_path() is None:
        raise ConfigError(
            "no face detector is installed: `pip install 'opencv-python-headless>=4.8,<5'` (Haar cascade) or "
            f"`{INSTALL_HINT}` (MTCNN), or pass faces='none' for inputs that are already face crops"
        )
    return HaarFaceDetector()
