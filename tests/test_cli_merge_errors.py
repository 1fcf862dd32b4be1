"""``r2m-hf merge`` on specialists that cannot join: another architecture or shape, not fine-tuned from the base,
damaged or pickle-only weights, NaN/Inf tensors, labels that do not say which class is fake, an adapter that matches
nothing. Each is one ``r2m-hf: error:`` line naming the file, tensor or label at fault, and nothing is written."""

from __future__ import annotations

import json
import shutil

import pytest
import torch
import yaml
from bad_input import (
    Case,
    case_ids,
    check_api_error,
    check_cli_error,
    copy_specialist,
    pickle_specialist,
    recipe,
    relabelled_specialist,
    with_one,
)
from conftest import write_yaml
from safetensors.torch import load_file, save_file

from r2m_hf.errors import CheckpointError, LabelError

NAN_KEY = "vit.encoder.layer.1.attention.attention.value.weight"


def architecture_mismatch(zoo, tmp_path, arch_zoo):
    dinov2 = arch_zoo("dinov2")
    models = [{"model": str(p), "name": f"d{i}"} for i, p in enumerate(dinov2.specialists[:2])]
    path = write_yaml(tmp_path / "m.yaml", recipe(zoo, models=models))
    return Case(path, CheckpointError, ["base_model", "architecture vit", "dinov2"])


def specialist_architecture_mismatch(zoo, tmp_path, arch_zoo):
    folder = arch_zoo("dinov2").specialists[0]
    path = write_yaml(tmp_path / "m.yaml", with_one(zoo, folder, name="dino"))
    return Case(path, CheckpointError, ["models[2] (dino)", "architecture dinov2 differs from vit"])


def shape_mismatch(zoo, tmp_path):
    from transformers import AutoModelForImageClassification

    from r2m_hf.zoo import tiny_config

    torch.manual_seed(0)
    wide = AutoModelForImageClassification.from_config(tiny_config("vit", hidden_size=48))
    folder = tmp_path / "wide"
    wide.save_pretrained(folder)
    path = write_yaml(tmp_path / "m.yaml", with_one(zoo, folder, name="wide"))
    return Case(
        path,
        CheckpointError,
        ["models[2] (wide)", str(folder), "tensor vit.embeddings.cls_token", "[1, 1, 48]", "[1, 1, 32]"],
    )


def unrelated_base(zoo, tmp_path):
    from transformers import AutoModelForImageClassification

    from r2m_hf.zoo import tiny_config

    torch.manual_seed(1234)  # same architecture and shapes, but not fine-tuned from the zoo's backbone
    other = AutoModelForImageClassification.from_config(tiny_config("vit"))
    folder = tmp_path / "other"
    other.save_pretrained(folder)
    path = write_yaml(tmp_path / "m.yaml", with_one(zoo, folder, name="other"))
    return Case(path, CheckpointError, ["models[2] (other)", "not fine-tuned from this base"])


def nan_tensor(zoo, tmp_path):
    folder = copy_specialist(zoo, tmp_path, "nan")
    tensors = load_file(folder / "model.safetensors")
    tensors[NAN_KEY][3, 5] = float("nan")
    save_file(tensors, folder / "model.safetensors", metadata={"format": "pt"})
    path = write_yaml(tmp_path / "m.yaml", with_one(zoo, folder))
    return Case(path, CheckpointError, [str(folder / "model.safetensors"), NAN_KEY, "NaN or Inf"])


def inf_tensor_with_progress_bars(zoo, tmp_path):
    """The same failure in the middle of the merge, with the progress bars on (as on a terminal)."""
    folder = copy_specialist(zoo, tmp_path, "inf")
    tensors = load_file(folder / "model.safetensors")
    tensors["vit.layernorm.weight"][0] = float("inf")
    save_file(tensors, folder / "model.safetensors", metadata={"format": "pt"})
    path = write_yaml(tmp_path / "m.yaml", with_one(zoo, folder))
    return Case(
        path,
        CheckpointError,
        [str(folder / "model.safetensors"), "vit.layernorm.weight", "NaN or Inf"],
        progress=True,
    )


