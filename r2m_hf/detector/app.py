"""The detector as a Gradio app: upload an image or a video, get real/fake against the (calibrated) threshold.

`build_app` returns the Blocks: an image tab and a video tab, the verdict (P(fake) against the threshold and where
the threshold came from), the frame with the face boxes drawn, the per-frame scores of a video as a plot, the raw
prediction, and the model card's per-family metrics. `serve` launches it (loopback by default, analytics off,
system fonts, so it runs on a machine without network); ``r2m-hf app`` and the Space's ``app.py`` call these two.
Gradio is imported only here, and only when an app is built: it is the optional extra ``r2m-hf[app]``.
"""

from __future__ import annotations

import os
from pathlib import Path

from ..card_evaluation import md_code, md_text
from ..errors import ConfigError
from .display import draw_faces, frame_figure, model_metrics, threshold_note, verdict_markdown, video_frame

INSTALL_HINT = "pip install 'r2m-hf[app]'"
DEFAULT_PORT = 7860


def import_gradio():
    """Gradio with its analytics off, or a `ConfigError` saying how to install it."""
    os.environ["GRADIO_ANALYTICS_ENABLED"] = "False"
    os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
    try:
        import gradio
    except ImportError:
        raise ConfigError(f"the app needs Gradio, which is not installed: {INSTALL_HINT}") from None
    return gradio


def _crop_twin(detector):
    """The same classifier and threshold with face detection off, for inputs that are face crops already."""
    from .detector import Detector
    from .faces import CropPolicy

    if detector.face_detector is None:
        return detector
    return Detector(
        detector.model, detector.image_processor, fake_index=detector.fake_index,
        crop=CropPolicy.build("none", detector.crop.size), face_detector=None,
        threshold=detector.threshold if detector.threshold_source == "user" else None,
        calibration=detector.calibration, frames=detector.frames, aggregate=detector.aggregate,
        batch_size=detector.batch_size, device=detector.device, name=detector.name,
    )  # fmt: skip


def analyse_image(detector, image, *, is_crop: bool = False):
    """(verdict Markdown, image with faces drawn, prediction dict) for one uploaded image."""
    if image is None:
        return "Upload an image, then press *Analyse image*.", None, None
    use = _crop_twin(detector) if is_crop else detector
    prediction = use.predict(image, progress=False)
    shown = draw_faces(image, prediction.faces, prediction.threshold) if prediction.faces else image
    return verdict_markdown(prediction), shown, prediction.to_dict()


def analyse_video(detector, path, *, is_crop: bool = False):
    """(verdict Markdown, the highest-scoring frame with its faces drawn, per-frame plot, prediction dict)."""
    if not path:
        return "Upload a video, then press *Analyse video*.", None, None, None
    use = _crop_twin(detector) if is_crop else detector
    prediction = use.predict(Path(path), progress=False)
    figure = frame_figure(prediction) if prediction.frames else None
    frame = video_frame(path, prediction, use.frames) if prediction.ok else None
    return verdict_markdown(prediction, use.aggregate), frame[0] if frame else None, figure, prediction.to_dict()


def _header(detector, name: str, title: str | None) -> str:
    lines = [
        f"# {md_text(title or 'Deepfake detector', 120)}",
        "",
        f"Model {md_code(name)} · {threshold_note(detector.threshold, detector.threshold_source)} · "
        + ("faces: the input is scored as it is" if detector.face_detector is None else
           f"faces found with {detector.face_detector.name}, cropped at {detector.crop.margin}× the box"),
    ]  # fmt: skip
    if detector.calibration is not None and detector.threshold_source == "calibrated":
        lines += ["", md_text(detector.calibration.statement, 600)]
    lines += ["", "A file is called **fake** when P(fake) ≥ the threshold. Videos: frames sampled evenly, scores "
              f"aggregated by {detector.aggregate} over {detector.frames} frames."]  # fmt: skip
    return "\n".join(lines)


