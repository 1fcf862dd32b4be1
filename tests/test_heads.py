"""Label names → fake index, and head alignment."""

from __future__ import annotations

import pytest
import torch

from r2m_hf.heads import align_head, label_kind, merge_heads, resolve_fake_index


@pytest.mark.parametrize(
    "name,kind",
    [("FAKE", "fake"), ("Real", "real"), ("Deepfake", "fake"), ("artificial", "fake"), ("AI", "fake"),
     ("human", "real"), ("real-image", "real"), ("0_real", "real"), ("1_fake", "fake"), ("fake_face", "fake"),
     ("not_fake", None), ("non-real", None), ("real_or_fake", None), ("cat", None), ("0", None)],
)  # fmt: skip
def test_label_kind(name, kind):
    assert label_kind(name) == kind


def test_resolve_fake_index_and_overrides():
    assert resolve_fake_index({0: "FAKE", 1: "REAL"}) == 0
    assert resolve_fake_index({"0": "real", "1": "fake"}) == 1
    assert resolve_fake_index({0: "human", 1: "cat"}) == 1  # the other class of a binary head with one real name
    assert resolve_fake_index({0: "cat", 1: "dog"}) is None
    assert resolve_fake_index({0: "cat", 1: "dog"}, fake_label="dog") == 1
    assert resolve_fake_index({0: "cat", 1: "dog"}, fake_label=0) == 0
    assert resolve_fake_index({0: "cat", 1: "dog"}, fake_label="bird") is None


def test_align_and_weighted_mean():
    w = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    b = torch.tensor([0.1, 0.2])
    aligned_w, aligned_b = align_head(w, b, fake_index=0)
    assert torch.equal(aligned_w, w.flip(0)) and torch.equal(aligned_b, b.flip(0))
    heads = [(torch.zeros(2, 2), torch.zeros(2)), (torch.ones(2, 2), torch.ones(2))]
    mean_w, mean_b = merge_heads(heads, ["a", "b"], "mean", [1.0, 3.0])
    assert torch.allclose(mean_w, torch.full((2, 2), 0.75)) and torch.allclose(mean_b, torch.full((2,), 0.75))
    assert merge_heads(heads, ["a", "b"], "b")[0] is heads[1][0]
