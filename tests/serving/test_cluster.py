"""A real two-node Ray cluster on 127.0.0.1 (serving/cluster.py), once for this module:
`ray start --head` and `ray start --address` nodes, the batch job across both, `serve
deploy` of configs/serve.yaml with a replica on each node, one node killed under load, and
nothing left behind. benchmarks/bench_cluster.py measures the same at length.

Ray's node health checks are shortened here (1 s, 3 misses) so the dead node is declared
dead within seconds instead of Ray's default ~15 s.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest

from serving import cluster as rc

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
APP, DEPLOYMENT = "recsys", "Recommender"


@pytest.fixture(scope="module")
def bundle(make_bundle: Callable[[int], Path]) -> Path:
    return make_bundle(1)


@pytest.fixture(scope="module")
def before() -> set[int]:
    """This process's descendants before the cluster starts."""
    return rc.process_tree(os.getpid())


@pytest.fixture(scope="module")
def cluster(before: set[int]):
    if why := rc.ray_start_unavailable():
        pytest.skip(f"ray start is unavailable: {why}")
    fast_health = {"RAY_health_check_period_ms": "1000", "RAY_health_check_failure_threshold": "3"}
    c = rc.start_cluster({"head": 2, "b": 2}, object_store_mb=80, extra_env=fast_health)
    try:
        yield c
    finally:
        c.stop()


@pytest.fixture(scope="module")
def deploy_sent(cluster: rc.LocalCluster, bundle: Path) -> int:
    """`serve deploy` of configs/serve.yaml sent (it returns before the replicas run, so the
    batch job test overlaps their start); the HTTP port."""
    port = rc.free_port()
    config = rc.serve_config_for_cluster(REPO / "configs" / "serve.yaml", bundle, port, 2)
    path = cluster.root / "serve.yaml"
    path.write_text(json.dumps(config))
    rc.serve_cli(cluster, "deploy", str(path))
    return port


@pytest.fixture(scope="module")
def service(cluster: rc.LocalCluster, deploy_sent: int):
    """The deployed app running: (port, `serve status`)."""
    return deploy_sent, rc.wait_app_running(cluster, APP, DEPLOYMENT, replicas=2)


def test_two_nodes_every_address_loopback(cluster: rc.LocalCluster) -> None:
    nodes = [n for n in cluster.snapshot()["nodes"] if n["Alive"]]  # ray.nodes()
    assert len(nodes) == 2
    assert {n["NodeManagerAddress"] for n in nodes} == {"127.0.0.1"}
    by_name = {cluster.names[n["NodeID"]]: n for n in nodes}
    assert set(by_name) == {"head", "b"}
    for name, node in by_name.items():
        assert node["Resources"]["CPU"] == 2
        assert node["Resources"][rc.node_resource(name)] == 1
    assert by_name["head"]["Resources"].get("node:__internal_head__") == 1
    assert rc.listening_addresses(cluster.gcs_port) == {"127.0.0.1"}


def test_batch_job_across_both_nodes_equals_single_process(
    cluster: rc.LocalCluster, bundle: Path, tmp_path: Path, deploy_sent: int
) -> None:
    import pyarrow.parquet as pq

    report = rc.recommend_cli(bundle, tmp_path / "recs.parquet", 5, 2, cluster, batch_size=8)
    got = pq.read_table(tmp_path / "recs.parquet").to_pydict()
    assert report["num_users"] == len(got["user_key"]) > 0
    actor_nodes = sorted(
        a["node"]
        for a in cluster.snapshot()["actors"]
        if a["class_name"].startswith("MapWorker(MapBatches(RecommendBatch")
    )
    assert actor_nodes == ["b", "head"]
    want = rc.library_recommendations(bundle, sorted(got["user_key"]), 5)
    comparison = rc.compare_recommendations(got, want)
    assert comparison["equal"], comparison


