"""Retrieval benchmark: latency and recall of every MoL top-k method against brute force.

`recsys bench retrieval [--quick] [--bundle NAME=PATH ...]` (docs/SPEC.md section 3, issue 5).
For each catalog (synthetic 100k / 1M items from briefly trained MoL models, plus trained
bundles given with --bundle), each index dtype, batch size and k, it times every method on
batches of real user histories (seen items excluded, as the service does) and measures,
against brute-force MoL on the same index and the same queries:
- p50 / p99 latency of `search` (ms; query encoding is not timed),
- recall@k and the top-1 hit rate (`recsys.retrieval.quality`),
and in the same run the practical floor: a plain `topk(q @ X.T, k)` over the same N x D
item embeddings in the index dtype (`dot_floor`, no gate, no mask).

Writes benchmarks/results/retrieval-<catalog>-<device>.json: provenance, the catalog's
training record, `records`, a list of {"catalog_size", "device", "batch", "k",
"index_dtype", "methods": {name: {"p50_ms", "p99_ms", "recall", "top1_hit", ...}}}, and
`bf16_index_vs_float32` (recall of exact retrieval on the bf16 index against the float32
one); plus retrieval-<catalog>-<device>.png, recall against p50 latency per method.
With `--seeds 0,1,2` each synthetic catalog is built once per seed (independently trained
models) and written to retrieval-<catalog>-seeds-<device>.json: `runs` (each seed's
training record and records) and `over_seeds` (per dtype, batch, k and method: the
speed-up over brute force and the recall on each seed's model, median, min and max).

Timing: each method is warmed up once, run once per ground-truth batch (recall), then
timed in interleaved rounds (one call of every method per round) so that load from other
processes hits all methods alike; brute force takes part at the largest k. One torch
thread by default (see --threads).
"""

from __future__ import annotations

import argparse
import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from benchmarks.retrieval_catalogs import exclusion_rows, history_batches, synthetic_bundle
from recsys.atomic import atomic_write_bytes, atomic_write_text
from recsys.bundle import Bundle, load_bundle
from recsys.malloc import tune_malloc
from recsys.provenance import command_line, provenance
from recsys.retrieval.bounded import BoundedConfig, BoundedExact
from recsys.retrieval.brute_force import BruteForce
from recsys.retrieval.quality import recall_at_k, top1_hit_rate
from recsys.retrieval.rails import Combined, TopKAvg, TopKPerEmbd
from recsys.retrieval.topk import select_topk

REPO = Path(__file__).resolve().parent.parent
SIZES = {"20k": 20_000, "100k": 100_000, "1M": 1_000_000}
DEFAULT_METHODS = (
    "topk_avg:512",
    "topk_avg:1024",
    "topk_avg:2048",
    "topk_avg:1024:faiss",
    "topk_per_embd:128",
    "combined:32:1024",
    "bounded_exact:1024",
    "bounded_exact:1024:fp32",
)
# A method whose warm-up call takes longer than this is timed on its quality runs only.
SLOW_CALL_S = 2.0


