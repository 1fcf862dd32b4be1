"""DeepfakeBench's CLIP and Effort detectors, re-created for the tests from what DeepfakeBench's code does.

* ``CLIPDetector``: ``backbone = CLIPModel.from_pretrained(...).vision_model``, ``head = nn.Linear(hidden, 2)``,
  logits ``head(backbone(image)["pooler_output"])``; ``state_dict()`` is what DeepfakeBench saves and what its
  ``test.py`` loads with ``strict=True``.
* ``EffortDetector``: the same with every ``nn.Linear`` inside a ``self_attn`` replaced by a projection whose weight is
  ``weight_main + U_residual @ diag(S_residual) @ V_residual`` (SVD split: top-r singular triplets frozen in
  ``weight_main``, the rest trainable).
* The checkpoint variants seen in the wild, written from a detector's state_dict.
"""

from __future__ import annotations

import os
import pickle
from pathlib import Path

import torch
from torch import nn
from transformers import CLIPConfig, CLIPModel

TINY_VISION = dict(
    hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4, image_size=28, patch_size=14
)
TINY_TEXT = dict(hidden_size=16, intermediate_size=32, num_hidden_layers=1, num_attention_heads=2)


def save_clip_base(folder: Path, seed: int = 0, **vision) -> Path:
    """A tiny pretrained-CLIP stand-in (a ``CLIPModel`` folder, as ``openai/clip-vit-*`` are)."""
    torch.manual_seed(seed)
    model = CLIPModel(CLIPConfig(vision_config={**TINY_VISION, **vision}, text_config=TINY_TEXT))
    model.save_pretrained(folder)
    return folder


class CLIPDetector(nn.Module):
    """DeepfakeBench's ``CLIPDetector`` (the parts its state_dict and test-time forward have)."""

    def __init__(self, base: Path):
        super().__init__()
        self.backbone = CLIPModel.from_pretrained(base).vision_model
        self.head = nn.Linear(self.backbone.config.hidden_size, 2)
        self.loss_func = nn.CrossEntropyLoss()

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        return self.head(self.backbone(image)["pooler_output"])


class SVDResidualLinear(nn.Module):
    """Effort's attention projection: a frozen rank-r part of the pretrained weight plus trainable SVD residuals."""

    def __init__(self, linear: nn.Linear, r: int):
        super().__init__()
        u, s, vh = torch.linalg.svd(linear.weight.data.double(), full_matrices=False)
        self.weight_main = nn.Parameter((u[:, :r] @ torch.diag(s[:r]) @ vh[:r]).float(), requires_grad=False)
        self.bias = nn.Parameter(linear.bias.data.clone())
        self.S_residual = nn.Parameter(s[r:].float())
        self.U_residual = nn.Parameter(u[:, r:].float())
        self.V_residual = nn.Parameter(vh[r:].float())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        weight = self.weight_main + self.U_residual @ torch.diag(self.S_residual) @ self.V_residual
        return nn.functional.linear(x, weight, self.bias)


class EffortDetector(CLIPDetector):
    """DeepfakeBench's ``EffortDetector``: SVD-residual projections in every attention block."""

    def __init__(self, base: Path, r: int):
        super().__init__(base)
        del self.loss_func  # Effort's loss holds no state; keep the state_dict exactly Effort's
        for layer in self.backbone.encoder.layers:
            for name in ("q_proj", "k_proj", "v_proj", "out_proj"):
                setattr(layer.self_attn, name, SVDResidualLinear(getattr(layer.self_attn, name), r))


def perturb(detector: nn.Module, seed: int, scale: float = 0.05) -> nn.Module:
    """A 'fine-tuned' detector: every trainable tensor moved by a small relative step, the head random."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, param in detector.named_parameters():
            if name.startswith("head."):
                param.copy_(torch.randn(param.shape, generator=generator) * 0.5)
            elif param.requires_grad:
                rms = float(param.pow(2).mean().sqrt())
                param.add_(torch.randn(param.shape, generator=generator) * scale * (rms + 1e-3))
    return detector.eval()


def variant_state(state: dict[str, torch.Tensor], variant: str) -> object:
    """A detector's state_dict saved the way one of the files in the wild is."""
    if variant == "plain":
        return dict(state)
    if variant == "ddp":
        return {f"module.{k}": v for k, v in state.items()}
    if variant == "wrapper":
        return {"state_dict": dict(state), "epoch": 7}
    if variant == "model_wrapper":
        return {"model": dict(state)}
    if variant == "old_names":
        renamed = {k.replace("backbone.", "base_model.", 1): v for k, v in state.items()}
        return {(f"classifier.{k[5:]}" if k.startswith("head.") else k): v for k, v in renamed.items()}
    if variant == "position_ids":
        positions = state["backbone.embeddings.position_embedding.weight"].shape[0]
        return {**state, "backbone.embeddings.position_ids": torch.arange(positions).unsqueeze(0)}
    if variant == "loss_func":
        return {**state, "loss_func.weight": torch.ones(2)}
    if variant == "df40":  # DDP + older names + position_ids, all at once
        df40 = variant_state(variant_state(state, "position_ids"), "old_names")
        return {"state_dict": variant_state(df40, "ddp")}
    raise ValueError(variant)


VARIANTS = ("plain", "ddp", "wrapper", "model_wrapper", "old_names", "position_ids", "loss_func", "df40")


class Malicious:
    """A pickle that runs a shell command when loaded without ``weights_only``."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def save_malicious(path: Path, marker: Path, *, zipped: bool) -> Path:
    if zipped:
        torch.save({"head.weight": Malicious(marker)}, path)
    else:
        with open(path, "wb") as handle:
            pickle.dump({"head.weight": Malicious(marker)}, handle, protocol=2)
    return path
