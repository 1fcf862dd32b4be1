"""DeepfakeBench checkpoints in: every naming variant and Effort's factors convert to folders whose logits equal the
re-created DeepfakeBench detector's; the processor is DeepfakeBench's preprocessing; the folder works without r2m-hf;
bad files fail with one line and write nothing."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import torch
from PIL import Image

from r2m_hf.deepfakebench import (
    DeepfakeBenchCLIPForImageClassification,
    backbone_config,
    convert_dfb,
    load_dfb_state_dict,
    materialize_dfb,
)
from r2m_hf.errors import CheckpointError, OutputError, SourceError
from r2m_hf.groups import Group, build_layout
from tests.deepfakebench.reference import (
    VARIANTS,
    CLIPDetector,
    EffortDetector,
    perturb,
    save_clip_base,
    save_malicious,
    variant_state,
)

TOLERANCE = 1e-5


@pytest.fixture(scope="module")
def base(tmp_path_factory):
    return save_clip_base(tmp_path_factory.mktemp("clip-base"))


@pytest.fixture(scope="module")
def detector(base):
    torch.manual_seed(1)
    return perturb(CLIPDetector(base), seed=1)


@pytest.fixture(scope="module")
def images():
    return torch.randn(4, 3, 28, 28, generator=torch.Generator().manual_seed(5))


def load_folder(folder):
    from transformers import AutoModelForImageClassification

    return AutoModelForImageClassification.from_pretrained(folder).eval()


def max_delta(model, reference, images) -> float:
    with torch.no_grad():
        return float((model(pixel_values=images).logits - reference(images)).abs().max())


def assert_nothing_written(parent, out):
    assert not out.exists()
    assert not [p for p in parent.iterdir() if p.name.startswith(f".{out.name}")]


@pytest.mark.parametrize("variant", VARIANTS)
def test_every_variant_converts_to_the_same_logits(tmp_path, base, detector, images, variant):
    ckpt = tmp_path / "ckpt.pth"
    torch.save(variant_state(detector.state_dict(), variant), ckpt)
    out = convert_dfb(ckpt, tmp_path / "out", backbone=base)
    model = load_folder(out)
    assert isinstance(model, DeepfakeBenchCLIPForImageClassification)
    assert model.config.id2label == {0: "real", 1: "fake"}
    assert max_delta(model, detector, images) <= TOLERANCE


def test_effort_factors_are_folded(tmp_path, base, images):
    torch.manual_seed(2)
    effort = perturb(EffortDetector(base, r=31), seed=2)  # Effort keeps hidden - 1 singular values frozen
    state = effort.state_dict()
    assert "backbone.encoder.layers.0.self_attn.q_proj.U_residual" in state
    ckpt = tmp_path / "effort.pth"
    torch.save(variant_state(state, "ddp"), ckpt)
    with pytest.raises(CheckpointError, match="variant 'effort'"):
        convert_dfb(ckpt, tmp_path / "as-clip", backbone=base)
    out = convert_dfb(ckpt, tmp_path / "out", backbone=base, variant="effort")
    assert max_delta(load_folder(out), effort, images) <= TOLERANCE
    processor = json.loads((out / "preprocessor_config.json").read_text())
    assert processor["image_mean"] == [0.48145466, 0.4578275, 0.40821073]
    assert json.loads((out / "config.json").read_text())["detector"] == "effort"


def test_load_normalises_names_and_drops_what_deepfakebench_never_loads(tmp_path, detector):
    ckpt = tmp_path / "df40.pth"
    torch.save(variant_state(detector.state_dict(), "df40"), ckpt)
    state = load_dfb_state_dict(ckpt)
    assert set(state) == set(detector.state_dict())
    assert state.dropped == ["module.base_model.embeddings.position_ids"]
    assert torch.equal(state["head.weight"], detector.head.weight)


def test_layout_groups_match_the_stock_clip_classifier(base):
    from transformers import CLIPConfig

    ours = build_layout(backbone_config(base))
    stock_config = CLIPConfig.from_pretrained(base)
    stock_config.num_labels = 2
    stock = build_layout(stock_config)
    assert ours.groups == stock.groups
    assert ours.head_names == ["classifier.weight", "classifier.bias"]
    assert ours.groups["vision_model.encoder.layers.1.mlp.fc1.weight"] is Group.TRUNCATABLE
    assert ours.canonical_name("vision_model.post_layernorm.weight") == "vision_model.post_layernorm.weight"
    assert ours.canonical_name("embeddings.class_embedding") == "vision_model.embeddings.class_embedding"


@pytest.mark.parametrize("variant, mean", [("clip", 0.5), ("effort", None)])
def test_processor_is_deepfakebench_preprocessing(tmp_path, base, variant, mean):
    from transformers import AutoImageProcessor

    from r2m_hf.deepfakebench import processor_config

    config = backbone_config(base)
    (tmp_path / "preprocessor_config.json").write_text(json.dumps(processor_config(config, variant=variant)))
    processor = AutoImageProcessor.from_pretrained(tmp_path)
    image = Image.fromarray(np.random.default_rng(0).integers(0, 256, (61, 45, 3), dtype=np.uint8))
    pixels = processor(images=image, return_tensors="pt").pixel_values[0].permute(1, 2, 0).numpy()
    expected = np.asarray(image.convert("RGB").resize((28, 28), Image.BICUBIC), dtype=np.float32) / 255
    stats = processor_config(config, variant=variant)
    expected = (expected - np.array(stats["image_mean"])) / np.array(stats["image_std"])
    assert np.abs(pixels - expected).max() < 1e-6
    if mean is not None:
        assert stats["image_mean"] == [mean] * 3 and stats["image_std"] == [mean] * 3


def test_folder_works_without_r2m_hf(tmp_path, base, detector, images):
    ckpt = tmp_path / "ckpt.pth"
    torch.save(detector.state_dict(), ckpt)
    out = convert_dfb(ckpt, tmp_path / "out", backbone=base)
    assert (out / "modeling_deepfakebench_clip.py").is_file() and (out / "README.md").is_file()
    torch.save(images, tmp_path / "images.pt")
    with torch.no_grad():
        torch.save(detector(images), tmp_path / "expected.pt")
    Image.fromarray(np.random.default_rng(1).integers(0, 256, (40, 30, 3), dtype=np.uint8)).save(tmp_path / "face.png")
    script = textwrap.dedent(
        f"""
        import sys
        sys.modules["r2m_hf"] = None  # any import of r2m-hf now fails
        import torch
        from PIL import Image
        from transformers import AutoImageProcessor, AutoModelForImageClassification, pipeline
        folder = {str(out)!r}
        model = AutoModelForImageClassification.from_pretrained(folder, trust_remote_code=True).eval()
        assert type(model).__name__ == "DeepfakeBenchCLIPForImageClassification", type(model)
        images = torch.load({str(tmp_path / "images.pt")!r})
        with torch.no_grad():
            delta = (model(pixel_values=images).logits - torch.load({str(tmp_path / "expected.pt")!r})).abs().max()
        assert delta <= {TOLERANCE}, float(delta)
        detector = pipeline("image-classification", model=folder, trust_remote_code=True)
        face = Image.open({str(tmp_path / "face.png")!r})
        scores = {{r["label"]: r["score"] for r in detector(face)}}
        pixels = AutoImageProcessor.from_pretrained(folder)(images=face, return_tensors="pt").pixel_values
        with torch.no_grad():
            fake = torch.softmax(model(pixel_values=pixels).logits, dim=1)[0, 1]
        assert abs(scores["fake"] - float(fake)) < 1e-5, (scores, float(fake))
        assert sorted(scores) == ["fake", "real"]
        assert not any(name.startswith("r2m_hf.") for name in sys.modules)
        print("ok")
        """
    )
    env = {k: v for k, v in __import__("os").environ.items() if k != "PYTHONPATH"}
    env["HF_MODULES_CACHE"] = str(tmp_path / "modules")
    result = subprocess.run(
        [sys.executable, "-c", script], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 0 and result.stdout.strip().endswith("ok"), result.stderr[-3000:]


def test_materialize_converts_once_into_the_cache(tmp_path, base, detector):
    ckpt = tmp_path / "ckpt.pth"
    torch.save(variant_state(detector.state_dict(), "ddp"), ckpt)
    first = materialize_dfb(ckpt, backbone=base, cache_dir=tmp_path / "cache")
    stamp = (first / "model.safetensors").stat().st_mtime_ns
    again = materialize_dfb("ckpt.pth", backbone=base, cache_dir=tmp_path / "cache", base_dir=tmp_path)
    assert again == first and (again / "model.safetensors").stat().st_mtime_ns == stamp
    assert first.name.endswith("-clip") and len(first.name) == 64 + len("-clip")


# ------------------------------------------------------------------------------------------------- bad inputs
def bad_state(detector, kind: str) -> dict:
    state = dict(detector.state_dict())
    if kind == "three_way":
        state["head.weight"], state["head.bias"] = torch.zeros(3, 32), torch.zeros(3)
    elif kind == "no_head":
        del state["head.weight"], state["head.bias"]
    elif kind == "unknown":
        state["backbone.adapter.weight"] = torch.zeros(2)
        state["extra.scale"] = torch.zeros(1)
    elif kind == "missing":
        del state["backbone.encoder.layers.1.mlp.fc1.weight"]
    return state


@pytest.mark.parametrize(
    "kind, message",
    [
        ("three_way", "head has 3 classes"),
        ("no_head", "no classifier head"),
        ("unknown", "2 unknown key(s): backbone.adapter.weight, extra.scale"),
        ("missing", "1 key(s) missing: backbone.encoder.layers.1.mlp.fc1.weight"),
    ],
)
def test_bad_checkpoints_fail_in_one_line_and_write_nothing(tmp_path, base, detector, kind, message):
    ckpt = tmp_path / "bad.pth"
    torch.save(bad_state(detector, kind), ckpt)
    with pytest.raises(CheckpointError) as caught:
        convert_dfb(ckpt, tmp_path / "out", backbone=base)
    assert message in str(caught.value) and "\n" not in str(caught.value)
    assert_nothing_written(tmp_path, tmp_path / "out")


def test_wrong_backbone_size(tmp_path, base, detector):
    wider = save_clip_base(tmp_path / "wider", hidden_size=48, num_hidden_layers=3)
    ckpt = tmp_path / "ckpt.pth"
    torch.save(detector.state_dict(), ckpt)
    with pytest.raises(CheckpointError) as caught:
        convert_dfb(ckpt, tmp_path / "out", backbone=wider)
    message = str(caught.value)
    assert "hidden 32, layers 2" in message and "hidden 48, layers 3" in message and "\n" not in message
    assert_nothing_written(tmp_path, tmp_path / "out")


@pytest.mark.parametrize("zipped", [True, False])
def test_malicious_pickle_is_refused_without_running(tmp_path, base, zipped):
    marker = tmp_path / "PWNED"
    ckpt = save_malicious(tmp_path / "evil.pth", marker, zipped=zipped)
    with pytest.raises(CheckpointError) as caught:
        convert_dfb(ckpt, tmp_path / "out", backbone=base)
    message = str(caught.value)
    assert message.startswith(f"{ckpt}: refused: ") and "\n" not in message
    assert "weights_only" not in message and "Traceback" not in message
    if zipped:
        assert "system" in message
    assert not marker.exists()
    assert_nothing_written(tmp_path, tmp_path / "out")


def test_other_failures(tmp_path, base, detector):
    with pytest.raises(SourceError, match="no such checkpoint file"):
        load_dfb_state_dict(tmp_path / "absent.pth")
    (tmp_path / "garbage.pth").write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointError, match="not a torch checkpoint"):
        load_dfb_state_dict(tmp_path / "garbage.pth")
    ckpt = tmp_path / "ckpt.pth"
    torch.save(detector.state_dict(), ckpt)
    with pytest.raises(CheckpointError, match="no Effort factors"):
        convert_dfb(ckpt, tmp_path / "out", backbone=base, variant="effort")
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "keep.txt").write_text("x")
    with pytest.raises(OutputError, match="not empty"):
        convert_dfb(ckpt, tmp_path / "out", backbone=base)
