"""Error types of r2m-hf.

Every error a user can cause is an :class:`R2MError`: the CLI prints its message on one line and exits with code 2.
Messages name the file, key or tensor at fault and say what to do.
"""

from __future__ import annotations


class R2MError(Exception):
    """Base class of every user-facing r2m-hf error."""


class ConfigError(R2MError):
    """The merge YAML is malformed, names an unknown key, or has a value out of range."""


class SourceError(R2MError):
    """A model source (local folder or Hub repo) cannot be resolved or read."""


class CheckpointError(R2MError):
    """A checkpoint is unreadable, unsafe, incomplete, or does not match the base architecture."""


class LabelError(R2MError):
    """A specialist's labels do not say which class is fake."""


class OutputError(R2MError):
    """The output folder cannot be written (exists without --overwrite, ...)."""


class MethodError(R2MError):
    """A merge method cannot run on these inputs."""
