"""What every verb of the command line shares: its parser class, the ``--debug`` and ``--no-progress`` flags.

Verb modules import only this module and the standard library at load time; the API is imported inside each verb's
``run`` function, so that building the parser (``r2m-hf --help``) imports neither torch nor transformers.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable

Populate = Callable[[argparse.ArgumentParser], object]
Run = Callable[[argparse.Namespace], int]


class VerbParser(argparse.ArgumentParser):
    """An argument parser whose options may be added on first use.

    Args:
        populate (`Callable`, *optional*): adds the verb's options; called once, when the verb is parsed or its help
            is shown. ``bench`` uses it to take its options from the benchmark package only when it runs.
    """

    def __init__(self, *args, populate: Populate | None = None, **kwargs):
        super().__init__(*args, **kwargs)
        self._populate = populate

    def _ensure_populated(self) -> None:
        populate, self._populate = self._populate, None
        if populate is not None:
            populate(self)

    def parse_known_args(self, args=None, namespace=None):
        self._ensure_populated()
        return super().parse_known_args(args, namespace)

    def format_usage(self) -> str:
        self._ensure_populated()
        return super().format_usage()

    def format_help(self) -> str:
        self._ensure_populated()
        return super().format_help()


def add_verb(
    subparsers, name: str, run: Run, *, help: str, populate: Populate | None = None
) -> argparse.ArgumentParser:
    """Add the verb `name`, whose parsed arguments go to `run`; the caller adds its options, then :func:`add_debug`.

    Args:
        subparsers: the top-level parser's subparsers action (its parser class is :class:`VerbParser`).
        name (`str`): the verb, e.g. ``merge``.
        run (`Callable[[argparse.Namespace], int]`): returns the exit code.
        help (`str`): one line for ``r2m-hf --help`` and the verb's own help.
        populate (`Callable`, *optional*): see :class:`VerbParser`.
    """
    parser = subparsers.add_parser(name, help=help, description=help, populate=populate)
    parser.set_defaults(run=run)
    return parser


def add_debug(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """The flag every verb has: tracebacks and debug logs (errors still exit with code 2)."""
    parser.add_argument("--debug", action="store_true", help="show tracebacks and debug logs")
    return parser


def add_progress(parser: argparse.ArgumentParser) -> None:
    """The ``--no-progress`` flag of verbs that draw progress bars."""
    parser.add_argument("--no-progress", action="store_true", help="hide progress bars (hidden anyway off a terminal)")


def show_progress(args: argparse.Namespace) -> bool:
    """Progress bars only on a terminal, and not with ``--no-progress``: logs stay one line per event."""
    return not getattr(args, "no_progress", False) and sys.stderr.isatty()
