"""Every error type of r2m-hf, and the one-line rendering of a pydantic validation error.

Every error a user can cause is an :class:`R2MError`: the CLI prints its message on one line and exits with code 2.
As in ``huggingface_hub``, each error also subclasses the builtin that fits, so ``except ValueError`` or
``except OSError`` keeps working for callers who do not know r2m-hf's types. Messages name the file, key or tensor at
fault and say what to do. This module imports nothing heavy: the command line loads it before parsing.
"""

from __future__ import annotations

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
    "format_validation_error",
]


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


def format_validation_error(exc: ValidationError, prefix: str = "") -> str:
    """Turn a pydantic validation error into one line that names each key at fault and what is allowed.

    Args:
        exc (`pydantic.ValidationError`): the error raised by a model's validation.
        prefix (`str`, *optional*): the YAML path of the validated mapping (e.g. ``parameters``), prepended to every
            key.

    Returns:
        `str`: ``key: problem`` parts joined by ``; ``, e.g. ``parameters.alpah: unknown key``.
    """
    parts = []
    for err in exc.errors():
        loc = ".".join(str(p) for p in ((prefix,) if prefix else ()) + tuple(err["loc"]))
        kind = err["type"]
        if kind == "extra_forbidden":
            parts.append(f"{loc}: unknown key")
        elif kind == "literal_error":
            expected = err.get("ctx", {}).get("expected", "")
            parts.append(f"{loc}: {err.get('input')!r} is not allowed; expected {expected}")
        elif "input" in err and kind != "missing":
            parts.append(f"{loc}: {err['msg'].removeprefix('Value error, ')} (got {err['input']!r})")
        else:
            parts.append(f"{loc}: {err['msg'].removeprefix('Value error, ')}")
    return "; ".join(parts)
