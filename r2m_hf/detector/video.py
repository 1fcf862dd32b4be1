"""Videos: decode with PyAV, sample N frames evenly over the duration, and aggregate frame scores into one.

Frames are sampled at the centres of N equal slices of the video. Short videos are decoded front to back (cheaper
than seeking, since a seek decodes from the previous keyframe anyway); videos longer than `seek_after` seconds are
read by seeking to each sample time. Every failure (empty or corrupt file, no video stream, undecodable frames)
becomes a one-line `MediaError`. Aggregation follows DeepfakeBench's video AUC (the mean of frame probabilities)
by default; ``max``, ``median`` and ``top-K`` (the mean of the K highest) are offered.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image

from ..errors import ConfigError
from .inputs import MediaError

SEEK_AFTER_SECONDS = 60.0
MAX_DECODED_FRAMES = 100_000


@dataclass
class SampledFrame:
    """One decoded frame: its index in the stream, presentation time (s) and RGB image."""

    index: int
    time: float
    image: Image.Image


@dataclass
class SampledVideo:
    """The frames sampled from one video, with what is known of the whole."""

    frames: list[SampledFrame]
    duration: float | None
    fps: float | None
    notes: list[str] = field(default_factory=list)


def _open(path):
    import av

    try:
        return av.open(str(path), metadata_errors="ignore")
    except (av.error.FFmpegError, OSError, ValueError, UnicodeDecodeError) as err:
        if Path(path).is_file() and Path(path).stat().st_size == 0:
            raise MediaError("empty file (0 bytes)") from None
        raise MediaError(f"not a readable video: {' '.join(str(err).split())[:200]}") from None


def has_video_stream(path) -> bool:
    """Whether PyAV opens `path` and finds a video stream in it."""
    try:
        with _open(path) as container:
            return bool(container.streams.video)
    except MediaError:
        return False


def sample_times(duration: float, count: int) -> list[float]:
    """The centres of `count` equal slices of ``[0, duration)``."""
    return [(i + 0.5) * duration / count for i in range(count)]


def read_frames(path, count: int = 16, *, seek_after: float = SEEK_AFTER_SECONDS) -> SampledVideo:
    """Decode `count` frames spread evenly over a video (fewer when the video has fewer frames).

    Args:
        path (`str` or `Path`): the video file.
        count (`int`): frames to sample.
        seek_after (`float`): seek to each sample time in videos longer than this (seconds).

    Returns:
        `SampledVideo`: the frames in time order.

    Raises:
        `MediaError`: unreadable file, no video stream, or no decodable frame.
    """
    import av

    with _open(path) as container:
        if not container.streams.video:
            kinds = sorted({s.type for s in container.streams}) or ["no streams"]
            raise MediaError(f"no video stream in this file ({', '.join(kinds)})")
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"
        fps = float(stream.average_rate) if stream.average_rate else None
        duration = _duration(container, stream)
        frames: list[SampledFrame] = []
        notes = []
        try:
            if duration is not None and duration > seek_after:
                _seek_sample(container, stream, duration, count, fps, frames)
            else:
                _scan_sample(container, stream, duration, count, fps, path, frames)
        except (av.error.FFmpegError, OSError, ValueError) as err:
            message = " ".join(str(err).split())[:200]
            if not frames:
                raise MediaError(f"cannot decode video: {message}") from None
            notes.append(f"decoding stopped early ({message})")
    if not frames:
        raise MediaError("no decodable video frame")
    video = SampledVideo(frames, duration, fps, notes)
    if len(frames) < count:
        video.notes.append(f"{len(frames)} of {count} frames sampled (the video is shorter)")
    return video


def _duration(container, stream) -> float | None:
    if stream.duration is not None and stream.time_base:
        return float(stream.duration * stream.time_base)
    if container.duration is not None:
        return container.duration / 1_000_000
    return None


def _frame_time(frame, stream, start: float, index: int, fps: float | None) -> float:
    if frame.pts is not None and stream.time_base:
        return float(frame.pts * stream.time_base) - start
    return index / fps if fps else math.nan


def _to_image(frame) -> Image.Image:
    """The frame as an upright RGB image: phone videos store a display rotation beside landscape frames."""
    image = frame.to_image()
    rotation = round(getattr(frame, "rotation", 0) or 0)  # degrees counterclockwise, as PIL's rotate takes them
    return image.rotate(rotation, expand=True) if rotation % 360 else image


def _count_frames(path) -> int:
    """Frames of the first video stream, by reading its packets (no decoding)."""
    with _open(path) as container:
        return sum(1 for packet in container.demux(container.streams.video[0]) if packet.size)


def _scan_sample(container, stream, duration: float | None, count: int, fps: float | None, path, kept: list) -> None:
    """Decode front to back, keeping the frame nearest each sample time (by position when times are unknown)."""
    start = float(stream.start_time * stream.time_base) if stream.start_time is not None else 0.0
    if not duration:
        total = _count_frames(path)
        wanted = {round(i) for i in np.linspace(0, total - 1, min(count, total))} if total else set()
        for index, frame in zip(range(total), container.decode(stream)):
            if index in wanted:
                kept.append(SampledFrame(index, _frame_time(frame, stream, start, index, fps), _to_image(frame)))
        return
    targets, previous = sample_times(duration, count), None

    def keep(index, time, frame):
        if not kept or kept[-1].index != index:
            kept.append(SampledFrame(index, time, _to_image(frame)))

    for index, frame in enumerate(container.decode(stream)):
        time = _frame_time(frame, stream, start, index, fps)
        while targets and time >= targets[0]:  # the sample time lies between the previous frame and this one
            target = targets.pop(0)
            keep(*(previous if previous and target - previous[1] < time - target else (index, time, frame)))
        if not targets:
            break
        previous = (index, time, frame)
    if targets and previous:  # sample times after the last frame (a duration longer than the frames)
        keep(*previous)


def _seek_sample(container, stream, duration: float, count: int, fps: float | None, kept: list) -> None:
    """Seek to the keyframe before each sample time and decode up to it."""
    start = float(stream.start_time * stream.time_base) if stream.start_time is not None else 0.0
    for target in sample_times(duration, count):
        container.seek(int((target + start) / stream.time_base), stream=stream, backward=True)
        for frame in container.decode(stream):
            time = _frame_time(frame, stream, start, 0, None)  # positions are unknown after a seek
            if math.isnan(time) or time >= target - 0.5 / (fps or 25.0):
                index = round(time * fps) if fps and not math.isnan(time) else len(kept)
                if not kept or kept[-1].index != index:
                    kept.append(SampledFrame(index, time, _to_image(frame)))
                break


def parse_aggregate(aggregate: str) -> tuple[str, int | None]:
    """Check an aggregation name: ``mean``, ``max``, ``median`` or ``top-K`` (K ≥ 1)."""
    name = str(aggregate).strip().lower()
    if name in ("mean", "max", "median"):
        return name, None
    if name.startswith("top-") and name[4:].isdigit() and int(name[4:]) >= 1:
        return "top", int(name[4:])
    raise ConfigError(
        f"aggregate={aggregate!r}: use mean, max, median or top-K (the mean of the K highest, e.g. top-3)"
    )


def aggregate_scores(probabilities, aggregate: str = "mean") -> float:
    """One fake probability for a video from those of its frames."""
    name, k = parse_aggregate(aggregate)
    values = np.asarray(list(probabilities), dtype=np.float64)
    if name == "top":
        return float(np.sort(values)[::-1][:k].mean())
    return float({"mean": np.mean, "max": np.max, "median": np.median}[name](values))
