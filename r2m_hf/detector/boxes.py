"""Box arithmetic on (N, 4) tensors of ``x0, y0, x1, y1``: greedy non-maximum suppression and squaring.

Plain torch operations only (no torchvision), so the face detectors run beside any CPU or CUDA torch build.
"""

from __future__ import annotations

import torch


def overlaps(box: torch.Tensor, others: torch.Tensor, mode: str = "union") -> torch.Tensor:
    """Overlap of one box with each of `others`: intersection over union, or over the smaller area (``"min"``)."""
    x0 = torch.maximum(box[0], others[:, 0])
    y0 = torch.maximum(box[1], others[:, 1])
    x1 = torch.minimum(box[2], others[:, 2])
    y1 = torch.minimum(box[3], others[:, 3])
    inter = (x1 - x0).clamp(min=0) * (y1 - y0).clamp(min=0)
    area = (box[2] - box[0]) * (box[3] - box[1])
    areas = (others[:, 2] - others[:, 0]) * (others[:, 3] - others[:, 1])
    denominator = torch.minimum(area, areas) if mode == "min" else area + areas - inter
    return inter / denominator.clamp(min=1e-9)


def nms(boxes: torch.Tensor, scores: torch.Tensor, threshold: float, overlap: str = "union") -> torch.Tensor:
    """Greedy non-maximum suppression.

    Args:
        boxes (`torch.Tensor`): (N, 4) boxes.
        scores (`torch.Tensor`): (N,) confidences.
        threshold (`float`): a box is dropped when it overlaps a kept, more confident box by more than this.
        overlap (`str`): ``"union"`` (IoU) or ``"min"`` (intersection over the smaller box).

    Returns:
        `torch.Tensor`: indices of the kept boxes, most confident first.
    """
    order = torch.argsort(scores, descending=True, stable=True)
    keep = []
    while order.numel():
        best = order[0]
        keep.append(best)
        rest = order[1:]
        order = rest[overlaps(boxes[best], boxes[rest], overlap) <= threshold]
    return torch.stack(keep) if keep else torch.zeros(0, dtype=torch.long)


def square(boxes: torch.Tensor) -> torch.Tensor:
    """Grow each box to a square around its centre, side = its longer side."""
    size = (boxes[:, 2:4] - boxes[:, 0:2]).amax(dim=1, keepdim=True)
    centre = (boxes[:, 0:2] + boxes[:, 2:4]) / 2
    return torch.cat([centre - size / 2, centre + size / 2], dim=1)