@dataclass
class QueryBatch:
    users: np.ndarray  # (B,)
    qp: Any  # QueryParts on the device
    q: torch.Tensor  # (B, D) query embeddings (for the dot floor)
    exclude: torch.Tensor  # (B, N+1) bool


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="recsys bench retrieval", description=__doc__.split("\n")[0])
    p.add_argument("--catalogs", default="100k,1M", help=f"synthetic sizes from {sorted(SIZES)}")
    p.add_argument(
        "--bundle",
        action="append",
        default=[],
        metavar="NAME=PATH",
        help="a trained bundle to benchmark too (e.g. ml-1m=runs/ml1m/bundle)",
    )
    p.add_argument("--batches", default="1,32")
    p.add_argument("--ks", default="10,100")
    p.add_argument(
        "--methods",
        default=",".join(DEFAULT_METHODS),
        help="name:budget[:option] specs (topk_avg, topk_per_embd, combined, bounded_exact); "
        "options: faiss, bf16 / fp32 and always (bounded_exact), pN (topk_avg probe of N "
        "items)",
    )
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument(
        "--index-dtypes",
        default=None,
        help="comma list of float32,bfloat16 (default: bfloat16 on CUDA, both on CPU)",
    )
    p.add_argument(
        "--threads",
        type=int,
        default=1,
        help="torch/FAISS threads (default 1: with other processes on the 2 cores, two "
        "OpenMP threads stall on each other and small ops get 10-80x slower, measured)",
    )
    p.add_argument(
        "--truth-queries",
        type=int,
        default=32,
        help="queries with a brute-force ground truth per batch size (>= 1 batch)",
    )
    p.add_argument(
        "--time-budget",
        type=float,
        default=2.0,
        help="seconds of timed calls per method (at least 3 calls, interleaved)",
    )
    p.add_argument("--train-steps", type=int, default=100)
    p.add_argument(
        "--seeds",
        default="0",
        help="comma list: one independently trained model per seed for each synthetic "
        "catalog; with several, one file holds every seed's records and the spread of each "
        "method's speed-up and recall over the seeds",
    )
    p.add_argument("--cache-dir", type=Path, default=REPO / "runs" / "bench-retrieval")
    p.add_argument("--out-dir", type=Path, default=REPO / "benchmarks" / "results")
    p.add_argument(
        "--quick",
        action="store_true",
        help="smoke run: a 20k catalog trained 20 steps, 8 ground-truth queries",
    )
    p.add_argument(
        "--plot-only",
        type=Path,
        default=None,
        metavar="JSON",
        help="only redraw the PNG of an existing results JSON (beside it)",
    )
    args = p.parse_args(argv)
    if args.quick:  # a smoke run: small, and its files stay out of benchmarks/results
        args.catalogs, args.batches, args.train_steps, args.truth_queries = "20k", "1,32", 20, 8
        args.time_budget = 0.5
        if args.out_dir == REPO / "benchmarks" / "results":
            args.out_dir = args.cache_dir / "results"
    return args


def build_method(spec: str, bundle: Bundle, index):
    """A method spec "name:budget[:option]" -> retriever over `index`."""
    parts = spec.split(":")
    name, nums = parts[0], [int(x) for x in parts[1:] if x.isdigit()]
    opts = [x for x in parts[1:] if not x.isdigit()]
    sim = bundle.model.similarity
    backend = "faiss" if "faiss" in opts else "torch"
    if name == "topk_avg":
        # "pN": TopKAvg with a probe of N items (recsys.retrieval.rails).
        probe = next((int(x[1:]) for x in opts if x[:1] == "p" and x[1:].isdigit()), 0)
        return TopKAvg(sim, index, nums[0], backend, probe=probe)
    if name == "topk_per_embd":
        return TopKPerEmbd(sim, index, nums[0], backend)
    if name == "combined":
        return Combined(sim, index, nums[0], nums[1], backend)
    if name == "bounded_exact":
        # "bf16" / "fp32": that bound-pass dtype; none: the default (bf16 where native).
        dtypes = {"bf16": torch.bfloat16, "fp32": torch.float32}
        bound_dtype = next((dtypes[o] for o in opts if o in dtypes), None)
        # "always": take the bound path even on a catalog small enough for brute force.
        below = 0 if "always" in opts else BoundedConfig.brute_force_below
        config = BoundedConfig(
            first_stage_k=nums[0], bound_dtype=bound_dtype, brute_force_below=below
        )
        return BoundedExact(sim, index, config=config)
    raise ValueError(f"unknown method spec {spec!r}")


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed(fn, device: torch.device) -> tuple[Any, float]:
    sync(device)
    start = time.perf_counter()
    out = fn()
    sync(device)
    return out, (time.perf_counter() - start) * 1000.0


