"""Block sizes of exact MoL scoring on a large catalog: brute force and survivor rescoring.

`recsys bench blocks [--bundle PATH] [--batch 32] [--k 100]` (issue 5). On the batch that
`bench_retrieval.py` draws (seen items excluded), times:
- brute force over the whole catalog with `BruteForceConfig.pair_chunk` in PAIR_CHUNKS
  (the MoL gate's (b, pair_chunk / b, 128) hidden layer: 1 MiB at 2,048 pairs, 16 MiB at
  32,768), rounds interleaved, medians;
- `score_ragged` on the survivors of the bf16 bound pass of the queries that it leaves
  sparse, with max_pairs in RAGGED_PAIRS and with or without scoring the items on most
  lists once for every query (`shared_above` SHARED_ABOVE vs off), medians over --reps,
  plus how many distinct items those pairs hold.
Each variant's results are checked against the first one's (equal top-k scores).

Writes benchmarks/results/blocks-<catalog>-<device>.json. The default bundle is the
1M-item synthetic catalog that `bench_retrieval.py` builds and caches; skips when absent.
"""

from __future__ import annotations

import json
import statistics
from typing import Any

import torch

from benchmarks.bench_bounded_stages import catalog_parser, ready, same_topk, write_record
from benchmarks.bench_retrieval import query_batches, timed
from recsys.bundle import load_bundle
from recsys.provenance import command_line, provenance
from recsys.retrieval.bounded import (
    SHARED_ABOVE,
    BoundedConfig,
    BoundedExact,
    bound_survivors,
    score_ragged,
)
from recsys.retrieval.brute_force import BruteForce, BruteForceConfig
from recsys.retrieval.index import rescore_topk

PAIR_CHUNKS = (2048, 4096, 8192, 32768)
RAGGED_PAIRS = (4096, 16384)


def brute_force_chunks(sim, index, qb, k: int, chunks, rounds: int) -> dict[str, Any]:
    """Brute force at each pair_chunk, `rounds` interleaved rounds -> {chunk: record}."""
    times: dict[int, list[float]] = {c: [] for c in chunks}
    first = None
    exact: dict[int, bool] = {}
    for _ in range(rounds):
        for c in chunks:
            brute = BruteForce(sim, index, BruteForceConfig(pair_chunk=c))
            out, ms = timed(lambda brute=brute: brute.search(qb.qp, k, qb.exclude), index.device)
            times[c].append(ms)
            first = out if first is None else first
            exact[c] = exact.get(c, True) and same_topk(out, first)
    return {
        str(c): {"p50_ms": statistics.median(v), "times_ms": v, "same_topk": exact[c]}
        for c, v in times.items()
    }


def ragged_variants(
    sim, index, qb, k: int, reps: int, dense_fraction: float = BoundedConfig.dense_fraction
) -> dict[str, Any]:
    """score_ragged on the sparse queries' survivors of a bf16 bound pass, per variant."""
    config = BoundedConfig(bound_dtype=torch.bfloat16, dense_fraction=dense_fraction)
    retriever = BoundedExact(sim, index, config=config)
    cand = retriever.first_stage.candidates(qb.qp, k, qb.exclude)
    scores, _ = rescore_topk(sim, qb.qp, index, cand, k, qb.exclude)
    threshold = scores[:, k - 1]
    f = qb.qp.f.float()
    share = retriever.sample_share(f, threshold)
    sparse = (share <= retriever.config.dense_fraction).nonzero().flatten()
    dense_above = int(retriever.config.dense_fraction * index.num_items)
    rows, ids, counts = bound_survivors(
        f[sparse],
        retriever.bound_items,
        sim.tau,
        threshold[sparse],
        qb.exclude[sparse],
        dense_above=dense_above,
    )
    queries = qb.qp.index_select(sparse)
    variants: dict[str, Any] = {}
    first = None
    for pairs in RAGGED_PAIRS:
        for shared in (SHARED_ABOVE, 2.0):
            runs = []
            for _ in range(reps):
                out, ms = timed(
                    lambda pairs=pairs, shared=shared: score_ragged(
                        sim, queries, index, rows, ids, k, pairs, shared
                    ),
                    index.device,
                )
                runs.append(ms)
            first = out if first is None else first
            name = f"pairs={pairs},shared_above={'off' if shared > 1 else shared}"
            variants[name] = {"p50_ms": statistics.median(runs), "same_topk": same_topk(out, first)}
    return {
        "queries": len(sparse),
        "pairs": len(ids),
        "distinct_items": int(torch.unique(ids).numel()),
        "survivors_of_listed_queries": int(counts[counts <= dense_above].sum()),
        "variants": variants,
    }


def main(argv: list[str] | None = None) -> int:
    p = catalog_parser("blocks", __doc__)
    p.add_argument("--rounds", type=int, default=2, help="brute-force rounds per chunk")
    args = p.parse_args(argv)
    if not ready(args):
        return 0
    bundle = load_bundle(args.bundle, index_dtype=torch.float32)
    index, sim = bundle.index, bundle.model.similarity
    qb = query_batches(bundle, args.batch, 1, seed=args.batch)[0]
    ragged = ragged_variants(sim, index, qb, args.k, args.reps)
    print(json.dumps(ragged, indent=1), flush=True)
    brute = brute_force_chunks(sim, index, qb, args.k, PAIR_CHUNKS, args.rounds)
    print(json.dumps(brute, indent=1), flush=True)
    kind = "cuda" if index.device.type == "cuda" else "cpu"
    payload = {
        "provenance": provenance(command_line("recsys bench blocks", argv)),
        "bundle": str(args.bundle),
        "catalog_size": index.num_items,
        "device": kind,
        "threads": args.threads,
        "batch": args.batch,
        "k": args.k,
        "brute_force_by_pair_chunk": brute,
        "survivor_rescoring": ragged,
    }
    write_record(args, "blocks", kind, payload)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
