"""Bounded-exact: exact whatever its first stage, on float32 and bf16 indexes."""

from __future__ import annotations

import pytest
import torch
from retrieval_helpers import assert_same_topk, make_catalog, random_exclude, reference_topk

from recsys.retrieval.bounded import (
    STAGES,
    BoundedConfig,
    BoundedExact,
    bound_items,
    bound_survivors,
    max_logits,
    native_bf16,
    score_ragged,
    survivor_margin,
)
from recsys.retrieval.rails import TopKPerEmbd


@pytest.mark.parametrize("dense_fraction", [0.0, 0.3, 1.0])  # brute force / mixed / gathered
@pytest.mark.parametrize("first_k", [1, 5, 200])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_exact_for_any_first_stage_budget(first_k: int, seed: int, dense_fraction: float) -> None:
    cat = make_catalog(num_items=70, batch=5, seed=seed)
    config = BoundedConfig(
        first_stage_k=first_k, block=50, dense_fraction=dense_fraction, brute_force_below=0
    )
    retriever = BoundedExact(cat.similarity, cat.index, config=config)
    exclude = random_exclude(5, 70, seed=seed + 10)
    assert_same_topk(retriever.search(cat.queries, 8, exclude), reference_topk(cat, 8, exclude))
    assert_same_topk(retriever.search(cat.queries, 8), reference_topk(cat, 8))
    assert retriever.stats.survivors >= 8


@pytest.mark.parametrize("bound_dtype", [None, torch.float32, torch.bfloat16])
@pytest.mark.parametrize("index_dtype", [torch.float32, torch.bfloat16])
def test_exact_with_bf16_bound_or_index(index_dtype: torch.dtype, bound_dtype) -> None:
    cat = make_catalog(num_items=90, batch=6, seed=4, dtype=index_dtype)
    config = BoundedConfig(first_stage_k=3, bound_dtype=bound_dtype, brute_force_below=0)
    got = BoundedExact(cat.similarity, cat.index, config=config).search(cat.queries, 10)
    assert_same_topk(got, reference_topk(cat, 10))


def test_other_first_stage_and_k_beyond_admissible_items() -> None:
    cat = make_catalog(num_items=12, batch=3, seed=7)
    exclude = random_exclude(3, 12, rate=0.5, seed=8)
    first = TopKPerEmbd(cat.similarity, cat.index, 1)
    config = BoundedConfig(brute_force_below=0)
    retriever = BoundedExact(cat.similarity, cat.index, first_stage=first, config=config)
    got = retriever.search(cat.queries, 15, exclude)
    assert_same_topk(got, reference_topk(cat, 15, exclude))
    assert not exclude.gather(1, got[1])[got[1] != 0].any()


def test_dot_similarity_is_handled() -> None:
    cat = make_catalog(num_items=40, batch=4, kind="dot")
    config = BoundedConfig(brute_force_below=0)
    got = BoundedExact(cat.similarity, cat.index, config=config).search(cat.queries, 5)
    assert_same_topk(got, reference_topk(cat, 5))


def test_the_bound_holds_for_mol() -> None:
    """phi <= max_k s_k on every (query, item) pair: the premise of the certificate."""
    cat = make_catalog(num_items=200, batch=8, seed=9)
    phi = cat.similarity.score_all(cat.queries, cat.index.parts)
    fq = (cat.queries.f / cat.similarity.tau).reshape(-1, cat.queries.f.shape[-1])
    m = max_logits(fq, cat.index.g, cat.queries.batch_size)
    assert (phi <= m + 1e-5).all()


def test_max_logits_matches_explicit_loop() -> None:
    torch.manual_seed(0)
    b, p_q, p_x, d, c = 2, 3, 2, 4, 5
    f, g = torch.randn(b, p_q, d), torch.randn(c, p_x, d)
    m = max_logits(f.reshape(b * p_q, d), g, b)
    for bi in range(b):
        for x in range(c):
            ref = max(float(f[bi, i] @ g[x, j]) for i in range(p_q) for j in range(p_x))
            assert abs(float(m[bi, x]) - ref) < 1e-5


