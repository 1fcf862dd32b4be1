"""``r2m-hf demo``: build a small seeded zoo locally and merge it with R²M and baselines (no network)."""

from __future__ import annotations

import argparse
from pathlib import Path

from ._common import add_debug, add_progress, add_verb, show_progress


def register(subparsers) -> None:
    """Add the ``demo`` verb."""
    demo = add_verb(
        subparsers, "demo", run_demo, help="build a small seeded zoo locally and merge it with R²M (no network)"
    )
    demo.add_argument("--workdir", type=Path, default=Path("demo-output"), help="where the zoo and merges go")
    demo.add_argument("--seed", type=int, default=0)
    add_progress(demo)
    add_debug(demo)


def run_demo(args: argparse.Namespace) -> int:
    """``r2m-hf demo``: ``run_demo`` prints its own table."""
    from ..demo import run_demo as demo

    demo(args.workdir, seed=args.seed, progress=show_progress(args))
    return 0
