"""Paired comparison: per-query values against compute_metrics, the resampling against a
slow loop drawing the same random numbers, the sign-flip p-value against exact
enumeration, and the obvious cases (identical models, a clearly better one)."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from recsys.metrics import compute_metrics
from recsys.paired import BLOCK, paired_compare, per_query


def _ranks(rng: np.random.Generator, m: int, scale: float) -> np.ndarray:
    return 1 + np.floor(rng.exponential(scale, size=m)).astype(np.int64)


def test_per_query_means_are_the_reported_metrics() -> None:
    ranks = _ranks(np.random.default_rng(1), 500, 30.0)
    reported = compute_metrics(ranks, np.zeros((len(ranks), 10), dtype=np.int64), 1000)
    for key in ("hr@1", "hr@10", "hr@200", "ndcg@10", "ndcg@50", "mrr"):
        assert per_query(ranks, key).mean() == pytest.approx(reported[key], abs=1e-12)


@pytest.mark.parametrize("key", ["recall@10", "hr@", "hr@0", "ndcg@x", "auc"])
def test_per_query_rejects_unknown_metrics(key: str) -> None:
    with pytest.raises(ValueError, match="hr@K, ndcg@K, mrr"):
        per_query(np.array([1, 2]), key)


def test_bad_inputs_are_named() -> None:
    with pytest.raises(ValueError, match="same queries"):
        paired_compare(np.array([1, 2]), np.array([1, 2, 3]))
    with pytest.raises(ValueError, match=">= 1"):
        paired_compare(np.array([0, 2]), np.array([1, 2]))
    with pytest.raises(ValueError, match="no queries"):
        paired_compare(np.array([], dtype=np.int64), np.array([], dtype=np.int64))
    with pytest.raises(ValueError, match="confidence"):
        paired_compare(np.array([1]), np.array([2]), confidence=1.0)


def test_identical_models_differ_by_nothing() -> None:
    ranks = _ranks(np.random.default_rng(2), 300, 20.0)
    for row in paired_compare(ranks, ranks.copy(), resamples=500):
        assert row["diff"] == 0.0
        assert row["ci_low"] == row["ci_high"] == 0.0
        assert row["p_value"] == 1.0  # every flip reaches |0|


def test_a_clearly_better_model_is_resolved() -> None:
    rng = np.random.default_rng(3)
    b = _ranks(rng, 2000, 60.0)
    a = np.maximum(1, b // 3)  # every query ranked at least as well, most better
    rows = {r["metric"]: r for r in paired_compare(a, b, resamples=2000)}
    hr = rows["hr@10"]
    assert hr["diff"] > 0 and hr["ci_low"] > 0 and hr["p_value"] < 0.01
    assert hr["b_only"] == 0 and hr["a_only"] > 0
    assert hr["a_only"] - hr["b_only"] == pytest.approx(hr["diff"] * len(a))
    assert rows["mrr"]["ci_low"] <= rows["mrr"]["diff"] <= rows["mrr"]["ci_high"]


def _slow_reference(a, b, keys, resamples, confidence, seed):
    """The same statistics, one resample at a time, drawing the same random numbers."""
    rng = np.random.default_rng(seed)
    m = len(a)
    diffs = {k: per_query(a, k) - per_query(b, k) for k in keys}
    boot_weights, flip_signs = [], []
    for start in range(0, resamples, BLOCK):
        size = min(BLOCK, resamples - start)
        boot_weights.extend(rng.multinomial(m, [1.0 / m] * m, size=size))
    for start in range(0, resamples, BLOCK):
        size = min(BLOCK, resamples - start)
        flip_signs.extend(rng.integers(0, 2, size=(size, m)) * 2 - 1)
    tail = (1 - confidence) / 2

    def interval(values):
        boot = [sum(w[q] * values[q] for q in range(m)) / m for w in boot_weights]
        return tuple(np.quantile(boot, [tail, 1 - tail]))

    out = {}
    for k in keys:
        d = diffs[k]
        flips = [sum(s[q] * d[q] for q in range(m)) / m for s in flip_signs]
        observed = sum(d) / m
        reached = sum(abs(f) >= abs(observed) - 1e-12 for f in flips)
        p_value = (1 + reached) / (1 + resamples)
        own = (*interval(per_query(a, k)), *interval(per_query(b, k)))
        out[k] = (observed, *interval(d), p_value, *own)
    return out


def test_matches_a_slow_reference() -> None:
    rng = np.random.default_rng(4)
    a, b = _ranks(rng, 40, 8.0), _ranks(rng, 40, 8.0)
    keys = ("hr@5", "ndcg@10", "mrr")
    resamples = BLOCK + 37  # two blocks, the second partial
    rows = paired_compare(a, b, keys, resamples=resamples, confidence=0.9, seed=7)
    ref = _slow_reference(a, b, keys, resamples, 0.9, 7)
    for row in rows:
        expected = ref[str(row["metric"])]
        got = tuple(
            row[f]
            for f in (
                *("diff", "ci_low", "ci_high", "p_value"),
                *("a_ci_low", "a_ci_high", "b_ci_low", "b_ci_high"),
            )
        )
        assert got == pytest.approx(expected, abs=1e-12)


def test_each_models_interval_is_the_binomial_one_for_hr() -> None:
    """HR@K is a mean of 0/1 values: its bootstrap interval is close to the normal
    approximation p +- 1.96 sqrt(p (1 - p) / M) on many queries."""
    rng = np.random.default_rng(6)
    a, b = _ranks(rng, 6000, 25.0), _ranks(rng, 6000, 25.0)
    (row,) = paired_compare(a, b, ("hr@10",), resamples=4000, seed=1)
    for model in ("a", "b"):
        p = float(row[model])
        half = 1.96 * np.sqrt(p * (1 - p) / len(a))
        assert row[f"{model}_ci_low"] < p < row[f"{model}_ci_high"]
        assert row[f"{model}_ci_low"] == pytest.approx(p - half, abs=0.15 * half)
        assert row[f"{model}_ci_high"] == pytest.approx(p + half, abs=0.15 * half)


def test_sign_flip_p_value_matches_exact_enumeration() -> None:
    rng = np.random.default_rng(5)
    a, b = _ranks(rng, 10, 5.0), _ranks(rng, 10, 5.0)
    d = per_query(a, "mrr") - per_query(b, "mrr")
    observed = abs(d.mean())
    flips = [abs((np.array(s) * d).mean()) for s in itertools.product((-1, 1), repeat=len(d))]
    exact = np.mean([f >= observed - 1e-12 for f in flips])
    (row,) = paired_compare(a, b, ("mrr",), resamples=40_000, seed=0)
    assert row["p_value"] == pytest.approx(exact, abs=0.01)
