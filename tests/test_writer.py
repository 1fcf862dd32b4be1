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


def test_existing_output_is_refused_then_replaced_with_overwrite(zoo, tmp_path, cli):
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

    result = cli("merge", config, out, "--overwrite", "--no-progress")
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