def test_serve_deploy_spreads_replicas_and_answers(
    cluster: rc.LocalCluster, service, bundle: Path
) -> None:
    from recsys.recommend import Recommender

    port, status = service
    assert rc.replica_states(status, APP, DEPLOYMENT) == {"RUNNING": 2}
    replicas = [
        a["node"]
        for a in cluster.snapshot()["actors"]
        if a["class_name"].startswith("ServeReplica") and a["state"] == "ALIVE"
    ]
    assert sorted(replicas) == ["b", "head"]
    rec = Recommender.load(bundle)
    user = rec.user_keys()[0]
    with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=30) as client:
        for _ in range(6):  # the proxy spreads requests over both replicas
            r = client.post("/v1/recommend", json={"user_id": user, "k": 3})
            assert r.status_code == 200, r.text
            assert len(r.json()["items"]) == 3
            assert r.json()["model_version"] == rec.model_version
    assert rc.listening_addresses(port) == {"127.0.0.1"}


def test_node_killed_under_load_service_keeps_answering(
    cluster: rc.LocalCluster, service, bundle: Path
) -> None:
    from recsys.recommend import Recommender

    port, _ = service
    users = Recommender.load(bundle).user_keys()
    load = rc.load_with_kill(
        port,
        [{"user_id": u, "k": 5} for u in users],
        concurrency=2,
        kill_after_s=3,
        seconds=11,
        kill=cluster.node("b").kill,
    )
    requests = load["requests"]
    before = rc.summarize([r for r in requests if r["start"] < 0])
    after = rc.summarize([r for r in requests if r["start"] >= 0])
    last = [r for r in requests if r["start"] >= 6]
    assert before["ok"] > 0 and before["failed"] == 0, before
    assert after["ok"] > 0, after
    assert last and all(r["status"] == 200 for r in last), rc.summarize(last)
    assert not cluster.node("b").processes()

    nodes = cluster.wait_nodes(1, timeout=60)  # Ray declares node b dead
    assert [cluster.names[n["NodeID"]] for n in nodes] == ["head"]
    with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=30) as client:
        r = client.post("/v1/recommend", json={"user_id": users[1], "k": 5})
        assert r.status_code == 200, r.text
        assert client.get("/healthz").status_code == 200
    running = rc.replica_states(rc.serve_status(cluster), APP, DEPLOYMENT).get("RUNNING")
    assert running == 1  # the head's; b's replacement has no node to go to


def test_stop_leaves_no_ray_process(cluster: rc.LocalCluster, before: set[int]) -> None:
    assert cluster.node("head").processes(), "expected the head's processes while it runs"
    assert not cluster.node("b").processes()  # killed earlier
    left = cluster.stop()  # no `serve shutdown` first: stopping the nodes ends Serve too
    assert not left, f"processes left behind: {sorted(left)}"
    assert all(not n.processes() for n in cluster.nodes)
    assert not rc.processes_mentioning(str(cluster.root))
    assert not cluster.root.exists()  # temp dirs and logs removed
    assert rc.process_tree(os.getpid()) - before - {os.getpid()} == set()


def test_checking_for_ray_start_does_not_import_ray() -> None:
    """Ray reads its node-address setting at import: importing it here, before an embedded
    Ray of a later test sets that setting, split that Ray between two addresses."""
    code = (
        "import sys\nfrom serving import cluster\ncluster.ray_start_unavailable()\n"
        "print('ray' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "False"


def test_cluster_processes_get_their_own_home(tmp_path: Path) -> None:
    """What Ray writes under ~/.ray (a token file turns token auth on for every later Ray
    on the machine) stays in the cluster's directory."""
    env = rc.cluster_env("t" * 64, {"X": "1"}, home=tmp_path)
    assert env["HOME"] == str(tmp_path) and env["RAY_AUTH_TOKEN"] == "t" * 64
    assert env["RAY_AUTH_MODE"] == "token" and env["X"] == "1"