def truncated_safetensors(zoo, tmp_path):
    folder = copy_specialist(zoo, tmp_path, "truncated")
    file = folder / "model.safetensors"
    data = file.read_bytes()
    file.write_bytes(data[: len(data) // 2])
    path = write_yaml(tmp_path / "m.yaml", with_one(zoo, folder))
    return Case(path, CheckpointError, [str(file)])


def pickle_only(zoo, tmp_path):
    folder = pickle_specialist(zoo, tmp_path)
    path = write_yaml(tmp_path / "m.yaml", with_one(zoo, folder))
    return Case(path, CheckpointError, [str(folder / "pytorch_model.bin"), "--allow-pickle"])


def labels_without_fake(zoo, tmp_path):
    folder = relabelled_specialist(zoo, tmp_path)
    path = write_yaml(tmp_path / "m.yaml", with_one(zoo, folder, name="pets"))
    return Case(path, LabelError, ["models[2] (pets)", "cat", "dog", "fake_label"])


def fake_label_matching_nothing(zoo, tmp_path):
    folder = relabelled_specialist(zoo, tmp_path)
    path = write_yaml(tmp_path / "m.yaml", with_one(zoo, folder, name="pets", fake_label="bird"))
    return Case(path, LabelError, ["models[2] (pets)", "fake_label 'bird'"])


def adapter_matching_nothing(zoo, tmp_path, lora):
    folder = tmp_path / "stray"
    shutil.copytree(lora.v5, folder)
    tensors = load_file(folder / "adapter_model.safetensors")
    renamed = {
        k.replace("q_proj", "nonexistent_proj").replace("v_proj", "nonexistent_proj2"): v for k, v in tensors.items()
    }
    save_file(renamed, folder / "adapter_model.safetensors", metadata={"format": "pt"})
    cfg = json.loads((folder / "adapter_config.json").read_text())
    cfg["target_modules"] = ["nonexistent_proj", "nonexistent_proj2"]
    (folder / "adapter_config.json").write_text(json.dumps(cfg))
    path = write_yaml(tmp_path / "m.yaml", with_one(zoo, folder, name="stray"))
    return Case(path, CheckpointError, ["models[2] (stray)", str(folder), "nonexistent_proj"])


CASES = [
    architecture_mismatch,
    specialist_architecture_mismatch,
    shape_mismatch,
    unrelated_base,
    nan_tensor,
    inf_tensor_with_progress_bars,
    truncated_safetensors,
    pickle_only,
    labels_without_fake,
    fake_label_matching_nothing,
    adapter_matching_nothing,
]


@pytest.mark.parametrize("builder", CASES, ids=case_ids(CASES))
def test_bad_specialist_is_one_error_line_and_nothing_is_written(build_case, builder, tmp_path, cli, monkeypatch):
    check_cli_error(build_case(builder), tmp_path / "merged", cli, monkeypatch)


@pytest.mark.parametrize("builder", CASES, ids=case_ids(CASES))
def test_bad_specialist_raises_its_typed_error(build_case, builder, tmp_path):
    check_api_error(build_case(builder), tmp_path / "merged")


# --------------------------------------------------------------------------------------------------------------------
# Fixed versions of some bad inputs.


def test_pickle_is_accepted_with_allow_pickle_and_merges_like_safetensors(zoo, tmp_path, cli):
    folder = pickle_specialist(zoo, tmp_path)
    pickled = write_yaml(tmp_path / "p.yaml", with_one(zoo, folder, name="fs2"))
    safe = write_yaml(tmp_path / "s.yaml", with_one(zoo, zoo.specialists[0], name="fs2"))
    result = cli("merge", pickled, tmp_path / "p", "--allow-pickle", "--no-progress")
    assert result.code == 0, result.err
    assert cli("merge", safe, tmp_path / "s", "--no-progress").code == 0
    a, b = load_file(tmp_path / "p" / "model.safetensors"), load_file(tmp_path / "s" / "model.safetensors")
    assert set(a) == set(b)
    for key in a:
        torch.testing.assert_close(a[key], b[key], rtol=0, atol=0, msg=key)


def test_fake_label_resolves_unnamed_classes(zoo, tmp_path, cli):
    folder = relabelled_specialist(zoo, tmp_path)
    for fake_label, index in (("dog", 1), ("cat", 0), (0, 0)):
        path = write_yaml(tmp_path / "m.yaml", with_one(zoo, folder, name="pets", fake_label=fake_label))
        dry = cli("merge", path, tmp_path / "dry", "--dry-run")
        assert dry.code == 0, dry.err
        assert f"specialist pets: {folder}" in dry.out and f"fake index={index}" in dry.out
    path = write_yaml(tmp_path / "m.yaml", with_one(zoo, folder, name="pets", fake_label="dog"))
    result = cli("merge", path, tmp_path / "out", "--no-progress")
    assert result.code == 0, result.err
    recorded = yaml.safe_load((tmp_path / "out" / "merge_config.yaml").read_text())
    assert recorded["models"][2]["fake_label"] == "dog" and recorded["models"][2]["fake_index"] == 1
