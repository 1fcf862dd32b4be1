"""``r2m-hf methods``: the registered merge methods (built-in and plugins) with their default parameters."""

from __future__ import annotations

import argparse

from ._common import add_debug, add_verb


def register(subparsers) -> None:
    """Add the ``methods`` verb."""
    methods = add_verb(
        subparsers, "methods", run_methods, help="list the registered merge methods and their default parameters"
    )
    methods.add_argument("--markdown", action="store_true", help="print the methods as the README's markdown table")
    add_debug(methods)


def run_methods(args: argparse.Namespace) -> int:
    """``r2m-hf methods``: each method with its defaults, or the markdown table with ``--markdown``."""
    from ..methods.registry import available_methods, get_method, method_table_markdown

    if args.markdown:
        print(method_table_markdown())
        return 0
    for name in available_methods():
        cls = get_method(name)
        defaults = cls.parameters_model().model_dump(by_alias=True)
        print(f"{name}: {cls.description}")
        if defaults:
            print("    " + ", ".join(f"{k}={v}" for k, v in defaults.items()))
    return 0
