"""Shared fixtures of the baseline tests: a small layout covering every rule's branch, seeded specialists, and a
method run through the engine in float64."""

from __future__ import annotations

import torch

from r2m_hf.engine import merge_state_dicts
from r2m_hf.groups import Group

T = 3
BASELINES = [
    "average",
    "task_arithmetic",
    "ties",
    "dare_linear",
    "dare_ties",
    "cart",
    "tsv_m",
    "iso_c",
    "iso_cts",
    "model_stock",
]
# name -> (shape, group). 12×8 and 6×10 are SVD-eligible (tall and wide); 3×7 is eligible but Iso-CTS has s = 0;
# 2×16 has a smaller side below T; "proj" is an eligible matrix outside the truncatable group.
LAYOUT = {
    "blocks.0.attn.query.weight": ((12, 8), Group.TRUNCATABLE),
    "blocks.0.mlp.fc2.weight": ((6, 10), Group.TRUNCATABLE),
    "blocks.0.attn.query.bias": ((12,), Group.VECTOR),
    "blocks.0.norm.weight": ((8,), Group.VECTOR),
    "patch.weight": ((4, 3, 2, 2), Group.SUBSPACE),
    "proj.weight": ((9, 5), Group.SUBSPACE),
    "narrow.weight": ((3, 7), Group.SUBSPACE),
    "tiny.weight": ((2, 16), Group.SUBSPACE),
}
GROUPS = {name: group for name, (_, group) in LAYOUT.items()}
MATRICES = ["blocks.0.attn.query.weight", "blocks.0.mlp.fc2.weight", "proj.weight", "narrow.weight"]


def make_models(seed: int = 0, n: int = T, layout=LAYOUT):
    """A base and `n` specialists with a shared and a private part in every task vector."""
    gen = torch.Generator().manual_seed(seed)
    base, models = {}, [{} for _ in range(n)]
    for name, (shape, _) in layout.items():
        base[name] = torch.randn(shape, generator=gen, dtype=torch.float64)
        shared = 0.5 * torch.randn(shape, generator=gen, dtype=torch.float64)
        for m in models:
            m[name] = base[name] + shared + torch.randn(shape, generator=gen, dtype=torch.float64)
    return base, models


def task_vectors(base, models, name):
    return torch.stack([m[name] - base[name] for m in models])


def run(method, parameters=None, base=None, models=None, groups=GROUPS, **kwargs):
    if models is None:
        base, models = make_models()
    return merge_state_dicts(method, parameters, base, models, groups, dtype=torch.float64, **kwargs)


def close(a, b, tol=1e-10):
    return torch.allclose(a, b, atol=tol, rtol=tol)


def rescaled(weights):
    """The weights a method sees: w·N/Σw."""
    w = torch.tensor(weights, dtype=torch.float64)
    return w * len(weights) / w.sum()
