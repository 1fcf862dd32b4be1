"""Real images of the offline benchmark: photo patches, procedural images and parametric synthetic faces.

Photos come only from files inside the scikit-image wheel (``skimage/data``; nothing is downloaded) and from
scikit-learn's two sample images. Every real sample carries a face-like layout of component ellipses (face, eyes,
brows, nose, mouth): exact for the synthetic faces, a random pseudo-layout for photos and procedural images, so the
local forgery families need no landmark detector. Two domains (``"A"``, ``"B"``) use disjoint photos and different
face, lighting and texture distributions, like FF++ vs Celeb-DF.
"""

from __future__ import annotations

import functools
import os
from dataclasses import dataclass, field

import numpy as np
from PIL import Image

from .camera import blur, resize, smooth_field

Ellipse = tuple[float, float, float, float]  # centre y, centre x, radius y, radius x (pixels)

PHOTOS: dict[str, tuple[str, ...]] = {
    "A": (
        "skimage:astronaut.png",
        "skimage:chelsea.png",
        "skimage:coffee.png",
        "skimage:rocket.jpg",
        "skimage:motorcycle_left.png",
        "skimage:motorcycle_right.png",
        "skimage:hubble_deep_field.jpg",
        "skimage:camera.png",
        "sklearn:china.jpg",
    ),
    "B": (
        "sklearn:flower.jpg",
        "skimage:retina.jpg",
        "skimage:ihc.png",
        "skimage:brick.png",
        "skimage:grass.png",
        "skimage:gravel.png",
        "skimage:moon.png",
        "skimage:coins.png",
        "skimage:cell.png",
    ),
}

# Share of each kind of real image per domain (photo patch, synthetic face, LFW face, 1/f noise, dead leaves, fBm).
MIXTURE: dict[str, dict[str, float]] = {
    "A": {"photo": 0.45, "face": 0.35, "pink": 0.07, "leaves": 0.07, "fbm": 0.06},
    "B": {"photo": 0.45, "face": 0.25, "lfw": 0.10, "pink": 0.07, "leaves": 0.07, "fbm": 0.06},
}

# Face parameters per domain: skin tones (RGB), light direction (y, x, z), ambient share.
_SKIN = {
    "A": np.array([[0.92, 0.74, 0.62], [0.80, 0.60, 0.45], [0.62, 0.43, 0.30], [0.96, 0.80, 0.70]], np.float32),
    "B": np.array([[0.45, 0.30, 0.22], [0.70, 0.55, 0.40], [0.88, 0.68, 0.52], [0.55, 0.42, 0.36]], np.float32),
}
_LIGHT = {"A": ((-0.5, -0.6, 0.62), 0.35), "B": ((-0.2, 0.7, 0.68), 0.55)}


@dataclass
class RealSample:
    """One real image with its component layout.

    Args:
        image (`np.ndarray`): `(H, W, 3)` float32 image in `[0, 1]`.
        parts (`dict[str, Ellipse]`): component ellipses `face`, `left_eye`, `right_eye`, `left_brow`,
            `right_brow`, `nose`, `mouth` as `(cy, cx, ry, rx)` in pixels.
        kind (`str`): `photo`, `face`, `lfw`, `pink`, `leaves` or `fbm`.
        source (`str`): the photo file or procedure it came from.
    """

    image: np.ndarray
    parts: dict[str, Ellipse] = field(default_factory=dict)
    kind: str = "photo"
    source: str = ""


def _data_dir() -> str:
    import skimage

    return os.path.join(os.path.dirname(skimage.__file__), "data")


@functools.cache
def load_photo(name: str) -> np.ndarray:
    """Load a bundled photo (`skimage:<file>` or `sklearn:<file>`) as a `uint8` RGB array, cached."""
    lib, fname = name.split(":", 1)
    if lib == "sklearn":
        from sklearn.datasets import load_sample_image

        arr = np.asarray(load_sample_image(fname))
    else:
        with Image.open(os.path.join(_data_dir(), fname)) as im:
            arr = np.asarray(im.convert("RGB"))
    return np.ascontiguousarray(arr)


@functools.lru_cache(maxsize=1)
def _lfw_faces() -> np.ndarray:
    # The first 100 entries of skimage's LFW subset are faces, the rest are non-faces.
    return np.load(os.path.join(_data_dir(), "lfw_subset.npy"))[:100].astype(np.float32)


