"""The positioned-read safetensors reader: same tensors as the safetensors library, damaged files refused."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import save_file

from r2m_hf.checkpoint import SafetensorsFile
from r2m_hf.errors import CheckpointError


@pytest.fixture
def tensors() -> dict[str, torch.Tensor]:
    gen = torch.Generator().manual_seed(0)
    return {
        "f32": torch.randn(7, 5, generator=gen),
        "bf16": torch.randn(3, 4, generator=gen).to(torch.bfloat16),
        "f16": torch.randn(6, generator=gen).half(),
        "f64": torch.randn(2, 2, 2, generator=gen).double(),
        "i64": torch.arange(5),
        "empty": torch.zeros(0, 3),
        "scalar": torch.tensor(3.5),
    }


def test_reads_what_safetensors_reads(tmp_path, tensors):
    path = tmp_path / "m.safetensors"
    save_file(tensors, path, metadata={"format": "pt"})
    ours = SafetensorsFile(path)
    assert sorted(ours.keys()) == sorted(tensors)
    assert ours.metadata == {"format": "pt"}
    with safe_open(str(path), "pt") as reference:
        for key in tensors:
            got = ours.get(key)
            assert got.dtype == tensors[key].dtype and got.shape == tensors[key].shape
            assert torch.equal(got, reference.get_tensor(key))
    ours.close()


@pytest.mark.parametrize("damage", ["truncate", "pad", "header_length", "not_json"])
def test_damaged_files_are_refused_at_open(tmp_path, tensors, damage):
    path = tmp_path / "m.safetensors"
    save_file(tensors, path)
    data = path.read_bytes()
    if damage == "truncate":
        data = data[: len(data) - 10]
    elif damage == "pad":
        data = data + b"\0" * 8
    elif damage == "header_length":
        data = (10**12).to_bytes(8, "little") + data[8:]
    else:
        data = data[:8] + b"{" * 16 + data[24:]
    path.write_bytes(data)
    with pytest.raises(CheckpointError, match="not a readable safetensors file"):
        SafetensorsFile(path)


# --------------------------------------------------------------------------------------------------------------------
# Malformed headers and indexes, non-floating tensors, refused pickles: one CheckpointError line each (issue 10).


def _raw_safetensors(path, header: bytes, data: bytes = b"") -> None:
    header += b" " * (-len(header) % 8)
    path.write_bytes(len(header).to_bytes(8, "little") + header + data)


@pytest.mark.parametrize(
    ("header", "why"),
    [
        (b"[1, 2, 3]", "header is a JSON list, not an object"),
        (b'"text"', "header is a JSON str, not an object"),
        (b"[" * 5000 + b"]" * 5000, "header is not valid JSON"),
        (b'{"__metadata__": [1]}', "__metadata__ is not an object"),
        (b'{"t": [1]}', "bad header entry for tensor t"),
        (b'{"t": {"dtype": "F32", "shape": [-1, -4], "data_offsets": [0, 16]}}', "bad header entry for tensor t"),
        (b'{"t": {"dtype": "F32", "shape": [2.5], "data_offsets": [0, 10]}}', "bad header entry for tensor t"),
        (b'{"t": {"dtype": "X9", "shape": [1], "data_offsets": [0, 4]}}', "bad header entry for tensor t"),
        (b"\xff\xfe{}", "header is not valid JSON"),
    ],
)
def test_malformed_headers_are_one_checkpoint_error(tmp_path, header, why):
    path = tmp_path / "m.safetensors"
    _raw_safetensors(path, header, b"\0" * 16)
    with pytest.raises(CheckpointError) as info:
        SafetensorsFile(path)
    assert why in str(info.value) and "\n" not in str(info.value)


@pytest.mark.parametrize(
    ("index", "fragment"),
    [
        ('{"weight_map": ["model-1.safetensors"]}', "weight_map must map tensor names to shard file names, found a"),
        ('{"weight_map": {"a": 3}}', "found a mapping with non-string entries"),
        ("[]", "found a JSON list"),
        ('{"metadata": {}}', "found none"),
        ("{not json", "not valid JSON"),
        ('{"weight_map": {"a": "../../secret.safetensors"}}', "is not a plain file name"),
        ('{"weight_map": {"a": "/etc/passwd"}}', "is not a plain file name"),
        ('{"weight_map": {"a": "sub/model.safetensors"}}', "is not a plain file name"),
    ],
)
def test_malformed_shard_indexes_are_one_checkpoint_error(tmp_path, index, fragment):
    from r2m_hf.checkpoint import TensorFiles

    (tmp_path / "model.safetensors.index.json").write_text(index)
    with pytest.raises(CheckpointError) as info:
        TensorFiles(tmp_path)
    assert fragment in str(info.value) and "\n" not in str(info.value)


def _folder_with_weights_elsewhere(tmp_path, tensors):
    outside = tmp_path / "outside"
    outside.mkdir()
    save_file(tensors, outside / "secret.safetensors")
    model = tmp_path / "model"
    model.mkdir()
    return model, outside / "secret.safetensors"


def test_a_weight_file_that_is_a_symlink_out_of_the_folder_is_refused(tmp_path, tensors):
    from r2m_hf.checkpoint import TensorFiles

    model, secret = _folder_with_weights_elsewhere(tmp_path, tensors)
    (model / "model.safetensors").symlink_to(secret)
    with pytest.raises(CheckpointError, match="outside the model folder") as info:
        TensorFiles(model)
    assert str(secret) in str(info.value)


def test_a_shard_that_is_a_symlink_out_of_the_folder_is_refused(tmp_path, tensors):
    from r2m_hf.checkpoint import TensorFiles

    model, secret = _folder_with_weights_elsewhere(tmp_path, tensors)
    (model / "model-1.safetensors").symlink_to(secret)
    (model / "model.safetensors.index.json").write_text('{"weight_map": {"f32": "model-1.safetensors"}}')
    with pytest.raises(CheckpointError, match="outside the model folder"):
        TensorFiles(model)


def test_an_index_that_is_a_symlink_out_of_the_folder_is_refused(tmp_path, tensors):
    from r2m_hf.checkpoint import TensorFiles

    model, secret = _folder_with_weights_elsewhere(tmp_path, tensors)
    index = secret.with_name("index.json")
    index.write_text('{"weight_map": {"f32": "secret.safetensors"}}')
    (model / "model.safetensors.index.json").symlink_to(index)
    with pytest.raises(CheckpointError, match="outside the model folder"):
        TensorFiles(model)


def test_symlinks_inside_the_folder_and_into_a_hub_snapshots_blob_store_are_followed(tmp_path, tensors):
    """The Hub cache layout: snapshots/<commit>/model.safetensors → ../../blobs/<sha256>."""
    from r2m_hf.checkpoint import TensorFiles

    repo = tmp_path / "hub" / "models--org--vit"
    (repo / "blobs").mkdir(parents=True)
    snapshot = repo / "snapshots" / ("0" * 40)
    snapshot.mkdir(parents=True)
    save_file(tensors, repo / "blobs" / ("a" * 64))
    (snapshot / "model.safetensors").symlink_to(Path("../../blobs") / ("a" * 64))
    assert sorted(TensorFiles(snapshot).keys()) == sorted(tensors)

    other = repo.parent / "models--org--other" / "blobs"
    other.mkdir(parents=True)
    save_file(tensors, other / ("b" * 64))
    (snapshot / "model.safetensors").unlink()
    (snapshot / "model.safetensors").symlink_to(other / ("b" * 64))  # another repo's blob store: refused
    with pytest.raises(CheckpointError, match="outside the model folder"):
        TensorFiles(snapshot)

    local = tmp_path / "local"
    local.mkdir()
    save_file(tensors, local / "real.safetensors")
    (local / "model.safetensors").symlink_to("real.safetensors")
    assert sorted(TensorFiles(local).keys()) == sorted(tensors)


def test_a_pickle_refused_by_weights_only_is_one_line(tmp_path):
    import os as _os

    from r2m_hf.checkpoint import TensorFiles

    class Evil:
        def __reduce__(self):
            return (_os.system, ("echo pwned",))

    torch.save({"w": Evil()}, tmp_path / "pytorch_model.bin")
    with pytest.raises(CheckpointError) as info:
        TensorFiles(tmp_path, allow_pickle=True)
    message = str(info.value)
    assert "\n" not in message and len(message) < 500, message
    assert "pickle checkpoint refused" in message and "system" in message and "weights_only=True" in message


def test_a_pickle_that_is_not_a_state_dict_is_one_line(tmp_path):
    from r2m_hf.checkpoint import TensorFiles

    torch.save([torch.ones(2)], tmp_path / "pytorch_model.bin")
    with pytest.raises(CheckpointError, match="holds a list, not a state dict"):
        TensorFiles(tmp_path, allow_pickle=True)
    (tmp_path / "pytorch_model.bin").write_bytes(b"garbage" * 10)
    with pytest.raises(CheckpointError, match="pickle checkpoint refused") as info:
        TensorFiles(tmp_path, allow_pickle=True)
    assert "\n" not in str(info.value)


@pytest.mark.parametrize("dtype", [torch.int64, torch.bool, torch.uint8])
def test_integer_or_bool_tensors_in_floating_positions_are_refused(zoo, tmp_path, dtype):
    import shutil

    from safetensors.torch import load_file

    from r2m_hf.planning import plan_merge
    from tests.conftest import recipe, write_yaml

    folder = tmp_path / "ints"
    shutil.copytree(zoo.specialists[1], folder)
    state = load_file(folder / "model.safetensors")
    key = next(k for k in state if k.endswith("query.weight") or k.endswith("q_proj.weight"))
    state[key] = state[key] > 0 if dtype == torch.bool else (state[key] * 10).to(dtype)
    save_file(state, folder / "model.safetensors")
    models = [{"model": str(zoo.specialists[0])}, {"model": str(folder)}]
    with pytest.raises(CheckpointError, match=f"is stored as {str(dtype).removeprefix('torch.')}") as info:
        plan_merge(write_yaml(tmp_path / "m.yaml", recipe(zoo, models=models)))
    assert key in str(info.value) and "floating-point parameter" in str(info.value)


def test_read_into_fills_a_stack_row_in_place_and_converts_other_dtypes(tmp_path):
    """The engine reads each specialist straight into its row of the stack; a stored dtype other than the compute
    dtype is converted, a buffer that is not one contiguous block is refused (a copy would be filled instead)."""
    from r2m_hf.checkpoint import TensorFiles

    weight = torch.randn(4, 6)
    save_file({"w": weight, "h": weight.half()}, str(tmp_path / "model.safetensors"))
    files = TensorFiles(tmp_path)
    stack = torch.zeros(3, 4, 6)
    files.read_into("w", stack[1])
    files.read_into("h", stack[2])
    assert torch.equal(stack[1], weight) and torch.equal(stack[2], weight.half().float())
    assert not stack[0].any()
    with pytest.raises(ValueError, match="contiguous"):
        SafetensorsFile(tmp_path / "model.safetensors").read_into("w", torch.empty(6, 4).mT)
