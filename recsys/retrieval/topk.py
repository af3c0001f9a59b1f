"""Top-k building blocks shared by every retriever: exclusion masks, de-duplication,
padding, streaming top-k merges and the chunked inner-product candidate search.

Conventions of the `search` interface (docs/SPEC.md section 3):
- item ids are 1..N; id 0 is padding and is never returned as a result;
- `exclude` (B, N+1) bool, True = never return this item; it is applied *before* the top-k
  cut, so excluded items never take a slot that an admissible item could fill;
- results always have exactly k columns, best first; when a row has fewer than k admissible
  items (k > catalog, or most items excluded) the missing slots hold score -inf and id 0.

Shapes: B queries, N catalog size, C candidates per query, Q query vectors per row,
J item vectors per item, d vector dim, K top-k.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor

NEG_INF = float("-inf")
# Elements of one (B*Q, chunk*J) inner-product block of the candidate search: 2^25 (64 MiB
# in bf16). One block holds the whole (32, 1M) single-vector search: splitting it costs
# more than it saves, because a top-k' selection has a per-call cost that grows with k'.
SEARCH_BLOCK = 1 << 25
# Exclusion in the candidate search: rows with at most this many excluded items (beyond
# k) over-fetch k + E results and drop the excluded ones (exact, and cheaper than a mask
# pass over the (B, N) scores); heavier masks are applied to the scores before the cut.
OVERFETCH_LIMIT = 1024


# Rows of at most this many columns are cut on CPU by numpy's introselect (argpartition),
# then only the k winners are sorted: faster than torch.topk on short rows such as a
# serving batch over a catalog of thousands (`recsys bench recommend`); on (32, 1M) rows
# torch.topk is the faster one.
ARGPARTITION_MAX_COLS = 1 << 18


def select_topk(x: Tensor, k: int, sorted: bool = True) -> tuple[Tensor, Tensor]:
    """(values, indices) of the min(k, C) largest entries along the last axis of x (..., C),
    like `x.topk(k, dim=-1, sorted=sorted)` (ties in any order). Unsorted output is in an
    unspecified order."""
    c = x.shape[-1]
    k = min(k, c)
    if x.device.type != "cpu" or c > ARGPARTITION_MAX_COLS or x.requires_grad or k == 0:
        return x.topk(k, dim=-1, sorted=sorted)
    if k == c:
        idx = torch.arange(c).expand(x.shape).contiguous()
    else:
        flat = x.reshape(-1, c)
        arr = flat.numpy() if flat.dtype == torch.float32 else flat.float().numpy()
        part = np.argpartition(arr, c - k, axis=1)[:, c - k :]
        idx = torch.from_numpy(np.ascontiguousarray(part)).view(*x.shape[:-1], k)
    values = x.gather(-1, idx)
    if sorted:
        order = values.argsort(dim=-1, descending=True)
        values, idx = values.gather(-1, order), idx.gather(-1, order)
    return values, idx


def check_k(k: int) -> None:
    if isinstance(k, bool) or not isinstance(k, int) or k < 1:
        raise ValueError(f"k must be an integer >= 1, got {k!r}")


def check_exclude(exclude: Tensor | None, batch: int, num_items: int, device: torch.device) -> None:
    """Validate an exclusion mask: (B, N+1) bool on the index's device, or None."""
    if exclude is None:
        return
    if exclude.dtype != torch.bool or tuple(exclude.shape) != (batch, num_items + 1):
        raise ValueError(
            f"exclude must be a ({batch}, {num_items + 1}) bool mask (B, N+1), got "
            f"{tuple(exclude.shape)} {exclude.dtype}"
        )
    if exclude.device != device:
        raise ValueError(f"exclude is on {exclude.device}, the index on {device}")


def count_true(mask: Tensor) -> Tensor:
    """mask (B, X) bool -> (B,) int64 number of True per row. On CPU through numpy, whose
    byte count beats torch's bool sum (which widens every element to int64)."""
    if mask.device.type == "cpu":
        return torch.from_numpy(np.count_nonzero(mask.numpy(), axis=1).astype(np.int64))
    return mask.sum(dim=1)


def excluded_ids(ids: Tensor, exclude: Tensor | None) -> Tensor:
    """ids (B, C) long -> (B, C) bool: padding id 0 or excluded by `exclude` (B, N+1)."""
    bad = ids == 0
    if exclude is not None:
        bad |= exclude.gather(1, ids)
    return bad


