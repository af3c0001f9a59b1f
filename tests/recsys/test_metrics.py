"""Metrics against hand-computed ranks (ties, seen-item filtering) and a slow reference."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from recsys.metrics import (
    METRIC_KEYS,
    compute_metrics,
    mask_seen,
    metrics_from_scores,
    ranks_from_scores,
    top_k_items,
)

NEG_INF = float("-inf")


def test_metric_keys_exact() -> None:
    assert METRIC_KEYS == (
        "hr@1",
        "hr@5",
        "hr@10",
        "hr@50",
        "hr@100",
        "hr@200",
        "ndcg@10",
        "ndcg@50",
        "ndcg@200",
        "mrr",
        "coverage@10",
    )


def test_ranks_hand_computed_with_ties() -> None:
    # column 0 is padding; catalog = items 1..5
    scores = torch.tensor(
        [
            [NEG_INF, 0.9, 0.5, 0.5, 0.1, 0.7],  # target 2 (0.5): 0.9 and 0.7 higher -> 3
            [NEG_INF, 0.2, 0.2, 0.2, 0.2, 0.2],  # all tie -> 1 (ties favour the target)
            [NEG_INF, 0.3, 0.1, 0.0, -1.0, 0.2],  # target 4 is the worst -> 5
        ]
    )
    targets = torch.tensor([2, 3, 4])
    assert ranks_from_scores(scores, targets).tolist() == [3, 1, 5]


def test_seen_items_are_filtered_but_target_kept() -> None:
    scores = torch.tensor([[5.0, 0.9, 0.5, 0.8, 0.1, 0.7], [5.0, 0.9, 0.5, 0.8, 0.1, 0.7]])
    # user 0 saw 1 and 3 (both above the target 5): rank 3 -> 1
    # user 1 "saw" its own target 2 (re-consumption) plus 1: target stays rankable -> 3
    seen = torch.tensor([[1, 3, 0], [2, 1, 0]])
    targets = torch.tensor([5, 2])
    masked = mask_seen(scores.clone(), seen, targets)
    inf = torch.isinf(masked)
    assert inf[0].tolist() == [True, True, False, True, False, False]
    assert inf[1].tolist() == [True, True, False, False, False, False]
    assert masked[1, 2].item() == pytest.approx(0.5)
    assert ranks_from_scores(masked, targets).tolist() == [1, 3]
    top = top_k_items(masked, k=4)
    assert top[0].tolist() == [5, 2, 4, 0]  # only 3 finite items: the 4th slot is empty
    assert top[1].tolist() == [3, 5, 2, 4]


def test_compute_metrics_hand_computed() -> None:
    ranks = np.array([1, 3, 12, 60])
    top10 = np.array([[1, 2] + [0] * 8, [2, 3] + [0] * 8, [4] + [0] * 9, [0] * 10])
    m = compute_metrics(ranks, top10, num_items=8)
    assert list(m) == list(METRIC_KEYS)
    assert m["hr@1"] == 0.25
    assert m["hr@5"] == 0.5
    assert m["hr@10"] == 0.5
    assert m["hr@50"] == 0.75
    assert m["hr@100"] == 1.0
    assert m["ndcg@10"] == pytest.approx((1.0 + 1.0 / math.log2(4)) / 4)
    assert m["ndcg@50"] == pytest.approx((1.0 + 0.5 + 1.0 / math.log2(13)) / 4)
    assert m["ndcg@200"] == pytest.approx((1.0 + 0.5 + 1 / math.log2(13) + 1 / math.log2(61)) / 4)
    assert m["mrr"] == pytest.approx((1 + 1 / 3 + 1 / 12 + 1 / 60) / 4)
    assert m["coverage@10"] == pytest.approx(4 / 8)  # items 1, 2, 3, 4


def _slow_reference(scores: np.ndarray, targets: np.ndarray, seen: list[set[int]]) -> np.ndarray:
    ranks = []
    for b in range(len(targets)):
        t = targets[b]
        higher = 0
        for i in range(1, scores.shape[1]):
            if i != t and i in seen[b]:
                continue
            if scores[b, i] > scores[b, t]:
                higher += 1
        ranks.append(higher + 1)
    return np.array(ranks)


def test_fast_path_matches_slow_reference() -> None:
    rng = np.random.default_rng(0)
    b, n = 16, 40
    # coarse scores so that ties actually occur
    scores = rng.integers(0, 6, size=(b, n + 1)).astype(np.float32)
    targets = rng.integers(1, n + 1, size=b)
    seen_sets = [
        set(rng.choice(np.arange(1, n + 1), size=7, replace=False).tolist()) for _ in range(b)
    ]
    seen = torch.tensor([sorted(s) for s in seen_sets])
    expected = _slow_reference(scores, targets, seen_sets)
    m = metrics_from_scores(torch.from_numpy(scores), torch.from_numpy(targets), seen, n)
    ref = compute_metrics(expected, np.zeros((b, 10), dtype=np.int64), n)
    for key in METRIC_KEYS[:-1]:
        assert m[key] == pytest.approx(ref[key]), key
    fast = ranks_from_scores(
        mask_seen(torch.from_numpy(scores).clone(), seen, torch.from_numpy(targets)),
        torch.from_numpy(targets),
    )
    np.testing.assert_array_equal(fast.numpy(), expected)


def test_nan_target_score_is_an_error() -> None:
    scores = torch.tensor([[NEG_INF, float("nan"), 0.1]])
    with pytest.raises(ValueError, match="NaN"):
        ranks_from_scores(scores, torch.tensor([1]))


def test_bad_shapes_rejected() -> None:
    with pytest.raises(ValueError, match="ranks"):
        compute_metrics(np.array([0, 1]), np.zeros((2, 10)), 5)
    with pytest.raises(ValueError, match="top10"):
        compute_metrics(np.array([1, 2]), np.zeros((3, 10)), 5)
