"""A tiny hand-set ViT image classifier shared by the evaluation tests (no training: its scores are exact)."""

from __future__ import annotations

import torch
from transformers import ViTConfig, ViTForImageClassification


def vit_config(**labels) -> ViTConfig:
    """A 2-layer, 32-px ViT classifier configuration with two classes (and `labels` such as `id2label`)."""
    return ViTConfig(
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        image_size=32,
        patch_size=8,
        num_labels=2,
        **labels,
    )


def hand_set_vit(fake_first: bool = False) -> ViTForImageClassification:
    """A ViT whose fake logit grows with the mean pixel value (no training, so scores are exact and repeatable)."""
    names = ["FAKE", "REAL"] if fake_first else ["real", "fake"]
    config = vit_config(id2label=dict(enumerate(names)), label2id={n: i for i, n in enumerate(names)})
    model = ViTForImageClassification(config).eval()
    with torch.no_grad():
        for name, param in model.named_parameters():
            param.fill_(
                1.0
                if name.endswith(("layernorm_before.weight", "layernorm_after.weight", "vit.layernorm.weight"))
                else 0.0
            )
        patch = model.vit.embeddings.patch_embeddings.projection
        patch.weight[0] = 1.0 / (3 * 64)  # token dim 0: the patch's mean pixel
        patch.bias[1] = 1.0  # a constant dim, so LayerNorm keeps brightness graded instead of a sign
        attention = model.vit.layers[0].attention  # q = k = 0: the CLS token averages all patch tokens
        attention.v_proj.weight.copy_(torch.eye(32))
        attention.o_proj.weight.copy_(torch.eye(32))
        fake, real = (0, 1) if fake_first else (1, 0)
        model.classifier.weight[fake, 0] = 0.5
        model.classifier.weight[real, 0] = -0.5
    return model
