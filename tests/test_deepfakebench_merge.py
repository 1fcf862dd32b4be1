"""DeepfakeBench specialists through a merge and back out: three converted detectors merged with R²M, the merge
exported to a DeepfakeBench checkpoint that the re-created detector loads with ``strict=True`` and that computes the
merged folder's logits; export's label handling and refusals."""

from __future__ import annotations

import json

import pytest
import torch

from r2m_hf import CheckpointError, LabelError, MergeConfig, OutputError, merge
from r2m_hf.deepfakebench import export_dfb, materialize_dfb
from tests.deepfakebench.helpers import logits_of_folder, save_specialists
from tests.deepfakebench.reference import CLIPDetector, EffortDetector, perturb, save_clip_base

TOLERANCE = 1e-5


@pytest.fixture(scope="module")
def setting(tmp_path_factory):
    """A tiny CLIP base and three specialists fine-tuned from it, saved as DeepfakeBench files in three variants."""
    root = tmp_path_factory.mktemp("dfb-merge")
    base = save_clip_base(root / "clip-base")
    files = save_specialists(root, base, (11, 12, 13))
    folders = [materialize_dfb(f, backbone=base, cache_dir=root / "cache") for f in files]
    return root, base, folders


@pytest.fixture(scope="module")
def images():
    return torch.randn(4, 3, 28, 28, generator=torch.Generator().manual_seed(9))


def logits_of_export(ckpt, base, images):
    detector = CLIPDetector(base)
    detector.load_state_dict(torch.load(ckpt, weights_only=True), strict=True)  # as DeepfakeBench's test.py does
    with torch.no_grad():
        return detector.eval()(images)


def dfb_base_folder(root, base):
    """The pretrained tower in the converted format (a zero head): a base the planner accepts without a CLIP rule."""
    detector = CLIPDetector(base)
    torch.nn.init.zeros_(detector.head.weight), torch.nn.init.zeros_(detector.head.bias)
    torch.save(detector.state_dict(), root / "base.pth")
    return materialize_dfb(root / "base.pth", backbone=base, cache_dir=root / "cache")


@pytest.mark.parametrize("base_kind", ["converted", "clip"])
def test_merge_export_reload(setting, images, base_kind):
    root, base, folders = setting
    base_model = dfb_base_folder(root, base) if base_kind == "converted" else base
    config = MergeConfig(
        merge_method="r2m",
        base_model=str(base_model),
        models=[{"model": str(f), "name": f"s{i}"} for i, f in enumerate(folders)],
    )
    out = root / f"merged-{base_kind}"
    merge(config, out, progress=False)
    merged = logits_of_folder(out, images)
    specialists = torch.stack([logits_of_folder(f, images) for f in folders])
    assert not any(torch.allclose(merged, s, atol=1e-3) for s in specialists)  # a real merge, not a copy

    ckpt = export_dfb(out, root / f"merged-{base_kind}.pth")
    state = torch.load(ckpt, weights_only=True)
    assert set(state) == set(CLIPDetector(base).state_dict())
    assert "backbone.pre_layrnorm.weight" in state and state["head.weight"].shape == (2, 32)
    assert float((logits_of_export(ckpt, base, images) - merged).abs().max()) <= TOLERANCE


def test_effort_specialist_round_trips_as_a_clip_detector(tmp_path, images):
    base = save_clip_base(tmp_path / "base")
    torch.manual_seed(3)
    effort = perturb(EffortDetector(base, r=30), seed=3)
    torch.save(effort.state_dict(), tmp_path / "effort.pth")
    folder = materialize_dfb(tmp_path / "effort.pth", backbone=base, variant="effort", cache_dir=tmp_path / "cache")
    assert folder.name.endswith("-effort")
    ckpt = export_dfb(folder, tmp_path / "effort-folded.pth")
    with torch.no_grad():
        assert float((logits_of_export(ckpt, base, images) - effort(images)).abs().max()) <= TOLERANCE


def save_stock_classifier(folder, base, id2label):
    from transformers import CLIPConfig, CLIPForImageClassification

    config = CLIPConfig.from_pretrained(base)
    config.id2label = id2label
    config.label2id = {v: k for k, v in id2label.items()}
    torch.manual_seed(4)
    model = CLIPForImageClassification(config)
    model.save_pretrained(folder)
    return model


def test_export_of_a_stock_classifier_puts_fake_at_index_1(tmp_path, images):
    base = save_clip_base(tmp_path / "base")
    stock = save_stock_classifier(tmp_path / "stock", base, {0: "FAKE", 1: "REAL"})
    ckpt = export_dfb(tmp_path / "stock", tmp_path / "stock.pth", position_ids=True)
    state = torch.load(ckpt, weights_only=True)
    assert torch.equal(state["head.weight"], stock.classifier.weight.flip(0))
    assert torch.equal(state["head.bias"], stock.classifier.bias.flip(0))
    assert state["backbone.embeddings.position_ids"].tolist() == [[0, 1, 2, 3, 4]]
    del state["backbone.embeddings.position_ids"]  # what a transformers < 4.31 DeepfakeBench expects, not ours
    detector = CLIPDetector(base)
    detector.load_state_dict(state, strict=True)
    with torch.no_grad():
        pooled = stock.vision_model(images).pooler_output
        assert torch.allclose(detector(images), stock.classifier(pooled).flip(1), atol=TOLERANCE)


def test_export_refusals_write_nothing(tmp_path):
    base = save_clip_base(tmp_path / "base")
    save_stock_classifier(tmp_path / "three", base, {0: "real", 1: "fake", 2: "other"})
    with pytest.raises(CheckpointError, match="3 classes") as caught:
        export_dfb(tmp_path / "three", tmp_path / "three.pth")
    assert "\n" not in str(caught.value) and not (tmp_path / "three.pth").exists()
    from transformers import CLIPVisionConfig, CLIPVisionModel

    tower = CLIPVisionConfig(
        hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=4, image_size=28, patch_size=14
    )
    CLIPVisionModel(tower).save_pretrained(tmp_path / "tower")
    with pytest.raises(CheckpointError, match="model_type 'clip_vision_model'"):
        export_dfb(tmp_path / "tower", tmp_path / "tower.pth")
    save_stock_classifier(tmp_path / "ok", base, {0: "real", 1: "fake"})
    (tmp_path / "exists.pth").write_bytes(b"x")
    with pytest.raises(OutputError, match="exists"):
        export_dfb(tmp_path / "ok", tmp_path / "exists.pth")
    assert (tmp_path / "exists.pth").read_bytes() == b"x"
    config = json.loads((tmp_path / "ok" / "config.json").read_text())
    config["id2label"] = {"0": "cat", "1": "dog"}
    (tmp_path / "ok" / "config.json").write_text(json.dumps(config))
    with pytest.raises(LabelError):
        export_dfb(tmp_path / "ok", tmp_path / "labels.pth")
    assert not (tmp_path / "labels.pth").exists()
