"""A DeepfakeBench CLIP detector as a transformers image classifier: config and model, in one self-contained file.

DeepfakeBench's CLIP and Effort detectors classify the CLS token after CLIP's ``post_layernorm`` (the vision tower's
``pooler_output``) with a 2-way linear head: real = 0, fake = 1, fake probability ``softmax(logits)[:, 1]``. Stock
``CLIPForImageClassification`` averages the patch tokens without that norm, so DeepfakeBench weights loaded into it
compute something else. This file defines the classifier DeepfakeBench trained. Its parameters are named as the stock
class names them (``vision_model.*``, ``classifier.*``), so a stock CLIP folder is a valid base for its weights.

It imports only torch and transformers: r2m-hf copies it verbatim into every folder it writes, with an ``auto_map`` in
``config.json``, so that ``AutoModelForImageClassification.from_pretrained(folder, trust_remote_code=True)`` and
``pipeline("image-classification", model=folder, trust_remote_code=True)`` work without r2m-hf installed.
"""

from __future__ import annotations

import torch
from torch import nn
from transformers import CLIPVisionConfig, CLIPVisionModel
from transformers.modeling_outputs import ImageClassifierOutput
from transformers.models.clip.modeling_clip import CLIPPreTrainedModel

MODEL_TYPE = "deepfakebench_clip"


class DeepfakeBenchCLIPConfig(CLIPVisionConfig):
    """The vision tower's sizes (a `CLIPVisionConfig`) and the detector it came from.

    Args:
        detector (`str`): ``clip`` (DeepfakeBench/DF40 CLIP detector) or ``effort`` (the Effort detector, whose
            attention projections were folded into plain weights).
        kwargs: the `CLIPVisionConfig` fields (``hidden_size``, ``num_hidden_layers``, ``patch_size``, ...).
    """

    model_type = MODEL_TYPE
    # A stock CLIP folder (`CLIPModel` or `CLIPVisionModel`) holds this model's backbone under the same names, so it
    # is a valid merge base for these detectors.
    compatible_base_model_types = ("clip", "clip_vision_model")

    def __init__(self, detector: str = "clip", **kwargs):
        self.detector = detector
        kwargs.setdefault("id2label", {0: "real", 1: "fake"})
        kwargs.setdefault("label2id", {"real": 0, "fake": 1})
        super().__init__(**kwargs)


class DeepfakeBenchCLIPForImageClassification(CLIPPreTrainedModel):
    """`head(vision_model(x).pooler_output)`: DeepfakeBench's CLIP detector with transformers' CLIP vision tower.

    Args:
        config (`DeepfakeBenchCLIPConfig`): tower sizes and labels (two classes, real = 0, fake = 1).
    """

    config_class = DeepfakeBenchCLIPConfig
    config: DeepfakeBenchCLIPConfig
    base_model_prefix = "vision_model"
    main_input_name = "pixel_values"
    input_modalities = ("image",)

    def __init__(self, config: DeepfakeBenchCLIPConfig):
        super().__init__(config)
        tower = CLIPVisionModel._from_config(config)
        # transformers 4 wraps the tower (`CLIPVisionModel.vision_model`); transformers 5 is the tower itself.
        self.vision_model = getattr(tower, "vision_model", tower)
        self.classifier = nn.Linear(config.hidden_size, config.num_labels)
        self.post_init()

    def forward(
        self,
        pixel_values: torch.Tensor | None = None,
        labels: torch.Tensor | None = None,
        **kwargs,
    ) -> ImageClassifierOutput:
        outputs = self.vision_model(pixel_values, **kwargs)
        logits = self.classifier(outputs.pooler_output)
        loss = None
        if labels is not None:
            loss = nn.functional.cross_entropy(logits.float(), labels.to(logits.device).view(-1))
        return ImageClassifierOutput(
            loss=loss,
            logits=logits,
            hidden_states=getattr(outputs, "hidden_states", None),
            attentions=getattr(outputs, "attentions", None),
        )


__all__ = ["MODEL_TYPE", "DeepfakeBenchCLIPConfig", "DeepfakeBenchCLIPForImageClassification"]
