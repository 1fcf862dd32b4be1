"""Multi-process merges: two CPU processes (gloo) give the same output as one process."""

from __future__ import annotations

import os
import shutil
import subprocess

import pytest
import torch
from conftest import write_yaml
from safetensors.torch import load_file

from r2m_hf.cli import main


def _launch(args: list[str], timeout: int = 300) -> subprocess.CompletedProcess:
    launcher = shutil.which("accelerate")
    if launcher is None:
        pytest.skip("accelerate's launcher is not on PATH")
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore"}
    # `--multi_gpu` is accelerate's torchrun-based launcher; with `--device cpu` (the default) the ranks use gloo.
    command = [launcher, "launch", "--multi_gpu", "--num_processes", "2", "-m", "r2m_hf", *args]
    return subprocess.run(command, env=env, capture_output=True, text=True, timeout=timeout)


@pytest.mark.parametrize(
    "method,parameters",
    [("r2m", {"norm_matching": "layer", "residual_rank_ratio": 0.25}), ("ties", {"trim": "global"})],
    ids=["r2m", "ties-global"],
)
def test_two_processes_match_one(zoo, tmp_path, method, parameters):
    recipe = {
        "merge_method": method,
        "base_model": str(zoo.base),
        "models": [{"model": str(p)} for p in zoo.specialists],
        "parameters": parameters,
    }
    config = write_yaml(tmp_path / "m.yaml", recipe)
    assert main(["merge", str(config), str(tmp_path / "one"), "--no-progress"]) == 0
    done = _launch(["merge", str(config), str(tmp_path / "two"), "--no-progress"])
    assert done.returncode == 0, done.stderr[-3000:]
    one = load_file(tmp_path / "one" / "model.safetensors")
    two = load_file(tmp_path / "two" / "model.safetensors")
    assert one.keys() == two.keys()
    for key in one:
        torch.testing.assert_close(two[key], one[key], rtol=1e-5, atol=1e-6, msg=key)
    report = (tmp_path / "two" / "merge_report.json").read_text()
    assert '"processes": 2' in report
    assert not (tmp_path / "two" / ".parts").exists()
    assert done.stdout.count("merged 3 specialists") == 1  # only rank 0 reports
    assert "(2 processes)." in (tmp_path / "two" / "README.md").read_text()  # rank 0 wrote the card
