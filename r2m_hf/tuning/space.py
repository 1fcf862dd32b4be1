"""What the tuner searches: the recipe's optional ``tune:`` section and each method's search space.

A method declares its tunable parameters as :class:`~r2m_hf.methods.base.Tunable` ranges next to its parameter model
(``search_space``). The recipe's ``tune:`` section picks the methods and narrows, widens, fixes or drops parameters::

    tune:
      methods: [r2m, ties]            # default: the recipe's merge_method
      trials: 40                      # total budget, split equally between the methods
      metric: auc                     # auc | eer | ap | auc@families
      space:
        r2m:
          alpha: {low: 0.3, high: 3}  # change the range (keys of Tunable: low, high, log, integer, choices)
          eta: [relative, fixed]      # a list: the choices of a categorical parameter
          real_rank: 2                # a value: fixed, not searched
          residual_rank_ratio: null   # null: not searched (the recipe's value, else the default)

Every endpoint and choice is validated against the method's parameter model before any trial runs, so a range the
method would reject fails at once, in one line naming the method and the parameter.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from ..config import MergeConfig, load_config, method_parameters
from ..engine import build_method
from ..errors import ConfigError, format_validation_error
from ..methods.base import Tunable
from ..methods.registry import get_method

METRICS = ("auc", "eer", "ap", "auc@families")
TUNABLE_KEYS = {f.name for f in dataclasses.fields(Tunable)}


class TuneSection(BaseModel):
    """The recipe's optional ``tune:`` section (validated here, by the tuner; ``merge`` accepts and ignores it)."""

    model_config = ConfigDict(extra="forbid")

    methods: list[str] | None = None
    trials: int | None = Field(None, ge=1)
    metric: Literal["auc", "eer", "ap", "auc@families"] | None = None
    space: dict[str, dict[str, Any]] = Field(default_factory=dict)


@dataclass(frozen=True)
class MethodSpace:
    """The searched and fixed parameters of one method in one tuning run.

    Args:
        method (`str`): the registry name.
        searched (`dict[str, Tunable]`): YAML key → range, in the order they are sampled.
        fixed (`dict[str, Any]`): YAML key → value for every parameter set but not searched (the recipe's own
            parameters when `method` is its merge_method, and the values fixed in ``tune.space``).
        start (`dict[str, Any]`): the first point tried in a new study: the method's package defaults of the
            searched keys that lie inside their ranges (so the tuner never ends below the defaults it could try).
    """

    method: str
    searched: dict[str, Tunable]
    fixed: dict[str, Any] = field(default_factory=dict)
    start: dict[str, Any] = field(default_factory=dict)

    def suggest(self, trial) -> dict[str, Any]:
        """Sample one point from an Optuna trial and return the method's full parameters (fixed + sampled)."""
        sampled = {}
        for key, t in self.searched.items():
            if t.choices is not None:
                sampled[key] = trial.suggest_categorical(key, list(t.choices))
            elif t.integer:
                sampled[key] = trial.suggest_int(key, int(t.low), int(t.high), log=t.log)
            else:
                sampled[key] = trial.suggest_float(key, float(t.low), float(t.high), log=t.log)
        return {**self.fixed, **sampled}

    def describe(self) -> dict[str, Any]:
        """A JSON-able view (stored with the study, printed in the leaderboard)."""
        return {
            "searched": {
                k: {f: v for f, v in dataclasses.asdict(t).items() if v not in (None, False)}
                for k, t in self.searched.items()
            },
            "fixed": dict(self.fixed),
            "start": dict(self.start),
        }


def read_recipe(config: MergeConfig | str | Path) -> tuple[MergeConfig, TuneSection, Path | None]:
    """Read a recipe and validate its ``tune:`` section (which a merge of the same recipe ignores).

    Args:
        config (`MergeConfig`, `str` or `Path`): a validated recipe or a YAML path (read as ``merge`` reads it:
            size, alias and depth budgets).

    Returns:
        `tuple`: `(merge config, tune section, YAML path or None)`.

    Raises:
        `ConfigError`: the recipe, or its ``tune:`` section, is malformed (one line naming the file and the key).
    """
    if isinstance(config, MergeConfig):
        return config, tune_section(config.tune, "recipe"), None
    path = Path(config)
    merge_config = load_config(path)
    return merge_config, tune_section(merge_config.tune, str(path)), path


def tune_section(raw: dict[str, Any] | None, where: str) -> TuneSection:
    """The recipe's ``tune:`` mapping (None when absent) as a checked :class:`TuneSection`."""
    try:
        return TuneSection(**(raw or {}))
    except ValidationError as exc:
        raise ConfigError(f"{where}: {format_validation_error(exc, prefix='tune')}") from None


