"""RAILS approximate MoL top-k: TopKPerEmbd, TopKAvg and their union (Combined).

Ding & Zhai, "Retrieval with Learned Similarities" (WWW'25, arXiv 2407.15462), section 4,
and docs/SPEC.md section 3. Each method builds a candidate set with plain inner-product
searches over the precomputed item components, then rescores the (de-duplicated) union
with the full MoL similarity (gating included; a_x read from the index) and keeps the top k:
- TopKPerEmbd(k'): for each of the P = P_Q * P_X component pairs (i, j), the k' items of
  highest <f_i(q), g_j(x)>; at most P * k' candidates;
- TopKAvg(k'): the k' items of highest <sum_i f_i(q), mean_j g_j(x)> (one search);
- Combined(k1, k2): the union of TopKPerEmbd(k1) and TopKAvg(k2).

Our addition, TopKAvg with a probe (`probe` > 0): the TopKAvg query sum_i f_i weighs every
query component alike, while MoL's gate does not. The probe scores the `probe` best
TopKAvg items with full MoL, sums their gate weights pi (B, P_Q * P_X) over those items and
over the item components into u (B, P_Q), and searches once more with the query
sum_i u_i f_i (the scale of u does not change the ranking). It costs a second search and
the probe's rescoring, and puts more of the exact top-k among the first candidates. On the
trained ML-1M and Beauty bundles it barely paid: at equal latency plain TopKAvg with a
larger budget came close to it at batch 32 and beat it at batch 1
(benchmarks/results/retrieval-ml-1m-cpu.json, retrieval-beauty-cpu.json, "pN" methods). So
it is off by default.

Exclusion is applied inside the candidate searches too (exact over-fetching of k' + E
results when a row excludes E items, or a mask on the scores when E is large), so excluded
items never use up the budget.
A budget k' below k is raised to k, so every method returns k admissible items whenever
the catalog has them. With k' >= N every method is exact.

The inner-product searches run in the index dtype (bf16 halves their memory traffic) with
either torch (`component_topk`) or FAISS flat indexes (`FaissComponentSearch`); both return
the same candidates up to ties and rounding.

Shapes: B queries, N catalog size, P_Q / P_X components, d_P component dim, K top-k.
"""

from __future__ import annotations

from typing import Any, Literal, cast

import torch
from torch import Tensor

from recsys.retrieval.faiss_search import FaissComponentSearch
from recsys.retrieval.index import ItemIndex, Similarity, rescore_topk
from recsys.retrieval.topk import check_exclude, check_k, component_topk
from recsys.similarity.parts import QueryParts

Backend = Literal["torch", "faiss"]
BACKENDS: tuple[Backend, ...] = ("torch", "faiss")