def test_score_ragged_matches_per_query_reference() -> None:
    """Each query's own item list, of any length (none, fewer than k, several chunks)."""
    cat = make_catalog(num_items=60, batch=4, seed=3)
    gen = torch.Generator().manual_seed(5)
    lists = [torch.randperm(60, generator=gen)[:n] + 1 for n in (7, 0, 3, 41)]
    rows = torch.cat([torch.full((len(x),), r) for r, x in enumerate(lists)])
    ids = torch.cat(lists)
    scores, top = score_ragged(cat.similarity, cat.queries, cat.index, rows, ids, 5, max_pairs=8)
    with torch.no_grad():
        full = cat.similarity.score_all(cat.queries, cat.index.parts)
    for r, items in enumerate(lists):
        ref = sorted(((float(full[r, i]), int(i)) for i in items), reverse=True)[:5]
        got = [(float(s), int(i)) for s, i in zip(scores[r], top[r], strict=True) if int(i) != 0]
        assert [i for _, i in got] == [i for _, i in ref]
        assert all(abs(a - b) < 1e-5 for (a, _), (b, _) in zip(got, ref, strict=True))
        assert (top[r] == 0).sum() == max(0, 5 - len(items))
        assert (scores[r][top[r] == 0] == float("-inf")).all()


@pytest.mark.parametrize("shared_above", [0.0, 0.5, 2.0])  # all shared / mixed / none
def test_score_ragged_shares_common_items_without_leaking_them(shared_above: float) -> None:
    """Items on most lists are scored once for every query; a query whose list lacks such an
    item never gets it, even when it would rank first."""
    cat = make_catalog(num_items=60, batch=4, seed=8)
    with torch.no_grad():
        full = cat.similarity.score_all(cat.queries, cat.index.parts)
    best = int(full[3, 1:].argmax()) + 1  # query 3's best item, left off its list
    common = [i for i in range(1, 40) if i != best][:20]
    own = [i for i in (50, 51, 52) if i != best][:2]  # query 3's own items, never `best`
    lists = [torch.tensor(sorted(set(common) | {best, 45 + r})) for r in range(3)] + [
        torch.tensor([*common[:12], *own])
    ]
    rows = torch.cat([torch.full((len(x),), r) for r, x in enumerate(lists)])
    ids = torch.cat(lists)
    scores, top = score_ragged(
        cat.similarity,
        cat.queries,
        cat.index,
        rows,
        ids,
        6,
        max_pairs=8,
        shared_above=shared_above,
    )
    for r, items in enumerate(lists):
        ref = sorted(((float(full[r, i]), int(i)) for i in items), reverse=True)[:6]
        assert [int(i) for i in top[r]] == [i for _, i in ref]
        assert torch.allclose(scores[r], torch.tensor([v for v, _ in ref]), atol=1e-5)
    assert best not in top[3].tolist()


def test_survivors_include_every_item_at_or_above_the_threshold() -> None:
    cat = make_catalog(num_items=100, batch=4, seed=11)
    f, g, tau = cat.queries.f, cat.index.g, cat.similarity.tau
    m = max_logits((f / tau).reshape(-1, f.shape[-1]), g, 4)
    threshold = m[:, 1:].median(dim=1).values
    items = bound_items(g, torch.float32)
    rows, ids, counts = bound_survivors(f, items, tau, threshold, None, block=64)
    assert counts.tolist() == torch.bincount(rows, minlength=4).tolist()
    assert (rows[1:] >= rows[:-1]).all()
    for b in range(4):
        need = set(torch.nonzero(m[b, 1:] >= threshold[b]).flatten().add(1).tolist())
        got = set(ids[rows == b].tolist())
        assert need <= got and 0 not in got
    cap = int(counts.float().median())
    rows2, ids2, counts2 = bound_survivors(f, items, tau, threshold, None, 64, cap)
    assert counts2.tolist() == counts.tolist()  # dense queries still counted
    listed = set(rows2.tolist())
    assert listed == {b for b in range(4) if counts[b] <= cap}
    for b in listed:
        assert ids2[rows2 == b].tolist() == ids[rows == b].tolist()


