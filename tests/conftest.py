"""Shared fixtures: tiny seeded model zoos (built once per session) and helpers to run the ``r2m-hf`` CLI.

* ``zoo``: a ViT backbone and three full specialists (``fs``, ``fr`` saved with ``{0: FAKE, 1: REAL}``, ``efs``).
* ``lora``: two PEFT LoRA adapters over that backbone, one under transformers 5 names and one rewritten to the
  transformers 4 (legacy) names.
* ``arch_zoo(arch)``: the same kind of zoo for ``vit``, ``clip``, ``dinov2`` or ``siglip`` (cached per session).
* ``write_yaml(path, data)``: dump a recipe; ``cli(*args)``: run ``r2m_hf.cli.main`` in-process, capturing output.
* ``r2m_out``: the default R²M merge of the zoo's three specialists, run once through the CLI; ``base_state`` and
  ``specialist_states``: the zoo's tensors under canonical names; ``recipe(zoo, ...)``, ``load_model(folder)``,
  ``state(folder)``: helpers for tests that merge the zoo.
* ``build_case(builder)``: call a bad-input builder (see ``bad_input.py``) with the fixtures it names.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pytest
import torch
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


def recipe(zoo, method="r2m", models=None, **extra) -> dict:
    """A recipe over the zoo (absolute paths), with its three full specialists unless `models` is given."""
    data = {"merge_method": method, "base_model": str(zoo.base)}
    data["models"] = models if models is not None else [{"model": str(p)} for p in zoo.specialists]
    data.update(extra)
    return data


def lora_only_recipe(zoo, adapter_model: str, **parameters):
    """task_arithmetic with the adapter (weight 1, its head kept) and fs (weight 0): θ = θ0 + ΔW_lora.

    Weights are rescaled to sum to N = 2, so the adapter's weight becomes 2 and λ = 0.5 adds its delta once.
    """
    return recipe(
        zoo,
        "task_arithmetic",
        models=[
            {"model": adapter_model, "name": "lora"},
            {"model": str(zoo.specialists[0]), "parameters": {"weight": 0}},
        ],
        parameters={"lambda": 0.5, "head": "lora", **parameters},
    )


def load_model(folder):
    """Load a merged folder with transformers, asserting that every key matched."""
    from transformers import AutoModelForImageClassification

    model, info = AutoModelForImageClassification.from_pretrained(str(folder), output_loading_info=True)
    assert not info["missing_keys"], info
    assert not info["unexpected_keys"], info
    assert not info["mismatched_keys"], info
    return model


def state(folder) -> dict[str, torch.Tensor]:
    """Canonical (in-memory transformers 5) state dict of a merged folder."""
    return {k: v.detach().clone() for k, v in load_model(folder).state_dict().items()}


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


@pytest.fixture(scope="session")
def base_state(zoo):
    """θ0 under canonical names (the backbone has no head; its classifier is random and unused)."""
    from transformers import AutoModelForImageClassification

    model = AutoModelForImageClassification.from_pretrained(str(zoo.base), num_labels=2)
    return {k: v.detach().clone() for k, v in model.state_dict().items() if not k.startswith("classifier.")}


@pytest.fixture(scope="session")
def specialist_states(zoo):
    """The three specialists' tensors under canonical names."""
    return [state(p) for p in zoo.specialists]


@pytest.fixture(scope="session")
def r2m_out(zoo, tmp_path_factory):
    """The default R²M merge of the three full specialists, run once through the CLI."""
    from r2m_hf.cli import main

    work = tmp_path_factory.mktemp("r2m-out")
    config = write_yaml(work / "merge.yaml", recipe(zoo))
    assert main(["merge", str(config), str(work / "out"), "--no-progress"]) == 0
    return work / "out"


@pytest.fixture
def build_case(request, zoo, tmp_path):
    """``build_case(builder)``: ``builder(zoo, tmp_path, ...)`` with the fixtures it also asks for (``arch_zoo``,
    ``lora``), built only when asked for."""

    def build(builder):
        wanted = builder.__code__.co_varnames[2 : builder.__code__.co_argcount]
        return builder(zoo, tmp_path, **{name: request.getfixturevalue(name) for name in wanted})

    return build


def write_imagefolder(root: Path, count: int = 12) -> Path:
    """`count` images of 32×32 in test/{real,fake}/ (first half real; fakes are brighter) with a metadata.csv family
    column (fs or fr for fakes)."""
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(0)
    lines = ["file_name,family"]
    for i in range(count):
        label = "real" if i < count // 2 else "fake"
        family = "real" if i < count // 2 else ("fs" if i % 2 else "fr")
        (root / "test" / label).mkdir(parents=True, exist_ok=True)
        pixels = rng.integers(0, 120 if label == "real" else 255, (32, 32, 3), dtype=np.uint8)
        Image.fromarray(pixels).save(root / "test" / label / f"{i:02d}.png")
        lines.append(f"{label}/{i:02d}.png,{family}")
    (root / "test" / "metadata.csv").write_text("\n".join(lines) + "\n")
    return root


def assert_nothing_written(output: Path) -> None:
    """The output folder is absent and no temporary sibling was left behind."""
    output = Path(output)
    assert not output.exists(), f"{output} was created"
    leftovers = sorted(p.name for p in output.parent.glob(f".{output.name}.*"))
    assert not leftovers, f"leftover temporary folders: {leftovers}"


@pytest.fixture(scope="session", autouse=True)
def _r2m_cache(tmp_path_factory):
    """Layouts the tests cache go to a session folder, never to the user's ``~/.cache/r2m_hf``."""
    import os

    old = os.environ.get("R2M_HF_CACHE")
    os.environ["R2M_HF_CACHE"] = str(tmp_path_factory.mktemp("r2m_hf_cache"))
    yield
    if old is None:
        os.environ.pop("R2M_HF_CACHE", None)
    else:
        os.environ["R2M_HF_CACHE"] = old
