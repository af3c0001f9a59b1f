"""The Recommender: bundle -> user encoder -> retriever -> original item keys.

The one library entry used by the HTTP service (`serving/`) and the batch job
(`serving/batch.py`). A batch of requests costs one encoder call and one retriever call per
retriever named in the batch (normally one), whatever mix of stored histories, explicit
histories and filters it holds; cold-start requests skip both and are answered from item
popularity.

Per request:
- the query history is the explicit `history` when given (unknown keys are ignored and
  reported), else the stored recent history of `user_key`;
- a known user key also feeds the user-id components of MoL (Ding & Zhai, WWW'25); unknown
  users use the padding row;
- no usable history (unknown user, empty or all-unknown history) -> popularity fallback,
  flagged `fallback="popularity"`, scores = interaction counts;
- `exclude_seen` removes the query history and every item the user ever interacted with
  (the bundle's seen sets: the whole history, not just the recent window the encoder
  reads), `exclude` removes
  the given keys, `include_only` restricts to the given keys; all three become one
  (B, N+1) bool mask applied before the top-k, so the k results are all admissible.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final, Literal, Protocol

import numpy as np
import torch
from torch import Tensor

from recsys.errors import UserError
from recsys.similarity.parts import QueryParts

if TYPE_CHECKING:
    from recsys.bundle import Bundle

MAX_K = 1000
RETRIEVERS = ("exact", "rails")
POPULARITY: Final = "popularity"
# API retriever name -> `recsys.retrieval.factory` name, for MoL and for dot-product models.
MOL_RETRIEVERS = {"exact": "brute_force", "rails": "topk_avg"}
DOT_RETRIEVERS = {"exact": "dot", "rails": "dot"}
# Candidates "rails" (TopKAvg) rescores per query in serving and batch jobs: max(budget,
# RAILS_PER_K * k). Rescoring dominates a request's model time, so the budget follows k.
# TopKAvg's recall of the exact top-k against its budget, on a trained ML-1M HSTU+MoL
# bundle: benchmarks/results/retrieval-ml-1m-cpu.json. Check it on a new bundle with
# `recsys bench serve` (rails_recall) and raise the budget for large catalogs.
DEFAULT_RAILS_BUDGET = 512
RAILS_PER_K = 10


class RequestError(UserError, ValueError):
    """A request the Recommender cannot answer; `field` names the offending field."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field
        self.reason = message

    def __reduce__(self) -> tuple[Any, ...]:
        return (type(self), (self.field, self.reason))


@dataclass(frozen=True)
class RecRequest:
    """One recommendation request (keys are the original item / user keys)."""

    user_key: str | None = None
    history: tuple[str, ...] | None = None
    k: int = 10
    exclude_seen: bool = True
    retriever: str | None = None
    exclude: tuple[str, ...] = ()
    include_only: tuple[str, ...] | None = None

    def __post_init__(self) -> None:
        if isinstance(self.k, bool) or not isinstance(self.k, int) or not 1 <= self.k <= MAX_K:
            raise RequestError("k", f"expected an integer in 1..{MAX_K}, got {self.k!r}")
        if self.retriever is not None and self.retriever not in RETRIEVERS:
            raise RequestError("retriever", f"expected one of {RETRIEVERS}, got {self.retriever!r}")


@dataclass(frozen=True)
class RecResult:
    """Top items for one request, best first (at most k; fewer when filters leave fewer)."""

    item_keys: tuple[str, ...]
    scores: tuple[float, ...]
    titles: tuple[str | None, ...]
    retriever: str
    fallback: Literal["popularity"] | None
    unknown_items: tuple[str, ...]
    unknown_filter_items: tuple[str, ...]
    model_version: str


class Retriever(Protocol):
    def search(
        self, queries: QueryParts, k: int, exclude: Tensor | None
    ) -> tuple[Tensor, Tensor]: ...


class QueryEncoder(Protocol):
    def query_parts(
        self, item_ids: Tensor, timestamps: Tensor | None, user_ids: Tensor | None
    ) -> QueryParts: ...


