"""The output folder (r2m_hf/writer.py): atomic, refused when it holds files (unless overwritten), streamed into
(sharded) safetensors that load back equal, in the recipe's ``out_dtype``."""

from __future__ import annotations

import json

import pytest
import torch
from bad_input import Case, assert_one_error_line
from conftest import assert_nothing_written, load_model, recipe, state, write_yaml
from safetensors import safe_open
from safetensors.torch import load_file

from r2m_hf.errors import OutputError
from r2m_hf.writer import OutputFolder, StreamingSafetensorsWriter


def test_sharded_output_loads_back_equal(r2m_out, zoo, tmp_path):
    from r2m_hf.merge import plan_merge, run_merge

    plan = plan_merge(write_yaml(tmp_path / "m.yaml", recipe(zoo)))
    result = run_merge(plan, tmp_path / "sharded", progress=False, max_shard_bytes=20_000)
    out = result.output_dir
    index = json.loads((out / "model.safetensors.index.json").read_text())
    shards = sorted(set(index["weight_map"].values()))
    assert len(shards) > 1
    assert not (out / "model.safetensors").exists()
    assert sorted(p.name for p in out.glob("*.safetensors")) == shards
    single = load_file(r2m_out / "model.safetensors")
    assert set(index["weight_map"]) == set(single)
    total = 0
    for shard in shards:
        tensors = load_file(out / shard)
        for key, tensor in tensors.items():
            assert index["weight_map"][key] == shard
            torch.testing.assert_close(tensor, single[key], rtol=0, atol=0)
            total += tensor.numel() * tensor.element_size()
    assert index["metadata"]["total_size"] == total
    reference = state(r2m_out)
    for name, tensor in state(out).items():
        torch.testing.assert_close(tensor, reference[name], rtol=0, atol=0, msg=name)
    assert result.report.files == shards


def test_out_dtype_bfloat16_writes_bf16(zoo, r2m_out, tmp_path, cli):
    config = write_yaml(tmp_path / "m.yaml", recipe(zoo, out_dtype="bfloat16"))
    result = cli("merge", config, tmp_path / "out", "--no-progress")
    assert result.code == 0, result.err
    with safe_open(str(tmp_path / "out" / "model.safetensors"), framework="pt") as fh:
        assert {fh.get_slice(k).get_dtype() for k in fh.keys()} == {"BF16"}
        bf16 = {k: fh.get_tensor(k) for k in fh.keys()}
    assert json.loads((tmp_path / "out" / "config.json").read_text())["dtype"] == "bfloat16"
    reference = load_file(r2m_out / "model.safetensors")
    for key, tensor in bf16.items():
        torch.testing.assert_close(tensor, reference[key].to(torch.bfloat16), rtol=0, atol=0, msg=key)
    load_model(tmp_path / "out")


def test_existing_output_is_refused_then_replaced_with_overwrite_any(zoo, tmp_path, cli):
    out = tmp_path / "out"
    out.mkdir()
    (out / "precious.txt").write_text("keep me")
    config = write_yaml(tmp_path / "m.yaml", recipe(zoo, "average"))
    result = cli("merge", config, out, "--no-progress")
    line = assert_one_error_line(result.code, result.err, Case(config, OutputError, [str(out), "--overwrite"]))
    assert "not empty" in line
    assert sorted(p.name for p in out.iterdir()) == ["precious.txt"]
    assert (out / "precious.txt").read_text() == "keep me"
    assert not list(tmp_path.glob(".out.*"))

    # --overwrite replaces only what r2m-hf wrote: a folder of other files needs the explicit --overwrite-any
    result = cli("merge", config, out, "--overwrite", "--no-progress")
    line = assert_one_error_line(result.code, result.err, Case(config, OutputError, [str(out), "--overwrite-any"]))
    assert "not written by r2m-hf" in line
    assert (out / "precious.txt").read_text() == "keep me"
    assert not list(tmp_path.glob(".out.*"))

    result = cli("merge", config, out, "--overwrite-any", "--no-progress")
    assert result.code == 0, result.err
    assert not (out / "precious.txt").exists()
    assert (out / "model.safetensors").is_file() and (out / "merge_report.json").is_file()
    assert not list(tmp_path.glob(".out.*"))


def test_empty_existing_output_folder_is_fine(zoo, tmp_path, cli):
    out = tmp_path / "out"
    out.mkdir()
    config = write_yaml(tmp_path / "m.yaml", recipe(zoo, "average"))
    assert cli("merge", config, out, "--no-progress").code == 0
    assert (out / "model.safetensors").is_file()


