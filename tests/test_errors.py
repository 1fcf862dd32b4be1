"""Bad input: exit code 2, one ``r2m-hf: error:`` line naming the file/key/tensor, no traceback, nothing written."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import torch
from conftest import assert_nothing_written, write_yaml
from safetensors.torch import load_file, save_file

from r2m_hf.cli import main
from r2m_hf.errors import CheckpointError, ConfigError, LabelError, OutputError, R2MError, SourceError

NAN_KEY = "vit.encoder.layer.1.attention.attention.value.weight"


@dataclass
class Case:
    """A bad recipe: the YAML to run, extra CLI flags, the error type and the fragments its message must contain."""

    config: Path
    error: type[R2MError]
    fragments: list[str]
    args: list[str] = field(default_factory=list)
    pattern: str | None = None


def recipe(zoo, models=None, method="r2m", **extra) -> dict:
    data = {"merge_method": method, "base_model": str(zoo.base)}
    data["models"] = models if models is not None else [{"model": str(p)} for p in zoo.specialists]
    data.update(extra)
    return data


def copy_specialist(zoo, tmp_path: Path, name: str, source: int = 0) -> Path:
    folder = tmp_path / name
    shutil.copytree(zoo.specialists[source], folder)
    return folder


def with_one(zoo, folder: Path, name: str = "bad", **entry) -> dict:
    """fs, fr and the bad specialist last."""
    models = [{"model": str(p)} for p in zoo.specialists[:2]] + [{"model": str(folder), "name": name, **entry}]
    return recipe(zoo, models)


# --------------------------------------------------------------------------------------------------------------------
# The cases. Each builder returns a Case under tmp_path.


def yaml_syntax(zoo, tmp_path):
    path = write_yaml(tmp_path / "bad.yaml", "merge_method: r2m\nbase_model: x\nmodels: [{model: a}, {model: b}\n"
                                             "parameters: {alpha: 0.5}\n")
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
    path = write_yaml(tmp_path / "m.yaml", recipe(zoo, models))
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
    path = write_yaml(tmp_path / "m.yaml", recipe(zoo, [{"model": str(zoo.specialists[0])}]))
    return Case(path, ConfigError, [str(path), "models", "at least 2 specialists, got 1"])


def missing_local_path(zoo, tmp_path):
    models = [{"model": str(zoo.specialists[0])}, {"model": "./no/such/specialist"}]
    path = write_yaml(tmp_path / "m.yaml", recipe(zoo, models))
    return Case(path, SourceError, ["./no/such/specialist", "no such folder"])


def architecture_mismatch(zoo, tmp_path, arch_zoo):
    dinov2 = arch_zoo("dinov2")
    models = [{"model": str(p), "name": f"d{i}"} for i, p in enumerate(dinov2.specialists[:2])]
    path = write_yaml(tmp_path / "m.yaml", recipe(zoo, models))
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
    return Case(path, CheckpointError, ["models[2] (wide)", str(folder), "tensor vit.embeddings.cls_token",
                                        "[1, 1, 48]", "[1, 1, 32]"])


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


def inf_tensor_no_progress_flag(zoo, tmp_path):
    """The same failure in the middle of the merge, with the progress bars on (the default)."""
    folder = copy_specialist(zoo, tmp_path, "inf")
    tensors = load_file(folder / "model.safetensors")
    tensors["vit.layernorm.weight"][0] = float("inf")
    save_file(tensors, folder / "model.safetensors", metadata={"format": "pt"})
    path = write_yaml(tmp_path / "m.yaml", with_one(zoo, folder))
    return Case(path, CheckpointError, [str(folder / "model.safetensors"), "vit.layernorm.weight", "NaN or Inf"],
                args=["--progress-default"])


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
    renamed = {k.replace("q_proj", "nonexistent_proj").replace("v_proj", "nonexistent_proj2"): v
               for k, v in tensors.items()}
    save_file(renamed, folder / "adapter_model.safetensors", metadata={"format": "pt"})
    cfg = json.loads((folder / "adapter_config.json").read_text())
    cfg["target_modules"] = ["nonexistent_proj", "nonexistent_proj2"]
    (folder / "adapter_config.json").write_text(json.dumps(cfg))
    path = write_yaml(tmp_path / "m.yaml", with_one(zoo, folder, name="stray"))
    return Case(path, CheckpointError, ["models[2] (stray)", str(folder), "nonexistent_proj"])


def duplicate_names(zoo, tmp_path):
    models = [{"model": str(zoo.specialists[0]), "name": "x"}, {"model": str(zoo.specialists[1]), "name": "x"}]
    path = write_yaml(tmp_path / "m.yaml", recipe(zoo, models))
    return Case(path, ConfigError, [str(path), "models[1] and models[0]", "'x'"])


def same_folder_twice(zoo, tmp_path):
    models = [{"model": str(zoo.specialists[0])}, {"model": str(zoo.specialists[0])}]
    path = write_yaml(tmp_path / "m.yaml", recipe(zoo, models))
    return Case(path, ConfigError, [str(path), "both named 'fs'"])


def head_unknown_specialist(zoo, tmp_path):
    path = write_yaml(tmp_path / "m.yaml", recipe(zoo, parameters={"head": "nobody"}))
    return Case(path, ConfigError, [str(path), "parameters.head", "'nobody'"])


def missing_config_file(zoo, tmp_path):
    return Case(tmp_path / "absent.yaml", ConfigError, [str(tmp_path / "absent.yaml"), "no such config file"])


def pickle_specialist(zoo, tmp_path) -> Path:
    """fs as a pickle-only folder (``pytorch_model.bin`` with the on-disk key names)."""
    folder = tmp_path / "pickled"
    folder.mkdir()
    for name in ("config.json", "preprocessor_config.json"):
        shutil.copyfile(zoo.specialists[0] / name, folder / name)
    torch.save(load_file(zoo.specialists[0] / "model.safetensors"), folder / "pytorch_model.bin")
    return folder


def relabelled_specialist(zoo, tmp_path) -> Path:
    folder = copy_specialist(zoo, tmp_path, "pets", source=2)
    cfg = json.loads((folder / "config.json").read_text())
    cfg["id2label"], cfg["label2id"] = {"0": "cat", "1": "dog"}, {"cat": 0, "dog": 1}
    (folder / "config.json").write_text(json.dumps(cfg))
    return folder



CASES = [yaml_syntax, unknown_method, unknown_top_level_key, unknown_parameter_key, unknown_model_parameter_key,
         alpha_negative, eta_not_allowed, lambda_not_a_number, one_specialist, missing_local_path,
         architecture_mismatch, specialist_architecture_mismatch, shape_mismatch, unrelated_base, nan_tensor,
         inf_tensor_no_progress_flag, truncated_safetensors,
         pickle_only,
         labels_without_fake,
         fake_label_matching_nothing, adapter_matching_nothing, duplicate_names, same_folder_twice,
         head_unknown_specialist, missing_config_file]


IDS = [getattr(c, "id", None) or getattr(c, "__name__", None) for c in CASES]


@pytest.fixture
def build_case(zoo, tmp_path, arch_zoo, lora):
    def build(builder) -> Case:
        extra = {"arch_zoo": arch_zoo, "lora": lora}
        wanted = builder.__code__.co_varnames[: builder.__code__.co_argcount]
        return builder(zoo, tmp_path, **{k: v for k, v in extra.items() if k in wanted})

    return build


def run_args(case: Case, out: Path) -> list[str]:
    flags = [a for a in case.args if a != "--progress-default"]
    progress = [] if "--progress-default" in case.args else ["--no-progress"]
    return ["merge", str(case.config), str(out), *progress, *flags]


def visible_lines(err: str) -> list[str]:
    """stderr as a terminal shows it: within a line, text after a carriage return overwrites what came before.

    Progress bars (on by default) are erased with ``\\r`` when the merge stops; only what remains on screen counts.
    """
    lines = [segment.split("\r")[-1].rstrip() for segment in err.split("\n")]
    return [line for line in lines if line]


def assert_one_error_line(code: int, err: str, case: Case) -> str:
    assert code == 2, err
    assert "Traceback" not in err
    lines = visible_lines(err) if "--progress-default" in case.args else err.strip().splitlines()
    assert len(lines) == 1, f"expected one line on stderr, got:\n{err}"
    line = lines[0]
    assert line.startswith("r2m-hf: error: "), line
    for fragment in case.fragments:
        assert fragment in line, f"{fragment!r} not in {line!r}"
    if case.pattern:
        assert re.search(case.pattern, line), line
    return line


@pytest.mark.parametrize("builder", CASES, ids=IDS)
def test_bad_input_is_one_error_line_and_nothing_is_written(build_case, builder, tmp_path, cli):
    case = build_case(builder)
    out = tmp_path / "merged"
    result = cli(*run_args(case, out))
    assert result.out == ""
    assert_one_error_line(result.code, result.err, case)
    assert_nothing_written(out)


@pytest.mark.parametrize("builder", CASES, ids=IDS)
def test_debug_raises_the_error_with_its_traceback(build_case, builder, tmp_path):
    case = build_case(builder)
    out = tmp_path / "merged"
    with pytest.raises(case.error) as info:
        main([*run_args(case, out), "--debug"])
    assert info.traceback  # the exception propagates with its traceback
    for fragment in case.fragments:
        assert fragment in str(info.value)
    assert "\n" not in str(info.value)
    assert_nothing_written(out)


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
    import yaml

    recorded = yaml.safe_load((tmp_path / "out" / "merge_config.yaml").read_text())
    assert recorded["models"][2]["fake_label"] == "dog" and recorded["models"][2]["fake_index"] == 1


def test_existing_output_is_refused_then_replaced_with_overwrite(zoo, tmp_path, cli):
    out = tmp_path / "out"
    out.mkdir()
    (out / "precious.txt").write_text("keep me")
    config = write_yaml(tmp_path / "m.yaml", recipe(zoo, method="average"))
    result = cli("merge", config, out, "--no-progress")
    line = assert_one_error_line(result.code, result.err, Case(config, OutputError, [str(out), "--overwrite"]))
    assert "not empty" in line
    assert sorted(p.name for p in out.iterdir()) == ["precious.txt"]
    assert (out / "precious.txt").read_text() == "keep me"
    assert not list(tmp_path.glob(".out.*"))

    result = cli("merge", config, out, "--overwrite", "--no-progress")
    assert result.code == 0, result.err
    assert not (out / "precious.txt").exists()
    assert (out / "model.safetensors").is_file() and (out / "merge_report.json").is_file()
    assert not list(tmp_path.glob(".out.*"))


def test_empty_existing_output_folder_is_fine(zoo, tmp_path, cli):
    out = tmp_path / "out"
    out.mkdir()
    config = write_yaml(tmp_path / "m.yaml", recipe(zoo, method="average"))
    assert cli("merge", config, out, "--no-progress").code == 0
    assert (out / "model.safetensors").is_file()


def test_output_path_that_is_a_file(zoo, tmp_path, cli):
    out = tmp_path / "out"
    out.write_text("not a folder")
    config = write_yaml(tmp_path / "m.yaml", recipe(zoo, method="average"))
    result = cli("merge", config, out, "--no-progress")
    assert_one_error_line(result.code, result.err, Case(config, OutputError, [str(out), "not a folder"]))
    assert out.read_text() == "not a folder"


# --------------------------------------------------------------------------------------------------------------------
# The real process: exit code, stderr, traceback only with --debug.


def test_subprocess_error_exit_code_and_debug_traceback(zoo, tmp_path):
    models = [{"model": str(zoo.specialists[0])}, {"model": "./no/such/specialist"}]
    config = write_yaml(tmp_path / "m.yaml", recipe(zoo, models))
    out = tmp_path / "out"
    command = [sys.executable, "-m", "r2m_hf", "merge", str(config), str(out)]
    proc = subprocess.run(command, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2
    assert proc.stdout == ""
    assert proc.stderr.strip().splitlines() == [proc.stderr.strip()]
    assert proc.stderr.startswith("r2m-hf: error: ./no/such/specialist: no such folder")
    assert "Traceback" not in proc.stderr
    assert_nothing_written(out)

    debug = subprocess.run([*command, "--debug"], capture_output=True, text=True, timeout=120)
    assert debug.returncode == 1
    assert "Traceback (most recent call last)" in debug.stderr
    assert "r2m_hf.errors.SourceError: ./no/such/specialist: no such folder" in debug.stderr
    assert_nothing_written(out)


def test_usage_errors_exit_2(capsys):
    with pytest.raises(SystemExit) as info:
        main(["merge"])
    assert info.value.code == 2
    assert "usage: r2m-hf merge" in capsys.readouterr().err
