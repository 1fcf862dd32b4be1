"""`Detector`: a real/fake image classifier in use — faces found and cropped, batched scoring, one result per file.

Owns loading the classifier (any `AutoModelForImageClassification` whose labels say which class is fake, never
remote code unless asked), the decision threshold (the user's, else the calibrated one stored in config.json,
else 0.5), and the prediction loop: each input becomes crops (one per face, per sampled frame for videos), crops
of consecutive files are scored together in batches, and each file's scores are folded back into a `Prediction`.
A file that cannot be read, or shows no face, gets an error note; the loop goes on.
"""

from __future__ import annotations

import logging
import math
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from ..errors import ConfigError, LabelError, SourceError
from ..heads import resolve_fake_index
from .calibration import Calibration, read_calibration
from .faces import CropPolicy, FaceDetector, load_face_detector
from .inputs import MediaError, MediaItem, collect_inputs, iter_inputs, load_image, to_rgb
from .types import FaceBox, FrameScore, Prediction
from .video import aggregate_scores, parse_aggregate, read_frames

logger = logging.getLogger(__name__)
DEFAULT_THRESHOLD = 0.5


def check_threshold(threshold) -> float:
    """A user threshold as a float in [0, 1], or a `ConfigError`."""
    if isinstance(threshold, bool) or not isinstance(threshold, (int, float)) or not 0.0 <= threshold <= 1.0:
        raise ConfigError(f"threshold must be a number in [0, 1], got {threshold!r}")
    return float(threshold)


def _positive_int(name: str, value) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ConfigError(f"{name} must be a positive integer, got {value!r}")
    return value


def input_size(processor, config) -> int:
    """The side of the square image the classifier expects, from its processor (or config)."""
    for attr in ("crop_size", "size"):
        size = getattr(processor, attr, None)
        if attr == "crop_size" and not getattr(processor, "do_center_crop", False):
            continue
        size = size if isinstance(size, dict) else getattr(size, "__dict__", None) or {}
        for key in ("height", "shortest_edge", "width"):
            if isinstance(size.get(key), int):
                return size[key]
    return int(getattr(config, "image_size", 224) or 224)


@dataclass
class _Job:
    """One input on its way through the batches: its crops and where each crop's score goes."""

    item: MediaItem
    crops: list[Image.Image] = field(default_factory=list)
    owners: list[tuple[int, int]] = field(default_factory=list)  # (frame position, face position) of each crop
    faces: list[list[FaceBox]] = field(default_factory=list)  # per frame (an image is one frame)
    frames: list[tuple[int, float]] | None = None  # (index, time) of each sampled video frame
    notes: list[str | None] = field(default_factory=list)  # per frame
    file_notes: list[str] = field(default_factory=list)
    error: str | None = None
    probabilities: np.ndarray | None = None


