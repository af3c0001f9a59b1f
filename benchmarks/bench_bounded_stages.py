"""Where bounded-exact MoL retrieval spends its time, stage by stage, against brute force.

`recsys bench bounded_stages [--bundle PATH] [--batch 32] [--k 100]` (issue 5). On one batch
of real user histories (seen items excluded; the same batch as `bench_retrieval.py` draws
for that batch size), times `BoundedExact.search` (`BoundedStats.stage_ms`: first stage +
threshold, bound pass, rescoring of the sparse queries' survivors, the dense queries (gate
bound or brute force); medians over --reps calls) for each bound dtype, records every
query's survivor count (the sample's estimate for queries predicted dense) and the gate
bound's survivors, and times brute force on the whole batch and on the dense queries
alone. Checks
that bounded-exact returned brute force's top-k (ties aside: equal score sets).

Writes benchmarks/results/bounded-stages-<catalog>-<device>.json. The default bundle is
the 1M-item synthetic catalog that `bench_retrieval.py` builds and caches; skips when it
is absent.
"""

from __future__ import annotations

import argparse
import json
import statistics
from pathlib import Path
from typing import Any

import torch

from benchmarks.bench_retrieval import query_batches, timed
from benchmarks.retrieval_catalogs import cached_bundle_path
from recsys.atomic import atomic_write_text
from recsys.bundle import load_bundle
from recsys.malloc import tune_malloc
from recsys.provenance import command_line, provenance
from recsys.retrieval.bounded import STAGES, BoundedConfig, BoundedExact
from recsys.retrieval.brute_force import BruteForce

REPO = Path(__file__).resolve().parent.parent
# The 1M-item catalog `recsys bench retrieval` builds with its defaults (100 steps, seed 0),
# under the key of the current code (retrieval_catalogs.cached_bundle_path).
DEFAULT_BUNDLE = cached_bundle_path(1_000_000, REPO / "runs" / "bench-retrieval", steps=100)


def same_topk(a: tuple[torch.Tensor, torch.Tensor], b: tuple[torch.Tensor, torch.Tensor]) -> bool:
    """Equal top-k scores row by row (float32 summation order aside), so ties may swap ids."""
    return bool(torch.allclose(a[0], b[0], rtol=1e-5, atol=1e-5))


def stage_record(retriever: BoundedExact, qb, k: int, reps: int, truth) -> dict[str, Any]:
    device = retriever.index.device
    results, totals, stages = None, [], {s: [] for s in STAGES}
    for _ in range(reps):
        results, total = timed(lambda: retriever.search(qb.qp, k, qb.exclude), device)
        totals.append(total)
        for s in STAGES:
            stages[s].append(retriever.stats.stage_ms[s])
    stats = retriever.stats
    counts = stats.counts
    n = retriever.index.num_items
    return {
        "total_ms": statistics.median(totals),
        "stage_ms": {s: statistics.median(v) for s, v in stages.items()},
        "exact": same_topk(results, truth),
        "survivors_sorted": sorted(counts),
        "survivor_fraction_mean": sum(counts) / len(counts) / n,
        "dense_queries": int(stats.extra["dense_queries"]),
        "predicted_dense": int(stats.extra.get("predicted_dense", 0)),
        "dense_above": int(retriever.config.dense_fraction * n),
        # survivors of the gate bound for each dense query (N: scored by brute force)
        "gate_survivors": stats.gate_counts,
    }


def catalog_parser(name: str, doc: str | None) -> argparse.ArgumentParser:
    """The options shared by the benchmarks that time one batch of a cached catalog bundle
    (this one and bench_blocks.py)."""
    p = argparse.ArgumentParser(prog=f"recsys bench {name}", description=doc)
    p.add_argument("--bundle", type=Path, default=DEFAULT_BUNDLE)
    p.add_argument("--catalog", default="1M", help="name in the output file")
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--k", type=int, default=100)
    p.add_argument("--reps", type=int, default=3)
    p.add_argument("--threads", type=int, default=1, help="as bench_retrieval.py")
    p.add_argument("--out-dir", type=Path, default=REPO / "benchmarks" / "results")
    return p


def ready(args: argparse.Namespace) -> bool:
    """False (and says why) when the bundle is missing; else tunes malloc and threads."""
    if not args.bundle.is_dir():
        print(f"skipping: no bundle at {args.bundle} (run `recsys bench retrieval` first)")
        return False
    tune_malloc()
    torch.set_num_threads(args.threads)
    return True


def write_record(args: argparse.Namespace, stem: str, device: str, payload: dict) -> None:
    """payload -> <out-dir>/<stem>-<catalog>-<device>.json, atomically."""
    out = args.out_dir / f"{stem}-{args.catalog}-{device}.json"
    args.out_dir.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out, json.dumps(payload, indent=2) + "\n")
    print(f"-> {out}")


def main(argv: list[str] | None = None) -> int:
    p = catalog_parser("bounded_stages", __doc__)
    p.add_argument("--index-dtype", choices=["float32", "bfloat16"], default="float32")
    args = p.parse_args(argv)
    if not ready(args):
        return 0
    bundle = load_bundle(args.bundle, index_dtype=torch.float32)
    index = bundle.index.to(dtype=getattr(torch, args.index_dtype))
    sim = bundle.model.similarity
    qb = query_batches(bundle, args.batch, 1, seed=args.batch)[0]
    brute = BruteForce(sim, index)
    brute.search(qb.qp.slice(0, 1), args.k, qb.exclude[:1])  # warm-up
    device = index.device
    truth, brute_ms = timed(lambda: brute.search(qb.qp, args.k, qb.exclude), device)
    runs = {}
    for bound_dtype in (torch.float32, torch.bfloat16):
        name = str(bound_dtype).removeprefix("torch.")
        config = BoundedConfig(bound_dtype=bound_dtype, time_stages=True)
        retriever = BoundedExact(sim, index, config=config)
        retriever.search(qb.qp, args.k, qb.exclude)  # warm-up
        runs[name] = record = stage_record(retriever, qb, args.k, args.reps, truth)
        dense = [i for i, c in enumerate(retriever.stats.counts) if c > record["dense_above"]]
        if dense:
            rows = torch.tensor(dense)
            _, ms = timed(
                lambda rows=rows: brute.search(qb.qp.index_select(rows), args.k, qb.exclude[rows]),
                device,
            )
            record["brute_force_dense_alone_ms"] = ms
        record["speedup_vs_brute_force"] = brute_ms / record["total_ms"]
        print(
            f"bound {name}: {record['total_ms']:.0f} ms "
            f"({record['speedup_vs_brute_force']:.2f}x brute force {brute_ms:.0f} ms), "
            + ", ".join(f"{s} {v:.0f}" for s, v in record["stage_ms"].items())
            + f"; dense queries {record['dense_queries']}, exact {record['exact']}",
            flush=True,
        )
    kind = "cuda" if device.type == "cuda" else "cpu"
    payload = {
        "provenance": provenance(command_line("recsys bench bounded_stages", argv)),
        "bundle": str(args.bundle),
        "catalog_size": index.num_items,
        "device": kind,
        "threads": args.threads,
        "index_dtype": args.index_dtype,
        "batch": args.batch,
        "k": args.k,
        "reps": args.reps,
        "brute_force_ms": brute_ms,
        "stages": list(STAGES),
        "runs": runs,
    }
    write_record(args, "bounded-stages", kind, payload)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
