"""Multi-process merges: ``accelerate launch -m r2m_hf merge …`` (or ``torchrun``) splits the tensors across ranks.

Each rank merges every `world`-th tensor of the plan; whole-model statistics (R²M's Gram matrix and norms, global
TIES thresholds) are summed across ranks with `all_reduce` before they are used; each rank streams its merged tensors
into a part file in the shared temporary output folder, and rank 0 assembles the final files. The processes must
share a filesystem (one machine, or a shared output path).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

import torch


@dataclass
class ProcessGroup:
    """This process's place in the merge: rank, world size, and the collectives the merge needs."""

    rank: int = 0
    world_size: int = 1
    device: torch.device | None = None

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1

    def all_reduce(self, tensor: torch.Tensor) -> None:
        """Sum `tensor` in place over all ranks."""
        if not self.distributed:
            return
        import torch.distributed as dist

        if self.device is not None and self.device.type == "cuda":  # NCCL reduces GPU tensors only
            staged = tensor.to(self.device)
            dist.all_reduce(staged)
            tensor.copy_(staged.cpu())
        else:
            dist.all_reduce(tensor)

    def broadcast(self, value: Any) -> Any:
        """Rank 0's `value` on every rank."""
        if not self.distributed:
            return value
        import torch.distributed as dist

        box = [value]
        dist.broadcast_object_list(box, src=0)
        return box[0]

    def barrier(self) -> None:
        if self.distributed:
            import torch.distributed as dist

            dist.barrier()


def process_group(device: torch.device) -> ProcessGroup:
    """The current process group: initialised through accelerate when launched with several processes."""
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        return ProcessGroup()
    from accelerate import PartialState

    if device.type == "cpu":
        os.environ.setdefault("ACCELERATE_USE_CPU", "true")
    state = PartialState(cpu=device.type == "cpu", backend="gloo" if device.type == "cpu" else None)
    return ProcessGroup(rank=state.process_index, world_size=state.num_processes, device=device)
