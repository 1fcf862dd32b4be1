"""The merge YAML (r2m_hf/config.py): what it accepts, and every malformed recipe as one ``ConfigError`` naming the
file and the key, through the API and through ``r2m-hf merge``."""

from __future__ import annotations

import re

import pytest
from bad_input import Case, case_ids, check_api_error, check_cli_error, recipe
from conftest import write_yaml

from r2m_hf.config import MergeConfig, SourceSpec, head_choice, load_config, method_parameters, parse_config
from r2m_hf.errors import ConfigError


def yaml_syntax(zoo, tmp_path):
    path = write_yaml(
        tmp_path / "bad.yaml",
        "merge_method: r2m\nbase_model: x\nmodels: [{model: a}, {model: b}\nparameters: {alpha: 0.5}\n",
    )
    return Case(path, ConfigError, ["YAML syntax error"], pattern=re.escape(f"{path}:4:") + r"\d+: YAML syntax error")


def unknown_method(zoo, tmp_path):
    path = write_yaml(tmp_path / "m.yaml", recipe(zoo, method="r3m"))
    return Case(path, ConfigError, [str(path), "unknown method 'r3m'", "known methods", "r2m", "task_arithmetic"])


def unknown_top_level_key(zoo, tmp_path):
    path = write_yaml(tmp_path / "m.yaml", recipe(zoo, merge_methods="r2m"))
    return Case(path, ConfigError, [str(path), "merge_methods: unknown key"])


def unknown_parameter_key(zoo, tmp_path):
    path = write_yaml(tmp_path / "m.yaml", recipe(zoo, parameters={"alpah": 0.5}))
    return Case(path, ConfigError, [str(path), "parameters.alpah: unknown key"])


def unknown_model_parameter_key(zoo, tmp_path):
    models = [{"model": str(zoo.specialists[0]), "parameters": {"wieght": 1}}, {"model": str(zoo.specialists[1])}]
    path = write_yaml(tmp_path / "m.yaml", recipe(zoo, models=models))
    return Case(path, ConfigError, [str(path), "models.0.parameters", "wieght"])


def alpha_negative(zoo, tmp_path):
    path = write_yaml(tmp_path / "m.yaml", recipe(zoo, parameters={"alpha": -1}))
    return Case(path, ConfigError, [str(path), "parameters.alpha", "-1"])


def eta_not_allowed(zoo, tmp_path):
    path = write_yaml(tmp_path / "m.yaml", recipe(zoo, parameters={"eta": "foo"}))
    return Case(path, ConfigError, [str(path), "parameters.eta", "'foo' is not allowed", "relative"])


def lambda_not_a_number(zoo, tmp_path):
    path = write_yaml(tmp_path / "m.yaml", recipe(zoo, method="task_arithmetic", parameters={"lambda": "big"}))
    return Case(path, ConfigError, [str(path), "parameters.lambda"])


def one_specialist(zoo, tmp_path):
    path = write_yaml(tmp_path / "m.yaml", recipe(zoo, models=[{"model": str(zoo.specialists[0])}]))
    return Case(path, ConfigError, [str(path), "models", "at least 2 specialists, got 1"])


def duplicate_names(zoo, tmp_path):
    models = [{"model": str(zoo.specialists[0]), "name": "x"}, {"model": str(zoo.specialists[1]), "name": "x"}]
    path = write_yaml(tmp_path / "m.yaml", recipe(zoo, models=models))
    return Case(path, ConfigError, [str(path), "models[1] and models[0]", "'x'"])


def same_folder_twice(zoo, tmp_path):
    models = [{"model": str(zoo.specialists[0])}, {"model": str(zoo.specialists[0])}]
    path = write_yaml(tmp_path / "m.yaml", recipe(zoo, models=models))
    return Case(path, ConfigError, [str(path), "both named 'fs'"])


def head_unknown_specialist(zoo, tmp_path):
    path = write_yaml(tmp_path / "m.yaml", recipe(zoo, parameters={"head": "nobody"}))
    return Case(path, ConfigError, [str(path), "parameters.head", "'nobody'"])


