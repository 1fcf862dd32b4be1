"""Model loading for evaluation: a transformers folder, a PEFT LoRA adapter merged into its base, a loaded pair."""

from __future__ import annotations

import json

import pytest
import torch
from transformers import ViTForImageClassification, ViTImageProcessor

from r2m_hf.errors import LabelError, SourceError
from r2m_hf.evaluation import fake_index_of, load_classifier

from .tiny_vit import vit_config

torch.set_num_threads(1)
LABELS = {"id2label": {0: "FAKE", 1: "REAL"}, "label2id": {"FAKE": 0, "REAL": 1}}


@pytest.fixture(scope="module")
def adapter(tmp_path_factory):
    """A seeded base classifier folder and a LoRA adapter over it (q/v and the head), with labels saved beside it.

    Returns the adapter folder and the adapted model's logits on fixed pixels, computed before saving.
    """
    from peft import LoraConfig, get_peft_model

    root = tmp_path_factory.mktemp("adapter")
    torch.manual_seed(0)
    base = ViTForImageClassification(vit_config())
    base.save_pretrained(root / "base")
    ViTImageProcessor(size={"height": 32, "width": 32}).save_pretrained(root / "base")
    labelled = ViTForImageClassification.from_pretrained(root / "base", **LABELS)
    lora = LoraConfig(
        r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"], modules_to_save=["classifier"], init_lora_weights=False
    )
    model = get_peft_model(labelled, lora)
    with torch.no_grad():
        model.base_model.model.classifier.modules_to_save["default"].weight.mul_(5.0)  # the adapter's own head
    pixels = torch.randn(3, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        expected = model(pixel_values=pixels).logits
    model.save_pretrained(root / "adapter")
    model.get_base_model().config.save_pretrained(root / "adapter")  # the labels, beside the adapter
    config = json.loads((root / "adapter" / "adapter_config.json").read_text())
    config["base_model_name_or_path"] = str(root / "base")
    (root / "adapter" / "adapter_config.json").write_text(json.dumps(config))
    return root, pixels, expected


def test_lora_adapter_is_merged_into_its_base(adapter):
    root, pixels, expected = adapter
    model, processor, name = load_classifier(root / "adapter")
    assert name == str(root / "adapter") and not model.training
    assert type(model).__name__ == "ViTForImageClassification"  # merged: a plain transformers model, no peft wrapper
    with torch.no_grad():
        torch.testing.assert_close(model(pixel_values=pixels).logits, expected, rtol=1e-4, atol=1e-5)
    assert fake_index_of(model) == 0  # from the config.json saved beside the adapter
    assert processor.size == {"height": 32, "width": 32}  # none beside the adapter: the base's


def test_adapter_without_labels_needs_fake_label(adapter, tmp_path):
    root, _, _ = adapter
    bare = tmp_path / "bare"
    bare.mkdir()
    for name in ("adapter_config.json", "adapter_model.safetensors"):
        (bare / name).write_bytes((root / "adapter" / name).read_bytes())
    model, _, _ = load_classifier(bare)
    with pytest.raises(LabelError, match="pass fake_label="):
        fake_index_of(model, name="bare")
    assert fake_index_of(model, "LABEL_1") == 1


def test_loading_errors_say_what_to_do(tmp_path):
    with pytest.raises(SourceError, match="does not exist"):
        load_classifier(tmp_path / "missing")
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "adapter_config.json").write_text(json.dumps({"peft_type": "LORA"}))
    with pytest.raises(SourceError, match="base_model_name_or_path"):
        load_classifier(broken)
    model = ViTForImageClassification(vit_config(**LABELS))
    with pytest.raises(LabelError, match="is not one of its labels"):
        fake_index_of(model, "bird")
