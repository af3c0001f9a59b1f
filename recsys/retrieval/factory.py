"""The one place where retriever names map to retrievers (`recsys evaluate --retriever`,
the benchmark, the serving adapter).

Every retriever answers `search(queries: QueryParts, k, exclude (B, N+1) bool | None)
-> (scores (B, K), item_ids (B, K))` (conventions in `recsys.retrieval.topk`).

Default budgets come from `benchmarks/bench_retrieval.py` (benchmarks/results/retrieval-*-cpu
.json): on the synthetic 1M-item MoL model TopKAvg(1024) gives recall@100 >= 0.99 with top-1
hit 1.0; TopKPerEmbd(128) and Combined(32, 1024) reach >= 0.997 but scan the catalog once per
component pair, so they pay only on accelerators.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from torch import Tensor

from recsys.retrieval.bounded import BoundedConfig, BoundedExact
from recsys.retrieval.brute_force import BruteForce, BruteForceConfig
from recsys.retrieval.dot import DotRetriever
from recsys.retrieval.index import ItemIndex, Similarity
from recsys.retrieval.rails import BACKENDS, Backend, Combined, TopKAvg, TopKPerEmbd
from recsys.similarity.parts import QueryParts

RETRIEVER_NAMES = ("brute_force", "bounded_exact", "topk_avg", "topk_per_embd", "combined", "dot")
EXACT_RETRIEVERS = ("brute_force", "bounded_exact", "dot")


class Retriever(Protocol):
    def search(
        self, queries: QueryParts, k: int, exclude: Tensor | None = None
    ) -> tuple[Tensor, Tensor]: ...


@dataclass(frozen=True)
class RetrievalConfig:
    """Budgets of the approximate methods (k' per search) and the search backend.

    per_embd_k: TopKPerEmbd k'; avg_k: TopKAvg k'; avg_per_k: TopKAvg keeps at least
    avg_per_k * k candidates (0 = k' alone); avg_probe: TopKAvg's probe (items whose gates
    weight the query components; 0 = plain TopKAvg); combined_k1 / combined_k2: Combined's
    TopKPerEmbd and TopKAvg budgets; bounded_first_k: TopKAvg budget of bounded-exact's
    first stage; backend: "torch" or "faiss" for the inner-product searches.
    """

    per_embd_k: int = 128
    avg_k: int = 1024
    avg_per_k: int = 0
    avg_probe: int = 0
    combined_k1: int = 32
    combined_k2: int = 1024
    bounded_first_k: int = 1024
    backend: Backend = "torch"

    def __post_init__(self) -> None:
        for name in (
            "per_embd_k",
            "avg_k",
            "combined_k1",
            "combined_k2",
            "bounded_first_k",
        ):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"RetrievalConfig.{name} must be an integer >= 1, got {value!r}")
        for name in ("avg_per_k", "avg_probe"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise ValueError(f"RetrievalConfig.{name} must be an integer >= 0, got {value!r}")
        if self.backend not in BACKENDS:
            raise ValueError(
                f"RetrievalConfig.backend must be one of {BACKENDS}, got {self.backend!r}"
            )


def make_retriever(
    name: str,
    similarity: Similarity,
    index: ItemIndex,
    config: RetrievalConfig | None = None,
) -> Retriever:
    """Build the retriever called `name` (one of RETRIEVER_NAMES) over `index`."""
    c = config if config is not None else RetrievalConfig()
    if name == "brute_force":
        return BruteForce(similarity, index, BruteForceConfig())
    if name == "bounded_exact":
        return BoundedExact(
            similarity, index, config=BoundedConfig(first_stage_k=c.bounded_first_k)
        )
    if name == "topk_avg":
        probe = c.avg_probe if index.a_x is not None else 0  # no gates to probe otherwise
        return TopKAvg(similarity, index, c.avg_k, c.backend, per_k=c.avg_per_k, probe=probe)
    if name == "topk_per_embd":
        return TopKPerEmbd(similarity, index, c.per_embd_k, c.backend)
    if name == "combined":
        return Combined(similarity, index, c.combined_k1, c.combined_k2, c.backend)
    if name == "dot":
        return DotRetriever(similarity, index, c.backend)
    raise ValueError(f"unknown retriever {name!r}; expected one of {RETRIEVER_NAMES}")