def face_layout(cy: float, cx: float, ry: float, rx: float) -> dict[str, Ellipse]:
    """Component ellipses of a frontal face whose outline is the ellipse `(cy, cx, ry, rx)`."""
    eye_y, eye_dx = cy - 0.12 * ry, 0.38 * rx
    return {
        "face": (cy, cx, ry, rx),
        "left_eye": (eye_y, cx - eye_dx, 0.085 * ry, 0.2 * rx),
        "right_eye": (eye_y, cx + eye_dx, 0.085 * ry, 0.2 * rx),
        "left_brow": (eye_y - 0.16 * ry, cx - eye_dx, 0.04 * ry, 0.22 * rx),
        "right_brow": (eye_y - 0.16 * ry, cx + eye_dx, 0.04 * ry, 0.22 * rx),
        "nose": (cy + 0.12 * ry, cx, 0.16 * ry, 0.11 * rx),
        "mouth": (cy + 0.46 * ry, cx, 0.09 * ry, 0.34 * rx),
    }


def random_layout(rng: np.random.Generator, size: int) -> dict[str, Ellipse]:
    """A random pseudo face layout for images without a face (photos, procedural images)."""
    rx = rng.uniform(0.22, 0.34) * size
    ry = rx * rng.uniform(1.1, 1.35)
    cy = rng.uniform(0.42, 0.58) * size
    cx = rng.uniform(0.4, 0.6) * size
    return face_layout(cy, cx, ry, rx)


def ellipse_mask(
    shape: tuple[int, int], ell: Ellipse, scale: float = 1.0, warp: np.ndarray | None = None
) -> np.ndarray:
    """Hard `{0, 1}` float mask of an ellipse scaled by `scale`, optionally with a radial distortion field `warp`."""
    cy, cx, ry, rx = ell
    yy, xx = np.ogrid[: shape[0], : shape[1]]
    r = ((yy + 0.5 - cy) / (ry * scale)) ** 2 + ((xx + 0.5 - cx) / (rx * scale)) ** 2
    if warp is not None:
        r = r * (1.0 + warp)
    return (r <= 1.0).astype(np.float32)


def _jitter(img: np.ndarray, rng: np.random.Generator, gray: bool) -> np.ndarray:
    """Random flips and colour jitter (brightness, contrast, saturation, gamma; a tint for grey photos)."""
    if rng.random() < 0.5:
        img = img[:, ::-1]
    if gray:
        tint = 1.0 + rng.uniform(-0.12, 0.12, size=3).astype(np.float32)
        img = img * tint
    mean = img.mean(axis=(0, 1), keepdims=True)
    img = (img - mean) * rng.uniform(0.85, 1.15) + mean * rng.uniform(0.88, 1.12)
    lum = img.mean(axis=2, keepdims=True)
    img = lum + (img - lum) * rng.uniform(0.8, 1.2)
    img = np.clip(img, 0.0, 1.0) ** rng.uniform(0.9, 1.1)
    return np.ascontiguousarray(img, dtype=np.float32)


def photo_patch(rng: np.random.Generator, size: int, domain: str) -> RealSample:
    """A random antialiased crop of one of the domain's bundled photos, with flips and colour jitter."""
    name = PHOTOS[domain][int(rng.integers(len(PHOTOS[domain])))]
    arr = load_photo(name)
    h, w = arr.shape[:2]
    m = min(h, w)
    lo = min(float(m), 1.5 * size)
    side = int(np.exp(rng.uniform(np.log(lo), np.log(0.8 * m))))
    y0, x0 = int(rng.integers(0, h - side + 1)), int(rng.integers(0, w - side + 1))
    crop = Image.fromarray(arr[y0 : y0 + side, x0 : x0 + side]).resize((size, size), Image.Resampling.LANCZOS)
    gray = bool(np.ptp(arr[::8, ::8].astype(np.int16), axis=2).max() == 0)
    img = _jitter(np.asarray(crop, dtype=np.float32) / 255.0, rng, gray)
    return RealSample(img, random_layout(rng, size), "photo", name)


