"""Load an image classifier for evaluation and find which of its logits is the fake class.

Owns every way a detector reaches the evaluation runner: a local folder or Hub repo id read through the `Auto*`
classes (never remote code), a PEFT LoRA adapter folder applied to its base model and merged (``peft``, as adapter
users load one), or an already loaded model with its image processor. The fake index comes from the head's
``id2label`` names, or from an explicit ``fake_label``.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from ..errors import LabelError, SourceError
from ..heads import resolve_fake_index
from .data import EvaluationError

ADAPTER_CONFIG = "adapter_config.json"


def load_classifier(model, image_processor=None):
    """Load an image classifier and its image processor, as a user of `transformers` (or `peft`) would.

    Args:
        model (`str | os.PathLike | PreTrainedModel | tuple`): a local folder (a model, or a PEFT adapter folder
            with `adapter_config.json`, whose `base_model_name_or_path` is loaded and the adapter merged into it),
            a Hub repo id, a loaded image classifier, or a `(model, image_processor)` pair.
        image_processor (*optional*): the processor to use; defaults to the one saved with the model (for an
            adapter: beside the adapter, else with its base model).

    Returns:
        `tuple`: `(model, image_processor, name)`, the model in eval mode and `name` its folder, repo id or class.
    """
    from transformers import AutoImageProcessor, PreTrainedModel

    from ..deepfakebench import register

    register()  # converted DeepfakeBench detectors (model_type deepfakebench_clip) load without remote code
    if isinstance(model, (tuple, list)) and len(model) == 2:
        model, image_processor = model
    if isinstance(model, PreTrainedModel):
        name = getattr(model, "name_or_path", None) or type(model).__name__
        if image_processor is None:
            try:
                image_processor = AutoImageProcessor.from_pretrained(name, trust_remote_code=False)
            except Exception as err:
                raise EvaluationError(
                    f"model {name!r} came without an image processor and none loads from "
                    f"{name!r}; pass image_processor= or (model, processor)"
                ) from err
        return model.eval(), image_processor, name
    if not isinstance(model, (str, os.PathLike)):
        raise EvaluationError(f"model must be a folder, a Hub repo id or a PreTrainedModel, got {type(model).__name__}")
    name = os.fspath(model)
    path = Path(name).expanduser()
    if not path.is_dir() and (path.is_absolute() or name.startswith((".", "~")) or name.count("/") > 1):
        raise SourceError(f"model folder {name!r} does not exist; give an existing folder or a Hub repo id")
    source = str(path) if path.is_dir() else name
    try:
        if (path / ADAPTER_CONFIG).is_file():
            loaded, processor = _load_adapter(path, image_processor)
        else:
            loaded, processor = _load_folder(source, image_processor)
    except (SourceError, EvaluationError):
        raise
    except Exception as err:
        raise SourceError(
            f"cannot load image classifier {name!r}: {' '.join(str(err).split())[:300]}; check the "
            "folder or repo id (HF_ENDPOINT, HF_TOKEN, HF_HUB_OFFLINE)"
        ) from err
    return loaded.eval(), processor, name


def fake_index_of(model, fake_label=None, name: str | None = None) -> int:
    """The logit index of the fake class, from the head's `id2label` or an explicit `fake_label`.

    Args:
        model (`PreTrainedModel`): the classifier.
        fake_label (`int | str`, *optional*): fake class index or name, for heads whose `id2label` does not say.
        name (`str`, *optional*): how to name the model in an error.

    Returns:
        `int`: the index; raises `LabelError` saying how to fix it when the names do not tell.
    """
    name = name or getattr(model, "name_or_path", None) or type(model).__name__
    id2label = {int(i): str(label) for i, label in (model.config.id2label or {}).items()}
    index = resolve_fake_index(id2label, fake_label)
    if index is None:
        if fake_label is not None:
            raise LabelError(f"model {name!r}: fake_label {fake_label!r} is not one of its labels {id2label}")
        raise LabelError(
            f"model {name!r}: cannot tell the fake class from id2label {id2label}; pass fake_label= (index or name)"
        )
    return int(index)


def _load_folder(source: str, image_processor):
    from transformers import AutoImageProcessor, AutoModelForImageClassification

    loaded = AutoModelForImageClassification.from_pretrained(source, trust_remote_code=False)
    processor = image_processor or AutoImageProcessor.from_pretrained(source, trust_remote_code=False)
    return loaded, processor


def _load_adapter(folder: Path, image_processor):
    """Base model + LoRA adapter, merged; the head's labels from a `config.json` saved beside the adapter, if any."""
    from peft import PeftModel
    from transformers import AutoConfig, AutoImageProcessor, AutoModelForImageClassification

    base = json.loads((folder / ADAPTER_CONFIG).read_text(encoding="utf-8")).get("base_model_name_or_path")
    if not base:
        raise SourceError(f"{folder / ADAPTER_CONFIG} names no base_model_name_or_path; cannot load the adapter")
    labels = {}
    if (folder / "config.json").is_file():
        config = AutoConfig.from_pretrained(str(folder), trust_remote_code=False)
        labels = {"num_labels": len(config.id2label), "id2label": config.id2label, "label2id": config.label2id}
    model = AutoModelForImageClassification.from_pretrained(str(base), trust_remote_code=False, **labels)
    model = PeftModel.from_pretrained(model, str(folder)).merge_and_unload()
    if image_processor is None:
        own = (folder / "preprocessor_config.json").is_file()
        image_processor = AutoImageProcessor.from_pretrained(str(folder) if own else str(base), trust_remote_code=False)
    return model, image_processor


__all__ = ["fake_index_of", "load_classifier"]
