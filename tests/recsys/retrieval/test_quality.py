"""recall@k and top-1 hit rate against hand-computed values."""

from __future__ import annotations

import torch

from recsys.retrieval.quality import recall_at_k, top1_hit_rate


def test_recall_and_top1_by_hand() -> None:
    exact = torch.tensor([[1, 2, 3, 4], [5, 6, 0, 0]])
    approx = torch.tensor([[2, 9, 1, 8], [7, 5, 0, 0]])
    # row 0: {1, 2} of 4 found -> 0.5; row 1: {5} of 2 -> 0.5
    assert recall_at_k(approx, exact) == 0.5
    # row 0's best (1) is present; row 1's best (5) is present
    assert top1_hit_rate(approx, exact) == 1.0
    assert top1_hit_rate(torch.tensor([[9, 8, 7, 6], [5, 0, 0, 0]]), exact) == 0.5


def test_identical_lists_have_recall_one() -> None:
    ids = torch.randint(1, 100, (5, 10))
    assert recall_at_k(ids, ids) == 1.0 and top1_hit_rate(ids, ids) == 1.0
