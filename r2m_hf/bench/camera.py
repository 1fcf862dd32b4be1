"""Image operations shared by the benchmark generators, and the final camera pipeline.

Every image in the benchmark, real or fake, leaves through :func:`camera_pipeline` (slight blur, signal-dependent
sensor noise, one JPEG at a random quality), so the only thing that separates a fake from a real is the artifact its
generator left before that point. Images inside the generators are ``float32`` arrays of shape ``(H, W, 3)`` in
``[0, 1]``; the pipeline returns ``uint8``.
"""

from __future__ import annotations

import io
from dataclasses import dataclass

import numpy as np
from PIL import Image
from scipy import ndimage

_PIL_FILTERS = {
    "nearest": Image.Resampling.NEAREST,
    "box": Image.Resampling.BOX,
    "bilinear": Image.Resampling.BILINEAR,
    "bicubic": Image.Resampling.BICUBIC,
    "lanczos": Image.Resampling.LANCZOS,
}


@dataclass(frozen=True)
class CameraConfig:
    """Parameters of the final camera-like pipeline, identical for real and fake images.

    Args:
        blur_sigma (`tuple[float, float]`): range of the Gaussian optics blur σ in pixels.
        read_noise (`tuple[float, float]`): range of the signal-independent noise std (in 1/255 units).
        shot_noise (`tuple[float, float]`): range of the signal-dependent noise gain (variance = gain · intensity).
        jpeg_quality (`tuple[int, int]`): inclusive range of the single JPEG quality.
    """

    blur_sigma: tuple[float, float] = (0.3, 0.6)
    read_noise: tuple[float, float] = (0.8, 2.5)
    shot_noise: tuple[float, float] = (0.0002, 0.0012)
    jpeg_quality: tuple[int, int] = (80, 96)


def resize(image: np.ndarray, size: tuple[int, int], method: str = "lanczos") -> np.ndarray:
    """Resize a float image to `(height, width)` with one of PIL's filters (antialiased when shrinking).

    Args:
        image (`np.ndarray`): `(H, W, C)` or `(H, W)` float array.
        size (`tuple[int, int]`): output `(height, width)`.
        method (`str`): `nearest`, `box`, `bilinear`, `bicubic` or `lanczos`.

    Returns:
        `np.ndarray`: the resized float32 array.
    """
    h, w = size
    flt = _PIL_FILTERS[method]
    if image.ndim == 2:
        return np.asarray(Image.fromarray(image.astype(np.float32), mode="F").resize((w, h), flt), dtype=np.float32)
    chans = [
        np.asarray(Image.fromarray(np.ascontiguousarray(image[..., c], dtype=np.float32), mode="F").resize((w, h), flt))
        for c in range(image.shape[2])
    ]
    return np.stack(chans, axis=-1).astype(np.float32)


def rerender(image: np.ndarray, factor: float, down: str = "box", up: str = "bilinear") -> np.ndarray:
    """Render an image at `1/factor` of its resolution and back: a low-resolution generator's trace."""
    h, w = image.shape[:2]
    small = (max(2, round(h / factor)), max(2, round(w / factor)))
    return resize(resize(image, small, down), (h, w), up)


def blur(image: np.ndarray, sigma: float) -> np.ndarray:
    """Gaussian blur over the spatial axes only."""
    if sigma <= 0:
        return image
    sig = (sigma, sigma, 0) if image.ndim == 3 else sigma
    return ndimage.gaussian_filter(image, sig, mode="reflect").astype(np.float32)


def warp(image: np.ndarray, dy: np.ndarray, dx: np.ndarray, order: int = 1) -> np.ndarray:
    """Sample `image` at `(y + dy, x + dx)` with spline `order` (0 nearest, 1 bilinear, 3 bicubic), reflecting edges."""
    h, w = image.shape[:2]
    yy, xx = np.meshgrid(np.arange(h, dtype=np.float32), np.arange(w, dtype=np.float32), indexing="ij")
    coords = [yy + dy, xx + dx]
    out = np.empty_like(image)
    for c in range(image.shape[2]):
        out[..., c] = ndimage.map_coordinates(image[..., c], coords, order=order, mode="reflect", prefilter=order > 1)
    return out


def affine(image: np.ndarray, matrix: np.ndarray, offset: np.ndarray, order: int = 1) -> np.ndarray:
    """Apply an inverse affine map (output pixel `p` samples input at `matrix @ p + offset`), reflecting edges."""
    out = np.empty_like(image)
    for c in range(image.shape[2]):
        out[..., c] = ndimage.affine_transform(
            image[..., c], matrix, offset=offset, order=order, mode="reflect", prefilter=order > 1
        )
    return out


def smooth_field(rng: np.random.Generator, shape: tuple[int, int], scale: float) -> np.ndarray:
    """A smooth zero-mean random field with unit peak, correlated over about `scale` pixels."""
    field = ndimage.gaussian_filter(rng.standard_normal(shape).astype(np.float32), scale, mode="wrap")
    return field / (np.abs(field).max() + 1e-8)


def jpeg(image_u8: np.ndarray, quality: int) -> np.ndarray:
    """Encode and decode one JPEG (baseline, 4:2:0) and return the decoded `uint8` array."""
    buf = io.BytesIO()
    Image.fromarray(image_u8).save(buf, format="JPEG", quality=int(quality))
    buf.seek(0)
    with Image.open(buf) as im:
        return np.asarray(im.convert("RGB"))


def to_uint8(image: np.ndarray) -> np.ndarray:
    """Round a `[0, 1]` float image to `uint8`."""
    return np.clip(np.rint(image * 255.0), 0, 255).astype(np.uint8)


def camera_pipeline(image: np.ndarray, rng: np.random.Generator, config: CameraConfig | None = None) -> np.ndarray:
    """Pass a float image through optics blur, sensor noise and one JPEG; the same for every real and fake image.

    Args:
        image (`np.ndarray`): `(H, W, 3)` float image in `[0, 1]`.
        rng (`np.random.Generator`): the row's generator.
        config (`CameraConfig`, *optional*): pipeline parameters.

    Returns:
        `np.ndarray`: the `(H, W, 3)` `uint8` image after JPEG decoding.
    """
    cfg = config or CameraConfig()
    img = blur(np.clip(image, 0.0, 1.0).astype(np.float32), rng.uniform(*cfg.blur_sigma))
    read = rng.uniform(*cfg.read_noise) / 255.0
    shot = rng.uniform(*cfg.shot_noise)
    std = np.sqrt(read**2 + shot * img)
    img = img + std * rng.standard_normal(img.shape).astype(np.float32)
    return jpeg(to_uint8(img), int(rng.integers(cfg.jpeg_quality[0], cfg.jpeg_quality[1] + 1)))
