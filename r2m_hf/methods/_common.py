"""Small pure tensor steps shared by the baseline merge methods, in the vocabulary of peft's ``merge_utils``.

Each function takes the task vectors stacked on a leading dimension (N × shape) and returns a tensor; a method is a
short composition of them (TIES = trim → weigh → elect sign → disjoint merge; DARE = drop → rescale → …). The one
stateful piece, :class:`GlobalMagnitudeThreshold`, finds TIES's whole-model trim threshold in two streaming passes.
"""

from __future__ import annotations

import math
import zlib
from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Any, Literal

from pydantic import ConfigDict, Field

from .base import MethodParameters, TensorSlot, mean_task_vector

if TYPE_CHECKING:
    import torch


class ScaledParameters(MethodParameters):
    """Parameters of a method with a scaling coefficient λ (YAML key ``lambda``)."""

    model_config = ConfigDict(populate_by_name=True)

    lambda_: float = Field(1.0, alias="lambda", ge=0.0, description="λ: scale of the merged task vector")


def format_number(value: Any, spec: str = ".4g") -> str:
    """Format a report value for a summary row: numbers with `spec`, ``—`` for a missing or non-finite one."""
    if value is None or isinstance(value, bool) or not isinstance(value, (int, float)):
        return "—" if value is None else str(value)
    return f"{value:{spec}}" if math.isfinite(value) else "—"


def format_numbers(values: Iterable[Any] | None, spec: str = ".4g") -> str:
    """Format a list of report values as ``[a, b, …]`` (``—`` when missing)."""
    return "—" if values is None else "[" + ", ".join(format_number(v, spec) for v in values) + "]"


def svd_path_rows(report: Mapping[str, Any]) -> list[tuple[str, str]]:
    """Summary rows of an SVD method: how many tensors took the SVD rule and how many the vector rule θ0 + λ τ̄."""
    tensors = report.get("tensors") or {}
    return [
        ("tensors on the SVD path", format_number(tensors.get("svd"))),
        ("tensors on the vector rule θ0 + λ τ̄", format_number(tensors.get("vector_rule"))),
    ]


