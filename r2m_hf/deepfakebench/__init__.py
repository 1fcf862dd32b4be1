"""DeepfakeBench and DF40 detectors as r2m-hf specialists: checkpoints in, merges back out, same outputs.

DeepfakeBench's CLIP and Effort detectors are flat ``.pth`` state_dicts (``backbone.*`` + a 2-way ``head``) whose logits
come from the CLS token after CLIP's ``post_layernorm``. This package reads such files safely
(:func:`load_dfb_state_dict`), converts them into transformers folders with a model class that computes exactly that
(:func:`convert_dfb`, :func:`materialize_dfb` for a recipe's ``dfb:`` entries), and writes merged folders back as
DeepfakeBench checkpoints (:func:`export_dfb`). Importing it registers the model class with transformers' Auto classes.
"""

from __future__ import annotations

from .convert import (
    MODEL_CLASS_NOTE,
    backbone_config,
    convert_dfb,
    default_cache_dir,
    materialize_dfb,
    processor_config,
    resolve_dfb_file,
    write_remote_code,
)
from .export import export_dfb
from .modeling_deepfakebench_clip import MODEL_TYPE, DeepfakeBenchCLIPConfig, DeepfakeBenchCLIPForImageClassification
from .state_dict import DFBStateDict, check_dfb_state_dict, load_dfb_state_dict


def register() -> None:
    """Register the DeepfakeBench CLIP classifier with ``AutoConfig`` and ``AutoModelForImageClassification``."""
    from transformers import AutoConfig, AutoModelForImageClassification

    AutoConfig.register(MODEL_TYPE, DeepfakeBenchCLIPConfig, exist_ok=True)
    AutoModelForImageClassification.register(
        DeepfakeBenchCLIPConfig, DeepfakeBenchCLIPForImageClassification, exist_ok=True
    )


register()

__all__ = [
    "MODEL_CLASS_NOTE",
    "MODEL_TYPE",
    "DFBStateDict",
    "DeepfakeBenchCLIPConfig",
    "DeepfakeBenchCLIPForImageClassification",
    "backbone_config",
    "check_dfb_state_dict",
    "convert_dfb",
    "default_cache_dir",
    "export_dfb",
    "load_dfb_state_dict",
    "materialize_dfb",
    "processor_config",
    "register",
    "resolve_dfb_file",
    "write_remote_code",
]
