"""The gate bound: an upper bound on every MoL score, exact when every gate is computed."""

from __future__ import annotations

import pytest
import torch

from recsys.similarity.mol import MoLConfig, MoLSimilarity, component_logits
from recsys.similarity.mol_bound import (
    REACH,
    choose_gate_components,
    gate_need,
    partial_gate_bound,
    rank_gate_components,
    reach_share,
)
from recsys.similarity.parts import QueryParts

CONFIG = MoLConfig(p_q=3, p_x=4, d_p=6, user_hash_size=7, mlp_hidden=8, gate_hidden=16)
DIM = 6


def make(seed: int) -> tuple[MoLSimilarity, QueryParts, torch.Tensor]:
    torch.manual_seed(seed)
    sim = MoLSimilarity(CONFIG, DIM)
    with torch.no_grad():
        for p in sim.parameters():
            p.mul_(3.0) if p.dim() >= 2 else p.normal_(0.0, 1.0)  # wide gates
    sim.eval()
    with torch.no_grad():
        qp = sim.query_parts(torch.randn(5, DIM), torch.arange(5) - 1)  # one cold user
    return sim, qp, torch.randn(300, DIM)


@pytest.mark.parametrize("seed", [0, 1, 2, 3])
@pytest.mark.parametrize("t", [1, 3, 7])
def test_bound_is_above_every_score(seed: int, t: int) -> None:
    sim, qp, emb = make(seed)
    ip = sim.item_parts(emb)
    gen = torch.Generator().manual_seed(seed)
    comps = torch.stack([torch.randperm(12, generator=gen)[:t] for _ in range(5)])
    with torch.no_grad():
        phi = sim.score_all(qp, ip)
        s = component_logits(qp.f, ip.g, sim.tau)
    bound = partial_gate_bound(sim, qp, ip, comps)
    assert bound.shape == phi.shape
    assert (bound >= phi - 1e-4).all()
    assert (bound <= s.amax(dim=-1) + 1e-4).all()  # never looser than max_k s_k


def test_bound_with_every_gate_is_the_score() -> None:
    sim, qp, emb = make(4)
    ip = sim.item_parts(emb)
    comps = torch.stack([torch.randperm(12) for _ in range(5)])  # all, any order
    with torch.no_grad():
        phi = sim.score_all(qp, ip)
    torch.testing.assert_close(partial_gate_bound(sim, qp, ip, comps), phi, rtol=1e-5, atol=1e-5)


def test_more_gates_give_a_tighter_bound_on_average() -> None:
    sim, qp, emb = make(5)
    ip = sim.item_parts(emb)
    order = torch.stack([torch.randperm(12) for _ in range(5)])
    loose = partial_gate_bound(sim, qp, ip, order[:, :1]).mean()
    tight = partial_gate_bound(sim, qp, ip, order[:, :9]).mean()
    assert tight < loose


def test_chosen_components_cover_those_that_reach_the_cut() -> None:
    sim, qp, emb = make(6)
    sample = sim.item_parts(emb)
    with torch.no_grad():
        s = component_logits(qp.f, sample.g, sim.tau)
    cut = s.amax(dim=-1).median(dim=1).values  # about half the sample reaches it
    comps = choose_gate_components(sim, qp, sample, cut, t=2)
    reach = (s >= cut.view(-1, 1, 1)).float().mean(dim=1) > REACH  # (B, P)
    assert comps.shape[1] == max(2, 1 + int(reach.sum(dim=1).max()))
    for b in range(5):
        chosen = set(comps[b].tolist())
        assert len(chosen) == comps.shape[1]  # distinct
        assert set(reach[b].nonzero().flatten().tolist()) <= chosen
    assert choose_gate_components(sim, qp, sample, cut, t=40).shape[1] == 12  # at most P


def test_ranking_puts_every_component_that_reaches_the_cut_first() -> None:
    sim, qp, emb = make(7)
    sample = sim.item_parts(emb)
    with torch.no_grad():
        s = component_logits(qp.f, sample.g, sim.tau)
    cut = s.amax(dim=-1).quantile(0.8, dim=1)
    reach = reach_share(sim, qp, sample, cut)
    torch.testing.assert_close(reach, (s >= cut.view(-1, 1, 1)).float().mean(dim=1))
    common = reach > REACH
    assert gate_need(reach).tolist() == (1 + common.sum(dim=1)).clamp(max=12).tolist()
    order = rank_gate_components(sim, qp, sample, reach)
    for b in range(5):
        assert sorted(order[b].tolist()) == list(range(12))
        first = set(order[b, : int(common[b].sum())].tolist())
        assert first == set(common[b].nonzero().flatten().tolist())
    everything = reach_share(sim, qp, sample, torch.full((5,), float("-inf")))
    assert gate_need(everything).tolist() == [12] * 5  # -inf: every gate needed


def test_float32_gap_at_the_real_scale_is_far_below_the_gate_margin() -> None:
    """With every gate the bound is the score computed in another order: at the paper's
    ML-1M shapes (8x4x64, gate hidden 128, tau 0.05) the two differ by far less than
    bounded-exact's GATE_MARGIN of 1e-2 (1 + |S|)."""
    from recsys.retrieval.bounded import GATE_MARGIN

    torch.manual_seed(11)
    config = MoLConfig(p_q=8, p_x=4, d_p=64, user_hash_size=50, mlp_hidden=64, gate_hidden=128)
    sim = MoLSimilarity(config, 50).eval()
    with torch.no_grad():
        qp = sim.query_parts(torch.randn(4, 50), torch.arange(4))
        ip = sim.item_parts(torch.randn(2000, 50))
        phi = sim.score_all(qp, ip)
    comps = torch.stack([torch.randperm(32) for _ in range(4)])
    gap = (partial_gate_bound(sim, qp, ip, comps) - phi).abs().max()
    assert gap < GATE_MARGIN / 100