@dataclass(frozen=True)
class Catalog:
    """Id maps and stored histories of a bundle, as flat numpy arrays.

    item_keys (N+1,) object (index 0 = padding), titles (N+1,) object or None,
    item_counts (N+1,) int64, user_keys (U,) object, history_items flat int32 with
    history_offsets (U+1,) int64 (user u's recent items, oldest first: the encoder's input),
    history_timestamps flat int64 or None, seen_items flat int32 with seen_offsets (U+1,)
    int64 (every item user u interacted with: what `exclude_seen` removes).
    """

    item_keys: np.ndarray
    titles: np.ndarray | None
    item_counts: np.ndarray
    user_keys: np.ndarray
    history_items: np.ndarray
    history_offsets: np.ndarray
    history_timestamps: np.ndarray | None
    seen_items: np.ndarray
    seen_offsets: np.ndarray

    def __post_init__(self) -> None:
        n1 = len(self.item_keys)
        if len(self.item_counts) != n1 or (self.titles is not None and len(self.titles) != n1):
            raise ValueError("item_counts/titles: expected one entry per item key (N+1)")
        if len(self.history_offsets) != len(self.user_keys) + 1:
            raise ValueError("history_offsets: expected U+1 offsets")
        if len(self.seen_offsets) != len(self.user_keys) + 1:
            raise ValueError("seen_offsets: expected U+1 offsets")


@dataclass
class _Resolved:
    """One request mapped to internal ids."""

    query: np.ndarray  # (L,) int32, the history the encoder reads (possibly empty)
    times: np.ndarray | None  # (L,) int64
    user_id: int  # -1 = unknown
    seen: np.ndarray  # item ids to exclude as seen
    exclude: np.ndarray  # item ids to exclude
    include: np.ndarray | None  # allowed item ids, or None = all
    unknown_items: tuple[str, ...]
    unknown_filter_items: tuple[str, ...]
    retriever: str
    cacheable: bool  # the query is the user's stored history: constant for this bundle


class QueryCache:
    """LRU of per-user query parts for requests answered from the stored history.

    A bundle's stored histories never change, so a user's query is computed once per
    Recommender; a hot swap builds a new Recommender and with it an empty cache.
    """

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self.hits = self.misses = 0
        self._rows: OrderedDict[int, tuple[Tensor, Tensor | None]] = OrderedDict()

    def get(self, user_id: int) -> tuple[Tensor, Tensor | None] | None:
        row = self._rows.get(user_id)
        if row is None:
            self.misses += 1
        else:
            self.hits += 1
            self._rows.move_to_end(user_id)
        return row

    def put(self, user_id: int, f: Tensor, a_q: Tensor | None) -> None:
        if self.capacity < 1:
            return
        # Copies: a row view would keep its whole batch tensor alive.
        self._rows[user_id] = (f.clone(), None if a_q is None else a_q.clone())
        if len(self._rows) > self.capacity:
            self._rows.popitem(last=False)

    def stats(self) -> dict[str, int]:
        return {
            "size": len(self._rows),
            "capacity": self.capacity,
            "hits": self.hits,
            "misses": self.misses,
        }


