"""Dot-product similarity: cosine / tau in both halves, gathered == all."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from recsys.similarity.dot import DotConfig, DotSimilarity


def test_dot_is_scaled_cosine():
    sim = DotSimilarity(DotConfig(tau=0.1))
    q, e = torch.randn(3, 8, dtype=torch.float64), torch.randn(5, 8, dtype=torch.float64)
    scores, aux = sim(q, e)
    expected = torch.tensor([[F.cosine_similarity(a, b, dim=0).item() / 0.1 for b in e] for a in q])
    torch.testing.assert_close(scores, expected.double())
    assert aux == {}
    qp, ip = sim.query_parts(q), sim.item_parts(e)
    assert qp.f.shape == (3, 1, 8) and ip.g.shape == (5, 1, 8)
    assert qp.a_q is None and ip.a_x is None


def test_dot_gathered_equals_all_and_zero_vectors_are_safe():
    sim = DotSimilarity()
    q, e = torch.randn(2, 4), torch.randn(6, 4)
    e[0] = 0.0  # the padding row
    qp, ip = sim.query_parts(q), sim.item_parts(e)
    idx = torch.tensor([[0, 5, 5], [2, 1, 0]])
    full = sim.score_all(qp, ip)
    torch.testing.assert_close(sim.score_gathered(qp, ip, idx), full.gather(1, idx))
    torch.testing.assert_close(
        sim.score_pairs(qp, ip.index_select(idx.reshape(-1))), full.gather(1, idx)
    )
    scores, gates = sim.score_gathered(qp, ip, idx, return_gates=True)
    assert gates is None and torch.isfinite(scores).all()
    assert torch.all(full[:, 0] == 0)
    assert sim.aux_losses(torch.tensor([1, 2]), None) == {}


def test_dot_config_validation_names_the_field():
    with pytest.raises(ValueError, match="tau"):
        DotConfig(tau=0.0)
