"""Detectors of the offline benchmark, fine-tuned here from a backbone folder with the Hugging Face stack.

Owns the fine-tuning of binary detectors: full fine-tuning, LoRA adapters (peft, q/v projections, the head in
``modules_to_save``) and linear probes, in a small seeded ``accelerate`` loop over pixel tensors computed once with the
backbone's image processor. Every result is a Hub-style folder (``save_pretrained`` + image processor +
``recipe.json``), so the merge reads it exactly as it would read a Hub repository; the ``recipe.json`` also keys the
benchmark's cache (:func:`is_fresh`, :func:`stamp`).
"""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .config import TrainRecipe

RECIPE_FILE = "recipe.json"
TRAIN_MODES = ("full", "lora", "probe")


def load_recipe(folder: str | Path) -> dict[str, Any] | None:
    """The `recipe.json` saved next to a checkpoint, or None when there is none (an unfinished folder)."""
    path = Path(folder) / RECIPE_FILE
    if not path.is_file():
        return None
    return json.loads(path.read_text(encoding="utf-8"))


def write_recipe(folder: Path, record: dict[str, Any]) -> None:
    """Write the `recipe.json` record of a checkpoint folder."""
    (folder / RECIPE_FILE).write_text(json.dumps(record, indent=2, sort_keys=True, default=str) + "\n")


def cosine_schedule(step: int, total: int, warmup: int) -> float:
    """Learning-rate factor at `step`: linear warm-up over `warmup` steps, then cosine decay to 0 at `total`."""
    if step < warmup:
        return (step + 1) / warmup
    progress = (step - warmup) / max(1, total - warmup)
    return 0.5 * (1 + np.cos(np.pi * min(1.0, progress)))


def augment(x: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """Random horizontal flips (forgery traces are flip-invariant; crops would move the masks' seams)."""
    flip = torch.rand(x.shape[0], generator=gen) < 0.5
    x = x.clone()
    x[flip] = x[flip].flip(-1)
    return x


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
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: cosine_schedule(s, total, max(1, total // 10)))
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
                x = augment(pixels[idx], gen).to(accelerator.device)
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
    write_recipe(
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


def is_fresh(folder: Path, key: dict[str, Any]) -> bool:
    """Whether `folder` holds a finished checkpoint trained from exactly `key` (its `recipe.json`)."""
    record = load_recipe(folder)
    return record is not None and record.get("cache_key") == _json_value(key)


def stamp(folder: Path, key: dict[str, Any]) -> None:
    """Record `key` in the `recipe.json` of a finished checkpoint, so a later run reuses it."""
    record = load_recipe(folder) or {}
    record["cache_key"] = _json_value(key)
    write_recipe(folder, record)


def _json_value(value: Any) -> Any:
    return json.loads(json.dumps(value, default=str))


__all__ = ["RECIPE_FILE", "TrainRecipe", "is_fresh", "load_recipe", "stamp", "train_detector"]
