"""Parameter groups of a classification model, decided by module type on a meta-device instance.

* ``head``: the classifier module of the ``*ForImageClassification`` model.
* ``vector`` (V): parameters of normalisation modules and every parameter named ``bias``.
* ``subspace`` (S): every other backbone tensor.
* ``truncatable`` (M ⊂ S): 2-D weights of ``nn.Linear`` modules inside the encoder blocks.
"""

from __future__ import annotations

import enum
import re
from dataclasses import dataclass, field

import torch
from torch import nn


class Group(str, enum.Enum):
    """The parameter group of one tensor (see ``docs/method.md``)."""

    HEAD = "head"
    VECTOR = "vector"
    SUBSPACE = "subspace"
    TRUNCATABLE = "truncatable"

    @property
    def in_subspace(self) -> bool:
        """`True` for the subspace group S, of which the truncatable group M is a part."""
        return self in (Group.SUBSPACE, Group.TRUNCATABLE)


# ---------------------------------------------------------------------------------------------------------------------
# The layout of one architecture, built on the meta device.

NORM_TYPES: tuple[type[nn.Module], ...] = (nn.LayerNorm, nn.GroupNorm, nn.modules.batchnorm._BatchNorm)
if hasattr(nn, "RMSNorm"):
    NORM_TYPES = NORM_TYPES + (nn.RMSNorm,)


def _is_norm(module: nn.Module) -> bool:
    # Some architectures define their own norm classes (`*LayerNorm`, `*RMSNorm`) that do not subclass torch's.
    return isinstance(module, NORM_TYPES) or type(module).__name__.endswith(("LayerNorm", "RMSNorm", "GroupNorm"))


@dataclass
class ModelLayout:
    """Parameter names, shapes and groups of a `*ForImageClassification` architecture.

    Args:
        config (`PretrainedConfig`): the target model's config (num_labels 2).
        model_class (`str`): the transformers class name.
        shapes (`dict[str, torch.Size]`): every parameter (and persistent buffer) by canonical name, in model order.
        groups (`dict[str, Group]`): the group of every parameter.
        head_names (`list[str]`): the classifier's parameters.
    """

    config: object
    model_class: str
    shapes: dict[str, torch.Size]
    groups: dict[str, Group]
    head_names: list[str]
    meta_model: nn.Module = field(repr=False)
    renamings: list = field(default_factory=list, repr=False)
    converters: list = field(default_factory=list, repr=False)

    @property
    def backbone_names(self) -> list[str]:
        return [n for n in self.shapes if self.groups[n] is not Group.HEAD]

    @property
    def base_model_prefix(self) -> str:
        return getattr(self.meta_model, "base_model_prefix", "")

    def canonical_name(self, key: str) -> str | None:
        """Map a checkpoint key (transformers 4 or 5 naming, with or without the base-model prefix) to ours."""
        if key in self.shapes:
            return key
        from transformers.core_model_loading import rename_source_key

        renamed, _ = rename_source_key(key, self.renamings, self.converters, self.base_model_prefix, self.shapes)
        if renamed in self.shapes:
            return renamed
        prefixed = f"{self.base_model_prefix}.{key}" if self.base_model_prefix else key
        return prefixed if prefixed in self.shapes else None

    def disk_names(self) -> dict[str, str]:
        """Canonical name → the name `save_pretrained` writes (legacy names where transformers maps them)."""
        from transformers.core_model_loading import revert_weight_conversion

        meta = {name: torch.empty(shape, device="meta") for name, shape in self.shapes.items()}
        try:
            reverted = revert_weight_conversion(self.meta_model, dict(meta))
        except Exception:  # a many-to-one conversion we cannot express per tensor: keep in-memory names
            return {n: n for n in self.shapes}
        if len(reverted) != len(meta):
            return {n: n for n in self.shapes}
        mapping = {}
        for disk_name in reverted:
            canonical = self.canonical_name(disk_name)
            if canonical is None or canonical in mapping:
                return {n: n for n in self.shapes}
            mapping[canonical] = disk_name
        return mapping if len(mapping) == len(self.shapes) else {n: n for n in self.shapes}


def classifier_module(model: nn.Module) -> tuple[str, nn.Module]:
    """The classification head of a `*ForImageClassification` model (its `classifier` Linear)."""
    for attr in ("classifier", "head", "score"):
        module = getattr(model, attr, None)
        if isinstance(module, nn.Linear):
            return attr, module
    raise TypeError(f"{type(model).__name__} has no linear classifier head")


def build_layout(config) -> ModelLayout:
    """Instantiate the architecture on the meta device and assign every parameter to its group.

    Args:
        config (`PretrainedConfig`): a config whose `AutoModelForImageClassification` class is the target.

    Returns:
        `ModelLayout`: names, shapes and groups (head / vector / subspace / truncatable).
    """
    from transformers import AutoModelForImageClassification
    from transformers.conversion_mapping import get_model_conversion_mapping
    from transformers.core_model_loading import WeightConverter, WeightRenaming

    with torch.device("meta"):
        model = AutoModelForImageClassification.from_config(config)
    head_attr, _ = classifier_module(model)

    groups: dict[str, Group] = {}
    for module_name, module in model.named_modules():
        in_block = _inside_module_list(model, module_name)
        for param_name, param in module.named_parameters(recurse=False):
            full = f"{module_name}.{param_name}" if module_name else param_name
            if full == head_attr or full.startswith(head_attr + "."):
                groups[full] = Group.HEAD
            elif _is_norm(module) or param_name == "bias" or param_name.endswith("_bias"):
                groups[full] = Group.VECTOR
            elif isinstance(module, nn.Linear) and param_name == "weight" and param.dim() == 2 and in_block:
                groups[full] = Group.TRUNCATABLE
            else:
                groups[full] = Group.SUBSPACE
    state = model.state_dict()
    shapes = {name: tensor.shape for name, tensor in state.items()}
    for name in shapes:  # persistent buffers (rare in ViTs) are merged as vectors
        groups.setdefault(name, Group.VECTOR)
    conversions = get_model_conversion_mapping(model)
    return ModelLayout(
        config=config,
        model_class=type(model).__name__,
        shapes=shapes,
        groups={n: groups[n] for n in shapes},
        head_names=[n for n in shapes if groups[n] is Group.HEAD],
        meta_model=model,
        renamings=[c for c in conversions if isinstance(c, WeightRenaming)],
        converters=[c for c in conversions if isinstance(c, WeightConverter)],
    )


_LIST_INDEX = re.compile(r"\.\d+(\.|$)")


def _inside_module_list(model: nn.Module, module_name: str) -> bool:
    """Whether a module sits inside a repeated block (an element of an `nn.ModuleList`)."""
    if not _LIST_INDEX.search(module_name):
        return False
    parts = module_name.split(".")
    node = model
    for part in parts:
        child = getattr(node, part, None) if not part.isdigit() else node[int(part)]
        if isinstance(node, nn.ModuleList) and part.isdigit():
            return True
        node = child
        if node is None:
            return False
    return False
