"""The registry that maps a YAML ``merge_method`` name to its :class:`MergeMethod` class, and the method table.

Built-in methods are found by scanning this package: every module whose name does not start with ``_`` (and is not
``base`` or ``registry``) is imported, and each :class:`MergeMethod` subclass defined in it that sets its own
``name`` is a method. Adding a method is therefore one new file (plus its YAML in ``merge_configs/``); method modules
never import this one. Third-party packages add theirs through the ``r2m_hf.merge_methods`` entry-point group (an
entry point names a `MergeMethod` subclass), loaded on first lookup, or call :func:`register_method`.
"""

from __future__ import annotations

import functools
import importlib
import pkgutil
from collections.abc import Iterable
from importlib.metadata import entry_points
from typing import Any, Literal, get_args, get_origin

from pydantic import BaseModel

from ..errors import ConfigError
from .base import MergeMethod

ENTRY_POINT_GROUP = "r2m_hf.merge_methods"
_NOT_METHODS = {"base", "registry"}

# Methods registered at run time (register_method, entry points); the built-ins live in builtin_methods().
_METHODS: dict[str, type[MergeMethod]] = {}
_entry_points_loaded = False


@functools.cache
def builtin_methods() -> dict[str, type[MergeMethod]]:
    """Return the built-in methods by name, found by scanning the ``r2m_hf.methods`` package."""
    package = importlib.import_module(__package__)
    found: dict[str, type[MergeMethod]] = {}
    for info in pkgutil.iter_modules(package.__path__):
        if info.name.startswith("_") or info.name in _NOT_METHODS:
            continue
        module = importlib.import_module(f"{__package__}.{info.name}")
        for obj in vars(module).values():
            if (
                isinstance(obj, type)
                and issubclass(obj, MergeMethod)
                and obj.__module__ == module.__name__
                and isinstance(obj.__dict__.get("name"), str)
            ):
                if obj.name in found:
                    raise ValueError(f"two built-in merge methods are named {obj.name!r}")
                found[obj.name] = obj
    return found


def register_method(cls: type[MergeMethod]) -> type[MergeMethod]:
    """Register a merge method class under its ``name`` (usable as a class decorator).

    Args:
        cls (`type[MergeMethod]`): the method class; its ``name`` is the YAML ``merge_method``.

    Returns:
        `type[MergeMethod]`: `cls`, unchanged.
    """
    name = getattr(cls, "name", None)
    if not isinstance(name, str) or not name:
        raise TypeError(f"{cls.__qualname__} must set a non-empty class attribute `name`")
    existing = _METHODS.get(name) or builtin_methods().get(name)
    if existing is not None and existing is not cls:
        raise ValueError(
            f"merge method {name!r} is already registered by {existing.__module__}.{existing.__qualname__}"
        )
    if builtin_methods().get(name) is not cls:
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
    """Return the names of every registered method, built-in and plugin, sorted."""
    _load_entry_points()
    return sorted({**builtin_methods(), **_METHODS})


def get_method(name: str) -> type[MergeMethod]:
    """Return the method class registered under `name`, or raise a `ConfigError` that lists the known names."""
    cls = builtin_methods().get(name) or _METHODS.get(name)
    if cls is None:
        _load_entry_points()
        cls = _METHODS.get(name)
    if cls is None:
        raise ConfigError(f"merge_method: unknown method {name!r}; known methods: {', '.join(available_methods())}")
    return cls


def table_order(names: Iterable[str]) -> list[str]:
    """Sort method names as the tables list them: by each class's ``order``, then by name."""
    return sorted(names, key=lambda n: (get_method(n).order, n))


def _yaml_value(value: Any) -> str:
    if value is None:
        return "none"
    if isinstance(value, bool):
        return str(value).lower()
    return str(value)


def parameter_summary(model: type[BaseModel]) -> str:
    """One markdown cell listing a parameters model's YAML keys with their symbols and defaults.

    A field whose description starts with a short symbol and a colon (``"λ: scale …"``) shows the symbol; a field
    with a fixed set of values shows them, the default in bold.
    """
    parts = []
    for field_name, info in model.model_fields.items():
        key = info.alias or field_name
        symbol = ""
        head, sep, _ = (info.description or "").partition(":")
        if sep and 0 < len(head.strip()) <= 2:
            symbol = f" ({head.strip()})"
        if get_origin(info.annotation) is Literal:
            values = "\\|".join(f"**{c}**" if c == info.default else str(c) for c in get_args(info.annotation))
            parts.append(f"`{key}`{symbol} {values}")
        else:
            parts.append(f"`{key}`{symbol} {_yaml_value(info.default)}")
    return ", ".join(parts) or "–"


def method_table_markdown(names: Iterable[str] | None = None) -> str:
    """The methods as one markdown table: name, parameters with defaults, one-line rule (``r2m-hf methods --markdown``).

    Args:
        names (`Iterable[str]`, *optional*): the methods to list (default: every registered method).

    Returns:
        `str`: the table, rows in table order, ending without a newline.
    """
    lines = ["| method | parameters (defaults) | rule |", "|---|---|---|"]
    for name in table_order(available_methods() if names is None else names):
        cls = get_method(name)
        rule = cls.rule().replace("|", "\\|")
        lines.append(f"| `{name}` | {parameter_summary(cls.parameters_model)} | {rule} |")
    return "\n".join(lines)


__all__ = [
    "ENTRY_POINT_GROUP",
    "available_methods",
    "builtin_methods",
    "get_method",
    "method_table_markdown",
    "parameter_summary",
    "register_method",
    "table_order",
]
