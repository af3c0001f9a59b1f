"""TopKPerEmbd, TopKAvg and Combined against brute force and on exclusion / padding."""

from __future__ import annotations

import pytest
import torch
from retrieval_helpers import assert_same_topk, make_catalog, random_exclude, reference_topk

from recsys.retrieval.rails import (
    Combined,
    TopKAvg,
    TopKPerEmbd,
    avg_items,
    avg_query,
    weighted_query,
)
from recsys.similarity.parts import QueryParts


def build(name: str, cat, budget: int, backend: str = "torch"):
    if name == "per_embd":
        return TopKPerEmbd(cat.similarity, cat.index, budget, backend)
    if name == "avg":
        return TopKAvg(cat.similarity, cat.index, budget, backend)
    if name == "avg_probe":
        return TopKAvg(cat.similarity, cat.index, budget, backend, probe=3)
    return Combined(cat.similarity, cat.index, budget, budget, backend)


NAMES = ["per_embd", "avg", "avg_probe", "combined"]


@pytest.mark.parametrize("backend", ["torch", "faiss"])
@pytest.mark.parametrize("name", NAMES)
def test_equal_to_brute_force_when_the_budget_covers_the_catalog(name: str, backend: str) -> None:
    cat = make_catalog(num_items=45, batch=4, seed=3)
    retriever = build(name, cat, budget=45, backend=backend)
    exclude = random_exclude(4, 45, seed=4)
    assert_same_topk(retriever.search(cat.queries, 7, exclude), reference_topk(cat, 7, exclude))
    assert_same_topk(retriever.search(cat.queries, 7), reference_topk(cat, 7))


@pytest.mark.parametrize("backend", ["torch", "faiss"])
@pytest.mark.parametrize("name", NAMES)
def test_never_returns_excluded_items_or_duplicates(name: str, backend: str) -> None:
    cat = make_catalog(num_items=80, batch=6, seed=5)
    exclude = random_exclude(6, 80, rate=0.6, seed=6)
    scores, ids = build(name, cat, budget=3, backend=backend).search(cat.queries, 10, exclude)
    assert ids.shape == (6, 10)
    assert not exclude.gather(1, ids)[ids != 0].any()
    for row in ids:
        kept = row[row != 0].tolist()
        assert len(kept) == len(set(kept))
    # Exclusion happens before the cut: every row still gets 10 admissible items.
    assert (ids != 0).all() and torch.isfinite(scores).all()
    assert (scores[:, :-1] >= scores[:, 1:]).all()


@pytest.mark.parametrize("name", NAMES)
def test_k_larger_than_catalog(name: str) -> None:
    cat = make_catalog(num_items=5, batch=2)
    scores, ids = build(name, cat, budget=2).search(cat.queries, 9)
    assert ids.shape == (2, 9)
    assert all(sorted(r[:5].tolist()) == [1, 2, 3, 4, 5] for r in ids)
    assert (ids[:, 5:] == 0).all() and torch.isinf(scores[:, 5:]).all()


def test_bf16_index_with_full_budget_equals_brute_force_on_that_index() -> None:
    cat = make_catalog(num_items=30, batch=3, dtype=torch.bfloat16)
    got = TopKAvg(cat.similarity, cat.index, 30).search(cat.queries, 6)
    assert_same_topk(got, reference_topk(cat, 6))


def test_avg_vectors_are_the_component_sum_and_mean() -> None:
    f, g = torch.randn(2, 3, 4), torch.randn(5, 2, 4)
    assert torch.allclose(avg_query(f)[:, 0], f[:, 0] + f[:, 1] + f[:, 2])
    assert torch.allclose(avg_items(g)[:, 0], (g[:, 0] + g[:, 1]) / 2)


def test_budget_is_validated() -> None:
    cat = make_catalog(num_items=5)
    with pytest.raises(ValueError, match="k_prime"):
        TopKAvg(cat.similarity, cat.index, 0)
    with pytest.raises(ValueError, match="backend"):
        TopKAvg(cat.similarity, cat.index, 3, backend="annoy")
    with pytest.raises(ValueError, match="per_k"):
        TopKAvg(cat.similarity, cat.index, 3, per_k=-1)
    with pytest.raises(ValueError, match="probe"):
        TopKAvg(cat.similarity, cat.index, 3, probe=-2)
    dot = make_catalog(num_items=5, kind="dot")
    with pytest.raises(ValueError, match="gated"):
        TopKAvg(dot.similarity, dot.index, 3, probe=2)


def test_probe_weights_are_the_summed_gates_of_the_probed_items() -> None:
    """u_i = sum over the probe's admissible items x and item components j of pi_ij(q, x),
    computed here from score_gathered on the items plain TopKAvg ranks first."""
    cat = make_catalog(num_items=40, batch=3, seed=11)
    exclude = random_exclude(3, 40, seed=12)
    exclude[2, 1:] = True  # no admissible item: weights fall back to uniform
    probe = TopKAvg(cat.similarity, cat.index, 5, probe=4)
    u = probe.probe_weights(cat.queries, avg_query(cat.queries.f), exclude)
    first = TopKAvg(cat.similarity, cat.index, 4).candidates(cat.queries, 4, exclude)
    parts = cat.index.parts.to(dtype=torch.float32)
    _, pi = cat.similarity.score_gathered(cat.queries, parts, first, return_gates=True)
    p_q = cat.queries.f.shape[1]
    for b in range(2):
        assert (first[b] > 0).all()
        ref = pi[b].sum(dim=0).view(p_q, -1).sum(dim=-1)
        torch.testing.assert_close(u[b], ref)
    torch.testing.assert_close(u[2], torch.ones(p_q))


def test_weighted_query_sums_weighted_components() -> None:
    f = torch.randn(2, 3, 4)
    u = torch.rand(2, 3)
    ref = torch.stack([sum(u[b, i] * f[b, i] for i in range(3)) for b in range(2)])
    torch.testing.assert_close(weighted_query(QueryParts(f=f), u)[:, 0], ref)


def test_topk_avg_budget_grows_with_k() -> None:
    """per_k: max(k', per_k * k) candidates; with per_k * k covering the catalog it is exact."""
    cat = make_catalog(num_items=60, batch=3, seed=8)
    scaled = TopKAvg(cat.similarity, cat.index, 4, per_k=6)
    assert scaled.candidates(cat.queries, 2, None).shape == (3, 12)
    assert scaled.candidates(cat.queries, 1, None).shape == (3, 6)
    assert TopKAvg(cat.similarity, cat.index, 9, per_k=6).candidates(
        cat.queries, 1, None
    ).shape == (3, 9)
    assert_same_topk(scaled.search(cat.queries, 10), reference_topk(cat, 10))