class Detector:
    """A deepfake detector ready to predict on images, folders and videos.

    Build it with `Detector.from_pretrained`; call `predict`.

    Attributes:
        model (`PreTrainedModel`), image_processor: the classifier and its processor.
        fake_index (`int`): the logit index of the fake class.
        crop (`CropPolicy`): how faces become inputs; `face_detector`: the detector used (None with faces="none").
        threshold (`float`), threshold_source (`str`): the decision threshold and where it came from.
        calibration (`Calibration`, *optional*): the calibration stored with the model.
        frames (`int`), aggregate (`str`), batch_size (`int`), device (`torch.device`): as given.
    """

    def __init__(
        self,
        model,
        image_processor,
        *,
        fake_index: int,
        crop: CropPolicy,
        face_detector: FaceDetector | None,
        threshold: float | None = None,
        calibration: Calibration | None = None,
        frames: int = 16,
        aggregate: str = "mean",
        batch_size: int = 16,
        device: str | torch.device | None = None,
        name: str | None = None,
    ):
        self.device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
        self.model = model.to(self.device).eval()
        self.image_processor, self.fake_index = image_processor, fake_index
        self.crop, self.face_detector = crop, face_detector
        self.calibration = calibration
        if threshold is not None:
            self.threshold, self.threshold_source = check_threshold(threshold), "user"
        elif calibration is not None:
            self.threshold, self.threshold_source = calibration.value, "calibrated"
        else:
            self.threshold, self.threshold_source = DEFAULT_THRESHOLD, "default"
        self.frames = _positive_int("frames", frames)
        self.batch_size = _positive_int("batch_size", batch_size)
        parse_aggregate(aggregate)
        self.aggregate = aggregate
        self.name = name or getattr(model, "name_or_path", None) or type(model).__name__

    @classmethod
    def from_pretrained(
        cls,
        model_or_folder: str | Path,
        *,
        device: str | None = None,
        faces: str = "auto",
        align: bool = False,
        all_faces: bool = False,
        threshold: float | None = None,
        frames: int = 16,
        aggregate: str = "mean",
        batch_size: int = 16,
        token: str | None = None,
        revision: str | None = None,
        fake_label: str | int | None = None,
        face_detector: str = "auto",
        trust_remote_code: bool = False,
    ) -> Detector:
        """Load a classifier from a folder or Hub repo and set up faces, threshold and batching.

        Args:
            model_or_folder (`str` or `Path`): a local folder or a Hub repo id of an image classifier whose
                ``id2label`` names a fake and a real class (``fake_label`` says which, otherwise).
            device (`str`, *optional*): torch device; default CUDA when available, else CPU.
            faces (`str`): ``"auto"`` (detect and crop faces), ``"none"`` (inputs are crops already) or
                ``"deepfakebench"`` (5-point alignment, margin 1.3, 256-pixel crop, then the model's size).
            align (`bool`): aligned crops from the 5 landmarks (needs MTCNN).
            all_faces (`bool`): score every face, not only the largest; the file's probability is their maximum.
            threshold (`float`, *optional*): decision threshold in [0, 1]; default: the calibrated one, else 0.5.
            frames (`int`): frames sampled per video.
            aggregate (`str`): video score from frame scores: ``mean``, ``max``, ``median`` or ``top-K``.
            batch_size (`int`): crops per forward pass.
            token (`str`, *optional*), revision (`str`, *optional*): for Hub repos.
            fake_label (`str` or `int`, *optional*): the fake class, when the labels do not say.
            face_detector (`str`): ``"auto"`` (MTCNN if installed, else Haar), ``"mtcnn"`` or ``"haar"``.
            trust_remote_code (`bool`): allow a repo's own model code (off: only transformers' classes run).

        Returns:
            `Detector`
        """
        from transformers import AutoImageProcessor, AutoModelForImageClassification

        from ..deepfakebench import register

        register()  # converted DeepfakeBench detectors (model_type deepfakebench_clip) load without remote code
        if threshold is not None:
            check_threshold(threshold)
        parse_aggregate(aggregate)
        name = str(model_or_folder)
        path = Path(name).expanduser()
        source = str(path) if path.is_dir() else name
        if not path.is_dir() and (path.is_absolute() or name.startswith((".", "~")) or name.count("/") > 1):
            raise SourceError(f"model folder {name!r} does not exist; give a model folder or a Hub repo id")
        options = {"token": token, "revision": revision, "trust_remote_code": trust_remote_code}
        try:
            model = AutoModelForImageClassification.from_pretrained(source, **options)
        except Exception as err:
            raise SourceError(f"cannot load image classifier {name!r}: {' '.join(str(err).split())[:300]}") from None
        try:
            processor = AutoImageProcessor.from_pretrained(source, **options)
        except Exception as err:
            raise SourceError(f"{name!r} has no usable image processor: {' '.join(str(err).split())[:300]}") from None
        id2label = {int(k): str(v) for k, v in (model.config.id2label or {}).items()}
        fake_index = resolve_fake_index(id2label, fake_label)
        if fake_index is None:
            hint = (
                f"fake_label {fake_label!r} is not one of" if fake_label is not None else "cannot tell the fake class"
            )
            raise LabelError(f"model {name!r}: {hint} from id2label {id2label}; pass fake_label= (index or name)")
        crop = CropPolicy.build(faces, input_size(processor, model.config), align=align, all_faces=all_faces)
        device = device or ("cuda" if torch.cuda.is_available() else "cpu")
        detector = (
            None if crop.mode == "none" else load_face_detector(face_detector, device=device, need_landmarks=crop.align)
        )
        return cls(
            model, processor, fake_index=fake_index, crop=crop, face_detector=detector, threshold=threshold,
            calibration=read_calibration(model.config), frames=frames, aggregate=aggregate, batch_size=batch_size,
            device=device, name=name,
        )  # fmt: skip

    def label(self, probability: float | None) -> str | None:
        """``"fake"`` at or above the threshold, ``"real"`` below, None for no score."""
        return None if probability is None else ("fake" if probability >= self.threshold else "real")

    def score_crops(self, crops: list[Image.Image]) -> np.ndarray:
        """P(fake) of each image as given (no face detection), in batches of `batch_size`."""
        out = []
        dtype = next(self.model.parameters()).dtype
        with torch.inference_mode():
            for start in range(0, len(crops), self.batch_size):
                batch = [to_rgb(image) for image in crops[start : start + self.batch_size]]
                pixels = self.image_processor(images=batch, return_tensors="pt")["pixel_values"]
                logits = self.model(pixel_values=pixels.to(self.device, dtype=dtype)).logits
                out.append(logits.float().softmax(dim=-1)[:, self.fake_index].cpu().double().numpy())
        return np.concatenate(out) if out else np.zeros(0)

    def predict(self, inputs, *, progress: bool | None = None) -> Prediction | list[Prediction]:
        """Predict on an image or video file, a folder, an in-memory image, or a list of these.

        Args:
            inputs: a path (file or folder), a PIL image, a numpy HWC array, or a list of them.
            progress (`bool`, *optional*): a progress bar on stderr; default only when stderr is a terminal.

        Returns:
            `Prediction` for one file or image; `list[Prediction]` for a folder or a list (one per file found,
            plus a ``kind="other"`` entry with an error note for each unreadable path and for a folder's
            non-media files).
        """
        single = isinstance(inputs, (Image.Image, np.ndarray)) or (
            isinstance(inputs, (str, Path)) and not Path(inputs).is_dir()
        )
        results = list(self.iter_predict(inputs, progress=progress))
        return results[0] if single and len(results) == 1 else results

    def iter_predict(self, inputs, *, progress: bool | None = None) -> Iterator[Prediction]:
        """`predict`, yielding each file's result as soon as its batch is scored (input order kept)."""
        from tqdm.auto import tqdm

        sized = isinstance(inputs, (list, tuple))
        items = collect_inputs(inputs) if sized or isinstance(inputs, (str, Path)) else iter_inputs(inputs)
        show = sys.stderr.isatty() if progress is None else progress
        pending: list[_Job] = []
        total = len(items) if isinstance(items, list) else None
        with tqdm(total=total, desc="Predicting", unit="file", file=sys.stderr, disable=not show) as bar:
            for item in items:
                pending.append(self._prepare(item))
                if sum(len(job.crops) for job in pending) >= self.batch_size:
                    yield from self._flush(pending, bar)
            yield from self._flush(pending, bar)

    def score(self, inputs, *, progress: bool | None = None) -> np.ndarray:
        """P(fake) of each input (image or video file, or in-memory image), NaN where it could not be scored.

        Unlike `predict`, folders are refused: the scores line up one to one with `inputs` (and their labels).
        `inputs` may be any iterable (e.g. a generator over a dataset's images), consumed as it is scored.
        """
        if isinstance(inputs, (str, Path, Image.Image, np.ndarray)):
            inputs = [inputs]

        def entries():
            for entry in inputs:
                if isinstance(entry, (str, Path)) and Path(entry).is_dir():
                    raise ConfigError(f"{entry}: score one file or image per entry; expand folders first")
                yield entry

        scores = [p.fake_probability for p in self.iter_predict(entries(), progress=progress)]
        return np.array([math.nan if s is None else s for s in scores], dtype=np.float64)

    def calibrate(
        self,
        inputs,
        labels,
        *,
        target_fpr: float | None = None,
        at: str | None = None,
        dataset_name: str | None = None,
        split: str | None = None,
        model_folder: str | Path | None = None,
        progress: bool | None = None,
    ) -> Calibration:
        """Score labelled inputs, choose a threshold, store it in the model folder and use it from now on.

        Args:
            inputs: one image (file or PIL) or video per label, any iterable, scored as `predict` would (with
                this detector's face handling: ``faces="none"`` for ready-made crops).
            labels (`array-like`): 0 = real, 1 = fake (all 0 for the real-only mode with `target_fpr`).
            target_fpr, at, dataset_name, split: see `r2m_hf.detector.calibrate`.
            model_folder (`str` or `Path`, *optional*): where to write; default the folder the model came from.
            progress (`bool`, *optional*): a progress bar while scoring.

        Returns:
            `Calibration`: what was written; inputs that could not be scored are left out and counted.
        """
        from .calibration import choose_threshold, write_calibration

        folder = Path(model_folder if model_folder is not None else self.name)
        if not (folder / "config.json").is_file():
            raise SourceError(f"{folder}: not a local model folder; pass model_folder= to write the threshold")
        labels = np.asarray(labels).reshape(-1)
        scores = self.score(inputs, progress=progress)
        if len(scores) != len(labels):
            raise ConfigError(f"{len(scores)} inputs but {len(labels)} labels")
        scored = np.isfinite(scores)
        if not scored.any():
            raise ConfigError("none of the calibration inputs could be scored (no face found or unreadable)")
        result = choose_threshold(
            scores[scored], labels[scored], target_fpr=target_fpr, at=at, dataset=dataset_name, split=split
        )
        result = replace(result, n_unscored=int((~scored).sum()))
        write_calibration(folder, result)
        self.calibration = result
        if self.threshold_source != "user":
            self.threshold, self.threshold_source = result.value, "calibrated"
        return result

    def _flush(self, pending: list[_Job], bar) -> Iterator[Prediction]:
        crops = [crop for job in pending for crop in job.crops]
        scores = self.score_crops(crops)
        offset = 0
        for job in pending:
            job.probabilities = scores[offset : offset + len(job.crops)]
            offset += len(job.crops)
            job.crops = []
            bar.update(1)
            yield self._finish(job)
        pending.clear()

    def _prepare(self, item: MediaItem) -> _Job:
        job = _Job(item)
        if item.kind == "other":
            job.error = item.note
            return job
        try:
            if item.kind == "image":
                image = to_rgb(item.image) if item.image is not None else load_image(item.path)
                self._add_frame(job, image)
            else:
                video = read_frames(item.path, self.frames)
                job.frames, job.file_notes = [(frame.index, frame.time) for frame in video.frames], video.notes
                for frame in video.frames:
                    self._add_frame(job, frame.image)
        except MediaError as err:
            job.error, job.crops, job.owners = str(err), [], []
        except Exception as err:  # a per-file failure never stops the run
            logger.debug("unexpected error on %s", item.path, exc_info=True)
            job.error, job.crops, job.owners = f"unexpected error: {type(err).__name__}: {err}", [], []
        return job

    def _add_frame(self, job: _Job, image: Image.Image) -> None:
        position = len(job.faces)
        if self.face_detector is None:
            faces, crops = [], [image]
        else:
            faces = self.crop.select(self.face_detector.detect(image))
            crops = [self.crop.crop(image, face) for face in faces]
        job.faces.append(faces)
        job.notes.append(None if crops else f"no face found ({self.face_detector.name})")
        job.crops.extend(crops)
        job.owners.extend((position, i) for i in range(len(crops)))

    def _finish(self, job: _Job) -> Prediction:
        base = {"path": job.item.path, "threshold": self.threshold, "threshold_source": self.threshold_source}
        kind = job.item.kind
        if job.error is not None:
            return Prediction(kind=kind, fake_probability=None, label=None, error=job.error, **base)
        per_frame: list[list[float]] = [[] for _ in job.faces]
        for (position, _), probability in zip(job.owners, job.probabilities.tolist()):
            per_frame[position].append(probability)
        faces = [
            [replace(face, fake_probability=p) for face, p in zip(frame_faces, probabilities)]
            for frame_faces, probabilities in zip(job.faces, per_frame)
        ]
        frame_scores = [max(probabilities) if probabilities else None for probabilities in per_frame]
        if kind == "image":
            probability = frame_scores[0]
            error = None if probability is not None else f"{job.notes[0]}; pass faces='none' if it is a face crop"
            return Prediction(
                kind=kind, fake_probability=probability, label=self.label(probability), faces=faces[0], error=error,
                **base,
            )  # fmt: skip
        frames = [
            FrameScore(index, time, probability, frame_faces, note)
            for (index, time), probability, frame_faces, note in zip(job.frames, frame_scores, faces, job.notes)
        ]
        scored = [p for p in frame_scores if p is not None]
        probability = aggregate_scores(scored, self.aggregate) if scored else None
        error = None if scored else f"no face found in any of the {len(frames)} sampled frames"
        return Prediction(
            kind=kind, fake_probability=probability, label=self.label(probability), frames=frames, error=error,
            notes=job.file_notes, **base,
        )  # fmt: skip
