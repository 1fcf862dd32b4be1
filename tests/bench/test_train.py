"""The optional tiny-ViT backbone (SimMIM pretraining here) and detector training from it."""

from __future__ import annotations

import json

import torch

from r2m_hf.bench.backbones import pretrain_tiny_vit
from r2m_hf.bench.config import TinyViTRecipe, TrainRecipe
from r2m_hf.bench.train import train_detector
from r2m_hf.evaluation import fake_index_of, load_classifier


def test_tiny_vit_pretrains_and_fine_tunes(tmp_path):
    torch.manual_seed(0)
    images = torch.rand(16, 3, 16, 16)
    recipe = TinyViTRecipe(image_size=16, patch_size=4, hidden_size=32, num_hidden_layers=2, steps=12, batch_size=8)
    backbone = pretrain_tiny_vit(tmp_path / "backbone", images, recipe, progress=False)
    record = json.loads((backbone / "recipe.json").read_text())
    first, last = record["loss_first_last"]
    assert record["kind"] == "tiny-vit-simmim" and record["n_images"] == 16
    assert last < first  # masked-patch reconstruction learns something in 12 steps

    pixels = (images - 0.5) / 0.5
    labels = [0, 1] * 8
    detector = train_detector(
        backbone, tmp_path / "detector", pixels, labels, TrainRecipe(epochs=1, batch_size=8), progress=False
    )
    model, _, _ = load_classifier(detector)
    assert fake_index_of(model) == 1
    assert model(pixel_values=pixels[:2]).logits.shape == (2, 2)
    assert json.loads((detector / "recipe.json").read_text())["steps"] == 2
