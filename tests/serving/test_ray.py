"""The real stack, once: embedded Ray on 127.0.0.1, Serve over HTTP (good and bad requests,
hot swap), the Ray Data batch job, and shutdown.

One module-scoped Ray (2 CPUs, small object store, no dashboard) serves every test here; the
last test stops it and checks that no Ray process is left behind.
"""

from __future__ import annotations

import os
import socket
import threading
import time
from collections.abc import Callable
from pathlib import Path

import httpx
import numpy as np
import pytest

from recsys.recommend import Recommender, RecRequest

pytestmark = pytest.mark.integration


def descendants(pid: int) -> set[int]:
    """Live (non-zombie) descendants of `pid`, from /proc."""
    parents: dict[int, int] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        fields = stat[stat.rindex(")") + 2 :].split()
        if fields[0] != "Z":
            parents[int(entry.name)] = int(fields[1])
    found, frontier = set(), {pid}
    while frontier:
        frontier = {p for p, parent in parents.items() if parent in frontier} - found
        found |= frontier
    return found


def alive(pid: int) -> bool:
    """Running and not a zombie (a process reparented to init still counts)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat[stat.rindex(")") + 2] != "Z"


def listening_addresses(port: int) -> set[str]:
    """Local addresses with a TCP socket listening on `port` (IPv4, hex from /proc/net/tcp)."""
    out = set()
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        local, state = line.split()[1], line.split()[3]
        host, port_hex = local.split(":")
        if state == "0A" and int(port_hex, 16) == port:
            out.add(socket.inet_ntoa(bytes.fromhex(host)[::-1]))
    return out


def model_replicas() -> set[str]:
    import ray

    names = (a["name"] for a in ray.util.list_named_actors(all_namespaces=True))
    return {n for n in names if "#Recommender#" in n}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="module")
def stack(make_bundle: Callable[[int], Path]):
    from serving.app import AppArgs
    from serving.deploy import deploy
    from serving.local_ray import start_local_ray, stop_local_ray

    before = descendants(os.getpid())
    start_local_ray(
        num_cpus=2, object_store_bytes=80 * 1024**2, log_to_driver=False, ingress="proxy"
    )
    try:
        port = free_port()
        args = AppArgs(bundle_path=str(make_bundle(1)), num_cpus=1, max_batch_size=8)
        deploy(args, host="127.0.0.1", port=port)
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=30) as client:
            yield {"client": client, "port": port, "args": args, "before": before}
    finally:
        stop_local_ray()


def post(client: httpx.Client, body: dict) -> httpx.Response:
    return client.post("/v1/recommend", json=body)


def test_answers_equal_the_library(stack, make_bundle):
    rec = Recommender.load(make_bundle(1))
    users = rec.user_keys()
    items = [str(k) for k in rec.catalog.item_keys[1:6]]
    bodies = [
        {"user_id": users[0]},
        {"user_id": users[1], "k": 5, "retriever": "exact", "exclude": items[:2]},
        {"history": [items[0], "no-such-item", items[1]], "k": 4, "exclude_seen": False},
        {"user_id": "no-such-user", "k": 3},
        {"history": [items[2]], "include_only": items, "k": 10},
    ]
    for body in bodies:
        r = post(stack["client"], body)
        assert r.status_code == 200, r.text
        got = r.json()
        lib = RecRequest(
            user_key=body.get("user_id"),
            history=tuple(body["history"]) if "history" in body else None,
            k=body.get("k", 10),
            exclude_seen=body.get("exclude_seen", True),
            retriever=body.get("retriever"),
            exclude=tuple(body.get("exclude", ())),
            include_only=tuple(body["include_only"]) if "include_only" in body else None,
        )
        (want,) = rec.recommend([lib])
        assert [i["item_id"] for i in got["items"]] == list(want.item_keys)
        np.testing.assert_allclose([i["score"] for i in got["items"]], want.scores, rtol=1e-4)
        assert got["model_version"] == rec.model_version
        assert got["fallback"] == want.fallback and got["retriever"] == want.retriever
        assert got["unknown_items"] == list(want.unknown_items)
    assert post(stack["client"], bodies[3]).json()["fallback"] == "popularity"
    assert post(stack["client"], bodies[2]).json()["unknown_items"] == ["no-such-item"]


def test_bad_input_is_4xx_and_the_replica_survives(stack):
    client = stack["client"]
    bad = [
        b"{oops",
        b"[]",
        b'{"k": 0}',
        b'{"k": 5000}',
        b'{"k": "3"}',
        b'{"user_id": 3}',
        b'{"history": ' + b'["1"' + b', "1"' * 1000 + b"]}",
        b'{"unknown": 1}',
    ]
    for body in bad:
        r = client.post("/v1/recommend", content=body, headers={"content-type": "application/json"})
        assert r.status_code == 422, (body[:40], r.status_code, r.text[:200])
        assert r.json()["message"]
    assert client.get("/healthz").status_code == 200
    assert post(client, {"k": 2}).status_code == 200
    assert listening_addresses(stack["port"]) == {"127.0.0.1"}


def test_hot_swap_and_broken_bundle(stack, make_bundle, broken_bundle):
    from serving.deploy import deploy

    client, args, port = stack["client"], stack["args"], stack["port"]
    v1, v2 = (Recommender.load(make_bundle(s)).model_version for s in (1, 2))
    assert client.get("/v1/model").json()["model_version"] == v1
    replicas = model_replicas()
    statuses: list[int] = []
    versions: set[str] = set()
    stop = threading.Event()

    def traffic() -> None:  # requests in flight across the swap
        with httpx.Client(base_url=str(client.base_url), timeout=30) as c:
            while not stop.is_set():
                r = post(c, {"user_id": "no-such-user", "history": ["1", "2"]})
                statuses.append(r.status_code)
                if r.status_code == 200:
                    versions.add(r.json()["model_version"])

    worker = threading.Thread(target=traffic)
    worker.start()
    try:
        deploy(args, "127.0.0.1", port, user_config={"bundle_path": str(make_bundle(2))})
        deadline = time.time() + 30
        while client.get("/v1/model").json()["model_version"] != v2 and time.time() < deadline:
            time.sleep(0.2)
    finally:
        stop.set()
        worker.join()
    assert client.get("/v1/model").json()["model_version"] == v2
    assert statuses and set(statuses) == {200}, set(statuses)
    assert versions <= {v1, v2}
    assert model_replicas() == replicas  # swapped in place by reconfigure, not restarted

    deploy(args, "127.0.0.1", port, user_config={"bundle_path": str(broken_bundle)})
    deadline = time.time() + 30
    while client.get("/v1/model").json()["last_reload_error"] is None and time.time() < deadline:
        time.sleep(0.2)
    info = client.get("/v1/model").json()
    assert info["model_version"] == v2
    assert "model.safetensors" in info["last_reload_error"]
    assert client.get("/healthz").json() == {"status": "ok", "model_version": v2}
    assert post(client, {"user_id": "x"}).json()["model_version"] == v2
    assert model_replicas() == replicas


def test_batch_recommendations_equal_the_library(stack, make_bundle, tmp_path):
    import polars as pl

    from serving.batch import BatchRecommendConfig, run_batch_recommend

    bundle = make_bundle(1)
    rec = Recommender.load(bundle)
    users = rec.user_keys()
    (tmp_path / "users.txt").write_text("\n".join([users[3], "no-such-user", users[0]]) + "\n")
    runs = {
        "all": BatchRecommendConfig(str(bundle), str(tmp_path / "all.parquet"), k=5, batch_size=16),
        "file": BatchRecommendConfig(
            str(bundle), str(tmp_path / "some"), users=str(tmp_path / "users.txt"), k=3
        ),
    }
    for name, config in runs.items():
        report = run_batch_recommend(config)
        frame = pl.read_parquet(config.out).sort("user_key")
        keys = frame["user_key"].to_list()
        assert sorted(keys) == sorted(
            users if name == "all" else [users[3], "no-such-user", users[0]]
        )
        assert report.num_users == len(keys)
        want = rec.recommend([RecRequest(user_key=u, k=config.k) for u in keys])
        assert frame["item_keys"].to_list() == [list(w.item_keys) for w in want]
        np.testing.assert_allclose(
            np.concatenate(frame["scores"].to_list()),
            np.concatenate([w.scores for w in want]),
            rtol=1e-4,
        )
        assert frame["fallback"].to_list() == [w.fallback for w in want]
    assert report.num_fallback == 1  # the unknown user


def test_long_histories_never_come_back_over_http_or_in_batch(
    stack, make_bundle, tiny_dataset, tmp_path
):
    """Users with items older than the bundle's recent window: nothing they interacted
    with is served, through HTTP (both retrievers) and the Ray Data batch job."""
    import polars as pl

    from serving.batch import BatchRecommendConfig, run_batch_recommend

    data, bundle = tiny_dataset, make_bundle(1)
    max_len = Recommender.load(bundle).max_seq_len
    long_users = [
        u
        for u in range(data.num_users)
        if set(data.sequence(u)[:-max_len]) - set(data.sequence(u)[-max_len:])
    ][:3]
    assert long_users
    seen = {
        str(data.user_keys[u]): {str(data.item_keys[i]) for i in data.sequence(u)}
        for u in long_users
    }
    k = data.num_items
    for user, items in seen.items():
        for retriever in ("exact", "rails"):
            r = post(stack["client"], {"user_id": user, "k": k, "retriever": retriever})
            assert r.status_code == 200, r.text
            got = {i["item_id"] for i in r.json()["items"]}
            assert got and not got & items, (user, retriever, got & items)
    (tmp_path / "users.txt").write_text("\n".join(seen) + "\n")
    config = BatchRecommendConfig(
        str(bundle), str(tmp_path / "recs.parquet"), users=str(tmp_path / "users.txt"), k=k
    )
    run_batch_recommend(config)
    frame = pl.read_parquet(config.out)
    assert sorted(frame["user_key"].to_list()) == sorted(seen)
    for user, items in zip(frame["user_key"].to_list(), frame["item_keys"].to_list(), strict=True):
        assert items and not set(items) & seen[user]


def test_shutdown_leaves_no_ray_processes(stack):
    from serving.local_ray import stop_local_ray

    ray_processes = descendants(os.getpid()) - stack["before"]
    assert ray_processes, "expected Ray processes while Ray runs"
    stop_local_ray()
    deadline = time.time() + 30
    while (left := {p for p in ray_processes if alive(p)}) and time.time() < deadline:
        time.sleep(0.5)
    assert not left, f"Ray processes left behind: {sorted(left)}"
