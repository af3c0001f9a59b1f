"""Negatives drawn from the dot proposal (recsys.models.proposal) against slow references."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from recsys.models import proposal
from recsys.models.proposal import proposal_draws


def _reference_q(rows, items, tau, share):
    """Q(x) of every row, one row and one item at a time."""
    n, num_items = rows.shape[0], items.shape[0]
    out = torch.empty(n, num_items, dtype=torch.float64)
    for i in range(n):
        logits = [
            F.cosine_similarity(rows[i], items[x], dim=0, eps=1e-12).item() / tau
            for x in range(num_items)
        ]
        top = max(logits)
        z = sum(math.exp(v - top) for v in logits)
        for x in range(num_items):
            out[i, x] = (1 - share) / num_items + share * math.exp(logits[x] - top) / z
    return out


@pytest.mark.parametrize("share", [0.0, 0.5, 0.9])
def test_offsets_are_minus_log_n_q_of_each_draw(share):
    torch.manual_seed(0)
    rows, items = torch.randn(5, 6), torch.randn(7, 6)
    ids, offset = proposal_draws(rows, items, 0.5, share, 40)
    q = _reference_q(rows, items, 0.5, share)
    assert ids.shape == offset.shape == (5, 40)
    assert ids.min() >= 1 and ids.max() <= 7
    want = -torch.log(q.gather(1, ids - 1) * 7)
    torch.testing.assert_close(offset.double(), want, rtol=1e-5, atol=1e-5)
    if share == 0.0:
        assert torch.all(offset.abs() < 1e-5)


def test_draws_follow_the_proposal(monkeypatch):
    """Frequencies of many draws match Q within a few binomial standard errors, across
    more rows than one chunk holds."""
    monkeypatch.setattr(proposal, "ROW_CHUNK", 3)
    torch.manual_seed(1)
    rows = torch.randn(1, 4).repeat(8, 1)  # the same query 8 times: one Q for every row
    items = torch.randn(6, 4)
    draws = 20_000
    ids, _ = proposal_draws(rows, items, 0.3, 0.7, draws)
    q = _reference_q(rows[:1], items, 0.3, 0.7)[0]
    freq = torch.bincount(ids.view(-1) - 1, minlength=6).double() / ids.numel()
    se = torch.sqrt(q * (1 - q) / ids.numel())
    assert torch.all((freq - q).abs() < 5 * se + 1e-9), (freq, q)


def test_weighted_draws_estimate_the_uniform_expectation():
    """E[sum_r exp(s(x_r) + offset_r)] = R * mean_x exp(s_x), as R uniform draws give."""
    torch.manual_seed(2)
    rows, items = torch.randn(1, 5), torch.randn(9, 5)
    s = torch.randn(9, dtype=torch.float64) * 2
    r, repeats = 16, 4000
    ids, offset = proposal_draws(rows.repeat(repeats, 1), items, 0.2, 0.8, r)
    est = (torch.exp(s[ids - 1] + offset.double())).sum(dim=1)  # (repeats,)
    want = r * torch.exp(s).mean()
    standard_error = est.std().item() / math.sqrt(repeats)
    assert abs(est.mean().item() - want.item()) < 4 * standard_error
