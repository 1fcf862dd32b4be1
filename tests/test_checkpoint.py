"""The positioned-read safetensors reader: same tensors as the safetensors library, damaged files refused."""

from __future__ import annotations

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
