"""Offline full-ranking metrics through any retriever (docs/SPEC.md sections 3 and 4).

Same protocol and queries as `recsys.evaluation` (leave-one-out, history truncated to
max_len, the whole history excluded, the target kept rankable even when it also occurs in
the history), but the ranking comes from `retriever.search(queries, K, exclude)` with
K = 200 (the largest reported cutoff) instead of a full (B, N+1) score matrix. The quality
cost of an approximate retriever then shows next to exact in the same table.

Ranks from a top-K list: when the target is in the list, rank = 1 + the number of listed
items scoring strictly higher (the tie rule of `recsys.metrics`; for an exact retriever
this equals the full-ranking rank, because every item scoring higher than a listed target
is listed too). A target outside the list gets rank N + 1: HR@K and NDCG@K for K <= 200
are exact for an exact retriever, while MRR counts targets beyond the list as ~0 (MRR@200;
the full-ranking MRR adds at most (fraction of such targets) / 201).

Shapes: B users per batch, S whole-history length, N catalog size, K list length.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor

from recsys.batch import SplitName
from recsys.dataset import SequenceDataset
from recsys.evaluation import EvalSet
from recsys.metrics import COVERAGE_K, compute_metrics
from recsys.retrieval.factory import RetrievalConfig, Retriever, make_retriever
from recsys.retrieval.index import index_from_model
from recsys.retrieval.topk import NEG_INF

EVAL_K = 200


def exclusion_mask(seen: Tensor, targets: Tensor | None, num_items: int) -> Tensor:
    """seen (B, S) long 0-padded history ids, targets (B,) | None -> (B, N+1) bool mask:
    True for padding column 0 and every seen item, except each row's own target."""
    mask = torch.zeros(seen.shape[0], num_items + 1, dtype=torch.bool, device=seen.device)
    mask.scatter_(1, seen, True)
    mask[:, 0] = True
    if targets is not None:
        mask.scatter_(1, targets.unsqueeze(1), False)
    return mask


def ranks_from_topk(scores: Tensor, ids: Tensor, targets: Tensor, miss_rank: int) -> Tensor:
    """scores, ids (B, K) best first, targets (B,) -> (B,) long ranks (1 = best); a target
    not in its list gets `miss_rank`."""
    hit = ids == targets.unsqueeze(1)
    target_score = torch.where(hit, scores, torch.full_like(scores, NEG_INF)).amax(dim=1)
    rank = (scores > target_score.unsqueeze(1)).sum(dim=1) + 1
    return torch.where(hit.any(dim=1), rank, torch.full_like(rank, miss_rank))


@torch.inference_mode()
def collect_retriever_ranks(
    model: torch.nn.Module,
    retriever: Retriever,
    evalset: EvalSet,
    num_items: int,
    batch_size: int = 256,
    device: torch.device | str = "cpu",
    k: int = EVAL_K,
) -> tuple[np.ndarray, np.ndarray]:
    """-> (ranks (U_eval,) int64, top10 (U_eval, 10) int64) for every query of `evalset`."""
    device = torch.device(device)
    ranks, tops = [], []
    for batch in evalset.loader(batch_size):
        item_ids = batch.item_ids.to(device)
        times = None if batch.timestamps is None else batch.timestamps.to(device)
        targets = batch.targets.to(device)  # type: ignore[union-attr]
        exclude = exclusion_mask(batch.seen.to(device), targets, num_items)  # type: ignore[union-attr]
        qp = model.query_parts(item_ids, times, batch.user_ids.to(device))  # type: ignore[operator]
        scores, ids = retriever.search(qp, k, exclude)
        ranks.append(ranks_from_topk(scores, ids, targets, num_items + 1).cpu())
        tops.append(ids[:, :COVERAGE_K].cpu())
    if not ranks:
        return np.zeros(0, dtype=np.int64), np.zeros((0, COVERAGE_K), dtype=np.int64)
    return torch.cat(ranks).numpy(), torch.cat(tops).numpy()


def evaluate_with_retriever(
    model: torch.nn.Module,
    data: SequenceDataset,
    split: SplitName,
    max_len: int,
    retriever: str | Retriever = "brute_force",
    batch_size: int = 256,
    device: torch.device | str = "cpu",
    index_dtype: torch.dtype | None = None,
    config: RetrievalConfig | None = None,
) -> dict[str, float]:
    """Full-ranking metrics of `model` on `split`, ranked through `retriever`.

    model: a `SeqRecModel` already on `device` and in eval mode; retriever: a name from
    `recsys.retrieval.factory.RETRIEVER_NAMES` (an index is built from the model, in
    `index_dtype`, default float32 so that exact retrievers reproduce `recsys.evaluation`'s
    float32 full ranking, with `config`'s budgets) or a ready retriever over this model's
    index. Keys: `recsys.metrics.METRIC_KEYS`.
    """
    if isinstance(retriever, str):
        index = index_from_model(model, index_dtype or torch.float32)
        retriever = make_retriever(retriever, model.similarity, index, config)  # type: ignore[arg-type]
    evalset = EvalSet(data, split, max_len)
    ranks, top10 = collect_retriever_ranks(
        model, retriever, evalset, data.num_items, batch_size, device
    )
    return compute_metrics(ranks, top10, data.num_items)
