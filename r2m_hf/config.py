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
    tune: {trials: 40}                    # read by `r2m-hf tune` only (optional)

Relative local paths are resolved against the YAML file's folder first, then the working directory. The YAML is read
with a node budget (an alias "bomb" is refused before it expands) and a size limit, every number must be finite, and
names use a restricted character set, since they end up in the model card and its metadata.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from .engine import build_method
from .errors import ConfigError, clip, format_validation_error

DType = Literal["float32", "float64", "float16", "bfloat16"]

MAX_YAML_BYTES = 1024 * 1024  # a merge recipe is a few hundred bytes
MAX_YAML_NODES = 20_000  # scalars, lists and mappings after expanding every alias
# A specialist's name: it is written into the recipe, the report, the model card (Markdown and YAML) and messages.
NAME = re.compile(r"^\w[\w.+-]{0,63}$")
METHOD_NAME = re.compile(r"^[\w.-]{1,64}$")
MAX_REFERENCE = 4096
DFB_PREFIX = "dfb:"  # a DeepfakeBench checkpoint: `model: dfb:path/or/owner/repo/file.pth` with `backbone:`


def load_yaml(text: str, where: str, *, max_nodes: int = MAX_YAML_NODES) -> Any:
    """Parse YAML safely: ``yaml.safe_load`` plus a budget on the expanded document.

    Aliases let a few lines describe an exponentially large document ("billion laughs"); the document is therefore
    composed first, its size after expanding every alias counted without expanding it, and only a document within
    `max_nodes` is constructed. A recursive alias, nesting too deep for the parser and an integer too long to convert
    are refused the same way.

    Args:
        text (`str`): the YAML text.
        where (`str`): the file, for messages.
        max_nodes (`int`): the most nodes the expanded document may have.

    Returns:
        The constructed document (None for an empty one).

    Raises:
        `ConfigError`: a syntax error (with line and column), or a document over the budget.
    """
    loader = yaml.SafeLoader(text)
    try:
        node = loader.get_single_node()
        if node is None:
            return None
        _check_node_budget(node, where, max_nodes)
        return loader.construct_document(node)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        at = f"{where}:{mark.line + 1}:{mark.column + 1}" if mark is not None else where
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise ConfigError(f"{at}: YAML syntax error: {clip(problem)}") from None
    except RecursionError:
        raise ConfigError(f"{where}: the YAML is nested too deeply to be a merge recipe") from None
    except ValueError as exc:  # e.g. an integer literal of more digits than Python converts
        raise ConfigError(f"{where}: a YAML value cannot be read: {clip(str(exc))}") from None
    finally:
        loader.dispose()


def _check_node_budget(root: yaml.Node, where: str, max_nodes: int) -> None:
    """Refuse a composed document whose alias-expanded size exceeds `max_nodes` (counted once per shared node)."""
    size: dict[int, int] = {}
    stack: list[tuple[yaml.Node, bool]] = [(root, False)]
    open_nodes: set[int] = set()
    while stack:
        node, done = stack.pop()
        key = id(node)
        children = _children(node)
        if done:
            open_nodes.discard(key)
            size[key] = 1 + sum(size[id(child)] for child in children)
            if size[key] > max_nodes:
                raise ConfigError(
                    f"{where}: the YAML expands to more than {max_nodes:,} values (aliases/anchors); a merge recipe "
                    "is small: write it without aliases"
                )
            continue
        if key in size:
            continue
        if key in open_nodes:
            raise ConfigError(f"{where}: the YAML has a recursive alias (an anchor used inside itself)")
        open_nodes.add(key)
        stack.append((node, True))
        stack.extend((child, False) for child in children if id(child) not in size)


def _children(node: yaml.Node) -> list[yaml.Node]:
    if isinstance(node, yaml.MappingNode):
        return [part for pair in node.value for part in pair]
    if isinstance(node, yaml.SequenceNode):
        return list(node.value)
    return []


def check_finite(value: Any, key: str) -> None:
    """Every number in `value` (nested lists and mappings included) must be finite.

    Raises:
        `ValueError`: naming the key (``alpha``, ``weights[2]``) of the first NaN or infinity.
    """
    if isinstance(value, float) and not math.isfinite(value):
        raise ValueError(f"{key}: {value} is not a finite number")
    if isinstance(value, dict):
        for k, v in value.items():
            check_finite(v, f"{key}.{clip(str(k), 64)}" if key else clip(str(k), 64))
    elif isinstance(value, (list, tuple)):
        for i, v in enumerate(value):
            check_finite(v, f"{key}[{i}]")


