"""Every recipe in ``merge_configs/`` parses, validates, and names parameters its method accepts.

The sources in the YAMLs are placeholders (``your-org/...``), so this checks the schema and the method's parameters,
not the models. Every built-in method has its example recipe (a new method = one file + one YAML).
"""

from __future__ import annotations

from pathlib import Path

import pytest

from r2m_hf.config import load_config, method_parameters
from r2m_hf.engine import build_method
from r2m_hf.methods.registry import builtin_methods

CONFIGS = sorted((Path(__file__).resolve().parents[1] / "merge_configs").glob("*.yaml"))


def test_there_are_recipes():
    assert len(CONFIGS) >= len(builtin_methods())


@pytest.mark.parametrize("path", CONFIGS, ids=[p.name for p in CONFIGS])
def test_recipe_validates(path):
    config = load_config(path)
    names = [m.display_name() for m in config.models]
    assert len(set(names)) == len(names), "specialist names must be unique"
    method = build_method(config.merge_method, method_parameters(config), names, [m.weight for m in config.models])
    # every key the recipe sets is one the method reads (nothing silently ignored), with the value written
    given = method_parameters(config)
    dumped = method.parameters.model_dump(by_alias=True)
    assert {k: dumped[k] for k in given} == given
    assert config.parameters.get("head", "mean") in ("mean", *names)


def test_every_builtin_method_has_its_recipe():
    stems = {p.stem for p in CONFIGS}
    assert set(builtin_methods()) <= stems
    for name in builtin_methods():
        assert load_config(Path(CONFIGS[0].parent / f"{name}.yaml")).merge_method == name


def test_the_r2m_recipe_shows_every_option_at_its_default():
    config = load_config(CONFIGS[0].parent / "r2m.yaml")
    given = method_parameters(config)
    defaults = builtin_methods()["r2m"].parameters_model().model_dump(by_alias=True)
    assert set(given) | {"residual_energy"} == set(defaults)  # residual_energy is shown commented out
    assert given == {k: defaults[k] for k in given}
