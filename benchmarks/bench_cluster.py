"""A real two-node Ray cluster on this machine, every address 127.0.0.1: the service spread
over both nodes, the batch job across both, and one node killed under load.

    recsys bench cluster                      # -> benchmarks/results/cluster-cpu.json
    python -m benchmarks.bench_cluster --after-s 60 --concurrency 8

Steps (serving/cluster.py does the work):
1. a tiny bundle: `recsys train` on a small synthetic config, then `recsys export`;
2. a head (`ray start --head`) and a second node (`ray start --address`), each with its own
   CPUs, a custom resource naming it, a small object store and its own temp dir, token
   authentication; `ray.nodes()` must show two live nodes, all on 127.0.0.1;
3. `recsys recommend --address` with one actor per node; the actors must have run on both
   nodes and the output must equal the single-process run (the library in this process)
   and `recsys recommend` on its own embedded Ray;
4. `serve deploy` of configs/serve.yaml (bundle path, HTTP port, 2 replicas at most one to a
   node, proxy on the head): a replica on each node, HTTP answering on 127.0.0.1 only;
5. closed-loop HTTP load; the second node is SIGKILLed (all its processes at once, as if
   the machine died) mid-load: requests sent / OK / failed and p50 / p99 before and after,
   when Ray declared the node dead, what Serve reports then, and whether the service still
   answers (it must);
6. everything stopped (`serve shutdown`, each node's own `ray start --block` process and
   its process tree): no process left behind.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from recsys.atomic import atomic_write_text
from recsys.provenance import command_line, provenance
from serving import cluster as rc

REPO_ROOT = Path(__file__).resolve().parent.parent

APP, DEPLOYMENT = "recsys", "Recommender"  # serve.yaml's application, single layout


def tiny_config(users: int, items: int) -> str:
    """A small HSTU + MoL run on synthetic data (one epoch: the weights only need to exist)."""
    return f"""name: cluster-tiny
data:
  synthetic: {{num_users: {users}, num_items: {items}, mean_length: 20, seed: 0}}
model:
  encoder: {{type: hstu, max_len: 20, dim: 16, num_blocks: 1, num_heads: 2, attn_dim: 8,
            linear_dim: 8}}
  similarity: {{type: mol, p_q: 2, p_x: 2, d_p: 8, mlp_hidden: 16, gate_hidden: 8,
               user_hash_size: 256}}
training:
  epochs: 1
  batch_size: 64
  negatives: {{kind: shared, num: 32}}
  precision: 32-true
  accelerator: cpu
  devices: 1
