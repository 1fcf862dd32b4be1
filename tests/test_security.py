"""What a hostile input cannot make r2m-hf do (issue 10): read a file outside the model it belongs to, exhaust memory
with a YAML alias bomb, echo megabytes of input into an error, or publish the machine's absolute paths (injection
into the model card: test_card_injection.py). Each refusal is one error line with nothing written."""

from __future__ import annotations

import json
import re
import shutil
import time

import pytest
import yaml
from bad_input import Case, case_ids, check_cli_error, recipe, with_one
from conftest import write_yaml

from r2m_hf.errors import CheckpointError, ConfigError, R2MError, SourceError


def _copy(zoo, tmp_path, name="evil", source=0):
    folder = tmp_path / name
    shutil.copytree(zoo.specialists[source], folder)
    return folder


# --------------------------------------------------------------------------------------------------- containment
def weights_symlinked_out(zoo, tmp_path):
    folder = _copy(zoo, tmp_path)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (folder / "model.safetensors").rename(elsewhere / "secret.safetensors")
    (folder / "model.safetensors").symlink_to(elsewhere / "secret.safetensors")
    path = write_yaml(tmp_path / "m.yaml", with_one(zoo, folder))
    return Case(path, CheckpointError, ["model.safetensors", "outside the model folder", "secret.safetensors"])


def index_escaping_the_folder(zoo, tmp_path):
    folder = _copy(zoo, tmp_path)
    (tmp_path / "secret.safetensors").write_bytes((folder / "model.safetensors").read_bytes())
    (folder / "model.safetensors").unlink()
    keys = json.loads((tmp_path / "secret.safetensors").read_bytes()[8:].split(b"}}", 1)[0] + b"}}").keys()
    index = {"weight_map": {k: "../secret.safetensors" for k in keys if k != "__metadata__"}}
    (folder / "model.safetensors.index.json").write_text(json.dumps(index))
    path = write_yaml(tmp_path / "m.yaml", with_one(zoo, folder))
    return Case(path, CheckpointError, ["'../secret.safetensors' in model.safetensors.index.json is not a plain file"])


def index_with_absolute_shard(zoo, tmp_path):
    folder = _copy(zoo, tmp_path)
    (folder / "model.safetensors").unlink()
    index = {"weight_map": {"vit.embeddings.cls_token": str(zoo.specialists[1] / "model.safetensors")}}
    (folder / "model.safetensors.index.json").write_text(json.dumps(index))
    path = write_yaml(tmp_path / "m.yaml", with_one(zoo, folder))
    return Case(path, CheckpointError, ["is not a plain file name"])


def config_symlinked_out(zoo, tmp_path):
    folder = _copy(zoo, tmp_path)
    (tmp_path / "other.json").write_text((folder / "config.json").read_text())
    (folder / "config.json").unlink()
    (folder / "config.json").symlink_to(tmp_path / "other.json")
    path = write_yaml(tmp_path / "m.yaml", with_one(zoo, folder))
    return Case(path, CheckpointError, ["config.json", "outside the model folder"])


def processor_symlinked_out(zoo, tmp_path):
    """The image processor is copied into the output: it must come from inside its model too."""
    base = tmp_path / "base"
    shutil.copytree(zoo.base, base)
    (tmp_path / "proc.json").write_text((base / "preprocessor_config.json").read_text())
    (base / "preprocessor_config.json").unlink()
    (base / "preprocessor_config.json").symlink_to(tmp_path / "proc.json")
    data = recipe(zoo)
    data["base_model"] = str(base)
    path = write_yaml(tmp_path / "m.yaml", data)
    return Case(path, SourceError, ["preprocessor_config.json", "outside the model folder"])


def config_that_is_a_list(zoo, tmp_path):
    folder = _copy(zoo, tmp_path)
    (folder / "config.json").write_text("[1, 2]")
    path = write_yaml(tmp_path / "m.yaml", with_one(zoo, folder))
    return Case(path, CheckpointError, ["config.json: expected a JSON object, found list"])