def test_mixed_sparse_and_dense_queries() -> None:
    """Some queries rescored from their survivors, the rest by brute force, in one batch."""
    cat = make_catalog(num_items=70, batch=6, seed=1)
    probe = BoundedExact(cat.similarity, cat.index)
    _, ids = reference_topk(cat, 8)
    scores = cat.similarity.score_all(cat.queries, cat.index.parts)
    threshold = scores.gather(1, ids[:, 7:8]).squeeze(1)
    items = bound_items(cat.index.g, torch.float32)
    _, _, counts = bound_survivors(cat.queries.f, items, cat.similarity.tau, threshold, None)
    counts = counts.float()
    assert counts.min() < counts.max(), "the catalog must give queries different survivor counts"
    fraction = float((counts.min() + counts.max()) / 2 / 70)
    config = BoundedConfig(first_stage_k=70, dense_fraction=fraction, brute_force_below=0)
    retriever = BoundedExact(probe.similarity, probe.index, config=config)
    assert_same_topk(retriever.search(cat.queries, 8), reference_topk(cat, 8))
    assert 0 < retriever.stats.extra["dense_queries"] < 6


def test_small_catalogs_go_straight_to_brute_force() -> None:
    cat = make_catalog(num_items=40, batch=3, seed=2)
    retriever = BoundedExact(cat.similarity, cat.index, config=BoundedConfig(brute_force_below=40))
    assert_same_topk(retriever.search(cat.queries, 6), reference_topk(cat, 6))
    assert retriever.stats.candidates == 0 and retriever.stats.survivors == 40


def test_stats_report_every_query_and_every_stage() -> None:
    cat = make_catalog(num_items=70, batch=5, seed=6)
    config = BoundedConfig(first_stage_k=4, brute_force_below=0, time_stages=True)
    retriever = BoundedExact(cat.similarity, cat.index, config=config)
    retriever.search(cat.queries, 6)
    stats = retriever.stats
    assert len(stats.counts) == 5 and max(stats.counts) == stats.max_survivors
    assert sum(stats.counts) / 5 == pytest.approx(stats.survivors)
    assert list(stats.stage_ms) == list(STAGES)
    assert all(ms >= 0.0 for ms in stats.stage_ms.values())


def test_bound_items_measure_norm_and_conversion_error() -> None:
    torch.manual_seed(3)
    g = torch.nn.functional.normalize(torch.randn(300, 4, 16), dim=-1)
    same = bound_items(g, torch.float32, chunk=64)
    assert same.g is g and same.error == 0.0
    assert same.norm == pytest.approx(float(g.norm(dim=-1).max()))
    half = bound_items(g, torch.bfloat16, chunk=64)
    assert half.g.dtype == torch.bfloat16
    want = float((half.g.float() - g).norm(dim=-1).max())
    assert half.error == pytest.approx(want) and 0.0 < half.error <= 2.0**-8 * half.norm
    with pytest.raises(ValueError, match="bound dtype"):
        bound_items(g, torch.float16)


@pytest.mark.parametrize("index_dtype", [torch.float32, torch.bfloat16])
def test_bf16_margin_covers_the_rounding_of_the_bound_pass(index_dtype: torch.dtype) -> None:
    """Every bf16 bound lies within the margin of the exact (float64) bound, pair by pair,
    on random unit components at the real scale (tau 0.05, d_P 64)."""
    torch.manual_seed(4)
    b, p_q, p_x, d, n, tau = 6, 8, 4, 64, 400, 0.05
    f = torch.nn.functional.normalize(torch.randn(b, p_q, d), dim=-1)
    g = torch.nn.functional.normalize(torch.randn(n, p_x, d), dim=-1).to(index_dtype)
    items = bound_items(g, torch.bfloat16)
    fq = (f / tau).to(torch.bfloat16)
    approx = max_logits(fq.reshape(b * p_q, d), items.g, b).double()  # (B, N)
    exact = max_logits(f.double().reshape(b * p_q, d) / tau, g.double(), b)
    for x in range(n):
        margin = survivor_margin(f, fq, tau, exact[:, x].float(), items).double()
        assert (approx[:, x] >= exact[:, x] - margin).all()
    worst = survivor_margin(f, fq, tau, exact.max(dim=1).values.float(), items)
    assert (worst < 2.0**-6 / tau).all()  # tighter than a flat four-roundings allowance


