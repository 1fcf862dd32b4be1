"""Backbones and detectors of the offline benchmark, trained here with the Hugging Face stack.

Owns an optional tiny ViT backbone (pretrained on the benchmark's real training images with SimMIM-style masked-patch
reconstruction, ``ViTForMaskedImageModeling``; the tiers use DINOv2-small instead, see ``run.py``) and the fine-tuning
of binary detectors from a backbone folder: full fine-tuning, LoRA adapters (peft, q/v projections, the head in
``modules_to_save``) and linear probes. Training is a small seeded ``accelerate`` loop over pixel tensors computed
once with the backbone's image processor. Every result is a Hub-style folder (``save_pretrained`` + image processor +
``recipe.json``), so the merge reads it exactly as it would read a Hub repository.
"""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

RECIPE_FILE = "recipe.json"
TRAIN_MODES = ("full", "lora", "probe")


@dataclass(frozen=True)
class TinyViTRecipe:
    """The quick tier's backbone and its self-supervised pretraining.

    Args:
        image_size (`int`), patch_size (`int`), hidden_size (`int`), num_hidden_layers (`int`),
            num_attention_heads (`int`), intermediate_size (`int`): the ViT.
        mask_ratio (`float`): share of patches masked for SimMIM reconstruction.
        steps (`int`), batch_size (`int`), lr (`float`), weight_decay (`float`): AdamW schedule (cosine decay).
        seed (`int`): initialisation, masks and augmentation.
    """

    image_size: int = 32
    patch_size: int = 4
    hidden_size: int = 64
    num_hidden_layers: int = 4
    num_attention_heads: int = 4
    intermediate_size: int = 128
    mask_ratio: float = 0.5
    steps: int = 150
    batch_size: int = 64
    lr: float = 1e-3
    weight_decay: float = 0.05
    seed: int = 0


@dataclass(frozen=True)
class TrainRecipe:
    """How one detector is fine-tuned from the backbone.

    Args:
        mode (`str`): `full` (every weight), `lora` (peft LoRA on the q/v projections, head in `modules_to_save`)
            or `probe` (frozen backbone, head only).
        epochs (`int`), batch_size (`int`), lr (`float`), head_lr (`float`), weight_decay (`float`): AdamW
            with a linear warm-up over the first 10% of steps and cosine decay.
        lora_rank (`int`), lora_alpha (`int`): LoRA size (mode `lora`).
        fake_first (`bool`): save the head as `{0: FAKE, 1: REAL}` (exercises the merge's label alignment).
        seed (`int`): head initialisation, batch order and flips.
    """

    mode: str = "full"
    epochs: int = 12
    batch_size: int = 32
    lr: float = 2e-4
    head_lr: float = 2e-3
    weight_decay: float = 0.01
    lora_rank: int = 8
    lora_alpha: int = 16
    fake_first: bool = False
    seed: int = 0
    data: dict[str, Any] = field(default_factory=dict)


def load_recipe(folder: str | Path) -> dict[str, Any] | None:
    """The `recipe.json` saved next to a checkpoint, or None when there is none (an unfinished folder)."""
    path = Path(folder) / RECIPE_FILE
    if not path.is_file():
        return None
    return json.loads(path.read_text(encoding="utf-8"))


def _write_recipe(folder: Path, record: dict[str, Any]) -> None:
    (folder / RECIPE_FILE).write_text(json.dumps(record, indent=2, sort_keys=True, default=str) + "\n")


def pixel_values(dataset: Any, processor: Any, *, batch_size: int = 256) -> torch.Tensor:
    """Run an image processor once over a split's `image` column.

    Args:
        dataset (`datasets.Dataset`): rows with an `image` column.
        processor: a transformers image processor.
        batch_size (`int`): images per processor call.

    Returns:
        `torch.Tensor`: `(N, 3, H, W)` float32 pixel values.
    """
    out = []
    for start in range(0, len(dataset), batch_size):
        images = [im.convert("RGB") for im in dataset[start : start + batch_size]["image"]]
        out.append(processor(images=images, return_tensors="pt")["pixel_values"])
    return torch.cat(out).float()


def _cosine(step: int, total: int, warmup: int) -> float:
    if step < warmup:
        return (step + 1) / warmup
    progress = (step - warmup) / max(1, total - warmup)
    return 0.5 * (1 + np.cos(np.pi * min(1.0, progress)))


