"""``python -m r2m_hf.bench``: run the offline forgery benchmark and write its report (same as ``r2m-hf bench``).

The command line builds its parser from :func:`add_arguments` before parsing, so this module imports nothing heavy:
torch, transformers and the benchmark's stages load only when :func:`run_from_args` runs.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path


def add_arguments(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """The benchmark's command-line options (shared with the `r2m-hf bench` verb)."""
    parser.add_argument(
        "--tier",
        choices=("quick", "full"),
        default="quick",
        help="quick: DINOv2-small's first 4 blocks, 56 px (< 5 min); full: DINOv2-small, 112 px (≤ 45 min on 2 cores)",
    )
    parser.add_argument(
        "--output",
        type=Path,
        default=Path("examples/offline_benchmark"),
        help="where RESULTS.md, results.json and the plots go",
    )
    parser.add_argument(
        "--cache",
        type=Path,
        default=None,
        help="data, backbone and specialists (default: $R2M_HF_BENCH_CACHE or ~/.cache/r2m_hf/bench)",
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--trials",
        type=int,
        default=None,
        metavar="N",
        help="tuning trials per method, the same for every method (default: 8 at the quick tier, 10 at the full tier)",
    )
    parser.add_argument(
        "--methods",
        default=None,
        metavar="A,B",
        help="comma-separated merge methods to run (default: every registered method)",
    )
    parser.add_argument(
        "--rerender",
        action="store_true",
        help="only rewrite RESULTS.md and the plots from the --output folder's results.json (no data, no training)",
    )
    parser.add_argument("--no-progress", action="store_true", help="hide progress bars")
    return parser


def run_from_args(args: argparse.Namespace) -> int:
    """Run the benchmark for parsed `args`; returns the exit code."""
    if args.rerender:
        return rerender(args.output)
    from .config import tier_config
    from .run import run_benchmark

    overrides = {} if args.trials is None else {"trials_per_method": args.trials}
    if args.methods:
        overrides["methods"] = tuple(m.strip() for m in args.methods.split(",") if m.strip())
    cfg = tier_config(
        args.tier, seed=args.seed, output=args.output, cache=args.cache, progress=not args.no_progress, **overrides
    )
    run_benchmark(cfg)
    return 0


def rerender(output: Path) -> int:
    """Rewrite `RESULTS.md` and the plots of a finished run from its `results.json` (the numbers are not touched)."""
    import json

    from ..errors import R2MError
    from .report import write_report

    path = Path(output) / "results.json"
    if not path.is_file():
        raise R2MError(f"{path} not found: run the benchmark first (r2m-hf bench --output {output})")
    write_report(json.loads(path.read_text(encoding="utf-8")), Path(output), plots=True)
    print(f"[bench] rewrote {Path(output) / 'RESULTS.md'} and the plots from {path}")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = add_arguments(argparse.ArgumentParser(prog="python -m r2m_hf.bench", description=__doc__))
    return run_from_args(parser.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