def missing_config_file(zoo, tmp_path):
    return Case(tmp_path / "absent.yaml", ConfigError, [str(tmp_path / "absent.yaml"), "no such config file"])


CASES = [
    yaml_syntax,
    unknown_method,
    unknown_top_level_key,
    unknown_parameter_key,
    unknown_model_parameter_key,
    alpha_negative,
    eta_not_allowed,
    lambda_not_a_number,
    one_specialist,
    duplicate_names,
    same_folder_twice,
    head_unknown_specialist,
    missing_config_file,
]


@pytest.mark.parametrize("builder", CASES, ids=case_ids(CASES))
def test_bad_recipe_is_one_error_line_and_nothing_is_written(build_case, builder, tmp_path, cli, monkeypatch):
    check_cli_error(build_case(builder), tmp_path / "merged", cli, monkeypatch)


@pytest.mark.parametrize("builder", CASES, ids=case_ids(CASES))
def test_bad_recipe_raises_config_error(build_case, builder, tmp_path):
    check_api_error(build_case(builder), tmp_path / "merged")


# --------------------------------------------------------------------------------------------------------------------
# What a valid recipe becomes.


def test_load_config_validates_and_keeps_every_field(tmp_path):
    path = write_yaml(
        tmp_path / "m.yaml",
        {
            "merge_method": "task_arithmetic",
            "base_model": "org/backbone@v1",
            "models": [
                {"model": "org/fs", "name": "fs", "fake_label": "FAKE", "parameters": {"weight": 2.0}},
                {"model": "org/backbone+org/lora@abc"},
            ],
            "parameters": {"lambda": 0.5, "head": "fs"},
            "dtype": "float64",
            "out_dtype": "bfloat16",
            "evaluation": {"dataset": "data/test", "batch_size": 4},
        },
    )
    config = load_config(path)
    assert isinstance(config, MergeConfig)
    assert config.names() == ["fs", "lora"]
    assert [m.weight for m in config.models] == [2.0, 1.0]
    assert config.models[1].sources() == (SourceSpec("org/backbone"), SourceSpec("org/lora", "abc"))
    assert head_choice(config) == "fs" and method_parameters(config) == {"lambda": 0.5}
    assert (config.dtype, config.out_dtype) == ("float64", "bfloat16")
    assert config.evaluation.dataset == "data/test" and config.evaluation.split == "test"
    assert config.evaluation.batch_size == 4


def test_defaults_of_a_minimal_recipe():
    config = parse_config({"merge_method": "average", "models": [{"model": "a"}, {"model": "b"}]})
    assert config.base_model is None and config.evaluation is None
    assert (config.dtype, config.out_dtype) == ("float32", None)
    assert head_choice(config) == "mean" and method_parameters(config) == {}


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("org/model", SourceSpec("org/model")),
        ("org/model@v1.0", SourceSpec("org/model", "v1.0")),
        ("  ./folder  ", SourceSpec("./folder")),
    ],
)
def test_source_spec_parses_repo_and_revision(text, expected):
    spec = SourceSpec.parse(text)
    assert spec == expected
    assert str(spec) == text.strip()


@pytest.mark.parametrize("text", ["", "org/model@", "@v1"])
def test_source_spec_rejects_malformed_references(text):
    with pytest.raises(ValueError):
        SourceSpec.parse(text)


def test_a_folder_whose_name_holds_at_is_a_folder_not_a_revision(tmp_path, monkeypatch):
    (tmp_path / "model@v2").mkdir()
    monkeypatch.chdir(tmp_path)
    assert SourceSpec.parse("model@v2") == SourceSpec("model@v2")


def test_method_needing_a_base_without_one():
    with pytest.raises(ConfigError, match="base_model: merge_method 'task_arithmetic' needs a base_model"):
        parse_config({"merge_method": "task_arithmetic", "models": [{"model": "a"}, {"model": "b"}]}, where="w.yaml")


def test_config_error_is_also_a_value_error(tmp_path):
    with pytest.raises(ValueError, match="no such config file"):
        load_config(tmp_path / "absent.yaml")


