"""r2m_hf.checks: each check passes on a good input and raises its typed error on a bad one; the planner runs them
fail-fast (before any output exists)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from types import SimpleNamespace

import pytest
from safetensors.torch import load_file, save_file

from r2m_hf.checkpoint import Checkpoint
from r2m_hf.checks import (
    Finding,
    check_adapter_base,
    check_adapter_has_base,
    check_adapter_shapes,
    check_architectures,
    check_head,
    check_image_classification,
    check_labels,
    check_method_base,
    check_shares_base,
    choose_processor,
    read_model_config,
    require_model_config,
)
from r2m_hf.config import SourceSpec
from r2m_hf.errors import CheckpointError, ConfigError, LabelError
from r2m_hf.lora import LoraAdapter
from r2m_hf.planning import layout_for, plan_merge
from r2m_hf.sources import ResolvedSource
from r2m_hf.zoo import save_backbone, tiny_config
from tests.conftest import assert_nothing_written, write_yaml


def _local(path: Path) -> ResolvedSource:
    return ResolvedSource(spec=SourceSpec(str(path)), path=Path(path).resolve())


@pytest.fixture(scope="module")
def layout():
    return layout_for(tiny_config("vit"))


@pytest.fixture(scope="module")
def other_base(tmp_path_factory) -> Path:
    """A backbone of the same architecture and shapes, with other random weights."""
    return save_backbone(tmp_path_factory.mktemp("other") / "backbone", seed=7)


def test_model_configs(zoo, tmp_path: Path) -> None:
    assert read_model_config(tmp_path, "x") is None
    assert require_model_config(zoo.specialists[0], "fs").model_type == "vit"
    with pytest.raises(CheckpointError, match="fs: no config.json; a full specialist is a transformers model folder"):
        require_model_config(tmp_path, "fs")
    (tmp_path / "config.json").write_text('{"model_type": "no-such-architecture"}')
    with pytest.raises(CheckpointError, match=r"x \(.*config.json\): cannot be read by transformers"):
        read_model_config(tmp_path, "x")


def test_architectures() -> None:
    vit, dino = tiny_config("vit"), tiny_config("dinov2")
    assert check_architectures([("a", vit), ("b", tiny_config("vit"))], tiny_config("vit")) is vit
    assert check_architectures([], dino) is dino  # adapters only: the base decides
    with pytest.raises(CheckpointError, match="b: architecture dinov2 differs from vit; all specialists"):
        check_architectures([("a", vit), ("b", dino)], None)
    with pytest.raises(CheckpointError, match="base_model: architecture dinov2 differs from the specialists' vit"):
        check_architectures([("a", vit)], dino)
    with pytest.raises(ConfigError, match="base_model: no config.json, and no full specialist"):
        check_architectures([], None)


def test_image_classification() -> None:
    from transformers import BertConfig

    check_image_classification(tiny_config("siglip"))
    with pytest.raises(ConfigError, match="bert: transformers has no image-classification model"):
        check_image_classification(BertConfig())


def test_shares_base(zoo, layout, other_base) -> None:
    specialist = Checkpoint(zoo.specialists[0], layout, "fs")
    names = layout.backbone_names
    finding = check_shares_base(specialist, Checkpoint(zoo.base, layout, "base"), names, "fs")
    assert isinstance(finding, Finding) and finding.detail.startswith(f"0/{len(names)} compared tensors equal")
    with pytest.raises(CheckpointError, match=r"fs \(.*\): 0/\d+ compared .*: it was not fine-tuned from this base"):
        check_shares_base(specialist, Checkpoint(other_base, layout, "base"), names, "fs")


def test_adapter_shapes(zoo, lora, layout) -> None:
    adapter = LoraAdapter(lora.v5, layout, "l5")
    found = check_adapter_shapes(adapter, layout, "l5")
    assert found.detail == f"{len(adapter.targets)} LoRA pairs fit the base's matrices"
    name = next(iter(adapter.targets))
    shapes = {"A": (4, 48), "B": (32, 4)}  # a pair made for a 48-wide base
    stub = SimpleNamespace(
        targets={name: {"A": "A", "B": "B"}}, files=SimpleNamespace(shape=shapes.get), fan_in_fan_out=False,
        folder=Path("/adapters/wide"),
    )  # fmt: skip
    with pytest.raises(CheckpointError, match=rf"wide \(/adapters/wide\): LoRA pair of {name} gives a 32×48 delta"):
        check_adapter_shapes(stub, layout, "wide")


def _adapter_naming(tmp_path: Path, lora_folder: Path, base: str | None) -> ResolvedSource:
    folder = tmp_path / "adapter"
    shutil.copytree(lora_folder, folder)
    config = json.loads((folder / "adapter_config.json").read_text())
    config["base_model_name_or_path"] = base
    (folder / "adapter_config.json").write_text(json.dumps(config))
    return _local(folder)


def test_adapter_base(zoo, lora, layout, other_base, tmp_path: Path) -> None:
    base = _local(zoo.base)
    hub_base = ResolvedSource(spec=SourceSpec("org/backbone"), path=base.path, repo_id="org/backbone", commit="0" * 40)
    assert check_adapter_base(_local(lora.v5), base, "l5").detail == f"adapter_config.json names the base ({zoo.base})"
    assert check_adapter_base(_adapter_naming(tmp_path / "1", lora.v5, None), base, "l5").verified

    on_hub = _adapter_naming(tmp_path / "2", lora.v5, "org/backbone")
    assert check_adapter_base(on_hub, hub_base, "l5").detail == "adapter_config.json names the base (org/backbone)"
    unverifiable = check_adapter_base(on_hub, base, "l5")  # a Hub name against a local base: cannot tell
    assert not unverifiable.verified and "cannot verify" in unverifiable.detail
    with pytest.raises(CheckpointError, match="l5: adapter was trained on base 'org/other' but base_model is"):
        check_adapter_base(_adapter_naming(tmp_path / "3", lora.v5, "org/other"), hub_base, "l5")

    elsewhere = _adapter_naming(tmp_path / "4", lora.v5, str(other_base))
    assert not check_adapter_base(elsewhere, base, "l5").verified  # without a layout: a note, no weights read
    with pytest.raises(CheckpointError, match=r"l5: adapter was trained on base .*: \d+ of its backbone tensors"):
        check_adapter_base(elsewhere, base, "l5", layout=layout)
    copy = tmp_path / "copy-of-base"
    shutil.copytree(zoo.base, copy)
    same = _adapter_naming(tmp_path / "5", lora.v5, str(copy))
    assert check_adapter_base(same, base, "l5", layout=layout).detail.endswith("whose weights equal the given base's")


def test_labels() -> None:
    assert check_labels({"0": "FAKE", "1": "REAL"}, None, "fr") == 0
    assert check_labels({0: "cat", 1: "dog"}, "dog", "pets") == 1
    with pytest.raises(LabelError, match="pets: cannot tell which class is fake"):
        check_labels({0: "cat", 1: "dog"}, None, "pets")
    with pytest.raises(LabelError, match="pets: fake_label 'bird' matches none"):
        check_labels({0: "cat", 1: "dog"}, "bird", "pets")


def test_head() -> None:
    assert check_head((2, 32), (2, 32), "classifier.weight", "fs").detail == "2 classes over 32 features"
    with pytest.raises(CheckpointError, match=r"fs: no classifier \(classifier.weight\) in the checkpoint"):
        check_head(None, (2, 32), "classifier.weight", "fs")
    with pytest.raises(CheckpointError, match=r"l5: the adapter saved no classifier head; .*modules_to_save"):
        check_head(None, (2, 32), "classifier.weight", "l5", adapter=True)
    with pytest.raises(CheckpointError, match="fs: classifier has 3 classes; a specialist must be a binary"):
        check_head((3, 32), (2, 32), "classifier.weight", "fs")
    with pytest.raises(CheckpointError, match=r"tensor classifier.weight has shape \[2, 48\], expected \[2, 32\]"):
        check_head((2, 48), (2, 32), "classifier.weight", "fs")


def test_recipe_level_checks() -> None:
    check_method_base("average", False, False)
    check_method_base("r2m", True, True)
    with pytest.raises(ConfigError, match="merge_method 'r2m' needs a base_model"):
        check_method_base("r2m", True, False)
    check_adapter_has_base(True, "l5")
    with pytest.raises(ConfigError, match="l5: a LoRA adapter needs a base; set base_model or write base\\+adapter"):
        check_adapter_has_base(False, "l5")


def test_processor_choice(zoo, tmp_path: Path) -> None:
    assert choose_processor(_local(zoo.base), [_local(p) for p in zoo.specialists])[1].startswith("from base_model")
    bare = tmp_path / "bare"
    bare.mkdir()
    assert choose_processor(_local(bare), [_local(bare)]) == (
        None,
        "none found (base and specialists have no preprocessor_config.json)",
    )
    odd = tmp_path / "odd"
    shutil.copytree(zoo.specialists[1], odd)
    processor = json.loads((odd / "preprocessor_config.json").read_text())
    (odd / "preprocessor_config.json").write_text(json.dumps({**processor, "do_normalize": False}))
    folder, note = choose_processor(_local(bare), [_local(zoo.specialists[0]), _local(odd)])
    assert folder == zoo.specialists[0].resolve() and f"specialists disagree: {odd.resolve()}" in note


# ------------------------------------------------------------------------------------- the planner runs them first
def _recipe(zoo, tmp_path: Path, odd: Path) -> Path:
    models = [{"model": str(p)} for p in zoo.specialists[:2]] + [{"model": str(odd), "name": "odd"}]
    return write_yaml(tmp_path / "m.yaml", {"merge_method": "r2m", "base_model": str(zoo.base), "models": models})


def test_planner_refuses_a_three_class_head_before_writing(zoo, tmp_path: Path) -> None:
    from transformers import AutoModelForImageClassification

    three = {0: "real", 1: "fake", 2: "other"}
    AutoModelForImageClassification.from_pretrained(
        str(zoo.base), num_labels=3, id2label=three, label2id={v: k for k, v in three.items()}
    ).save_pretrained(tmp_path / "three")
    with pytest.raises(CheckpointError, match=r"models\[2\] \(odd\) \(.*three\): classifier has 3 classes"):
        plan_merge(_recipe(zoo, tmp_path, tmp_path / "three"))


def test_planner_refuses_an_adapter_without_a_head(zoo, lora, tmp_path: Path) -> None:
    from r2m_hf.merge import merge

    headless = tmp_path / "headless"
    shutil.copytree(lora.v5, headless)
    weights = load_file(headless / "adapter_model.safetensors")
    save_file({k: v for k, v in weights.items() if "classifier" not in k}, headless / "adapter_model.safetensors")
    out = tmp_path / "out"
    with pytest.raises(CheckpointError, match=r"models\[2\] \(odd\) .*: the adapter saved no classifier head"):
        merge(_recipe(zoo, tmp_path, headless), out, progress=False)
    assert_nothing_written(out)


def test_layout_of_an_unbuildable_config_is_one_error():
    """A config that passes the range checks but no model can be built from (an unknown activation)."""
    config = tiny_config(num_hidden_layers=1, hidden_act="no-such-activation")
    with pytest.raises(CheckpointError, match="does not describe a buildable model"):
        layout_for(config)


@pytest.mark.parametrize("declared", ["/home/alice/secret-model", "./model", "~/model", "EXISTING"])
def test_a_downloaded_adapter_cannot_choose_a_local_base(declared, tmp_path):
    import json

    from r2m_hf.config import SourceSpec
    from r2m_hf.errors import ConfigError
    from r2m_hf.planning import adapter_base_spec
    from r2m_hf.sources import ResolvedSource

    if declared == "EXISTING":
        declared = str(tmp_path)
    adapter = tmp_path / "snapshot"
    adapter.mkdir()
    (adapter / "adapter_config.json").write_text(json.dumps({"base_model_name_or_path": declared}))
    hub = ResolvedSource(spec=SourceSpec("org/adapter"), path=adapter, repo_id="org/adapter", commit="0" * 40)
    with pytest.raises(ConfigError, match="cannot choose a local folder"):
        adapter_base_spec(hub, "models[0] (a)")
    local = ResolvedSource(spec=SourceSpec(str(adapter)), path=adapter)
    assert adapter_base_spec(local, "models[0] (a)").reference == declared
