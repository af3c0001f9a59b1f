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


@pytest.mark.parametrize("chunk_rows", [1, 3, None])
@pytest.mark.parametrize("need", ["both", "q", "items"])
def test_full_softmax_matches_cross_entropy_and_its_gradients(chunk_rows, need):
    """The chunked loss and its hand-taken gradients equal autograd through F.cross_entropy."""
    import torch.nn.functional as F

    from recsys.losses import full_softmax_loss

    g = torch.Generator().manual_seed(0)
    q = torch.randn(7, 5, generator=g, dtype=torch.float64)
    items = torch.randn(11, 5, generator=g, dtype=torch.float64)
    targets = torch.randint(0, 11, (7,), generator=g)
    q1, i1 = q.clone().requires_grad_(need != "items"), items.clone().requires_grad_(need != "q")
    q2, i2 = q.clone().requires_grad_(need != "items"), items.clone().requires_grad_(need != "q")
    got = full_softmax_loss(q1, i1, targets, 2.5, chunk_rows)
    ref = F.cross_entropy(2.5 * q2 @ i2.T, targets)
    torch.testing.assert_close(got, ref)
    (3.0 * got).backward()
    (3.0 * ref).backward()
    for a, b in ((q1, q2), (i1, i2)):
        assert (a.grad is None) == (b.grad is None)
        if a.grad is not None:
            torch.testing.assert_close(a.grad, b.grad)


def test_full_softmax_bf16_autocast_is_close_to_fp32():
    from recsys.losses import full_softmax_loss

    g = torch.Generator().manual_seed(1)
    q = torch.nn.functional.normalize(torch.randn(64, 16, generator=g), dim=1)
    items = torch.nn.functional.normalize(torch.randn(300, 16, generator=g), dim=1)
    targets = torch.randint(0, 300, (64,), generator=g)
    exact = full_softmax_loss(q, items, targets, 20.0)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        low = full_softmax_loss(q, items.requires_grad_(), targets, 20.0, chunk_rows=16)
    assert low.dtype == torch.float32
    assert abs(low.item() - exact.item()) < 0.05 * exact.item()
    low.backward()
    assert items.grad is not None and items.grad.dtype == torch.float32