@pytest.mark.parametrize("gates", [0, 1, 4])
@pytest.mark.parametrize("seed", [0, 5])
def test_dense_queries_by_gate_bound_or_brute_force(gates: int, seed: int) -> None:
    """dense_fraction 0: every query is predicted dense and skips the bound pass."""
    cat = make_catalog(num_items=120, batch=6, seed=seed)
    exclude = random_exclude(6, 120, seed=seed + 1)
    config = BoundedConfig(
        first_stage_k=10,
        dense_fraction=0.0,
        gate_components=gates,
        gate_share=1.0,
        sample=40,
        brute_force_below=0,
    )
    retriever = BoundedExact(cat.similarity, cat.index, config=config)
    assert_same_topk(retriever.search(cat.queries, 7, exclude), reference_topk(cat, 7, exclude))
    stats = retriever.stats
    assert stats.extra["predicted_dense"] == stats.extra["dense_queries"] == 6
    assert len(stats.gate_counts) == 6 and all(0 < c <= 120 for c in stats.gate_counts)
    if gates == 0:
        assert stats.gate_counts == [120] * 6  # brute force
    else:
        assert min(stats.gate_counts) < 120 - int(exclude[:, 1:].sum(dim=1).min())


def test_gate_bound_is_not_used_for_dot_or_without_a_threshold() -> None:
    dot = make_catalog(num_items=40, batch=3, kind="dot")
    config = BoundedConfig(dense_fraction=0.0, brute_force_below=0)
    retriever = BoundedExact(dot.similarity, dot.index, config=config)
    assert not retriever.gated
    assert_same_topk(retriever.search(dot.queries, 5), reference_topk(dot, 5))
    cat = make_catalog(num_items=12, batch=3, seed=7)
    exclude = random_exclude(3, 12, rate=0.5, seed=8)
    retriever = BoundedExact(cat.similarity, cat.index, config=config)
    got = retriever.search(cat.queries, 15, exclude)  # fewer than k admissible: -inf
    assert_same_topk(got, reference_topk(cat, 15, exclude))
    assert retriever.stats.gate_counts == [12] * 3


def test_queries_needing_too_many_gates_go_to_brute_force() -> None:
    cat = make_catalog(num_items=120, batch=6, seed=2)
    config = BoundedConfig(dense_fraction=0.0, gate_share=0.0, sample=40, brute_force_below=0)
    retriever = BoundedExact(cat.similarity, cat.index, config=config)
    assert_same_topk(retriever.search(cat.queries, 7), reference_topk(cat, 7))
    assert retriever.stats.gate_counts == [120] * 6


def test_config_rejects_bad_gate_settings() -> None:
    with pytest.raises(ValueError, match="gate_components"):
        BoundedConfig(gate_components=-1)
    with pytest.raises(ValueError, match="gate_share"):
        BoundedConfig(gate_share=1.5)
    with pytest.raises(ValueError, match="sample"):
        BoundedConfig(sample=0)


def test_bound_pass_of_no_queries_is_empty() -> None:
    cat = make_catalog(num_items=30, batch=2, seed=1)
    items = bound_items(cat.index.g, torch.float32)
    f = cat.queries.f[:0]
    rows, ids, counts = bound_survivors(f, items, 0.05, torch.zeros(0), None)
    assert rows.numel() == ids.numel() == counts.numel() == 0


def test_default_bound_dtype_is_bf16_where_native() -> None:
    cat = make_catalog(num_items=30, batch=2, seed=1)
    auto = BoundedExact(cat.similarity, cat.index)
    want = torch.bfloat16 if native_bf16(torch.device("cpu")) else torch.float32
    assert auto.bound_dtype == want
    config = BoundedConfig(bound_dtype=torch.float32)
    assert BoundedExact(cat.similarity, cat.index, config=config).bound_dtype == torch.float32
    half = make_catalog(num_items=30, batch=2, seed=1, dtype=torch.bfloat16)
    assert BoundedExact(half.similarity, half.index).bound_dtype == torch.bfloat16
    assert native_bf16(torch.device("meta")) is False
