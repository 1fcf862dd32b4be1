"""`r2m-hf check-specialist` and `r2m-hf add`: can a community specialist join a merge?"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from r2m_hf.config import load_config
from r2m_hf.contrib import check_specialist
from tests.conftest import write_yaml


def _lines(out: str) -> dict[str, str]:
    """check name → its line."""
    return {line[2:].split(":", 1)[0]: line for line in out.splitlines() if line[:1] in "✓✗·"}


@pytest.fixture(scope="module")
def odd(zoo, tmp_path_factory):
    """Specialists that must fail: another width, unresolvable labels, a 3-class head, an adapter of another base."""
    from transformers import AutoModelForImageClassification

    from r2m_hf.zoo import save_backbone, save_lora_specialist, tiny_config

    root = tmp_path_factory.mktemp("odd")
    AutoModelForImageClassification.from_config(tiny_config("vit", intermediate_size=48)).save_pretrained(root / "wide")
    shutil.copytree(zoo.specialists[0], root / "labels")
    config = json.loads((root / "labels" / "config.json").read_text())
    config["id2label"], config["label2id"] = {"0": "LABEL_0", "1": "LABEL_1"}, {"LABEL_0": 0, "LABEL_1": 1}
    (root / "labels" / "config.json").write_text(json.dumps(config))
    three = {0: "real", 1: "fake", 2: "other"}
    AutoModelForImageClassification.from_pretrained(
        str(zoo.base), num_labels=3, id2label=three, label2id={v: k for k, v in three.items()}
    ).save_pretrained(root / "three")
    other_base = save_backbone(root / "other-base", seed=7)
    save_lora_specialist(root / "lora-other", other_base, seed=3, legacy_names=True)
    return root


def test_good_full_specialist_passes(cli, zoo) -> None:
    result = cli("check-specialist", zoo.specialists[1], "--base", zoo.base)
    assert result.code == 0, result.out + result.err
    lines = _lines(result.out)
    assert set(lines) == {"source", "architecture", "shapes", "base", "labels", "head"}
    assert all(line.startswith("✓") for line in lines.values())
    assert "fake = index 0 ('FAKE')" in lines["labels"]
    assert "can join a merge" in result.out


def test_good_legacy_lora_adapter_passes(cli, zoo, lora) -> None:
    result = cli("check-specialist", lora.legacy, "--base", zoo.base)
    assert result.code == 0, result.out + result.err
    lines = _lines(result.out)
    assert "legacy transformers 4 names" in lines["adapter targets"] and "q_proj" in lines["adapter targets"]
    assert lines["base"].startswith("✓ base: adapter_config.json names the base")
    current = _lines(cli("check-specialist", lora.v5, "--base", zoo.base).out)["adapter targets"]
    assert current.startswith("✓ adapter targets: current transformers 5 names")


def test_shape_mismatch_fails(cli, zoo, odd) -> None:
    result = cli("check-specialist", odd / "wide", "--base", zoo.base)
    assert result.code == 2
    line = _lines(result.out)["shapes"]
    assert line.startswith("✗ shapes:") and "has shape [48, 32], expected [64, 32]" in line and "— fix:" in line


def test_unresolvable_label_fails_and_fake_label_fixes_it(cli, zoo, odd) -> None:
    result = cli("check-specialist", odd / "labels", "--base", zoo.base)
    assert result.code == 2
    line = _lines(result.out)["labels"]
    assert line.startswith("✗ labels:") and "cannot tell which class is fake" in line and "fake_label" in line
    fixed = cli("check-specialist", odd / "labels", "--base", zoo.base, "--fake-label", "LABEL_1")
    assert fixed.code == 0 and "fake = index 1 ('LABEL_1') from fake_label 'LABEL_1'" in fixed.out


def test_three_class_head_fails(cli, zoo, odd) -> None:
    result = cli("check-specialist", odd / "three", "--base", zoo.base)
    assert result.code == 2
    assert "classifier has 3 classes; a specialist must be a binary real/fake classifier" in _lines(result.out)["head"]
    assert _lines(result.out)["head"].startswith("✗")


def test_adapter_for_another_base_fails(cli, zoo, odd) -> None:
    result = cli("check-specialist", odd / "lora-other", "--base", zoo.base)
    assert result.code == 2
    line = _lines(result.out)["base"]
    assert line.startswith("✗ base: adapter was trained on base") and "differ from the given base" in line
    assert "--base" in line.split("— fix:")[1]
    assert check_specialist(str(odd / "lora-other"), str(odd / "other-base")).ok


def test_unrelated_full_model_is_flagged(zoo, odd) -> None:
    report = check_specialist(str(zoo.specialists[0]), str(odd / "other-base"))
    base = next(c for c in report.checks if c.name == "base")
    assert base.ok is False and "it was not fine-tuned from this base" in base.detail


def test_missing_specialist_is_one_failed_check(cli, zoo, tmp_path) -> None:
    result = cli("check-specialist", tmp_path / "absent", "--base", zoo.base)
    assert result.code == 2 and _lines(result.out)["source"].startswith("✗ source:")


RECIPE = """# recipe for the tiny zoo
merge_method: r2m   # the paper's method
base_model: {base}
models:
  # the two first specialists
  - model: {fs}
    name: fs
  - model: {fr}
    name: fr
