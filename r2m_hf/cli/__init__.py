"""The ``r2m-hf`` command line: parse the arguments, call the API, print what it returns. Nothing else happens here.

One module per verb group registers its parser and its ``run`` function (``merge``/``push``, ``eval``,
``check-specialist``/``add``, ``convert-dfb``/``export-dfb``, ``demo``, ``bench``, ``methods``); each imports the API
inside ``run``, so ``r2m-hf --help`` imports neither torch nor transformers. Every :class:`~r2m_hf.errors.R2MError` is
one ``r2m-hf: error: ...`` line on stderr and exit code 2 (after its traceback with ``--debug``); Ctrl-C exits with 130
and SIGTERM with 143, after the same clean-up (temporary folders removed, locks released), each with one line.
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
import traceback
import warnings

from ..errors import R2MError
from . import app, bench, contrib, deepfakebench, demo, evaluate, merge, methods, predict, tune
from ._common import VerbParser, show_progress

EXIT_USER_ERROR = 2
EXIT_INTERRUPTED = 130
EXIT_TERMINATED = 128 + signal.SIGTERM
MAX_MESSAGE = 2000  # an error line is user-facing: never a screenful (inputs in it are clipped already)


class Terminated(BaseException):
    """Raised in the main thread on SIGTERM, so that the same clean-up as for Ctrl-C runs."""


def _on_sigterm(signum, frame) -> None:
    signal.signal(signal.SIGTERM, signal.SIG_IGN)  # a second SIGTERM must not interrupt the clean-up
    raise Terminated()


VERB_MODULES = (merge, evaluate, contrib, deepfakebench, demo, bench, methods, tune, predict, app)

# Other libraries' progress bars (downloads, weight loading, dataset preparation): (library, the environment variable
# it reads when imported, the module and function that turn its bars off once it is).
_LIBRARY_BARS = (
    ("huggingface_hub", "HF_HUB_DISABLE_PROGRESS_BARS", "huggingface_hub.utils", "disable_progress_bars"),
    ("datasets", "HF_DATASETS_DISABLE_PROGRESS_BARS", "datasets", "disable_progress_bars"),
    ("transformers", "HF_HUB_DISABLE_PROGRESS_BARS", "transformers.utils.logging", "disable_progress_bar"),
)


def build_parser() -> argparse.ArgumentParser:
    """The top-level parser with every verb; verbs' options that need heavy imports load only when they run."""
    parser = argparse.ArgumentParser(prog="r2m-hf", description="Merge deepfake-detector specialists with R²M.")
    subparsers = parser.add_subparsers(dest="command", required=True, parser_class=VerbParser)
    for module in VERB_MODULES:
        module.register(subparsers)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run ``r2m-hf ARGV``; returns the exit code (0, 2 for user errors and failed checks, 130 on Ctrl-C)."""
    return _run(argv)


def entry() -> None:
    """The ``r2m-hf`` command and ``python -m r2m_hf``: :func:`main` on ``sys.argv``, then the process ends.

    A verb that loaded torch ends the process itself: the atexit handlers run and the output is flushed, but the
    interpreter's teardown of torch and transformers (about 0.5 s, measured) is skipped. Code that calls `main`
    keeps its process.
    """
    code = main()
    if "torch" in sys.modules:
        _exit_now(code)
    sys.exit(code)


def _exit_now(code: int) -> None:
    """End the process with `code` after the atexit handlers and a flush, unless a non-daemon thread still runs
    (then return, and the interpreter's normal exit waits for it)."""
    import atexit
    import threading

    if any(t is not threading.main_thread() and not t.daemon and t.is_alive() for t in threading.enumerate()):
        return
    atexit._run_exitfuncs()  # logging's flush, temporary folders' finalizers, multiprocessing's joins, coverage
    try:
        sys.stdout.flush()
        sys.stderr.flush()
    except (OSError, ValueError):  # a closed or broken stream: nothing more can be said on it
        pass
    os._exit(code if isinstance(code, int) else int(code is not None))


def _run(argv: list[str] | None) -> int:
    args = build_parser().parse_args(argv)
    # OpenMP's spinning worker threads cost 4-13x on a busy machine (measured); torch reads this when it loads
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    logging.basicConfig(level=logging.DEBUG if args.debug else logging.WARNING, format="%(levelname)s: %(message)s")
    if not args.debug:
        _quiet_libraries()
    if not show_progress(args):
        _hide_library_progress_bars()
    previous = _install_sigterm()
    try:
        return args.run(args)
    except R2MError as exc:
        if args.debug:
            traceback.print_exc()
        message = " ".join(line.strip() for line in str(exc).splitlines() if line.strip())
        if len(message) > MAX_MESSAGE:
            message = message[:MAX_MESSAGE] + "…"
        print(f"r2m-hf: error: {message}", file=sys.stderr)
        return EXIT_USER_ERROR
    except KeyboardInterrupt:
        print("r2m-hf: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except Terminated:
        print("r2m-hf: terminated (SIGTERM); temporary files removed", file=sys.stderr)
        return EXIT_TERMINATED
    except BrokenPipeError:  # `r2m-hf methods | head`: the reader left; say nothing more
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    finally:
        if previous is not _NOT_INSTALLED:
            signal.signal(signal.SIGTERM, signal.SIG_DFL if previous is None else previous)


_NOT_INSTALLED = object()


def _install_sigterm():
    """Turn SIGTERM into :class:`Terminated` in the main thread; returns the previous handler."""
    import threading

    if threading.current_thread() is not threading.main_thread():
        return _NOT_INSTALLED
    return signal.signal(signal.SIGTERM, _on_sigterm)


def _quiet_libraries() -> None:
    """Keep transformers to errors without importing it (it reads ``TRANSFORMERS_VERBOSITY`` when imported)."""
    warnings.filterwarnings("ignore", category=UserWarning, module="transformers")
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    if "transformers" in sys.modules:
        from transformers.utils import logging as hf_logging

        hf_logging.set_verbosity_error()


def _hide_library_progress_bars() -> None:
    """Downloads', weight loading's and dataset preparation's bars follow ours: none off a terminal or with
    ``--no-progress``. Each library reads its variable when imported; one already imported is told directly."""
    import importlib

    for library, variable, module, function in _LIBRARY_BARS:
        os.environ[variable] = "1"
        if library in sys.modules:
            getattr(importlib.import_module(module), function)()
