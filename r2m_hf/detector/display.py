"""What the app shows, without the app: the verdict sentence, faces drawn on a frame, the per-frame plot of a video,
and the model card's per-family metrics.

Nothing here imports Gradio, so each piece is tested on its own and reused by any front end. Text that came from a
file or a model repo (paths, family and dataset names, notes) is escaped before it becomes Markdown.
"""

from __future__ import annotations

import json
import math
import re
from pathlib import Path

from PIL import Image, ImageDraw

from ..card_evaluation import md_text
from .types import FaceBox, Prediction

FAKE_COLOUR, REAL_COLOUR = (220, 38, 38), (22, 163, 74)
METRIC_COLUMNS = (("auc", "AUC"), ("eer", "EER"), ("ap", "AP"), ("acc", "ACC at 0.5"))  # "x@0.5" reads as a mail
_EVALUATION_SECTION = re.compile(r"^## Evaluation\s*$(.*?)(?=^#{1,2} |\Z)", flags=re.MULTILINE | re.DOTALL)


def _md(value, limit: int = 300) -> str:
    return md_text(value, limit)


def threshold_note(threshold: float, source: str) -> str:
    """``"threshold 0.4123 (calibrated)"``: the cut and where it came from."""
    what = {"calibrated": "calibrated", "user": "set by you", "default": "the default: this model is not calibrated"}
    return f"threshold {threshold:.4g} ({what.get(source, source)})"


def video_summary(prediction: Prediction, aggregate: str | None = None) -> str:
    """How a video's score was made, e.g. ``"mean over 16 frames with a face"``."""
    scored = sum(frame.fake_probability is not None for frame in prediction.frames or ())
    return f"{aggregate or 'aggregate'} over {scored} frame{'s' if scored != 1 else ''} with a face"


def verdict_markdown(prediction: Prediction, aggregate: str | None = None) -> str:
    """The headline for one file: **Fake** / **Real** with P(fake) against the threshold, or why there is none.

    Args:
        prediction (`Prediction`): the file's prediction.
        aggregate (`str`, *optional*): how a video's frame scores were combined (``mean``, ``top-3``, …).
    """
    note = threshold_note(prediction.threshold, prediction.threshold_source)
    if not prediction.ok:
        return f"### No verdict\n\n{_md(prediction.error or 'nothing could be scored')}\n\n{note}"
    p = prediction.fake_probability
    relation = "at or above" if p >= prediction.threshold else "below"
    what = f" ({video_summary(prediction, aggregate)})" if prediction.kind == "video" else ""
    lines = [
        f"### {prediction.label.capitalize()}",
        "",
        f"P(fake) = **{p:.4f}**{what}, {relation} the {note}.",
    ]
    if prediction.frames is not None:
        lines += ["", f"{len(prediction.frames)} frames sampled; the one shown scored highest."]
    if len(prediction.faces) > 1:
        lines += ["", f"{len(prediction.faces)} faces scored; the file gets the highest probability."]
    lines += [f"- {_md(n)}" for n in prediction.notes]
    return "\n".join(lines)


def draw_faces(image: Image.Image, faces: list[FaceBox], threshold: float) -> Image.Image:
    """A copy of `image` with each face's box (red: fake, green: real, at `threshold`), its P(fake) and landmarks."""
    out = image.convert("RGB").copy()
    draw = ImageDraw.Draw(out)
    width = max(2, round(max(out.size) / 200))
    for face in faces:
        p = face.fake_probability
        colour = (255, 255, 255) if p is None else FAKE_COLOUR if p >= threshold else REAL_COLOUR
        draw.rectangle((face.x0, face.y0, face.x1, face.y1), outline=colour, width=width)
        if p is not None:
            text = f"{'fake' if p >= threshold else 'real'} {p:.2f}"
            left, top, right, bottom = draw.textbbox((0, 0), text)
            y = max(face.y0 - (bottom - top) - 2 * width, 0)
            draw.rectangle((face.x0, y, face.x0 + right - left + 2 * width, y + bottom - top + 2 * width), fill=colour)
            draw.text((face.x0 + width, y + width - top), text, fill=(255, 255, 255))
        for x, y in face.landmarks or ():
            draw.ellipse((x - width, y - width, x + width, y + width), fill=colour)
    return out