def dedup_ids(ids: Tensor) -> Tensor:
    """ids (B, C) long -> (B, C) with every repeated id within a row replaced by 0.

    Rows come back sorted by id; order does not matter to the rescoring that follows.
    """
    if ids.shape[1] < 2:
        return ids
    ids = ids.sort(dim=1).values
    repeat = torch.zeros_like(ids, dtype=torch.bool)
    repeat[:, 1:] = ids[:, 1:] == ids[:, :-1]
    return ids.masked_fill(repeat, 0)


def topk_padded(scores: Tensor, ids: Tensor, k: int) -> tuple[Tensor, Tensor]:
    """scores (B, C) with -inf for inadmissible entries, ids (B, C) -> the k best
    (scores (B, k), ids (B, k)), sorted; slots without an admissible item get (-inf, 0)."""
    b = scores.shape[0]
    top, pos = select_topk(scores, k)
    top_ids = ids.gather(1, pos).masked_fill(top == NEG_INF, 0)
    if top.shape[1] < k:
        pad = k - top.shape[1]
        top = torch.cat([top, top.new_full((b, pad), NEG_INF)], dim=1)
        top_ids = torch.cat([top_ids, top_ids.new_zeros((b, pad))], dim=1)
    return top, top_ids


def merge_topk(
    best: tuple[Tensor, Tensor] | None, scores: Tensor, ids: Tensor, k: int
) -> tuple[Tensor, Tensor]:
    """Running top-k: best (scores (..., k'), ids (..., k')) or None, plus a new block
    (scores (..., c), ids (..., c)) -> the top min(k, k'+c) of both along the last axis."""
    if best is not None:
        scores = torch.cat([best[0], scores], dim=-1)
        ids = torch.cat([best[1], ids], dim=-1)
    top, pos = select_topk(scores, k)
    return top, ids.gather(-1, pos)


def item_chunk_for(rows: int, vectors_per_item: int, block: int = SEARCH_BLOCK) -> int:
    """Items per chunk so that a (rows, chunk * vectors_per_item) block has <= `block` elements."""
    return max(1, block // max(1, rows * vectors_per_item))


def component_topk(
    queries: Tensor,
    items: Tensor,
    k: int,
    exclude: Tensor | None,
    block: int = SEARCH_BLOCK,
    sorted: bool = True,
) -> Tensor:
    """Per (query vector, item vector) pair, the k admissible items of highest inner product.

    queries (B, Q, d), items (N+1, J, d) (row 0 = padding, never returned), exclude (B, N+1)
    bool or None -> ids (B, Q*J, k) long, best first (in any order with sorted=False; 0
    where fewer than k admissible items exist). Pair index i*J + j. Computed in the items'
    dtype, streamed over item chunks so the largest intermediate holds at most `block`
    elements whatever N; each chunk is cut to its own top candidates before merging.
    """
    b, q, d = queries.shape
    n1, j, _ = items.shape
    flat_q = queries.to(items.dtype).reshape(b * q, d)
    fetch, mask_scores = k, exclude is not None
    if exclude is not None:
        excluded = int(count_true(exclude).max().item())  # padding included: harmless
        if excluded <= OVERFETCH_LIMIT:
            fetch, mask_scores = k + excluded, False
    chunk = item_chunk_for(b * q, j, block)
    best: tuple[Tensor, Tensor] | None = None
    for start in range(0, n1, chunk):
        stop = min(n1, start + chunk)
        block_items = items[start:stop].reshape((stop - start) * j, d)
        s = flat_q @ block_items.T  # (B*Q, c*J)
        if j > 1:  # (B, Q, c, J) -> (B, Q*J, c): one row per component pair
            s = s.view(b, q, stop - start, j).permute(0, 1, 3, 2).reshape(b, q * j, -1)
        else:
            s = s.view(b, q, stop - start)
        if mask_scores:
            s.masked_fill_(exclude[:, None, start:stop], NEG_INF)  # type: ignore[index]
        if start == 0:
            s[..., 0] = NEG_INF  # padding
        top, pos = select_topk(s, fetch, sorted=False)
        best = (top, pos + start) if best is None else merge_topk(best, top, pos + start, fetch)
    assert best is not None
    top, ids = best
    if exclude is not None and not mask_scores:
        bad = exclude.gather(1, ids.reshape(b, -1)).view_as(ids)
        top = top.masked_fill(bad, NEG_INF)
    top, pos = select_topk(top, k, sorted=sorted)
    ids = ids.gather(-1, pos).masked_fill(top == NEG_INF, 0)
    if ids.shape[-1] < k:
        ids = torch.cat([ids, ids.new_zeros((b, q * j, k - ids.shape[-1]))], dim=-1)
    return ids
