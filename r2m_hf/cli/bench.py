"""``r2m-hf bench``: the offline forgery benchmark. Its options belong to the benchmark package
(``r2m_hf.bench.__main__``, shared with ``python -m r2m_hf.bench``) and are loaded only when this verb runs."""

from __future__ import annotations

import argparse

from ._common import add_debug, add_verb, show_progress


def register(subparsers) -> None:
    """Add the ``bench`` verb (its options load when it runs)."""
    add_verb(
        subparsers,
        "bench",
        run_bench,
        help="run the offline forgery benchmark (specialists, every merge method, report)",
        populate=_bench_options,
    )


def _bench_options(parser: argparse.ArgumentParser) -> None:
    from ..bench.__main__ import add_arguments

    add_debug(add_arguments(parser))


def run_bench(args: argparse.Namespace) -> int:
    """``r2m-hf bench``: the benchmark package's own runner."""
    from ..bench.__main__ import run_from_args

    args.no_progress = not show_progress(args)  # bars only on a terminal, as every verb
    return run_from_args(args)
