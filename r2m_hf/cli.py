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

    demo = sub.add_parser("demo", help="build a small seeded zoo locally and merge it with R²M (no network)")
    demo.add_argument("--workdir", type=Path, default=Path("demo-output"), help="where the zoo and merge go")
    demo.add_argument("--seed", type=int, default=0)
    demo.add_argument("--no-progress", action="store_true", help="hide progress bars")
    _add_common(demo)

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
    result = run_merge(plan, args.output_dir, device=args.device, overwrite=args.overwrite, progress=not args.no_progress)
    report = result.report
    print(f"merged {len(plan.specialists)} specialists with {plan.config.merge_method} → {result.output_dir}")
    method = report["method"]
    if "coefficients" in method and method["coefficients"] is not None:
        c = ", ".join(f"{x:.3f}" for x in method["coefficients"])
        print(f"real core c = [{c}], ‖τcore‖ = {method['core_norm']:.4g}, ‖τres‖ = {method['residual_norm']:.4g}, "
              f"η = {method['eta']:.4g}")
    print(f"{report['seconds']:.1f} s; recipe in merge_config.yaml, diagnostics in merge_report.json")
    return 0


def _cmd_demo(args: argparse.Namespace) -> int:
    from .demo import run_demo

    run_demo(args.workdir, seed=args.seed, progress=not args.no_progress)
    return 0


def _cmd_methods(args: argparse.Namespace) -> int:
    from .methods.registry import available_methods, get_method

    for name in available_methods():
        cls = get_method(name)
        defaults = cls.parameters_model().model_dump(by_alias=True)
        print(f"{name}: {cls.description}")
        if defaults:
            print("    " + ", ".join(f"{k}={v}" for k, v in defaults.items()))
    return 0


COMMANDS = {"merge": _cmd_merge, "demo": _cmd_demo, "methods": _cmd_methods}


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
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