def query_batches(bundle: Bundle, batch: int, count: int, seed: int) -> list[QueryBatch]:
    out = []
    dev = bundle.device
    for users, rows in history_batches(
        bundle.history_items, bundle.history_offsets, batch, count, seed
    ):
        items = torch.from_numpy(rows).to(dev)
        user_ids = torch.from_numpy(users).to(dev)
        with torch.no_grad():
            q = bundle.model.query(items, None)
            qp = bundle.model.similarity.query_parts(q, user_ids)
        mask = exclusion_rows(bundle.history_items, bundle.history_offsets, users, bundle.num_items)
        out.append(QueryBatch(users, qp, q, torch.from_numpy(mask).to(dev)))
    return out


def run_truth(brute: BruteForce, qbs: list[QueryBatch], k: int, device) -> tuple[list, list]:
    """Brute force on every batch: (results, times in ms); the first call is also timed
    (brute force has nothing to warm up that matters at its scale)."""
    results, times = [], []
    for qb in qbs:
        out, ms = timed(lambda qb=qb: brute.search(qb.qp, k, qb.exclude), device)
        results.append(out)
        times.append(ms)
    return results, times


def round_robin(
    methods: dict[str, Any], qbs: list[QueryBatch], budget_s: float, device, times
) -> dict[str, list[float]]:
    """Time every method on the same batches, interleaved (one call of each per round), so
    that load from other processes hits all methods alike. Each method keeps running rounds
    until it has used `budget_s` seconds (at least 3 calls, at most 50); `times` holds the
    calls already made (the quality runs) and is extended in place."""
    spent = {name: sum(times[name]) for name in methods}
    for r in range(50):
        active = [n for n in methods if len(times[n]) < 3 or spent[n] < budget_s * 1000.0]
        if not active:
            break
        qb = qbs[r % len(qbs)]
        for name in active:
            _, ms = timed(lambda fn=methods[name], qb=qb: fn(qb), device)
            times[name].append(ms)
            spent[name] += ms
    return times


def summary(times: list[float]) -> dict[str, float]:
    return {
        "p50_ms": float(np.percentile(times, 50)),
        "p99_ms": float(np.percentile(times, 99)),
        "reps": len(times),
    }


def quality(results: list, truth: list, k: int) -> dict[str, float]:
    exact = [t[1][:, :k] for t in truth]
    pairs = list(zip(results, exact, strict=True))
    return {
        "recall": float(np.mean([recall_at_k(r[1], e) for r, e in pairs])),
        "top1_hit": float(np.mean([top1_hit_rate(r[1], e) for r, e in pairs])),
    }


def first_calls(call, qbs: list[QueryBatch], device) -> tuple[list, list[float], list, bool]:
    """Warm-up, then one timed call per truth batch -> (outputs, ms, stats, fast). A method
    whose first call takes over SLOW_CALL_S counts that call as its first timed run (no
    separate warm-up) and is marked slow."""
    first, first_ms = timed(lambda: call(qbs[0]), device)
    fast = first_ms < SLOW_CALL_S * 1000.0
    outs, times, stats = [], [], []
    for i, qb in enumerate(qbs):
        if i == 0 and not fast:
            out, ms = first, first_ms
        else:
            out, ms = timed(lambda qb=qb: call(qb), device)
        outs.append(out)
        times.append(ms)
        stats.append(getattr(getattr(call, "retriever", None), "stats", None))
    return outs, times, stats, fast


class Call:
    """`search` of one retriever at one k, callable on a QueryBatch."""

    def __init__(self, retriever, k: int) -> None:
        self.retriever, self.k = retriever, k

    def __call__(self, qb: QueryBatch):
        return self.retriever.search(qb.qp, self.k, qb.exclude)


