"""The typed results of the detector: a face box, the score of one video frame, and the prediction for one file.

Every value a prediction carries is plain (floats, strings, lists), so `to_dict` is JSON-able as it is and the
writers in `output.py` need no knowledge of the fields beyond these classes.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Literal

Kind = Literal["image", "video", "other"]
ThresholdSource = Literal["calibrated", "user", "default"]


@dataclass(frozen=True)
class FaceBox:
    """A face found in an image or frame, in pixel coordinates of that image.

    Attributes:
        x0, y0, x1, y1 (`float`): the box corners (x to the right, y down).
        score (`float`): the face detector's confidence (MTCNN: a probability; Haar: the cascade's level weight).
        landmarks (`tuple` of five `(x, y)`, *optional*): left eye, right eye, nose, left and right mouth corner
            (left/right as seen in the image), when the detector gives them.
        fake_probability (`float`, *optional*): the classifier's fake probability for the crop of this face.
    """

    x0: float
    y0: float
    x1: float
    y1: float
    score: float
    landmarks: tuple[tuple[float, float], ...] | None = None
    fake_probability: float | None = None

    @property
    def width(self) -> float:
        return self.x1 - self.x0

    @property
    def height(self) -> float:
        return self.y1 - self.y0

    @property
    def area(self) -> float:
        return max(self.width, 0.0) * max(self.height, 0.0)

    @property
    def centre(self) -> tuple[float, float]:
        return (self.x0 + self.x1) / 2, (self.y0 + self.y1) / 2

    def scaled(self, factor: float) -> FaceBox:
        """The same face in an image resized by `factor`."""
        marks = None if self.landmarks is None else tuple((x * factor, y * factor) for x, y in self.landmarks)
        return FaceBox(
            self.x0 * factor, self.y0 * factor, self.x1 * factor, self.y1 * factor, self.score, marks,
            self.fake_probability,
        )  # fmt: skip

    def to_dict(self) -> dict:
        data = {k: round(v, 2) if k[0] in "xy" else v for k, v in asdict(self).items()}
        if self.landmarks is not None:
            data["landmarks"] = [[round(x, 2), round(y, 2)] for x, y in self.landmarks]
        return data


@dataclass
class FrameScore:
    """The score of one sampled video frame.

    Attributes:
        index (`int`): the frame's position in the decoded stream (0-based).
        time (`float`): its presentation time in seconds.
        fake_probability (`float`, *optional*): None when the frame had no face.
        faces (`list[FaceBox]`): the faces scored in it.
        note (`str`, *optional*): why it has no score.
    """

    index: int
    time: float
    fake_probability: float | None
    faces: list[FaceBox] = field(default_factory=list)
    note: str | None = None

    def to_dict(self) -> dict:
        return {
            "index": self.index,
            "time": round(self.time, 3),
            "fake_probability": self.fake_probability,
            "faces": [face.to_dict() for face in self.faces],
            "note": self.note,
        }


@dataclass
class Prediction:
    """What the detector says about one input file (or one in-memory image).

    Attributes:
        path (`str`): the file (``"<image>"`` for an in-memory image without a file name).
        kind (`str`): ``"image"``, ``"video"``, or ``"other"`` for a path that is neither (skipped or unreadable).
        fake_probability (`float`, *optional*): P(fake) of the image, or the frames' aggregate for a video;
            None when nothing could be scored (then `error` says why).
        label (`str`, *optional*): ``"fake"`` when `fake_probability >= threshold`, else ``"real"``.
        threshold (`float`): the decision threshold used.
        threshold_source (`str`): ``"calibrated"`` (from the model's config.json), ``"user"`` or ``"default"`` (0.5).
        faces (`list[FaceBox]`): the faces scored in an image (empty with ``faces="none"`` and for videos).
        frames (`list[FrameScore]`, *optional*): per-frame scores of a video.
        error (`str`, *optional*): a one-line note when the file could not be scored.
        notes (`list[str]`): what else to know about a scored file (e.g. fewer frames than asked for).
    """

    path: str
    kind: Kind
    fake_probability: float | None
    label: Literal["fake", "real"] | None
    threshold: float
    threshold_source: ThresholdSource
    faces: list[FaceBox] = field(default_factory=list)
    frames: list[FrameScore] | None = None
    error: str | None = None
    notes: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        """Whether the file was scored."""
        return self.fake_probability is not None

    def to_dict(self) -> dict:
        """A JSON-able record (one line of ``preds.jsonl``)."""
        return {
            "path": self.path,
            "kind": self.kind,
            "fake_probability": self.fake_probability,
            "label": self.label,
            "threshold": self.threshold,
            "threshold_source": self.threshold_source,
            "faces": [face.to_dict() for face in self.faces],
            "frames": None if self.frames is None else [frame.to_dict() for frame in self.frames],
            "error": self.error,
            "notes": list(self.notes),
        }
