"""Full-ranking metrics for leave-one-out evaluation (SPEC section 4).

Every query has one held-out target item and a score for every catalog item. The pure
functions below turn scores into ranks and ranks into the reported metrics:

- **Tie rule.** `rank = 1 + number of items scoring strictly higher than the target`. Items
  that tie with the target do not push it down (the optimistic rule, also what
  `(scores > target_score).sum() + 1` computes in the HSTU/MoL reference code). Masked items
  (score -inf: padding column 0 and items already in the history) never score strictly
  higher than a finite target, so they never count.
- HR@K = [rank <= K]; NDCG@K = [rank <= K] / log2(rank + 1) (one relevant item, so the
  ideal DCG is 1); MRR = 1 / rank; each averaged over queries.
- coverage@10 = distinct items appearing in any query's top-10 list / catalog size N.

The metric functions take plain arrays (ranks, top-10 lists) so that any scorer (brute
force, a RAILS retriever, popularity) is measured by the same code.

Shapes: B queries, N catalog size (ids 1..N, column 0 is padding).
"""

from __future__ import annotations

import numpy as np
from torch import Tensor

HR_CUTOFFS = (1, 5, 10, 50, 100, 200)
NDCG_CUTOFFS = (10, 50, 200)
COVERAGE_K = 10
METRIC_KEYS: tuple[str, ...] = (
    *(f"hr@{k}" for k in HR_CUTOFFS),
    *(f"ndcg@{k}" for k in NDCG_CUTOFFS),
    "mrr",
    f"coverage@{COVERAGE_K}",
)


def mask_seen(scores: Tensor, seen: Tensor, targets: Tensor | None = None) -> Tensor:
    """Set the scores of already-seen items and of padding column 0 to -inf, in place.

    scores: (B, N+1) float; seen: (B, S) long item ids, 0-padded (0 is padding anyway);
    targets: (B,) long or None. The target's own score is kept even when the target also
    occurs in the history (a re-consumed item must stay rankable, otherwise its rank would
    be meaningless). Returns `scores`.
    """
    kept = None if targets is None else scores.gather(1, targets[:, None])
    scores.scatter_(1, seen, float("-inf"))
    scores[:, 0] = float("-inf")
    if targets is not None and kept is not None:
        scores.scatter_(1, targets[:, None], kept)
    return scores


def ranks_from_scores(scores: Tensor, targets: Tensor) -> Tensor:
    """(B, N+1) scores, (B,) target ids -> (B,) int64 ranks, 1 = best.

    rank = 1 + #items with a score strictly higher than the target's (ties favour the
    target; -inf items never count against a finite target).
    """
    target_scores = scores.gather(1, targets[:, None])  # (B, 1)
    if target_scores.isnan().any():
        # NaN compares False with everything, which would silently give rank 1.
        raise ValueError("a target's score is NaN: the model produced NaN scores (diverged?)")
    return (scores > target_scores).sum(dim=1) + 1


def top_k_items(scores: Tensor, k: int = COVERAGE_K) -> Tensor:
    """(B, N+1) masked scores -> (B, k) int64 item ids of the k best; 0 where fewer than k
    items have a finite score (those slots are not recommendations)."""
    k = min(k, scores.shape[1])
    values, ids = scores.topk(k, dim=1)
    return ids.masked_fill(values == float("-inf"), 0)


def hit_rate(ranks: np.ndarray, k: int) -> float:
    """Fraction of queries whose target ranks in the top k."""
    return float(np.mean(ranks <= k)) if len(ranks) else 0.0


def ndcg(ranks: np.ndarray, k: int) -> float:
    """Mean of [rank <= k] / log2(rank + 1) (one relevant item per query)."""
    if not len(ranks):
        return 0.0
    gains = np.where(ranks <= k, 1.0 / np.log2(ranks.astype(np.float64) + 1.0), 0.0)
    return float(gains.mean())


def mrr(ranks: np.ndarray) -> float:
    """Mean reciprocal rank."""
    return float(np.mean(1.0 / ranks.astype(np.float64))) if len(ranks) else 0.0


def coverage(top_items: np.ndarray, num_items: int) -> float:
    """Distinct item ids (> 0) in the (B, K) top lists, divided by the catalog size N."""
    distinct = np.unique(top_items[top_items > 0])
    return float(len(distinct) / num_items) if num_items > 0 else 0.0


def compute_metrics(ranks: np.ndarray, top10: np.ndarray, num_items: int) -> dict[str, float]:
    """All reported metrics, keyed exactly by `METRIC_KEYS`.

    ranks: (B,) int target ranks (1 = best) under the tie rule above; top10: (B, 10) int item
    ids of each query's ten best items (0 = empty slot); num_items: catalog size N.
    """
    ranks = np.asarray(ranks)
    top10 = np.asarray(top10)
    if ranks.ndim != 1 or (len(ranks) and ranks.min() < 1):
        raise ValueError(f"ranks must be a 1-D array of ranks >= 1, got shape {ranks.shape}")
    if top10.ndim != 2 or top10.shape[0] != ranks.shape[0]:
        raise ValueError(f"top10 must be (B, K) with B = {len(ranks)}, got shape {top10.shape}")
    out: dict[str, float] = {}
    for k in HR_CUTOFFS:
        out[f"hr@{k}"] = hit_rate(ranks, k)
    for k in NDCG_CUTOFFS:
        out[f"ndcg@{k}"] = ndcg(ranks, k)
    out["mrr"] = mrr(ranks)
    out[f"coverage@{COVERAGE_K}"] = coverage(top10[:, :COVERAGE_K], num_items)
    return out


def metrics_from_scores(
    scores: Tensor, targets: Tensor, seen: Tensor | None, num_items: int
) -> dict[str, float]:
    """Convenience for small inputs: mask, rank and measure one (B, N+1) score matrix."""
    scores = scores.clone()
    if seen is not None:
        mask_seen(scores, seen, targets)
    else:
        scores[:, 0] = float("-inf")
    ranks = ranks_from_scores(scores, targets)
    return compute_metrics(ranks.cpu().numpy(), top_k_items(scores).cpu().numpy(), num_items)


__all__ = [
    "METRIC_KEYS",
    "compute_metrics",
    "coverage",
    "hit_rate",
    "mask_seen",
    "metrics_from_scores",
    "mrr",
    "ndcg",
    "ranks_from_scores",
    "top_k_items",
]