def config_with_bad_labels(zoo, tmp_path):
    folder = _copy(zoo, tmp_path)
    cfg = json.loads((folder / "config.json").read_text())
    cfg["id2label"] = {"zero": "real", "one": "fake"}
    (folder / "config.json").write_text(json.dumps(cfg))
    path = write_yaml(tmp_path / "m.yaml", with_one(zoo, folder))
    return Case(path, CheckpointError, ["config.json: id2label must map class indices to names"])


def pickle_refused_by_weights_only(zoo, tmp_path):
    import os

    import torch

    class Evil:
        def __reduce__(self):
            return (os.system, ("echo pwned",))

    folder = tmp_path / "pickled"
    folder.mkdir()
    shutil.copyfile(zoo.specialists[0] / "config.json", folder / "config.json")
    torch.save({"w": Evil()}, folder / "pytorch_model.bin")
    path = write_yaml(tmp_path / "m.yaml", with_one(zoo, folder))
    case = Case(path, CheckpointError, ["pytorch_model.bin: pickle checkpoint refused", "posix.system"])
    case.args = ["--allow-pickle"]
    return case


CASES = [
    weights_symlinked_out,
    index_escaping_the_folder,
    index_with_absolute_shard,
    config_symlinked_out,
    processor_symlinked_out,
    config_that_is_a_list,
    config_with_bad_labels,
    pickle_refused_by_weights_only,
]


@pytest.mark.parametrize("builder", CASES, ids=case_ids(CASES))
def test_hostile_model_folder_is_one_error_line(build_case, builder, tmp_path, cli, monkeypatch):
    check_cli_error(build_case(builder), tmp_path / "merged", cli, monkeypatch)


def test_a_readme_symlinked_out_of_the_folder_is_not_read(zoo, tmp_path, cli):
    folder = _copy(zoo, tmp_path)
    (tmp_path / "secret.md").write_text("---\nlicense: secret-licence\n---\n")
    (folder / "README.md").symlink_to(tmp_path / "secret.md")
    config = write_yaml(tmp_path / "m.yaml", with_one(zoo, folder))
    assert cli("merge", config, tmp_path / "out", "--no-progress").code == 0
    assert "secret-licence" not in (tmp_path / "out" / "merge_config.yaml").read_text()
    assert "secret-licence" not in (tmp_path / "out" / "README.md").read_text()


def test_a_hub_adapter_cannot_choose_a_local_folder_to_compare(tmp_path):
    """check_adapter_base reads a declared local base only for a local adapter, never for a downloaded one."""
    from r2m_hf.checks import check_adapter_base
    from r2m_hf.config import SourceSpec
    from r2m_hf.sources import ResolvedSource

    adapter = tmp_path / "adapter"
    adapter.mkdir()
    (adapter / "adapter_config.json").write_text(json.dumps({"base_model_name_or_path": str(tmp_path)}))
    source = ResolvedSource(SourceSpec("org/adapter"), adapter, repo_id="org/adapter", commit="0" * 40)
    base = ResolvedSource(SourceSpec("org/base"), tmp_path / "base", repo_id="org/base")
    finding = check_adapter_base(source, base, "models[0]", layout=object())
    assert not finding.verified


