"""Input discovery (files, folders, in-memory images) and safe image reading."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from r2m_hf.detector import collect_inputs
from r2m_hf.detector.inputs import MediaError, load_image, to_rgb


def test_folders_are_walked_in_order_and_unknown_files_are_sniffed(tmp_path):
    (tmp_path / "b" / ".hidden").mkdir(parents=True)
    Image.new("RGB", (8, 8)).save(tmp_path / "b" / "two.png")
    Image.new("RGB", (8, 8)).save(tmp_path / "one.JPG")
    Image.new("RGB", (8, 8)).save(tmp_path / "b" / ".hidden" / "skip.png")
    (tmp_path / ".DS_Store").write_bytes(b"\0")
    Image.new("RGB", (8, 8)).save(tmp_path / "image.dat", format="PNG")
    items = collect_inputs([tmp_path, tmp_path / "image.dat", np.zeros((4, 4, 3), dtype=np.uint8)])
    found = [(item.path.replace(str(tmp_path), "~"), item.kind) for item in items]
    assert found == [
        ("~/one.JPG", "image"),
        ("~/b/two.png", "image"),
        ("~", "other"),  # the folder's note naming image.dat, which a walk does not sniff
        ("~/image.dat", "image"),  # named on its own: recognised by its content
        ("<image>", "image"),
    ]
    assert items[2].note == "skipped 1 files that are not images or videos: image.dat"


def test_exif_orientation_is_applied(tmp_path):
    image = Image.new("RGB", (40, 20), (255, 0, 0))
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90° clockwise on display
    image.save(tmp_path / "turned.jpg", exif=exif)
    assert load_image(tmp_path / "turned.jpg").size == (20, 40)


def test_every_mode_becomes_rgb():
    assert to_rgb(Image.new("L", (2, 2), 7)).getpixel((0, 0)) == (7, 7, 7)
    assert to_rgb(Image.new("RGBA", (2, 2), (0, 0, 0, 0))).getpixel((0, 0)) == (255, 255, 255)
    deep = Image.fromarray(np.array([[0, 65535]], dtype=np.uint16))
    assert [to_rgb(deep).getpixel((x, 0)) for x in (0, 1)] == [(0, 0, 0), (255, 255, 255)]
    assert to_rgb(Image.new("CMYK", (2, 2))).mode == "RGB"


def test_unreadable_images_raise_media_errors(tmp_path):
    (tmp_path / "text.jpg").write_text("hello")
    with pytest.raises(MediaError, match="not a readable image"):
        load_image(tmp_path / "text.jpg")
    with pytest.raises(MediaError, match="cannot read image"):
        load_image(tmp_path / "missing.jpg")
