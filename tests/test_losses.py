"""Sampled softmax against hand-computed values."""

from __future__ import annotations

import math

import pytest
import torch

from recsys.losses import sampled_softmax_loss, sampled_softmax_rows


def test_rows_hand_computed_with_masking():
    pos = torch.tensor([1.0, 0.0], dtype=torch.float64)
    neg = torch.tensor([[2.0, 0.5, 1.0], [0.0, 3.0, -1.0]], dtype=torch.float64)
    valid = torch.tensor([[True, True, False], [True, False, True]])
    got = sampled_softmax_rows(pos, neg, valid)
    row0 = -math.log(math.exp(1) / (math.exp(1) + math.exp(2) + math.exp(0.5)))
    row1 = -math.log(1 / (1 + 1 + math.exp(-1)))
    assert got.tolist() == pytest.approx([row0, row1])
    assert sampled_softmax_loss(pos, neg, valid).item() == pytest.approx((row0 + row1) / 2)
    unmasked = sampled_softmax_rows(pos, neg)
    assert unmasked[1].item() == pytest.approx(-math.log(1 / (1 + 1 + math.exp(3) + math.exp(-1))))


def test_empty_rows_give_zero():
    pos = torch.zeros(0, requires_grad=True)
    assert sampled_softmax_loss(pos, torch.zeros(0, 3)).item() == 0.0
