"""Bounded-exact MoL top-k: a certified exact top-k from the bound phi <= max_k s_k, and
from the gate bound of `recsys.similarity.mol_bound` where that one is loose.

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

The bound pass may run in bf16: the default wherever bf16 products run in hardware (a CUDA
GPU with bf16, a CPU with AVX512-BF16 or AMX: `native_bf16`) or the index is bf16, where
it makes the bound pass cheaper (benchmarks/results/retrieval-100k-cpu.json). Rounding
cannot break the certificate; the survivor test lowers each query's threshold by a margin
that covers it (`survivor_margin`, in logit units, per query):
- the bf16 query components fq differ from f / tau by a known error df (computed, per
  query: max_i ||df_i||), the bf16 item components from the index's by at most e_g (the
  largest ||g_bf16 - g|| over the catalog, computed once; 0 when the index is bf16), so
  |<fq, g_bf16> - <f, g> / tau| <= (||df|| |g| + |f| e_g + ||df|| e_g) / tau (Cauchy-Schwarz;
  on this catalog ||df|| and e_g are ~0.5-0.6 x 2^-8 against the worst case 2^-8, the
  unit roundoff of bf16);
- the products are accumulated in float32 on CPU (64 terms: < 2^-16 in cosine units); a
  CUDA GPU may round partial sums to bf16 (reduced-precision reductions), so CUDA adds
  room for four such roundings, 2^-6;
- the bf16 result is rounded once more (relative 2^-8; rounding is monotone, so comparing
  with the threshold lowered by 2^-8 of its magnitude is safe);
- a relative 1e-4 covers the float32 MoL arithmetic of the exact scores.
A float32 bound pass keeps a flat 2^-16 (2^-9 when CUDA is allowed TF32 matmuls).
Empirically (1M catalog, 256 query components x 4M item components) the largest bf16
error was 0.68 x 2^-8 in cosine units.

Each query's survivors are gathered and rescored on their own (`score_ragged`; items on
the lists of most queries are scored once for all of them), so the work is about the
number of surviving pairs. Queries whose survivors would cover more than `dense_fraction`
of the catalog (a loose bound: their threshold sits below the bound of most items) are
dense. They are predicted from `BoundedConfig.sample` evenly spaced items before the bound
pass, which they skip (a query that the sample misses is found by the pass), and:
4. for a MoL similarity, when few components reach the threshold, the gate bound (the
   exact gates of those components and a few more; `recsys.similarity.mol_bound`) prunes
   the catalog; its survivors, lowered by GATE_MARGIN for float32 order effects, are
   rescored as above. Every exact top-k item has phi >= S, hence a gate bound >= S: exact;
5. otherwise brute force scores them (it shares contiguous item blocks across the batch
   and needs no gather).
On the 1M synthetic catalog a few queries of a batch are dense, and the gate bound keeps
a small fraction of the catalog for them (benchmarks/results/bounded-stages-1M-cpu.json).

Shapes: B queries, N catalog size, P_Q / P_X components, d_P component dim, c items per
block, K top-k.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Protocol, cast

import torch
from torch import Tensor

from recsys.cpu import cpuinfo
from recsys.retrieval.brute_force import BruteForce
from recsys.retrieval.index import (
    MAX_PAIRS,
    SCORE_DTYPE,
    ItemIndex,
    Similarity,
    rescore_topk,
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
from recsys.similarity.mol import MoLSimilarity
from recsys.similarity.mol_bound import (
    GateBound,
    gate_need,
    rank_gate_components,
    reach_share,
)
from recsys.similarity.parts import QueryParts

# Elements of one (B*P_Q, c*P_X) block of the bound pass, whose P_X products of (B*P_Q, c)
# stay in cache (2^21 bf16 = 4 MiB in all; B = 32: c = 2,048 items, 1 MiB a product).
# Measured per pair (bf16, one thread, B = 28-32): c = 1,024: 18-19 ns, 2,048: 17-18 ns,
# 4,096-8,192: 17-32 ns (erratic: a product no longer fits in L2).
BOUND_BLOCK = 1 << 21
BOUND_DTYPES = (torch.float32, torch.bfloat16)
BF16_ROUNDOFF = 2.0**-8  # unit roundoff of bf16 (8 significant bits)
FLOAT32_MARGIN = 2.0**-16  # cosine units: a float32 bound pass
TF32_MARGIN = 2.0**-9  # cosine units: a float32 pass on CUDA with TF32 matmuls allowed
# Cosine units: accumulation of a bf16 bound pass (float32 on CPU; CUDA may round partial
# sums to bf16).
ACCUMULATION_MARGIN = {"cpu": 2.0**-16, "cuda": 2.0**-6}
RELATIVE_MARGIN = 1e-4  # float32 MoL arithmetic vs the exact convex combination
# The gate bound is computed in float32 in another order than the scores it bounds: its
# error is below ~2e-3 logits even when every rounding adds up; the cut is lowered by
# 1e-2 (1 + |threshold|).
GATE_MARGIN = 1e-2
# (query, item) pairs per block of the gate-bound pass: like MAX_PAIRS for rescoring, the
# (B, c, H) gate hidden layer stays in cache (4096 x 128 float32 = 2 MiB).
GATE_PAIRS = MAX_PAIRS
# An item in the survivor lists of more than this share of the queries is scored once for
# all of them (brute-force style, cheaper per pair) rather than gathered for each: past
# 55% the pairs scored in vain cost less than the gathers they save. Survivor lists of a
# batch overlap heavily (benchmarks/results/blocks-1M-cpu.json).
SHARED_ABOVE = 0.55


class CandidateStage(Protocol):
    """Anything with `candidates(queries, k, exclude) -> (B, C) ids` (TopKAvg, TopKPerEmbd,
    Combined)."""

    def candidates(self, queries: QueryParts, k: int, exclude: Tensor | None) -> Tensor: ...


@dataclass(frozen=True)
class BoundedConfig:
    """first_stage_k: TopKAvg budget of the default first stage (searched in bf16);
    bound_dtype: dtype of the bound pass (None = bf16 where `native_bf16`, else the index
    dtype; exact either way); block: elements of one
    bound block; dense_fraction: a query with more survivors than this share of the catalog
    is dense (predicted from `sample` catalog items before the bound pass, or found by it);
    gate_components: dense queries of a MoL similarity are pruned by the gate bound with
    this many exact gate logits (`recsys.similarity.mol_bound`; at least one more than the
    components that reach the threshold), 0 = score them by brute force; gate_share: a
    dense query that needs more than this share of the P gates is scored by brute force
    instead (the bound then costs about as much as the score: on the trained ML-1M and
    Beauty bundles most components reach the threshold); sample: catalog
    items (evenly spaced ids) that predict dense queries and choose their components;
    brute_force_below: catalogs of at most this many items go straight to brute force (on
    ML-1M, 3.7k items, the first stage and the bound pass cost more than they save);
    time_stages: synchronise CUDA between stages so that `stats.stage_ms` is meaningful
    there (CPU stage times are always exact)."""

    first_stage_k: int = 1024
    bound_dtype: torch.dtype | None = None
    block: int = BOUND_BLOCK
    dense_fraction: float = 0.5
    gate_components: int = 4
    gate_share: float = 0.25
    sample: int = 1024
    brute_force_below: int = 4096
    time_stages: bool = False

    def __post_init__(self) -> None:
        for name in ("dense_fraction", "gate_share"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int | float) or not 0 <= value <= 1:
                raise ValueError(f"BoundedConfig.{name} must be in [0, 1], got {value!r}")
        for name in ("first_stage_k", "block", "sample"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"BoundedConfig.{name} must be an integer >= 1, got {value!r}")
        for name in ("brute_force_below", "gate_components"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise ValueError(f"BoundedConfig.{name} must be an integer >= 0, got {value!r}")
        if self.bound_dtype not in (None, *BOUND_DTYPES):
            raise ValueError(
                f"BoundedConfig.bound_dtype must be None, float32 or bfloat16, got "
                f"{self.bound_dtype!r}"
            )


@dataclass
class BoundedStats:
    """What the last search did: candidates from the first stage and survivors of the bound
    (both per query, averaged over the batch), every query's survivor count (for a query
    predicted dense and kept out of the bound pass: the sample's estimate), the survivors
    of the gate bound for each dense query, and the wall time of each stage in ms
    (`STAGES`; on CUDA only with BoundedConfig.time_stages, which synchronises the device
    between stages)."""

    candidates: float = 0.0
    survivors: float = 0.0
    max_survivors: int = 0
    extra: dict[str, float] = field(default_factory=dict)
    counts: list[int] = field(default_factory=list)
    gate_counts: list[int] = field(default_factory=list)
    stage_ms: dict[str, float] = field(default_factory=dict)


# first stage + rescoring of its candidates (the threshold) + the sample's prediction of
# dense queries, the bound pass, the rescoring of sparse queries' survivors, the dense
# queries (gate bound and rescoring of its survivors, or brute force).
STAGES = ("first_stage", "bound", "rescore_survivors", "dense_queries")


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
    reduced over P_Q along a middle axis with a contiguous inner axis: much faster on CPU
    than one (B*P_Q, c*P_X) product reduced over the two interleaved axes."""
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
    shared_above: float = SHARED_ABOVE,
) -> tuple[Tensor, Tensor]:
    """The k best of each query's own item list: (rows, ids) ragged (query, item) pairs, rows
    ascending, every id admissible and distinct within its row -> (scores (B, k), ids (B, k)),
    (-inf, 0) where a query has fewer than k items.

    Items in the lists of more than `shared_above` of the B queries are gathered once and
    scored for every query in one block (pairs outside the lists masked), as brute force
    does; the other pairs are gathered and scored query by query (B = 1, at most max_pairs
    items at a time), so their work is the number of pairs: padding every query to the
    longest list would score up to B * max(count) pairs.

    Not pruned by the gate bound (`recsys.similarity.mol_bound`): at B = 1 the bound costs
    nearly as much as a score, so bounding and then rescoring the few pairs it keeps is no
    cheaper than rescoring every gathered pair."""
    b = queries.batch_size
    count = torch.bincount(ids)  # lists holding each item
    shared = count[ids] > shared_above * b if b > 1 else torch.zeros_like(ids, dtype=torch.bool)
    best = _score_shared(similarity, queries, index, rows[shared], ids[shared], k, max_pairs)
    rows, ids = rows[~shared], ids[~shared]
    out_scores = torch.full((b, k), NEG_INF, dtype=SCORE_DTYPE, device=ids.device)
    out_ids = torch.zeros(b, k, dtype=torch.long, device=ids.device)
    counts = torch.bincount(rows, minlength=b).tolist()
    start = 0
    for row, count_row in enumerate(counts):
        if count_row == 0:
            continue
        one = queries.index_select(torch.tensor([row], device=ids.device))
        top: tuple[Tensor, Tensor] | None = None
        for lo in range(start, start + count_row, max_pairs):
            chunk = ids[lo : min(start + count_row, lo + max_pairs)]  # (c,)
            scores = similarity.score_all(one, index.gather_parts(chunk)).float()  # (1, c)
            top = merge_topk(top, scores, chunk.unsqueeze(0), k)
        assert top is not None
        out_scores[row], out_ids[row] = (t[0] for t in topk_padded(top[0], top[1], k))
        start += count_row
    if best is None:
        return out_scores, out_ids
    scores, top_ids = merge_topk(best, out_scores, out_ids, k)
    return topk_padded(scores, top_ids, k)