def broadcast_weights(weights: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """Reshape per-model weights (N,) to broadcast against a stack `like` (N × shape), in its dtype and device.

    Args:
        weights (`torch.Tensor`): the per-model weights wt, shape (N,).
        like (`torch.Tensor`): the stacked tensors the weights will multiply.

    Returns:
        `torch.Tensor`: the weights with shape (N, 1, …, 1).
    """
    return weights.to(dtype=like.dtype, device=like.device).view(-1, *([1] * (like.dim() - 1)))


def weigh(stack: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """Return wt · τt for every model of a stack (N × shape)."""
    return stack * broadcast_weights(weights, stack)


def vector_rule(slot: TensorSlot, weights: torch.Tensor, scale: float = 1.0) -> torch.Tensor:
    """The rule of the vector group and of matrices too small for an SVD method: θ0 + λ · τ̄.

    Args:
        slot (`TensorSlot`): the tensor to merge.
        weights (`torch.Tensor`): per-model weights; τ̄ = Σ wt τt / Σ wt (the plain mean for unit weights).
        scale (`float`): the method's λ.

    Returns:
        `torch.Tensor`: the merged tensor, in the base's dtype.
    """
    return (slot.base + scale * mean_task_vector(slot, weights)).to(slot.base.dtype)


def magnitude_trim(stack: torch.Tensor, density: float) -> torch.Tensor:
    """Keep the top-`density` entries of each τt by magnitude, per tensor (peft's ``magnitude_based_pruning``).

    Args:
        stack (`torch.Tensor`): task vectors, N × shape.
        density (`float`): fraction kept, k = ⌊density · numel⌋ entries per model.

    Returns:
        `torch.Tensor`: the trimmed stack (dropped entries are 0).
    """
    import torch

    flat = stack.reshape(stack.shape[0], -1)
    k = int(density * flat.shape[1])
    if k >= flat.shape[1]:
        return stack
    keep = torch.zeros_like(flat, dtype=torch.bool)
    if k > 0:
        keep.scatter_(1, flat.abs().topk(k, dim=1).indices, True)
    return (flat * keep).reshape(stack.shape)


def elect_sign(stack: torch.Tensor) -> torch.Tensor:
    """Mask of the entries whose sign agrees with the elected sign, sign(Σt τt) with 0 → + (peft's "total").

    Args:
        stack (`torch.Tensor`): (trimmed, weighted) task vectors, N × shape.

    Returns:
        `torch.Tensor`: boolean mask, N × shape; zero entries never agree.
    """
    import torch

    elected = torch.where(stack.sum(dim=0) >= 0, 1.0, -1.0).to(stack.dtype)
    return stack.sign() == elected


def disjoint_merge(
    stack: torch.Tensor, agree: torch.Tensor, reduction: Literal["mean", "sum"] = "mean"
) -> torch.Tensor:
    """Combine the entries that agree with the elected sign: their mean (TIES's disjoint mean) or their sum.

    Args:
        stack (`torch.Tensor`): (trimmed, weighted) task vectors, N × shape.
        agree (`torch.Tensor`): the mask from :func:`elect_sign`.
        reduction (`str`): ``mean`` divides by the number of agreeing entries (at least 1), ``sum`` does not.

    Returns:
        `torch.Tensor`: the merged task vector (shape of one model's tensor).
    """
    total = (stack * agree).sum(dim=0)
    if reduction == "sum":
        return total
    return total / agree.sum(dim=0).clamp(min=1).to(stack.dtype)


def dare_seed(seed: int, name: str, model_index: int) -> int:
    """Generator seed for DARE's drop mask of one tensor of one model, stable across runs, orders and processes."""
    return zlib.crc32(f"{seed}\0{name}\0{model_index}".encode())


def dare_drop(stack: torch.Tensor, density: float, seed: int, name: str) -> torch.Tensor:
    """Keep each entry with probability `density` and rescale the kept ones by 1/density (DARE).

    The mask of model t is drawn like peft's ``random_pruning`` (a Bernoulli draw on a tensor of the task vector's
    dtype) but from a CPU generator seeded with :func:`dare_seed`, so it does not depend on the global RNG, on the
    order the tensors arrive in, or on the device.

    Args:
        stack (`torch.Tensor`): task vectors, N × shape.
        density (`float`): keep probability p (0 < p ≤ 1); p = 1 returns the stack unchanged.
        seed (`int`): the method's seed.
        name (`str`): the tensor's canonical name.

    Returns:
        `torch.Tensor`: the dropped and rescaled stack.
    """
    import torch

    if density >= 1:
        return stack
    dropped = torch.empty_like(stack)
    for t in range(stack.shape[0]):
        generator = torch.Generator(device="cpu").manual_seed(dare_seed(seed, name, t))
        keep = torch.bernoulli(torch.full(stack.shape[1:], density, dtype=stack.dtype), generator=generator)
        dropped[t] = stack[t] * keep.to(stack.device) / density
    return dropped


class KeptCounter:
    """Counts, per specialist, the entries a trim or a drop kept (for the report)."""

    def __init__(self, n_models: int):
        import torch

        self.kept = torch.zeros(n_models, dtype=torch.int64)
        self.total = 0

    def add(self, trimmed: torch.Tensor) -> None:
        """Count the non-zero entries of one trimmed or dropped stack (N × shape)."""
        self.kept += trimmed.reshape(trimmed.shape[0], -1).ne(0).sum(dim=1).cpu()
        self.total += trimmed[0].numel()

    def fractions(self) -> list[float]:
        """Each specialist's kept fraction over every tensor seen so far."""
        return [round(float(k) / max(self.total, 1), 6) for k in self.kept]


def magnitude_keys(tensor: torch.Tensor) -> torch.Tensor:
    """Integer keys ordered like |x|: the bit pattern of |x| as float32 (monotone for non-negative floats).

    float64 magnitudes are ranked after rounding to float32; bf16/fp16 convert exactly.
    """
    import torch

    return tensor.abs().to(torch.float32).view(torch.int32).to(torch.int64)


class GlobalMagnitudeThreshold:
    """Per-model whole-model top-k magnitude threshold, found exactly in two streaming passes.

    Pass 0 histograms the high 15 bits of every |τt| key (sign excluded), which locates the bin holding the k-th
    largest magnitude, k = ⌊density · P⌋ with P the model's number of entries; pass 1 histograms the low 16 bits of
    the keys inside that bin, which pins the k-th largest key exactly. Memory is two N × 2¹⁶ count tables whatever the
    model size, and both are plain sums, so a multi-process merge all-reduces them. Entries whose magnitude equals the
    threshold are all kept (ties with the k-th largest can keep a few more than k).

    Args:
        n_models (`int`): number of specialists N.
        density (`float`): fraction of each model's entries kept.
    """

    HIGH_BITS = 15
    LOW_BITS = 16

    def __init__(self, n_models: int, density: float):
        import torch

        self.density = density
        self.high = torch.zeros(n_models, 1 << self.HIGH_BITS, dtype=torch.int64)
        self.low = torch.zeros(n_models, 1 << self.LOW_BITS, dtype=torch.int64)
        self.k: torch.Tensor | None = None
        self.bin: torch.Tensor | None = None
        self.needed: torch.Tensor | None = None
        self.thresholds: torch.Tensor | None = None  # keys, (N,)

    def observe(self, pass_index: int, stack: torch.Tensor) -> None:
        """Add one tensor's task vectors (N × shape) to the histogram of pass `pass_index`."""
        import torch

        for t in range(stack.shape[0]):
            keys = magnitude_keys(stack[t].reshape(-1)).cpu()
            if pass_index == 0:
                self.high[t] += torch.bincount(keys >> self.LOW_BITS, minlength=self.high.shape[1])
            else:
                inside = keys[(keys >> self.LOW_BITS) == self.bin[t]] & ((1 << self.LOW_BITS) - 1)
                self.low[t] += torch.bincount(inside, minlength=self.low.shape[1])

    def reduce(self, pass_index: int, all_reduce) -> None:
        """Sum the histogram of pass `pass_index` over processes."""
        all_reduce(self.high if pass_index == 0 else self.low)

    def end_pass(self, pass_index: int) -> None:
        """Locate the bin (pass 0) or the exact key (pass 1) of each model's k-th largest magnitude."""
        if pass_index == 0:
            self.k = (self.density * self.high.sum(dim=1).double()).floor().long()
            self.bin, above = _kth_largest_bin(self.high, self.k)
            self.needed = self.k - above
        else:
            sub, _ = _kth_largest_bin(self.low, self.needed)
            self.thresholds = (self.bin << self.LOW_BITS) | sub
            self.thresholds[self.k == 0] = 1 << 31  # above every float32 key: keep nothing

    def trim(self, stack: torch.Tensor) -> torch.Tensor:
        """Zero the entries of each τt below its model's global threshold."""
        keys = magnitude_keys(stack)
        thresholds = self.thresholds.to(keys.device).view(-1, *([1] * (stack.dim() - 1)))
        return stack * (keys >= thresholds)

    def threshold_values(self) -> list[float]:
        """Each model's threshold as a magnitude (inf where nothing is kept)."""
        import torch

        keys = self.thresholds.clamp(max=0x7F800000).to(torch.int32)
        return [float(v) for v in keys.view(torch.float32)]


def _kth_largest_bin(counts: torch.Tensor, k: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """For count tables (N × B) return, per row, the highest bin b with #(entries in bins ≥ b) ≥ k, and #(bins > b)."""
    at_or_above = counts.flip(1).cumsum(1).flip(1)
    b = ((at_or_above >= k.view(-1, 1)).sum(dim=1) - 1).clamp(min=0)
    strictly_above = at_or_above.gather(1, b.view(-1, 1)).squeeze(1) - counts.gather(1, b.view(-1, 1)).squeeze(1)
    return b, strictly_above
