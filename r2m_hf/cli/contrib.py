"""``r2m-hf check-specialist`` and ``r2m-hf add``: can a community specialist join a merge, and append it to a
recipe when it can. The checks are the planner's own (``r2m_hf.contrib``); these verbs print their report."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from ._common import add_debug, add_verb

EXIT_FAILED_CHECKS = 2


def register(subparsers) -> None:
    """Add the ``check-specialist`` and ``add`` verbs."""
    check = add_verb(
        subparsers, "check-specialist", run_check, help="check whether a community specialist can join a merge"
    )
    check.add_argument("specialist", help="model folder or Hub repo id[@revision] (full model or LoRA adapter)")
    check.add_argument("--base", required=True, help="the merge's base model (folder or Hub repo id[@revision])")
    _add_specialist_options(check)
    check.add_argument("--no-weights", action="store_true", help="do not compare a full model's weights to the base")
    add_debug(check)

    add = add_verb(
        subparsers, "add", run_add, help="check a specialist against a recipe's base_model and append it to models:"
    )
    add.add_argument("config", type=Path, help="merge YAML to extend")
    add.add_argument("specialist", help="model folder or Hub repo id[@revision]")
    add.add_argument("--name", default=None, help="its name in the recipe (default: folder or repo name)")
    _add_specialist_options(add)
    add_debug(add)


def _add_specialist_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--fake-label", default=None, help="fake class name or index, when id2label does not say")
    parser.add_argument("--allow-pickle", action="store_true", help="accept pickle (*.bin) checkpoints")


def run_check(args: argparse.Namespace) -> int:
    """``r2m-hf check-specialist``: the report, then the verdict; exit code 2 when a check failed."""
    from ..contrib import check_specialist

    report = check_specialist(
        args.specialist,
        args.base,
        fake_label=args.fake_label,
        allow_pickle=args.allow_pickle,
        compare_weights=not args.no_weights,
    )
    print("\n".join(report.lines()))
    verdict = "can join a merge over" if report.ok else "cannot join a merge over"
    print(f"{args.specialist} {verdict} {args.base}")
    return 0 if report.ok else EXIT_FAILED_CHECKS


def run_add(args: argparse.Namespace) -> int:
    """``r2m-hf add``: the report, then the entry added (or one error line and exit code 2)."""
    from ..contrib import add_specialist

    result = add_specialist(
        args.config, args.specialist, name=args.name, fake_label=args.fake_label, allow_pickle=args.allow_pickle
    )
    print("\n".join(result.report.lines()))
    if not result.written:
        print(f"r2m-hf: error: {args.specialist} failed the checks above; {args.config} is unchanged", file=sys.stderr)
        return EXIT_FAILED_CHECKS
    kept = "" if result.comments_kept else " (re-written: its comments could not be kept)"
    print(f"added {result.name} to {args.config}{kept}")
    return 0