def test_negative_weight_and_non_mapping_are_refused():
    with pytest.raises(ConfigError, match=r"models\.0\.parameters: weight must be ≥ 0"):
        parse_config(
            {"merge_method": "average", "models": [{"model": "a", "parameters": {"weight": -1}}, {"model": "b"}]}
        )
    with pytest.raises(ConfigError, match="expected a mapping"):
        parse_config(["merge_method", "average"], where="w.yaml")


# --------------------------------------------------------------------------------------------------------------------
# Numbers must be finite and in range; names are restricted (issue 10).


def _two(**first) -> dict:
    return {"merge_method": "task_arithmetic", "base_model": "b", "models": [{"model": "a", **first}, {"model": "c"}]}


@pytest.mark.parametrize("value", [float("nan"), float("inf"), float("-inf")])
def test_a_non_finite_weight_is_refused(value):
    with pytest.raises(ConfigError, match=r"models\.0\.parameters: weight must be a finite number"):
        parse_config(_two(parameters={"weight": value}))


def test_nan_weight_from_yaml_is_one_config_error(tmp_path, cli):
    path = tmp_path / "m.yaml"
    path.write_text(
        "merge_method: task_arithmetic\nbase_model: b\nmodels:\n  - {model: a, parameters: {weight: .nan}}\n"
        "  - {model: c}\n"
    )
    result = cli("merge", path, tmp_path / "out", "--no-progress")
    assert result.code == 2 and "weight must be a finite number" in result.err
    assert len(result.err.strip().splitlines()) == 1


def test_all_zero_weights_name_the_key():
    data = _two(parameters={"weight": 0})
    data["models"][1]["parameters"] = {"weight": 0.0}
    with pytest.raises(ConfigError, match=r"w\.yaml: models\[\*\]\.parameters\.weight: the weights sum to 0"):
        parse_config(data, where="w.yaml")


@pytest.mark.parametrize(
    ("parameters", "key"),
    [
        ({"lambda": float("inf")}, "lambda"),
        ({"lambda": float("nan")}, "lambda"),
        ({"nested": {"deep": [1.0, float("-inf")]}}, r"nested\.deep\[1\]"),
    ],
)
def test_non_finite_method_parameters_are_refused_by_key(parameters, key):
    with pytest.raises(ConfigError, match=rf"parameters: .*{key}: .* is not a finite number"):
        parse_config({**_two(), "parameters": parameters}, where="w.yaml")


def test_lambda_inf_from_yaml_is_refused(tmp_path):
    path = tmp_path / "m.yaml"
    path.write_text(
        "merge_method: task_arithmetic\nbase_model: b\nmodels: [{model: a}, {model: c}]\nparameters: {lambda: .inf}\n"
    )
    with pytest.raises(ConfigError, match=r"lambda: inf is not a finite number"):
        load_config(path)


@pytest.mark.parametrize(
    "name",
    ["a\nb", "---", "x</td><script>alert(1)</script>", "[link](http://evil)", "a: b", "&anchor", "`code`", "", "-x"],
)
def test_hostile_names_are_refused(name):
    with pytest.raises(ConfigError, match=r"models\.0\.name: a name is 1-64 letters"):
        parse_config(_two(name=name))


def test_names_taken_from_folders_are_brought_to_the_allowed_characters():
    config = parse_config({"merge_method": "average", "models": [{"model": "x/a b<i>"}, {"model": "./c\nd"}]})
    assert config.names() == ["a-b-i", "c-d"]


def test_a_mapping_with_non_string_keys_is_one_config_error():
    with pytest.raises(ConfigError, match="w.yaml"):
        parse_config({1: "x", "merge_method": "average", "models": [{"model": "a"}, {"model": "b"}]}, where="w.yaml")


@pytest.mark.parametrize("model", ["a\0b", "x" * 5000, "a" * 300 + "@" + "b", "/" + "d" * 5000])
def test_references_no_path_can_be_are_one_short_error(model, tmp_path):
    from r2m_hf.errors import R2MError
    from r2m_hf.planning import plan_merge

    data = {"merge_method": "average", "models": [{"model": model}, {"model": "b"}]}
    with pytest.raises(R2MError) as info:
        plan_merge(parse_config(data, where="w.yaml"), config_path=tmp_path / "w.yaml")
    assert len(str(info.value)) < 600 and "\n" not in str(info.value)


