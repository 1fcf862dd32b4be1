"""What the detector is given: files, folders (recursive) and in-memory images, sorted into images and videos.

Owns the extension lists, the walk over folders (a folder's non-media files are named in one "skipped" entry,
never dropped silently), and reading one image safely: EXIF orientation applied, any mode converted to RGB, and
truncated, corrupt or over-large files (PIL's decompression-bomb limit, `PIL.Image.MAX_IMAGE_PIXELS`) turned into a
one-line `MediaError` that becomes the file's error note.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from PIL import Image, ImageOps, UnidentifiedImageError

IMAGE_EXTENSIONS = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff", ".gif", ".jfif"})
VIDEO_EXTENSIONS = frozenset({".mp4", ".mov", ".avi", ".webm", ".mkv", ".m4v", ".mpg", ".mpeg", ".wmv", ".flv"})


class MediaError(Exception):
    """One file cannot be read as an image or a video; the message is that file's error note."""


@dataclass(frozen=True)
class MediaItem:
    """One thing to predict on.

    Attributes:
        path (`str`): the file path as given (or found under a folder), or ``"<image>"``.
        kind (`str`): ``"image"``, ``"video"``, or ``"other"`` (not scored; `note` says why).
        image (`PIL.Image.Image`, *optional*): an in-memory image.
        note (`str`, *optional*): why an ``"other"`` item is not scored.
    """

    path: str
    kind: str
    image: Image.Image | None = None
    note: str | None = None


def media_kind(path: str | Path) -> str | None:
    """``"image"`` or ``"video"`` from the file extension, None when it names neither."""
    suffix = Path(path).suffix.lower()
    return "image" if suffix in IMAGE_EXTENSIONS else "video" if suffix in VIDEO_EXTENSIONS else None


def _sniff(path: Path) -> str | None:
    """The kind of a file with an unknown extension, from its content."""
    try:
        with Image.open(path):
            return "image"
    except Exception:
        pass
    from .video import has_video_stream

    return "video" if has_video_stream(path) else None


def collect_inputs(inputs) -> list[MediaItem]:
    """Expand paths, folders and images into the items to predict on, in a stable order.

    Args:
        inputs: a path, a PIL image or a numpy array, or a list of them. Folders are walked recursively (sorted;
            hidden files skipped) for image and video extensions; the other files they hold are named in one
            ``"other"`` item for the folder. A file given by name with an unknown extension is recognised by its
            content.

    Returns:
        `list[MediaItem]`: one item per file or image, including ``"other"`` items for what cannot be scored.
    """
    return list(iter_inputs(inputs))


def iter_inputs(inputs) -> Iterator[MediaItem]:
    """`collect_inputs` one item at a time, so that a long stream of images is never held in memory at once."""
    if isinstance(inputs, (str, os.PathLike, Image.Image)) or hasattr(inputs, "__array_interface__"):
        inputs = [inputs]
    for entry in inputs:
        if isinstance(entry, Image.Image):
            yield MediaItem(getattr(entry, "filename", "") or "<image>", "image", image=entry)
        elif hasattr(entry, "__array_interface__"):
            yield MediaItem("<image>", "image", image=Image.fromarray(entry))
        elif not isinstance(entry, (str, os.PathLike)):
            yield MediaItem(repr(entry)[:80], "other", note=f"cannot read a {type(entry).__name__}")
        elif Path(entry).is_dir():
            yield from _walk(Path(entry))
        elif not Path(entry).exists():
            yield MediaItem(os.fspath(entry), "other", note="no such file or folder")
        else:
            kind = media_kind(entry) or _sniff(Path(entry))
            note = None if kind else "not an image or video file"
            yield MediaItem(os.fspath(entry), kind or "other", note=note)


def _walk(folder: Path) -> list[MediaItem]:
    found, skipped = [], []
    for root, dirs, files in os.walk(folder):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        for name in sorted(files):
            if not name.startswith("."):
                path = os.path.join(root, name)
                kind = media_kind(path)
                (found if kind else skipped).append(MediaItem(path, kind) if kind else path)
    if not found:
        what = f" ({len(skipped)} other files)" if skipped else ""
        return [MediaItem(os.fspath(folder), "other", note=f"no image or video files in this folder{what}")]
    if skipped:  # one note for the folder, not one record per sidecar file
        names = ", ".join(os.path.relpath(path, folder) for path in skipped[:5])
        more = f" and {len(skipped) - 5} more" if len(skipped) > 5 else ""
        note = f"skipped {len(skipped)} files that are not images or videos: {names}{more}"
        found.append(MediaItem(os.fspath(folder), "other", note=note))
    return found


def load_image(path: str | Path) -> Image.Image:
    """Read an image file as upright RGB.

    Raises:
        `MediaError`: the file is not an image, is truncated or corrupt, or exceeds PIL's pixel limit.
    """
    try:
        with warnings.catch_warnings():
            # PIL only warns between MAX_IMAGE_PIXELS and twice that; both are refused here
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(path) as image:
                image.load()
                image = ImageOps.exif_transpose(image)
                return to_rgb(image)
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as err:
        raise MediaError(f"image refused as a possible decompression bomb: {' '.join(str(err).split())}") from None
    except UnidentifiedImageError:
        raise MediaError("not a readable image (unknown or corrupt format)") from None
    except (OSError, SyntaxError, ValueError) as err:
        raise MediaError(f"cannot read image: {' '.join(str(err).split()) or type(err).__name__}") from None


def to_rgb(image: Image.Image) -> Image.Image:
    """Any PIL mode as RGB; transparent pixels are put on white, 16-bit and float images rescaled to 8 bits."""
    if image.mode == "RGB":
        return image
    if image.mode in ("I;16", "I;16B", "I;16L", "I", "F"):
        import numpy as np

        values = np.asarray(image, dtype=np.float64)
        low, high = float(values.min()), float(values.max())
        values = (values - low) / (high - low or 1.0) * 255
        return Image.fromarray(values.astype(np.uint8)).convert("RGB")
    if image.mode in ("RGBA", "LA", "PA") or (image.mode == "P" and "transparency" in image.info):
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    return image.convert("RGB")