def _check_budget(name: str, value: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{name} must be an integer >= 1, got {value!r}")


def _check_backend(backend: str) -> None:
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {BACKENDS}, got {backend!r}")


class ComponentSearch:
    """k-best inner-product search of query vectors against item vectors (N+1, J, d), with
    the torch or the FAISS backend: `search(queries (B, Q, d), k, exclude) -> (B, Q*J, k)`."""

    def __init__(self, items: Tensor, backend: Backend) -> None:
        _check_backend(backend)
        self.items = items
        self.backend = backend
        self._faiss = FaissComponentSearch(items) if backend == "faiss" else None

    def search(
        self, queries: Tensor, k: int, exclude: Tensor | None, sorted: bool = True
    ) -> Tensor:
        if self._faiss is not None:
            return self._faiss.search(queries, k, exclude)
        return component_topk(queries, self.items, k, exclude, sorted=sorted)


def avg_query(f: Tensor) -> Tensor:
    """f (B, P_Q, d_P) -> (B, 1, d_P): sum_i f_i, the TopKAvg query vector."""
    return f.sum(dim=1, keepdim=True)


def avg_items(g: Tensor) -> Tensor:
    """g (N+1, P_X, d_P) -> (N+1, 1, d_P): mean_j g_j, the TopKAvg item vector (computed in
    float32, stored in g's dtype)."""
    return g.float().mean(dim=1, keepdim=True).to(g.dtype)


class CandidateRescorer:
    """A candidate stage (`candidates(queries, k, exclude) -> (B, C) ids`, set by the
    subclass) followed by exact MoL rescoring of the candidates: the RAILS `search`.
    `unique_candidates`: the stage never repeats a non-zero id within a row (no dedup)."""

    similarity: Similarity
    index: ItemIndex
    unique_candidates = False

    def candidates(self, queries: QueryParts, k: int, exclude: Tensor | None) -> Tensor:
        raise NotImplementedError

    @torch.no_grad()
    def search(
        self, queries: QueryParts, k: int, exclude: Tensor | None = None
    ) -> tuple[Tensor, Tensor]:
        """queries (B), exclude (B, N+1) bool | None -> (scores (B, k), ids (B, k))."""
        check_k(k)
        check_exclude(exclude, queries.batch_size, self.index.num_items, self.index.device)
        cand = self.candidates(queries, k, exclude)
        return rescore_topk(
            self.similarity, queries, self.index, cand, k, exclude, self.unique_candidates
        )


class TopKPerEmbd(CandidateRescorer):
    """Union of per-component-pair top-k' inner-product searches, rescored with full MoL."""

    def __init__(
        self, similarity: Similarity, index: ItemIndex, k_prime: int, backend: Backend = "torch"
    ) -> None:
        _check_budget("TopKPerEmbd.k_prime", k_prime)
        self.similarity, self.index, self.k_prime = similarity, index, k_prime
        self.searcher = ComponentSearch(index.g, backend)

    def candidates(self, queries: QueryParts, k: int, exclude: Tensor | None) -> Tensor:
        """(B, P * max(k', k)) candidate ids (repeats and 0s possible)."""
        ids = self.searcher.search(queries.f, max(self.k_prime, k), exclude)
        return ids.reshape(ids.shape[0], -1)


class TopKAvg(CandidateRescorer):
    """One inner-product search of sum_i f_i against mean_j g_j, rescored with full MoL.

    The search keeps max(k', per_k * k) candidates (per_k = 0: k' alone), so one retriever
    can serve k = 10 cheaply and k = 100 with proportionally more candidates. probe > 0:
    the query components are first weighted by the gates of the `probe` best items (module
    docstring); needs a similarity with gates (MoL), and P_Q > 1 to change anything.
    search_dtype: dtype of the search's item vectors (None = the index dtype). bf16 on a
    float32 index keeps a bf16 copy of the mean components (N * d_P * 2 bytes) and makes
    the search faster (benchmarks/results/bounded-stages-1M-cpu.json, first stage); only
    the candidates can change (rescoring stays in float32), which is why
    bounded-exact, whose certificate does not depend on its candidates, uses it.
    """

    unique_candidates = True  # one search returns each item once

    def __init__(
        self,
        similarity: Similarity,
        index: ItemIndex,
        k_prime: int,
        backend: Backend = "torch",
        per_k: int = 0,
        probe: int = 0,
        search_dtype: torch.dtype | None = None,
    ) -> None:
        _check_budget("TopKAvg.k_prime", k_prime)
        if search_dtype not in (None, torch.float32, torch.bfloat16):
            raise ValueError(
                f"TopKAvg.search_dtype must be None, float32 or bfloat16, got {search_dtype!r}"
            )
        for name, value in (("per_k", per_k), ("probe", probe)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise ValueError(f"TopKAvg.{name} must be an integer >= 0, got {value!r}")
        if probe and index.a_x is None:
            raise ValueError("TopKAvg.probe needs a gated similarity (MoL); this index has none")
        self.similarity, self.index, self.k_prime = similarity, index, k_prime
        self.per_k, self.probe = per_k, probe
        items = avg_items(index.g)
        if search_dtype is not None:
            items = items.to(search_dtype)
        self.searcher = ComponentSearch(items, backend)

    def candidates(self, queries: QueryParts, k: int, exclude: Tensor | None) -> Tensor:
        """(B, max(k', per_k * k, k)) distinct candidate ids in any order (0 = none)."""
        query = avg_query(queries.f)
        if self.probe and queries.f.shape[1] > 1:
            query = weighted_query(queries, self.probe_weights(queries, query, exclude))
        ids = self.searcher.search(
            query, max(self.k_prime, self.per_k * k, k), exclude, sorted=False
        )
        return ids.reshape(ids.shape[0], -1)

    def probe_weights(self, queries: QueryParts, query: Tensor, exclude: Tensor | None) -> Tensor:
        """(B, P_Q) weights of the query components: the gate weights of the `probe` best
        TopKAvg items, summed over those items and over the item components (uniform when
        a row has no admissible item)."""
        ids = self.searcher.search(query, self.probe, exclude, sorted=False).reshape(
            queries.batch_size, -1
        )  # (B, probe), 0 = no admissible item
        rows = self.index.gather_parts(ids.reshape(-1))
        # The index has a_x, so the similarity is MoL, whose score_pairs returns gates too.
        mol = cast(Any, self.similarity)
        _, pi = mol.score_pairs(queries, rows, return_gates=True)
        valid = (ids > 0).unsqueeze(-1).to(pi.dtype)  # (B, probe, 1)
        w = (pi * valid).sum(dim=1)  # (B, P); all-zero when no item is admissible
        b, p_q = queries.f.shape[:2]
        u = w.view(b, p_q, -1).sum(dim=-1)
        return torch.where(u.sum(dim=1, keepdim=True) > 0, u, torch.ones_like(u))


def weighted_query(queries: QueryParts, u: Tensor) -> Tensor:
    """f (B, P_Q, d_P), u (B, P_Q) -> (B, 1, d_P): sum_i u_i f_i."""
    return torch.einsum("bi,bid->bd", u.to(queries.f.dtype), queries.f).unsqueeze(1)


class Combined(CandidateRescorer):
    """Union of the TopKPerEmbd(k1) and TopKAvg(k2) candidate sets, rescored with full MoL."""

    def __init__(
        self,
        similarity: Similarity,
        index: ItemIndex,
        k1: int,
        k2: int,
        backend: Backend = "torch",
    ) -> None:
        self.similarity, self.index = similarity, index
        self.per_embd = TopKPerEmbd(similarity, index, k1, backend)
        self.avg = TopKAvg(similarity, index, k2, backend)

    def candidates(self, queries: QueryParts, k: int, exclude: Tensor | None) -> Tensor:
        """(B, P * max(k1, k) + max(k2, k)) candidate ids (repeats and 0s possible)."""
        return torch.cat(
            [
                self.per_embd.candidates(queries, k, exclude),
                self.avg.candidates(queries, k, exclude),
            ],
            dim=1,
        )
