"""Refactors keep the math: every method at its defaults (and R²M variants) merges the tiny zoo to the same tensors
as the commit the golden files were written on (``tests/data/golden/make_golden.py``)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

GOLDEN = Path(__file__).parent / "data" / "golden"
sys.path.insert(0, str(GOLDEN))

from golden_cases import CASES, recipe  # noqa: E402


@pytest.mark.parametrize("case", sorted(CASES))
def test_merge_matches_golden(case, zoo, tmp_path):
    from r2m_hf import merge

    method, parameters = CASES[case]
    out = tmp_path / case
    merge(recipe(zoo, method, parameters), out, progress=False)
    got = load_file(out / "model.safetensors")
    want = load_file(GOLDEN / f"{case}.safetensors")
    assert sorted(got) == sorted(want)
    for name, tensor in want.items():
        torch.testing.assert_close(got[name], tensor, rtol=1e-5, atol=1e-6, msg=lambda m, n=name: f"{case} {n}: {m}")
