"""The tuner's merging: specialists read once, every trial merged in memory through the engine into one model.

A :class:`MergeSession` holds a checked :class:`~r2m_hf.planning.MergePlan`. When the base and the specialists'
backbone tensors fit in the memory budget (N + 1 copies of the backbone in the compute dtype), they are read once,
LoRA deltas applied, and kept on the CPU; otherwise every trial streams them from disk like ``merge`` does. Either
way a trial runs :func:`~r2m_hf.engine.run_passes` over the same :class:`~r2m_hf.methods.base.TensorSlot` stream as
the file merge, merges the heads with the shared head policy and loads the result into one model instance kept for
the whole run, so a trial's model is, tensor for tensor, the model ``merge`` writes for the same recipe.

When several processes score one trial (``accelerate launch`` / ``torchrun``, see :mod:`.tuner`), only rank 0 reads
the specialists and merges; the other ranks build a session with ``merging=False`` (no tensor read, no memory for
the task vectors) and :meth:`MergeSession.share` copies rank 0's merged weights into their model instance, so every
rank scores exactly the same model.
"""

from __future__ import annotations

import math
import time
from collections.abc import Iterator, Mapping
from typing import Any

import torch

from ..config import head_choice
from ..engine import build_method, run_passes
from ..errors import ConfigError, R2MError
from ..heads import merge_heads
from ..methods.base import TensorSlot


def available_memory() -> int | None:
    """Bytes of memory available to this process now (Linux ``MemAvailable``), or None where it cannot be read."""
    try:
        with open("/proc/meminfo", encoding="ascii") as info:
            for line in info:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


def image_processor(plan):
    """The image processor ``merge`` copies into the output folder (the base's, else the first specialist's)."""
    from transformers import AutoImageProcessor

    if plan.processor_dir is None:
        raise ConfigError(
            "tune: neither the base model nor any specialist has a preprocessor_config.json; the validation images "
            "cannot be prepared as the merged model expects"
        )
    return AutoImageProcessor.from_pretrained(str(plan.processor_dir), trust_remote_code=False)


class MergeSession:
    """Merge one recipe's specialists in memory with any method and parameters, one trial at a time.

    Args:
        plan (`MergePlan`): from :func:`r2m_hf.merge.plan_merge`.
        processor: the merged model's image processor (:func:`image_processor`).
        device (`str`): where the merge math and the model run (``cpu``, ``cuda``, ``cuda:N``).
        memory_limit (`int`, *optional*): bytes the kept task vectors may use; default half the available memory.
        merging (`bool`): False for a process that only receives the merged weights from rank 0 (:meth:`share`):
            it reads no tensor and keeps none.

    Attributes:
        in_memory (`bool`): whether the specialists' tensors are kept (else read from disk each trial).
        bytes_needed (`int`): what keeping them costs.
        read_seconds (`float`): time spent reading them once.
        model (`PreTrainedModel`): the instance every trial's merged weights are loaded into.
    """

    def __init__(self, plan, processor, *, device: str = "cpu", memory_limit: int | None = None, merging: bool = True):
        from transformers import AutoModelForImageClassification

        self.plan = plan
        self.device = torch.device(device)
        layout = plan.layout
        self.names = list(layout.backbone_names)
        self.weights = [s.weight for s in plan.specialists]
        itemsize = torch.empty((), dtype=plan.compute_dtype).element_size()
        elements = sum(math.prod(layout.shapes[n]) for n in self.names)
        self.bytes_needed = (len(plan.specialists) + (plan.base is not None)) * elements * itemsize
        if memory_limit is None:
            available = available_memory()
            memory_limit = available // 2 if available is not None else self.bytes_needed
        self.in_memory = merging and self.bytes_needed <= memory_limit
        self.processor = processor

        start = time.perf_counter()
        self._kept: dict[str, tuple[torch.Tensor | None, torch.Tensor]] = {}
        if self.in_memory:
            for name in self.names:
                self._kept[name] = self._read(name)
        self.head = None
        if merging:
            heads = [s.head(layout, plan.compute_dtype) for s in plan.specialists]
            self.head = merge_heads(heads, plan.names, head_choice(plan.config), self.weights)
        self.read_seconds = time.perf_counter() - start

        self.model = AutoModelForImageClassification.from_config(layout.config)
        self.model.to(device=self.device, dtype=plan.out_dtype).eval()

    def _read(self, name: str) -> tuple[torch.Tensor | None, torch.Tensor]:
        dtype = self.plan.compute_dtype
        base = self.plan.base.get(name).to(dtype) if self.plan.base is not None else None
        return base, torch.stack([s.tensor(name, base, dtype) for s in self.plan.specialists])

    def slots(self, pass_index: int = 0) -> Iterator[TensorSlot]:
        """The backbone as the engine streams it: one :class:`TensorSlot` per tensor, in plan order.

        Kept tensors are copied into each slot, so a method that edits its inputs in place cannot change the next
        trial's.
        """
        groups = self.plan.layout.groups
        for index, name in enumerate(self.names):
            if self.in_memory:
                base, models = self._kept[name]
                base, models = (None if base is None else base.clone()), models.clone()
            else:
                base, models = self._read(name)
            yield TensorSlot(
                name=name,
                group=groups[name],
                base=None if base is None else base.to(self.device),
                models=models.to(self.device),
                index=index,
            )

    def merge(self, method_name: str, parameters: Mapping[str, Any]) -> tuple[dict[str, torch.Tensor], list[str]]:
        """Merge the backbone with one method and its parameters.

        Args:
            method_name (`str`): the registry name.
            parameters (`Mapping[str, Any]`): the method's parameters (YAML keys, without ``head``).

        Returns:
            `tuple`: the merged state dict (backbone and head, in-memory names, the output dtype) and the method's
            warnings.
        """
        method = build_method(method_name, parameters, self.plan.names, self.weights)
        out = self.plan.out_dtype
        state = {slot.name: merged.to(out) for slot, merged in run_passes(method, self.slots)}
        weight, bias = self.head
        for name in self.plan.layout.head_names:
            state[name] = (weight if name.endswith("weight") else bias).to(device=self.device, dtype=out)
        return state, list(_method_warnings(method))

    def load(self, method_name: str, parameters: Mapping[str, Any]) -> tuple[Any, list[str]]:
        """Merge, load the result into the kept model instance and return it (eval mode) with the warnings."""
        state, warnings = self.merge(method_name, parameters)
        try:
            self.model.load_state_dict(state, strict=True)
        except RuntimeError as exc:  # a method returned a tensor of another shape: its bug, named in one line
            raise R2MError(f"{method_name}: merged weights do not fit the model: {str(exc).splitlines()[0]}") from None
        return self.model, warnings

    def share(self, group) -> Any:
        """Give every rank of `group` rank 0's merged model: rank 0 sends the weights it loaded, the others load them.

        Called by every rank after rank 0's :meth:`load`, tensor by tensor in the model's state-dict order (the same
        on every rank: one architecture), with the process group's backend (gloo on CPU, NCCL on GPUs).

        Returns:
            `PreTrainedModel`: the kept model instance, holding rank 0's merged weights (eval mode).
        """
        if not group.distributed:
            return self.model
        import torch.distributed as dist

        with torch.no_grad():
            for tensor in self.model.state_dict().values():  # views of the parameters and buffers: filled in place
                dist.broadcast(tensor, src=0)
        return self.model


def _method_warnings(method) -> list[str]:
    found = getattr(method, "warnings", None)
    found = found() if callable(found) else found
    return [str(w) for w in (found or [])]


__all__ = ["MergeSession", "available_memory", "image_processor"]
