"""Bounded-exact MoL top-k: a certified exact top-k from the bound phi <= max_k s_k.

docs/SPEC.md section 3 (our addition to the RAILS methods of Ding & Zhai, WWW'25, arXiv
2407.15462). MoL's score is a convex combination of its component logits, phi(q, x) =
sum_k pi_k s_k with pi a softmax, hence phi(q, x) <= max_k s_k(q, x). So:
1. any candidate stage (TopKAvg by default) proposes items; they are rescored with full MoL
   and S = the k-th best admissible score is a lower bound on the exact k-th best score;
2. one pass over the catalog computes m(x) = max_{i,j} <f_i(q), g_j(x)> / tau, which costs
   one (B*P_Q, d_P) x (d_P, N*P_X) product (no gate MLP, no softmax); every admissible item
   with m(x) >= S survives;
3. every exact top-k item has phi >= (exact k-th best) >= S, hence m >= S: it survives.
   Rescoring the survivors with full MoL and keeping the k best is therefore exact.
When the candidate stage finds fewer than k admissible items, S = -inf and every item
survives (brute force through the same path).

The bound pass may run in bf16 (the default for a bf16 index; optional for a float32
one). Rounding cannot break the certificate: with unit-norm f and g, every bf16 rounding
(of f, of g when it is not already stored in bf16, of the result, of a partial sum in a
reduced-precision GPU reduction) moves <f, g> by at most 2^-9, products are accumulated
in float32, and the survivor test subtracts a margin of 2^-6 / tau (room for 8 such
roundings; 3 happen on CPU) plus a relative 1e-4 for the float32 MoL arithmetic.

Each query's survivors are gathered and rescored on their own (`score_ragged`), so the
work is the number of surviving pairs. Queries whose survivors cover more than
`dense_fraction` of the catalog (a loose bound: their threshold sits below the bound of
most items) are scored by brute force instead, which shares contiguous item blocks across
the batch and needs no gather: ~445 ns a pair against 660-720 ns for gathered survivors
on the 1M catalog (one thread; benchmarks/results/bounded-stages-1M-cpu.json), so brute
force wins above ~60-65% survivors.

Shapes: B queries, N catalog size, P_Q / P_X components, d_P component dim, c items per
block, K top-k.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Protocol

import torch
from torch import Tensor

from recsys.retrieval.brute_force import BruteForce
from recsys.retrieval.index import (
    MAX_PAIRS,
    SCORE_DTYPE,
    ItemIndex,
    Similarity,
    rescore_topk,
    score_gathered_items,
)
from recsys.retrieval.rails import TopKAvg
from recsys.retrieval.topk import (
    NEG_INF,
    check_exclude,
    check_k,
    count_true,
    merge_topk,
    topk_padded,
)
from recsys.similarity.parts import QueryParts

# Elements of one (B*P_Q, c*P_X) block of the bound pass: small enough to stay in cache
# (2^20 bf16 = 2 MiB), large enough that per-block overhead does not matter.
BOUND_BLOCK = 1 << 20
ROUNDING_MARGIN = {torch.float32: 2.0**-16, torch.bfloat16: 2.0**-6}  # cosine units
RELATIVE_MARGIN = 1e-4  # float32 MoL arithmetic vs the exact convex combination


class CandidateStage(Protocol):
    """Anything with `candidates(queries, k, exclude) -> (B, C) ids` (TopKAvg, TopKPerEmbd,
    Combined)."""

    def candidates(self, queries: QueryParts, k: int, exclude: Tensor | None) -> Tensor: ...


@dataclass(frozen=True)
class BoundedConfig:
    """first_stage_k: TopKAvg budget of the default first stage; bound_dtype: dtype of the
    bound pass (None = the index dtype); block: elements of one bound block; dense_fraction:
    a query with more survivors than this share of the catalog goes to brute force;
    brute_force_below: catalogs of at most this many items go straight to brute force (on
    ML-1M, 3.7k items, the first stage and the bound pass cost more than they save);
    time_stages: synchronise CUDA between stages so that `stats.stage_ms` is meaningful
    there (CPU stage times are always exact)."""

    first_stage_k: int = 1024
    bound_dtype: torch.dtype | None = None
    block: int = BOUND_BLOCK
    dense_fraction: float = 0.5
    brute_force_below: int = 4096
    time_stages: bool = False

    def __post_init__(self) -> None:
        if not 0.0 <= self.dense_fraction <= 1.0:
            raise ValueError(
                f"BoundedConfig.dense_fraction must be in [0, 1], got {self.dense_fraction!r}"
            )
        for name in ("first_stage_k", "block"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"BoundedConfig.{name} must be an integer >= 1, got {value!r}")
        value = self.brute_force_below
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            raise ValueError(
                f"BoundedConfig.brute_force_below must be an integer >= 0, got {value!r}"
            )
        if self.bound_dtype not in (None, *ROUNDING_MARGIN):
            raise ValueError(
                f"BoundedConfig.bound_dtype must be None, float32 or bfloat16, got "
                f"{self.bound_dtype!r}"
            )


@dataclass
class BoundedStats:
    """What the last search did: candidates from the first stage and survivors of the bound
    (both per query, averaged over the batch), every query's survivor count, and the wall
    time of each stage in ms (`STAGES`; on CUDA only with BoundedConfig.time_stages, which
    synchronises the device between stages)."""

    candidates: float = 0.0
    survivors: float = 0.0
    max_survivors: int = 0
    extra: dict[str, float] = field(default_factory=dict)
    counts: list[int] = field(default_factory=list)
    stage_ms: dict[str, float] = field(default_factory=dict)


# first stage + rescoring of its candidates (the threshold), the bound pass, the rescoring
# of sparse queries' survivors, brute force for the dense queries.
STAGES = ("first_stage", "bound", "rescore_survivors", "brute_force_dense")


class _StageClock:
    """Wall time between successive marks, in ms; synchronises CUDA first when asked."""

    def __init__(self, device: torch.device, sync: bool) -> None:
        self.sync = sync and device.type == "cuda"
        self.device = device
        self.ms: dict[str, float] = {}
        self._last = self._now()

    def _now(self) -> float:
        if self.sync:
            torch.cuda.synchronize(self.device)
        return time.perf_counter()

    def mark(self, stage: str) -> None:
        now = self._now()
        self.ms[stage] = (now - self._last) * 1000.0
        self._last = now


def max_logits(fq: Tensor, g_block: Tensor, batch: int) -> Tensor:
    """fq (B*P_Q, d_P) query components already divided by tau, g_block (c, P_X, d_P) ->
    (B, c) m(x) = max over (i, j) of the component logits, in fq's dtype.

    One product per item slot j against the strided view g_block[:, j] (no copy), each
    reduced over P_Q along a middle axis with a contiguous inner axis: ~5x faster on CPU
    than one (B*P_Q, c*P_X) product reduced over the two interleaved axes (measured)."""
    c, p_x, _ = g_block.shape
    m = None
    for j in range(p_x):
        s = (fq @ g_block[:, j, :].T).view(batch, -1, c).amax(dim=1)  # (B, c)
        m = s if m is None else torch.maximum(m, s, out=m)
    assert m is not None
    return m


@torch.no_grad()
def score_ragged(
    similarity: Similarity,
    queries: QueryParts,
    index: ItemIndex,
    rows: Tensor,
    ids: Tensor,
    k: int,
    max_pairs: int = MAX_PAIRS,
) -> tuple[Tensor, Tensor]:
    """The k best of each query's own item list: (rows, ids) ragged (query, item) pairs, rows
    ascending, every id admissible and distinct within its row -> (scores (B, k), ids (B, k)),
    (-inf, 0) where a query has fewer than k items.

    Each query's items are gathered and scored on their own (B = 1, at most max_pairs items
    at a time), so the work is the number of pairs: padding every query to the longest list
    would score up to B * max(count) pairs (2.6x the pairs of bounded-stages-1M-cpu.json)."""
    b = queries.batch_size
    out_scores = torch.full((b, k), NEG_INF, dtype=SCORE_DTYPE, device=ids.device)
    out_ids = torch.zeros(b, k, dtype=torch.long, device=ids.device)
    counts = torch.bincount(rows, minlength=b).tolist()
    start = 0
    for row, count in enumerate(counts):
        if count == 0:
            continue
        one = queries.index_select(torch.tensor([row], device=ids.device))
        best: tuple[Tensor, Tensor] | None = None
        for lo in range(start, start + count, max_pairs):
            chunk = ids[lo : min(start + count, lo + max_pairs)].unsqueeze(0)  # (1, c)
            scores = score_gathered_items(similarity, one, index, chunk[0])  # (1, c)
            best = merge_topk(best, scores, chunk, k)
        assert best is not None
        out_scores[row], out_ids[row] = (t[0] for t in topk_padded(best[0], best[1], k))
        start += count
    return out_scores, out_ids


def bound_survivors(
    f: Tensor,
    g: Tensor,
    tau: float,
    threshold: Tensor,
    exclude: Tensor | None,
    bound_dtype: torch.dtype,
    block: int = BOUND_BLOCK,
    dense_above: int | None = None,
) -> tuple[Tensor, Tensor, Tensor]:
    """Every admissible item whose bound m(x) can reach its query's threshold.

    f (B, P_Q, d_P) float32, g (N+1, P_X, d_P) (row 0 = padding), threshold (B,) float32
    (-inf = everything survives), exclude (B, N+1) bool | None -> (rows, ids, counts): two
    (S,) long tensors of (query, item) pairs, rows ascending, and the (B,) survivor count of
    every query. Queries with more than `dense_above` survivors are counted but their pairs
    are left out (the caller scores them by brute force; listing them costs time).
    """
    b, p_q, d = f.shape
    n1, p_x, _ = g.shape
    fq = (f / tau).to(bound_dtype).reshape(b * p_q, d)
    margin = ROUNDING_MARGIN[bound_dtype] / tau + RELATIVE_MARGIN * (1.0 + threshold.abs())
    cut = (threshold - margin).unsqueeze(1)  # (B, 1); -inf stays -inf
    chunk = max(1, block // (b * p_q * p_x))
    keep = torch.empty(b, n1, dtype=torch.bool, device=f.device)
    for start in range(0, n1, chunk):
        stop = min(n1, start + chunk)
        keep[:, start:stop] = max_logits(fq, g[start:stop].to(bound_dtype), b) >= cut
    if exclude is not None:
        keep &= ~exclude
    keep[:, 0] = False  # padding
    counts = count_true(keep)
    if dense_above is not None:
        dense = counts > dense_above
        if dense.any():
            keep[dense.to(keep.device)] = False
    rows, ids = keep.nonzero(as_tuple=True)  # row-major: rows ascending
    return rows, ids, counts.to(f.device)


class BoundedExact:
    """Exact top-k: first-stage candidates set a threshold, the bound prunes the catalog,
    the survivors are rescored with full MoL (dense queries by brute force)."""

    def __init__(
        self,
        similarity: Similarity,
        index: ItemIndex,
        first_stage: CandidateStage | None = None,
        config: BoundedConfig | None = None,
    ) -> None:
        self.similarity = similarity
        self.index = index
        self.config = config if config is not None else BoundedConfig()
        self.first_stage = (
            first_stage
            if first_stage is not None
            else TopKAvg(similarity, index, self.config.first_stage_k)
        )
        self.brute_force = BruteForce(similarity, index)
        self.bound_dtype = self.config.bound_dtype or index.dtype
        # The bound pass reads g in bound_dtype; keep a converted copy when they differ.
        self._g_bound = index.g if index.dtype == self.bound_dtype else index.g.to(self.bound_dtype)
        self.stats = BoundedStats()

    @torch.no_grad()
    def search(
        self, queries: QueryParts, k: int, exclude: Tensor | None = None
    ) -> tuple[Tensor, Tensor]:
        """queries (B), exclude (B, N+1) bool | None -> exact (scores (B, k), ids (B, k))."""
        check_k(k)
        b, n = queries.batch_size, self.index.num_items
        check_exclude(exclude, b, n, self.index.device)
        if n <= self.config.brute_force_below:
            self.stats = BoundedStats(
                survivors=float(n), max_survivors=n, extra={"dense_queries": float(b)}
            )
            return self.brute_force.search(queries, k, exclude)
        clock = _StageClock(self.index.device, self.config.time_stages)
        cand = self.first_stage.candidates(queries, k, exclude)
        scores, _ = rescore_topk(self.similarity, queries, self.index, cand, k, exclude)
        threshold = scores[:, k - 1]  # -inf when fewer than k admissible candidates
        clock.mark("first_stage")
        dense_above = int(self.config.dense_fraction * n)
        rows, ids, counts = bound_survivors(
            queries.f.float(),
            self._g_bound,
            self.similarity.tau,
            threshold,
            exclude,
            self.bound_dtype,
            self.config.block,
            dense_above,
        )
        dense = counts > dense_above
        clock.mark("bound")
        self.stats = BoundedStats(
            candidates=float(cand.shape[1]),
            survivors=float(counts.float().mean().item()),
            max_survivors=int(counts.max().item()),
            extra={
                "threshold_finite": float((threshold > NEG_INF).float().mean().item()),
                "dense_queries": float(dense.sum().item()),
            },
            counts=counts.tolist(),
            stage_ms=clock.ms,
        )
        out_scores = torch.empty(b, k, dtype=scores.dtype, device=scores.device)
        out_ids = torch.empty(b, k, dtype=torch.long, device=scores.device)
        if not dense.all():
            s, i = score_ragged(self.similarity, queries, self.index, rows, ids, k)
            sparse = ~dense
            out_scores[sparse], out_ids[sparse] = s[sparse], i[sparse]
        clock.mark("rescore_survivors")
        heavy = dense.nonzero().flatten()
        if len(heavy):
            sub_ex = None if exclude is None else exclude[heavy]
            s, i = self.brute_force.search(queries.index_select(heavy), k, sub_ex)
            out_scores[heavy], out_ids[heavy] = s, i
        clock.mark("brute_force_dense")
        return out_scores, out_ids
