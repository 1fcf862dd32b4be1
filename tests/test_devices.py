"""Devices and dtypes: device resolution, half-precision inputs promoted for the math, `out_dtype` honoured."""

from __future__ import annotations

import pytest
import torch
from conftest import write_yaml
from safetensors.torch import load_file, save_file

from r2m_hf.cli import main
from r2m_hf.errors import ConfigError
from r2m_hf.merge import resolve_device


def test_auto_and_cpu_devices():
    assert resolve_device("cpu").type == "cpu"
    expected = "cuda" if torch.cuda.is_available() else "cpu"
    assert resolve_device("auto").type in {expected, "mps", "xpu", "npu"}


@pytest.mark.skipif(torch.cuda.is_available(), reason="a CUDA device is present")
def test_cuda_without_a_gpu_is_a_clear_error():
    with pytest.raises(ConfigError, match="no CUDA device"):
        resolve_device("cuda")


def test_bf16_inputs_are_promoted_and_written_in_out_dtype(zoo, tmp_path):
    import shutil

    folders = []
    for src in [zoo.base, *zoo.specialists]:
        dst = tmp_path / src.name
        shutil.copytree(src, dst)
        state = load_file(dst / "model.safetensors")
        save_file({k: v.to(torch.bfloat16) for k, v in state.items()}, dst / "model.safetensors")
        folders.append(dst)
    models = [{"model": str(f)} for f in folders[1:]]
    half = write_yaml(
        tmp_path / "half.yaml",
        {
            "merge_method": "r2m",
            "base_model": str(folders[0]),
            "models": models,
            "dtype": "float32",
            "out_dtype": "bfloat16",
        },
    )
    full = write_yaml(
        tmp_path / "full.yaml",
        {"merge_method": "r2m", "base_model": str(folders[0]), "models": models, "dtype": "float32"},
    )
    assert main(["merge", str(half), str(tmp_path / "h"), "--no-progress"]) == 0
    assert main(["merge", str(full), str(tmp_path / "f"), "--no-progress"]) == 0
    h, f = load_file(tmp_path / "h" / "model.safetensors"), load_file(tmp_path / "f" / "model.safetensors")
    assert all(v.dtype == torch.bfloat16 for v in h.values())
    assert all(v.dtype == torch.float32 for v in f.values())
    for key in h:  # the math ran in float32 on promoted inputs; only the final rounding differs
        torch.testing.assert_close(h[key], f[key].to(torch.bfloat16), rtol=0, atol=0)