def _power_noise(rng: np.random.Generator, size: int, alpha: float) -> np.ndarray:
    """Three channels of 1/f^α noise, each standardised."""
    fy = np.fft.fftfreq(size)[:, None]
    fx = np.fft.rfftfreq(size)[None, :]
    f = np.sqrt(fy**2 + fx**2)
    f[0, 0] = 1.0
    amp = f ** (-alpha / 2.0)
    amp[0, 0] = 0.0
    spec = (rng.standard_normal((3, size, size // 2 + 1)) + 1j * rng.standard_normal((3, size, size // 2 + 1))) * amp
    out = np.fft.irfft2(spec, s=(size, size), axes=(1, 2))
    out = out / (out.std(axis=(1, 2), keepdims=True) + 1e-8)
    return np.moveaxis(out, 0, -1).astype(np.float32)


def _colourise(noise: np.ndarray, rng: np.random.Generator, spread: float) -> np.ndarray:
    mix = rng.normal(0.0, 0.35, size=(3, 3)) + np.eye(3) * rng.uniform(0.3, 0.8)
    base = rng.uniform(0.25, 0.75, size=3)
    img = base + spread * (noise @ mix.T) / 3.0
    return np.clip(img, 0.0, 1.0).astype(np.float32)


def pink_noise(rng: np.random.Generator, size: int, domain: str) -> RealSample:
    """Colour 1/f^α noise (α ≈ 2 like natural images; domain B is rougher)."""
    alpha = rng.uniform(1.6, 2.2) if domain == "A" else rng.uniform(1.3, 1.8)
    img = _colourise(_power_noise(rng, size, alpha), rng, 0.5)
    return RealSample(img, random_layout(rng, size), "pink", f"pink-{domain}")


def fbm_field(rng: np.random.Generator, size: int, domain: str) -> RealSample:
    """A smooth fBm field (steep spectrum) through a colour map."""
    alpha = rng.uniform(2.8, 3.6) if domain == "A" else rng.uniform(2.5, 3.0)
    img = _colourise(_power_noise(rng, size, alpha), rng, 0.7)
    return RealSample(img, random_layout(rng, size), "fbm", f"fbm-{domain}")


def dead_leaves(rng: np.random.Generator, size: int, domain: str) -> RealSample:
    """Dead-leaves image: occluding discs with power-law radii, rendered at 2× and downsampled (antialiased)."""
    big = 2 * size
    img = np.tile(rng.uniform(0.2, 0.8, size=3).astype(np.float32), (big, big, 1))
    rmin, rmax = 0.015 * big, (0.25 if domain == "A" else 0.12) * big
    n = 120 if domain == "A" else 220
    u = rng.random(n)
    radii = (rmin**-2 - u * (rmin**-2 - rmax**-2)) ** -0.5  # p(r) ∝ r^-3 on [rmin, rmax]
    centres = rng.uniform(-0.1, 1.1, size=(n, 2)) * big
    colours = rng.uniform(0.05, 0.95, size=(n, 3)).astype(np.float32)
    for (cy, cx), r, col in zip(centres, radii, colours, strict=True):
        y0, y1 = max(0, int(cy - r)), min(big, int(cy + r) + 1)
        x0, x1 = max(0, int(cx - r)), min(big, int(cx + r) + 1)
        if y0 >= y1 or x0 >= x1:
            continue
        yy, xx = np.ogrid[y0:y1, x0:x1]
        m = (yy - cy) ** 2 + (xx - cx) ** 2 <= r * r
        img[y0:y1, x0:x1][m] = col
    img = resize(img, (size, size), "box")
    return RealSample(img, random_layout(rng, size), "leaves", f"leaves-{domain}")


def synthetic_face(rng: np.random.Generator, size: int, domain: str) -> RealSample:
    """A parametric frontal face (shaded skin ellipse, hair, eyes, brows, nose, mouth) with exact component layout.

    Domain A and B differ in skin tones, light direction, ambient light, background and face size.
    """
    s = 2 * size
    bg_alpha = rng.uniform(2.0, 3.0)
    bg = _colourise(_power_noise(rng, s, bg_alpha), rng, 0.5 if domain == "A" else 0.8)
    if domain == "A":
        rx = rng.uniform(0.26, 0.33) * s
    else:
        rx = rng.uniform(0.2, 0.28) * s
    ry = rx * rng.uniform(1.18, 1.35)
    cy, cx = rng.uniform(0.48, 0.56) * s, rng.uniform(0.44, 0.56) * s
    parts = face_layout(cy, cx, ry, rx)
    yy, xx = np.mgrid[:s, :s].astype(np.float32) + 0.5

    # Shaded skin: Lambertian on an ellipsoid, with low-frequency blotches and fine pore texture.
    ny, nx = (yy - cy) / ry, (xx - cx) / rx
    nz = np.sqrt(np.clip(1.0 - ny**2 - nx**2, 0.0, 1.0))
    (ly, lx, lz), ambient = _LIGHT[domain]
    ly, lx = ly + rng.normal(0, 0.1), lx + rng.normal(0, 0.1)
    shade = ambient + (1 - ambient) * np.clip(ny * ly + nx * lx + nz * lz, 0.0, 1.0)
    skin_col = _SKIN[domain][int(rng.integers(len(_SKIN[domain])))] * rng.uniform(0.92, 1.06, size=3)
    texture = 0.04 * smooth_field(rng, (s, s), s / 24) + 0.025 * smooth_field(rng, (s, s), 1.0)
    skin = np.clip(skin_col * (shade + texture)[..., None], 0, 1)
    face_m = blur(ellipse_mask((s, s), parts["face"]), 1.0)[..., None]
    img = bg * (1 - face_m) + skin * face_m

    # Hair: a darker cap over the top of the face outline, textured with strands (anisotropic noise).
    hair_col = rng.uniform(0.05, 0.45) * rng.uniform(0.6, 1.0, size=3)
    strands = 0.08 * smooth_field(rng, (s, s), 0.8) + 0.06 * smooth_field(rng, (s, s), 3)
    hair_region = ellipse_mask((s, s), (cy - 0.12 * ry, cx, ry * 1.02, rx * 1.08)) * (
        yy < cy - 0.45 * ry + 0.1 * ry * (np.abs(xx - cx) / rx) ** 2
    )
    hair_m = blur(hair_region, 1.5)[..., None]
    img = img * (1 - hair_m) + np.clip(hair_col + strands[..., None], 0, 1) * hair_m

    def paint(ell: Ellipse, colour: np.ndarray, scale: float = 1.0, soft: float = 0.8, alpha: float = 1.0) -> None:
        nonlocal img
        m = blur(ellipse_mask((s, s), ell, scale), soft)[..., None] * alpha
        img = img * (1 - m) + colour * m

    iris = rng.uniform(0.1, 0.6, size=3) * rng.uniform(0.4, 1.0)
    for side in ("left", "right"):
        ey, ex, ery, erx = parts[f"{side}_eye"]
        paint(parts[f"{side}_eye"], skin_col * 0.55, 1.25, 1.5, 0.6)  # eye socket shadow
        paint(parts[f"{side}_eye"], np.array([0.93, 0.91, 0.88]) * shade[int(ey), int(ex)])
        iris_ell = (ey, ex + rng.normal(0, 0.05) * erx, ery * 0.95, ery * 0.95)
        paint(iris_ell, iris)
        paint(iris_ell, np.array([0.03, 0.03, 0.03]), 0.45)
        paint((ey - 0.3 * ery, ex + 0.25 * ery, ery * 0.18, ery * 0.18), np.array([1.0, 1.0, 1.0]), soft=0.5)
        paint(parts[f"{side}_brow"], hair_col * 0.9, soft=1.0, alpha=0.9)
    ny_, nx_, nry, nrx = parts["nose"]
    paint((ny_, nx_ + 0.3 * nrx, nry, nrx * 0.35), skin_col * 0.75, soft=2.0, alpha=0.5)
    for sgn in (-1, 1):
        paint((ny_ + 0.8 * nry, nx_ + sgn * 0.45 * nrx, nry * 0.15, nrx * 0.25), skin_col * 0.35, alpha=0.8)
    lip = np.array([0.72, 0.3, 0.32]) * rng.uniform(0.7, 1.1) * shade[int(parts["mouth"][0]), int(cx)]
    paint(parts["mouth"], lip, soft=1.0)
    my, mx, mry, mrx = parts["mouth"]
    paint((my, mx, mry * 0.18, mrx * 0.95), lip * 0.35, soft=0.6)

    img = resize(np.clip(img, 0, 1).astype(np.float32), (size, size), "box")
    half = {k: (v[0] / 2, v[1] / 2, v[2] / 2, v[3] / 2) for k, v in parts.items()}
    return RealSample(img, half, "face", f"face-{domain}")


def lfw_face(rng: np.random.Generator, size: int, domain: str) -> RealSample:
    """One of the 100 bundled 25×25 grey LFW faces, upscaled with a skin tint (domain B only)."""
    faces = _lfw_faces()
    face = faces[int(rng.integers(len(faces)))]
    tint = _SKIN[domain][int(rng.integers(len(_SKIN[domain])))] / 0.8
    img = np.clip(resize(face, (size, size), "bicubic")[..., None] * tint, 0, 1)
    img = _jitter(img.astype(np.float32), rng, gray=False)
    # The LFW crops are roughly centred faces filling the frame.
    layout = face_layout(0.52 * size, 0.5 * size, 0.42 * size, 0.33 * size)
    return RealSample(img, layout, "lfw", "skimage:lfw_subset.npy")


_KINDS = {
    "photo": photo_patch,
    "face": synthetic_face,
    "lfw": lfw_face,
    "pink": pink_noise,
    "leaves": dead_leaves,
    "fbm": fbm_field,
}


def sample_real(rng: np.random.Generator, size: int, domain: str) -> RealSample:
    """Draw one real image of `domain` (`"A"` or `"B"`) from the domain's mixture of kinds.

    Args:
        rng (`np.random.Generator`): the row's generator.
        size (`int`): output side in pixels.
        domain (`str`): `"A"` (training domain) or `"B"` (cross-domain test).

    Returns:
        `RealSample`: the image (before the camera pipeline) and its component layout.
    """
    mix = MIXTURE[domain]
    kinds = list(mix)
    p = np.array([mix[k] for k in kinds])
    kind = kinds[int(rng.choice(len(kinds), p=p / p.sum()))]
    return _KINDS[kind](rng, size, domain)
