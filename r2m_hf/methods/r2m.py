"""R²M: Real-aware Residual Model Merging (arXiv 2509.24367), every option documented in ``docs/method.md``.

The per-tensor rule is written as pure functions in :mod:`._r2m_math`; this module holds the parameters, the
statistics the rule needs from the whole model, and the method's declarations (tuning ranges, benchmark rows, memory,
report). The merge runs in three streaming passes so that no model is ever held whole:

0. the Gram matrix G = Σ_l w_l T_l T_lᵀ of the task vectors over the subspace group → the real-core coefficients c;
1. per tensor: the real core τcore, the fake residuals fi = τi − τcore and their rank truncation f̃i; only small
   statistics are kept (‖τcore‖², and the N × N Gram R^l = ⟨f̃i, f̃j⟩ of the truncated residuals), plus, by
   default, the truncated residuals of the truncatable matrices as low-rank factors;
2. merge: θ* = θ0 + τcore + η · Σi a_i f̃i with the norm-matching mix a_i = m̄ / (N ni).

The norms ni = ‖f̃i‖ and ‖τres‖ both follow from the R^l without another pass: ni² = Σ_l R^l_ii and
‖τres‖² = Σ_l aᵀ R^l a. The per-model weights wi are rescaled to sum to N (wi · N / Σw) and multiply the task
vectors, so only their ratios matter and unit weights give the unweighted rule.

Cost: each pass reads every tensor once and works in place of the slot's stack (τi, then fi, overwrite θi). Pass 0
keeps every tensor's N × N Gram T_l T_lᵀ (exact float64 sums of chunked products, no float64 copy of a tensor), from
which pass 1 gets ‖τcore‖², the ‖fi‖² and the R^l of every tensor kept whole without touching its data: only the
truncated matrices form their fi again and take their SVDs, and their R^l come from the factors' small products. The
merge adds η Σi a_i f̃i as one low-rank product, so no f̃i is ever formed. Pass 1 needs the c of the whole model's G,
so with ``real_scope: global`` passes 0 and 1 cannot share a read; with ``real_scope: layer`` each tensor's c comes
from its own block and they do (two passes instead of three).
"""

from __future__ import annotations

import zlib
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, Literal

from pydantic import Field

from ..errors import ConfigError
from ..groups import Group
from ..linalg import gram as linalg_gram
from ..linalg import rank_from_ratio
from . import _r2m_math as rule
from ._common import format_number, format_numbers
from .base import MergeMethod, MethodParameters, Sweep, TensorSlot, Tunable

if TYPE_CHECKING:
    import torch


class R2MParameters(MethodParameters):
    """R²M's parameters (``docs/method.md`` explains each and how they interact)."""

    real_rank: int = Field(1, ge=1, description="k: eigenvectors of the Gram matrix spanning the real core (k ≤ N)")
    center: bool = Field(False, description="centre each task-vector block (row mean over its entries) before the Gram")
    block_weight: Literal["none", "fro", "size"] = Field(
        "none", description="weight of each tensor's Gram block: 1, 1/‖T_l‖², or P_l/‖T_l‖²"
    )
    real_scope: Literal["global", "layer"] = Field(
        "global", description="one set of coefficients c for the model, or one per tensor"
    )
    blend: float = Field(1.0, ge=0.0, le=1.0, description="β: τcore ← (1−β)·τ̄ + β·τcore")
    # ρ = 0.03 and α = 1.5 (η relative) were chosen on the offline benchmark's validation split; the method notes'
    # brackets say ρ = 0.1, α = 0.6 (see examples/offline_benchmark/full/RESULTS.md, "Defaults").
    residual_rank_ratio: float = Field(0.03, ge=0.0, le=1.0, description="ρ: rank kept per truncatable matrix")
    residual_energy: float | None = Field(None, gt=0.0, le=1.0, description="e: energy rule instead of ρ")
    norm_matching: Literal["global", "layer", "none"] = Field(
        "global", description="rescale the truncated residuals to their mean norm over the model, per tensor, or not"
    )
    alpha: float = Field(1.5, ge=0.0, description="α: residual strength (see `eta`)")
    eta: Literal["relative", "kit", "fixed"] = Field(
        "relative", description="η: α‖τcore‖/‖τres‖ (relative), α‖τcore‖ (kit) or α (fixed)"
    )
    svd: Literal["exact", "randomized"] = Field(
        "randomized",
        description="truncation SVD: seeded randomised range finder (default; error within ~1-2% of the optimal "
        "rank-r error, tested) or exact; the energy rule always uses the exact SVD (it needs the full spectrum)",
    )
    residual_cache: Literal["memory", "recompute"] = Field(
        "memory", description="keep truncated residuals as low-rank factors between passes, or recompute their SVDs"
    )