parameters:
  alpha: 0.6  # keep
"""


def test_add_appends_and_keeps_comments(cli, zoo, lora, tmp_path: Path) -> None:
    config = write_yaml(tmp_path / "m.yaml", RECIPE.format(base=zoo.base, fs=zoo.specialists[0], fr=zoo.specialists[1]))
    before = config.read_text()

    result = cli("add", config, lora.legacy, "--name", "legacy", "--fake-label", "fake")
    assert result.code == 0, result.out + result.err
    assert "added legacy to" in result.out
    text = config.read_text()
    assert text.startswith(before.split("parameters:")[0])  # everything up to the end of models: is unchanged
    assert "# the paper's method" in text and "alpha: 0.6  # keep" in text
    recipe = load_config(config)
    assert recipe.names() == ["fs", "fr", "legacy"]
    assert recipe.models[-1].model == str(lora.legacy) and recipe.models[-1].fake_label == "fake"
    assert recipe.parameters == {"alpha": 0.6}

    again = cli("add", config, zoo.specialists[2])
    assert again.code == 0 and load_config(config).names() == ["fs", "fr", "legacy", "efs"]


def test_add_refuses_a_failing_specialist_and_a_duplicate_name(cli, zoo, odd, tmp_path: Path) -> None:
    config = write_yaml(tmp_path / "m.yaml", RECIPE.format(base=zoo.base, fs=zoo.specialists[0], fr=zoo.specialists[1]))
    before = config.read_text()

    refused = cli("add", config, odd / "three")
    assert refused.code == 2 and "✗ head" in refused.out and "is unchanged" in refused.err
    duplicate = cli("add", config, zoo.specialists[2], "--name", "fs")
    assert duplicate.code == 2 and "already in the recipe" in duplicate.err and "\n" not in duplicate.err.strip()
    assert config.read_text() == before


def test_add_relative_paths_are_written_relative_to_the_yaml(cli, zoo, tmp_path: Path) -> None:
    shutil.copytree(zoo.base, tmp_path / "models" / "base")
    shutil.copytree(zoo.specialists[0], tmp_path / "models" / "fs")
    shutil.copytree(zoo.specialists[1], tmp_path / "models" / "fr")
    shutil.copytree(zoo.specialists[2], tmp_path / "models" / "efs")
    config = write_yaml(tmp_path / "m.yaml", RECIPE.format(base="models/base", fs="models/fs", fr="models/fr"))

    result = cli("add", config, tmp_path / "models" / "efs")
    assert result.code == 0, result.out + result.err
    assert load_config(config).models[-1].model == "models/efs"
