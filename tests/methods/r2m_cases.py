"""Shared fixtures of the R²M tests: a miniature ViT backbone, seeded specialists, and R²M run through the engine."""

from __future__ import annotations

import torch

from r2m_hf.engine import build_method, merge_state_dicts, run_passes
from r2m_hf.groups import Group
from r2m_hf.methods.base import TensorSlot

F64 = torch.float64
TOL = 1e-10

# A miniature ViT backbone: every group, 2-D weights both tall and wide, 3-D / 4-D subspace tensors.
SHAPES: dict[str, tuple[tuple[int, ...], Group]] = {
    "embeddings.patch_embeddings.projection.weight": ((12, 3, 2, 2), Group.SUBSPACE),
    "embeddings.patch_embeddings.projection.bias": ((12,), Group.VECTOR),
    "embeddings.position_embeddings": ((1, 5, 12), Group.SUBSPACE),
    "encoder.layer.0.layernorm_before.weight": ((12,), Group.VECTOR),
    "encoder.layer.0.layernorm_before.bias": ((12,), Group.VECTOR),
    "encoder.layer.0.intermediate.dense.weight": ((16, 12), Group.TRUNCATABLE),
    "encoder.layer.0.intermediate.dense.bias": ((16,), Group.VECTOR),
    "encoder.layer.0.output.dense.weight": ((12, 16), Group.TRUNCATABLE),
    "encoder.layer.0.output.dense.bias": ((12,), Group.VECTOR),
}
GROUPS = {name: group for name, (_, group) in SHAPES.items()}
SCALES = (1.0, 0.8, 0.6, 0.45)


def make_models(n: int, seed: int = 0, shared: float = 0.1, own: float = 0.1, scales=SCALES):
    """θ0 and N specialists θi = θ0 + shared·z + own·scale_i·zi (distinct sizes, so the spectrum has gaps)."""
    g = torch.Generator().manual_seed(seed)
    base = {name: torch.randn(shape, generator=g, dtype=F64) for name, (shape, _) in SHAPES.items()}
    common = {name: shared * torch.randn(shape, generator=g, dtype=F64) for name, (shape, _) in SHAPES.items()}
    models = [
        {
            name: base[name] + common[name] + own * scales[i] * torch.randn(shape, generator=g, dtype=F64)
            for name, (shape, _) in SHAPES.items()
        }
        for i in range(n)
    ]
    return base, models


def run(params, base, models, groups=GROUPS, dtype=F64):
    # The reference truncates with the exact SVD; the randomised default is bounded in its own test below.
    return merge_state_dicts("r2m", {"svd": "exact", **params}, base, models, groups, dtype=dtype)


def warnings_of(params, base, models, groups=GROUPS) -> list[str]:
    """Run R²M's statistics passes and return its warnings (`MergeMethod.warnings`)."""
    method = build_method("r2m", {"svd": "exact", **params}, [f"m{i}" for i in range(len(models))])

    def slots(_pass):
        for index, name in enumerate(groups):
            yield TensorSlot(name, groups[name], base[name], torch.stack([m[name] for m in models]), index)

    for _ in run_passes(method, slots):
        pass
    return method.warnings()


def max_diff(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> float:
    assert a.keys() == b.keys()
    return max(float((a[k].double() - b[k].double()).abs().max()) for k in a)


def per_matrix_ranks(report) -> dict:
    ranks = report["ranks_kept"]
    return ranks.get("per_matrix", ranks) if isinstance(ranks, dict) else ranks


def mean_model(base, models):
    return {k: base[k] + sum(m[k] - base[k] for m in models) / len(models) for k in base}
