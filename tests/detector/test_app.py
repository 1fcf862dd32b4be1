"""The Gradio app without a browser: its handlers on photos and videos, the Blocks it builds, the ``app`` verb, and
Gradio staying unimported until an app is built (the browser test is test_app_browser.py)."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import numpy as np
import pytest

from r2m_hf.detector import Detector
from r2m_hf.detector.app import analyse_image, analyse_video

from .conftest import astronaut, requires_gradio


@pytest.fixture(scope="module")
def detector(model_dir):
    return Detector.from_pretrained(model_dir, device="cpu", frames=4)


def test_neither_the_app_module_nor_the_verbs_help_import_gradio():
    code = textwrap.dedent(
        """
        import sys
        import r2m_hf.detector.app, r2m_hf.detector.space, r2m_hf.detector.display
        from r2m_hf.cli import main
        for argv in (["app", "--help"], ["space", "--help"], ["predict", "--help"]):
            try:
                main(argv)
            except SystemExit:
                pass
        print(sorted(m for m in ("gradio", "matplotlib") if m in sys.modules))
        """
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300, check=False)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip().splitlines()[-1] == "[]"


def test_an_image_gets_a_verdict_and_its_face_drawn(detector):
    image = astronaut()
    verdict, shown, data = analyse_image(detector, image)
    assert verdict.splitlines()[0] in ("### Fake", "### Real") and f"**{data['fake_probability']:.4f}**" in verdict
    assert len(data["faces"]) == 1 and data["threshold_source"] == "default"
    assert shown.size == image.size and not np.array_equal(np.asarray(shown), np.asarray(image))
    verdict, shown, data = analyse_image(detector, image, is_crop=True)
    assert data["faces"] == [] and shown is image
    assert data["fake_probability"] == pytest.approx(detector.score_crops([image])[0], abs=1e-9)
    assert analyse_image(detector, None) == ("Upload an image, then press *Analyse image*.", None, None)


def test_a_video_gets_a_verdict_its_top_frame_and_a_plot(detector, media):
    verdict, frame, figure, data = analyse_video(detector, str(media.face_video))
    assert verdict.splitlines()[0] in ("### Fake", "### Real") and "(mean over 4 frames with a face)" in verdict
    assert len(data["frames"]) == 4 and frame.size == (192, 192)
    assert [line.get_label() for line in figure.axes[0].get_lines()][0] == "P(fake) of the frame"
    verdict, frame, figure, data = analyse_video(detector, str(media.no_face_video))
    assert verdict.startswith("### No verdict") and "no face found in any of the 4 sampled frames" in verdict
    assert frame is None and figure is not None
    assert analyse_video(detector, None)[0] == "Upload a video, then press *Analyse video*."


def test_a_bad_upload_is_a_note_not_an_error(detector, tmp_path):
    (tmp_path / "clip.mp4").write_bytes(b"")
    verdict, frame, figure, data = analyse_video(detector, str(tmp_path / "clip.mp4"))
    assert verdict.startswith("### No verdict") and "empty file (0 bytes)" in verdict and frame is figure is None


def test_without_gradio_the_app_verb_says_how_to_install_it(cli, model_dir, monkeypatch):
    monkeypatch.setitem(sys.modules, "gradio", None)
    monkeypatch.delenv("GRADIO_ANALYTICS_ENABLED", raising=False)
    result = cli("app", model_dir)
    assert result.code == 2 and result.out == ""
    assert result.err == "r2m-hf: error: the app needs Gradio, which is not installed: pip install 'r2m-hf[app]'\n"


@requires_gradio
def test_the_app_verb_builds_the_app_and_serves_it(cli, model_dir, monkeypatch):
    import r2m_hf.detector.app as app

    served = []

    def serve(demo, **options):
        demo.block_thread = lambda: served.append("blocked")
        served.append((demo, options))
        return "http://127.0.0.1:7999/"

    monkeypatch.delenv("GRADIO_ANALYTICS_ENABLED", raising=False)
    monkeypatch.setattr(app, "serve", serve)
    result = cli("app", model_dir, "--port", "7999", "--threshold", "0.3", "--faces", "none", "--title", "T")
    assert result.code == 0, result.err
    assert result.out == f"serving the app of {model_dir} at http://127.0.0.1:7999/; Ctrl-C stops it\n"
    (demo, options), blocked = served
    assert options == {"host": "127.0.0.1", "port": 7999, "share": False, "block": False} and blocked == "blocked"
    assert demo.detector.threshold == 0.3 and demo.detector.face_detector is None
    assert __import__("os").environ["GRADIO_ANALYTICS_ENABLED"] == "False"
    result = cli("app", model_dir, "--port", "70000")
    assert result.code == 2 and result.err == "r2m-hf: error: --port must be in 1..65535, got 70000\n"


@requires_gradio
def test_the_blocks_hold_inputs_outputs_and_the_card_metrics(model_dir, tmp_path):
    import json
    import shutil

    from r2m_hf.detector.app import build_app

    folder = shutil.copytree(model_dir, tmp_path / "m")
    evaluation = {"dataset": "d", "split": "test", "n_samples": 4, "families": {"fs": {"auc": 0.75, "n": 4}}}
    (folder / "eval_results.json").write_text(json.dumps(evaluation))
    demo = build_app(folder, device="cpu", frames=3, title="Tiny <detector>")
    ids = {getattr(block, "elem_id", None) for block in demo.blocks.values()}
    assert {"image-input", "video-input", "analyse-image", "analyse-video", "verdict", "faces", "frame-plot"} <= ids
    texts = [block.value for block in demo.blocks.values() if type(block).__name__ == "Markdown"]
    assert any("| fs | 0.7500 |" in text for text in texts)
    assert any(text.startswith("# Tiny &lt;detector&gt;") for text in texts)
    assert demo.detector.frames == 3 and {"predict_image", "predict_video"} <= {f.api_name for f in demo.fns.values()}


@requires_gradio
def test_a_port_in_use_is_one_error_line(detector):
    import socket

    from r2m_hf.detector.app import build_app, serve
    from r2m_hf.errors import ConfigError

    demo = build_app(detector)
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        with pytest.raises(ConfigError, match=f"127.0.0.1:{port}: the port is in use; pick another"):
            serve(demo, host="127.0.0.1", port=port, block=False)
