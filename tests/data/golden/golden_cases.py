"""The golden cases: (method, parameters) over the tiny zoo of ``r2m_hf.zoo.build_zoo`` (seed 0)."""

from __future__ import annotations

CASES = {
    "average": ("average", {}),
    "task_arithmetic": ("task_arithmetic", {}),
    "ties": ("ties", {}),
    "dare_linear": ("dare_linear", {}),
    "dare_ties": ("dare_ties", {}),
    "cart": ("cart", {}),
    "tsv_m": ("tsv_m", {}),
    "iso_c": ("iso_c", {}),
    "iso_cts": ("iso_cts", {}),
    "model_stock": ("model_stock", {}),
    "r2m": ("r2m", {}),
    "r2m_layer": ("r2m", {"real_scope": "layer", "norm_matching": "layer", "eta": "kit", "alpha": 0.6}),
    "r2m_exact_center": ("r2m", {"svd": "exact", "center": True, "block_weight": "fro", "blend": 0.5, "eta": "fixed"}),
    "r2m_energy_recompute": ("r2m", {"residual_energy": 0.5, "residual_cache": "recompute", "real_rank": 2}),
}


def recipe(zoo, method: str, parameters: dict):
    """The MergeConfig of one case."""
    from r2m_hf import MergeConfig

    return MergeConfig(
        merge_method=method,
        base_model=str(zoo.base),
        models=[{"model": str(p), "name": n} for p, n in zip(zoo.specialists, zoo.names, strict=True)],
        parameters=parameters,
    )
