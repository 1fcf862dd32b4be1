"""Throughput of `Detector` and recall of the face detectors, measured offline: ``python -m r2m_hf.detector.benchmark``.

Throughput: images per second (a 512-pixel photo with one face, and ready-made crops) and seconds per 10-second
clip at 16 frames, for a tiny zoo specialist and for a ViT-B/16-sized classifier (transformers' `ViTConfig`
defaults, random weights: speed does not depend on the values). Recall: faces found on scikit-image's LFW subset
(its 100 faces, enlarged and framed so that a whole head shows) and detections on its 100 non-face patches and on
15 photos without faces. Nothing is downloaded; scikit-image comes with the ``bench`` extra.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

from PIL import Image, ImageOps

NO_FACE_PHOTOS = (
    "coffee", "chelsea", "cat", "rocket", "hubble_deep_field", "immunohistochemistry", "retina", "coins", "colorwheel",
    "brick", "grass", "gravel", "page", "text", "moon",
)  # fmt: skip


def _astronaut() -> Image.Image:
    from skimage import data

    return Image.fromarray(data.astronaut())


def vit_base_folder(folder: Path) -> Path:
    """A ViT-B/16 image classifier (224 px, real/fake labels) with random weights, saved with its processor."""
    import torch
    from transformers import ViTConfig, ViTForImageClassification, ViTImageProcessor

    torch.manual_seed(0)
    config = ViTConfig(num_labels=2, id2label={0: "real", 1: "fake"}, label2id={"real": 0, "fake": 1})
    ViTForImageClassification(config).save_pretrained(folder)
    ViTImageProcessor(size={"height": 224, "width": 224}).save_pretrained(folder)
    return folder


def write_clip(path: Path, seconds: float = 10.0, fps: int = 25, size: tuple[int, int] = (640, 360)) -> Path:
    """An H.264 clip of the astronaut's face drifting across a grey frame."""
    import av

    face = _astronaut().resize((size[1], size[1]))
    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264", rate=fps)
        stream.width, stream.height, stream.pix_fmt = size[0], size[1], "yuv420p"
        for i in range(int(seconds * fps)):
            frame = Image.new("RGB", size, (90, 90, 90))
            frame.paste(face, (int((size[0] - size[1]) * i / (seconds * fps)), 0))
            for packet in stream.encode(av.VideoFrame.from_image(frame)):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return path


def _timed(call, repeat: int = 1) -> float:
    call()  # warm-up: first-call allocations and lazy imports do not count
    start = time.perf_counter()
    for _ in range(repeat):
        call()
    return (time.perf_counter() - start) / repeat


def throughput(model: Path, clip: Path, *, images: int, device: str, batch_size: int) -> dict[str, float]:
    """Images/s with and without face detection, and seconds per clip at 16 frames (faces found, then none)."""
    from .detector import Detector

    photo = _astronaut()
    crops = [photo.crop((150, 30, 300, 200))] * images
    with_faces = Detector.from_pretrained(model, device=device, batch_size=batch_size)
    as_crops = Detector.from_pretrained(model, device=device, batch_size=batch_size, faces="none")
    return {
        "photos/s (faces found)": images / _timed(lambda: with_faces.predict([photo] * images, progress=False)),
        "crops/s (faces='none')": images / _timed(lambda: as_crops.predict(crops, progress=False)),
        "s per 10 s clip, 16 frames (faces found)": _timed(lambda: with_faces.predict(clip, progress=False)),
        "s per 10 s clip, 16 frames (faces='none')": _timed(lambda: as_crops.predict(clip, progress=False)),
        "face detector": with_faces.face_detector.name,
    }


def _lfw(start: int, count: int) -> list[Image.Image]:
    from skimage import data

    faces = data.lfw_subset()[start : start + count]
    return [
        ImageOps.expand(Image.fromarray((a * 255).astype("uint8")).resize((100, 100)), 50, fill=128).convert("RGB")
        for a in faces
    ]


def face_recall() -> dict[str, dict[str, str]]:
    """Per detector: LFW faces found, LFW non-face patches with a detection, detections on no-face photos."""
    from skimage import data

    from .faces import load_face_detector
    from .mtcnn import mtcnn_weights_dir

    faces, patches = _lfw(0, 100), _lfw(100, 100)
    photos = {name: Image.fromarray(getattr(data, name)()) for name in NO_FACE_PHOTOS}
    results = {}
    for name in ("mtcnn", "haar") if mtcnn_weights_dir() else ("haar",):
        detector = load_face_detector(name)
        start = time.perf_counter()
        found = sum(bool(detector.detect(image)) for image in faces)
        seconds = (time.perf_counter() - start) / len(faces)
        false_patches = sum(bool(detector.detect(image)) for image in patches)
        false_photos = {k: len(detector.detect(image)) for k, image in photos.items()}
        astronaut = len(detector.detect(_astronaut()))
        results[name] = {
            "LFW faces found": f"{found}/100",
            "LFW non-face patches flagged": f"{false_patches}/100",
            "boxes on 15 no-face photos": f"{sum(false_photos.values())} "
            f"({', '.join(f'{k} {v}' for k, v in false_photos.items() if v) or 'none'})",
            "astronaut: faces found (1 expected)": str(astronaut),
            "ms per 200x200 image": f"{seconds * 1000:.0f}",
        }
    return results


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m r2m_hf.detector.benchmark", description=__doc__.split("\n")[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--images", type=int, default=32, help="photos and crops per throughput measurement")
    parser.add_argument("--skip-vit-base", action="store_true", help="only the tiny zoo model")
    parser.add_argument("--skip-recall", action="store_true", help="no face-detector recall measurement")
    parser.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (default: torch's)")
    args = parser.parse_args(argv)
    import torch

    from ..zoo import build_zoo

    if args.threads:
        torch.set_num_threads(args.threads)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, device {args.device}")
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        clip = write_clip(root / "clip.mp4")
        models = {"tiny zoo specialist (32 px)": build_zoo(root / "zoo", names=("fs",)).specialists[0]}
        if not args.skip_vit_base:
            models["ViT-B/16 (224 px, random weights)"] = vit_base_folder(root / "vit-base")
        for label, folder in models.items():
            print(f"\n## {label}")
            numbers = throughput(folder, clip, images=args.images, device=args.device, batch_size=args.batch_size)
            for key, value in numbers.items():
                print(f"  {key}: {value:.2f}" if isinstance(value, float) else f"  {key}: {value}")
    if not args.skip_recall:
        for name, rows in face_recall().items():
            print(f"\n## face detector {name}")
            for key, value in rows.items():
                print(f"  {key}: {value}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
