"""The ``r2m-hf`` command line: parse arguments, call the API, print. No math here.

Every user error is one line on stderr and exit code 2; ``--debug`` shows the traceback.
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from .errors import R2MError

EXIT_USAGE = 2


def _add_common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--debug", action="store_true", help="show tracebacks and debug logs")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="r2m-hf", description="Merge deepfake-detector specialists with R²M.")
    sub = parser.add_subparsers(dest="command", required=True)

    merge = sub.add_parser("merge", help="merge the specialists of a YAML recipe into one model folder")
    merge.add_argument("config", type=Path, help="merge YAML")
    merge.add_argument("output_dir", type=Path, help="folder to write (must not exist or be empty)")
    merge.add_argument("--device", default="cpu", choices=["cpu", "cuda", "auto"], help="where the math runs")
    merge.add_argument("--overwrite", action="store_true", help="replace an existing non-empty output folder")
    merge.add_argument("--dry-run", action="store_true", help="print the plan and write nothing")
    merge.add_argument("--allow-pickle", action="store_true", help="accept pickle (*.bin) checkpoints")
    merge.add_argument("--no-progress", action="store_true", help="hide progress bars")
    _add_common(merge)

    merge.add_argument("--push-to-hub", metavar="ORG/NAME", help="push the merged folder to this Hub repo")
    merge.add_argument("--private", action="store_true", help="create the Hub repo as private")
    merge.add_argument("--revision", metavar="BRANCH", help="push to this branch (created from main if absent)")
    merge.add_argument("--create-pr", action="store_true", help="open a pull request instead of committing to main")

    evaluate = sub.add_parser("eval", help="evaluate a detector (folder or Hub repo) on a dataset")
    evaluate.add_argument("model", help="model folder or Hub repo id")
    evaluate.add_argument("--dataset", required=True, help="imagefolder folder, Arrow/parquet path, or Hub dataset id")
    evaluate.add_argument("--split", default="test")
    evaluate.add_argument("--label-column", default="label")
    evaluate.add_argument("--family-column", default=None)
    evaluate.add_argument("--video-column", default=None)
    evaluate.add_argument("--batch-size", type=int, default=32)
    evaluate.add_argument("--max-samples", type=int, default=None)
    evaluate.add_argument("--device", default=None, help="cpu, cuda, … (default: what accelerate picks)")
    evaluate.add_argument("--output", type=Path, default=None, help="write the metrics JSON here")
    evaluate.add_argument("--no-progress", action="store_true", help="hide progress bars")
    _add_common(evaluate)

    push = sub.add_parser("push", help="push a merged folder to the Hub (e.g. retry after a failed push)")
    push.add_argument("output_dir", type=Path)
    push.add_argument("repo_id")
    push.add_argument("--private", action="store_true")
    push.add_argument("--revision", metavar="BRANCH")
    push.add_argument("--create-pr", action="store_true")
    _add_common(push)

    demo = sub.add_parser("demo", help="build a small seeded zoo locally and merge it with R²M (no network)")
    demo.add_argument("--workdir", type=Path, default=Path("demo-output"), help="where the zoo and merge go")
    demo.add_argument("--seed", type=int, default=0)
    demo.add_argument("--no-progress", action="store_true", help="hide progress bars")
    _add_common(demo)

    from .bench.__main__ import add_arguments as bench_arguments

    bench = sub.add_parser("bench", help="run the offline forgery benchmark (specialists, every merge method, report)")
    _add_common(bench_arguments(bench))

    check = sub.add_parser("check-specialist", help="check whether a community specialist can join a merge")
    check.add_argument("specialist", help="model folder or Hub repo id[@revision] (full model or LoRA adapter)")
    check.add_argument("--base", required=True, help="the merge's base model (folder or Hub repo id[@revision])")
    check.add_argument("--fake-label", default=None, help="fake class name or index, when id2label does not say")
    check.add_argument("--allow-pickle", action="store_true", help="accept pickle (*.bin) checkpoints")
    check.add_argument("--no-weights", action="store_true", help="do not compare a full model's weights to the base")
    _add_common(check)

    add = sub.add_parser("add", help="check a specialist against a recipe's base_model and append it to models:")
    add.add_argument("config", type=Path, help="merge YAML to extend")
    add.add_argument("specialist", help="model folder or Hub repo id[@revision]")
    add.add_argument("--name", default=None, help="its name in the recipe (default: folder or repo name)")
    add.add_argument("--fake-label", default=None, help="fake class name or index, when id2label does not say")
    add.add_argument("--allow-pickle", action="store_true", help="accept pickle (*.bin) checkpoints")
    _add_common(add)

    methods = sub.add_parser("methods", help="list the registered merge methods and their default parameters")
    _add_common(methods)
    return parser


def _cmd_merge(args: argparse.Namespace) -> int:
    from .merge import plan_merge, run_merge

    plan = plan_merge(args.config, allow_pickle=args.allow_pickle)
    if args.dry_run:
        print(plan.describe())
        print(f"output: {args.output_dir.resolve()} (dry run: nothing written)")
        return 0
    result = run_merge(
        plan, args.output_dir, device=args.device, overwrite=args.overwrite, progress=not args.no_progress
    )
    if not result.is_main_process:  # multi-process merge: rank 0 reports, evaluates and pushes
        return 0
    report = result.report
    print(f"merged {len(plan.specialists)} specialists with {plan.config.merge_method} → {result.output_dir}")
    method = report["method"]
    if "coefficients" in method and method["coefficients"] is not None:
        c = ", ".join(f"{x:.3f}" for x in method["coefficients"])
        print(
            f"real core c = [{c}], ‖τcore‖ = {method['core_norm']:.4g}, ‖τres‖ = {method['residual_norm']:.4g}, "
            f"η = {method['eta']:.4g}"
        )
    print(f"{report['seconds']:.1f} s; recipe in merge_config.yaml, diagnostics in merge_report.json")
    section = plan.config.evaluation
    if section is not None:
        evaluation = _evaluate(str(result.output_dir), section, progress=not args.no_progress)
        evaluation.save(result.output_dir / "eval_results.json")
        print(evaluation.to_markdown())
    if section is not None or args.push_to_hub:
        from .card import write_model_card

        write_model_card(
            result.output_dir, eval_results=evaluation if section is not None else None, repo_id=args.push_to_hub
        )
    if args.push_to_hub:
        _push(result.output_dir, args.push_to_hub, args, plan.config.merge_method, [s.name for s in plan.specialists])
    return 0


def _push(folder: Path, repo_id: str, args: argparse.Namespace, method: str | None, names: list[str] | None) -> None:
    from .hub import push_folder

    if method is None:
        import yaml

        recipe_file = folder / "merge_config.yaml"
        recipe = yaml.safe_load(recipe_file.read_text()) if recipe_file.is_file() else {}
        method = recipe.get("merge_method", "unknown")
        names = [m.get("name", "?") for m in recipe.get("models", [])]
    message = f"Merge {', '.join(names or [])} with {method} (r2m-hf)"
    pushed = push_folder(
        folder, repo_id, private=args.private, revision=args.revision, create_pr=args.create_pr, commit_message=message
    )
    print(f"pushed to {pushed.pr_url or pushed.commit_url}")


def _evaluate(model: str, spec, *, progress: bool, device: str | None = None):
    """Evaluate `model` on the dataset `spec` describes (the YAML `evaluation:` section or `eval`'s arguments)."""
    from .evaluation import evaluate_model

    return evaluate_model(
        model,
        spec.dataset,
        split=spec.split,
        label_column=spec.label_column,
        family_column=spec.family_column,
        video_column=spec.video_column,
        batch_size=spec.batch_size,
        device=device,
        max_samples=spec.max_samples,
        progress=progress,
    )


def _cmd_eval(args: argparse.Namespace) -> int:
    result = _evaluate(args.model, args, device=args.device, progress=not args.no_progress)
    print(result.to_markdown())
    if args.output is not None:
        result.save(args.output)
        print(f"metrics written to {args.output}")
    return 0


def _cmd_push(args: argparse.Namespace) -> int:
    from .errors import OutputError

    if not (args.output_dir / "config.json").is_file():
        raise OutputError(f"{args.output_dir}: not a merged model folder (no config.json); run `r2m-hf merge` first")
    _push(args.output_dir, args.repo_id, args, None, None)
    return 0


def _cmd_check_specialist(args: argparse.Namespace) -> int:
    from .contrib import check_specialist

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
    return 0 if report.ok else EXIT_USAGE


def _cmd_add(args: argparse.Namespace) -> int:
    from .contrib import add_specialist

    result = add_specialist(
        args.config, args.specialist, name=args.name, fake_label=args.fake_label, allow_pickle=args.allow_pickle
    )
    print("\n".join(result.report.lines()))
    if not result.written:
        print(f"r2m-hf: error: {args.specialist} failed the checks above; {args.config} is unchanged", file=sys.stderr)
        return EXIT_USAGE
    kept = "" if result.comments_kept else " (re-written: its comments could not be kept)"
    print(f"added {result.name} to {args.config}{kept}")
    return 0


def _cmd_demo(args: argparse.Namespace) -> int:
    from .demo import run_demo

    run_demo(args.workdir, seed=args.seed, progress=not args.no_progress)
    return 0


def _cmd_bench(args: argparse.Namespace) -> int:
    from .bench.__main__ import run_from_args

    return run_from_args(args)


def _cmd_methods(args: argparse.Namespace) -> int:
    from .methods.registry import available_methods, get_method

    for name in available_methods():
        cls = get_method(name)
        defaults = cls.parameters_model().model_dump(by_alias=True)
        print(f"{name}: {cls.description}")
        if defaults:
            print("    " + ", ".join(f"{k}={v}" for k, v in defaults.items()))
    return 0


COMMANDS = {
    "merge": _cmd_merge,
    "eval": _cmd_eval,
    "push": _cmd_push,
    "check-specialist": _cmd_check_specialist,
    "add": _cmd_add,
    "demo": _cmd_demo,
    "bench": _cmd_bench,
    "methods": _cmd_methods,
}


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if hasattr(args, "no_progress") and not sys.stderr.isatty():
        args.no_progress = True  # progress bars only on a terminal: logs stay one line per error
    logging.basicConfig(level=logging.DEBUG if args.debug else logging.WARNING, format="%(levelname)s: %(message)s")
    if not args.debug:
        _quiet_libraries()
    try:
        return COMMANDS[args.command](args)
    except R2MError as exc:
        if args.debug:
            raise
        print(f"r2m-hf: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        print("r2m-hf: interrupted; nothing was written", file=sys.stderr)
        return 130


def _quiet_libraries() -> None:
    import warnings

    warnings.filterwarnings("ignore", category=UserWarning, module="transformers")
    try:
        from transformers.utils import logging as hf_logging

        hf_logging.set_verbosity_error()
    except ImportError:  # pragma: no cover
        pass


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