def _augment(x: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """Random horizontal flips (forgery traces are flip-invariant; crops would move the masks' seams)."""
    flip = torch.rand(x.shape[0], generator=gen) < 0.5
    x = x.clone()
    x[flip] = x[flip].flip(-1)
    return x


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
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: _cosine(s, recipe.steps, max(1, recipe.steps // 10)))
    x_all = (images - 0.5) / 0.5  # the ViTImageProcessor normalisation saved below
    n_patches = (recipe.image_size // recipe.patch_size) ** 2
    losses = [float("nan")]
    model.train()
    for _ in tqdm(range(recipe.steps), desc="Pretraining tiny ViT (SimMIM)", disable=not progress):
        idx = torch.randint(0, x_all.shape[0], (recipe.batch_size,), generator=gen)
        x = _augment(x_all[idx], gen)
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
    _write_recipe(
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


def _head_module(model: Any) -> torch.nn.Linear:
    return model.classifier


def train_detector(
    backbone_dir: str | Path,
    output_dir: str | Path,
    pixels: torch.Tensor,
    labels: Sequence[int],
    recipe: TrainRecipe,
    *,
    name: str = "detector",
    progress: bool = True,
) -> Path:
    """Fine-tune a binary real/fake detector from a backbone folder and save it as a Hub-style folder.

    Full fine-tunes and probes are saved as `AutoModelForImageClassification` folders; LoRA detectors as PEFT
    adapter folders whose `base_model_name_or_path` is the backbone folder. Labels are `0 = real, 1 = fake`; the
    saved `id2label` is `{0: real, 1: fake}` unless `recipe.fake_first`.

    Args:
        backbone_dir (`str` or `Path`): the backbone (`ViTModel`, `Dinov2Model`, ... folder with a processor).
        output_dir (`str` or `Path`): the folder to write.
        pixels (`torch.Tensor`): `(N, 3, H, W)` processed training images.
        labels (`Sequence[int]`): 0 = real, 1 = fake.
        recipe (`TrainRecipe`): the schedule and mode.
        name (`str`): shown in the progress bar.
        progress (`bool`): show a progress bar.

    Returns:
        `Path`: `output_dir`.
    """
    from accelerate import Accelerator
    from accelerate.utils import set_seed
    from tqdm.auto import tqdm
    from transformers import AutoImageProcessor, AutoModelForImageClassification

    if recipe.mode not in TRAIN_MODES:
        raise ValueError(f"unknown training mode {recipe.mode!r}; use one of {TRAIN_MODES}")
    started = time.perf_counter()
    set_seed(recipe.seed)
    backbone_dir = Path(backbone_dir)
    model = AutoModelForImageClassification.from_pretrained(
        str(backbone_dir), num_labels=2, id2label={0: "real", 1: "fake"}, label2id={"real": 0, "fake": 1}
    )
    if recipe.mode == "lora":
        from peft import LoraConfig, get_peft_model

        lora = LoraConfig(
            r=recipe.lora_rank,
            lora_alpha=recipe.lora_alpha,
            target_modules=["q_proj", "v_proj"],
            modules_to_save=["classifier"],
        )
        model = get_peft_model(model, lora)
        params = [
            {"params": [p for n, p in model.named_parameters() if p.requires_grad and "classifier" not in n]},
            {
                "params": [p for n, p in model.named_parameters() if p.requires_grad and "classifier" in n],
                "lr": recipe.head_lr,
            },
        ]
    elif recipe.mode == "probe":
        for n, p in model.named_parameters():
            p.requires_grad_(n.startswith("classifier."))
        params = [{"params": list(_head_module(model).parameters()), "lr": recipe.head_lr}]
    else:
        head = set(id(p) for p in _head_module(model).parameters())
        params = [
            {"params": [p for p in model.parameters() if id(p) not in head]},
            {"params": list(_head_module(model).parameters()), "lr": recipe.head_lr},
        ]
    y_all = torch.as_tensor(list(labels), dtype=torch.long)
    n = int(y_all.shape[0])
    steps_per_epoch = max(1, int(np.ceil(n / recipe.batch_size)))
    total = recipe.epochs * steps_per_epoch
    opt = torch.optim.AdamW(params, lr=recipe.lr, weight_decay=recipe.weight_decay)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: _cosine(s, total, max(1, total // 10)))
    accelerator = Accelerator(cpu=not torch.cuda.is_available())
    model, opt = accelerator.prepare(model, opt)
    gen = torch.Generator().manual_seed(recipe.seed)
    losses: list[float] = []
    model.train()
    bar = tqdm(total=total, desc=f"Training {name} ({recipe.mode})", disable=not progress, leave=False)
    # A probe's backbone is frozen: the head's inputs are computed once (a hook on the head) and reused each epoch.
    head_inputs = _head_inputs(model, pixels, accelerator.device) if recipe.mode == "probe" else None
    for _ in range(recipe.epochs):
        order = torch.randperm(n, generator=gen)
        for start in range(0, n, recipe.batch_size):
            idx = order[start : start + recipe.batch_size]
            y = y_all[idx].to(accelerator.device)
            if head_inputs is not None:
                logits = _head_module(accelerator.unwrap_model(model))(head_inputs[idx])
                loss = torch.nn.functional.cross_entropy(logits, y)
            else:
                x = _augment(pixels[idx], gen).to(accelerator.device)
                loss = model(pixel_values=x, labels=y).loss
            accelerator.backward(loss)
            opt.step()
            sched.step()
            opt.zero_grad()
            losses.append(loss.item())
            bar.update(1)
    bar.close()
    model = accelerator.unwrap_model(model).cpu().eval()
    output = Path(output_dir)
    output.mkdir(parents=True, exist_ok=True)
    if recipe.mode == "lora":
        model.save_pretrained(output)
        model.get_base_model().config.save_pretrained(output)  # the labels, beside the adapter as peft users do
        cfg_path = output / "adapter_config.json"
        cfg = json.loads(cfg_path.read_text())
        cfg["base_model_name_or_path"] = str(backbone_dir)
        cfg_path.write_text(json.dumps(cfg, indent=2))
    else:
        if recipe.fake_first:
            _flip_head(model, ("FAKE", "REAL"))
        model.save_pretrained(output)
    AutoImageProcessor.from_pretrained(str(backbone_dir)).save_pretrained(output)
    _write_recipe(
        output,
        {
            "kind": f"detector-{recipe.mode}",
            "backbone": str(backbone_dir),
            "recipe": asdict(recipe),
            "n_train": n,
            "n_fake": int(y_all.sum()),
            "steps": total,
            "loss_first_last": [float(np.mean(losses[:5])), float(np.mean(losses[-5:]))],
            "seconds": round(time.perf_counter() - started, 2),
            "id2label": {0: "FAKE", 1: "REAL"}
            if recipe.fake_first and recipe.mode != "lora"
            else {0: "real", 1: "fake"},
        },
    )
    return output


def _head_inputs(model: Any, pixels: torch.Tensor, device: torch.device, batch_size: int = 128) -> torch.Tensor:
    """What the classifier head receives for each image (captured by a forward hook, so any architecture works)."""
    captured: list[torch.Tensor] = []
    hook = _head_module(model).register_forward_hook(lambda _m, inp, _out: captured.append(inp[0].detach()))
    model.eval()
    try:
        with torch.no_grad():
            for start in range(0, pixels.shape[0], batch_size):
                model(pixel_values=pixels[start : start + batch_size].to(device))
    finally:
        hook.remove()
        model.train()
    return torch.cat(captured)


def _flip_head(model: Any, names: tuple[str, str]) -> None:
    """Store the head with the fake class at index 0 (`names` = index 0, index 1), as half the Hub's detectors do."""
    head = _head_module(model)
    with torch.no_grad():
        head.weight.copy_(head.weight.flip(0))
        head.bias.copy_(head.bias.flip(0))
    model.config.id2label = {0: names[0], 1: names[1]}
    model.config.label2id = {names[0]: 0, names[1]: 1}


def backbone_features(model_dir: str | Path | Any, pixels: torch.Tensor, *, batch_size: int = 128) -> torch.Tensor:
    """The backbone's class-token features (after the final norm) of a detector, for feature-similarity plots.

    Args:
        model_dir (`str`, `Path` or `PreTrainedModel`): an image-classification folder or model.
        pixels (`torch.Tensor`): processed images.
        batch_size (`int`): images per forward pass.

    Returns:
        `torch.Tensor`: `(N, hidden)` features.
    """
    from transformers import AutoModelForImageClassification

    model = model_dir
    if isinstance(model_dir, (str, Path)):
        model = AutoModelForImageClassification.from_pretrained(str(model_dir))
    model.eval()
    feats = []
    with torch.inference_mode():
        for start in range(0, pixels.shape[0], batch_size):
            out = model.base_model(pixel_values=pixels[start : start + batch_size])
            feats.append(out.last_hidden_state[:, 0].float())
    return torch.cat(feats)


def linear_cka(x: torch.Tensor, y: torch.Tensor) -> float:
    """Linear centred kernel alignment of two feature matrices over the same rows (1 = same up to rotation/scale)."""
    x = x.double() - x.double().mean(0)
    y = y.double() - y.double().mean(0)
    num = (y.T @ x).pow(2).sum()
    den = (x.T @ x).pow(2).sum().sqrt() * (y.T @ y).pow(2).sum().sqrt()
    return float(num / den) if den > 0 else float("nan")
