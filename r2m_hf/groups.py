"""Parameter groups of a classification model, decided by module type on a meta-device instance.

* ``head``: the classifier module of the ``*ForImageClassification`` model.
* ``vector`` (V): parameters of normalisation modules and every parameter named ``bias``.
* ``subspace`` (S): every other backbone tensor.
* ``truncatable`` (M ⊂ S): 2-D weights of ``nn.Linear`` modules inside the encoder blocks.

:func:`build_layout` decides them on a meta instance of the architecture, which imports transformers' modeling code
(seconds); :mod:`r2m_hf.layout_cache` stores the result per architecture and config so that later merges read it
back instead. Neither torch nor transformers is imported with this module, so ``Group`` costs nothing to import.
"""

from __future__ import annotations

import enum
import re
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
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


@dataclass
class MetaInstance:
    """The architecture instantiated on the meta device, with transformers' checkpoint-key conversions for it."""

    model: nn.Module
    renamings: list = field(default_factory=list)
    converters: list = field(default_factory=list)


@dataclass
class ModelLayout:
    """Parameter names, shapes and groups of a `*ForImageClassification` architecture.

    A layout read from the cache has no meta instance; it builds one the first time it meets a checkpoint key it has
    not seen (and remembers the answer, see `aliases`).

    Args:
        config (`PretrainedConfig`): the target model's config (num_labels 2).
        model_class (`str`): the transformers class name.
        shapes (`dict[str, torch.Size]`): every parameter (and persistent buffer) by canonical name, in model order.
        groups (`dict[str, Group]`): the group of every parameter.
        head_names (`list[str]`): the classifier's parameters.
        base_model_prefix (`str`): the model class's ``base_model_prefix`` (``vit``, ``clip`` ...).
        aliases (`dict[str, str | None]`): checkpoint keys already mapped to a canonical name (None: not a tensor
            of this architecture); :meth:`canonical_name` adds to it.
        disk (`dict[str, str]`, *optional*): canonical name → the name `save_pretrained` writes, once known.
        instance (`MetaInstance`, *optional*): the meta instance, when it has been built.
        cache_entry (`tuple[Path, dict]`, *optional*): the file and key :mod:`r2m_hf.layout_cache` stores it under.
    """

    config: Any
    model_class: str
    shapes: dict[str, torch.Size]
    groups: dict[str, Group]
    head_names: list[str]
    base_model_prefix: str = ""
    aliases: dict[str, str | None] = field(default_factory=dict, repr=False)
    disk: dict[str, str] | None = field(default=None, repr=False)
    instance: MetaInstance | None = field(default=None, repr=False)
    cache_entry: tuple[Any, dict] | None = field(default=None, repr=False)
    learned: bool = field(default=False, repr=False)  # aliases found since the layout was built or read

    @property
    def backbone_names(self) -> list[str]:
        return [n for n in self.shapes if self.groups[n] is not Group.HEAD]

    @property
    def meta_model(self) -> nn.Module:
        """The architecture on the meta device (built on first use for a cached layout)."""
        return self._instance().model

    def _instance(self) -> MetaInstance:
        if self.instance is None:
            self.instance = meta_instance(self.config)
        return self.instance

    def canonical_name(self, key: str) -> str | None:
        """Map a checkpoint key (transformers 4 or 5 naming, with or without the base-model prefix) to ours."""
        if key in self.shapes:
            return key
        if key in self.aliases:
            return self.aliases[key]
        found = self._resolve(key)
        self.aliases[key] = found
        self.learned = True
        return found

    def _resolve(self, key: str) -> str | None:
        """transformers' own key renaming (its conversion mapping for this class), then the base-model prefix."""
        from transformers.core_model_loading import rename_source_key

        instance = self._instance()
        renamed, _ = rename_source_key(
            key, instance.renamings, instance.converters, self.base_model_prefix, self.shapes
        )
        if renamed in self.shapes:
            return renamed
        prefixed = f"{self.base_model_prefix}.{key}" if self.base_model_prefix else key
        return prefixed if prefixed in self.shapes else None

    def disk_names(self) -> dict[str, str]:
        """Canonical name → the name `save_pretrained` writes (legacy names where transformers maps them)."""
        if self.disk is None:
            self.disk = self._reverted_names()
        return dict(self.disk)

    def _reverted_names(self) -> dict[str, str]:
        import torch
        from transformers.core_model_loading import revert_weight_conversion

        same = {n: n for n in self.shapes}
        meta = {name: torch.empty(shape, device="meta") for name, shape in self.shapes.items()}
        try:
            reverted = revert_weight_conversion(self.meta_model, dict(meta))
        except Exception:  # a many-to-one conversion we cannot express per tensor: keep in-memory names
            return same
        if len(reverted) != len(meta):
            return same
        mapping = {}
        for disk_name in reverted:
            canonical = self.canonical_name(disk_name)
            if canonical is None or canonical in mapping:
                return same
            mapping[canonical] = disk_name
        return mapping if len(mapping) == len(self.shapes) else same