def safe_name(raw: str) -> str:
    """A name derived from a folder or repo name, brought to the :data:`NAME` character set."""
    name = re.sub(r"[^\w.+-]+", "-", raw).strip("-.+")[:64]
    return name if name and NAME.match(name) else "model"


def path_exists(text: str) -> bool:
    """Whether `text` names an existing file or folder; False for text no path can be (a NUL, a name too long)."""
    try:
        return Path(text).expanduser().exists()
    except (OSError, ValueError):
        return False


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
        if "@" in text and not path_exists(text):
            ref, _, rev = text.rpartition("@")
            if not ref or not rev:
                raise ValueError(f"{clip(repr(text))}: expected repo_id@revision")
            return cls(ref, rev)
        return cls(text)

    def __str__(self) -> str:
        return self.reference if self.revision is None else f"{self.reference}@{self.revision}"


class ModelEntry(BaseModel):
    """One specialist in ``models:``."""

    model_config = ConfigDict(extra="forbid")

    model: str = Field(
        description="repo id[@revision], local folder, base+adapter, or dfb:FILE.pth", max_length=MAX_REFERENCE
    )
    name: str | None = None
    fake_label: str | int | None = None
    parameters: dict[str, float] = Field(default_factory=dict)
    backbone: str | None = Field(
        None,
        description="dfb: models: folder or Hub id of the CLIP they were trained from",
        max_length=MAX_REFERENCE,
    )
    variant: Literal["clip", "effort"] | None = Field(
        None, description="dfb: models: DeepfakeBench's CLIP detector (the default) or its Effort detector"
    )

    @field_validator("name")
    @classmethod
    def _plain_name(cls, value: str | None) -> str | None:
        if value is not None and not NAME.match(value):
            raise ValueError(
                "a name is 1-64 letters, digits and . _ + - (starting with a letter or digit); it is written into "
                "the model card"
            )
        return value

    @field_validator("fake_label")
    @classmethod
    def _short_label(cls, value: str | int | None) -> str | int | None:
        if isinstance(value, str) and len(value) > 256:
            raise ValueError("a class name is at most 256 characters")
        return value

    @field_validator("parameters")
    @classmethod
    def _only_weight(cls, value: dict[str, float]) -> dict[str, float]:
        unknown = sorted(set(value) - {"weight"})
        if unknown:
            raise ValueError(f"unknown per-model parameter(s) {clip(unknown)}; allowed: weight")
        weight = value.get("weight", 1.0)
        if not math.isfinite(weight):
            raise ValueError(f"weight must be a finite number ≥ 0, not {weight}")
        if weight < 0:
            raise ValueError("weight must be ≥ 0")
        return value

    @model_validator(mode="after")
    def _dfb_fields(self) -> ModelEntry:
        if self.is_dfb and not self.backbone:
            raise ValueError(
                "a dfb: model needs `backbone:`, the CLIP it was trained from (e.g. openai/clip-vit-large-patch14)"
            )
        if not self.is_dfb and (self.backbone is not None or self.variant is not None):
            raise ValueError("`backbone:` and `variant:` apply to dfb: models (DeepfakeBench checkpoints) only")
        return self

    @property
    def is_dfb(self) -> bool:
        """A DeepfakeBench checkpoint (``dfb:path/or/owner/repo/file.pth``), converted on first use."""
        return self.model.startswith(DFB_PREFIX)

    @property
    def weight(self) -> float:
        return float(self.parameters.get("weight", 1.0))

    def sources(self) -> tuple[SourceSpec | None, SourceSpec]:
        """(base of a ``base+adapter`` reference or None, the model/adapter itself); a ``dfb:`` entry is kept whole
        (its file is resolved and converted by the planner)."""
        if self.is_dfb:
            if not self.model[len(DFB_PREFIX) :].strip():
                raise ValueError("dfb: needs a checkpoint file (dfb:path/to/file.pth or dfb:owner/repo/file.pth)")
            return None, SourceSpec(self.model)
        if "+" in self.model and not path_exists(self.model):
            base, _, adapter = self.model.partition("+")
            return SourceSpec.parse(base), SourceSpec.parse(adapter)
        return None, SourceSpec.parse(self.model)

    def display_name(self) -> str:
        """The explicit ``name``, else the folder or repo name (brought to the :data:`NAME` character set)."""
        if self.name:
            return self.name
        return safe_name(self.sources()[1].reference.rstrip("/").split("/")[-1])


