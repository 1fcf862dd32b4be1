"""``r2m-hf tune`` and ``r2m-hf compare``: choose the method and its hyperparameters on validation data, and put
several detectors side by side on one split. Both call the public API and print what it returns."""

from __future__ import annotations

import argparse
import os
from pathlib import Path

from ._common import add_debug, add_progress, add_verb, show_progress


def register(subparsers) -> None:
    """Add the ``tune`` and ``compare`` verbs."""
    tune = add_verb(
        subparsers, "tune", run_tune, help="tune merge methods and their hyperparameters on a validation split"
    )
    tune.add_argument("config", type=Path, help="merge YAML (its optional tune: section narrows the search)")
    tune.add_argument("--dataset", required=True, help="imagefolder folder, Arrow/parquet path, or Hub dataset id")
    tune.add_argument("--split", default="validation")
    tune.add_argument("--methods", default=None, help="comma-separated (default: tune.methods, else the recipe's)")
    tune.add_argument("--trials", type=int, default=None, help="total, split equally between the methods (default 40)")
    tune.add_argument("--metric", default=None, choices=["auc", "eer", "ap", "auc@families"], help="default auc")
    tune.add_argument("--storage", default=None, help="study database URL (default sqlite:///OUTPUT/tune.db)")
    tune.add_argument("--study", default=None, help="study name (default: the recipe's file name); resumed")
    tune.add_argument("--output", type=Path, required=True, help="folder for leaderboard, plots and best.yaml")
    tune.add_argument("--seed", type=int, default=0)
    tune.add_argument("--label-column", default="label")
    tune.add_argument("--family-column", default=None, help="forgery family per row (default: family)")
    tune.add_argument("--video-column", default=None)
    tune.add_argument("--max-samples", type=int, default=None, help="tune on a seeded random subset of N rows")
    tune.add_argument("--batch-size", type=int, default=32)
    tune.add_argument(
        "--device",
        default="cpu",
        help="cpu, cuda or cuda:N: where merging and scoring run (under accelerate launch / torchrun, cuda is each "
        "process's own GPU: one trial's scoring is split across them)",
    )
    tune.add_argument("--no-pruning", action="store_true", help="score every trial on the whole split")
    tune.add_argument("--allow-pickle", action="store_true", help="accept pickle (*.bin) checkpoints")
    tune.add_argument("--i-know-this-is-test", action="store_true", help="allow a split named like test")
    tune.add_argument("--merge-best", type=Path, default=None, metavar="OUT", help="merge best.yaml into OUT")
    tune.add_argument("--overwrite", action="store_true", help="let --merge-best replace a non-empty folder")
    tune.add_argument("--push-to-hub", metavar="ORG/NAME", help="push the --merge-best folder to this Hub repo")
    tune.add_argument("--private", action="store_true", help="create the Hub repo as private")
    add_progress(tune)
    add_debug(tune)

    compare = add_verb(subparsers, "compare", run_compare, help="compare several detectors on the same split")
    compare.add_argument("models", nargs="+", help="merged folders, specialists, adapter folders or Hub repo ids")
    compare.add_argument("--dataset", required=True, help="imagefolder folder, Arrow/parquet path, or Hub dataset id")
    compare.add_argument("--split", default="test")
    compare.add_argument("--label-column", default="label")
    compare.add_argument("--family-column", default=None, help="forgery family per row (default: family)")
    compare.add_argument("--video-column", default=None, help="video id per row (default: video_id or video)")
    compare.add_argument("--names", default=None, help="comma-separated table names, one per model")
    compare.add_argument("--batch-size", type=int, default=32)
    compare.add_argument("--max-samples", type=int, default=None)
    compare.add_argument("--device", default=None, help="cpu, cuda, … (default: what accelerate picks)")
    compare.add_argument("--output", type=Path, required=True, help="folder for comparison.md/.csv/.json/.png")
    add_progress(compare)
    add_debug(compare)


def _split_options(args: argparse.Namespace) -> dict:
    """The options `tune` and `compare` share: the output folder, the split and its columns, batching and device."""
    return {
        "output_dir": args.output,
        "split": args.split,
        "label_column": args.label_column,
        "family_column": args.family_column,
        "video_column": args.video_column,
        "max_samples": args.max_samples,
        "batch_size": args.batch_size,
        "device": args.device,
        "progress": show_progress(args),
    }


def run_tune(args: argparse.Namespace) -> int:
    """``r2m-hf tune``: ``r2m_hf.tune``, then the best trial per method and the files written."""
    from ..tuning import tune

    result = tune(
        args.config,
        args.dataset,
        **_split_options(args),
        methods=args.methods.split(",") if args.methods else None,
        trials=args.trials,
        metric=args.metric,
        storage=args.storage,
        study_name=args.study,
        seed=args.seed,
        prune=not args.no_pruning,
        allow_pickle=args.allow_pickle,
        i_know_this_is_test=args.i_know_this_is_test,
        merge_best=args.merge_best,
        overwrite=args.overwrite,
        push_to_hub=args.push_to_hub,
        private=args.private,
    )
    if int(os.environ.get("RANK", "0")) != 0:  # another rank of `accelerate launch` / `torchrun`: rank 0 reports
        return 0
    timing = result.timing()
    print(f"{len(result.trials)} trials on {result.dataset} [{result.split}], study {result.study_name}")
    for best in result.best_per_method.values():
        print(f"best {best.label}: {result.metric} {best.value:.4f}  {best.parameters}")
    print(f"winner: {result.best.label} ({result.metric} {result.best.value:.4f})")
    print(
        f"{timing['seconds_per_trial']:.2f} s per trial ({100 * timing['merge_share']:.0f}% merging); "
        f"leaderboard: {result.files['leaderboard_md']}; recipe: {result.files['best_yaml']}"
    )
    if result.merged is not None:
        print(f"best merged → {result.merged.output_dir}")
        if result.merged.pushed is not None:
            print(f"pushed to {result.merged.pushed.pr_url or result.merged.pushed.commit_url}")
    return 0


def run_compare(args: argparse.Namespace) -> int:
    """``r2m-hf compare``: ``r2m_hf.compare`` and its Markdown table."""
    from ..tuning import compare

    result = compare(
        args.models,
        args.dataset,
        **_split_options(args),
        names=args.names.split(",") if args.names else None,
    )
    print(result.markdown)
    print(f"written to {args.output}: " + ", ".join(p.name for p in result.files.values()))
    return 0
