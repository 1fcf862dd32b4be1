"""Every error type of r2m-hf, and the one-line rendering of a pydantic validation error.

Every error a user can cause is an :class:`R2MError`: the CLI prints its message on one line and exits with code 2.
As in ``huggingface_hub``, each error also subclasses the builtin that fits, so ``except ValueError`` or
``except OSError`` keeps working for callers who do not know r2m-hf's types. Messages name the file, key or tensor at
fault and say what to do. This module imports nothing heavy: the command line loads it before parsing.
"""

from __future__ import annotations

import reprlib
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from pydantic import ValidationError

__all__ = [
    "CheckpointError",
    "ConfigError",
    "DatasetError",
    "HubError",
    "LabelError",
    "MethodError",
    "OutputError",
    "R2MError",
    "SourceError",
    "clip",
    "format_validation_error",
]

# The most characters of user input (a value, a key, a name, a reference) that an error message repeats.
MAX_ECHO = 200
_REPR = reprlib.Repr()
_REPR.maxlevel, _REPR.maxstring, _REPR.maxother, _REPR.maxlong = 3, MAX_ECHO, MAX_ECHO, 40
# The most keys one validation message lists before saying how many more there are.
MAX_PARTS = 8


class R2MError(Exception):
    """Base class of every user-facing r2m-hf error: a message that names what is at fault and what to do."""


class ConfigError(R2MError, ValueError):
    """Raised when a merge recipe is unreadable or invalid: YAML syntax, an unknown key, a value out of range, an
    unknown `merge_method`, duplicate specialist names, or a method parameter the method rejects."""


class LabelError(ConfigError):
    """Raised when a specialist's labels do not say which class is fake (no ``fake`` in ``id2label`` and no
    ``fake_label`` in the recipe), or when ``fake_label`` matches none of its classes."""


class SourceError(R2MError, OSError):
    """Raised when a model source cannot be resolved or read: a local folder that does not exist, a Hub repo id that
    cannot be downloaded, or a metadata file (``config.json``, ...) that is not valid JSON."""


class HubError(R2MError, OSError):
    """Raised when a Hugging Face Hub call fails: no token or a rejected one, a missing or private repo or revision,
    offline mode without a cached copy, or a network or server failure (download or push)."""


class CheckpointError(R2MError, ValueError):
    """Raised when a checkpoint cannot join the merge: unreadable, truncated or pickle-only (without
    ``allow_pickle``) weights, a NaN or Inf tensor, another architecture or shape than the base, a specialist not
    fine-tuned from the base, or a LoRA adapter whose modules match nothing."""


class OutputError(R2MError, OSError):
    """Raised when the output folder cannot be written: it exists and is not empty (without ``overwrite``), it is a
    file, or it is not a merged model folder where one is expected (``push``)."""


class MethodError(R2MError, ValueError):
    """Raised when a merge method cannot run on these inputs (e.g. ``model_stock`` with fewer than two
    specialists)."""


class DatasetError(R2MError, ValueError):
    """Raised when evaluation data cannot be used: a dataset or split that does not load, a missing label column,
    labels that do not say which examples are real and which fake, or no examples left."""


def clip(value: object, limit: int = MAX_ECHO) -> str:
    """User input as an error message may repeat it: on one line, at most `limit` characters.

    Args:
        value (`object`): the input (a string is shown as is, anything else by its ``repr``).
        limit (`int`): the most characters kept; longer text ends in ``… (N characters)``.

    Returns:
        `str`: the text without line breaks or control characters, clipped.
    """
    text = value if isinstance(value, str) else _safe_repr(value)
    if len(text) > 4 * limit:  # a huge input: look at its start only
        total, text = len(text), text[: 4 * limit]
    else:
        total = len(text)
    text = "".join(ch if ch.isprintable() else " " for ch in text)
    if total > limit:
        return f"{text[:limit]}… ({total} characters)"
    return text


def _safe_repr(value: object) -> str:
    """A repr bounded whatever the nesting or sharing of `value` (a YAML alias graph), never raising."""
    try:
        return _REPR.repr(value)
    except Exception:  # e.g. an int too long to print
        return f"<{type(value).__name__}>"


def _clip_repr(value: object) -> str:
    if isinstance(value, str) and len(value) > MAX_ECHO:
        return clip(repr(value[:MAX_ECHO]) + f"… ({len(value)} characters)", 2 * MAX_ECHO)
    return clip(_safe_repr(value))


def format_validation_error(exc: ValidationError, prefix: str = "") -> str:
    """Turn a pydantic validation error into one line that names each key at fault and what is allowed.

    Args:
        exc (`pydantic.ValidationError`): the error raised by a model's validation.
        prefix (`str`, *optional*): the YAML path of the validated mapping (e.g. ``parameters``), prepended to every
            key.

    Returns:
        `str`: ``key: problem`` parts joined by ``; ``, e.g. ``parameters.alpah: unknown key``.

    Keys and values are user input: each is clipped (see :func:`clip`), and at most :data:`MAX_PARTS` keys are listed,
    so a huge or hostile recipe never becomes a huge message.
    """
    parts = []
    errors = exc.errors()
    for err in errors[:MAX_PARTS]:
        loc = clip(".".join(str(p) for p in ((prefix,) if prefix else ()) + tuple(err["loc"])))
        kind = err["type"]
        message = clip(err["msg"].removeprefix("Value error, "), 2 * MAX_ECHO)
        if kind == "extra_forbidden":
            parts.append(f"{loc}: unknown key")
        elif kind == "literal_error":
            expected = clip(err.get("ctx", {}).get("expected", ""))
            parts.append(f"{loc}: {_clip_repr(err.get('input'))} is not allowed; expected {expected}")
        elif "input" in err and kind != "missing":
            parts.append(f"{loc}: {message} (got {_clip_repr(err['input'])})")
        else:
            parts.append(f"{loc}: {message}")
    if len(errors) > MAX_PARTS:
        parts.append(f"and {len(errors) - MAX_PARTS} more")
    return "; ".join(parts)
