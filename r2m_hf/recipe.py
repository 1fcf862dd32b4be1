"""The files a merge leaves beside its weights, as typed models: the resolved recipe and the merge report.

:class:`Recipe` is ``merge_config.yaml`` (what was asked for and what was used: every input's reference, commit and
file hashes, the method's full parameters) and :class:`MergeReport` is ``merge_report.json`` (what happened: files,
time, device, the method's diagnostics and warnings). Both are written and read only through their ``write`` /
``read`` methods, and every consumer (the model card, the push, ``check-specialist``, the demo, the benchmark) reads
them through these models, so a missing or renamed key is an error naming the file and the key, never a silent
default. The names of every file of an output folder are defined here and nowhere else.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from .config import EvaluationSection, load_yaml, read_yaml_text
from .errors import ConfigError, OutputError, R2MError, clip, format_validation_error

RECIPE_FILE = "merge_config.yaml"
REPORT_FILE = "merge_report.json"
EVAL_FILE = "eval_results.json"
CARD_FILE = "README.md"
PLOT_FILE = "eval_auc.png"
PROCESSOR_FILES = ("preprocessor_config.json",)


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class SourceRecord(_Strict):
    """Where one input came from: the reference as written, and the Hub commit or local folder actually read.

    Local inputs are recorded without the machine's absolute paths (which would be pushed with the model): by their
    path relative to the recipe's folder, or their folder name when outside it, and the SHA-256 of their files. The
    absolute path is recorded only when the merge is asked to (``--record-local-paths``).

    Args:
        reference (`str`): the reference in the merge YAML (``repo@revision``, or a local folder as recorded).
        repo_id (`str`, *optional*), revision (`str`, *optional*), commit (`str`, *optional*): for Hub inputs.
        path (`str`, *optional*): for local inputs, the folder (relative to the recipe's folder, or its name).
        files (`dict[str, str]`): SHA-256 of every weight file read.
        license (`str`, *optional*): the licence the input's model card declares.
    """

    reference: str
    repo_id: str | None = None
    revision: str | None = None
    commit: str | None = None
    path: str | None = None
    files: dict[str, str] = Field(default_factory=dict)
    license: str | None = None

    @model_validator(mode="after")
    def _hub_or_local(self) -> SourceRecord:
        if (self.repo_id is None) == (self.path is None):
            raise ValueError("a source record has either repo_id (a Hub input) or path (a local input)")
        return self


class ModelRecord(_Strict):
    """One specialist of the recipe: its name, kind (``full`` or ``lora``), resolved fake index and source."""

    name: str
    kind: Literal["full", "lora"]
    fake_index: int
    fake_label: str | int | None = None
    parameters: dict[str, float]
    source: SourceRecord
    adapter_base: SourceRecord | None = None


class Recipe(_Strict):
    """The fully resolved recipe of a merge (``merge_config.yaml``).

    Args:
        r2m_hf_version (`str`): the version that wrote it.
        merge_method (`str`): the registry name of the method.
        base_model (`SourceRecord`, *optional*): the base θ0 (None for methods without one).
        models (`list[ModelRecord]`): the specialists, in YAML order.
        parameters (`dict`): the method's parameters with every default filled in, plus the head policy ``head``.
        dtype (`str`), out_dtype (`str`): compute and stored dtypes.
        evaluation (`EvaluationSection`, *optional*): the recipe's ``evaluation:`` section.
    """

    r2m_hf_version: str
    merge_method: str
    base_model: SourceRecord | None
    models: list[ModelRecord]
    parameters: dict[str, Any]
    dtype: str
    out_dtype: str
    evaluation: EvaluationSection | None = None

    @property
    def names(self) -> list[str]:
        return [m.name for m in self.models]

    def inputs(self) -> list[tuple[str, SourceRecord]]:
        """(role, source) of the base, every specialist and every adapter's own base, in that order."""
        found = [("base_model", self.base_model)] if self.base_model is not None else []
        for model in self.models:
            found.append((model.name, model.source))
            if model.adapter_base is not None:
                found.append((f"{model.name} (adapter base)", model.adapter_base))
        return found

    def to_dict(self) -> dict[str, Any]:
        """The YAML mapping: absent optional keys are left out, ``base_model: null`` is kept explicit."""
        data = self.model_dump(mode="json", exclude_none=True)
        data = {key: data.get(key) for key in type(self).model_fields if key in data or key == "base_model"}
        return data

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.to_dict(), sort_keys=False, allow_unicode=True)

    def write(self, folder: str | Path) -> Path:
        """Write ``merge_config.yaml`` into `folder`; returns its path."""
        path = Path(folder) / RECIPE_FILE
        path.write_text(self.to_yaml(), encoding="utf-8")
        return path

    @classmethod
    def read(cls, folder: str | Path) -> Recipe:
        """Read ``merge_config.yaml`` of a merged folder (also those written by earlier r2m-hf versions).

        Raises:
            `OutputError`: the folder has no recipe (it is not a merged output).
            `ConfigError`: the recipe is not valid YAML, or a key is missing, unknown or of the wrong type.
        """
        path = _existing(folder, RECIPE_FILE)
        try:
            data = load_yaml(read_yaml_text(path), str(path))
        except ConfigError as exc:
            detail = str(exc).removeprefix(str(path)).lstrip(":0123456789 ")
            raise ConfigError(f"{path}: not valid YAML ({detail}); re-run the merge") from None
        return _validate(cls, data, path)