# ---------------------------------------------------------------------------------------------------------- YAML
BOMB = """\
a: &a ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]
b: &b [*a,*a,*a,*a,*a,*a,*a,*a,*a]
c: &c [*b,*b,*b,*b,*b,*b,*b,*b,*b]
d: &d [*c,*c,*c,*c,*c,*c,*c,*c,*c]
e: &e [*d,*d,*d,*d,*d,*d,*d,*d,*d]
f: &f [*e,*e,*e,*e,*e,*e,*e,*e,*e]
g: &g [*f,*f,*f,*f,*f,*f,*f,*f,*f]
h: &h [*g,*g,*g,*g,*g,*g,*g,*g,*g]
i: &i [*h,*h,*h,*h,*h,*h,*h,*h,*h]
merge_method: average
models: *i
"""


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        (BOMB, "expands to more than 20,000 values"),
        ("a: &a [*a]\n", "recursive alias"),
        ("merge_method: average\nmodels: " + "[" * 100_000 + "]" * 100_000 + "\n", "nested too deeply"),
        ("merge_method: average\nweight: " + "9" * 10_000 + "\n", "a YAML value cannot be read"),
        ("merge_method: average\npad: " + "x" * (2 * 1024 * 1024) + "\n", "larger than 1,048,576 bytes"),
        (b"merge_method: \xff\xfe\n", "not UTF-8 text"),
    ],
)
def test_hostile_yaml_is_refused_quickly_in_one_short_line(tmp_path, cli, text, fragment):
    path = tmp_path / "m.yaml"
    path.write_bytes(text if isinstance(text, bytes) else text.encode())
    start = time.perf_counter()
    result = cli("merge", path, tmp_path / "out", "--no-progress")
    assert time.perf_counter() - start < 30
    assert result.code == 2 and result.out == ""
    lines = result.err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("r2m-hf: error: ") and fragment in lines[0], result.err[:500]
    assert len(lines[0]) < 500 + len(str(path))
    assert not (tmp_path / "out").exists()


def test_a_yaml_with_a_few_anchors_still_loads(tmp_path):
    from r2m_hf.config import load_config

    path = tmp_path / "m.yaml"
    path.write_text("merge_method: average\nmodels:\n  - &m {model: a}\n  - {<<: *m, model: b}\n")
    assert load_config(path).names() == ["a", "b"]


@pytest.mark.parametrize(
    "body",
    [
        "merge_method: average\nmodels: 'HUGE'\n",
        "merge_method: average\nmodels: [{model: a}, {model: b}]\nparameters: {head: 'HUGE'}\n",
        "merge_method: average\nmodels: [{model: a, name: 'HUGE'}, {model: b}]\n",
        "merge_method: average\nmodels: [{model: a, 'HUGE': 1}, {model: b}]\n",
        "merge_method: 'HUGE'\nmodels: [{model: a}, {model: b}]\n",
        "merge_method: average\nmodels: [{model: a, fake_label: 'HUGE'}, {model: b}]\n",
        "merge_method: average\nmodels: [{model: 'HUGE'}, {model: b}]\n",
    ],
)
def test_errors_never_echo_more_than_a_short_piece_of_the_input(tmp_path, cli, body):
    path = tmp_path / "m.yaml"
    path.write_text(body.replace("HUGE", "A" * 500_000))
    result = cli("merge", path, tmp_path / "out", "--no-progress")
    assert result.code == 2
    line = result.err.strip()
    assert "\n" not in line and line.count("A") <= 450 and len(line) < 1000, line[:300]


def test_format_validation_error_clips_and_counts():
    from pydantic import BaseModel, ValidationError

    from r2m_hf.errors import format_validation_error

    class M(BaseModel):
        x: list[int]

    with pytest.raises(ValidationError) as info:
        M(x=["a" * 10_000] * 50)
    text = format_validation_error(info.value)
    assert len(text) < 3000 and "and 42 more" in text and "(10000 characters)" in text


# ----------------------------------------------------------------------------------------------- absolute paths
def _all_output_text(out) -> str:
    files = [p for p in sorted(out.iterdir()) if p.suffix in {".json", ".yaml", ".md"}]
    return "\n".join(p.read_text(errors="replace") for p in files)


