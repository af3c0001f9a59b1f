"""A stand-in Recommender that computes nothing: the no-op baseline of the serving benchmark.

It answers every request with the first k of a fixed list of keys, so the response has the
size of a real one and only the model's cost is missing from the measured path.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from recsys.recommend import MAX_K, RETRIEVERS, QueryCache, RecRequest, RecResult


class NoopRecommender:
    """Same interface as `recsys.recommend.Recommender`, constant answers."""

    model_version = "noop"
    default_retriever = "rails"

    def __init__(self, num_items: int = MAX_K) -> None:
        self.retrievers: dict[str, Any] = {name: None for name in RETRIEVERS}
        self.metadata: dict[str, Any] = {"model_version": self.model_version}
        self.num_items = num_items
        self.num_users = 0
        self._keys = tuple(str(i) for i in range(1, num_items + 1))
        self.query_cache = QueryCache(0)

    def check(self, request: RecRequest) -> None:
        """Every request is servable."""

    def recommend(self, requests: Sequence[RecRequest]) -> list[RecResult]:
        return [
            RecResult(
                item_keys=self._keys[: r.k],
                scores=(0.0,) * min(r.k, self.num_items),
                titles=(None,) * min(r.k, self.num_items),
                retriever=r.retriever or self.default_retriever,
                fallback=None,
                unknown_items=(),
                unknown_filter_items=(),
                model_version=self.model_version,
            )
            for r in requests
        ]
