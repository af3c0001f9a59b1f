"""Paired comparison of two models ranked on the same queries.

Two models evaluated on the same leave-one-out queries give two rank arrays aligned by
query. Each reported metric (HR@K, NDCG@K, MRR) is a mean of per-query values, so the gap
between the models is the mean of the per-query differences d_q = a_q - b_q, and the
queries, not the models, are the sample:

- **Bootstrap interval.** Resample the queries with replacement and take the mean of d over
  each resample; the central `confidence` share of those means is the interval of the gap
  (percentile bootstrap). Each resample is drawn as multinomial counts over the queries,
  which is the same distribution as drawing indices and cheaper to apply.
- **Each model's own interval.** The same resamples give each model's metric an interval
  too: how far one split's figure could move on another draw of as many queries. It is
  what a single figure (a target, a published number) can be told apart from.
- **Sign-flip test.** If the two models were exchangeable on every query (the null
  hypothesis), each d_q would be as likely to have its sign flipped; the two-sided p-value
  is the share of random sign flips whose |mean| reaches the observed one, counted as
  (1 + hits) / (1 + resamples) so that it is never 0.
- **Discordant queries** (HR@K only): queries the first model hits and the second misses,
  and the reverse (McNemar's table); the gap in HR@K is their difference over the queries.

The metrics are those of `recsys.metrics` (same tie rule: ranks come from there).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

DEFAULT_KEYS = ("hr@10", "ndcg@10", "hr@50", "hr@200", "mrr")
BLOCK = 256  # resamples drawn at a time (a (BLOCK, queries) matrix)


def per_query(ranks: np.ndarray, key: str) -> np.ndarray:
    """(M,) ranks (1 = best) -> (M,) float64 values whose mean is metric `key`
    ("hr@K", "ndcg@K" or "mrr", as `recsys.metrics.compute_metrics` reports them)."""
    r = np.asarray(ranks).astype(np.float64)
    if key == "mrr":
        return 1.0 / r
    name, sep, cutoff = key.partition("@")
    if sep and cutoff.isdigit() and int(cutoff) > 0:
        k = int(cutoff)
        if name == "hr":
            return (r <= k).astype(np.float64)
        if name == "ndcg":
            return np.where(r <= k, 1.0 / np.log2(r + 1.0), 0.0)
    raise ValueError(f"metric {key!r} is not one of hr@K, ndcg@K, mrr")


def _check_ranks(ranks_a: np.ndarray, ranks_b: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    a, b = np.asarray(ranks_a), np.asarray(ranks_b)
    if a.ndim != 1 or a.shape != b.shape:
        raise ValueError(
            f"ranks must be two 1-D arrays over the same queries, got shapes {a.shape} and "
            f"{b.shape}"
        )
    if len(a) == 0:
        raise ValueError("no queries to compare")
    if min(a.min(), b.min()) < 1:
        raise ValueError("ranks must be >= 1 (1 = best)")
    return a, b


def _resampled_means(
    values: np.ndarray, resamples: int, rng: np.random.Generator, kind: str
) -> np.ndarray:
    """(resamples, columns) means of the (M, columns) per-query values under `kind`:
    "bootstrap" (queries drawn with replacement) or "signflip" (each sign a fair coin)."""
    m = values.shape[0]
    out = []
    for start in range(0, resamples, BLOCK):
        size = min(BLOCK, resamples - start)
        if kind == "bootstrap":
            weights = rng.multinomial(m, np.full(m, 1.0 / m), size=size).astype(np.float64)
        else:
            weights = rng.integers(0, 2, size=(size, m)).astype(np.float64) * 2.0 - 1.0
        out.append(weights @ values / m)
    return np.concatenate(out)


def paired_compare(
    ranks_a: np.ndarray,
    ranks_b: np.ndarray,
    keys: Sequence[str] = DEFAULT_KEYS,
    resamples: int = 10_000,
    confidence: float = 0.95,
    seed: int = 0,
) -> list[dict[str, float | int | str]]:
    """One row per metric: {"metric", "a", "b", "diff" (a - b), "ci_low", "ci_high",
    "p_value", "a_ci_low", "a_ci_high", "b_ci_low", "b_ci_high"} (the last four: each
    model's own interval, from the same resamples) and, for hr@K, "a_only" / "b_only"
    (queries only a / only b hits).

    ranks_a, ranks_b: (M,) ranks of the same M queries, in the same order.
    """
    a, b = _check_ranks(ranks_a, ranks_b)
    if resamples < 1:
        raise ValueError(f"resamples must be >= 1, got {resamples}")
    if not 0.0 < confidence < 1.0:
        raise ValueError(f"confidence must be in (0, 1), got {confidence}")
    values_a = np.stack([per_query(a, k) for k in keys], axis=1)  # (M, keys)
    values_b = np.stack([per_query(b, k) for k in keys], axis=1)
    diffs = values_a - values_b
    observed = diffs.mean(axis=0)
    rng = np.random.default_rng(seed)
    n = len(keys)
    # One set of resamples for the gap and for each model: (resamples, 3 * keys).
    boot = _resampled_means(np.hstack([diffs, values_a, values_b]), resamples, rng, "bootstrap")
    flips = _resampled_means(diffs, resamples, rng, "signflip")
    tail = (1.0 - confidence) / 2.0
    lows, highs = np.quantile(boot, [tail, 1.0 - tail], axis=0)
    low, high = lows[:n], highs[:n]
    own = {"a": (lows[n : 2 * n], highs[n : 2 * n]), "b": (lows[2 * n :], highs[2 * n :])}
    # A flip reaching the observed |mean| up to rounding counts as reaching it.
    reach = np.abs(flips) >= np.abs(observed) - 1e-12
    p_values = (1.0 + reach.sum(axis=0)) / (1.0 + resamples)
    rows: list[dict[str, float | int | str]] = []
    for j, key in enumerate(keys):
        row: dict[str, float | int | str] = {
            "metric": key,
            "a": float(values_a[:, j].mean()),
            "b": float(values_b[:, j].mean()),
            "diff": float(observed[j]),
            "ci_low": float(low[j]),
            "ci_high": float(high[j]),
            "p_value": float(p_values[j]),
        }
        for model, (own_low, own_high) in own.items():
            row[f"{model}_ci_low"] = float(own_low[j])
            row[f"{model}_ci_high"] = float(own_high[j])
        if key.startswith("hr@"):
            row["a_only"] = int(((values_a[:, j] > 0) & (values_b[:, j] == 0)).sum())
            row["b_only"] = int(((values_b[:, j] > 0) & (values_a[:, j] == 0)).sum())
        rows.append(row)
    return rows
