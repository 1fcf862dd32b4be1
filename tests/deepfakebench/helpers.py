"""Shared set-up of the DeepfakeBench tests: specialist checkpoints fine-tuned from a tiny CLIP base, and the logits
of a converted folder."""

from __future__ import annotations

from pathlib import Path

import torch

from tests.deepfakebench.reference import CLIPDetector, perturb, variant_state

VARIANTS = ("plain", "ddp", "df40")


def save_specialists(root: Path, base: Path, seeds: tuple[int, ...]) -> list[Path]:
    """One DeepfakeBench checkpoint ``root/spec{seed}.pth`` per seed, perturbed from `base`, in the file variants
    plain, ddp and df40 in turn."""
    files = []
    for seed, variant in zip(seeds, VARIANTS):
        torch.manual_seed(seed)
        files.append(root / f"spec{seed}.pth")
        torch.save(variant_state(perturb(CLIPDetector(base), seed).state_dict(), variant), files[-1])
    return files


def logits_of_folder(folder, images) -> torch.Tensor:
    """The logits of a converted DeepfakeBench folder loaded through ``AutoModelForImageClassification``."""
    from transformers import AutoModelForImageClassification

    from r2m_hf.deepfakebench import DeepfakeBenchCLIPForImageClassification

    model = AutoModelForImageClassification.from_pretrained(folder).eval()
    assert isinstance(model, DeepfakeBenchCLIPForImageClassification)
    with torch.no_grad():
        return model(pixel_values=images).logits