class MergeReport(_Strict):
    """What a merge did (``merge_report.json``).

    Args:
        merge_method (`str`), architecture (`str`): the method and the merged model's class.
        specialists (`list[str]`): the specialists' names.
        tensors (`int`): tensors written (backbone and head).
        files (`list[str]`): the weight files written.
        seconds (`float`): wall time of the merge.
        device (`str`), processes (`int`): where the math ran, and on how many processes.
        notes (`list[str]`): what the planner noticed (inputs it could not verify, where the base came from, …).
        image_processor (`str`, *optional*): which input's image processor was copied.
        method (`dict`): the method's own diagnostics (``MergeMethod.report()``).
        warnings (`list[str]`): the method's warnings (``MergeMethod.warnings()``).
    """

    merge_method: str
    architecture: str
    specialists: list[str]
    tensors: int
    files: list[str]
    seconds: float
    device: str
    processes: int
    notes: list[str]
    image_processor: str | None
    method: dict[str, Any]
    warnings: list[str]

    @model_validator(mode="before")
    @classmethod
    def _warnings_of_older_reports(cls, data: Any) -> Any:
        # Reports written before 0.2 kept the method's warnings inside its diagnostics.
        if isinstance(data, dict) and "warnings" not in data and isinstance(data.get("method"), dict):
            return {**data, "warnings": list(data["method"].get("warnings") or [])}
        return data

    def summary_rows(self) -> list[tuple[str, str]]:
        """(label, value) rows of the method's diagnostics, formatted by the method itself.

        An unknown method (a plugin not installed here) gives no rows rather than an error, so a folder merged
        elsewhere can still be carded and pushed.
        """
        from .methods.registry import get_method

        try:
            method = get_method(self.merge_method)
        except R2MError:
            return []
        return [(str(label), str(value)) for label, value in method.summary_rows(self.method)]

    def write(self, folder: str | Path) -> Path:
        """Write ``merge_report.json`` into `folder`; returns its path."""
        path = Path(folder) / REPORT_FILE
        path.write_text(json.dumps(self.model_dump(mode="json"), indent=2, default=str) + "\n", encoding="utf-8")
        return path

    @classmethod
    def read(cls, folder: str | Path) -> MergeReport:
        """Read ``merge_report.json`` of a merged folder (also those written by earlier r2m-hf versions).

        Raises:
            `OutputError`: the folder has no report.
            `ConfigError`: the report is not valid JSON, or a key is missing, unknown or of the wrong type.
        """
        path = _existing(folder, REPORT_FILE)
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (ValueError, RecursionError) as exc:  # also not UTF-8, or nested too deeply
            raise ConfigError(f"{path}: not valid JSON ({clip(str(exc))}); re-run the merge") from None
        except OSError as exc:
            raise OutputError(f"{path}: cannot read ({exc.strerror or exc})") from None
        return _validate(cls, data, path)


def _existing(folder: str | Path, name: str) -> Path:
    path = Path(folder) / name
    if not path.is_file():
        raise OutputError(f"{path.parent}: no {name}; this is not the output folder of `r2m-hf merge`")
    return path


def _validate(model: type[BaseModel], data: Any, path: Path):
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping; re-run the merge")
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(
            f"{path}: {format_validation_error(exc)}; the file was edited or written by an incompatible r2m-hf "
            "version: re-run the merge"
        ) from None


__all__ = [
    "CARD_FILE",
    "EVAL_FILE",
    "PLOT_FILE",
    "PROCESSOR_FILES",
    "RECIPE_FILE",
    "REPORT_FILE",
    "MergeReport",
    "ModelRecord",
    "Recipe",
    "SourceRecord",
]