class EvaluationSection(BaseModel):
    """The optional ``evaluation:`` section: evaluate the merged model after the merge."""

    model_config = ConfigDict(extra="forbid")

    dataset: str = Field(max_length=MAX_REFERENCE)
    split: str = Field("test", max_length=256)
    label_column: str = Field("label", max_length=256)
    family_column: str | None = Field(None, max_length=256)
    video_column: str | None = Field(None, max_length=256)
    batch_size: int = Field(32, ge=1)
    max_samples: int | None = Field(None, ge=1)
    skip_unreadable: bool = False


class MergeConfig(BaseModel):
    """A validated merge recipe."""

    model_config = ConfigDict(extra="forbid")

    merge_method: str
    base_model: str | None = Field(None, max_length=MAX_REFERENCE)
    models: list[ModelEntry]
    parameters: dict[str, Any] = Field(default_factory=dict)
    dtype: DType = "float32"
    out_dtype: DType | None = None
    evaluation: EvaluationSection | None = None
    # `r2m-hf tune`'s section, validated by the tuner (r2m_hf.tuning.space.TuneSection); a merge ignores it.
    tune: dict[str, Any] | None = None

    @field_validator("merge_method")
    @classmethod
    def _method_name(cls, value: str) -> str:
        if not METHOD_NAME.match(value):
            raise ValueError("a method name is letters, digits, '.', '_' and '-' (see `r2m-hf methods`)")
        return value

    @field_validator("parameters")
    @classmethod
    def _finite(cls, value: dict[str, Any]) -> dict[str, Any]:
        check_finite(value, "")
        return value

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
        config = MergeConfig.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(f"{where}: {format_validation_error(exc)}") from None
    for i, entry in enumerate(config.models):
        try:
            entry.sources()
        except ValueError as exc:
            raise ConfigError(f"{where}: models[{i}].model: {clip(str(exc))}") from None
        try:
            if entry.backbone is not None:
                SourceSpec.parse(entry.backbone)
        except ValueError as exc:
            raise ConfigError(f"{where}: models[{i}].backbone: {clip(str(exc))}") from None
    config.check_names_unique(where)
    params = dict(config.parameters)
    head = params.pop("head", "mean")
    if head != "mean" and head not in config.names():
        raise ConfigError(
            f"{where}: parameters.head: {clip(repr(head))} is neither 'mean' nor a specialist name "
            f"({clip(', '.join(config.names()))})"
        )
    try:
        method = build_method(config.merge_method, params, config.names(), [m.weight for m in config.models])
    except ConfigError as exc:
        raise ConfigError(f"{where}: {exc}") from None
    # dfb: models bring their base (the CLIP they were trained from), as adapters do.
    if method.requires_base and not config.base_model and not any(m.is_dfb for m in config.models):
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
    return parse_config(load_yaml(read_yaml_text(path), str(path)), where=str(path))


def read_yaml_text(path: Path, limit: int = MAX_YAML_BYTES) -> str:
    """The text of a YAML file, refused when larger than `limit` bytes or not UTF-8.

    Raises:
        `ConfigError`: missing, unreadable, too large or not text.
    """
    try:
        with open(path, "rb") as handle:
            data = handle.read(limit + 1)
    except FileNotFoundError:
        raise ConfigError(f"{path}: no such config file") from None
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read: {exc.strerror or exc}") from None
    if len(data) > limit:
        raise ConfigError(f"{path}: larger than {limit:,} bytes; a merge recipe is a short YAML file")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{path}: not UTF-8 text (byte {exc.start}); save the recipe as UTF-8") from None


def head_choice(config: MergeConfig) -> str:
    """The head policy: ``mean`` or the name of the specialist whose head is kept."""
    return str(config.parameters.get("head", "mean"))


def method_parameters(config: MergeConfig) -> dict[str, Any]:
    """The method's own parameters (without the shared ``head`` policy)."""
    return {k: v for k, v in config.parameters.items() if k != "head"}