class Recommender:
    """Answers batches of `RecRequest`s from one model, one item index and one catalog.

    encoder: the model (`query_parts(item_ids (B,T) right-padded, timestamps (B,T) | None,
    user_ids (B,)) -> QueryParts`); retrievers: name -> `search(QueryParts, k, exclude
    (B, N+1) bool) -> (scores (B,K), item_ids (B,K))`.
    """

    def __init__(
        self,
        encoder: QueryEncoder,
        retrievers: Mapping[str, Retriever],
        catalog: Catalog,
        *,
        max_seq_len: int,
        uses_timestamps: bool,
        metadata: dict[str, Any],
        default_retriever: str = "rails",
        device: torch.device | str = "cpu",
        query_cache_size: int = 0,
    ) -> None:
        if default_retriever not in retrievers:
            raise ValueError(
                f"default_retriever: {default_retriever!r} is not one of {sorted(retrievers)}"
            )
        if max_seq_len < 1:
            raise ValueError(f"max_seq_len: expected >= 1, got {max_seq_len}")
        self.encoder = encoder
        self.retrievers = retrievers
        self.catalog = catalog
        self.max_seq_len = max_seq_len
        self.uses_timestamps = uses_timestamps
        self.metadata = metadata
        self.default_retriever = default_retriever
        self.device = torch.device(device)
        self.model_version = str(metadata.get("model_version", "unknown"))
        self.query_cache = QueryCache(query_cache_size)
        self._item_index = {str(k): i for i, k in enumerate(catalog.item_keys) if i > 0}
        # Python lists: indexing them per result is cheaper than numpy object arrays.
        self._item_key_list = [str(k) for k in catalog.item_keys]
        self._title_list = None if catalog.titles is None else list(catalog.titles)
        self._user_index = {str(k): u for u, k in enumerate(catalog.user_keys)}
        # Popularity order as a score: N - rank (ties by item id), -inf for padding, so a
        # masked top-k reproduces the stable ranking exactly.
        counts = catalog.item_counts.astype(np.int64)
        order = np.lexsort((np.arange(len(counts)), -counts))
        order = order[order != 0]
        rank_score = np.full(len(counts), -np.inf, dtype=np.float32)
        rank_score[order] = np.arange(len(order), 0, -1, dtype=np.float32)
        self._popularity = torch.from_numpy(rank_score).to(self.device)

    @classmethod
    def load(
        cls,
        path: str | Path,
        *,
        default_retriever: str = "rails",
        device: str | None = None,
        rails_budget: int | None = DEFAULT_RAILS_BUDGET,
        query_cache_size: int = 0,
    ) -> Recommender:
        """Load a bundle directory on CUDA when present, else CPU; index dtype per
        `recsys.retrieval.index.default_index_dtype` (bf16 on CUDA, float32 on CPU).

        rails_budget: TopKAvg rescores max(rails_budget, RAILS_PER_K * k) candidates per query
        (None = the retrieval default budget).
        """
        from recsys.bundle import load_bundle

        dev = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
        return cls.from_bundle(
            load_bundle(path, dev),
            default_retriever=default_retriever,
            rails_budget=rails_budget,
            query_cache_size=query_cache_size,
        )

    @classmethod
    def from_bundle(
        cls,
        bundle: Bundle,
        *,
        default_retriever: str = "rails",
        rails_budget: int | None = DEFAULT_RAILS_BUDGET,
        query_cache_size: int = 0,
    ) -> Recommender:
        """Recommender over a loaded bundle: "exact" = brute-force MoL, "rails" = TopKAvg
        (RAILS, Ding & Zhai WWW'25); a dot-product model answers both with its exact top-k."""
        from recsys.models.hstu import HSTUConfig
        from recsys.retrieval.factory import RetrievalConfig, make_retriever

        config = RetrievalConfig(avg_per_k=RAILS_PER_K)
        if rails_budget is not None:
            config = RetrievalConfig(avg_k=rails_budget, avg_per_k=RAILS_PER_K)
        is_mol = bundle.index.a_x is not None
        names = MOL_RETRIEVERS if is_mol else DOT_RETRIEVERS
        sim = bundle.model.similarity
        retrievers = {
            api: make_retriever(name, sim, bundle.index, config) for api, name in names.items()
        }
        encoder = bundle.config.encoder
        uses_times = (
            isinstance(encoder, HSTUConfig)
            and encoder.time_bias
            and bundle.history_timestamps is not None
        )
        catalog = Catalog(
            item_keys=bundle.item_keys,
            titles=bundle.titles,
            item_counts=bundle.item_counts,
            user_keys=bundle.user_keys,
            history_items=bundle.history_items,
            history_offsets=bundle.history_offsets,
            history_timestamps=bundle.history_timestamps,
            seen_items=bundle.seen_items,
            seen_offsets=bundle.seen_offsets,
        )
        return cls(
            bundle.model,
            retrievers,
            catalog,
            max_seq_len=bundle.max_len,
            uses_timestamps=uses_times,
            metadata=bundle.metadata,
            default_retriever=default_retriever,
            device=bundle.device,
            query_cache_size=query_cache_size,
        )

    @property
    def num_items(self) -> int:
        return len(self.catalog.item_keys) - 1

    @property
    def num_users(self) -> int:
        return len(self.catalog.user_keys)

    def user_keys(self) -> list[str]:
        return [str(k) for k in self.catalog.user_keys]

    def check(self, request: RecRequest) -> None:
        """Raise RequestError naming the field when this Recommender cannot serve `request`."""
        name = request.retriever or self.default_retriever
        if name not in self.retrievers:
            raise RequestError(
                "retriever",
                f"{name!r} is not available in this bundle (available: {sorted(self.retrievers)})",
            )

    @torch.inference_mode()
    def recommend(self, requests: Sequence[RecRequest]) -> list[RecResult]:
        """Top-k for every request, one encoder call and one search per retriever used."""
        if not requests:
            return []
        for request in requests:
            self.check(request)
        resolved = [self._resolve(r) for r in requests]
        k_max = min(max(r.k for r in requests), self.num_items)
        exclude = self._exclude_mask(resolved)
        scores = torch.full((len(requests), k_max), -torch.inf)
        ids = torch.zeros((len(requests), k_max), dtype=torch.long)
        model_rows = [i for i, q in enumerate(resolved) if len(q.query)]
        cold_rows = [i for i, q in enumerate(resolved) if not len(q.query)]
        if model_rows:
            queries = self._queries([resolved[i] for i in model_rows])
            names = [resolved[i].retriever for i in model_rows]
            for name in sorted(set(names)):
                sub = [j for j, n in enumerate(names) if n == name]
                qp = (
                    queries
                    if len(sub) == len(model_rows)
                    else queries.index_select(torch.tensor(sub, device=self.device))
                )
                rows = torch.tensor([model_rows[j] for j in sub])
                s, x = self.retrievers[name].search(qp, k_max, exclude[rows.to(self.device)])
                scores[rows], ids[rows] = s.float().cpu(), x.long().cpu()
        if cold_rows:
            rows = torch.tensor(cold_rows)
            masked = self._popularity.expand(len(cold_rows), -1).masked_fill(
                exclude[rows.to(self.device)], -torch.inf
            )
            s, x = masked.topk(k_max, dim=1)
            scores[rows], ids[rows] = s.cpu(), x.cpu()
        # Results are built from whole-batch numpy arrays: per-row torch indexing costs
        # more than the row's retrieval on small catalogs.
        scores_np, ids_np = scores.numpy(), ids.numpy()
        # Drop slots a filtered search could not fill (-inf) and, defensively, anything an
        # approximate retriever returned despite the mask.
        keep = np.isfinite(scores_np) & (ids_np > 0)
        keep &= ~np.take_along_axis(exclude.cpu().numpy(), ids_np, axis=1)
        return [
            self._result(r, q, scores_np[i], ids_np[i], keep[i])
            for i, (r, q) in enumerate(zip(requests, resolved, strict=True))
        ]

    def _ids(self, keys: Sequence[str]) -> tuple[np.ndarray, tuple[str, ...]]:
        """Keys -> (known internal ids (int32, request order), unknown keys)."""
        known, unknown = [], []
        for key in keys:
            i = self._item_index.get(key)
            if i is None:
                unknown.append(key)
            else:
                known.append(i)
        return np.asarray(known, dtype=np.int32), tuple(unknown)

    def _stored(self, user_id: int) -> tuple[np.ndarray, np.ndarray | None]:
        c = self.catalog
        lo, hi = c.history_offsets[user_id], c.history_offsets[user_id + 1]
        times = None if c.history_timestamps is None else c.history_timestamps[lo:hi]
        return c.history_items[lo:hi], times

    def _seen(self, user_id: int) -> np.ndarray:
        """Every item a known user interacted with (empty for unknown users, id -1)."""
        c = self.catalog
        if user_id < 0:
            return np.zeros(0, np.int32)
        return c.seen_items[c.seen_offsets[user_id] : c.seen_offsets[user_id + 1]]

    def _resolve(self, r: RecRequest) -> _Resolved:
        user_id = -1 if r.user_key is None else self._user_index.get(r.user_key, -1)
        stored, stored_times = (
            self._stored(user_id) if user_id >= 0 else (np.zeros(0, np.int32), None)
        )
        unknown: tuple[str, ...] = ()
        if r.history is None:
            query, times = stored, stored_times
        else:
            query, unknown = self._ids(r.history)
            times = None  # explicit histories carry no times: see _encode
        seen = np.zeros(0, np.int32)
        if r.exclude_seen:
            seen = np.concatenate([query, self._seen(user_id)])
        exclude, unknown_ex = self._ids(r.exclude)
        include, unknown_inc = (None, ()) if r.include_only is None else self._ids(r.include_only)
        return _Resolved(
            query=query,
            times=times,
            user_id=user_id,
            seen=seen,
            exclude=exclude,
            include=include,
            unknown_items=unknown,
            unknown_filter_items=unknown_ex + unknown_inc,
            retriever=r.retriever or self.default_retriever,
            cacheable=r.history is None and user_id >= 0,
        )

    def _exclude_mask(self, resolved: Sequence[_Resolved]) -> Tensor:
        """(B, N+1) bool, True = never return (padding, seen, excluded, not included)."""
        mask = torch.zeros((len(resolved), self.num_items + 1), dtype=torch.bool)
        for i, q in enumerate(resolved):
            if q.include is not None:
                mask[i] = True
                mask[i, torch.from_numpy(q.include.astype(np.int64))] = False
        rows = np.concatenate(
            [np.full(len(q.seen) + len(q.exclude), i) for i, q in enumerate(resolved)]
        )
        cols = np.concatenate([np.concatenate([q.seen, q.exclude]) for q in resolved])
        mask[torch.from_numpy(rows.astype(np.int64)), torch.from_numpy(cols.astype(np.int64))] = (
            True
        )
        mask[:, 0] = True
        return mask.to(self.device)

    def _queries(self, resolved: Sequence[_Resolved]) -> QueryParts:
        """QueryParts (B, ...) from the cache where possible, one encoder call for the rest."""
        cached = [self.query_cache.get(q.user_id) if q.cacheable else None for q in resolved]
        todo = [j for j, c in enumerate(cached) if c is None]
        if not todo:
            return _stack_rows(cached)  # type: ignore[arg-type]  # no None left
        fresh = self._encode([resolved[j] for j in todo])
        for i, j in enumerate(todo):
            row = (fresh.f[i], None if fresh.a_q is None else fresh.a_q[i])
            if resolved[j].cacheable:
                self.query_cache.put(resolved[j].user_id, *row)
            cached[j] = row
        return fresh if len(todo) == len(resolved) else _stack_rows(cached)  # type: ignore[arg-type]

    def _encode(self, resolved: Sequence[_Resolved]) -> QueryParts:
        """Right-padded (B, T) batch of the last max_seq_len items -> QueryParts (B, ...)."""
        tails = [q.query[-self.max_seq_len :] for q in resolved]
        t = max(len(x) for x in tails)
        item_ids = np.zeros((len(tails), t), dtype=np.int64)
        times = np.zeros((len(tails), t), dtype=np.int64) if self.uses_timestamps else None
        for i, (tail, q) in enumerate(zip(tails, resolved, strict=True)):
            item_ids[i, : len(tail)] = tail
            if times is not None and q.times is not None:
                # Explicit histories have no times: they stay all-zero, i.e. no time gaps,
                # which makes their answer independent of the clock.
                times[i, : len(tail)] = q.times[-self.max_seq_len :]
        user_ids = torch.tensor([q.user_id for q in resolved], dtype=torch.long)
        return self.encoder.query_parts(
            torch.from_numpy(item_ids).to(self.device),
            None if times is None else torch.from_numpy(times).to(self.device),
            user_ids.to(self.device),
        )

    def _result(
        self, r: RecRequest, q: _Resolved, scores: np.ndarray, ids: np.ndarray, keep: np.ndarray
    ) -> RecResult:
        """One request's result from its rows of the batch arrays (best first)."""
        k = min(r.k, self.num_items)
        sel = keep[:k]
        item_ids = ids[:k][sel]
        cold = not len(q.query)
        # Cold answers report interaction counts, not the rank scores used to order them.
        values = self.catalog.item_counts[item_ids] if cold else scores[:k][sel]
        keys, titles = self._item_key_list, self._title_list
        return RecResult(
            item_keys=tuple(keys[i] for i in item_ids),
            scores=tuple(values.astype(np.float64).tolist()),
            titles=(
                tuple(titles[i] for i in item_ids)
                if titles is not None
                else (None,) * len(item_ids)
            ),
            retriever=POPULARITY if cold else q.retriever,
            fallback=POPULARITY if cold else None,
            unknown_items=q.unknown_items,
            unknown_filter_items=q.unknown_filter_items,
            model_version=self.model_version,
        )


def _stack_rows(rows: Sequence[tuple[Tensor, Tensor | None]]) -> QueryParts:
    """Per-query (f (P_Q, d_P), a_q (P,) | None) rows -> QueryParts (B, ...)."""
    f = torch.stack([r[0] for r in rows])
    a_q = None if rows[0][1] is None else torch.stack([r[1] for r in rows])  # type: ignore[misc]
    return QueryParts(f=f, a_q=a_q)
