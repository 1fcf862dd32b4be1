"""Search spaces: the ``tune:`` section narrows, widens, fixes and drops a method's declared ranges, and every
endpoint is checked against the method's parameter model (no model is read here)."""

from __future__ import annotations

import optuna
import pytest
import yaml

from r2m_hf.config import parse_config
from r2m_hf.errors import ConfigError
from r2m_hf.methods.base import Tunable
from r2m_hf.methods.registry import get_method
from r2m_hf.tuning.space import MethodSpace, TuneSection, method_spaces, read_recipe

RECIPE = {"merge_method": "ties", "base_model": "base", "models": [{"model": "a"}, {"model": "b"}]}


def spaces(tune: dict, methods=None, *, has_base=True, **recipe):
    config = parse_config({**RECIPE, **recipe})
    return method_spaces(config, TuneSection(**tune), methods, has_base=has_base)


def test_declared_space_by_default_and_the_recipe_parameters_fixed_for_its_own_method():
    found = spaces({}, ["ties", "cart"], parameters={"merge": "sum", "head": "a"})
    assert list(found) == ["ties", "cart"]
    assert found["ties"].searched == get_method("ties").search_space
    assert found["ties"].fixed == {"merge": "sum"}  # the head policy is the recipe's, not a method parameter
    assert found["cart"].fixed == {}  # the recipe's parameters belong to ties only


def test_narrow_widen_fix_drop_and_choices():
    found = spaces(
        {
            "space": {
                "cart": {"rank_ratio": {"high": 0.2}, "lambda": None, "svd": ["exact", "randomized"]},
                "ties": {"density": 0.5, "trim": None, "lambda": {"low": 0.1, "high": 5.0}},
            }
        },
        ["cart", "ties"],
    )
    declared = get_method("cart").search_space["rank_ratio"]
    assert found["cart"].searched == {
        "rank_ratio": Tunable(declared.low, 0.2, log=declared.log),  # narrowed, still on a log scale
        "svd": Tunable(choices=("exact", "randomized")),  # a list: a categorical parameter
    }
    assert found["ties"].searched == {"lambda": Tunable(0.1, 5.0)}
    assert found["ties"].fixed == {"density": 0.5}


def test_sampled_points_stay_in_range_and_keep_their_types():
    space = spaces(
        {"space": {"r2m": {"real_rank": {"low": 1, "high": 2, "integer": True}, "alpha": {"low": 0.1, "high": 4}}}},
        ["r2m"],
    )["r2m"]
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    for _ in range(20):
        point = space.suggest(study.ask())
        assert isinstance(point["real_rank"], int) and 1 <= point["real_rank"] <= 2
        assert 0.1 <= point["alpha"] <= 4
        get_method("r2m").parameters_model(**point)  # every sampled point is a valid parameter set


@pytest.mark.parametrize(
    ("tune", "methods", "fragment"),
    [
        ({"space": {"ties": {"density": {"low": 0.0, "high": 1.0}}}}, None, "low 0.0 is outside what ties accepts"),
        ({"space": {"ties": {"density": {"low": 0.9, "high": 0.1}}}}, None, "needs low ≤ high"),
        ({"space": {"ties": {"density": {"lo": 0.1}}}}, None, "unknown key(s) lo"),
        ({"space": {"ties": {"density": 2.0}}}, None, "ties's fixed parameters"),
        ({"space": {"r2m": {"real_rank": {"low": 1, "high": 2.5, "integer": True}}}}, ["r2m"], "whole-number ends"),
        ({}, ["no_such_method"], "unknown method 'no_such_method'"),
        # the method's own checks against the recipe run too: R²M's k ≤ N with N = 2 specialists here
        ({"space": {"r2m": {"real_rank": {"low": 1, "high": 3, "integer": True}}}}, ["r2m"], "exceeds the number"),
    ],
)
def test_bad_ranges(tune, methods, fragment):
    with pytest.raises(ConfigError) as exc:
        spaces(tune, methods)
    assert fragment in str(exc.value) and "\n" not in str(exc.value)


def test_a_method_that_needs_a_base():
    with pytest.raises(ConfigError, match="'ties' needs a base_model"):
        spaces({}, ["ties"], has_base=False)


def test_read_recipe_takes_the_tune_section_out(tmp_path):
    path = tmp_path / "r.yaml"
    path.write_text(yaml.safe_dump({**RECIPE, "tune": {"methods": ["ties", "cart"], "trials": 12, "metric": "ap"}}))
    config, section, where = read_recipe(path)
    assert config.merge_method == "ties" and where == path
    assert section == TuneSection(methods=["ties", "cart"], trials=12, metric="ap")
    path.write_text(yaml.safe_dump({**RECIPE, "tune": {"metrics": "ap"}}))
    with pytest.raises(ConfigError, match=r"tune\.metrics: unknown key"):
        read_recipe(path)
    path.write_text(yaml.safe_dump({**RECIPE, "tune": {"metric": "f1"}}))
    with pytest.raises(ConfigError, match=r"tune\.metric: 'f1' is not allowed"):
        read_recipe(path)


def test_the_tune_section_is_part_of_the_recipe_and_read_with_the_hardened_loader(tmp_path):
    config = parse_config({**RECIPE, "tune": {"methods": ["ties"], "trials": 4}})
    assert config.tune == {"methods": ["ties"], "trials": 4}  # accepted (and ignored) by merge
    assert read_recipe(config)[1] == TuneSection(methods=["ties"], trials=4)
    with pytest.raises(ConfigError, match=r"^recipe: tune\.trials"):
        read_recipe(parse_config({**RECIPE, "tune": {"trials": 0}}))
    path = tmp_path / "bomb.yaml"
    path.write_text("a: &a [x, x, x, x, x, x, x, x, x, x]\n" + "".join(
        f"{c}: &{c} [*{p}, *{p}, *{p}, *{p}, *{p}, *{p}, *{p}, *{p}, *{p}, *{p}]\n" for p, c in zip("abcde", "bcdef")
    ))  # fmt: skip
    with pytest.raises(ConfigError, match="expands to more than"):
        read_recipe(path)


def test_describe_is_json_ready():
    space = MethodSpace("cart", {"rank_ratio": Tunable(0.01, 0.5, log=True)}, {"svd": "exact"}, {"rank_ratio": 0.1})
    assert space.describe() == {
        "searched": {"rank_ratio": {"low": 0.01, "high": 0.5, "log": True}},
        "fixed": {"svd": "exact"},
        "start": {"rank_ratio": 0.1},
    }


def test_storage_passwords_are_redacted_in_reports():
    from r2m_hf.tuning.storage import redact_url

    assert redact_url("postgresql://bob:s3cret@db:5432/x") == "postgresql://bob:***@db:5432/x"
    assert redact_url("sqlite:////tmp/tune.db") == "sqlite:////tmp/tune.db"
    assert "s3cret" not in redact_url("mysql+pymysql://u:s3cret@h/db")