def method_spaces(
    config: MergeConfig,
    section: TuneSection,
    methods: list[str] | None,
    *,
    has_base: bool,
    where: str = "tune",
) -> dict[str, MethodSpace]:
    """Build and check the search space of every method to tune.

    Args:
        config (`MergeConfig`): the recipe (its ``parameters`` are kept for its own merge_method).
        section (`TuneSection`): the ``tune:`` section.
        methods (`list[str]`, *optional*): methods to tune; default the section's, else the recipe's merge_method.
        has_base (`bool`): whether the recipe has a base model (methods that need one are refused otherwise).
        where (`str`): how messages name the recipe.

    Returns:
        `dict[str, MethodSpace]`: method → space, in the order given.
    """
    names = list(dict.fromkeys(methods or section.methods or [config.merge_method]))
    unknown = sorted(set(section.space) - set(names))
    if unknown:
        raise ConfigError(
            f"{where}: tune.space names {', '.join(unknown)}, which are not tuned (methods: "
            f"{', '.join(names)}); add them to the methods or remove their entries"
        )
    spaces = {}
    for name in names:
        cls = get_method(name)
        if cls.requires_base and not has_base:
            raise ConfigError(f"{where}: merge_method {name!r} needs a base_model, and the recipe has none")
        spaces[name] = _one_space(cls, config, section.space.get(name, {}), where)
    return spaces


def _one_space(cls, config: MergeConfig, overrides: dict[str, Any], where: str) -> MethodSpace:
    name = cls.name
    fixed = dict(method_parameters(config)) if name == config.merge_method else {}
    searched: dict[str, Tunable] = dict(cls.search_space)
    known = {f.alias or k for k, f in cls.parameters_model.model_fields.items()}
    for key, value in overrides.items():
        at = f"{where}: tune.space.{name}.{key}"
        if key not in known:
            raise ConfigError(f"{at}: {name} has no parameter {key!r}; its parameters: {', '.join(sorted(known))}")
        if value is None:
            searched.pop(key, None)
        elif isinstance(value, dict):
            searched[key] = _override(searched.get(key), value, at)
            fixed.pop(key, None)
        elif isinstance(value, list):
            searched[key] = _tunable({"choices": tuple(value)}, at)
            fixed.pop(key, None)
        else:
            fixed[key] = value
            searched.pop(key, None)
    if not searched:
        raise ConfigError(
            f"{where}: method {name!r} has an empty search space (nothing to tune); give ranges under "
            f"tune.space.{name} or drop {name} from the methods"
        )
    _validate(config, name, fixed, f"{where}: {name}'s fixed parameters (the recipe's and tune.space's values)")
    for key, t in searched.items():
        for label, value in _endpoints(t):
            at = f"{where}: tune.space.{name}.{key}: {label} {value!r} is outside what {name} accepts"
            _validate(config, name, {**fixed, key: value}, at)
    return MethodSpace(name, searched, fixed, _defaults_inside(cls, searched))


def _defaults_inside(cls, searched: dict[str, Tunable]) -> dict[str, Any]:
    """The package defaults of the searched keys that their ranges contain."""
    defaults = cls.parameters_model().model_dump(by_alias=True)
    start = {}
    for key, t in searched.items():
        value = defaults.get(key)
        if value is None or isinstance(value, bool):
            continue
        if t.choices is not None:
            if value in t.choices:
                start[key] = value
        elif isinstance(value, (int, float)) and t.low <= value <= t.high and (not t.integer or value == int(value)):
            start[key] = int(value) if t.integer else float(value)
    return start


def _override(base: Tunable | None, value: dict[str, Any], at: str) -> Tunable:
    unknown = sorted(set(value) - TUNABLE_KEYS)
    if unknown:
        raise ConfigError(f"{at}: unknown key(s) {', '.join(unknown)}; allowed: {', '.join(sorted(TUNABLE_KEYS))}")
    if "choices" in value:
        return _tunable({"choices": tuple(value["choices"] or ())}, at)
    start = {} if base is None or base.choices is not None else dataclasses.asdict(base)
    return _tunable({**start, **value}, at)


def _tunable(fields: dict[str, Any], at: str) -> Tunable:
    try:
        t = Tunable(**fields)
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"{at}: {exc}") from None
    if t.integer and any(float(v) != int(v) for v in (t.low, t.high)):
        raise ConfigError(f"{at}: an integer range needs whole-number ends (got {t.low}, {t.high})")
    return t


def _endpoints(t: Tunable) -> list[tuple[str, Any]]:
    if t.choices is not None:
        return [("choice", c) for c in t.choices]
    low, high = t.endpoints()
    return [("low", low), ("high", high)]


def _validate(config: MergeConfig, method: str, parameters: dict[str, Any], at: str) -> None:
    """Build the method as a merge of this recipe would: its parameter model and its checks against the
    specialists (e.g. R²M's real_rank ≤ N) both see the value."""
    try:
        build_method(method, parameters, config.names(), [m.weight for m in config.models])
    except ConfigError as exc:
        raise ConfigError(f"{at}: {exc}") from None


__all__ = ["METRICS", "MethodSpace", "TuneSection", "method_spaces", "read_recipe"]
