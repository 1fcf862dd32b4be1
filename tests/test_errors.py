"""The error types (r2m_hf/errors.py): one module, each also the builtin that fits, every one exported from
``r2m_hf``, and the one-line rendering of pydantic validation errors."""

from __future__ import annotations

import ast
import pickle
from pathlib import Path
from typing import Literal

import pytest
from pydantic import BaseModel, ConfigDict, ValidationError, field_validator

import r2m_hf
from r2m_hf import errors
from r2m_hf.errors import (
    CheckpointError,
    ConfigError,
    DatasetError,
    HubError,
    LabelError,
    MethodError,
    OutputError,
    R2MError,
    SourceError,
    format_validation_error,
)

# Every error and the builtin a caller who does not know r2m-hf's types would catch it as.
BUILTINS = {
    ConfigError: ValueError,
    LabelError: ValueError,
    CheckpointError: ValueError,
    MethodError: ValueError,
    DatasetError: ValueError,
    SourceError: OSError,
    HubError: OSError,
    OutputError: OSError,
}


def defined_errors() -> list[type]:
    return [v for v in vars(errors).values() if isinstance(v, type) and issubclass(v, BaseException)]


def test_every_error_is_an_r2m_error_and_its_builtin():
    assert set(defined_errors()) == set(BUILTINS) | {R2MError}
    for cls, builtin in BUILTINS.items():
        assert issubclass(cls, R2MError) and issubclass(cls, builtin), cls
    assert issubclass(LabelError, ConfigError)
    with pytest.raises(ValueError):
        raise ConfigError("x")
    with pytest.raises(OSError):
        raise SourceError("x")


def test_every_error_says_when_it_is_raised():
    for cls in BUILTINS:
        assert "__doc__" in vars(cls) and cls.__doc__.startswith("Raised when "), cls


def test_every_error_is_exported_from_the_package():
    for cls in [R2MError, *BUILTINS]:
        assert cls.__name__ in r2m_hf.__all__ and getattr(r2m_hf, cls.__name__) is cls
        assert cls.__name__ in errors.__all__


@pytest.mark.parametrize("cls", [SourceError, HubError, OutputError])
def test_os_error_subclasses_keep_the_message_as_it_is(cls):
    exc = cls("model/x: no such folder, and not a valid Hub repo id; check the path")
    assert str(exc) == "model/x: no such folder, and not a valid Hub repo id; check the path"
    assert exc.args == ("model/x: no such folder, and not a valid Hub repo id; check the path",)
    assert exc.errno is None and exc.filename is None
    assert type(exc) is cls  # OSError's constructor picks a subclass from errno only for OSError itself


@pytest.mark.parametrize("cls", [R2MError, *BUILTINS])
def test_errors_survive_pickling(cls):
    """Errors cross process boundaries in multi-process merges and evaluation."""
    again = pickle.loads(pickle.dumps(cls("a message")))
    assert type(again) is cls and str(again) == "a message"


def test_errors_are_defined_only_in_the_errors_module():
    """No module but errors.py subclasses an r2m-hf error (another name for one, e.g. an alias, is fine)."""
    package = Path(r2m_hf.__file__).parent
    found = []
    for path in sorted(package.rglob("*.py")):
        if path == package / "errors.py":
            continue
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ClassDef):
                bases = [ast.unparse(b).rpartition(".")[2] for b in node.bases]
                if set(bases) & set(errors.__all__):
                    found.append(f"{path.relative_to(package)}: class {node.name}({', '.join(bases)})")
    assert not found, "r2m-hf errors defined outside r2m_hf/errors.py:\n" + "\n".join(found)


class _Params(BaseModel):
    model_config = ConfigDict(extra="forbid")

    alpha: float = 1.0
    mode: Literal["fixed", "relative"] = "fixed"
    name: str

    @field_validator("alpha")
    @classmethod
    def _positive(cls, value: float) -> float:
        if value <= 0:
            raise ValueError("alpha must be > 0")
        return value


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        ({"name": "a", "alpah": 1}, "parameters.alpah: unknown key"),
        ({"name": "a", "mode": "free"}, "parameters.mode: 'free' is not allowed; expected 'fixed' or 'relative'"),
        ({"name": "a", "alpha": -1}, "parameters.alpha: alpha must be > 0 (got -1)"),
        ({}, "parameters.name: Field required"),
        (
            {"name": "a", "alpha": "big", "extra": 1},
            "parameters.alpha: Input should be a valid number, unable to parse string as a number (got 'big'); "
            "parameters.extra: unknown key",
        ),
    ],
)
def test_format_validation_error_is_one_line_per_key(data, expected):
    with pytest.raises(ValidationError) as info:
        _Params(**data)
    assert format_validation_error(info.value, prefix="parameters") == expected
    assert format_validation_error(info.value).startswith(expected.split("parameters.")[1].split(":")[0])
