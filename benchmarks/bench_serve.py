"""Load benchmark of the HTTP endpoint, against a no-op deployment on the same stack.

`recsys bench serve BUNDLE` starts the embedded Ray (127.0.0.1) once per HTTP ingress
("proxy": Serve's Python proxy; "haproxy": Serve's HAProxy ingress), deploys the app, and
runs closed-loop clients at concurrency 1, 8, 32 and 64 for a fixed time against the real
HTTP endpoint, `POST /v1/recommend` with k = 10 and the chosen retriever. Two request mixes:
- "user": `{"user_id": <one of 1,000 random users>}`, answered from the stored history. The
  replica's per-user query cache is primed first (one request per user), so this is the
  steady state for returning users: retrieval, filters and HTTP, no encoder call.
- "history": `{"history": <a random user's stored history as item keys>}`: the encoder
  runs for every request.
It reports requests/s, p50/p95/p99 latency and errors (non-200 answers, broken connections,
time-outs). In the same run it measures `NoopService` (same ingress, FastAPI validation,
batching and response path, no model) for the overhead ratio, and with `--layouts
single,composed,threaded` the other deployment layouts. Then it times the batch job
(`recsys recommend`, Ray Data, k = 100) for all users of the bundle, and measures the
recall@k of "rails" against "exact" on the bundle (meaningful for trained weights only).

With `--repeat N` every ingress is measured N times (runs alternate between ingresses) and
the summary reports the median of each figure, with the runs beside it.

Writes benchmarks/results/serve-<bundle name>.json with provenance and the load average
(other processes on the machine change the figures).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import sys
import tempfile
from pathlib import Path
from typing import Any

from recsys.atomic import atomic_write_text
from recsys.provenance import command_line, provenance
from recsys.recommend import DEFAULT_RAILS_BUDGET
from serving.loadgen import closed_loop, encode_post, send_each

REPO_ROOT = Path(__file__).resolve().parent.parent

RESULTS_DIR = REPO_ROOT / "benchmarks" / "results"
HOST = "127.0.0.1"
POOL_USERS = 1000
TARGETS = {"rps_c32": 150.0, "p99_ms_c32": 150.0, "overhead_p50_c8": 0.30, "batch_s": 60.0}


def request_pools(bundle: Path, args: argparse.Namespace, port: int) -> dict[str, list[bytes]]:
    """Pre-encoded requests of each mix for POOL_USERS random users of the bundle."""
    import polars as pl

    users = pl.read_parquet(bundle / "users.parquet")
    items = pl.read_parquet(bundle / "items.parquet", columns=["item_id", "item_key"])
    key_of = dict(zip(items["item_id"].to_list(), items["item_key"].to_list(), strict=True))
    histories = pl.read_parquet(bundle / "histories.parquet", columns=["user_id", "item_ids"])
    rng = random.Random(0)
    chosen = rng.sample(range(users.height), min(POOL_USERS, users.height))
    common = {"k": args.k, "retriever": args.retriever}
    user_bodies = [{"user_id": users["user_key"][u], **common} for u in chosen]
    history_bodies = [
        {"history": [key_of[i] for i in histories["item_ids"][u].to_list()] or ["?"], **common}
        for u in chosen
    ]
    return {
        mix: [encode_post(HOST, port, "/v1/recommend", body) for body in bodies]
        for mix, bodies in (("user", user_bodies), ("history", history_bodies))
    }


def run_levels(name: str, mix: str, pool: list[bytes], args: argparse.Namespace, port: int):
    levels = []
    for c in args.concurrency:
        stats = asyncio.run(closed_loop(HOST, port, pool, c, args.warmup, args.duration))
        stats |= {"stack": name, "mix": mix}
        print(json.dumps(stats), flush=True)
        levels.append(stats)
    return levels


def measure_ingress(ingress: str, bundle: Path, args: argparse.Namespace) -> dict[str, Any]:
    """Every stack and mix on a fresh embedded Ray with the given ingress."""
    import httpx
    from ray import serve

    from serving.app import AppArgs
    from serving.deploy import APP_NAME, deploy
    from serving.local_ray import _free_port, local_ray

    port = _free_port()
    pools = request_pools(bundle, args, port)
    common = {
        "bundle_path": str(bundle),
        "default_retriever": args.retriever,
        "num_cpus": args.replica_cpus,
        "max_batch_size": args.max_batch_size,
        "rails_budget": args.rails_budget,
    }
    results: dict[str, Any] = {"levels": [], "model_info": {}}
    with local_ray(log_to_driver=False, ingress=ingress):  # type: ignore[arg-type]
        stacks = [("noop", AppArgs(noop=True, **common), ["user"])]
        stacks += [(lay, layout_args(lay, common), args.mixes) for lay in args.layouts]
        for name, app_args, mixes in stacks:
            deploy(app_args, HOST, port)
            for mix in mixes:
                if name != "noop" and mix == "user":  # prime the per-user query cache
                    asyncio.run(send_each(HOST, port, pools["user"], 16))
                results["levels"] += run_levels(name, mix, pools[mix], args, port)
            info = httpx.get(f"http://{HOST}:{port}/v1/model", timeout=30).json()
            results["model_info"][name] = info
            serve.delete(APP_NAME)
    return results


def layout_args(layout: str, common: dict[str, Any]) -> Any:
    """AppArgs of a benchmark layout: "single", "composed", or "threaded" (single, with each
    batch run in a worker thread instead of on the replica's event loop)."""
    from serving.app import AppArgs

    if layout == "threaded":
        return AppArgs(layout="single", model_thread=True, **common)
    return AppArgs(layout=layout, **common)


def rails_recall(bundle: Path, args: argparse.Namespace, users: int = 512) -> dict[str, Any]:
    """Recall@k of "rails" against "exact" for the first users of the bundle (in-process)."""
    from recsys.recommend import Recommender, RecRequest

    rec = Recommender.load(bundle, rails_budget=args.rails_budget)
    keys = rec.user_keys()[:users]
    answers = {}
    for name in ("exact", "rails"):
        requests = [RecRequest(user_key=u, k=args.k, retriever=name) for u in keys]
        answers[name] = [
            r.item_keys
            for i in range(0, len(keys), 64)
            for r in rec.recommend(requests[i : i + 64])
        ]
    overlap = [
        len(set(e) & set(r)) / max(1, len(e))
        for e, r in zip(answers["exact"], answers["rails"], strict=True)
    ]
    out = {"users": len(keys), "k": args.k, "rails_budget": args.rails_budget}
    out["recall"] = round(sum(overlap) / len(overlap), 4)
    print(json.dumps({"rails_recall": out}), flush=True)
    return out


def time_batch_job(bundle: Path, args: argparse.Namespace) -> dict[str, Any]:
    from serving.batch import BatchRecommendConfig, run_batch_recommend
    from serving.local_ray import local_ray

    with local_ray(log_to_driver=False), tempfile.TemporaryDirectory() as tmp:
        config = BatchRecommendConfig(
            bundle_path=str(bundle),
            out=str(Path(tmp) / "recs.parquet"),
            k=args.batch_k,
            retriever=args.retriever,
            actors=args.batch_actors,
            num_cpus=max(1, (os.cpu_count() or 2) // args.batch_actors),
        )
        report = run_batch_recommend(config)
    batch = {
        "users": report.num_users,
        "seconds": round(report.seconds, 2),
        "k": args.batch_k,
        "actors": config.actors,
        "threads_per_actor": config.num_cpus,
    }
    print(json.dumps(batch), flush=True)
    return batch


def summarize_run(levels: list[dict[str, Any]]) -> dict[str, Any]:
    """Target figures of one run of one ingress, for its best layout (highest req/s at
    c = 32, "user" mix)."""

    def at(stack: str, mix: str, c: int) -> dict[str, Any]:
        return next(
            (x for x in levels if (x["stack"], x["mix"], x["concurrency"]) == (stack, mix, c)),
            {},
        )

    layouts = sorted({x["stack"] for x in levels} - {"noop"})
    best = max(layouts, key=lambda s: at(s, "user", 32).get("rps", 0))
    row: dict[str, Any] = {"best_layout": best}
    for mix in ("user", "history"):
        c32 = at(best, mix, 32)
        if c32:
            row[mix] = {key: c32[key] for key in ("rps", "p50_ms", "p99_ms", "errors")}
    c8, noop8 = at(best, "user", 8), at("noop", "user", 8)
    if c8 and noop8:
        row["overhead_p50_c8"] = round(c8["p50_ms"] / noop8["p50_ms"] - 1, 3)
    return row


def median_row(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """The median of each figure over runs (errors: the total), with the runs beside it."""
    import statistics

    out: dict[str, Any] = {"best_layout": rows[0]["best_layout"]}
    for mix in ("user", "history"):
        per_run = [r[mix] for r in rows if mix in r]
        if per_run:
            out[mix] = {
                key: round(statistics.median(x[key] for x in per_run), 2)
                for key in ("rps", "p50_ms", "p99_ms")
            } | {"errors": sum(x["errors"] for x in per_run)}
    overheads = [r["overhead_p50_c8"] for r in rows if "overhead_p50_c8" in r]
    if overheads:
        out["overhead_p50_c8"] = round(statistics.median(overheads), 3)
    if len(rows) > 1:
        out["runs"] = rows
    return out


def summarize(ingresses: dict[str, Any], batch: dict[str, Any] | None) -> dict[str, Any]:
    """Target figures per ingress: medians over the runs of `summarize_run`."""
    out: dict[str, Any] = {"targets": TARGETS}
    for ingress, result in ingresses.items():
        levels = result["levels"]
        runs = sorted({x.get("run", 0) for x in levels})
        row = median_row([summarize_run([x for x in levels if x.get("run", 0) == r]) for r in runs])
        user = row.get("user", {})
        row["meets"] = {
            "rps_c32": user.get("rps", 0) >= TARGETS["rps_c32"],
            "p99_ms_c32": user.get("p99_ms", 1e9) <= TARGETS["p99_ms_c32"]
            and user.get("errors") == 0,
            "overhead_p50_c8": row.get("overhead_p50_c8", 1e9) <= TARGETS["overhead_p50_c8"],
        }
        out[ingress] = row
    if batch:
        out["batch_s"] = batch["seconds"]
        out["batch_meets"] = batch["seconds"] <= TARGETS["batch_s"]
    return out


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="recsys bench serve", description=__doc__.split("\n\n")[0])
    p.add_argument("bundle", help="bundle directory")
    p.add_argument("--duration", type=float, default=8.0, help="measured seconds per level")
    p.add_argument("--warmup", type=float, default=2.0, help="unmeasured seconds per level")
    p.add_argument("--concurrency", default="1,8,32,64", help="comma-separated client counts")
    p.add_argument("--ingress", default="proxy,haproxy", help="proxy and/or haproxy")
    p.add_argument(
        "--layouts", default="single", help="single, composed and/or threaded (single + thread)"
    )
    p.add_argument("--mixes", default="user,history", help="user and/or history")
    p.add_argument("--retriever", default="rails", choices=("exact", "rails"))
    p.add_argument("--k", type=int, default=10)
    p.add_argument("--replica-cpus", type=float, default=1.0, help="num_cpus (torch threads)")
    p.add_argument("--max-batch-size", type=int, default=32)
    p.add_argument(
        "--rails-budget", type=int, default=DEFAULT_RAILS_BUDGET, help="TopKAvg candidates"
    )
    p.add_argument("--batch-k", type=int, default=100, help="k of the batch job")
    p.add_argument("--batch-actors", type=int, default=1, help="Ray Data actors (model copies)")
    p.add_argument("--skip-batch", action="store_true", help="do not time the batch job")
    p.add_argument(
        "--repeat", type=int, default=1, help="runs per ingress; the summary takes medians"
    )
    p.add_argument("--out", default=None, help="result JSON (default results/serve-<bundle>.json)")
    args = p.parse_args(argv)
    args.concurrency = [int(c) for c in args.concurrency.split(",")]
    for name in ("ingress", "layouts", "mixes"):
        setattr(args, name, [s.strip() for s in getattr(args, name).split(",") if s.strip()])
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    bundle = Path(args.bundle).resolve()
    if not (bundle / "users.parquet").is_file():
        print(f"error: {bundle} is not a bundle directory (no users.parquet)", file=sys.stderr)
        return 2
    load_before = os.getloadavg()
    # Runs alternate between the ingresses, so slow drifts of the machine hit both alike.
    ingresses: dict[str, Any] = {i: {"levels": [], "model_info": {}} for i in args.ingress}
    for run in range(args.repeat):
        for ingress in args.ingress:
            measured = measure_ingress(ingress, bundle, args)
            ingresses[ingress]["levels"] += [x | {"run": run} for x in measured["levels"]]
            ingresses[ingress]["model_info"] = measured["model_info"]
    batch = None if args.skip_batch else time_batch_job(bundle, args)
    recall = rails_recall(bundle, args)
    result = {
        "benchmark": "serve",
        "bundle": bundle.name,
        "settings": {k: v for k, v in vars(args).items() if k != "out"} | {"bundle": str(bundle)},
        "summary": summarize(ingresses, batch),
        "ingress": ingresses,
        "batch": batch,
        "rails_recall": recall,
        "load_average": {"before": load_before, "after": os.getloadavg()},
        "provenance": provenance(command_line("recsys bench serve", argv)),
    }
    out = Path(args.out) if args.out else RESULTS_DIR / f"serve-{bundle.name}.json"
    atomic_write_text(out, json.dumps(result, indent=2) + "\n")
    print(json.dumps(result["summary"], indent=2))
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