def test_a_method_name_outside_the_allowed_characters():
    with pytest.raises(ConfigError, match="merge_method: a method name is"):
        parse_config({"merge_method": "r2m\n# injected", "models": [{"model": "a"}, {"model": "b"}]})


# --------------------------------------------------------------------------------------------------------------------
# DeepfakeBench checkpoints (``dfb:``) and the tuner's ``tune:`` section.


def _dfb(**entry) -> dict:
    first = {"model": "dfb:ckpt/fs.pth", "backbone": "openai/clip-vit-large-patch14", **entry}
    return {"merge_method": "r2m", "models": [first, {"model": "dfb:ckpt/fr.pth", "backbone": "clip"}]}


def test_dfb_entries_bring_their_base_and_are_kept_whole():
    config = parse_config(_dfb(variant="effort", name="fs"))  # r2m needs a base: the backbone is it
    first = config.models[0]
    assert first.is_dfb and first.variant == "effort" and config.models[1].variant is None  # clip, unless said
    assert "variant" not in config.model_dump(exclude_none=True)["models"][1]  # a dumped recipe gains no key
    assert first.sources() == (None, SourceSpec("dfb:ckpt/fs.pth"))
    assert config.names() == ["fs", "fr.pth"]


@pytest.mark.parametrize(
    ("data", "fragment"),
    [
        (_dfb(backbone=None), r"models\.0: .*a dfb: model needs `backbone:`"),
        (_dfb(variant="xception"), r"models\.0\.variant: .*'clip' or 'effort'"),
        (_dfb(model="dfb:"), r"models\[0\]\.model: dfb: needs a checkpoint file"),
        (_dfb(backbone="org/clip@"), r"models\[0\]\.backbone: .*expected repo_id@revision"),
        (
            {"merge_method": "average", "models": [{"model": "a", "backbone": "b"}, {"model": "c"}]},
            r"models\.0: .*`backbone:` and `variant:` apply to dfb: models",
        ),
    ],
)
def test_malformed_dfb_entries_are_one_config_error(data, fragment):
    with pytest.raises(ConfigError, match=fragment) as info:
        parse_config(data, where="w.yaml")
    assert "\n" not in str(info.value)


@pytest.mark.parametrize("model", ["dfb:a\0b.pth", "dfb:" + "x" * 4000, "dfb:../../etc/passwd", "dfb:/no/such.pth"])
def test_dfb_references_no_file_can_be_are_one_short_error(model, tmp_path, monkeypatch):
    from r2m_hf.errors import R2MError
    from r2m_hf.planning import plan_merge

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    base = tmp_path / "clip"
    base.mkdir()
    data = {"merge_method": "average", "models": [{"model": model, "backbone": str(base)}, {"model": "b"}]}
    with pytest.raises(R2MError) as info:
        plan_merge(parse_config(data, where="w.yaml"), config_path=tmp_path / "w.yaml")
    assert len(str(info.value)) < 600 and "\n" not in str(info.value)


def test_a_tune_section_is_accepted_and_ignored_by_merge(zoo, tmp_path, cli):
    data = recipe(zoo, tune={"methods": ["r2m", "ties"], "trials": 4, "space": {"r2m": {"alpha": [0.5, 1.0]}}})
    config = load_config(write_yaml(tmp_path / "tuned.yaml", data))
    assert config.tune == {"methods": ["r2m", "ties"], "trials": 4, "space": {"r2m": {"alpha": [0.5, 1.0]}}}
    result = cli("merge", tmp_path / "tuned.yaml", tmp_path / "out", "--no-progress")
    assert result.code == 0, result.err
    with pytest.raises(ConfigError, match="tune: Input should be a valid dictionary"):
        parse_config({"merge_method": "average", "models": [{"model": "a"}, {"model": "b"}], "tune": [1]})
