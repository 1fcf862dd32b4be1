"""``r2m-hf eval``: score a detector (folder or Hub repo) on a dataset and print its metrics table."""

from __future__ import annotations

import argparse
from pathlib import Path

from ._common import add_debug, add_progress, add_verb, show_progress


def register(subparsers) -> None:
    """Add the ``eval`` verb."""
    evaluate = add_verb(subparsers, "eval", run_eval, help="evaluate a detector (folder or Hub repo) on a dataset")
    evaluate.add_argument("model", help="model folder or Hub repo id")
    evaluate.add_argument("--dataset", required=True, help="imagefolder folder, Arrow/parquet path, or Hub dataset id")
    evaluate.add_argument("--split", default="test")
    evaluate.add_argument("--label-column", default="label")
    evaluate.add_argument("--family-column", default=None, help="forgery family per row (default: family)")
    evaluate.add_argument("--video-column", default=None, help="video id per row, for video-level metrics")
    evaluate.add_argument(
        "--fake-label", default=None, help="the fake class (name or index), when id2label does not say"
    )
    evaluate.add_argument("--batch-size", type=int, default=32)
    evaluate.add_argument("--max-samples", type=int, default=None, help="score a seeded random subset of N rows")
    evaluate.add_argument("--device", default=None, help="cpu, cuda, … (default: what accelerate picks)")
    evaluate.add_argument(
        "--threshold",
        type=float,
        default=None,
        help="also report accuracy at this threshold (fake when P(fake) >= it; default: the model's calibration)",
    )
    evaluate.add_argument(
        "--skip-unreadable",
        action="store_true",
        help="leave out images that cannot be decoded (corrupt, truncated, decompression bombs) instead of refusing",
    )
    evaluate.add_argument("--output", type=Path, default=None, help="write the metrics JSON here")
    add_progress(evaluate)
    add_debug(evaluate)


def run_eval(args: argparse.Namespace) -> int:
    """``r2m-hf eval``: ``evaluate_model``, its markdown table, and the JSON with ``--output``."""
    from ..evaluation import evaluate_model

    result = evaluate_model(
        args.model,
        args.dataset,
        split=args.split,
        label_column=args.label_column,
        family_column=args.family_column,
        video_column=args.video_column,
        batch_size=args.batch_size,
        device=args.device,
        max_samples=args.max_samples,
        progress=show_progress(args),
        fake_label=args.fake_label,
        threshold=args.threshold,
        skip_unreadable=args.skip_unreadable,
    )
    print(result.to_markdown())
    if args.output is not None:
        result.save(args.output)
        print(f"metrics written to {args.output}")
    return 0