def test_no_absolute_local_path_is_written_unless_asked(zoo, tmp_path, cli):
    work = tmp_path / "work"
    inside = work / "models" / "fs"
    shutil.copytree(zoo.specialists[0], inside)
    models = [{"model": "models/fs"}, {"model": str(zoo.specialists[1])}, {"model": str(zoo.specialists[2])}]
    data = recipe(zoo, models=models)
    config = write_yaml(work / "m.yaml", data)
    assert cli("merge", config, tmp_path / "out", "--no-progress").code == 0
    text = _all_output_text(tmp_path / "out")
    for absolute in (str(tmp_path), str(zoo.root), "/tmp/", "/root"):
        assert absolute not in text, absolute
    recorded = yaml.safe_load((tmp_path / "out" / "merge_config.yaml").read_text())
    assert recorded["models"][0]["source"]["path"] == "models/fs"  # relative to the recipe's folder
    assert recorded["models"][1]["source"]["path"] == zoo.specialists[1].name  # outside it: by name
    assert all(len(h) == 64 for m in recorded["models"] for h in m["source"]["files"].values())

    assert cli("merge", config, tmp_path / "abs", "--no-progress", "--record-local-paths").code == 0
    recorded = yaml.safe_load((tmp_path / "abs" / "merge_config.yaml").read_text())
    assert recorded["models"][0]["source"]["path"] == str(inside.resolve())
    assert recorded["base_model"]["path"] == str(zoo.base.resolve())


def test_notes_name_inputs_as_the_recipe_does(zoo, lora, tmp_path, cli):
    """An adapter's adapter_config.json names its base by the absolute path it was trained at: the note about it is
    written with the recorded name instead."""
    models = [{"model": str(lora.v5), "name": "lora"}, {"model": str(zoo.specialists[0])}]
    data = {"merge_method": "average", "models": models}
    config = write_yaml(tmp_path / "m.yaml", data)
    assert cli("merge", config, tmp_path / "out", "--no-progress").code == 0
    report = json.loads((tmp_path / "out" / "merge_report.json").read_text())
    assert any("base_model taken from" in n for n in report["notes"])
    assert str(zoo.root) not in json.dumps(report) and str(zoo.root) not in (tmp_path / "out" / "README.md").read_text()


def test_errors_raised_for_hostile_inputs_are_r2m_errors(zoo, tmp_path):
    """The API raises typed errors (never a bare TypeError/KeyError/RecursionError) for the YAML cases above."""
    from r2m_hf import merge

    path = tmp_path / "m.yaml"
    path.write_text(BOMB)
    with pytest.raises(ConfigError):
        merge(path, tmp_path / "out", progress=False)
    path.write_text("- a\n- b\n")
    with pytest.raises(R2MError):
        merge(path, tmp_path / "out", progress=False)


@pytest.mark.parametrize(
    ("key", "value", "fragment"),
    [
        ("num_hidden_layers", 10**6, "num_hidden_layers = 1000000 is out of range (0 to 4,096)"),
        ("hidden_size", -4, "hidden_size = -4 is out of range (1 to"),
        ("hidden_size", 0, "hidden_size = 0 is out of range (1 to"),
        ("patch_size", [4, -1], "patch_size = -1 is out of range"),
    ],
)
def test_absurd_architecture_sizes_are_refused_before_the_layout_is_built(zoo, tmp_path, key, value, fragment):
    """The layout is built from config.json before any weight is read: a million layers would exhaust memory there,
    a negative or zero size would crash torch."""
    from r2m_hf.planning import plan_merge

    folder = _copy(zoo, tmp_path)
    cfg = json.loads((folder / "config.json").read_text())
    cfg[key] = value
    (folder / "config.json").write_text(json.dumps(cfg))
    path = write_yaml(
        tmp_path / "m.yaml",
        {"merge_method": "average", "models": [{"model": str(folder)}, {"model": str(zoo.specialists[2])}]},
    )
    start = time.perf_counter()
    with pytest.raises(CheckpointError, match=re.escape(fragment)):
        plan_merge(path)
    assert time.perf_counter() - start < 60
