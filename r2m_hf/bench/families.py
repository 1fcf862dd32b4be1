"""Forgery families of the offline benchmark: named sub-generators that turn a real image into a fake one.

Four families mirror DF40's (FS-sim face swap, FR-sim reenactment, EFS-sim entire synthesis, FE-sim attribute
editing), each with three sub-generators seen in training and one held out; two whole families (``djpeg``,
``resample``) are held out. Every generator leaves the trace a real generator leaves (a blending seam, texture
re-rendered at another resolution, resampling inside a region, an up-sampling kernel) rather than a mere change of
content, and none touches size, dtype or compression bookkeeping: the camera pipeline that follows is the same for
real and fake images. A generator is a pure function ``(sample, rng, draw_real) -> float image``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from scipy import ndimage

from .camera import affine, blur, jpeg, rerender, resize, smooth_field, to_uint8, warp
from .sources import Ellipse, RealSample, ellipse_mask

DrawReal = Callable[[], RealSample]
GeneratorFn = Callable[[RealSample, np.random.Generator, DrawReal], np.ndarray]


@dataclass(frozen=True)
class ForgeryGenerator:
    """A named sub-generator of a forgery family.

    Args:
        name (`str`): e.g. `fs_sbi`.
        family (`str`): `FS`, `FR`, `EFS`, `FE`, `djpeg` or `resample`.
        held_out (`bool`): never in train/validation; tested in `test_unseen_generators` (or, for a held-out family,
            `test_unseen_families`).
        fn (`GeneratorFn`): the generator.
    """

    name: str
    family: str
    held_out: bool
    fn: GeneratorFn


SEEN_FAMILIES = ("FS", "FR", "EFS", "FE")
HELD_OUT_FAMILIES = ("djpeg", "resample")
GENERATORS: dict[str, ForgeryGenerator] = {}


def _register(name: str, family: str, held_out: bool = False) -> Callable[[GeneratorFn], GeneratorFn]:
    def deco(fn: GeneratorFn) -> GeneratorFn:
        GENERATORS[name] = ForgeryGenerator(name, family, held_out, fn)
        return fn

    return deco


# ----------------------------------------------------------------------------------------------------- helpers
def _soft_mask(
    shape: tuple[int, int],
    ell: Ellipse,
    rng: np.random.Generator,
    feather: float,
    scale: float = 1.0,
    elastic: float = 0,
) -> np.ndarray:
    """A feathered (optionally elastically deformed) ellipse mask of shape `(H, W, 1)`."""
    deform = elastic * smooth_field(rng, shape, max(shape) / 10) if elastic > 0 else None
    return blur(ellipse_mask(shape, ell, scale, deform), feather)[..., None]


def _parts_mask(sample: RealSample, names: tuple[str, ...], scale: float, feather: float) -> np.ndarray:
    shape = sample.image.shape[:2]
    hard = np.zeros(shape, np.float32)
    for n in names:
        hard = np.maximum(hard, ellipse_mask(shape, sample.parts[n], scale))
    return blur(hard, feather)[..., None]


def _colour_transfer(src: np.ndarray, dst: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """Reinhard-style transfer: match `src`'s per-channel mean/std inside `mask` to `dst`'s."""
    w = mask[..., 0] > 0.5
    if w.sum() < 4:
        return src
    ms, ss = src[w].mean(0), src[w].std(0) + 1e-3
    md, sd = dst[w].mean(0), dst[w].std(0) + 1e-3
    return np.clip((src - ms) * (sd / ss) + md, 0, 1).astype(np.float32)


def _align(donor: RealSample, target: RealSample, order: int = 1) -> np.ndarray:
    """Warp the donor so that its face ellipse lands on the target's (an affine map, resampled)."""
    dcy, dcx, dry, drx = donor.parts["face"]
    tcy, tcx, try_, trx = target.parts["face"]
    sy, sx = dry / try_, drx / trx
    return affine(donor.image, np.diag([sy, sx]), np.array([dcy - sy * tcy, dcx - sx * tcx]), order=order)


