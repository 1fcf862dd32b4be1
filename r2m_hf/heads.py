"""Label resolution and head alignment: every head is brought to the convention 0 = real, 1 = fake.

Specialists on the Hub disagree about label order and names (FAKE/Fake/Deepfake/artificial/AI vs REAL/human …).
The fake index is resolved from ``id2label`` case-insensitively, or stated in the YAML with ``fake_label``.
"""

from __future__ import annotations

import re
from collections.abc import Mapping

import torch

from .errors import LabelError, clip

FAKE_NAMES = ("fake", "deepfake", "manipulated", "synthetic", "artificial", "ai", "generated", "forged", "spoof")
REAL_NAMES = ("real", "pristine", "authentic", "human", "original", "genuine", "bonafide", "live")
ID2LABEL = {0: "real", 1: "fake"}
LABEL2ID = {"real": 0, "fake": 1}


def _normalise(label: str) -> str:
    return "".join(ch for ch in str(label).lower() if ch.isalnum())


def _word_kind(word: str) -> str | None:
    for kind, names in (("fake", FAKE_NAMES), ("real", REAL_NAMES)):
        if word in names or any(word == f"{n}image" or word == f"{n}s" for n in names):
            return kind
    return None


def label_kind(label: str) -> str | None:
    """``"fake"``, ``"real"`` or None for a class name.

    Whole names (``FAKE``, ``Real-Image``) and names made of words (``0_real``, ``1_fake``, ``fake_face``) are
    recognised; a negated name (``not_fake``, ``non-real``) or one naming both kinds is not.
    """
    kind = _word_kind(_normalise(label))
    if kind is not None:
        return kind
    words = [w for w in re.split(r"[^a-z0-9]+", str(label).lower()) if w and not w.isdigit()]
    if any(w in ("not", "non", "no") for w in words):
        return None
    kinds = {k for k in map(_word_kind, words) if k is not None}
    return kinds.pop() if len(kinds) == 1 else None


def resolve_fake_index(id2label: Mapping[int | str, str] | None, fake_label: str | int | None = None) -> int | None:
    """Return the index of the fake class of a binary classifier, or None if the names do not say.

    Args:
        id2label (`dict`): the model config's ``id2label`` (keys may be strings in JSON).
        fake_label (`str` or `int`, *optional*): an explicit override (a class name or an index).

    Returns:
        `int` or `None`: the fake index.
    """
    labels = {int(k): str(v) for k, v in (id2label or {}).items()}
    if fake_label is not None:
        if isinstance(fake_label, int) or str(fake_label).isdecimal():
            index = int(fake_label)
            return index if index in labels or not labels else None
        matches = [i for i, name in labels.items() if name == fake_label] or [
            i for i, name in labels.items() if name.lower() == str(fake_label).lower()
        ]
        return matches[0] if len(matches) == 1 else None
    fakes = [i for i, name in labels.items() if label_kind(name) == "fake"]
    reals = [i for i, name in labels.items() if label_kind(name) == "real"]
    if len(fakes) == 1 and len(labels) == 2:
        return fakes[0]
    if not fakes and len(reals) == 1 and len(labels) == 2:
        return 1 - reals[0]
    return None


def fake_index_or_error(id2label, fake_label, who: str) -> int:
    """`resolve_fake_index`, raising a `LabelError` that says how to fix it."""
    index = resolve_fake_index(id2label, fake_label)
    if index is None:
        labels = {int(k): v for k, v in (id2label or {}).items()}
        if fake_label is not None:
            raise LabelError(f"{who}: fake_label {clip(repr(fake_label))} matches none of its labels {clip(labels)}")
        raise LabelError(
            f"{who}: cannot tell which class is fake from id2label {clip(labels)}; add `fake_label: <name or index>` "
            "to this model in the YAML"
        )
    return index


def align_head(
    weight: torch.Tensor, bias: torch.Tensor | None, fake_index: int
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Reorder a 2-class head's rows so that row 0 is real and row 1 is fake."""
    if fake_index == 1:
        return weight, bias
    order = torch.tensor([1, 0])
    return weight[order], None if bias is None else bias[order]


def merge_heads(
    heads: list[tuple[torch.Tensor, torch.Tensor | None]],
    names: list[str],
    choice: str = "mean",
    weights: list[float] | None = None,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Average aligned heads (``head: mean``, weighted by the per-model weights) or keep one (``head: <name>``)."""
    if choice != "mean":
        return heads[names.index(choice)]
    w = torch.tensor(weights if weights is not None else [1.0] * len(heads), dtype=heads[0][0].dtype)
    if float(w.sum()) <= 0:
        w = torch.ones_like(w)
    w = w / w.sum()
    weight = torch.einsum("i,i...->...", w, torch.stack([h for h, _ in heads]))
    biases = [b for _, b in heads]
    bias = None if any(b is None for b in biases) else torch.einsum("i,i...->...", w, torch.stack(biases))
    return weight, bias