def test_output_path_that_is_a_file(zoo, tmp_path, cli):
    out = tmp_path / "out"
    out.write_text("not a folder")
    config = write_yaml(tmp_path / "m.yaml", recipe(zoo, "average"))
    result = cli("merge", config, out, "--no-progress")
    assert_one_error_line(result.code, result.err, Case(config, OutputError, [str(out), "not a folder"]))
    assert out.read_text() == "not a folder"


def test_output_folder_appears_only_when_committed(tmp_path):
    target = tmp_path / "out"
    with pytest.raises(RuntimeError), OutputFolder(target) as folder:
        (folder.tmp / "partial.bin").write_bytes(b"x")
        raise RuntimeError("the merge failed")
    assert_nothing_written(target)

    folder = OutputFolder(target)
    (folder.tmp / "model.safetensors").write_bytes(b"x")
    assert not target.exists()
    assert folder.commit() == target.resolve()
    assert [p.name for p in target.iterdir()] == ["model.safetensors"]
    assert not list(tmp_path.glob(".out.*"))


def test_output_error_is_also_an_os_error(tmp_path):
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "file").write_text("x")
    with pytest.raises(OSError, match="not empty; pass --overwrite"):
        OutputFolder(tmp_path / "out")


def test_streaming_writer_accepts_tensors_out_of_order(tmp_path):
    shapes = {"a": (3, 4), "b": (5,), "c": (2, 2)}
    generator = torch.Generator().manual_seed(0)
    tensors = {name: torch.randn(shape, generator=generator) for name, shape in shapes.items()}
    writer = StreamingSafetensorsWriter(tmp_path, shapes, torch.float32, max_shard_bytes=1 << 20)
    for name in ("c", "a", "b"):
        writer.add(name, tensors[name])
    assert writer.close() == ["model.safetensors"]
    loaded = load_file(tmp_path / "model.safetensors")
    assert set(loaded) == set(shapes)
    for name, tensor in tensors.items():
        torch.testing.assert_close(loaded[name], tensor, rtol=0, atol=0)


def test_streaming_writer_refuses_unplanned_tensors_and_missing_ones(tmp_path):
    writer = StreamingSafetensorsWriter(tmp_path, {"a": (2,), "b": (5,)}, torch.float32, max_shard_bytes=1 << 20)
    with pytest.raises(ValueError, match=r"shape \[2\] != planned \[5\]"):
        writer.add("b", torch.zeros(2))
    with pytest.raises(KeyError, match="unexpected tensor z"):
        writer.add("z", torch.zeros(2))
    writer.add("a", torch.zeros(2))
    with pytest.raises(RuntimeError, match="tensor b was never written"):
        writer.close()


# --------------------------------------------------------------------------------------------------------------------
# Data-loss guards (issue 10): no output is, contains or lies inside an input or the Hub cache, with or without
# --overwrite; --overwrite replaces only an r2m-hf output; a lock per output; stale temporary siblings cleaned.


@pytest.fixture
def inputs(zoo, tmp_path):
    """A copy of the zoo under ``tmp_path/models`` and a recipe over it in ``tmp_path/recipes``."""
    import shutil

    models = tmp_path / "models"
    for folder in [zoo.base, *zoo.specialists]:
        shutil.copytree(folder, models / folder.name)
    data = {"merge_method": "average", "base_model": str(models / zoo.base.name)}
    data["models"] = [{"model": str(models / p.name)} for p in zoo.specialists]
    return write_yaml(tmp_path / "recipes" / "m.yaml", data)


def _tree(root) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.mark.parametrize("flags", [[], ["--overwrite"], ["--overwrite-any"]])
@pytest.mark.parametrize("target", ["models/fs", "models", "models/fs/merged", "recipes", "."])
def test_an_output_overlapping_an_input_is_refused_even_with_overwrite(inputs, tmp_path, cli, target, flags):
    out = (tmp_path / target).resolve()
    before = _tree(tmp_path)
    result = cli("merge", inputs, out, "--no-progress", *flags)
    line = assert_one_error_line(result.code, result.err, Case(inputs, OutputError, [str(out)]))
    assert "would be, contain or lie inside the input" in line and "even with --overwrite" in line
    assert _tree(tmp_path) == before  # every input byte intact, nothing created


def test_an_output_that_is_a_symlink_to_an_input_is_refused(inputs, tmp_path, cli):
    (tmp_path / "link").symlink_to(tmp_path / "models" / "fr")
    before = _tree(tmp_path / "models")
    result = cli("merge", inputs, tmp_path / "link", "--no-progress", "--overwrite-any")
    assert result.code == 2 and "lie inside the input" in result.err
    assert _tree(tmp_path / "models") == before


