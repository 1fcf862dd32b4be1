"""The app in a real headless browser: Debian's chromium driven by Python playwright (its own browser download is
not used). The app serves on a free loopback port; the test uploads the astronaut photo, presses *Analyse image*,
reads the verdict and saves a screenshot. Skipped when chromium or playwright is missing, except on CI.

``python -m tests.detector.test_app_browser docs/img/app-screenshot.png`` writes the documentation's screenshot the
same way, with a calibrated threshold and evaluation results in the model folder so every part of the page shows.
"""

from __future__ import annotations

import importlib.util
import os
import re
import shutil
import socket
import time
from pathlib import Path

import pytest

from .conftest import astronaut

CHROMIUM = os.environ.get("R2M_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
]  # fmt: skip
_MISSING = [
    what
    for what, present in (
        (f"chromium ({CHROMIUM}; apt-get install chromium)", Path(CHROMIUM).is_file()),
        ("playwright (pip install playwright)", importlib.util.find_spec("playwright") is not None),
        ("gradio (pip install -e '.[app]')", importlib.util.find_spec("gradio") is not None),
    )
    if not present
]
pytestmark = pytest.mark.skipif(
    bool(_MISSING) and os.environ.get("CI") != "true", reason=f"needs {', '.join(_MISSING)}"
)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def drive(
    url: str, image: Path, screenshot: Path, profile: Path, *, width: int = 1280, timeout_ms: int = 45_000
) -> str:
    """Open the app at `url`, upload `image`, analyse it, save a full-page `screenshot`; returns the verdict text."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch_persistent_context(
            str(profile), executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True,
            viewport={"width": width, "height": 900}, offline=False,
        )  # fmt: skip
        try:
            page = browser.new_page()
            page.set_default_timeout(timeout_ms)
            page.goto(url)
            page.locator("#image-input input[type=file]").set_input_files(str(image))
            page.locator("#image-input img").first.wait_for()  # the upload is shown before it is analysed
            page.locator("#analyse-image").click()
            page.locator("#verdict h3").wait_for()
            page.locator("#faces img").first.wait_for()
            text = page.locator("#verdict").inner_text()
            page.screenshot(path=str(screenshot), full_page=True)
        finally:
            browser.close()
    return text


def test_upload_an_image_and_read_the_verdict(model_dir, tmp_path):
    from r2m_hf.detector.app import build_app, serve

    start = time.monotonic()
    image = tmp_path / "astronaut.png"
    astronaut().save(image)
    demo = build_app(model_dir, device="cpu")
    url = serve(demo, host="127.0.0.1", port=free_port(), block=False)
    try:
        assert url.startswith("http://127.0.0.1:")
        text = drive(url, image, tmp_path / "app.png", tmp_path / "profile")
    finally:
        demo.close()
    verdict = re.search(r"^(Fake|Real)\s+P\(fake\) = ([0-9.]+),", text, flags=re.MULTILINE)
    assert verdict, text
    expected = demo.detector.predict(image)
    assert verdict[1].lower() == expected.label
    assert float(verdict[2]) == pytest.approx(expected.fake_probability, abs=1e-4)
    assert "threshold 0.5 (the default: this model is not calibrated)" in text
    assert (tmp_path / "app.png").stat().st_size > 10_000
    assert time.monotonic() - start < 90


def _documentation_model(root: Path) -> Path:
    """The tiny zoo detector with evaluation results and a calibrated threshold (toy numbers, real code paths)."""
    import datasets

    from r2m_hf.detector import Detector
    from r2m_hf.evaluation import evaluate_model
    from r2m_hf.zoo import build_zoo

    from .conftest import coffee

    model = Path(shutil.copytree(build_zoo(root / "zoo", names=("fs",)).specialists[0], root / "tiny-detector"))
    faces, other = astronaut(), coffee()
    images = [faces.rotate(9 * i).resize((64, 64)) for i in range(8)] + [other.rotate(9 * i) for i in range(8)]
    rows = {"image": images, "label": ["real"] * 8 + ["fake"] * 8, "family": [None] * 8 + ["fs", "fr"] * 4}
    datasets.Dataset.from_dict(rows).cast_column("image", datasets.Image()).to_parquet(root / "toy-faces.parquet")
    evaluation = evaluate_model(model.name, "toy-faces.parquet", split="train", device="cpu", progress=False)
    evaluation.save(model / "eval_results.json")
    detector = Detector.from_pretrained(model, faces="none", device="cpu")
    detector.calibrate(images, [0] * 8 + [1] * 8, at="eer", dataset_name="toy-faces.parquet", split="train")
    return model


def main(argv: list[str] | None = None) -> int:
    import argparse
    import tempfile

    from PIL import Image

    from r2m_hf.detector.app import build_app, serve

    parser = argparse.ArgumentParser(description="Write the app's screenshot for the documentation.")
    parser.add_argument("output", type=Path, help="e.g. docs/img/app-screenshot.png")
    args = parser.parse_args(argv)
    output = args.output.resolve()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        os.chdir(root)  # the page shows the model and data by their relative names
        astronaut().save(root / "astronaut.png")
        model = _documentation_model(root)
        demo = build_app(model.name, device="cpu", title="Deepfake detector (tiny test model)")
        url = serve(demo, host="127.0.0.1", port=free_port(), block=False)
        try:
            print(drive(url, root / "astronaut.png", root / "shot.png", root / "profile", width=1100))
        finally:
            demo.close()
        output.parent.mkdir(parents=True, exist_ok=True)
        with Image.open(root / "shot.png") as shot:  # 256 colours: a small file for the repository
            shot.convert("RGB").quantize(256, method=Image.Quantize.MEDIANCUT).save(output, optimize=True)
    print(f"screenshot written to {output} ({output.stat().st_size // 1024} KiB)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
