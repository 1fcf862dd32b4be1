"""The registry that maps a YAML ``merge_method`` name to its :class:`MergeMethod` class.

Built-in methods register themselves with :func:`register_method`; third-party packages add theirs through the
``r2m_hf.merge_methods`` entry-point group (an entry point names a `MergeMethod` subclass), loaded on first lookup.
"""

from __future__ import annotations

from importlib.metadata import entry_points

from ..errors import ConfigError
from .base import MergeMethod

ENTRY_POINT_GROUP = "r2m_hf.merge_methods"

_METHODS: dict[str, type[MergeMethod]] = {}
_entry_points_loaded = False


def register_method(cls: type[MergeMethod]) -> type[MergeMethod]:
    """Register a merge method class under its ``name`` (usable as a class decorator)."""
    name = getattr(cls, "name", None)
    if not isinstance(name, str) or not name:
        raise TypeError(f"{cls.__qualname__} must set a non-empty class attribute `name`")
    existing = _METHODS.get(name)
    if existing is not None and existing is not cls:
        raise ValueError(
            f"merge method {name!r} is already registered by {existing.__module__}.{existing.__qualname__}"
        )
    _METHODS[name] = cls
    return cls


def _load_entry_points() -> None:
    global _entry_points_loaded
    if _entry_points_loaded:
        return
    _entry_points_loaded = True
    for ep in entry_points(group=ENTRY_POINT_GROUP):
        try:
            cls = ep.load()
        except Exception as exc:  # a broken plugin must not break the built-in methods
            raise ConfigError(f"merge method plugin {ep.name!r} ({ep.value}) failed to load: {exc}") from exc
        if not (isinstance(cls, type) and issubclass(cls, MergeMethod)):
            raise ConfigError(f"merge method plugin {ep.name!r} ({ep.value}) is not a MergeMethod subclass")
        if getattr(cls, "name", None) != ep.name:
            cls.name = ep.name
        register_method(cls)


def available_methods() -> list[str]:
    """Return the names of every registered method, built-in and plugin."""
    _ensure_builtins()
    _load_entry_points()
    return sorted(_METHODS)


def get_method(name: str) -> type[MergeMethod]:
    """Return the method class registered under `name`, or raise a `ConfigError` that lists the known names."""
    _ensure_builtins()
    if name not in _METHODS:
        _load_entry_points()
    if name not in _METHODS:
        raise ConfigError(f"merge_method: unknown method {name!r}; known methods: {', '.join(available_methods())}")
    return _METHODS[name]


def _ensure_builtins() -> None:
    from . import _builtin  # noqa: F401  (importing registers the built-in methods)
