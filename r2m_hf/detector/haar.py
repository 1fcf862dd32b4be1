"""The fallback face detector: OpenCV's frontal-face Haar cascade, shipped inside ``opencv-python-headless`` 4.x.

Boxes only (no landmarks, so no aligned crops). OpenCV 5 no longer ships the cascade files; the dependency is
pinned ``<5`` for that reason, and a missing file is reported as such rather than as "no face".
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from .types import FaceBox

CASCADE = "haarcascade_frontalface_default.xml"


def haar_cascade_path() -> Path | None:
    """The frontal-face cascade of the installed OpenCV, or None when OpenCV or the file is missing."""
    try:
        import cv2
    except ImportError:
        return None
    folder = getattr(getattr(cv2, "data", None), "haarcascades", None)
    path = Path(folder) / CASCADE if folder else None
    return path if path is not None and path.is_file() else None


class HaarFaceDetector:
    """Viola–Jones frontal faces through ``cv2.CascadeClassifier``.

    Args:
        scale_factor (`float`): pyramid step of the sliding window.
        min_neighbors (`int`): overlapping detections needed to keep a face (higher: fewer false positives).
        min_size_ratio (`float`): the smallest face searched for, as a fraction of the image's shorter side.
        max_side (`int`): images larger than this are searched on a downscaled copy.
    """

    name = "haar"
    has_landmarks = False

    def __init__(
        self,
        *,
        scale_factor: float = 1.1,
        min_neighbors: int = 5,
        min_size_ratio: float = 0.06,
        max_side: int = 1280,
    ):
        import cv2

        path = haar_cascade_path()
        if path is None:
            raise FileNotFoundError(
                f"OpenCV's {CASCADE} is missing (OpenCV 5 dropped it); install `opencv-python-headless>=4.8,<5`"
            )
        self._cv2 = cv2
        self.classifier = cv2.CascadeClassifier(str(path))
        self.scale_factor, self.min_neighbors = scale_factor, min_neighbors
        self.min_size_ratio, self.max_side = min_size_ratio, max_side

    def detect(self, image) -> list[FaceBox]:
        """Faces in a PIL image, most confident first (score: the cascade's last-stage weight)."""
        cv2 = self._cv2
        gray = np.asarray(image.convert("L"))
        shrink = min(1.0, self.max_side / max(gray.shape))
        if shrink < 1.0:
            size = (max(1, round(gray.shape[1] * shrink)), max(1, round(gray.shape[0] * shrink)))
            gray = cv2.resize(gray, size, interpolation=cv2.INTER_AREA)
        side = max(12, int(min(gray.shape) * self.min_size_ratio))
        boxes, _, weights = self.classifier.detectMultiScale3(
            cv2.equalizeHist(gray),
            scaleFactor=self.scale_factor,
            minNeighbors=self.min_neighbors,
            minSize=(side, side),
            outputRejectLevels=True,
        )
        faces = [
            FaceBox(float(x), float(y), float(x + w), float(y + h), float(score)).scaled(1 / shrink)
            for (x, y, w, h), score in zip(np.asarray(boxes).reshape(-1, 4), np.asarray(weights).reshape(-1))
        ]
        return sorted(faces, key=lambda face: -face.score)
