"""Small seeded model zoos made by code: a backbone and specialists saved as Hub-style folders.

Used by ``r2m-hf demo`` and the tests. A specialist is the backbone plus a structured task vector
`τi = shared + si` (a shared low-rank "real" part and its own low-rank "fake" part on every matrix, small dense
deltas on norms and biases) and a binary head. Specialists can be saved as full models or as PEFT LoRA adapters
(under transformers 5 names, or rewritten to the transformers 4 names most Hub adapters carry).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import torch

from .checkpoint import LEGACY_VIT_MODULES

TINY = {
    "hidden_size": 32,
    "num_hidden_layers": 2,
    "num_attention_heads": 2,
    "intermediate_size": 64,
    "image_size": 32,
    "patch_size": 8,
}
ARCHITECTURES = ("vit", "clip", "dinov2", "siglip")


def tiny_config(arch: str = "vit", *, id2label: dict[int, str] | None = None, **overrides):
    """A tiny image-classification config of one of the supported architectures."""
    from transformers import CLIPConfig, Dinov2Config, SiglipConfig, ViTConfig

    vision = {**TINY, **overrides}
    text = {"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 1, "num_attention_heads": 2}
    if arch == "vit":
        config = ViTConfig(**vision)
    elif arch == "dinov2":
        config = Dinov2Config(**vision)
    elif arch == "clip":
        config = CLIPConfig(vision_config=vision, text_config=text)
    elif arch == "siglip":
        config = SiglipConfig(vision_config=vision, text_config=text)
    else:
        raise ValueError(f"unknown architecture {arch!r}; choose from {ARCHITECTURES}")
    labels = id2label or {0: "real", 1: "fake"}
    config.num_labels = len(labels)
    config.id2label = dict(labels)
    config.label2id = {v: k for k, v in labels.items()}
    return config


def _save_processor(folder: Path, size: int) -> None:
    from transformers import ViTImageProcessor

    ViTImageProcessor(size={"height": size, "width": size}, do_normalize=True).save_pretrained(folder)


def save_backbone(
    folder: str | Path, arch: str = "vit", *, seed: int = 0, backbone_only: bool = True, **overrides
) -> Path:
    """Save a seeded random backbone (a ``ViTModel`` when `backbone_only` and arch is vit) with its image processor."""
    from transformers import AutoModelForImageClassification, ViTModel

    folder = Path(folder)
    torch.manual_seed(seed)
    config = tiny_config(arch, **overrides)
    model = (
        ViTModel(config, add_pooling_layer=False)
        if (backbone_only and arch == "vit")
        else (AutoModelForImageClassification.from_config(config))
    )
    model.save_pretrained(folder)
    _save_processor(folder, config.image_size if hasattr(config, "image_size") else TINY["image_size"])
    return folder


def _low_rank(shape: tuple[int, ...], rank: int, scale: float, gen: torch.Generator) -> torch.Tensor:
    m, n = shape[0], int(torch.tensor(shape[1:]).prod()) if len(shape) > 1 else 1
    r = max(1, min(rank, m, n))
    u = torch.randn(m, r, generator=gen) / r**0.5
    v = torch.randn(r, n, generator=gen) / n**0.5
    return (scale * (u @ v)).reshape(shape)


def structured_task_vectors(
    state: dict[str, torch.Tensor],
    groups: dict,
    n: int,
    *,
    seed: int = 0,
    shared_rank: int = 3,
    own_rank: int = 2,
    shared_scale: float = 0.05,
    own_scale: float = 0.05,
) -> tuple[dict[str, torch.Tensor], list[dict[str, torch.Tensor]]]:
    """A shared part and N own parts of task vectors over a backbone (``τi = shared + own_i``)."""
    from .groups import Group

    gen = torch.Generator().manual_seed(seed)
    shared, own = {}, [dict() for _ in range(n)]
    for name, tensor in state.items():
        group = groups.get(name)
        if group is None or group is Group.HEAD:
            continue
        if group is Group.VECTOR or tensor.dim() < 2:
            shared[name] = 0.2 * shared_scale * torch.randn(tensor.shape, generator=gen)
            for i in range(n):
                own[i][name] = 0.2 * own_scale * torch.randn(tensor.shape, generator=gen)
        else:
            shared[name] = _low_rank(tuple(tensor.shape), shared_rank, shared_scale, gen)
            for i in range(n):
                own[i][name] = _low_rank(tuple(tensor.shape), own_rank, own_scale, gen)
    return shared, own


def save_full_specialist(
    folder: str | Path,
    base: dict[str, torch.Tensor],
    task_vector: dict[str, torch.Tensor],
    head: tuple[torch.Tensor, torch.Tensor],
    config,
    *,
    fake_first: bool = False,
    label_names: tuple[str, str] = ("real", "fake"),
) -> Path:
    """Save θ0 + τ with a binary head as a transformers folder; `fake_first` stores the fake class at index 0."""
    from transformers import AutoModelForImageClassification

    folder = Path(folder)
    config = config.__class__.from_dict(config.to_dict())
    weight, bias = head
    real_name, fake_name = label_names
    if fake_first:
        config.id2label, weight, bias = {0: fake_name, 1: real_name}, weight.flip(0), bias.flip(0)
    else:
        config.id2label = {0: real_name, 1: fake_name}
    config.label2id = {v: k for k, v in config.id2label.items()}
    model = AutoModelForImageClassification.from_config(config)
    state = {k: base[k] + task_vector.get(k, 0) for k in base}
    head_w = next(k for k in model.state_dict() if k.endswith("classifier.weight") or k == "classifier.weight")
    state[head_w] = weight
    state[head_w.replace("weight", "bias")] = bias
    model.load_state_dict(state, strict=True)
    model.save_pretrained(folder)
    _save_processor(folder, config.image_size if hasattr(config, "image_size") else TINY["image_size"])
    return folder


def save_lora_specialist(
    folder: str | Path,
    base_folder: str | Path,
    *,
    seed: int,
    rank: int = 4,
    alpha: int = 8,
    legacy_names: bool = False,
    use_rslora: bool = False,
    head: tuple[torch.Tensor, torch.Tensor] | None = None,
    scale: float = 1.0,
) -> Path:
    """Save a seeded PEFT LoRA adapter (q/v projections + the classifier in `modules_to_save`) over a ViT backbone.

    `scale` multiplies the random B factors. With `legacy_names` the saved keys and `target_modules` are rewritten
    to the transformers 4 names (``encoder.layer.N.attention.attention.query`` …), as adapters trained before
    transformers 5 have them.
    """
    from peft import LoraConfig, get_peft_model
    from safetensors.torch import load_file, save_file
    from transformers import AutoModelForImageClassification

    folder = Path(folder)
    torch.manual_seed(seed)
    model = AutoModelForImageClassification.from_pretrained(
        str(base_folder), num_labels=2, id2label={0: "real", 1: "fake"}, label2id={"real": 0, "fake": 1}
    )
    lora = LoraConfig(
        r=rank,
        lora_alpha=alpha,
        target_modules=["q_proj", "v_proj"],
        modules_to_save=["classifier"],
        use_rslora=use_rslora,
        init_lora_weights=False,
    )
    peft_model = get_peft_model(model, lora)
    if scale != 1.0:  # random LoRA factors are large; `scale` brings ΔW to the size of a real fine-tune
        with torch.no_grad():
            for name, param in peft_model.named_parameters():
                if "lora_B" in name:
                    param.mul_(scale)
    if head is not None:
        with torch.no_grad():
            wrapped = peft_model.base_model.model.classifier.modules_to_save["default"]
            wrapped.weight.copy_(head[0])
            wrapped.bias.copy_(head[1])
    peft_model.save_pretrained(folder)
    cfg = json.loads((folder / "adapter_config.json").read_text())
    cfg["base_model_name_or_path"] = str(Path(base_folder))
    if legacy_names:
        weights = load_file(folder / "adapter_model.safetensors")
        renamed = {}
        for key, value in weights.items():
            for new, old in LEGACY_VIT_MODULES:
                key = key.replace(new, old)
            renamed[key] = value
        save_file(renamed, folder / "adapter_model.safetensors", metadata={"format": "pt"})
        cfg["target_modules"] = ["query", "value"]
    (folder / "adapter_config.json").write_text(json.dumps(cfg, indent=2))
    return folder


@dataclass
class Zoo:
    """Paths of a built zoo."""

    root: Path
    base: Path
    specialists: list[Path]
    names: list[str]
    shared: dict[str, torch.Tensor]
    own: list[dict[str, torch.Tensor]]


def build_zoo(
    root: str | Path,
    *,
    arch: str = "vit",
    names: tuple[str, ...] = ("fs", "fr", "efs"),
    seed: int = 0,
    fake_first: tuple[str, ...] = ("fr",),
    **task_vector_kwargs,
) -> Zoo:
    """Build a backbone and full specialists with structured task vectors under `root`.

    Args:
        root (`str` or `Path`): folder to create the zoo in.
        arch (`str`): one of ``vit``, ``clip``, ``dinov2``, ``siglip``.
        names (`tuple[str]`): specialist names.
        seed (`int`): seed of everything.
        fake_first (`tuple[str]`): specialists saved with ``{0: FAKE, 1: REAL}`` labels.

    Returns:
        `Zoo`: the paths and the ground-truth shared / own task-vector parts.
    """
    from transformers import AutoModelForImageClassification

    from .groups import build_layout

    root = Path(root)
    base_dir = save_backbone(root / "backbone", arch, seed=seed)
    config = tiny_config(arch)
    layout = build_layout(config)
    torch.manual_seed(seed)
    model = (
        AutoModelForImageClassification.from_pretrained(str(base_dir), config=config)
        if arch == "vit"
        else (AutoModelForImageClassification.from_pretrained(str(base_dir)))
    )
    base = {k: v.detach().clone() for k, v in model.state_dict().items()}
    shared, own = structured_task_vectors(base, layout.groups, len(names), seed=seed + 1, **task_vector_kwargs)
    gen = torch.Generator().manual_seed(seed + 2)
    hidden = base[layout.head_names[0]].shape[1]
    paths = []
    for i, name in enumerate(names):
        tv = {k: shared[k] + own[i][k] for k in shared}
        head = (0.1 * torch.randn(2, hidden, generator=gen), 0.01 * torch.randn(2, generator=gen))
        label_names = ("REAL", "FAKE") if name in fake_first else ("real", "fake")
        paths.append(
            save_full_specialist(
                root / name, base, tv, head, config, fake_first=name in fake_first, label_names=label_names
            )
        )
    return Zoo(root=root, base=base_dir, specialists=paths, names=list(names), shared=shared, own=own)
