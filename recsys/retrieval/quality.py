"""How close an approximate top-k is to the exact one (docs/SPEC.md section 3).

- recall@k = |approx top-k intersect exact top-k| / (size of the exact top-k), averaged over
  queries (padding id 0 never counts; a row whose exact list is empty is skipped);
- top-1 hit rate = how often the exact top-1 item appears anywhere in the approximate
  top-k (the authors' measure).
Ties make "the" exact top-k ambiguous; recall counts ids, so a tie at the k-th place can
cost at most the tied slots.

Shapes: B queries, K list length.
"""

from __future__ import annotations

from torch import Tensor


def recall_at_k(approx_ids: Tensor, exact_ids: Tensor) -> float:
    """approx_ids, exact_ids (B, K) long (0 = empty slot) -> mean recall over queries."""
    hits = (approx_ids.unsqueeze(2) == exact_ids.unsqueeze(1)) & (exact_ids.unsqueeze(1) != 0)
    found = hits.any(dim=1).sum(dim=1).float()  # (B,) exact ids present in approx
    size = (exact_ids != 0).sum(dim=1).float()
    valid = size > 0
    if not valid.any():
        return 1.0
    return float((found[valid] / size[valid]).mean().item())


def top1_hit_rate(approx_ids: Tensor, exact_ids: Tensor) -> float:
    """Fraction of queries whose exact best item (column 0) is anywhere in approx_ids."""
    best = exact_ids[:, :1]
    valid = best[:, 0] != 0
    if not valid.any():
        return 1.0
    hit = (approx_ids == best).any(dim=1)
    return float(hit[valid].float().mean().item())
