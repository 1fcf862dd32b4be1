"""``r2m-hf merge`` and ``r2m-hf push``: a recipe into a model folder (evaluated and pushed when asked), and the push
of a finished folder (e.g. to retry a failed one). Both call the public API and print what it returns."""

from __future__ import annotations

import argparse
from pathlib import Path

from ._common import add_debug, add_progress, add_verb, show_progress


def register(subparsers) -> None:
    """Add the ``merge`` and ``push`` verbs."""
    merge = add_verb(
        subparsers, "merge", run_merge, help="merge the specialists of a YAML recipe into one model folder"
    )
    merge.add_argument("config", type=Path, help="merge YAML")
    merge.add_argument("output_dir", type=Path, help="folder to write (must not exist or be empty)")
    merge.add_argument("--device", default="cpu", choices=["cpu", "cuda", "auto"], help="where the math runs")
    merge.add_argument(
        "--overwrite", action="store_true", help="replace an existing output folder that r2m-hf wrote (never an input)"
    )
    merge.add_argument(
        "--overwrite-any",
        action="store_true",
        help="also replace an existing folder r2m-hf did not write: its contents are deleted (never an input)",
    )
    merge.add_argument(
        "--record-local-paths",
        action="store_true",
        help="record local inputs by absolute path in the recipe and card (default: relative path or name + SHA-256)",
    )
    merge.add_argument("--dry-run", action="store_true", help="print the plan and write nothing")
    merge.add_argument("--allow-pickle", action="store_true", help="accept pickle (*.bin) checkpoints")
    add_progress(merge)
    merge.add_argument("--push-to-hub", metavar="ORG/NAME", help="push the merged folder to this Hub repo")
    _add_push_options(merge)
    add_debug(merge)

    push = add_verb(subparsers, "push", run_push, help="push a merged folder to the Hub (e.g. to retry a failed push)")
    push.add_argument("output_dir", type=Path, help="the output folder of `r2m-hf merge`")
    push.add_argument("repo_id", help="the model repo, ORG/NAME")
    _add_push_options(push)
    add_debug(push)


def _add_push_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--private", action="store_true", help="create the Hub repo as private")
    parser.add_argument("--revision", metavar="BRANCH", help="push to this branch (created from main if absent)")
    parser.add_argument("--create-pr", action="store_true", help="open a pull request instead of committing")
    parser.add_argument("--space", metavar="ORG/NAME", help="after the push, create a Gradio Space serving the model")


def _create_space(model_repo: str, args: argparse.Namespace) -> None:
    """``--space``: a Gradio Space that loads the pushed model by id (see ``r2m-hf space``)."""
    from ..detector.space import create_space

    space = create_space(model_repo, args.space, private=args.private)
    print(f"Space {space.space_repo}: {space.url}")
    for note in space.notes:
        print(f"note: {note}")


def run_merge(args: argparse.Namespace) -> int:
    """``r2m-hf merge``: the plan with ``--dry-run``, else the whole merge through ``r2m_hf.merge``."""
    from .. import merge, plan_merge
    from ..errors import ConfigError

    if args.space and not args.push_to_hub:
        raise ConfigError("--space needs --push-to-hub: the Space loads the pushed model by its repo id")
    if args.dry_run:
        plan = plan_merge(args.config, allow_pickle=args.allow_pickle)
        print(plan.describe())
        print(f"output: {args.output_dir.resolve()} (dry run: nothing written)")
        return 0
    result = merge(
        args.config,
        args.output_dir,
        device=args.device,
        overwrite=args.overwrite,
        overwrite_any=args.overwrite_any,
        record_local_paths=args.record_local_paths,
        allow_pickle=args.allow_pickle,
        progress=show_progress(args),
        push_to_hub=args.push_to_hub,
        private=args.private,
        revision=args.revision,
        create_pr=args.create_pr,
    )
    if not result.is_main_process:  # a multi-process merge: rank 0 reports
        return 0
    print_merge_summary(result)
    if args.space and result.pushed is not None:
        _create_space(args.push_to_hub, args)
    return 0


def print_merge_summary(result) -> None:
    """What a finished merge prints: the method's own summary rows, the evaluation table and the push URL."""
    from ..recipe import RECIPE_FILE, REPORT_FILE

    report = result.report
    print(f"merged {len(report.specialists)} specialists with {report.merge_method} → {result.output_dir}")
    for label, value in report.summary_rows():
        print(f"{label}: {value}")
    for warning in result.warnings:
        print(f"warning: {warning}")
    print(f"{report.seconds:.1f} s; recipe in {RECIPE_FILE}, diagnostics in {REPORT_FILE}")
    if result.evaluation is not None:
        print(result.evaluation.to_markdown())
    if result.pushed is not None:
        print(f"pushed to {result.pushed.pr_url or result.pushed.commit_url}")


def run_push(args: argparse.Namespace) -> int:
    """``r2m-hf push``: ``r2m_hf.push`` and the commit or pull-request URL."""
    from .. import push

    pushed = push(args.output_dir, args.repo_id, private=args.private, revision=args.revision, create_pr=args.create_pr)
    print(f"pushed to {pushed.pr_url or pushed.commit_url}")
    if args.space:
        _create_space(args.repo_id, args)
    return 0