def _score_shared(
    similarity: Similarity,
    queries: QueryParts,
    index: ItemIndex,
    rows: Tensor,
    ids: Tensor,
    k: int,
    max_pairs: int,
) -> tuple[Tensor, Tensor] | None:
    """Running top-k (B, <= k) of the (rows, ids) pairs, scoring their distinct items for
    every query in blocks (pairs outside the list masked to -inf); None when empty."""
    if len(ids) == 0:
        return None
    b = queries.batch_size
    items = torch.unique(ids)  # sorted
    member = torch.zeros(b, len(items), dtype=torch.bool, device=ids.device)
    member[rows, torch.searchsorted(items, ids)] = True
    step = max(1, max_pairs // b)
    best: tuple[Tensor, Tensor] | None = None
    for lo in range(0, len(items), step):
        chunk = items[lo : lo + step]
        scores = similarity.score_all(queries, index.gather_parts(chunk)).float()  # (B, c)
        scores.masked_fill_(~member[:, lo : lo + step], NEG_INF)
        best = merge_topk(best, scores, chunk.expand(b, -1), k)
    return best


def native_bf16(device: torch.device) -> bool:
    """Whether `device` multiplies bf16 matrices in hardware: a CUDA GPU that supports bf16,
    or a CPU whose flags (Linux /proc/cpuinfo) include avx512_bf16 or amx_bf16. False where
    that cannot be told (other systems): the bound pass then keeps the index dtype."""
    if device.type == "cuda":
        return bool(torch.cuda.is_bf16_supported())
    return device.type == "cpu" and bool(cpuinfo()[1] & {"avx512_bf16", "amx_bf16"})


@dataclass(frozen=True)
class BoundItems:
    """The item components the bound pass reads: g (N+1, P_X, d_P) in the bound dtype, the
    largest component norm `norm`, and `error`, the largest ||g - g_index|| over items and
    components (0 when g is the index's own tensor)."""

    g: Tensor
    norm: float
    error: float

    @property
    def dtype(self) -> torch.dtype:
        return self.g.dtype


@torch.no_grad()
def bound_items(g: Tensor, dtype: torch.dtype, chunk: int = 1 << 16) -> BoundItems:
    """g (N+1, P_X, d_P) index components -> BoundItems in `dtype` (a converted copy when
    the dtypes differ; the norm and the conversion error are measured chunk by chunk)."""
    if dtype not in BOUND_DTYPES:
        raise ValueError(f"bound dtype must be float32 or bfloat16, got {dtype}")
    same = g.dtype == dtype
    out = g if same else g.to(dtype)
    norm, error = 0.0, 0.0
    for start in range(0, g.shape[0], chunk):
        block = g[start : start + chunk].float()
        norm = max(norm, float(block.norm(dim=-1).max()))
        if not same:
            diff = out[start : start + chunk].float() - block
            error = max(error, float(diff.norm(dim=-1).max()))
    return BoundItems(g=out, norm=norm, error=error)


def survivor_margin(
    f: Tensor, fq: Tensor, tau: float, threshold: Tensor, items: BoundItems
) -> Tensor:
    """How far below its threshold (B,) a query's bound may fall and the item still
    survive, in logit units: f (B, P_Q, d_P) float32 query components, fq (B, P_Q, d_P) the
    f / tau that the bound pass multiplies (in the bound dtype). Module docstring."""
    device = f.device.type
    if items.dtype == torch.float32:
        tf32 = device == "cuda" and torch.backends.cuda.matmul.allow_tf32
        cosine = torch.full_like(threshold, TF32_MARGIN if tf32 else FLOAT32_MARGIN)
        rounding = torch.zeros_like(threshold)
    else:
        df = (fq.float() * tau - f).norm(dim=-1).amax(dim=1)  # (B,) cosine units
        fn = f.norm(dim=-1).amax(dim=1)
        accumulate = ACCUMULATION_MARGIN.get(device, ACCUMULATION_MARGIN["cuda"])
        cosine = df * items.norm + fn * items.error + df * items.error + accumulate
        rounding = BF16_ROUNDOFF * (threshold.abs() + cosine / tau)
    return cosine / tau + rounding + RELATIVE_MARGIN * (1.0 + threshold.abs())


def bound_survivors(
    f: Tensor,
    items: BoundItems,
    tau: float,
    threshold: Tensor,
    exclude: Tensor | None,
    block: int = BOUND_BLOCK,
    dense_above: int | None = None,
) -> tuple[Tensor, Tensor, Tensor]:
    """Every admissible item whose bound m(x) can reach its query's threshold.

    f (B, P_Q, d_P) float32, items: the (N+1) item components (row 0 = padding) in the
    bound dtype, threshold (B,) float32 (-inf = everything survives), exclude (B, N+1) bool
    | None -> (rows, ids, counts): two (S,) long tensors of (query, item) pairs, rows
    ascending, and the (B,) survivor count of every query. Queries with more than
    `dense_above` survivors are counted but their pairs are left out (the caller scores
    them by brute force; listing them costs time).
    """
    b, p_q, d = f.shape
    if b == 0:
        none = torch.zeros(0, dtype=torch.long, device=f.device)
        return none, none, none
    g = items.g
    n1, p_x, _ = g.shape
    fq = (f / tau).to(items.dtype)
    cut = (threshold - survivor_margin(f, fq, tau, threshold, items)).unsqueeze(1)  # (B, 1)
    fq = fq.reshape(b * p_q, d)
    chunk = max(1, block // (b * p_q * p_x))
    keep = torch.empty(b, n1, dtype=torch.bool, device=f.device)
    for start in range(0, n1, chunk):
        stop = min(n1, start + chunk)
        keep[:, start:stop] = max_logits(fq, g[start:stop], b) >= cut
    if exclude is not None:
        keep.masked_fill_(exclude, False)
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
    the survivors are rescored with full MoL; dense queries are pruned by the gate bound
    (MoL) or scored by brute force."""

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
            else TopKAvg(similarity, index, self.config.first_stage_k, search_dtype=torch.bfloat16)
        )
        self.brute_force = BruteForce(similarity, index)
        self.bound_dtype = self.config.bound_dtype or (
            torch.bfloat16 if native_bf16(index.device) else index.dtype
        )
        # The bound pass reads g in bound_dtype (a converted copy when they differ).
        self.bound_items = bound_items(index.g, self.bound_dtype)
        n = index.num_items
        sample = torch.linspace(1, n, steps=min(n, self.config.sample), device=index.device)
        self.sample = index.gather_parts(sample.round().long().unique())
        self.gated = isinstance(similarity, MoLSimilarity) and self.config.gate_components > 0
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
        f = queries.f.float()
        share = self.sample_share(f, threshold)
        predicted = share > self.config.dense_fraction
        clock.mark("first_stage")

        dense_above = int(self.config.dense_fraction * n)
        counts = (share * n).round().long()
        dense = predicted.clone()
        out_scores = torch.full((b, k), NEG_INF, dtype=scores.dtype, device=scores.device)
        out_ids = torch.zeros(b, k, dtype=torch.long, device=scores.device)
        sparse = (~predicted).nonzero().flatten()
        if len(sparse):
            sub_ex = None if exclude is None else exclude[sparse]
            rows, ids, sub_counts = bound_survivors(
                f[sparse],
                self.bound_items,
                self.similarity.tau,
                threshold[sparse],
                sub_ex,
                self.config.block,
                dense_above,
            )
            counts[sparse] = sub_counts
            dense[sparse] = sub_counts > dense_above
        clock.mark("bound")
        if len(sparse) and not dense[sparse].all():
            sub = queries.index_select(sparse)
            got = score_ragged(self.similarity, sub, self.index, rows, ids, k)
            done = ~dense[sparse]
            out_scores[sparse[done]], out_ids[sparse[done]] = got[0][done], got[1][done]
        clock.mark("rescore_survivors")
        heavy = dense.nonzero().flatten()
        gate_counts: list[int] = []
        if len(heavy):
            sub_ex = None if exclude is None else exclude[heavy]
            got_s, got_i, gate_counts = self.score_dense(
                queries.index_select(heavy), threshold[heavy], k, sub_ex
            )
            out_scores[heavy], out_ids[heavy] = got_s, got_i
        clock.mark("dense_queries")
        self.stats = BoundedStats(
            candidates=float(cand.shape[1]),
            survivors=float(counts.float().mean().item()),
            max_survivors=int(counts.max().item()),
            extra={
                "threshold_finite": float((threshold > NEG_INF).float().mean().item()),
                "dense_queries": float(dense.sum().item()),
                "predicted_dense": float(predicted.sum().item()),
            },
            counts=counts.tolist(),
            gate_counts=gate_counts,
            stage_ms=clock.ms,
        )
        return out_scores, out_ids

    def sample_share(self, f: Tensor, threshold: Tensor) -> Tensor:
        """f (B, P_Q, d_P) float32, threshold (B,) -> (B,) share of the sample items whose
        bound m(x) (float32) reaches the threshold: the predicted survivor share."""
        b, p_q, d = f.shape
        m = max_logits((f / self.similarity.tau).reshape(b * p_q, d), self.sample.g, b)
        return (m >= threshold.unsqueeze(1)).float().mean(dim=1)

    def score_dense(
        self, queries: QueryParts, threshold: Tensor, k: int, exclude: Tensor | None
    ) -> tuple[Tensor, Tensor, list[int]]:
        """The exact top-k of queries whose bound m(x) keeps most of the catalog: the gate
        bound prunes the catalog for those (MoL, finite threshold) that need at most
        `gate_share` of the gates, brute force scores the rest. -> (scores (B, k), ids
        (B, k), survivors of the gate bound per query (N for those scored by brute force))."""
        b, n = queries.batch_size, self.index.num_items
        gate = torch.zeros(b, dtype=torch.bool, device=threshold.device)
        if self.gated:
            sim = cast(MoLSimilarity, self.similarity)
            cut = threshold - GATE_MARGIN * (1.0 + threshold.abs())  # -inf stays -inf
            reach = reach_share(sim, queries, self.sample, cut)
            need = gate_need(reach)  # a threshold of -inf: every gate, brute force
            gate = need <= self.config.gate_share * reach.shape[1]
        out_s = torch.empty(b, k, dtype=SCORE_DTYPE, device=threshold.device)
        out_i = torch.empty(b, k, dtype=torch.long, device=threshold.device)
        counts = torch.full((b,), n, dtype=torch.long)
        for use_gate in (True, False):
            rows = (gate == use_gate).nonzero().flatten()
            if not len(rows):
                continue
            qp = queries.index_select(rows)
            sub_ex = None if exclude is None else exclude[rows]
            if use_gate:
                order = rank_gate_components(sim, qp, self.sample, reach[rows])
                width = max(self.config.gate_components, int(need[rows].max()))
                comps = order[:, : min(width, order.shape[1])]
                s, i, c = self.gate_bound_search(qp, cut[rows], comps, k, sub_ex)
                counts[rows.cpu()] = c.cpu()
            else:
                s, i = self.brute_force.search(qp, k, sub_ex)
            out_s[rows], out_i[rows] = s, i
        return out_s, out_i, counts.tolist()

    def gate_bound_search(
        self, queries: QueryParts, cut: Tensor, comps: Tensor, k: int, exclude: Tensor | None
    ) -> tuple[Tensor, Tensor, Tensor]:
        """Exact top-k from the gate bound (`recsys.similarity.mol_bound`) with the gates of
        comps (B, T): every admissible item whose bound reaches cut (B,) (the threshold less
        GATE_MARGIN) is rescored. -> (scores (B, k), ids (B, k), survivor counts (B,))."""
        sim = cast(MoLSimilarity, self.similarity)
        b, n1 = queries.batch_size, self.index.num_items + 1
        chunk = max(1, GATE_PAIRS // b)
        bound = GateBound(sim, queries, comps)
        keep = torch.empty(b, n1, dtype=torch.bool, device=cut.device)
        for start in range(0, n1, chunk):
            stop = min(n1, start + chunk)
            keep[:, start:stop] = bound(self.index.slice_parts(start, stop)) >= cut.unsqueeze(1)
        if exclude is not None:
            keep.masked_fill_(exclude, False)
        keep[:, 0] = False  # padding
        counts = count_true(keep)
        rows, ids = keep.nonzero(as_tuple=True)
        scores, top = score_ragged(sim, queries, self.index, rows, ids, k)
        return scores, top, counts
