"""Bad merge inputs and the checks every one of them must pass, shared by the modules that own each kind of input
(test_config, test_sources, test_writer, test_cli_merge_errors).

A bad input is a :class:`Case`: the recipe to run, the error type the API raises and the fragments its message must
contain. :func:`check_cli_error` runs it through ``r2m-hf merge`` (one ``r2m-hf: error:`` line, exit code 2, nothing
written; with ``--debug`` the traceback and still exit code 2); :func:`check_api_error` through ``r2m_hf.merge``.
"""

from __future__ import annotations

import json
import re
import shutil
import sys
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import torch
from conftest import assert_nothing_written, recipe
from safetensors.torch import load_file

from r2m_hf.errors import R2MError

__all__ = [
    "Case",
    "assert_one_error_line",
    "case_ids",
    "check_api_error",
    "check_cli_error",
    "copy_specialist",
    "pickle_specialist",
    "recipe",
    "relabelled_specialist",
    "visible_lines",
    "with_one",
]


@dataclass
class Case:
    """A bad recipe: the YAML to run, its error type and the fragments its message must contain.

    ``progress=True`` runs the CLI as on a terminal (progress bars drawn, then erased when the merge stops).
    """

    config: Path
    error: type[R2MError]
    fragments: list[str]
    args: list[str] = field(default_factory=list)
    pattern: str | None = None
    progress: bool = False


def copy_specialist(zoo, tmp_path: Path, name: str, source: int = 0) -> Path:
    folder = tmp_path / name
    shutil.copytree(zoo.specialists[source], folder)
    return folder


def with_one(zoo, folder: Path, name: str = "bad", **entry) -> dict:
    """fs, fr and the bad specialist last."""
    models = [{"model": str(p)} for p in zoo.specialists[:2]] + [{"model": str(folder), "name": name, **entry}]
    return recipe(zoo, models=models)


def pickle_specialist(zoo, tmp_path: Path) -> Path:
    """fs as a pickle-only folder (``pytorch_model.bin`` with the on-disk key names)."""
    folder = tmp_path / "pickled"
    folder.mkdir()
    for name in ("config.json", "preprocessor_config.json"):
        shutil.copyfile(zoo.specialists[0] / name, folder / name)
    torch.save(load_file(zoo.specialists[0] / "model.safetensors"), folder / "pytorch_model.bin")
    return folder


def relabelled_specialist(zoo, tmp_path: Path) -> Path:
    """efs with labels that do not name a fake class (``cat``/``dog``)."""
    folder = copy_specialist(zoo, tmp_path, "pets", source=2)
    cfg = json.loads((folder / "config.json").read_text())
    cfg["id2label"], cfg["label2id"] = {"0": "cat", "1": "dog"}, {"cat": 0, "dog": 1}
    (folder / "config.json").write_text(json.dumps(cfg))
    return folder


def visible_lines(err: str) -> list[str]:
    """stderr as a terminal shows it: within a line, text after a carriage return overwrites what came before.

    Progress bars are erased with ``\\r`` when the merge stops; only what remains on screen counts.
    """
    lines = [segment.split("\r")[-1].rstrip() for segment in err.split("\n")]
    return [line for line in lines if line]


def assert_one_error_line(code: int, err: str, case: Case) -> str:
    """Exit code 2 and exactly one ``r2m-hf: error:`` line holding every fragment; returns that line."""
    assert code == 2, err
    assert "Traceback" not in err
    lines = visible_lines(err) if case.progress else err.strip().splitlines()
    assert len(lines) == 1, f"expected one line on stderr, got:\n{err}"
    line = lines[0]
    assert line.startswith("r2m-hf: error: "), line
    for fragment in case.fragments:
        assert fragment in line, f"{fragment!r} not in {line!r}"
    if case.pattern:
        assert re.search(case.pattern, line), line
    return line


def merge_args(case: Case, out: Path) -> list[str]:
    return ["merge", str(case.config), str(out), *([] if case.progress else ["--no-progress"]), *case.args]


def check_cli_error(case: Case, out: Path, cli, monkeypatch: pytest.MonkeyPatch) -> None:
    """``r2m-hf merge`` on the bad input: one error line, nothing written; ``--debug``: the traceback, exit 2."""
    if case.progress:
        monkeypatch.setattr(sys.stderr, "isatty", lambda: True, raising=False)
    result = cli(*merge_args(case, out))
    assert result.out == ""
    line = assert_one_error_line(result.code, result.err, case)
    assert_nothing_written(out)

    debug = cli(*merge_args(case, out), "--debug")
    assert debug.code == 2, debug.err
    assert "Traceback (most recent call last)" in debug.err
    assert visible_lines(debug.err)[-1] == line
    assert_nothing_written(out)


def check_api_error(case: Case, out: Path) -> None:
    """``r2m_hf.merge`` on the bad input raises the typed error, with a one-line message naming what is at fault."""
    from r2m_hf import merge

    with pytest.raises(case.error) as info:
        merge(case.config, out, progress=False, allow_pickle="--allow-pickle" in case.args)
    message = str(info.value)
    for fragment in case.fragments:
        assert fragment in message, f"{fragment!r} not in {message!r}"
    assert "\n" not in message
    assert_nothing_written(out)


def case_ids(builders) -> list[str]:
    return [builder.__name__ for builder in builders]