def build_app(model, *, title: str | None = None, token: str | None = None, **options):
    """The Gradio Blocks of the detector app.

    Args:
        model (`str`, `Path` or `Detector`): a model folder or Hub repo id (loaded with
            `Detector.from_pretrained(model, **options)`), or a ready `Detector`.
        title (`str`, *optional*): the page heading.
        token (`str`, *optional*): for a private Hub repo (never shown).
        **options: passed to `Detector.from_pretrained` (``faces``, ``threshold``, ``frames``, ``device``, …).

    Returns:
        `gradio.Blocks`: call `serve` (or ``.launch()``) on it.
    """
    gr = import_gradio()
    from .detector import Detector

    if isinstance(model, Detector):
        detector, name = model, str(model.name)
    else:
        detector, name = Detector.from_pretrained(model, token=token, **options), str(model)
    metrics = model_metrics(name, token=token)
    page_title = title or f"Deepfake detector · {Path(name).name or name}"

    with gr.Blocks(title=page_title, analytics_enabled=False) as demo:
        gr.Markdown(_header(detector, name, title), elem_id="header")
        with gr.Row(equal_height=False):
            with gr.Column():
                with gr.Tab("Image"):
                    image = gr.Image(type="pil", label="Image", sources=["upload", "clipboard"], elem_id="image-input")
                    image_button = gr.Button("Analyse image", variant="primary", elem_id="analyse-image")
                with gr.Tab("Video"):
                    video = gr.Video(label="Video", sources=["upload"], elem_id="video-input")
                    video_button = gr.Button("Analyse video", variant="primary", elem_id="analyse-video")
                is_crop = gr.Checkbox(
                    label="The input is a face crop already (skip face detection)",
                    visible=detector.face_detector is not None, elem_id="is-crop",
                )  # fmt: skip
            with gr.Column():
                verdict = gr.Markdown("Upload an image or a video.", elem_id="verdict")
                faces = gr.Image(label="Faces scored", type="pil", interactive=False, elem_id="faces")
                plot = gr.Plot(label="P(fake) per sampled frame", visible=False, elem_id="frame-plot")
                with gr.Accordion("Prediction (JSON, as `r2m-hf predict --output` writes it)", open=False):
                    details = gr.JSON(label="Prediction", elem_id="details")
        with gr.Accordion("Model card: metrics per forgery family", open=True):
            gr.Markdown(metrics, elem_id="metrics")

        def on_image(picture, crop):
            verdict_md, shown, data = analyse_image(detector, picture, is_crop=bool(crop))
            return verdict_md, shown, gr.Plot(value=None, visible=False), data

        def on_video(path, crop):
            verdict_md, shown, figure, data = analyse_video(detector, path, is_crop=bool(crop))
            return verdict_md, shown, gr.Plot(value=figure, visible=figure is not None), data

        outputs = [verdict, faces, plot, details]
        image_button.click(on_image, [image, is_crop], outputs, api_name="predict_image")
        video_button.click(on_video, [video, is_crop], outputs, api_name="predict_video")
    demo.detector = detector
    return demo


def theme():
    """Gradio's default theme on the system's fonts (no font download: the app also runs offline)."""
    gr = import_gradio()
    return gr.themes.Default(
        font=["ui-sans-serif", "system-ui", "sans-serif"], font_mono=["ui-monospace", "Consolas", "monospace"]
    )


def serve(demo, *, host: str | None = None, port: int | None = None, share: bool = False, block: bool = True):
    """Launch `demo` (see `build_app`); returns the local URL once it serves.

    Args:
        host (`str`, *optional*): interface to listen on; default ``GRADIO_SERVER_NAME`` or ``127.0.0.1``.
        port (`int`, *optional*): default ``GRADIO_SERVER_PORT`` or the first free port from 7860.
        share (`bool`): also open a temporary public link through Gradio's tunnel (needs network).
        block (`bool`): keep serving until Ctrl-C (False: return at once; call ``demo.close()`` when done).
    """
    import_gradio()
    try:
        _, url, _ = demo.launch(
            server_name=host, server_port=port, share=share, prevent_thread_lock=not block, theme=theme(),
            show_error=True, quiet=not block, footer_links=["gradio"],
        )  # fmt: skip
    except OSError as err:
        where = f"{host or '127.0.0.1'}:{port or DEFAULT_PORT}"
        if "Cannot find empty port" in str(err):
            raise ConfigError(f"cannot serve the app on {where}: the port is in use; pick another (--port)") from None
        raise ConfigError(f"cannot serve the app on {where}: {' '.join(str(err).split())}") from None
    return url
