"""Exact top-k for dot-product models (cosine / tau): the degenerate MoL with one component.

With P_Q = P_X = 1 and no gates the score is the inner product itself, so one k-best
inner-product search is already exact: torch (`component_topk`, masked before the cut)
or a FAISS `IndexFlatIP` (exact over-fetching for exclusion). The search runs in the index
dtype; the returned scores are recomputed in float32 through the similarity, so a bf16
index ranks with bf16-rounded query vectors but reports float32 scores.

Shapes: B queries, N catalog size, D model dim, K top-k.
"""

from __future__ import annotations

import torch
from torch import Tensor

from recsys.retrieval.index import ItemIndex, Similarity, score_ids
from recsys.retrieval.rails import Backend, ComponentSearch
from recsys.retrieval.topk import NEG_INF, check_exclude, check_k
from recsys.similarity.parts import QueryParts


class DotRetriever:
    """k-best inner-product search over a dot-product index (g (N+1, 1, D), no a_x)."""

    def __init__(
        self, similarity: Similarity, index: ItemIndex, backend: Backend = "torch"
    ) -> None:
        if index.g.shape[1] != 1 or index.a_x is not None:
            raise ValueError(
                "DotRetriever needs a dot-product index (one item component, no gate term); "
                f"got {index.g.shape[1]} components"
                f"{' and a gate term' if index.a_x is not None else ''}. "
                "Use a MoL retriever (brute_force, topk_avg, bounded_exact, ...) instead."
            )
        self.similarity, self.index = similarity, index
        self.searcher = ComponentSearch(index.g, backend)

    @torch.no_grad()
    def search(
        self, queries: QueryParts, k: int, exclude: Tensor | None = None
    ) -> tuple[Tensor, Tensor]:
        """queries (B, f (B, 1, D)), exclude (B, N+1) bool | None -> (scores (B, k), ids (B, k))."""
        check_k(k)
        check_exclude(exclude, queries.batch_size, self.index.num_items, self.index.device)
        if queries.f.shape[1] != 1:
            raise ValueError(f"DotRetriever needs one query component, got {queries.f.shape[1]}")
        ids = self.searcher.search(queries.f, k, exclude)[:, 0]  # (B, k), best first
        scores = score_ids(self.similarity, queries, self.index, ids).masked_fill(ids == 0, NEG_INF)
        order = scores.argsort(dim=1, descending=True, stable=True)
        return scores.gather(1, order), ids.gather(1, order)
