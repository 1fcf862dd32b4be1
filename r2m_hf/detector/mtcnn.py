"""MTCNN face detection (Zhang et al., 2016): three small CNNs run as a cascade, giving boxes and 5 landmarks.

Owns the networks (P-Net, R-Net, O-Net), the cascade (image pyramid → P-Net proposals → R-Net refinement → O-Net
boxes and landmarks, with box regression, squaring and non-maximum suppression between stages) and the loading of
their weights. The code is ours; the trained weights are the MIT-licensed state dicts that the ``facenet-pytorch``
wheel ships as data files. That package is installed without its dependencies (``pip install --no-deps
facenet-pytorch``) and never imported: its files are located through the package metadata and read with
``torch.load(weights_only=True)``.
"""

from __future__ import annotations

import importlib.metadata
import math
from pathlib import Path

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from .boxes import nms, square
from .types import FaceBox

WEIGHT_FILES = ("pnet.pt", "rnet.pt", "onet.pt")
INSTALL_HINT = "pip install --no-deps facenet-pytorch==2.6.0"


def mtcnn_weights_dir() -> Path | None:
    """The folder holding ``pnet.pt``, ``rnet.pt`` and ``onet.pt`` of an installed facenet-pytorch, or None."""
    try:
        dist = importlib.metadata.distribution("facenet-pytorch")
    except importlib.metadata.PackageNotFoundError:
        return None
    folder = Path(str(dist.locate_file("facenet_pytorch/data")))
    return folder if all((folder / name).is_file() for name in WEIGHT_FILES) else None


class _Trunk(nn.Module):
    """Conv → PReLU (→ max-pool) blocks; layer names follow the shipped state dicts (``conv1``, ``prelu1`` …)."""

    def __init__(self, channels: list[int], kernels: list[int], pools: list[tuple[int, int] | None]):
        super().__init__()
        self.pools = pools
        for i, (c_in, c_out, k) in enumerate(zip(channels[:-1], channels[1:], kernels), start=1):
            self.add_module(f"conv{i}", nn.Conv2d(c_in, c_out, kernel_size=k))
            self.add_module(f"prelu{i}", nn.PReLU(c_out))

    def trunk(self, x: torch.Tensor) -> torch.Tensor:
        for i, pool in enumerate(self.pools, start=1):
            x = getattr(self, f"prelu{i}")(getattr(self, f"conv{i}")(x))
            if pool is not None:
                x = F.max_pool2d(x, pool[0], pool[1], ceil_mode=True)
        return x

    @staticmethod
    def flatten(x: torch.Tensor) -> torch.Tensor:
        # the dense weights were converted from a (width, height, channel)-ordered implementation
        return x.permute(0, 3, 2, 1).reshape(x.shape[0], -1)


class PNet(_Trunk):
    """Proposal network: fully convolutional on the pyramid, a face probability and box offsets per 12×12 cell."""

    def __init__(self):
        super().__init__([3, 10, 16, 32], [3, 3, 3], [(2, 2), None, None])
        self.conv4_1 = nn.Conv2d(32, 2, kernel_size=1)
        self.conv4_2 = nn.Conv2d(32, 4, kernel_size=1)

    def forward(self, x):
        x = self.trunk(x)
        return self.conv4_1(x).softmax(dim=1)[:, 1], self.conv4_2(x)


class RNet(_Trunk):
    """Refinement network on 24×24 candidates."""

    def __init__(self):
        super().__init__([3, 28, 48, 64], [3, 3, 2], [(3, 2), (3, 2), None])
        self.dense4, self.prelu4 = nn.Linear(576, 128), nn.PReLU(128)
        self.dense5_1, self.dense5_2 = nn.Linear(128, 2), nn.Linear(128, 4)

    def forward(self, x):
        x = self.prelu4(self.dense4(self.flatten(self.trunk(x))))
        return self.dense5_1(x).softmax(dim=1)[:, 1], self.dense5_2(x)