def bench_catalog(
    bundle: Bundle, dtype: torch.dtype, args, log
) -> tuple[list[dict[str, Any]], dict[int, list]]:
    """Records for every (batch, k) on an index in `dtype`, and the brute-force answers per
    batch size (to compare dtypes)."""
    device = bundle.device
    index = bundle.index.to(dtype=dtype)
    brute = BruteForce(bundle.model.similarity, index)
    emb = index.item_emb
    records, truths = [], {}
    ks = sorted((int(x) for x in args.ks.split(",")), reverse=True)
    specs = [
        spec
        for spec in args.methods.split(",")
        # on a bf16 index the bound pass is bf16 anyway: ":bf16" is the plain spec, and a
        # float32 pass over bf16 values says nothing new
        if not (spec.endswith((":bf16", ":fp32")) and dtype == torch.bfloat16)
    ]
    for batch in (int(b) for b in args.batches.split(",")):
        count = max(1, args.truth_queries // batch)
        qbs = query_batches(bundle, batch, count, seed=batch)
        truth, brute_ms = run_truth(brute, qbs, ks[0], device)
        truths[batch] = truth
        log(f"  {dtype} B={batch}: brute force {np.median(brute_ms):.0f} ms x {count}")
        for k in ks:
            calls: dict[str, Any] = {
                "dot_floor": lambda qb, k=k: select_topk(qb.q.to(emb.dtype) @ emb.T, k)
            }
            for spec in specs:
                calls[spec] = Call(build_method(spec, bundle, index), k)
            methods: dict[str, Any] = {}
            times: dict[str, list[float]] = {}
            for name, call in calls.items():
                outs, times[name], stats, _ = first_calls(call, qbs, device)
                if name == "dot_floor":
                    methods[name] = {"recall": None, "top1_hit": None}
                    continue
                methods[name] = quality(outs, truth, k)
                if stats[0] is not None:  # bounded-exact: how much the bound pruned
                    methods[name]["survivors_per_query"] = float(
                        np.mean([st.survivors for st in stats])
                    )
                    methods[name]["dense_queries"] = float(
                        np.sum([st.extra.get("dense_queries", 0.0) for st in stats])
                    )
            if k == ks[0]:  # brute force is timed once, at the largest k, with the others
                calls["brute_force"] = Call(brute, k)
                times["brute_force"] = brute_ms
            round_robin(calls, qbs, args.time_budget, device, times)
            methods["brute_force"] = {
                "recall": 1.0,
                "top1_hit": 1.0,
                "note": f"timed at k={ks[0]}, interleaved with the k={ks[0]} methods",
                **summary(brute_ms),
            }
            for name, ts in times.items():
                methods[name].update(summary(ts))
            brute_p50 = methods["brute_force"]["p50_ms"]
            floor_p50 = methods["dot_floor"]["p50_ms"]
            for entry in methods.values():
                entry["speedup_vs_brute_force"] = float(brute_p50 / entry["p50_ms"])
                entry["x_dot_floor"] = float(entry["p50_ms"] / floor_p50)
            for name, m in methods.items():
                log(
                    f"    k={k} {name}: p50 {m['p50_ms']:.1f} ms, recall {m['recall']}, "
                    f"{m['speedup_vs_brute_force']:.1f}x brute, {m['x_dot_floor']:.2f}x floor"
                )
            records.append(
                {
                    "catalog_size": bundle.num_items,
                    "device": device_name(device),
                    "batch": batch,
                    "k": k,
                    "index_dtype": str(dtype).removeprefix("torch."),
                    "methods": methods,
                }
            )
    return records, truths


def rounding_cost(truths: dict[torch.dtype, dict[int, list]], ks: list[int]) -> list[dict]:
    """How far exact retrieval on a bf16 index is from exact retrieval on the float32 one:
    recall@k of the bf16 brute-force lists against the float32 ones (same queries)."""
    if torch.float32 not in truths or torch.bfloat16 not in truths:
        return []
    out = []
    for batch, full in truths[torch.float32].items():
        half = truths[torch.bfloat16][batch]
        for k in ks:
            pairs = [(h[1][:, :k], f[1][:, :k]) for h, f in zip(half, full, strict=True)]
            out.append(
                {
                    "batch": batch,
                    "k": k,
                    "recall_bf16_vs_float32": float(np.mean([recall_at_k(h, f) for h, f in pairs])),
                    "top1_hit": float(np.mean([top1_hit_rate(h, f) for h, f in pairs])),
                }
            )
    return out


def device_name(device: torch.device) -> str:
    return "cpu" if device.type == "cpu" else torch.cuda.get_device_name(device)


def plot(records: list[dict[str, Any]], path: Path, title: str) -> None:
    """Recall against p50 latency, one panel per (batch, k); colour = method, marker = index
    dtype; dashed / dotted verticals = the dot floor / brute force of each dtype."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import matplotlib.ticker

    batches = sorted({r["batch"] for r in records})
    ks = sorted({r["k"] for r in records})
    names = sorted({n for r in records for n in r["methods"]} - {"dot_floor", "brute_force"})
    colours = {n: plt.cm.tab10(i % 10) for i, n in enumerate(names)}
    markers = {"float32": "o", "bfloat16": "s"}
    fig, axes = plt.subplots(
        len(batches), len(ks), figsize=(5.5 * len(ks), 4 * len(batches)), squeeze=False
    )
    for row, batch in enumerate(batches):
        for col, k in enumerate(ks):
            ax = axes[row][col]
            lowest = 1.0
            for rec in (r for r in records if (r["batch"], r["k"]) == (batch, k)):
                marker = markers.get(rec["index_dtype"], "^")
                m = rec["methods"]
                ax.axvline(m["dot_floor"]["p50_ms"], color="grey", ls="--", lw=1)
                ax.axvline(m["brute_force"]["p50_ms"], color="black", ls=":", lw=1)
                for name in names:
                    if name in m:
                        lowest = min(lowest, m[name]["recall"])
                        ax.scatter(
                            m[name]["p50_ms"],
                            m[name]["recall"],
                            color=colours[name],
                            marker=marker,
                            s=36,
                            edgecolor="black",
                            linewidth=0.4,
                        )
            ax.axhline(0.99, color="red", ls="-.", lw=0.8)
            ax.set_xscale("log")
            ax.xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
            ax.set_ylim(max(0.0, lowest - 0.02), 1.005)
            ax.set_xlabel("p50 latency per batch (ms, log)")
            ax.set_ylabel(f"recall@{k} vs brute force")
            ax.set_title(f"batch {batch}, k={k}")
            ax.grid(alpha=0.3)
    handles = [plt.Line2D([], [], color=colours[n], marker="o", ls="", label=n) for n in names]
    handles += [
        plt.Line2D([], [], color="black", marker=mk, ls="", mfc="white", label=dt)
        for dt, mk in markers.items()
    ]
    handles += [
        plt.Line2D([], [], color="grey", ls="--", label="dot_floor (plain dot top-k)"),
        plt.Line2D([], [], color="black", ls=":", label="brute_force MoL"),
        plt.Line2D([], [], color="red", ls="-.", label="recall 0.99"),
    ]
    fig.legend(handles=handles, loc="center right", fontsize=8)
    fig.suptitle(title)
    fig.tight_layout(rect=(0, 0, 0.8, 0.96))
    tmp = path.with_suffix(".tmp.png")
    fig.savefig(tmp, dpi=100)
    plt.close(fig)
    atomic_write_bytes(path, tmp.read_bytes())
    tmp.unlink()


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.plot_only is not None:
        payload = json.loads(args.plot_only.read_text())
        title = f"{payload['catalog']} ({payload['catalog_size']} items, {payload['device']})"
        plot(payload["records"], args.plot_only.with_suffix(".png"), title)
        return 0
    # The allocator setting of the `recsys` commands and the serving replicas: without it
    # repeated MiB-sized allocations page-fault on every call and the timings depend on the
    # order of the calls (recsys.malloc).
    malloc_tuned = tune_malloc()
    torch.set_num_threads(args.threads)
    import faiss

    faiss.omp_set_num_threads(args.threads)
    device = torch.device(args.device)
    dtypes = (
        [getattr(torch, d) for d in args.index_dtypes.split(",")]
        if args.index_dtypes
        else ([torch.bfloat16] if device.type == "cuda" else [torch.float32, torch.bfloat16])
    )

    def log(msg: str) -> None:
        print(msg, flush=True)

    seeds = [int(x) for x in args.seeds.split(",") if x]
    if not seeds:
        raise SystemExit("--seeds: expected a comma list of integers, got an empty list")
    # (name, [(seed, bundle path, training record)]); a trained bundle has no seed.
    catalogs: list[tuple[str, list[tuple[int | None, Path, dict[str, Any] | None]]]] = []
    for name in (c for c in args.catalogs.split(",") if c):
        models = []
        for seed in seeds:
            path, record = synthetic_bundle(
                SIZES[name], args.cache_dir, args.train_steps, seed=seed, log=log
            )
            models.append((seed, path, record))
        catalogs.append((name, models))
    for spec in args.bundle:
        name, _, path = spec.partition("=")
        if Path(path).is_dir():
            catalogs.append((name, [(None, Path(path), None)]))
        else:
            log(f"skipping bundle {name}: {path} does not exist")
    args.out_dir.mkdir(parents=True, exist_ok=True)
    dev_name = "cuda" if device.type == "cuda" else "cpu"
    for name, models in catalogs:
        runs = []
        for seed, path, training in models:
            log(f"catalog {name} ({path})" + ("" if seed is None else f", seed {seed}"))
            bundle = load_bundle(path, device=device, index_dtype=torch.float32)
            records, truths = [], {}
            for dtype in dtypes:
                recs, truths[dtype] = bench_catalog(bundle, dtype, args, log)
                records += recs
            runs.append(
                {
                    "seed": seed,
                    "training": training
                    if training is not None
                    else bundle.metadata.get("metrics"),
                    "records": records,
                    "bf16_index_vs_float32": rounding_cost(
                        truths, [int(k) for k in args.ks.split(",")]
                    ),
                }
            )
        payload = {
            "provenance": provenance(command_line("recsys bench retrieval", argv)),
            "catalog": name,
            "catalog_size": bundle.num_items,
            "device": runs[0]["records"][0]["device"],
            "threads": args.threads,
            "malloc_tuned": malloc_tuned,
            "model": bundle.config.to_dict(),
            "queries": "recent histories of random users (seen items excluded)",
        }
        if len(runs) == 1:
            payload.update({k: v for k, v in runs[0].items() if k != "seed"})
            stem = f"retrieval-{name}-{dev_name}"
        else:
            payload.update({"seeds": seeds, "over_seeds": over_seeds(runs), "runs": runs})
            stem = f"retrieval-{name}-seeds-{dev_name}"
        stem += "-quick" if args.quick else ""
        atomic_write_text(args.out_dir / f"{stem}.json", json.dumps(payload, indent=2) + "\n")
        first = runs[0]["records"]
        seed_note = "" if len(runs) == 1 else f", model of seed {runs[0]['seed']}"
        plot(
            first,
            args.out_dir / f"{stem}.png",
            f"{name} ({payload['catalog_size']} items, {first[0]['device']}{seed_note})",
        )
        log(f"wrote {args.out_dir / (stem + '.json')}")
    return 0


def over_seeds(runs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One row per (index dtype, batch, k, method): its speed-up over brute force and its
    recall on each seed's model, with their median, min and max over the seeds."""

    def spread(values: list[float | None]) -> dict[str, Any]:
        known = [v for v in values if v is not None]
        if not known:
            return {"per_seed": values}
        return {
            "per_seed": values,
            "median": float(np.median(known)),
            "min": float(min(known)),
            "max": float(max(known)),
        }

    rows = []
    for i, first in enumerate(runs[0]["records"]):
        same = [run["records"][i] for run in runs]
        where = ("index_dtype", "batch", "k")
        if any(tuple(r[f] for f in where) != tuple(first[f] for f in where) for r in same):
            raise ValueError("the seeds' runs measured different settings")
        for method in first["methods"]:
            entries = [r["methods"][method] for r in same]
            rows.append(
                {
                    **{f: first[f] for f in where},
                    "method": method,
                    "speedup_vs_brute_force": spread(
                        [e["speedup_vs_brute_force"] for e in entries]
                    ),
                    "recall": spread([e["recall"] for e in entries]),
                }
            )
    return rows


if __name__ == "__main__":
    raise SystemExit(main())