@pytest.mark.parametrize("where", ["inside", "parent"])
def test_an_output_overlapping_the_hub_cache_is_refused(inputs, tmp_path, cli, monkeypatch, where):
    from huggingface_hub import constants

    cache = tmp_path / "home" / ".cache" / "huggingface" / "hub"
    (cache / "models--org--x").mkdir(parents=True)
    (cache / "models--org--x" / "keep").write_text("cached")
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(cache))
    out = cache / "merged" if where == "inside" else tmp_path / "home"
    result = cli("merge", inputs, out, "--no-progress", "--overwrite-any")
    assert result.code == 2 and "the Hugging Face cache" in result.err and len(result.err.splitlines()) == 1
    assert (cache / "models--org--x" / "keep").read_text() == "cached" and not (cache / "merged").exists()


def test_overwrite_replaces_an_r2m_hf_output_or_an_empty_folder(inputs, tmp_path, cli):
    out = tmp_path / "out"
    assert cli("merge", inputs, out, "--no-progress").code == 0
    (out / "extra.txt").write_text("a note the user added to the merged folder")
    assert cli("merge", inputs, out, "--no-progress", "--overwrite").code == 0  # it carries merge_config.yaml
    assert not (out / "extra.txt").exists() and (out / "merge_report.json").is_file()
    empty = tmp_path / "empty"
    empty.mkdir()
    assert cli("merge", inputs, empty, "--no-progress").code == 0
    assert sorted(p.name for p in tmp_path.iterdir()) == ["empty", "models", "out", "recipes"]


def test_a_second_writer_of_one_output_is_refused_while_the_first_holds_it(tmp_path):
    first = OutputFolder(tmp_path / "out")
    assert (tmp_path / ".out.lock").read_text().strip() == str(__import__("os").getpid())
    with pytest.raises(OutputError, match=r"another r2m-hf process \(PID \d+\) is writing this output"):
        OutputFolder(tmp_path / "out")
    (first.tmp / "model.safetensors").write_bytes(b"x")
    first.commit()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]  # the lock file is gone with the lock
    OutputFolder(tmp_path / "other").abort()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]


def test_stale_temporary_siblings_are_removed_and_said(tmp_path, caplog):
    (tmp_path / ".out.tmp-dead1").mkdir()
    (tmp_path / ".out.tmp-dead1" / "model.safetensors").write_bytes(b"partial")
    (tmp_path / ".out.tmp-dead2").mkdir()
    (tmp_path / ".out.lock").write_text("999999\n")  # its process is gone: flock is free
    (tmp_path / ".other.tmp-x").mkdir()  # another output's sibling: not ours to touch
    caplog.set_level("WARNING", logger="r2m_hf")
    folder = OutputFolder(tmp_path / "out")
    assert "removed 2 temporary folder(s) of an interrupted r2m-hf run: .out.tmp-dead1, .out.tmp-dead2" in caplog.text
    folder.abort()
    assert sorted(p.name for p in tmp_path.iterdir()) == [".other.tmp-x"]


def test_an_output_moved_aside_by_a_killed_commit_is_restored(tmp_path, caplog):
    (tmp_path / ".out.old-4242").mkdir()
    (tmp_path / ".out.old-4242" / "merge_config.yaml").write_text("previous result")
    caplog.set_level("WARNING", logger="r2m_hf")
    with pytest.raises(OutputError, match="not empty; pass --overwrite"):
        OutputFolder(tmp_path / "out")
    assert "restored the previous output" in caplog.text
    assert (tmp_path / "out" / "merge_config.yaml").read_text() == "previous result"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]


def test_commit_refuses_a_folder_that_appeared_meanwhile(tmp_path):
    folder = OutputFolder(tmp_path / "out")
    (folder.tmp / "model.safetensors").write_bytes(b"x")
    (tmp_path / "out").mkdir()  # an empty folder appears: rename(2) would silently replace it
    with pytest.raises(OutputError, match="appeared while merging"):
        folder.commit()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"] and not any((tmp_path / "out").iterdir())


def test_commit_refuses_to_replace_a_folder_that_changed_into_a_foreign_one(tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / "merge_report.json").write_text("{}")
    folder = OutputFolder(out, overwrite=True)
    (out / "merge_report.json").unlink()
    (out / "thesis.tex").write_text("not a merge")
    with pytest.raises(OutputError, match="was not written by r2m-hf"):
        folder.commit()
    assert (out / "thesis.tex").read_text() == "not a merge"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]