class ONet(_Trunk):
    """Output network on 48×48 candidates: probability, box offsets and 5 landmarks (x1..x5, y1..y5 in the box)."""

    def __init__(self):
        super().__init__([3, 32, 64, 64, 128], [3, 3, 3, 2], [(3, 2), (3, 2), (2, 2), None])
        self.dense5, self.prelu5 = nn.Linear(1152, 256), nn.PReLU(256)
        self.dense6_1, self.dense6_2, self.dense6_3 = nn.Linear(256, 2), nn.Linear(256, 4), nn.Linear(256, 10)

    def forward(self, x):
        x = self.prelu5(self.dense5(self.flatten(self.trunk(x))))
        return self.dense6_1(x).softmax(dim=1)[:, 1], self.dense6_2(x), self.dense6_3(x)


def _normalise(pixels: torch.Tensor) -> torch.Tensor:
    return (pixels - 127.5) / 128.0


def _regress(boxes: torch.Tensor, offsets: torch.Tensor) -> torch.Tensor:
    """Move each box's corners by the predicted offsets, in units of its width and height."""
    size = (boxes[:, 2:4] - boxes[:, 0:2]).repeat(1, 2)
    return boxes + offsets * size


def _mip(image: torch.Tensor) -> list[torch.Tensor]:
    """The image at 1, 1/2, 1/4 … of its size (2×2 averaging), so every crop is sampled without aliasing."""
    levels = [image]
    while min(levels[-1].shape[1:]) >= 48:
        levels.append(F.avg_pool2d(levels[-1][None], 2, ceil_mode=True)[0])
    return levels


def _patches(mip: list[torch.Tensor], boxes: torch.Tensor, size: int) -> torch.Tensor:
    """Sample each box as a `size`² patch (bilinear, zero outside the image) from the finest fitting mip level."""
    out = boxes.new_zeros((len(boxes), 3, size, size))
    sides = (boxes[:, 2] - boxes[:, 0]).clamp(min=1)
    levels = torch.log2(sides / size).floor().clamp(0, len(mip) - 1).long()
    steps = (torch.arange(size, dtype=boxes.dtype, device=boxes.device) + 0.5) / size
    for level in levels.unique().tolist():
        picked = levels == level
        image, part = mip[level], boxes[picked] / 2**level
        height, width = image.shape[1:]
        xs = (part[:, 0:1] + steps * (part[:, 2:3] - part[:, 0:1])) / width * 2 - 1
        ys = (part[:, 1:2] + steps * (part[:, 3:4] - part[:, 1:2])) / height * 2 - 1
        grid = torch.stack([xs[:, None, :].expand(-1, size, -1), ys[:, :, None].expand(-1, -1, size)], dim=-1)
        sampled = F.grid_sample(image[None], grid.reshape(1, -1, size, 2), align_corners=False)
        out[picked] = sampled.reshape(3, -1, size, size).transpose(0, 1)
    return out


