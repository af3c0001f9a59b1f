"""Evaluation through a retriever equals full-ranking evaluation for exact retrievers."""

from __future__ import annotations

import pytest
import torch
from retrieval_helpers import trained_toy

from recsys.evaluation import evaluate
from recsys.metrics import METRIC_KEYS
from recsys.retrieval.evaluate import evaluate_with_retriever, exclusion_mask, ranks_from_topk
from recsys.retrieval.factory import RetrievalConfig


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    return trained_toy(tmp_path_factory.mktemp("data"), steps=30)


@pytest.mark.parametrize("name", ["brute_force", "bounded_exact"])
def test_exact_retrievers_reproduce_full_ranking_metrics(trained, name: str) -> None:
    model, data = trained
    max_len = model.config.encoder.max_len
    ref = evaluate(model, data, "test", max_len, batch_size=64)
    got = evaluate_with_retriever(model, data, "test", max_len, name, batch_size=64)
    assert set(got) == set(METRIC_KEYS)
    for key in METRIC_KEYS:
        assert got[key] == pytest.approx(ref[key], abs=1e-9), key


def test_approximate_retriever_runs_with_small_budgets(trained) -> None:
    model, data = trained
    config = RetrievalConfig(avg_k=1, per_embd_k=1, combined_k1=1, combined_k2=1)
    for name in ("topk_avg", "topk_per_embd", "combined"):
        got = evaluate_with_retriever(model, data, "valid", 16, name, config=config)
        assert all(0.0 <= got[k] <= 1.0 for k in METRIC_KEYS)


def test_exclusion_mask_keeps_the_target_rankable() -> None:
    seen = torch.tensor([[3, 5, 0], [2, 0, 0]])
    mask = exclusion_mask(seen, torch.tensor([5, 4]), 6)
    assert mask.tolist() == [
        [True, False, False, True, False, False, False],
        [True, False, True, False, False, False, False],
    ]


def test_ranks_from_topk_by_hand() -> None:
    scores = torch.tensor([[3.0, 2.0, 2.0, 1.0], [5.0, 4.0, 3.0, 2.0]])
    ids = torch.tensor([[7, 8, 9, 1], [1, 2, 3, 4]])
    # row 0: target 9 ties with 8 -> rank 2 (ties favour the target); row 1: 6 not listed
    assert ranks_from_topk(scores, ids, torch.tensor([9, 6]), 101).tolist() == [2, 101]