def video_frame(path: str | Path, prediction: Prediction, frames: int) -> tuple[Image.Image, int] | None:
    """The sampled frame with the highest P(fake), decoded again, with its faces drawn; and its index.

    Args:
        path: the video file `prediction` is about.
        prediction (`Prediction`): its prediction (with per-frame scores).
        frames (`int`): how many frames the detector sampled (the same frames are decoded again).

    Returns:
        `(image, frame index)`, or None when no frame was scored.
    """
    from .video import read_frames

    scored = [frame for frame in prediction.frames or () if frame.fake_probability is not None]
    if not scored:
        return None
    best = max(scored, key=lambda frame: frame.fake_probability)
    for frame in read_frames(path, frames).frames:
        if frame.index == best.index:
            return draw_faces(frame.image, best.faces, prediction.threshold), best.index
    return None


def frame_figure(prediction: Prediction):
    """A matplotlib figure of P(fake) per sampled frame against time, with the threshold and the aggregate."""
    from matplotlib.figure import Figure

    figure = Figure(figsize=(6.4, 3.0), dpi=100, layout="constrained")
    axes = figure.add_subplot()
    frames = prediction.frames or []
    times = [frame.time if math.isfinite(frame.time) else i for i, frame in enumerate(frames)]
    points = [(t, frame.fake_probability) for t, frame in zip(times, frames) if frame.fake_probability is not None]
    missing = [t for t, frame in zip(times, frames) if frame.fake_probability is None]
    if points:
        axes.plot(*zip(*points), marker="o", color="#1f2937", linewidth=1.2, label="P(fake) of the frame")
    if missing:
        axes.plot(missing, [0.0] * len(missing), "x", color="#9ca3af", label="no face")
    axes.axhline(prediction.threshold, color="#dc2626", linestyle="--", linewidth=1, label="threshold")
    if prediction.fake_probability is not None:
        axes.axhline(prediction.fake_probability, color="#2563eb", linestyle=":", linewidth=1, label="video score")
    axes.set(xlabel="time (s)", ylabel="P(fake)", ylim=(-0.03, 1.03))
    axes.grid(alpha=0.3)
    axes.legend(loc="upper right", fontsize="small", framealpha=0.8)
    return figure


def _fmt(value) -> str:
    return "–" if value is None or (isinstance(value, float) and not math.isfinite(value)) else f"{value:.4f}"


def metrics_markdown(evaluation: dict) -> str:
    """A per-family table (AUC, EER, AP, accuracy at 0.5, n) from an ``eval_results.json`` dict."""
    families = evaluation.get("families") or {}
    header = "| family | " + " | ".join(title for _, title in METRIC_COLUMNS) + " | n |"
    lines = [
        f"Dataset {_md(evaluation.get('dataset') or 'unknown', 120)}, split {_md(evaluation.get('split') or '?')}, "
        f"{_md(evaluation.get('n_samples') or '?')} images.",
        "",
        header,
        "|---|" + "---:|" * (len(METRIC_COLUMNS) + 1),
    ]

    def row(name: str, metrics: dict, n) -> str:
        return f"| {name} | " + " | ".join(_fmt(metrics.get(k)) for k, _ in METRIC_COLUMNS) + f" | {_md(n)} |"

    for family, metrics in families.items():
        if isinstance(metrics, dict):
            lines.append(row(_md(family, 64), metrics, metrics.get("n", "")))
    if families:
        lines.append(row("**mean**", evaluation.get("mean") or {}, f"{len(families)} families"))
    lines.append(row("all (pooled)", evaluation.get("overall") or {}, evaluation.get("n_samples", "")))
    return "\n".join(lines)


def _model_file(model: str, name: str, token: str | None) -> str | None:
    """The text of `name` in a local model folder or a Hub model repo; None when absent or unreachable."""
    path = Path(model).expanduser()
    if path.is_dir():
        return (path / name).read_text(encoding="utf-8") if (path / name).is_file() else None
    try:
        from huggingface_hub import hf_hub_download

        return Path(hf_hub_download(model, name, token=token)).read_text(encoding="utf-8")
    except Exception:  # a missing file, no network, a private repo: the app runs without the metrics
        return None


def model_metrics(model: str, *, token: str | None = None) -> str:
    """The model card's per-family metrics as Markdown: from ``eval_results.json``, else the card's "Evaluation"
    section, else a sentence saying that the model ships none."""
    from ..recipe import CARD_FILE, EVAL_FILE

    text = _model_file(str(model), EVAL_FILE, token)
    if text is not None:
        try:
            evaluation = json.loads(text)
        except ValueError:
            evaluation = None
        if isinstance(evaluation, dict):
            return metrics_markdown(evaluation)
    card = _model_file(str(model), CARD_FILE, token)
    match = _EVALUATION_SECTION.search(card or "")
    if match and match[1].strip():
        body = "\n".join(line for line in match[1].strip().splitlines() if not line.lstrip().startswith("!["))
        return body.strip()
    return f"No evaluation results ship with {_md(model, 120)} ({EVAL_FILE} or an Evaluation section in its card)."
