"""Model-side latency of a recommendation batch, without HTTP: `Recommender.recommend`.

What a serving replica spends per `@serve.batch` call, measured in-process on a bundle:
- "user": requests `{user_id, k}` whose stored-history query is already cached (the
  steady state of returning users: retrieval, filters, result building; no encoder);
- "history": the same users' stored histories sent as item keys (the encoder runs).
For each retriever ("rails", "exact") and batch size it reports the median and p99 of the
wall time per batch call on one torch thread (a serving replica's setting). It also times
the top-k cut the retrievers use (`recsys.retrieval.topk.select_topk`) against
`torch.topk` on the bundle's catalog size, which is where numpy's introselect pays.
By default every batch is timed twice in one process: with glibc malloc's default settings
("malloc_default"), then after `recsys.malloc.tune_malloc()` ("malloc_tuned", the serving
replicas' setting, reported as `batch_ms`).

    recsys bench recommend BUNDLE [--batches 1,8,32] [--reps 200]

Writes benchmarks/results/recommend-<bundle name>-cpu.json with provenance.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parent.parent


def _timed(fn: Any, reps: int) -> dict[str, float]:
    """Median and p99 milliseconds of `reps` calls after 5 warm-up calls."""
    import numpy as np

    for _ in range(5):
        fn()
    times = []
    for _ in range(reps):
        start = time.perf_counter()
        fn()
        times.append((time.perf_counter() - start) * 1e3)
    return {
        "p50_ms": round(float(np.median(times)), 3),
        "p99_ms": round(float(np.percentile(times, 99)), 3),
    }


def make_requests(
    rec: Any, users: list[str], picked: Any, mix: str, retriever: str, k: int
) -> list[Any]:
    """ "user": stored-history requests; "history": the same users' histories as item keys."""
    from recsys.recommend import RecRequest

    if mix == "user":
        return [RecRequest(user_key=users[u], k=k, retriever=retriever) for u in picked]
    cat = rec.catalog
    return [
        RecRequest(
            history=[
                str(cat.item_keys[i])
                for i in cat.history_items[cat.history_offsets[u] : cat.history_offsets[u + 1]]
            ],
            k=k,
            retriever=retriever,
        )
        for u in picked
    ]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="recsys bench recommend", description=__doc__)
    parser.add_argument("bundle", type=Path, help="bundle directory")
    parser.add_argument("--batches", default="1,8,32", help="comma-separated batch sizes")
    parser.add_argument("--k", type=int, default=10)
    parser.add_argument("--reps", type=int, default=200, help="timed calls per setting")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (replica: 1)")
    parser.add_argument(
        "--malloc",
        choices=("both", "malloc_default", "malloc_tuned"),
        default="both",
        help="glibc malloc settings to measure (both: default first, then tuned)",
    )
    parser.add_argument("--out", type=Path, help="result JSON (default benchmarks/results/...)")
    args = parser.parse_args(argv)

    import numpy as np
    import torch

    from recsys.atomic import atomic_write_text
    from recsys.malloc import tune_malloc
    from recsys.provenance import provenance
    from recsys.recommend import DEFAULT_RAILS_BUDGET, Recommender
    from recsys.retrieval.topk import select_topk

    torch.set_num_threads(args.threads)
    batches = [int(b) for b in args.batches.split(",")]
    rec = Recommender.load(args.bundle, device="cpu", query_cache_size=100_000)
    users = rec.user_keys()
    rng = np.random.default_rng(0)
    chosen = rng.choice(len(users), min(len(users), 1024), replace=False)
    # Default glibc malloc first (its dynamic thresholds cannot be restored once fixed),
    # then with `recsys.malloc.tune_malloc`, the setting of the serving replicas.
    modes = ["malloc_default", "malloc_tuned"] if args.malloc == "both" else [args.malloc]
    results: dict[str, dict[str, Any]] = {}
    for mode in modes:
        if mode == "malloc_tuned" and not tune_malloc():
            print("tune_malloc: not applied (not glibc)")
            continue
        results[mode] = {}
        for retriever in ("rails", "exact"):
            for mix in ("user", "history"):
                for b in batches:
                    requests = make_requests(rec, users, chosen[:b], mix, retriever, args.k)
                    rec.recommend(requests)  # primes the query cache of the "user" mix
                    timing = _timed(lambda r=requests: rec.recommend(r), args.reps)
                    results[mode][f"{retriever}/{mix}/b{b}"] = timing
                    print(f"{mode} {retriever:5s} {mix:7s} B={b:3d}: {timing}")

    topk: dict[str, Any] = {}
    n = rec.num_items + 1
    k = min(DEFAULT_RAILS_BUDGET, n)
    for b in batches:
        scores = torch.randn(b, n, generator=torch.Generator().manual_seed(b))
        row = {
            "select_topk": _timed(lambda s=scores: select_topk(s, k, sorted=False), args.reps),
            "torch_topk": _timed(lambda s=scores: s.topk(k, dim=1, sorted=False), args.reps),
        }
        topk[f"b{b}_n{n}_k{k}"] = row
        print(f"top-{k} of ({b}, {n}): {row}")

    payload = {
        "benchmark": "Recommender.recommend batch latency (in-process, no HTTP)",
        "bundle": str(args.bundle),
        "num_items": rec.num_items,
        "k": args.k,
        "rails_budget": DEFAULT_RAILS_BUDGET,
        "threads": args.threads,
        "reps": args.reps,
        "batch_ms": results.get("malloc_tuned", results.get("malloc_default")),
        "batch_ms_by_malloc": results,
        "topk_ms": topk,
        "load_average": list(os.getloadavg()),
        "provenance": provenance(),
    }
    out = args.out or REPO_ROOT / "benchmarks" / "results" / (
        f"recommend-{args.bundle.resolve().name}-cpu.json"
    )
    atomic_write_text(out, json.dumps(payload, indent=2) + "\n")
    print(f"-> {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
