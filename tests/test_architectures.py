"""R²M through the CLI on every supported architecture, and the parameter groups of each (``groups.build_layout``)."""

from __future__ import annotations

import re

import pytest
import torch
from conftest import write_yaml
from torch import nn

from r2m_hf.groups import Group, build_layout
from r2m_hf.recipe import MergeReport
from r2m_hf.zoo import ARCHITECTURES, TINY, tiny_config

ENCODER_BLOCK = re.compile(r"\.(?:encoder\.)?layers?\.\d+\.")  # vit (transformers 5) has no `encoder.`
EXPECTED_CLASS = {
    "vit": "ViTForImageClassification",
    "clip": "CLIPForImageClassification",
    "dinov2": "Dinov2ForImageClassification",
    "siglip": "SiglipForImageClassification",
}


def _is_norm(module: nn.Module) -> bool:
    return isinstance(module, nn.LayerNorm | nn.GroupNorm) or type(module).__name__.endswith(("LayerNorm", "RMSNorm"))


@pytest.mark.parametrize("arch", ARCHITECTURES)
def test_r2m_merges_every_architecture_through_the_cli(arch, arch_zoo, tmp_path, cli):
    from transformers import AutoModelForImageClassification

    zoo = arch_zoo(arch)
    assert len(zoo.specialists) == 3
    config = write_yaml(
        tmp_path / "merge.yaml",
        {
            "merge_method": "r2m",
            "base_model": str(zoo.base),
            "models": [{"model": str(p)} for p in zoo.specialists],
        },
    )
    result = cli("merge", config, tmp_path / "out", "--no-progress")
    assert result.code == 0, result.err
    model, info = AutoModelForImageClassification.from_pretrained(str(tmp_path / "out"), output_loading_info=True)
    assert type(model).__name__ == EXPECTED_CLASS[arch]
    assert not info["missing_keys"] and not info["unexpected_keys"] and not info["mismatched_keys"], info
    assert model.config.id2label == {0: "real", 1: "fake"}
    with torch.no_grad():
        logits = model(pixel_values=torch.zeros(1, 3, TINY["image_size"], TINY["image_size"])).logits
    assert logits.shape == (1, 2) and torch.isfinite(logits).all()

    report = MergeReport.read(tmp_path / "out")
    assert report.architecture == EXPECTED_CLASS[arch]
    method = report.method
    assert len(method["coefficients"]) == 3 and method["core_norm"] > 0 and method["residual_norm"] > 0
    # The specialists' fr head (saved fake first) was aligned: the merged head is the mean of the aligned heads.
    heads = []
    for folder in zoo.specialists:
        spec = AutoModelForImageClassification.from_pretrained(str(folder))
        w = spec.classifier.weight.detach()
        heads.append(w.flip(0) if spec.config.id2label[0].lower() == "fake" else w)
    torch.testing.assert_close(model.classifier.weight.detach(), torch.stack(heads).mean(0))


@pytest.mark.parametrize("arch", ARCHITECTURES)
def test_parameter_groups(arch):
    layout = build_layout(tiny_config(arch))
    groups, shapes = layout.groups, layout.shapes
    assert layout.model_class == EXPECTED_CLASS[arch]
    assert set(groups) == set(shapes)

    # head = the classifier, nothing else
    assert layout.head_names == ["classifier.weight", "classifier.bias"]
    assert [n for n, g in groups.items() if g is Group.HEAD] == layout.head_names
    assert set(layout.backbone_names) == set(shapes) - set(layout.head_names)

    params = dict(layout.meta_model.named_parameters())
    for module_name, module in layout.meta_model.named_modules():
        for param_name, _ in module.named_parameters(recurse=False):
            full = f"{module_name}.{param_name}"
            if full in layout.head_names:
                continue
            if _is_norm(module) or param_name == "bias" or param_name.endswith("_bias"):
                assert groups[full] is Group.VECTOR, full
            elif isinstance(module, nn.Linear) and ENCODER_BLOCK.search(full):
                assert groups[full] is Group.TRUNCATABLE, full
            else:
                assert groups[full] is Group.SUBSPACE, full

    truncatable = [n for n, g in groups.items() if g is Group.TRUNCATABLE]
    # q, k, v, out, fc1, fc2 in each of the two blocks
    assert len(truncatable) == 6 * TINY["num_hidden_layers"], truncatable
    for name in truncatable:
        assert params[name].dim() == 2 and ENCODER_BLOCK.search(name) and name.endswith(".weight"), name

    norms = [n for n in groups if re.search(r"(layernorm|layer_norm\d?|norm\d|pre_layrnorm)\.(weight|bias)$", n)]
    assert norms and all(groups[n] is Group.VECTOR for n in norms), norms
    assert all(groups[n] is Group.VECTOR for n in groups if n.endswith(".bias") and n not in layout.head_names)

    patch = [n for n in groups if re.search(r"patch_embedding(s\.projection)?\.weight$", n)]
    assert len(patch) == 1 and len(shapes[patch[0]]) == 4 and groups[patch[0]] is Group.SUBSPACE, patch
    positions = [n for n in groups if "position_embedding" in n]
    assert positions and all(groups[n] is Group.SUBSPACE for n in positions)
    assert all(g.in_subspace for g in (Group.SUBSPACE, Group.TRUNCATABLE))
    assert not Group.VECTOR.in_subspace
