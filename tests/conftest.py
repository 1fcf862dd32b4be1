"""Shared fixtures: tiny seeded model zoos (built once per session) and helpers to run the ``r2m-hf`` CLI.

* ``zoo``: a ViT backbone and three full specialists (``fs``, ``fr`` saved with ``{0: FAKE, 1: REAL}``, ``efs``).
* ``lora``: two PEFT LoRA adapters over that backbone, one under transformers 5 names and one rewritten to the
  transformers 4 (legacy) names.
* ``arch_zoo(arch)``: the same kind of zoo for ``vit``, ``clip``, ``dinov2`` or ``siglip`` (cached per session).
* ``write_yaml(path, data)``: dump a recipe; ``cli(*args)``: run ``r2m_hf.cli.main`` in-process, capturing output.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml


@dataclass
class CliResult:
    """What one in-process CLI run returned and printed."""

    code: int
    out: str
    err: str


def write_yaml(path: str | Path, data) -> Path:
    """Write `data` as YAML (a string is written verbatim) and return the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(data if isinstance(data, str) else yaml.safe_dump(data, sort_keys=False))
    return path


@pytest.fixture
def cli(capsys):
    """Run ``r2m-hf ARGS`` in-process and return a :class:`CliResult` (exit code, stdout, stderr)."""
    from r2m_hf.cli import main

    def run(*args) -> CliResult:
        capsys.readouterr()
        code = main([str(a) for a in args])
        captured = capsys.readouterr()
        return CliResult(code, captured.out, captured.err)

    return run


@pytest.fixture(scope="session")
def zoo(tmp_path_factory):
    """The tiny ViT zoo: backbone + full specialists fs, fr (fake first, FAKE/REAL names), efs."""
    from r2m_hf.zoo import build_zoo

    return build_zoo(tmp_path_factory.mktemp("zoo"))


@dataclass
class LoraZoo:
    """Paths of the session's LoRA adapters (over ``zoo.base``)."""

    v5: Path
    legacy: Path


@pytest.fixture(scope="session")
def lora(zoo):
    """A transformers-5-named adapter and a legacy (transformers 4 names) adapter over the zoo's backbone."""
    from r2m_hf.zoo import save_lora_specialist

    return LoraZoo(
        v5=save_lora_specialist(zoo.root / "lora5", zoo.base, seed=11),
        legacy=save_lora_specialist(zoo.root / "lora4", zoo.base, seed=12, legacy_names=True),
    )


@pytest.fixture(scope="session")
def arch_zoo(tmp_path_factory, zoo):
    """``arch_zoo(arch)``: a three-specialist zoo of that architecture, built once per session."""
    from r2m_hf.zoo import build_zoo

    built = {"vit": zoo}

    def get(arch: str):
        if arch not in built:
            built[arch] = build_zoo(tmp_path_factory.mktemp(f"zoo-{arch}"), arch=arch)
        return built[arch]

    return get


def assert_nothing_written(output: Path) -> None:
    """The output folder is absent and no temporary sibling was left behind."""
    output = Path(output)
    assert not output.exists(), f"{output} was created"
    leftovers = sorted(p.name for p in output.parent.glob(f".{output.name}.*"))
    assert not leftovers, f"leftover temporary folders: {leftovers}"