class MTCNN:
    """The MTCNN cascade on one RGB image at a time.

    Args:
        weights_dir (`str` or `Path`, *optional*): folder with ``pnet.pt``, ``rnet.pt``, ``onet.pt``; defaults to
            the installed facenet-pytorch's data folder.
        device (`str`, *optional*): torch device of the three networks (default CPU).
        min_face_size (`int`): the smallest face searched for, in pixels (sets the first pyramid scale).
        thresholds (`tuple[float, float, float]`): face-probability cut of each stage.
        scale_factor (`float`): ratio between consecutive pyramid levels.
        max_side (`int`): images larger than this are searched on a downscaled copy (boxes are mapped back).
    """

    name = "mtcnn"
    has_landmarks = True

    def __init__(
        self,
        weights_dir: str | Path | None = None,
        *,
        device: str | torch.device | None = None,
        min_face_size: int = 20,
        thresholds: tuple[float, float, float] = (0.6, 0.7, 0.7),
        scale_factor: float = 0.709,
        max_side: int = 1280,
    ):
        folder = Path(weights_dir) if weights_dir is not None else mtcnn_weights_dir()
        if folder is None:
            raise FileNotFoundError(f"MTCNN weights not found; install them with `{INSTALL_HINT}`")
        self.device = torch.device(device or "cpu")
        self.nets = []
        for net, file in zip((PNet(), RNet(), ONet()), WEIGHT_FILES):
            state = torch.load(folder / file, map_location="cpu", weights_only=True)
            net.load_state_dict(state)
            self.nets.append(net.to(self.device).eval())
        self.min_face_size, self.thresholds = min_face_size, thresholds
        self.scale_factor, self.max_side = scale_factor, max_side

    def detect(self, image) -> list[FaceBox]:
        """Faces in a PIL image (any mode), most confident first."""
        rgb = np.asarray(image.convert("RGB"))
        shrink = min(1.0, self.max_side / max(rgb.shape[:2]))
        pixels = torch.from_numpy(rgb.copy()).permute(2, 0, 1).float().to(self.device)
        if shrink < 1.0:
            size = (max(1, round(rgb.shape[0] * shrink)), max(1, round(rgb.shape[1] * shrink)))
            pixels = F.interpolate(pixels[None], size=size, mode="area")[0]
        with torch.inference_mode():
            boxes, scores, marks = self._cascade(pixels)
        faces = [
            FaceBox(*map(float, box), float(score), tuple((float(x), float(y)) for x, y in points))
            for box, score, points in zip(boxes.tolist(), scores.tolist(), marks.reshape(-1, 2, 5).mT.tolist())
        ]
        return [face.scaled(1 / shrink) for face in faces] if shrink < 1.0 else faces

    def _cascade(self, image: torch.Tensor):
        pnet, rnet, onet = self.nets
        empty = (torch.zeros(0, 4), torch.zeros(0), torch.zeros(0, 10))
        # stage 1: P-Net on every pyramid level; a positive cell at (row, col) is a 12×12 window at stride 2
        proposals = []
        height, width = image.shape[1:]
        scale = 12.0 / self.min_face_size
        while min(height, width) * scale >= 12:
            size = (math.ceil(height * scale), math.ceil(width * scale))
            prob, offsets = pnet(_normalise(F.interpolate(image[None], size=size, mode="area")))
            rows, cols = torch.nonzero(prob[0] >= self.thresholds[0], as_tuple=True)
            if rows.numel():
                corner = torch.stack([cols, rows], dim=1).float() * 2
                boxes = torch.cat([corner, corner + 12], dim=1) / scale
                level = torch.cat([boxes, prob[0, rows, cols, None], offsets[0][:, rows, cols].T], dim=1)
                proposals.append(level[nms(level[:, :4], level[:, 4], 0.5)])
            scale *= self.scale_factor
        if not proposals:
            return empty
        found = torch.cat(proposals)
        found = found[nms(found[:, :4], found[:, 4], 0.7)]
        boxes = square(_regress(found[:, :4], found[:, 5:9]))
        mip = _mip(image)
        # stage 2: R-Net rejects most proposals and refines the rest
        prob, offsets = rnet(_normalise(_patches(mip, boxes, 24)))
        keep = prob > self.thresholds[1]
        boxes, prob, offsets = boxes[keep], prob[keep], offsets[keep]
        if not len(boxes):
            return empty
        keep = nms(boxes, prob, 0.7)
        boxes = square(_regress(boxes[keep], offsets[keep]))
        # stage 3: O-Net gives the final score, box and landmarks (relative to the box before regression)
        prob, offsets, points = onet(_normalise(_patches(mip, boxes, 48)))
        keep = prob > self.thresholds[2]
        boxes, prob, offsets, points = boxes[keep], prob[keep], offsets[keep], points[keep]
        if not len(boxes):
            return empty
        size = boxes[:, 2:4] - boxes[:, 0:2]
        xs = boxes[:, 0:1] + points[:, :5] * size[:, 0:1]
        ys = boxes[:, 1:2] + points[:, 5:] * size[:, 1:2]
        boxes = _regress(boxes, offsets)
        keep = nms(boxes, prob, 0.7, overlap="min")
        return boxes[keep].cpu(), prob[keep].cpu(), torch.cat([xs, ys], dim=1)[keep].cpu()
