"""The merge YAML: schema, validation, and error messages that name the key at fault.

A compatible subset of mergekit's format::

    merge_method: r2m
    base_model: org/backbone@v1.0         # repo id[@revision] or local folder
    models:
      - model: org/vit-fs                 # repo id[@revision], local folder, or base+adapter
        name: fs
        fake_label: FAKE                  # name or index of the fake class (optional)
        parameters: {weight: 1.0}
    parameters: {alpha: 0.6}
    dtype: float32
    out_dtype: bfloat16

Relative local paths are resolved against the YAML file's folder first, then the working directory.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from .engine import build_method
from .errors import ConfigError, format_validation_error

DType = Literal["float32", "float64", "float16", "bfloat16"]


@dataclass(frozen=True)
class SourceSpec:
    """A model reference as written in the YAML: a local folder or a Hub repo id, with an optional revision.

    Args:
        reference (`str`): the folder path or repo id.
        revision (`str`, *optional*): branch, tag or commit (``repo@revision``).
    """

    reference: str
    revision: str | None = None

    @classmethod
    def parse(cls, text: str) -> SourceSpec:
        text = text.strip()
        if not text:
            raise ValueError("empty model reference")
        if "@" in text and not Path(text).exists():
            ref, _, rev = text.rpartition("@")
            if not ref or not rev:
                raise ValueError(f"{text!r}: expected repo_id@revision")
            return cls(ref, rev)
        return cls(text)

    def __str__(self) -> str:
        return self.reference if self.revision is None else f"{self.reference}@{self.revision}"


class ModelEntry(BaseModel):
    """One specialist in ``models:``."""

    model_config = ConfigDict(extra="forbid")

    model: str = Field(description="repo id[@revision], local folder, or base+adapter")
    name: str | None = None
    fake_label: str | int | None = None
    parameters: dict[str, float] = Field(default_factory=dict)

    @field_validator("parameters")
    @classmethod
    def _only_weight(cls, value: dict[str, float]) -> dict[str, float]:
        unknown = sorted(set(value) - {"weight"})
        if unknown:
            raise ValueError(f"unknown per-model parameter(s) {unknown}; allowed: weight")
        if value.get("weight", 1.0) < 0:
            raise ValueError("weight must be ≥ 0")
        return value

    @property
    def weight(self) -> float:
        return float(self.parameters.get("weight", 1.0))

    def sources(self) -> tuple[SourceSpec | None, SourceSpec]:
        """(base of a ``base+adapter`` reference or None, the model/adapter itself)."""
        if "+" in self.model and not Path(self.model).exists():
            base, _, adapter = self.model.partition("+")
            return SourceSpec.parse(base), SourceSpec.parse(adapter)
        return None, SourceSpec.parse(self.model)

    def display_name(self) -> str:
        if self.name:
            return self.name
        return self.sources()[1].reference.rstrip("/").split("/")[-1]


class EvaluationSection(BaseModel):
    """The optional ``evaluation:`` section: evaluate the merged model after the merge."""

    model_config = ConfigDict(extra="forbid")

    dataset: str
    split: str = "test"
    label_column: str = "label"
    family_column: str | None = None
    video_column: str | None = None
    batch_size: int = Field(32, ge=1)
    max_samples: int | None = Field(None, ge=1)


class MergeConfig(BaseModel):
    """A validated merge recipe."""

    model_config = ConfigDict(extra="forbid")

    merge_method: str
    base_model: str | None = None
    models: list[ModelEntry]
    parameters: dict[str, Any] = Field(default_factory=dict)
    dtype: DType = "float32"
    out_dtype: DType | None = None
    evaluation: EvaluationSection | None = None

    @field_validator("models")
    @classmethod
    def _at_least_two(cls, value: list[ModelEntry]) -> list[ModelEntry]:
        if len(value) < 2:
            raise ValueError(f"a merge needs at least 2 specialists, got {len(value)}")
        return value

    def names(self) -> list[str]:
        return [m.display_name() for m in self.models]

    def check_names_unique(self, where: str) -> None:
        seen: dict[str, int] = {}
        for i, name in enumerate(self.names()):
            if name in seen:
                raise ConfigError(
                    f"{where}: models[{i}] and models[{seen[name]}] are both named {name!r}; give each a unique `name:`"
                )
            seen[name] = i


def parse_config(data: Any, where: str = "config") -> MergeConfig:
    """Validate a loaded YAML mapping into a :class:`MergeConfig` (and check its method and parameters)."""
    if not isinstance(data, dict):
        raise ConfigError(f"{where}: expected a mapping with merge_method, base_model, models")
    try:
        config = MergeConfig(**data)
    except ValidationError as exc:
        raise ConfigError(f"{where}: {format_validation_error(exc)}") from None
    config.check_names_unique(where)
    for i, entry in enumerate(config.models):
        try:
            entry.sources()
        except ValueError as exc:
            raise ConfigError(f"{where}: models[{i}].model: {exc}") from None
    params = dict(config.parameters)
    head = params.pop("head", "mean")
    if head != "mean" and head not in config.names():
        raise ConfigError(
            f"{where}: parameters.head: {head!r} is neither 'mean' nor a specialist name ({', '.join(config.names())})"
        )
    try:
        method = build_method(config.merge_method, params, config.names(), [m.weight for m in config.models])
    except ConfigError as exc:
        raise ConfigError(f"{where}: {exc}") from None
    if method.requires_base and not config.base_model:
        raise ConfigError(f"{where}: base_model: merge_method {config.merge_method!r} needs a base_model")
    return config


def load_config(path: str | Path) -> MergeConfig:
    """Read and validate a merge YAML file.

    Args:
        path (`str` or `Path`): the YAML file.

    Returns:
        `MergeConfig`: the validated recipe; raises `ConfigError` with the file and key on bad input.
    """
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"{path}: no such config file") from None
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read: {exc.strerror}") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"{path}:{mark.line + 1}:{mark.column + 1}" if mark is not None else str(path)
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise ConfigError(f"{where}: YAML syntax error: {problem}") from None
    return parse_config(data, where=str(path))


def head_choice(config: MergeConfig) -> str:
    """The head policy: ``mean`` or the name of the specialist whose head is kept."""
    return str(config.parameters.get("head", "mean"))


def method_parameters(config: MergeConfig) -> dict[str, Any]:
    """The method's own parameters (without the shared ``head`` policy)."""
    return {k: v for k, v in config.parameters.items() if k != "head"}
