"""Per-model weights are scale-free in every method: they reach it as w·N/Σw, so multiplying every weight by a
constant changes nothing and equal weights are the unweighted rule."""

from __future__ import annotations

import pytest
import torch

from r2m_hf.engine import build_method, merge_state_dicts
from r2m_hf.errors import ConfigError
from r2m_hf.groups import Group
from r2m_hf.methods.base import normalised_weights
from r2m_hf.methods.registry import builtin_methods

# SVD-eligible matrices (tall and wide, in and outside M), one too narrow for an SVD, a 4-D tensor and a vector.
LAYOUT = {
    "block.fc1.weight": ((12, 8), Group.TRUNCATABLE),
    "block.fc2.weight": ((6, 10), Group.TRUNCATABLE),
    "proj.weight": ((9, 5), Group.SUBSPACE),
    "narrow.weight": ((2, 9), Group.SUBSPACE),
    "patch.weight": ((4, 3, 2, 2), Group.SUBSPACE),
    "block.norm.bias": ((8,), Group.VECTOR),
}
GROUPS = {name: group for name, (_, group) in LAYOUT.items()}


def make_models(seed=0, n=3):
    g = torch.Generator().manual_seed(seed)
    base = {name: torch.randn(shape, generator=g, dtype=torch.float64) for name, (shape, _) in LAYOUT.items()}
    shared = {name: 0.5 * torch.randn(shape, generator=g, dtype=torch.float64) for name, (shape, _) in LAYOUT.items()}
    models = [
        {
            name: base[name] + shared[name] + torch.randn(shape, generator=g, dtype=torch.float64)
            for name, (shape, _) in LAYOUT.items()
        }
        for _ in range(n)
    ]
    return base, models


def merge(method, weights):
    base, models = make_models()
    parameters = {"svd": "exact"} if method in ("r2m", "cart") else None
    merged, _ = merge_state_dicts(method, parameters, base, models, GROUPS, weights=weights, dtype=torch.float64)
    return merged


def max_diff(a, b):
    return max(float((a[k] - b[k]).abs().max()) for k in a)


@pytest.mark.parametrize("method", sorted(builtin_methods()))
def test_weights_are_scale_free(method):
    weighted = merge(method, [1.0, 2.0, 1.0])
    assert max_diff(weighted, merge(method, [2.0, 4.0, 2.0])) < 1e-12
    assert max_diff(merge(method, [3.0, 3.0, 3.0]), merge(method, None)) < 1e-12
    assert max_diff(weighted, merge(method, None)) > 1e-3  # the weights do matter


def test_normalised_weights():
    assert torch.equal(normalised_weights(torch.ones(3, dtype=torch.float64)), torch.ones(3, dtype=torch.float64))
    w = normalised_weights(torch.tensor([1.0, 2.0, 1.0], dtype=torch.float64))
    assert torch.allclose(w, torch.tensor([0.75, 1.5, 0.75], dtype=torch.float64))
    with pytest.raises(ConfigError, match="weight"):
        normalised_weights(torch.zeros(3, dtype=torch.float64))


def test_all_zero_weights_are_a_config_error():
    with pytest.raises(ConfigError, match="weight"):
        build_method("task_arithmetic", None, ["a", "b"], weights=[0.0, 0.0])
