"""Recall of the approximate methods against brute force on a (briefly) trained toy model."""

from __future__ import annotations

import pytest
import torch
from retrieval_helpers import assert_same_topk, trained_toy

from recsys.retrieval.bounded import BoundedConfig, BoundedExact
from recsys.retrieval.brute_force import BruteForce
from recsys.retrieval.index import index_from_model
from recsys.retrieval.quality import recall_at_k, top1_hit_rate
from recsys.retrieval.rails import Combined, TopKAvg, TopKPerEmbd


@pytest.mark.slow
def test_recall_grows_with_the_budget_and_bounded_exact_is_exact(tmp_path) -> None:
    model, data = trained_toy(tmp_path / "data")
    index = index_from_model(model)
    sim, n, k = model.similarity, data.num_items, 10
    with torch.no_grad():
        histories = torch.randint(1, n + 1, (16, 8))
        queries = model.query_parts(histories, None, torch.arange(16))
    exact = BruteForce(sim, index).search(queries, k)

    for make in (
        lambda b: TopKAvg(sim, index, b),
        lambda b: TopKPerEmbd(sim, index, b),
        lambda b: Combined(sim, index, b, b),
    ):
        recalls = []
        for budget in (k, 3 * k, n):
            approx = make(budget).search(queries, k)
            recalls.append(recall_at_k(approx[1], exact[1]))
            assert 0.0 <= top1_hit_rate(approx[1], exact[1]) <= 1.0
        # Candidate sets grow with the budget, so recall cannot drop; full budget is exact.
        assert recalls[0] <= recalls[1] + 1e-9 <= recalls[2] + 2e-9
        assert recalls[-1] == 1.0

    bounded = BoundedExact(sim, index, config=BoundedConfig(first_stage_k=k, brute_force_below=0))
    assert_same_topk(bounded.search(queries, k), exact)
    # Every exact top-k item survives the bound; survivors never exceed the catalog.
    assert k <= bounded.stats.survivors <= n