def _grain(rng: np.random.Generator, shape: tuple[int, ...], std: float, corr: float = 0.0) -> np.ndarray:
    """Fresh generator noise (white, or spatially correlated over `corr` pixels) with standard deviation `std`."""
    g = rng.standard_normal(shape).astype(np.float32)
    if corr > 0:
        g = blur(g, corr)
        g = g / (g.std() + 1e-8)
    return std * g


def _decoder_up(img: np.ndarray, rng: np.random.Generator, gain: float, factor: int = 2) -> np.ndarray:
    """A ×`factor` transposed-convolution decoder: render at 1/`factor` resolution, zero-insert, a triangle kernel,
    and unequal gains on the `factor × factor` phases (the checkerboard of a learned up-sampler)."""
    n = img.shape[0]
    small = resize(img, (n // factor, n // factor), "box")
    up = np.zeros_like(img)
    up[::factor, ::factor] = small[: len(range(0, n, factor)), : len(range(0, n, factor))]
    tri = np.concatenate([np.arange(1, 2 * factor, 2), np.arange(2 * factor - 1, 0, -2)]).astype(np.float32)
    k1 = tri / (2 * factor) + rng.uniform(-0.02, 0.02, size=tri.size)
    # "mirror" keeps the zero-inserted phase pattern intact at the borders ("reflect" would double the edge).
    out = ndimage.convolve1d(ndimage.convolve1d(up, k1, axis=0, mode="mirror"), k1, axis=1, mode="mirror")
    gains = 1 + rng.uniform(-gain, gain, size=(factor, factor))
    for i in range(factor):
        for j in range(factor):
            out[i::factor, j::factor] *= gains[i, j] / gains.mean()
    return np.clip(out, 0, 1).astype(np.float32)


def _size(sample: RealSample) -> int:
    return sample.image.shape[0]


def _hsv_shift(img: np.ndarray, hue: float, sat: float) -> np.ndarray:
    """Rotate hue (in turns) and scale saturation, via a YIQ-like rotation of the chroma plane."""
    lum = img @ np.array([0.299, 0.587, 0.114], np.float32)
    i = img @ np.array([0.596, -0.274, -0.322], np.float32)
    q = img @ np.array([0.211, -0.523, 0.312], np.float32)
    c, s = np.cos(2 * np.pi * hue), np.sin(2 * np.pi * hue)
    i, q = sat * (c * i - s * q), sat * (s * i + c * q)
    r = lum + 0.956 * i + 0.621 * q
    g = lum - 0.272 * i - 0.647 * q
    b = lum - 1.106 * i + 1.703 * q
    return np.clip(np.stack([r, g, b], -1), 0, 1).astype(np.float32)


# ------------------------------------------------------------------------------------------- FS-sim: face swap
@_register("fs_sbi", "FS")
def fs_sbi(sample: RealSample, rng: np.random.Generator, draw_real: DrawReal) -> np.ndarray:
    """Self-blended image: a colour- and frequency-altered, slightly shifted copy blended through a deformed hull."""
    img, n = sample.image, _size(sample)
    src = img * rng.uniform(0.9, 1.1, size=3) + rng.uniform(-0.05, 0.05, size=3)
    src = (
        blur(src, rng.uniform(0.6, 1.2) * n / 112 + 0.4) if rng.random() < 0.6 else rerender(src, rng.uniform(1.5, 2.2))
    )
    scale = rng.uniform(0.96, 1.04)
    shift = rng.uniform(-0.025, 0.025, size=2) * n
    centre = np.array(sample.parts["face"][:2])
    src = affine(np.clip(src, 0, 1).astype(np.float32), np.eye(2) * scale, centre - scale * centre + shift)
    src = src + _grain(rng, img.shape, rng.uniform(0.008, 0.02))  # the blended copy's own sensor noise
    mask = _soft_mask(
        img.shape[:2], sample.parts["face"], rng, rng.uniform(0.01, 0.03) * n, rng.uniform(0.75, 1.0), 0.3
    )
    return mask * src + (1 - mask) * img


@_register("fs_xray", "FS")
def fs_xray(sample: RealSample, rng: np.random.Generator, draw_real: DrawReal) -> np.ndarray:
    """Face X-ray style: a second image's face region, aligned, colour-transferred, feather-blended in."""
    img, n = sample.image, _size(sample)
    mask = _soft_mask(
        img.shape[:2], sample.parts["face"], rng, rng.uniform(0.015, 0.04) * n, rng.uniform(0.7, 0.95), 0.2
    )
    donor = _align(draw_real(), sample)
    donor = _colour_transfer(rerender(donor, rng.uniform(1.3, 1.8)), img, mask)
    donor = donor + _grain(rng, img.shape, rng.uniform(0.008, 0.02))
    return mask * donor + (1 - mask) * img


@_register("fs_lowres", "FS")
def fs_lowres(sample: RealSample, rng: np.random.Generator, draw_real: DrawReal) -> np.ndarray:
    """DeepFakes-like: a donor face rendered at a low resolution, pasted with a narrow seam."""
    img, n = sample.image, _size(sample)
    mask = _soft_mask(img.shape[:2], sample.parts["face"], rng, rng.uniform(0.004, 0.012) * n, rng.uniform(0.7, 0.9))
    donor = rerender(_align(draw_real(), sample), rng.uniform(2.0, 3.0), "box", "bilinear")
    donor = _colour_transfer(donor, img, mask) + _grain(rng, img.shape, rng.uniform(0.008, 0.02))
    return mask * donor + (1 - mask) * img


@_register("fs_pyramid", "FS", held_out=True)
def fs_pyramid(sample: RealSample, rng: np.random.Generator, draw_real: DrawReal) -> np.ndarray:
    """Multi-band (Laplacian pyramid) blend of a sharpened, aligned donor over the inner face."""
    img, n = sample.image, _size(sample)
    hard = _parts_mask(sample, ("left_eye", "right_eye", "nose", "mouth", "left_brow", "right_brow"), 1.6, 0)
    donor = _align(draw_real(), sample, order=3)
    donor = np.clip(donor + 0.8 * (donor - blur(donor, 1.0)), 0, 1)
    donor = _colour_transfer(donor, img, hard)
    out = np.zeros_like(img)
    lo_d, lo_i = donor, img
    for level in range(3):
        sig = 2.0**level
        m = blur(hard[..., 0], sig * 0.8 * n / 112 + 0.5)[..., None]
        nd, ni = blur(lo_d, sig), blur(lo_i, sig)
        out += m * (lo_d - nd) + (1 - m) * (lo_i - ni)
        lo_d, lo_i = nd, ni
    m = blur(hard[..., 0], 8.0 * n / 112 + 1)[..., None]
    return out + m * lo_d + (1 - m) * lo_i


# ------------------------------------------------------------------------------------------ FR-sim: reenactment
def _bumps(sample: RealSample, rng: np.random.Generator, names: tuple[str, ...], amp: float) -> tuple[np.ndarray, ...]:
    """A displacement field of Gaussian bumps centred on components (a landmark-driven expression change)."""
    h, w = sample.image.shape[:2]
    yy, xx = np.mgrid[:h, :w].astype(np.float32)
    dy, dx = np.zeros((h, w), np.float32), np.zeros((h, w), np.float32)
    for nm in names:
        cy, cx, ry, rx = sample.parts[nm]
        g = np.exp(-(((yy - cy) / (1.6 * ry)) ** 2 + ((xx - cx) / (1.3 * rx)) ** 2))
        dy += g * rng.uniform(-amp, amp) * h + g * (yy - cy) * rng.uniform(-0.35, 0.35)
        dx += g * rng.uniform(-amp, amp) * w * 0.5
    return dy, dx


@_register("fr_tps_bilinear", "FR")
def fr_tps_bilinear(sample: RealSample, rng: np.random.Generator, draw_real: DrawReal) -> np.ndarray:
    """Eyes and mouth moved by a smooth landmark-driven field, re-rendered at lower resolution (bilinear)."""
    img, n = sample.image, _size(sample)
    names = ("left_eye", "right_eye", "mouth")
    dy, dx = _bumps(sample, rng, names, 0.03)
    moved = rerender(warp(img, dy, dx, order=1), rng.uniform(2.5, 3.5), "bilinear", "bilinear")
    moved = moved + _grain(rng, img.shape, rng.uniform(0.02, 0.04), 0.8)
    mask = _parts_mask(sample, names, rng.uniform(2.2, 2.8), rng.uniform(0.01, 0.02) * n)
    return mask * moved + (1 - mask) * img


@_register("fr_elastic_bicubic", "FR")
def fr_elastic_bicubic(sample: RealSample, rng: np.random.Generator, draw_real: DrawReal) -> np.ndarray:
    """A random elastic field over the lower face, bicubic resampling from a half-resolution render (ringing)."""
    img, n = sample.image, _size(sample)
    shape = img.shape[:2]
    amp = rng.uniform(0.015, 0.03) * n
    dy, dx = amp * smooth_field(rng, shape, n / 16), amp * smooth_field(rng, shape, n / 16)
    small = resize(img, (n // 4, n // 4), "box")
    moved = resize(warp(small, dy[::4, ::4] / 4, dx[::4, ::4] / 4, order=3), shape, "bicubic")
    moved = moved + _grain(rng, img.shape, rng.uniform(0.02, 0.04), 0.8)
    cy, cx, ry, rx = sample.parts["face"]
    lower = (cy + 0.25 * ry, cx, 0.7 * ry, 0.9 * rx)
    mask = _soft_mask(shape, lower, rng, rng.uniform(0.01, 0.025) * n, rng.uniform(0.9, 1.1), 0.2)
    return mask * np.clip(moved, 0, 1) + (1 - mask) * img


@_register("fr_mouth_rerender", "FR")
def fr_mouth_rerender(sample: RealSample, rng: np.random.Generator, draw_real: DrawReal) -> np.ndarray:
    """Mouth opened/closed and re-synthesised: nearest up-sampling plus smoothing, a GAN decoder's texture."""
    img, n = sample.image, _size(sample)
    dy, dx = _bumps(sample, rng, ("mouth",), 0.04)
    moved = warp(img, dy, dx, order=1)
    small = resize(moved, (n // 3, n // 3), "box")
    up = resize(small, (n, n), "nearest")
    k = np.array([1.0, 2.0, 1.0], np.float32)
    up = ndimage.convolve1d(ndimage.convolve1d(up, k / 4, axis=0), k / 4, axis=1)
    up = up * rng.uniform(0.92, 1.08, size=3) + _grain(rng, img.shape, rng.uniform(0.02, 0.04), 0.8)
    mask = _parts_mask(sample, ("mouth", "nose"), rng.uniform(2.2, 2.8), rng.uniform(0.008, 0.02) * n)
    return mask * np.clip(up, 0, 1) + (1 - mask) * img


@_register("fr_eyes_nearest", "FR", held_out=True)
def fr_eyes_nearest(sample: RealSample, rng: np.random.Generator, draw_real: DrawReal) -> np.ndarray:
    """Eyes and brows warped with nearest-neighbour sampling (jagged texture), then lightly smoothed."""
    img, n = sample.image, _size(sample)
    names = ("left_eye", "right_eye", "left_brow", "right_brow")
    dy, dx = _bumps(sample, rng, names, 0.03)
    scale = rng.uniform(1.3, 1.7)
    moved = warp(img, dy + (scale - 1) * 0.5, dx + (scale - 1) * 0.5, order=0)
    moved = blur(moved, 0.5)
    mask = _parts_mask(sample, names, rng.uniform(1.8, 2.4), rng.uniform(0.01, 0.02) * n)
    return mask * moved + (1 - mask) * img


# --------------------------------------------------------------------------------- EFS-sim: entire synthesis
def _down(img: np.ndarray, factor: int) -> np.ndarray:
    n = img.shape[0]
    return resize(img, (n // factor, n // factor), "box")


@_register("efs_tconv", "EFS")
def efs_tconv(sample: RealSample, rng: np.random.Generator, draw_real: DrawReal) -> np.ndarray:
    """Transposed-convolution ×2 up-sampling whose four phases have unequal gains (checkerboard)."""
    return _decoder_up(sample.image, rng, 0.08)


@_register("efs_nearest_smooth", "EFS")
def efs_nearest_smooth(sample: RealSample, rng: np.random.Generator, draw_real: DrawReal) -> np.ndarray:
    """Nearest-neighbour up-sampling of a ×2 (or ×4) render, followed by a random smoothing kernel."""
    img, n = sample.image, _size(sample)
    factor = 2 if rng.random() < 0.7 else 4
    up = resize(_down(img, factor), (n, n), "nearest")
    k = rng.uniform(0.5, 1.0, size=(3, 3)).astype(np.float32)
    k[1, 1] += rng.uniform(0.5, 1.5)
    return np.clip(ndimage.convolve(up, (k / k.sum())[..., None], mode="reflect"), 0, 1).astype(np.float32)


@_register("efs_bilinear_conv", "EFS")
def efs_bilinear_conv(sample: RealSample, rng: np.random.Generator, draw_real: DrawReal) -> np.ndarray:
    """Bilinear ×2 up-sampling, a small learned-like 3×3 convolution, and injected spectral peaks."""
    img, n = sample.image, _size(sample)
    up = resize(_down(img, 2), (n, n), "bilinear")
    k = np.zeros((3, 3), np.float32)
    k[1, 1] = 1.0
    k += rng.normal(0, 0.12, size=(3, 3))
    k[1, 1] += 1.0 - k.sum()
    out = ndimage.convolve(up, k[..., None], mode="reflect")
    yy, xx = np.mgrid[:n, :n].astype(np.float32)
    for _ in range(int(rng.integers(1, 3))):
        fy, fx = rng.choice([n / 4, n / 2, n / 8], size=2)
        phase = rng.uniform(0, 2 * np.pi)
        out = out + rng.uniform(3.0, 6.0) / 255 * np.cos(2 * np.pi * (fy * yy + fx * xx) / n + phase)[..., None]
    return np.clip(out, 0, 1).astype(np.float32)


@_register("efs_diffusion", "EFS", held_out=True)
def efs_diffusion(sample: RealSample, rng: np.random.Generator, draw_real: DrawReal) -> np.ndarray:
    """Diffusion-like: a high-frequency deficit plus a faint ×8 latent-decoder periodicity."""
    img, n = sample.image, _size(sample)
    out = rerender(img, rng.uniform(1.5, 2.0), "lanczos", "lanczos")
    tile = rng.normal(0, 1, size=(8, 8, 3)).astype(np.float32)
    pattern = np.tile(tile, (n // 8 + 1, n // 8 + 1, 1))[:n, :n]
    out = out + rng.uniform(1.0, 2.5) / 255 * pattern * (0.5 + blur(img, 2.0))
    return np.clip(out, 0, 1).astype(np.float32)


# ---------------------------------------------------------------------------------- FE-sim: attribute editing
_EDIT_REGIONS = (
    ("mouth", "nose"),
    ("left_eye", "right_eye", "left_brow", "right_brow"),
    ("left_eye", "right_eye", "nose"),
    ("nose", "mouth", "left_brow", "right_brow"),
)


@_register("fe_hue", "FE")
def fe_hue(sample: RealSample, rng: np.random.Generator, draw_real: DrawReal) -> np.ndarray:
    """Hue/saturation change of one component (lips, eyes, brows), re-rendered by the editor at lower resolution."""
    img, n = sample.image, _size(sample)
    names = _EDIT_REGIONS[int(rng.integers(len(_EDIT_REGIONS)))]
    edit = _hsv_shift(img, rng.uniform(0.08, 0.3) * rng.choice([-1, 1]), rng.uniform(1.2, 1.8))
    edit = _decoder_up(edit, rng, 0.25, 4)
    mask = _parts_mask(sample, names, rng.uniform(2.2, 2.8), rng.uniform(0.01, 0.02) * n)
    return mask * edit + (1 - mask) * img


@_register("fe_smooth", "FE")
def fe_smooth(sample: RealSample, rng: np.random.Generator, draw_real: DrawReal) -> np.ndarray:
    """Beautification: skin texture smoothed inside the face, components kept."""
    img, n = sample.image, _size(sample)
    smooth = _decoder_up(blur(img, rng.uniform(1.5, 2.5) * n / 112 + 0.5), rng, 0.25, 4)
    face = _soft_mask(img.shape[:2], sample.parts["face"], rng, 0.02 * n, rng.uniform(0.8, 0.95))
    comps = _parts_mask(sample, ("left_eye", "right_eye", "mouth", "left_brow", "right_brow"), 1.3, 0.01 * n)
    mask = face * (1 - comps)
    return mask * smooth + (1 - mask) * img


@_register("fe_inpaint", "FE")
def fe_inpaint(sample: RealSample, rng: np.random.Generator, draw_real: DrawReal) -> np.ndarray:
    """Inpainting-like fill of a component from its surroundings, then local re-up-sampling and fresh grain."""
    img, n = sample.image, _size(sample)
    names = _EDIT_REGIONS[int(rng.integers(len(_EDIT_REGIONS)))]
    hole = _parts_mask(sample, names, rng.uniform(1.6, 2.2), 0)[..., 0]
    known = 1.0 - hole
    fill = img.copy()
    for sig in (8.0, 4.0, 2.0):  # coarse-to-fine normalised convolution from the hole's border
        s = sig * n / 112 + 0.5
        num = blur(fill * known[..., None], s)
        den = blur(known, s)[..., None] + 1e-4
        fill = np.where(hole[..., None] > 0, num / den, img)
    fill = _decoder_up(fill, rng, 0.25, 4)
    fill = fill + rng.uniform(0.01, 0.025) * blur(rng.standard_normal(img.shape).astype(np.float32), 0.7)
    mask = blur(hole, rng.uniform(0.01, 0.02) * n)[..., None]
    return mask * np.clip(fill, 0, 1) + (1 - mask) * img


@_register("fe_sharpen_relight", "FE", held_out=True)
def fe_sharpen_relight(sample: RealSample, rng: np.random.Generator, draw_real: DrawReal) -> np.ndarray:
    """Local relighting and over-sharpening (unsharp-mask halos) of a component."""
    img, n = sample.image, _size(sample)
    names = _EDIT_REGIONS[int(rng.integers(len(_EDIT_REGIONS)))]
    edit = img * rng.uniform(0.8, 1.25) + rng.uniform(-0.05, 0.05)
    edit = edit + rng.uniform(1.0, 2.0) * (edit - blur(edit, 1.2))
    mask = _parts_mask(sample, names, rng.uniform(1.6, 2.2), rng.uniform(0.01, 0.02) * n)
    return mask * np.clip(edit, 0, 1) + (1 - mask) * img


# ------------------------------------------------------------------ held-out family: non-aligned double JPEG
def _shifted_jpeg(img: np.ndarray, quality: int, dy: int, dx: int) -> np.ndarray:
    """JPEG-compress an image whose 8×8 grid is offset by `(dy, dx)` (reflect-padded, then cropped back)."""
    n = img.shape[0]
    pad = np.pad(img, ((dy, 8), (dx, 8), (0, 0)), mode="reflect")
    dec = jpeg(to_uint8(pad), quality).astype(np.float32) / 255.0
    return dec[dy : dy + n, dx : dx + n]


@_register("djpeg_shifted", "djpeg", held_out=True)
def djpeg_shifted(sample: RealSample, rng: np.random.Generator, draw_real: DrawReal) -> np.ndarray:
    """A first JPEG on a grid shifted by 1–7 px (the final camera JPEG makes it non-aligned double compression)."""
    dy, dx = (int(v) for v in rng.integers(1, 8, size=2))
    return _shifted_jpeg(sample.image, int(rng.integers(50, 80)), dy, dx)


@_register("djpeg_aligned", "djpeg", held_out=True)
def djpeg_aligned(sample: RealSample, rng: np.random.Generator, draw_real: DrawReal) -> np.ndarray:
    """A first, low-quality JPEG on the final grid (aligned double compression)."""
    return _shifted_jpeg(sample.image, int(rng.integers(35, 65)), 0, 0)


@_register("djpeg_local", "djpeg", held_out=True)
def djpeg_local(sample: RealSample, rng: np.random.Generator, draw_real: DrawReal) -> np.ndarray:
    """A shifted-grid JPEG pasted into the face region only (a spliced, differently compressed region)."""
    dy, dx = (int(v) for v in rng.integers(1, 8, size=2))
    comp = _shifted_jpeg(sample.image, int(rng.integers(40, 70)), dy, dx)
    mask = _soft_mask(sample.image.shape[:2], sample.parts["face"], rng, 0.01 * _size(sample), 0.9)
    return mask * comp + (1 - mask) * sample.image


# --------------------------------------------------------------------- held-out family: global resampling
def _about_centre(n: int, m: np.ndarray) -> np.ndarray:
    c = np.array([(n - 1) / 2, (n - 1) / 2])
    return c - m @ c


@_register("resample_rotate", "resample", held_out=True)
def resample_rotate(sample: RealSample, rng: np.random.Generator, draw_real: DrawReal) -> np.ndarray:
    """Global rotation by 3–20°, bilinear."""
    n = _size(sample)
    a = np.deg2rad(rng.uniform(3, 20) * rng.choice([-1, 1]))
    m = np.array([[np.cos(a), -np.sin(a)], [np.sin(a), np.cos(a)]])
    return affine(sample.image, m, _about_centre(n, m), order=1)


@_register("resample_upscale", "resample", held_out=True)
def resample_upscale(sample: RealSample, rng: np.random.Generator, draw_real: DrawReal) -> np.ndarray:
    """Global up-scaling by 1.15–1.6 (a central crop enlarged), bicubic."""
    n = _size(sample)
    m = np.eye(2) / rng.uniform(1.15, 1.6)
    return np.clip(affine(sample.image, m, _about_centre(n, m), order=3), 0, 1)


@_register("resample_shear", "resample", held_out=True)
def resample_shear(sample: RealSample, rng: np.random.Generator, draw_real: DrawReal) -> np.ndarray:
    """Global shear and anisotropic scaling, bilinear."""
    n = _size(sample)
    m = np.array([[rng.uniform(0.85, 1.0), rng.uniform(-0.2, 0.2)], [rng.uniform(-0.2, 0.2), rng.uniform(0.85, 1.0)]])
    return affine(sample.image, m, _about_centre(n, m), order=1)


def generators_of(family: str, *, held_out: bool | None = None) -> list[str]:
    """Names of a family's sub-generators, optionally only the held-out (or only the seen) ones."""
    return [g.name for g in GENERATORS.values() if g.family == family and (held_out is None or g.held_out == held_out)]
