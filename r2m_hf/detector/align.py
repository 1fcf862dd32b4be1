"""Face crops: the square margin crop around a box, and the aligned crop that maps 5 landmarks onto a template.

The aligned crop is a similarity transform (rotation, uniform scale, translation) fitted by least squares
(Umeyama, 1991) from the detected eyes, nose and mouth corners onto the ArcFace 112×112 template, scaled to the
output size and shrunk by the margin so that the crop shows `margin`× the template's face area (DeepfakeBench
crops this way at 1.3). Both crops pad with black where they leave the image.
"""

from __future__ import annotations

import numpy as np
from PIL import Image

from .types import FaceBox

# left eye, right eye, nose tip, left and right mouth corner on a 112×112 face (ArcFace / insightface template)
ARCFACE_112 = np.array(
    [[38.2946, 51.6963], [73.5318, 51.5014], [56.0252, 71.7366], [41.5493, 92.3655], [70.7299, 92.2041]]
)


def similarity_transform(source: np.ndarray, target: np.ndarray) -> np.ndarray:
    """The least-squares similarity taking `source` points onto `target` points (Umeyama's closed form).

    Args:
        source (`np.ndarray`): (N, 2) points.
        target (`np.ndarray`): (N, 2) points.

    Returns:
        `np.ndarray`: the 2×3 matrix ``[s·R | t]`` with ``target ≈ s·R·source + t`` (R a proper rotation).
    """
    source, target = np.asarray(source, dtype=np.float64), np.asarray(target, dtype=np.float64)
    mean_s, mean_t = source.mean(axis=0), target.mean(axis=0)
    centred_s, centred_t = source - mean_s, target - mean_t
    covariance = centred_t.T @ centred_s / len(source)
    u, singular, vt = np.linalg.svd(covariance)
    reflect = np.diag([1.0, np.sign(np.linalg.det(u) * np.linalg.det(vt)) or 1.0])
    rotation = u @ reflect @ vt
    variance = (centred_s**2).sum(axis=1).mean()
    scale = float((singular * np.diag(reflect)).sum() / variance) if variance > 0 else 1.0
    translation = mean_t - scale * rotation @ mean_s
    return np.hstack([scale * rotation, translation[:, None]])


def template(size: int, margin: float = 1.3) -> np.ndarray:
    """The ArcFace landmarks placed in a `size`² crop that shows `margin`× the template's extent, centred."""
    return (ARCFACE_112 * size / 112 + size * (margin - 1) / 2) / margin


def aligned_crop(image: Image.Image, landmarks, size: int, margin: float = 1.3) -> Image.Image:
    """Warp `image` so that its 5 `landmarks` land on the template of a `size`² crop (bilinear)."""
    matrix = np.vstack([similarity_transform(np.asarray(landmarks), template(size, margin)), [0, 0, 1]])
    inverse = np.linalg.inv(matrix)[:2]  # PIL maps each output pixel back to the input
    return image.transform((size, size), Image.Transform.AFFINE, inverse.ravel().tolist(), Image.Resampling.BILINEAR)


def square_crop(image: Image.Image, face: FaceBox, size: int, margin: float = 1.3) -> Image.Image:
    """A square of side `margin` × the box's longer side around its centre, resized to `size`²."""
    cx, cy = face.centre
    half = margin * max(face.width, face.height, 1.0) / 2
    box = tuple(int(round(v)) for v in (cx - half, cy - half, cx + half, cy + half))
    return image.crop(box).resize((size, size), Image.Resampling.BICUBIC)