"""


def build_bundle(work: Path, users: int, items: int) -> Path:
    """`recsys train` on the tiny config, then `recsys export`: the bundle directory."""
    config = work / "tiny.yaml"
    config.write_text(tiny_config(users, items))
    recsys = str(Path(sys.executable).with_name("recsys"))
    run, bundle = work / "run", work / "bundle"
    train = [recsys, "train", "--config", str(config), "--data", str(work / "data")]
    train += ["--out", str(run), "--no-progress"]
    export = [recsys, "export", "--checkpoint", str(run), "--out", str(bundle)]
    for cmd in (train, export):
        done = subprocess.run(cmd, capture_output=True, text=True, cwd=REPO_ROOT, timeout=600)
        if done.returncode != 0:
            raise RuntimeError(f"{' '.join(cmd)} failed:\n{done.stderr[-3000:]}")
    return bundle


def read_rows(path: Path) -> dict[str, list]:
    import pyarrow.parquet as pq

    return pq.read_table(path).to_pydict()


def windows(requests: list[dict[str, Any]], start: float, end: float, step: float) -> list[dict]:
    """Per-`step` summaries of the requests started in [start, end) (relative to the kill)."""
    out = []
    t = start
    while t < end:
        part = [r for r in requests if t <= r["start"] < t + step]
        if part:
            out.append({"from_s": round(t, 1), **rc.summarize(part)})
        t += step
    return out


def node_declared_dead_s(watch: list[dict[str, Any]], kill_wall: float, node_id: str) -> Any:
    """Seconds from the kill to the first `ray.nodes()` that no longer lists `node_id` alive."""
    for row in watch:
        if row["t"] >= kill_wall and node_id not in row["alive"]:
            return round(row["t"] - kill_wall, 1)
    return None


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="recsys bench cluster", description=__doc__.split("\n")[0])
    p.add_argument("--head-cpus", type=int, default=2, help="the head's --num-cpus")
    p.add_argument("--node-cpus", type=int, default=2, help="the second node's --num-cpus")
    p.add_argument("--object-store-mb", type=int, default=100, help="per node")
    p.add_argument("--users", type=int, default=1000, help="synthetic users (bundle)")
    p.add_argument("--items", type=int, default=300, help="synthetic items (bundle)")
    p.add_argument("--k", type=int, default=10, help="items per user (batch job)")
    p.add_argument("--concurrency", type=int, default=4, help="HTTP clients")
    p.add_argument("--before-s", type=float, default=15.0, help="load before the kill")
    p.add_argument("--after-s", type=float, default=45.0, help="load after the kill")
    p.add_argument("--name", default="cluster-cpu", help="results file: NAME.json")
    args = p.parse_args(argv)
    if why := rc.ray_start_unavailable():
        p.error(why)

    started = time.perf_counter()
    work = Path(tempfile.mkdtemp(prefix="bench-cluster-"))
    result: dict[str, Any] = {
        "benchmark": "two-node Ray cluster on 127.0.0.1: serve, batch job, node killed under load",
        "device": "cpu",
    }
    checks: dict[str, bool] = {}

    t = time.perf_counter()
    bundle = build_bundle(work, args.users, args.items)
    result["bundle"] = {
        "users": args.users,
        "items": args.items,
        "train_and_export_s": round(time.perf_counter() - t, 1),
    }
    print(f"bundle {bundle} ({result['bundle']['train_and_export_s']} s)", flush=True)

    cluster: rc.LocalCluster | None = None
    deployed = finished = False
    try:
        t = time.perf_counter()
        cluster = rc.start_cluster(
            {"head": args.head_cpus, "b": args.node_cpus}, object_store_mb=args.object_store_mb
        )
        start_s = round(time.perf_counter() - t, 1)
        snap = cluster.snapshot()
        alive = [n for n in snap["nodes"] if n["Alive"]]
        result["cluster"] = {
            "start_s": start_s,
            "nodes": [
                {
                    "name": cluster.names.get(n["NodeID"]),
                    "node_id": n["NodeID"],
                    "NodeManagerAddress": n["NodeManagerAddress"],
                    "CPU": n["Resources"].get("CPU"),
                    "object_store_mb": round(n["Resources"].get("object_store_memory", 0) / 2**20),
                    "is_head": n["Resources"].get("node:__internal_head__") == 1.0,
                }
                for n in alive
            ],
            "env": {**rc.CLUSTER_SETTINGS, "RAY_AUTH_TOKEN": "a fresh random token"},
        }
        checks["two_nodes_alive"] = len(alive) == 2
        checks["every_node_on_127.0.0.1"] = all(
            n["NodeManagerAddress"] == rc.LOOPBACK for n in alive
        )
        print(f"cluster up in {start_s} s: {result['cluster']['nodes']}", flush=True)

        # The batch job across both nodes, against the single-process run.
        t = time.perf_counter()
        report = rc.recommend_cli(bundle, work / "cluster.parquet", args.k, 2, cluster)
        batch_s = round(time.perf_counter() - t, 1)
        got = read_rows(work / "cluster.parquet")
        actor_nodes = sorted(
            a["node"]
            for a in cluster.snapshot()["actors"]
            if a["class_name"].startswith("MapWorker(MapBatches(RecommendBatch")
        )
        t = time.perf_counter()
        library = rc.library_recommendations(bundle, sorted(got["user_key"]), args.k)
        library_s = round(time.perf_counter() - t, 1)
        t = time.perf_counter()
        rc.recommend_cli(bundle, work / "local.parquet", args.k, 1)
        local_s = round(time.perf_counter() - t, 1)
        vs_library = rc.compare_recommendations(got, library)
        vs_local = rc.compare_recommendations(got, read_rows(work / "local.parquet"))
        result["batch"] = {
            "command": f"recsys recommend BUNDLE --address {cluster.address} --actors 2 "
            f"--k {args.k} --batch-size 64 --out cluster.parquet",
            "report": {k: v for k, v in report.items() if k != "out"},
            "wall_s": batch_s,
            "actor_nodes": actor_nodes,
            "equal_to_single_process_library": vs_library,
            "single_process_library_s": library_s,
            "equal_to_local_recommend": vs_local,
            "local_recommend_s": local_s,
        }
        checks["batch_actors_on_both_nodes"] = set(actor_nodes) == {"head", "b"}
        checks["batch_equal_to_single_process"] = vs_library["equal"] and vs_local["equal"]
        print(f"batch: {result['batch']}", flush=True)

        # serve deploy of configs/serve.yaml, a replica on each node.
        port = rc.free_port()
        config = rc.serve_config_for_cluster(
            REPO_ROOT / "configs" / "serve.yaml", bundle, port, replicas=2
        )
        config_path = work / "serve.yaml"
        config_path.write_text(json.dumps(config, indent=2))  # JSON is YAML
        t = time.perf_counter()
        rc.serve_cli(cluster, "deploy", str(config_path))
        deployed = True
        rc.wait_app_running(cluster, APP, DEPLOYMENT, replicas=2)
        deploy_s = round(time.perf_counter() - t, 1)
        snap = cluster.snapshot()
        replica_nodes = sorted(
            a["node"]
            for a in snap["actors"]
            if a["class_name"].startswith("ServeReplica") and a["state"] == "ALIVE"
        )
        import httpx

        from recsys.recommend import Recommender

        users = Recommender.load(bundle).user_keys()
        with httpx.Client(base_url=f"http://{rc.LOOPBACK}:{port}", timeout=30) as client:
            answer = client.post("/v1/recommend", json={"user_id": users[0], "k": args.k})
            health = client.get("/healthz")
        result["serve"] = {
            "deploy_s": deploy_s,
            "replica_nodes": replica_nodes,
            "http_listening_on": sorted(rc.listening_addresses(port)),
            "config_changes": {
                "proxy_location": config["proxy_location"],
                "http_options": config["http_options"],
                "args": {"bundle_path": "BUNDLE", "replicas": 2},
                "deployments": config["applications"][0]["deployments"],
            },
        }
        checks["replicas_on_both_nodes"] = replica_nodes == ["b", "head"]
        checks["http_answers"] = (
            answer.status_code == 200
            and len(answer.json()["items"]) == args.k
            and health.status_code == 200
        )
        checks["http_on_127.0.0.1_only"] = result["serve"]["http_listening_on"] == [rc.LOOPBACK]
        print(f"serve: {result['serve']}", flush=True)

        # Load, and the second node killed in the middle of it.
        node_b = next(n for n in alive if cluster.names.get(n["NodeID"]) == "b")["NodeID"]
        watcher = cluster.watch_nodes()  # a driver on the head, polling ray.nodes()
        try:
            load = rc.load_with_kill(
                port,
                [{"user_id": u, "k": args.k} for u in users],
                args.concurrency,
                args.before_s,
                args.before_s + args.after_s,
                cluster.node("b").kill,
            )
            deadline = time.monotonic() + 90  # Ray's default health checks: ~15-30 s
            while len(cluster.alive_nodes()) > 1 and time.monotonic() < deadline:
                time.sleep(1)
        finally:
            watch = rc.stop_watch(watcher)
        dead_after = node_declared_dead_s(watch, load["kill_wall_time"], node_b)
        requests = load["requests"]
        before = [r for r in requests if r["start"] < 0]
        after = [r for r in requests if r["start"] >= 0]
        failed_after = [r["start"] for r in after if r["status"] != 200]
        last5 = [r for r in after if r["start"] >= args.after_s - 5]
        status_after = rc.serve_status(cluster)
        with httpx.Client(base_url=f"http://{rc.LOOPBACK}:{port}", timeout=30) as client:
            final = client.post("/v1/recommend", json={"user_id": users[1], "k": args.k})
        alive_after = cluster.alive_nodes()
        result["failure"] = {
            "killed": "node b: SIGKILL to all of its processes at once (raylet, workers, "
            "the replica on it)",
            "concurrency": args.concurrency,
            "load_before_kill_s": args.before_s,
            "load_after_kill_s": args.after_s,
            "kill_call_s": load["kill_call_s"],
            "before": rc.summarize(before),
            "after": rc.summarize(after),
            "after_first_5s": rc.summarize([r for r in after if r["start"] < 5]),
            "after_last_5s": rc.summarize(last5),
            "first_failure_after_kill_s": round(min(failed_after), 2) if failed_after else None,
            "last_failure_after_kill_s": round(max(failed_after), 2) if failed_after else None,
            "node_declared_dead_after_s": dead_after,
            "alive_nodes_after": [cluster.names.get(n["NodeID"], n["NodeID"]) for n in alive_after],
            "serve_after": {
                "app_status": (status_after.get("applications") or {}).get(APP, {}).get("status"),
                "replica_states": rc.replica_states(status_after, APP, DEPLOYMENT),
            },
            "per_5s": windows(requests, -args.before_s, args.after_s, 5.0),
        }
        checks["answers_after_kill"] = (
            result["failure"]["after"]["ok"] > 0
            and bool(last5)
            and all(r["status"] == 200 for r in last5)
            and final.status_code == 200
        )
        checks["node_declared_dead"] = dead_after is not None and len(alive_after) == 1
        print(f"failure: { {k: v for k, v in result['failure'].items() if k != 'per_5s'} }")
        finished = True
    finally:
        if cluster is not None:
            t = time.perf_counter()
            if deployed:
                try:
                    rc.serve_cli(cluster, "shutdown", "-y", timeout=90)
                except (RuntimeError, subprocess.TimeoutExpired) as e:
                    print(f"serve shutdown: {e}", file=sys.stderr)
            left = cluster.stop(keep_files=not (finished and all(checks.values())))
            result["stop"] = {"stop_s": round(time.perf_counter() - t, 1), "left": sorted(left)}
            checks["no_processes_left"] = not left
            print(f"stopped: {result['stop']}", flush=True)

    result["checks"] = checks
    result["meets_targets"] = all(checks.values())
    result["wall_time_s"] = round(time.perf_counter() - started, 1)
    result["provenance"] = provenance(command_line("recsys bench cluster", argv))
    out = REPO_ROOT / "benchmarks" / "results" / f"{args.name}.json"
    atomic_write_text(out, json.dumps(result, indent=2) + "\n")
    if result["meets_targets"]:
        shutil.rmtree(work, ignore_errors=True)
    else:
        print(f"kept {work} for a look")
    print(f"checks: {checks}\n-> {out}")
    return 0 if result["meets_targets"] else 1


if __name__ == "__main__":
    raise SystemExit(main())
