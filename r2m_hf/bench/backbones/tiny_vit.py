"""An optional tiny ViT backbone, pretrained here on the benchmark's real training images (SimMIM).

Masked-patch reconstruction with ``ViTForMaskedImageModeling``; the backbone is saved as a Hub-style ``ViTModel``
folder with its image processor and a ``recipe.json``. The tiers use DINOv2-small instead (see ``BenchConfig``): in
the CI budget this backbone did not learn three of the four forgery families.
"""

from __future__ import annotations

import time
from dataclasses import asdict
from pathlib import Path

import numpy as np
import torch

from ..config import TinyViTRecipe
from ..train import augment, cosine_schedule, write_recipe


def pretrain_tiny_vit(
    output_dir: str | Path, images: torch.Tensor, recipe: TinyViTRecipe, *, progress: bool = True
) -> Path:
    """Pretrain a tiny ViT with masked-patch reconstruction and save its backbone as a Hub-style `ViTModel` folder.

    Args:
        output_dir (`str` or `Path`): the folder (config, safetensors, image processor, `recipe.json`).
        images (`torch.Tensor`): `(N, 3, H, W)` real training images in [0, 1].
        recipe (`TinyViTRecipe`): architecture and schedule.
        progress (`bool`): show a progress bar.

    Returns:
        `Path`: `output_dir`.
    """
    from tqdm.auto import tqdm
    from transformers import ViTConfig, ViTForMaskedImageModeling, ViTImageProcessor, ViTModel

    started = time.perf_counter()
    torch.manual_seed(recipe.seed)
    gen = torch.Generator().manual_seed(recipe.seed)
    config = ViTConfig(
        image_size=recipe.image_size,
        patch_size=recipe.patch_size,
        hidden_size=recipe.hidden_size,
        num_hidden_layers=recipe.num_hidden_layers,
        num_attention_heads=recipe.num_attention_heads,
        intermediate_size=recipe.intermediate_size,
        encoder_stride=recipe.patch_size,
    )
    model = ViTForMaskedImageModeling(config)
    opt = torch.optim.AdamW(model.parameters(), lr=recipe.lr, weight_decay=recipe.weight_decay)
    warmup = max(1, recipe.steps // 10)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: cosine_schedule(s, recipe.steps, warmup))
    x_all = (images - 0.5) / 0.5  # the ViTImageProcessor normalisation saved below
    n_patches = (recipe.image_size // recipe.patch_size) ** 2
    losses = [float("nan")]
    model.train()
    for _ in tqdm(range(recipe.steps), desc="Pretraining tiny ViT (SimMIM)", disable=not progress):
        idx = torch.randint(0, x_all.shape[0], (recipe.batch_size,), generator=gen)
        x = augment(x_all[idx], gen)
        k = torch.rand(recipe.batch_size, n_patches, generator=gen).argsort(dim=1)
        mask = k < int(recipe.mask_ratio * n_patches)
        loss = model(pixel_values=x, bool_masked_pos=mask).loss
        loss.backward()
        opt.step()
        sched.step()
        opt.zero_grad()
        losses.append(loss.item())
    backbone = ViTModel(config, add_pooling_layer=False)
    state = {k: v for k, v in model.vit.state_dict().items() if "mask_token" not in k}
    backbone.load_state_dict(state, strict=True)
    output = Path(output_dir)
    backbone.save_pretrained(output)
    size = recipe.image_size
    ViTImageProcessor(size={"height": size, "width": size}, do_normalize=True).save_pretrained(output)
    write_recipe(
        output,
        {
            "kind": "tiny-vit-simmim",
            "recipe": asdict(recipe),
            "n_images": int(images.shape[0]),
            "loss_first_last": [float(np.mean(losses[1:11] or losses)), float(np.mean(losses[-10:]))],
            "seconds": round(time.perf_counter() - started, 2),
        },
    )
    return output


__all__ = ["pretrain_tiny_vit"]