class R2M(MergeMethod):
    """Real-aware Residual Model Merging: shared real core + truncated, norm-matched fake residuals."""

    name = "r2m"
    parameters_model = R2MParameters
    statistics_passes = 2
    description = "R²M: θ0 + τcore (low-rank real core) + η Σ a_i f̃i (rank-truncated, norm-matched fake residuals)"
    order = 100
    search_space = {
        "real_rank": Tunable(1, 2, integer=True),  # N ≥ 2 always, so k ≤ 2 is valid for every merge
        "blend": Tunable(0.0, 1.0),
        "residual_rank_ratio": Tunable(0.005, 0.3, log=True),
        "alpha": Tunable(0.1, 4.0, log=True),
        "eta": Tunable(choices=("relative", "kit", "fixed")),
    }

    def __init__(self, parameters: R2MParameters, weights: torch.Tensor, names: list[str]):
        import torch

        super().__init__(parameters, weights, names)
        p = self.parameters
        n = self.n_models
        if p.real_rank > n:
            raise ConfigError(f"parameters.real_rank: {p.real_rank} exceeds the number of specialists ({n})")
        # pass 0: G, then c and G's eigenvalues (or c per tensor with real_scope: layer)
        self._gram = torch.zeros(n, n, dtype=torch.float64)
        self.coefficients: torch.Tensor | None = None
        self.eigenvalues: torch.Tensor | None = None
        self._layer_coefficients: dict[int, torch.Tensor] = {}
        self._layer_names: dict[int, str] = {}
        # pass 0 → 1: every tensor's T_l T_lᵀ (N × N), from which pass 1 gets all but the truncated matrices' R^l
        self._tensor_grams: dict[int, torch.Tensor] = {}
        # pass 1: ‖τcore‖², ‖fi‖², Σ_l R^l (and R^l per tensor for norm_matching: layer), the factor cache
        self._core_sq = torch.zeros((), dtype=torch.float64)
        self._before_sq = torch.zeros(n, dtype=torch.float64)
        self._residual_gram = torch.zeros(n, n, dtype=torch.float64)
        self._layer_grams: dict[int, torch.Tensor] = {}
        self._layer_res_sq = torch.zeros((), dtype=torch.float64)
        self._layer_res_reduced = False
        self._cache: dict[int, list[rule.Factors]] = {}
        self._ranks: dict[str, list[int]] = {}
        # end of pass 1: the global mix a, the norms and η
        self.mix: torch.Tensor | None = None
        self.core_norm = 0.0
        self.residual_norm = 0.0
        self.eta = 0.0
        self.residual_dropped = False
        self._warnings: list[str] = []
        self._unit_weights = bool((self.weights == 1).all())
        # The statistics stages each engine pass runs: 0 = the Gram G, 1 = the residual statistics. With
        # `real_scope: layer` every tensor's c comes from its own Gram block, so both share one read of the tensor.
        self._stages: list[tuple[int, ...]] = [(0, 1)] if p.real_scope == "layer" else [(0,), (1,)]
        self.statistics_passes = len(self._stages)

    # ---------------------------------------------------------------- one tensor, through the pure rule
    def _task_vectors(self, slot: TensorSlot) -> torch.Tensor:
        """The weighted task vectors wi τi of one tensor (N × shape), formed in place of the slot's models."""
        if slot.base is None:
            raise ValueError(f"tensor {slot.name}: this method needs a base model")
        tv = slot.models.sub_(slot.base)
        if not self._unit_weights:
            tv.mul_(self.weights.to(dtype=tv.dtype, device=tv.device).view(-1, *([1] * len(slot.shape))))
        return tv

    def _coefficients_for(self, slot: TensorSlot) -> torch.Tensor | None:
        if not slot.group.in_subspace:
            return None
        return self._layer_coefficients[slot.index] if self.parameters.real_scope == "layer" else self.coefficients

    def _core(self, slot: TensorSlot) -> tuple[torch.Tensor, torch.Tensor]:
        """(τcore, τ): the real core of one tensor and its weighted task vectors (in place of the slot's models)."""
        tv = self._task_vectors(slot)
        return rule.real_core(tv, self._coefficients_for(slot), self.parameters.blend), tv

    def _route(self, slot: TensorSlot) -> str:
        p = self.parameters
        return rule.truncation_route(
            slot.group, tuple(slot.shape), self.n_models, p.residual_rank_ratio, p.residual_energy
        )

    def _truncation(self, slot: TensorSlot, residuals: torch.Tensor) -> list[rule.Factors] | None:
        """The factors of a truncated matrix's f̃i (cached, else computed); `None` when r covers the full rank."""
        p = self.parameters
        factors = self._cache.get(slot.index)
        if factors is None:
            factors = rule.truncate_residuals(
                residuals,
                rank_ratio=p.residual_rank_ratio,
                energy=p.residual_energy,
                svd_method=p.svd,
                seed=zlib.crc32(slot.name.encode()),
            )
        if factors is None:  # r covers the full rank: nothing to truncate
            self._ranks.setdefault(slot.name, [min(slot.shape)] * self.n_models)
            return None
        self._ranks.setdefault(slot.name, [vh.shape[0] for _, vh in factors])
        if p.residual_cache == "memory":
            self._cache[slot.index] = factors
        return factors

    def _mix_for(self, index: int) -> torch.Tensor:
        """a: the weights of the f̃i in τres for tensor `index`."""
        p = self.parameters
        if p.norm_matching == "none":
            return rule.uniform_mix(self.n_models)
        if p.norm_matching == "global":
            return self.mix
        return rule.norm_matching_mix(self._layer_grams[index].diagonal())

    # ---------------------------------------------------------------- passes
    def observe(self, pass_index: int, slot: TensorSlot) -> None:
        stages = self._stages[pass_index]
        tv = None
        if 0 in stages:
            tv = self._task_vectors(slot)
            self._observe_gram(slot, tv)
        if 1 in stages:
            self._observe_residuals(slot, tv)

    def _observe_gram(self, slot: TensorSlot, tv: torch.Tensor) -> None:
        """Stage 0: the tensor's Gram T_l T_lᵀ (kept), its block of G, and its own c with ``real_scope: layer``."""
        p = self.parameters
        flat = tv.reshape(self.n_models, -1)
        product = linalg_gram(flat).cpu()
        self._tensor_grams[slot.index] = product
        if not slot.group.in_subspace:
            return
        block = rule.gram_block(flat, center=p.center, block_weight=p.block_weight, product=product).cpu()
        if p.real_scope == "layer":
            self._layer_coefficients[slot.index] = rule.real_core_coefficients(block, p.real_rank)[0]
            self._layer_names[slot.index] = slot.name
        self._gram += block

    def _observe_residuals(self, slot: TensorSlot, tv: torch.Tensor | None) -> None:
        """Stage 1: ‖τcore‖², ‖fi‖² and the Gram R^l of the f̃i.

        All but the truncated matrices' R^l follow from the tensor's Gram T_l T_lᵀ (stage 0) and the core weights γ
        alone; only a truncated matrix reads its task vectors again, to form fi (in place) and truncate it.
        """
        import torch

        n = self.n_models
        coefficients = self._coefficients_for(slot)
        core_sq, kept = rule.residual_statistics(
            self._tensor_grams.pop(slot.index), rule.core_weights(coefficients, n, self.parameters.blend)
        )
        gram = kept  # f̃i = fi: kept whole (or r covers the full rank)
        route = self._route(slot)
        if route == "drop":
            gram = torch.zeros(n, n, dtype=torch.float64)
        elif route == "truncate":
            tv = self._task_vectors(slot) if tv is None else tv
            residuals = tv.sub_(rule.real_core(tv, coefficients, self.parameters.blend))  # fi = τi − τcore
            factors = self._truncation(slot, residuals)
            if factors is not None:  # ⟨f̃i, f̃j⟩ from the factors: the f̃i are never formed
                gram = rule.factor_gram(factors).cpu()
        self._core_sq += core_sq
        self._before_sq += kept.diagonal()
        self._residual_gram += gram
        if self.parameters.norm_matching == "layer":
            self._layer_grams[slot.index] = gram

    def reduce(self, pass_index: int, all_reduce) -> None:
        for stage in self._stages[pass_index]:
            if stage == 0:
                all_reduce(self._gram)
            else:
                self._reduce_residual_statistics(all_reduce)

    def _reduce_residual_statistics(self, all_reduce) -> None:
        import torch

        if self.parameters.norm_matching == "layer":
            self._layer_res_sq = self._local_layer_residual_sq()
            self._layer_res_reduced = True
        packed = torch.cat(
            [self._core_sq.view(1), self._before_sq, self._residual_gram.flatten(), self._layer_res_sq.view(1)]
        )
        all_reduce(packed)
        n = self.n_models
        self._core_sq = packed[0].clone()
        self._before_sq = packed[1 : 1 + n].clone()
        self._residual_gram = packed[1 + n : 1 + n + n * n].view(n, n).clone()
        self._layer_res_sq = packed[-1].clone()

    def _local_layer_residual_sq(self) -> torch.Tensor:
        """Σ_l aᵀ R^l a with a per-tensor mix (``norm_matching: layer``), over this process's tensors."""
        import torch

        total = torch.zeros((), dtype=torch.float64)
        for gram in self._layer_grams.values():
            a = rule.norm_matching_mix(gram.diagonal())
            total += a @ gram @ a
        return total

    def end_pass(self, pass_index: int) -> None:
        for stage in self._stages[pass_index]:
            if stage == 0:
                self.coefficients, self.eigenvalues = rule.real_core_coefficients(self._gram, self.parameters.real_rank)
            else:
                self._end_residual_statistics()

    def _end_residual_statistics(self) -> None:
        """The mix a, the norms ‖τcore‖ and ‖τres‖, and η."""
        p = self.parameters
        if p.norm_matching == "layer":
            res_sq = self._layer_res_sq if self._layer_res_reduced else self._local_layer_residual_sq()
        else:
            diagonal = self._residual_gram.diagonal()
            self.mix = (
                rule.norm_matching_mix(diagonal) if p.norm_matching == "global" else rule.uniform_mix(len(diagonal))
            )
            res_sq = self.mix @ self._residual_gram @ self.mix
        self.core_norm = rule.norm(self._core_sq)
        self.residual_norm = rule.norm(res_sq)
        self.eta, self.residual_dropped = rule.residual_strength(p.eta, p.alpha, self.core_norm, self.residual_norm)
        c = self.coefficients if p.real_scope == "global" else None
        self._warnings = rule.diagnose(c, self.spectral_gap, p.real_rank)

    def merge(self, slot: TensorSlot) -> torch.Tensor:
        cached = self._cache.pop(slot.index, None)
        core, tv = self._core(slot)
        route = self._route(slot)
        if self.eta == 0.0 or route == "drop":
            return slot.base + core
        mix = self._mix_for(slot.index)
        if cached is not None:  # θ0 + τcore + η Σ a_i f̃i straight from the factors
            return rule.combine(slot.base, core, cached, self.eta, mix)
        residuals = tv.sub_(core)
        factors = self._truncation(slot, residuals) if route == "truncate" else None
        return rule.combine(slot.base, core, residuals if factors is None else factors, self.eta, mix)

    # ---------------------------------------------------------------- declarations
    def extra_memory_bytes(
        self, shapes: Mapping[str, tuple[int, ...]], groups: Mapping[str, Group], itemsize: int
    ) -> int:
        """The cache of truncated residuals between passes: N factor pairs (m × r and r × n) per truncated matrix.

        Nothing with ``residual_cache: recompute``, with ρ = 0, or where r covers the full rank; the energy rule's
        rank is bounded by the full rank min(m, n). (Every tensor's N × N float64 Gram, kept from pass 0 to pass 1,
        is a few kilobytes and not counted.)
        """
        p = self.parameters
        if p.residual_cache != "memory":
            return 0
        total = 0
        for name, shape in shapes.items():
            shape = tuple(shape)
            route = rule.truncation_route(groups[name], shape, self.n_models, p.residual_rank_ratio, p.residual_energy)
            if route != "truncate":
                continue
            full = min(shape)
            r = full if p.residual_energy is not None else rank_from_ratio(shape, p.residual_rank_ratio)
            if p.residual_energy is None and r >= full:
                continue
            total += self.n_models * r * (shape[0] + shape[1]) * itemsize
        return total

    def warnings(self) -> list[str]:
        return list(self._warnings)

    @classmethod
    def sensitivity_sweeps(cls) -> list[Sweep]:
        """ρ and α around the tuned point (its η mode, blend and real rank held): the residual's rank and strength."""
        return [
            Sweep("rho", "residual_rank_ratio", (0.0, 0.01, 0.1, 1.0)),
            Sweep("alpha", "alpha", (0.0, 1.0, 2.0, 4.0)),
        ]

    @classmethod
    def summary_rows(cls, report: Mapping[str, Any]) -> list[tuple[str, str]]:
        ranks = report.get("ranks_kept") or {}
        layer = "layer_coefficients" in report
        return [
            (
                "real-core coefficients c",
                "one per tensor (real_scope: layer)" if layer else format_numbers(report.get("coefficients"), ".4f"),
            ),
            ("Gram eigenvalues", format_numbers(report.get("gram_eigenvalues"))),
            ("spectral gap", format_number(report.get("spectral_gap"), ".4f")),
            (f"η ({report.get('eta_mode', '?')})", format_number(report.get("eta"))),
            ("‖τcore‖", format_number(report.get("core_norm"))),
            ("‖τres‖", format_number(report.get("residual_norm"))),
            ("residual norms before truncation", format_numbers(report.get("residual_norms_before"))),
            ("residual norms after truncation", format_numbers(report.get("residual_norms_after"))),
            (
                "ranks kept (min / mean / max)",
                " / ".join(format_number(ranks.get(k), ".3g") for k in ("min", "mean", "max")),
            ),
            ("residual dropped", format_number(report.get("residual_dropped"))),
        ]

    # ---------------------------------------------------------------- diagnostics
    @property
    def spectral_gap(self) -> float | None:
        """(λ_k − λ_{k+1}) / λ_1 of the Gram matrix, or None when k = N."""
        return rule.spectral_gap(self.eigenvalues, self.parameters.real_rank)

    def report(self) -> dict[str, Any]:
        ranks = [r for rs in self._ranks.values() for r in rs]
        report = {
            "gram_eigenvalues": [] if self.eigenvalues is None else [float(x) for x in self.eigenvalues],
            "spectral_gap": self.spectral_gap,
            "coefficients": None if self.coefficients is None else [float(x) for x in self.coefficients],
            "core_norm": self.core_norm,
            "residual_norm": self.residual_norm,
            "eta": self.eta,
            "eta_mode": self.parameters.eta,
            "residual_norms_before": [rule.norm(x) for x in self._before_sq],
            "residual_norms_after": [rule.norm(x) for x in self._residual_gram.diagonal()],
            "ranks_kept": {
                "per_matrix": self._ranks,
                "min": min(ranks) if ranks else None,
                "max": max(ranks) if ranks else None,
                "mean": sum(ranks) / len(ranks) if ranks else None,
            },
            "residual_dropped": self.residual_dropped,
        }
        if self.parameters.real_scope == "layer":
            report["layer_coefficients"] = {
                self._layer_names[i]: [round(float(x), 6) for x in c]
                for i, c in sorted(self._layer_coefficients.items())
            }
        return report
