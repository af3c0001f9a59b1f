"""benchmarks/bench_bound.py: the interval maths of the oracle-box certificate."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from benchmarks.bench_bound import (
    ball_ibp_cross_gate,
    box_test,
    cluster_mean,
    cluster_range,
    ibp_cross_gate,
    kmeans,
    silu_range,
)


def test_silu_range_matches_a_dense_grid():
    torch.manual_seed(0)
    lo = torch.randn(200) * 3
    hi = lo + torch.rand(200) * 4
    smin, smax = silu_range(lo, hi)
    grid = lo[:, None] + (hi - lo)[:, None] * torch.linspace(0, 1, 20001)[None, :]
    values = F.silu(grid)
    torch.testing.assert_close(smin, values.amin(1), atol=1e-5, rtol=0)
    torch.testing.assert_close(smax, values.amax(1), atol=1e-5, rtol=0)


def test_kmeans_separates_well_separated_blobs():
    torch.manual_seed(0)
    centres = torch.tensor([[10.0, 0.0], [-10.0, 0.0], [0.0, 10.0]])
    labels = torch.arange(3).repeat_interleave(20)
    x = centres[labels] + 0.1 * torch.randn(60, 2)
    assign = kmeans(x, 3, seed=1)
    # Same blob <-> same cluster (cluster ids are arbitrary).
    same_label = labels[:, None] == labels[None, :]
    same_cluster = assign[:, None] == assign[None, :]
    assert torch.equal(same_label, same_cluster)


def test_cluster_range_equals_a_loop():
    torch.manual_seed(0)
    values = torch.randn(2, 30, 4)
    assign = torch.randint(0, 5, (30,))
    assign[:5] = torch.arange(5)  # every cluster non-empty
    lo, hi = cluster_range(values, assign, 5)
    for c in range(5):
        members = values[:, assign == c]
        torch.testing.assert_close(lo[:, c], members.amin(1))
        torch.testing.assert_close(hi[:, c], members.amax(1))


def test_ibp_cross_gate_contains_every_sampled_output():
    from recsys.similarity.mol import cross_gate

    torch.manual_seed(0)
    w1, b1 = torch.randn(16, 6), torch.randn(16)
    w2, b2 = torch.randn(6, 16), torch.randn(6)
    s_lo = torch.randn(3, 6)
    s_hi = s_lo + torch.rand(3, 6)
    lo, hi = ibp_cross_gate(s_lo, s_hi, w1, b1, w2, b2)
    samples = s_lo[:, None] + (s_hi - s_lo)[:, None] * torch.rand(3, 2000, 6)
    out = cross_gate(samples, w1, b1, w2, b2)
    assert bool((out >= lo[:, None] - 1e-5).all()) and bool((out <= hi[:, None] + 1e-5).all())


def test_cluster_mean_equals_a_loop():
    torch.manual_seed(0)
    values = torch.randn(2, 30, 4)
    assign = torch.randint(0, 5, (30,))
    assign[:5] = torch.arange(5)
    mean = cluster_mean(values, assign, 5)
    for c in range(5):
        torch.testing.assert_close(mean[:, c], values[:, assign == c].mean(1))


def test_ball_ibp_cross_gate_contains_the_exact_output():
    from recsys.similarity.mol import cross_gate

    torch.manual_seed(0)
    w1, b1 = torch.randn(16, 6), torch.randn(16)
    w2, b2 = torch.randn(6, 16), torch.randn(6)
    s = torch.randn(3, 40, 6)
    s_mean = s.mean(1, keepdim=True).expand_as(s)
    lo, hi = ball_ibp_cross_gate(s, s_mean, w1, b1, w2, b2)
    out = cross_gate(s, w1, b1, w2, b2)
    assert bool((out >= lo - 1e-5).all()) and bool((out <= hi + 1e-5).all())
    lo0, hi0 = ball_ibp_cross_gate(s_mean, s_mean, w1, b1, w2, b2)  # zero radius: exact
    torch.testing.assert_close(lo0, cross_gate(s_mean, w1, b1, w2, b2))
    torch.testing.assert_close(hi0, lo0)


def test_box_test_matches_brute_force_over_the_box_corners():
    # With one free gate logit the extremes of phi over the box are at its ends (phi is
    # monotone in each w_k); the test must say "reachable" iff some end reaches t.
    torch.manual_seed(0)
    s = torch.randn(1, 50, 2) * 3
    z_lo = torch.zeros(1, 50, 2)
    z_hi = torch.cat([torch.zeros(1, 50, 1), torch.rand(1, 50, 1) * 4], dim=-1)
    t = torch.tensor([[0.5]])
    got = box_test(s, z_lo, z_hi, t)
    grid = torch.linspace(0, 1, 4001)
    z1 = z_hi[..., 1:2] * grid  # (1, 50, G)
    w = torch.stack([torch.exp(F.silu(torch.zeros_like(z1))), torch.exp(F.silu(z1))], -1)
    phi = (w * s.unsqueeze(2)).sum(-1) / w.sum(-1)
    want = phi.amax(-1) >= t
    assert torch.equal(got, want)
