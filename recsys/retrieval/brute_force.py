"""Brute-force retrieval: the full similarity (MoL gating included) on every item, then top-k.

The ground truth every other retriever is measured against (docs/SPEC.md section 3).
Chunked over queries and items: a block of b <= `query_chunk` queries is scored against
`pair_chunk // b` items at a time and folded into a running top-k, so the largest
intermediate is the similarity's (b, pair_chunk // b, hidden) gate activation, whatever N
is. The default, 4,096 pairs, keeps that activation at 2 MiB, so the gate's element-wise
passes run in cache (block sizes compared in benchmarks/results/blocks-1M-cpu.json).
Blocks above 32 MiB would also be served by fresh mmap'd pages on every call (glibc hands
them straight back to the OS), whose page faults cost more than the arithmetic.

Shapes: B queries, N catalog size (ids 1..N), K top-k.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from recsys.retrieval.index import ItemIndex, Similarity, score_slice
from recsys.retrieval.topk import NEG_INF, check_exclude, check_k, merge_topk, topk_padded
from recsys.similarity.parts import QueryParts


@dataclass(frozen=True)
class BruteForceConfig:
    """At most pair_chunk (query, item) pairs, from at most query_chunk queries, are scored
    at once: memory is proportional to pair_chunk."""

    pair_chunk: int = 1 << 12
    query_chunk: int = 32

    def __post_init__(self) -> None:
        for name in ("pair_chunk", "query_chunk"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"BruteForceConfig.{name} must be an integer >= 1, got {value!r}")


class BruteForce:
    """Exact top-k by scoring every item (chunked)."""

    def __init__(
        self, similarity: Similarity, index: ItemIndex, config: BruteForceConfig | None = None
    ) -> None:
        self.similarity = similarity
        self.index = index
        self.config = config if config is not None else BruteForceConfig()

    @torch.no_grad()
    def search(
        self, queries: QueryParts, k: int, exclude: Tensor | None = None
    ) -> tuple[Tensor, Tensor]:
        """queries (B queries), exclude (B, N+1) bool | None -> (scores (B, k), ids (B, k))."""
        check_k(k)
        b = queries.batch_size
        check_exclude(exclude, b, self.index.num_items, self.index.device)
        outs = [
            self._search_block(
                queries.slice(s, min(b, s + self.config.query_chunk)),
                k,
                None if exclude is None else exclude[s : s + self.config.query_chunk],
            )
            for s in range(0, b, self.config.query_chunk)
        ]
        return torch.cat([o[0] for o in outs]), torch.cat([o[1] for o in outs])

    def _search_block(
        self, qp: QueryParts, k: int, exclude: Tensor | None
    ) -> tuple[Tensor, Tensor]:
        n1 = self.index.num_items + 1
        step = max(1, self.config.pair_chunk // qp.batch_size)
        best: tuple[Tensor, Tensor] | None = None
        for start in range(0, n1, step):
            stop = min(n1, start + step)
            scores = score_slice(self.similarity, qp, self.index, start, stop)  # (b, c)
            if exclude is not None:
                scores.masked_fill_(exclude[:, start:stop], NEG_INF)
            if start == 0:
                scores[:, 0] = NEG_INF  # padding
            ids = torch.arange(start, stop, device=scores.device).expand_as(scores)
            best = merge_topk(best, scores, ids, k)
        assert best is not None
        return topk_padded(best[0], best[1], k)