# ---------------------------------------------------------------------------------------------------------------------
# The layout of one architecture, built on the meta device.


def _is_norm(module: nn.Module) -> bool:
    from torch import nn

    norm_types = (nn.LayerNorm, nn.GroupNorm, nn.modules.batchnorm._BatchNorm, getattr(nn, "RMSNorm", nn.LayerNorm))
    # Some architectures define their own norm classes (`*LayerNorm`, `*RMSNorm`) that do not subclass torch's.
    return isinstance(module, norm_types) or type(module).__name__.endswith(("LayerNorm", "RMSNorm", "GroupNorm"))


def classifier_module(model: nn.Module) -> tuple[str, nn.Module]:
    """The classification head of a `*ForImageClassification` model (its `classifier` Linear)."""
    from torch import nn

    for attr in ("classifier", "head", "score"):
        module = getattr(model, attr, None)
        if isinstance(module, nn.Linear):
            return attr, module
    raise TypeError(f"{type(model).__name__} has no linear classifier head")


def meta_instance(config) -> MetaInstance:
    """`AutoModelForImageClassification` of `config` on the meta device, with its checkpoint-key conversions."""
    import torch
    from transformers import AutoModelForImageClassification
    from transformers.conversion_mapping import get_model_conversion_mapping
    from transformers.core_model_loading import WeightConverter, WeightRenaming

    with torch.device("meta"):
        model = AutoModelForImageClassification.from_config(config)
    conversions = get_model_conversion_mapping(model)
    return MetaInstance(
        model=model,
        renamings=[c for c in conversions if isinstance(c, WeightRenaming)],
        converters=[c for c in conversions if isinstance(c, WeightConverter)],
    )


def build_layout(config) -> ModelLayout:
    """Instantiate the architecture on the meta device and assign every parameter to its group.

    This imports transformers' modeling code for the architecture; :func:`r2m_hf.layout_cache.load_layout` returns
    the same layout from the cache when an earlier run built it.

    Args:
        config (`PretrainedConfig`): a config whose `AutoModelForImageClassification` class is the target.

    Returns:
        `ModelLayout`: names, shapes and groups (head / vector / subspace / truncatable).
    """
    from torch import nn

    instance = meta_instance(config)
    model = instance.model
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
    shapes = {name: tensor.shape for name, tensor in model.state_dict().items()}
    for name in shapes:  # persistent buffers (rare in ViTs) are merged as vectors
        groups.setdefault(name, Group.VECTOR)
    return ModelLayout(
        config=config,
        model_class=type(model).__name__,
        shapes=shapes,
        groups={n: groups[n] for n in shapes},
        head_names=[n for n in shapes if groups[n] is Group.HEAD],
        base_model_prefix=getattr(model, "base_model_prefix", "") or "",
        instance=instance,
    )


_LIST_INDEX = re.compile(r"\.\d+(\.|$)")


def _inside_module_list(model: nn.Module, module_name: str) -> bool:
    """Whether a module sits inside a repeated block (an element of an `nn.ModuleList`)."""
    from torch import nn

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
