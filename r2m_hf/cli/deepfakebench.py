"""``r2m-hf convert-dfb`` and ``export-dfb``: DeepfakeBench / DF40 detector checkpoints in and out."""

from __future__ import annotations

import argparse
from pathlib import Path

from ._common import add_debug, add_verb


def register(subparsers) -> None:
    """Add the ``convert-dfb`` and ``export-dfb`` verbs."""
    convert = add_verb(
        subparsers, "convert-dfb", run_convert, help="convert a DeepfakeBench CLIP/Effort checkpoint to a model folder"
    )
    convert.add_argument("checkpoint", type=Path, help="the DeepfakeBench .pth file")
    convert.add_argument("output_dir", type=Path, help="the model folder to write")
    convert.add_argument(
        "--backbone",
        required=True,
        help="folder or Hub id of the CLIP it was trained from (e.g. openai/clip-vit-large-patch14)",
    )
    convert.add_argument(
        "--variant", choices=("clip", "effort"), default="clip",
        help="DeepfakeBench detector: clip (normalisation 0.5) or effort (folds its SVD factors; CLIP's normalisation)",
    )  # fmt: skip
    convert.add_argument("--overwrite", action="store_true", help="replace an existing output folder")
    add_debug(convert)
    export = add_verb(
        subparsers, "export-dfb", run_export, help="write a merged CLIP folder as a DeepfakeBench checkpoint (.pth)"
    )
    export.add_argument("merged_dir", type=Path, help="a merge output (or any CLIP classifier folder)")
    export.add_argument("output", type=Path, help="the .pth file to write (keys backbone.*, head.*)")
    export.add_argument(
        "--with-position-ids", action="store_true",
        help="also write backbone.embeddings.position_ids (DeepfakeBench installs with transformers < 4.31)",
    )  # fmt: skip
    export.add_argument("--overwrite", action="store_true", help="replace an existing file")
    add_debug(export)


def run_convert(args: argparse.Namespace) -> int:
    """``r2m-hf convert-dfb CKPT OUT --backbone B``: prints the folder written."""
    from ..deepfakebench import convert_dfb

    folder = convert_dfb(
        args.checkpoint, args.output_dir, backbone=args.backbone, variant=args.variant, overwrite=args.overwrite
    )
    print(f"wrote {folder}")
    return 0


def run_export(args: argparse.Namespace) -> int:
    """``r2m-hf export-dfb MERGED OUT.pth``: prints the file written."""
    from ..deepfakebench import export_dfb

    path = export_dfb(args.merged_dir, args.output, position_ids=args.with_position_ids, overwrite=args.overwrite)
    print(f"wrote {path}")
    return 0
