"""Model folders → DeepfakeBench checkpoints: a merged (or converted) CLIP classifier written back as the flat
``state_dict`` DeepfakeBench's ``test.py`` loads with ``strict=True``.

The keys are DeepfakeBench's: ``backbone.*`` (the CLIP vision tower, ``pre_layrnorm`` and all) and ``head.weight``,
``head.bias`` with real = 0, fake = 1. The safetensors files are memory-mapped, so the checkpoint is written without
copying the model into the process's own memory (the mapped pages count in its resident size, but they are page cache
that the kernel can reclaim).
"""

from __future__ import annotations

import json
import mmap
import os
from pathlib import Path

import torch

from ..errors import CheckpointError, OutputError, SourceError
from ..heads import align_head, fake_index_or_error
from ..paths import model_file, overlap
from .convert import vision_config
from .modeling_deepfakebench_clip import MODEL_TYPE, DeepfakeBenchCLIPConfig
from .state_dict import HF_BACKBONE, HF_HEAD, SHOWN, expected_shapes, to_dfb_name, to_hf_name

INDEX_FILE = "model.safetensors.index.json"


def _weight_files(folder: Path) -> list[Path]:
    single = folder / "model.safetensors"
    if single.is_file():
        return [single]
    index = folder / INDEX_FILE
    if index.is_file():
        try:
            names = set(json.loads(index.read_text())["weight_map"].values())
        except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
            raise CheckpointError(f"{index}: unreadable shard index ({exc})") from None
        # each shard resolved inside the folder: an index cannot point the export at another file
        return sorted(model_file(folder, name, CheckpointError, what=INDEX_FILE) for name in names)
    raise CheckpointError(f"{folder}: no model.safetensors (or shard index); export needs safetensors weights")


def _mapped_tensors(folder: Path) -> dict[str, torch.Tensor]:
    """Every tensor of a folder's safetensors files as a view of the memory-mapped file (nothing is read yet)."""
    from ..checkpoint import SafetensorsFile

    tensors: dict[str, torch.Tensor] = {}
    for file in _weight_files(folder):
        header = SafetensorsFile(file)  # validates the header and the data offsets
        header.close()
        with open(file, "rb") as handle:
            # Copy-on-write: torch wants a writable buffer; nothing is written, so nothing is copied.
            mapped = mmap.mmap(handle.fileno(), 0, access=mmap.ACCESS_COPY)
        for key, (dtype, shape, begin, end) in header.entries.items():
            count = (end - begin) // torch.empty((), dtype=dtype).element_size()
            if count == 0:
                tensors[key] = torch.empty(shape, dtype=dtype)
            else:
                offset = header.data_start + begin
                tensors[key] = torch.frombuffer(mapped, dtype=dtype, count=count, offset=offset).reshape(shape)
    return tensors


def _folder_config(folder: Path) -> tuple[DeepfakeBenchCLIPConfig, dict]:
    file = folder / "config.json"
    try:
        data = json.loads(file.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise SourceError(f"{file}: no such file; give a model folder (a merge output or converted detector)") from None
    except (OSError, ValueError) as exc:
        raise SourceError(f"{file}: not valid JSON ({exc})") from None
    if not isinstance(data, dict):
        raise SourceError(f"{file}: not a JSON object")
    tower = data.get("model_type") == "clip_vision_model"  # a tower has no head
    config = None if tower else vision_config(data, where=str(file))
    if config is None:
        raise CheckpointError(
            f"{folder}: model_type {data.get('model_type')!r}; only CLIP classifiers ({MODEL_TYPE} or "
            "CLIPForImageClassification) can be exported to DeepfakeBench"
        )
    return config, data


def export_dfb(
    merged_dir: str | Path,
    output_path: str | Path,
    *,
    position_ids: bool = False,
    overwrite: bool = False,
) -> Path:
    """Write a CLIP classifier folder as a DeepfakeBench detector checkpoint (``backbone.*``, ``head.*``).

    The head is brought to DeepfakeBench's order (real = 0, fake = 1) from the folder's ``id2label``. The file loads
    into DeepfakeBench's CLIP detector (``model.load_state_dict(ckpt, strict=True)`` in ``training/test.py``) when the
    detector's backbone is the same CLIP size.

    Args:
        merged_dir (`str` or `Path`): a merge output, a converted detector, or any ``CLIPForImageClassification``
            folder with safetensors weights.
        output_path (`str` or `Path`): the ``.pth`` file to write.
        position_ids (`bool`): also write ``backbone.embeddings.position_ids``, which DeepfakeBench environments with
            transformers < 4.31 expect (later versions do not save it, and a strict load then refuses it).
        overwrite (`bool`): replace an existing file.

    Returns:
        `Path`: the written file.

    Raises:
        `CheckpointError`: not a CLIP classifier, unknown or missing tensors, a head that is not 2-way;
        `LabelError`: ``id2label`` does not say which class is fake; `OutputError`: the file exists.
    """
    folder, output = Path(merged_dir), Path(output_path)
    if output.is_dir():
        raise OutputError(f"{output}: is a folder; give the .pth file to write")
    if output.exists() and not overwrite:
        raise OutputError(f"{output}: exists; pass --overwrite to replace it")
    if overlap(output, [folder]) is not None:
        raise OutputError(f"{output}: lies inside the model folder {folder}; write the checkpoint elsewhere")
    config, data = _folder_config(folder)
    tensors = _mapped_tensors(folder)
    expected = expected_shapes(config)
    shapes = {}
    unknown = []
    for key, tensor in tensors.items():
        if key == f"{HF_BACKBONE}embeddings.position_ids":
            continue
        name = to_dfb_name(key) if key.startswith((HF_BACKBONE, HF_HEAD)) else None
        if name in expected:
            shapes[name] = tuple(tensor.shape)
        else:
            unknown.append(key)
    if unknown:
        raise CheckpointError(
            f"{folder}: {len(unknown)} tensor(s) that a DeepfakeBench CLIP detector does not have: "
            f"{', '.join(unknown[:SHOWN])}"
        )
    classes = shapes.get("head.weight", (None,))[0]
    if classes != 2:
        raise CheckpointError(
            f"{folder}: the classifier has {classes or 'no'} classes; DeepfakeBench detectors have a 2-way head"
        )
    missing = [n for n in expected if n not in shapes]
    wrong = [n for n in expected if n in shapes and shapes[n] != expected[n]]
    if missing or wrong:
        name = (missing or wrong)[0]
        what = "is missing" if missing else f"has shape {list(shapes[name])}, expected {list(expected[name])}"
        raise CheckpointError(f"{folder}: tensor {name} {what} for the CLIP size in its config.json")
    fake = fake_index_or_error(data.get("id2label") or {}, None, str(folder))

    state = {name: tensors[to_hf_name(name)] for name in expected if not name.startswith("head.")}
    if position_ids:
        positions = expected["backbone.embeddings.position_embedding.weight"][0]
        state["backbone.embeddings.position_ids"] = torch.arange(positions).unsqueeze(0)
    weight, bias = align_head(tensors[f"{HF_HEAD}weight"], tensors[f"{HF_HEAD}bias"], fake)
    state["head.weight"], state["head.bias"] = weight.clone(), bias.clone()

    output.parent.mkdir(parents=True, exist_ok=True)
    tmp = output.with_name(f".{output.name}.tmp-{os.getpid()}")
    try:
        torch.save(state, tmp)
        os.replace(tmp, output)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return output
