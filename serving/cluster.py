"""A real multi-node Ray cluster on one machine, every node on 127.0.0.1 (tests, benchmark).

A head and further nodes, each a `ray start --block` process tree of its own with its own
`--num-cpus`, a custom resource naming it (`recsys_node_<name>`), a small object store, its
own temp dir and free ports; token authentication with a fresh token passed through the
environment; every Ray address on loopback. Used by benchmarks/bench_cluster.py and
tests/serving/test_cluster.py. On a real cluster run the plain commands of the README.

Loopback: `ray start` replaces 127.0.0.1 in `--node-ip-address` and `--address` by the
machine's network address (ray._private.services.resolve_ip_for_localhost) unless
RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0, read by Ray at import; but with that variable set,
`ray start --address` refuses to join ("multi-node Ray clusters are not supported on
Windows and OSX"). So the head is the plain `ray` CLI with the variable set, and the other
nodes are `python -m serving.cluster ray-start ...`: the same `ray start` with the variable
set and only that refusal lifted. Drivers (`recsys recommend --address`, the queries here)
get the variable too, so their node address matches the raylets' (127.0.0.1). Not moved by
any setting: each Serve replica's inter-deployment gRPC server listens on all interfaces.

Token authentication: Ray 2.60 turns it on for a head when a token exists in
~/.ray/auth_token (written by any earlier `ray.init()`), and a node that joins without
RAY_AUTH_MODE=token then fails to authenticate. Here every process gets RAY_AUTH_MODE=token
and RAY_AUTH_TOKEN (a fresh random token), so nothing depends on or writes the home
directory's token.

Processes: stopping a node sends SIGTERM to its `ray start --block` (Ray's own shutdown of
that node's processes), then SIGKILL to whatever is left of its process tree or mentions its
temp dir; `Node.kill` SIGKILLs all of them at once (the node dies as a machine would).
Nothing here runs `ray stop`, which stops every Ray process of the user on the machine.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib.util
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from serving.local_ray import PROXY_READY_ENV, PROXY_READY_TIMEOUT_S

LOOPBACK = "127.0.0.1"
REPO_ROOT = Path(__file__).resolve().parent.parent
_LOOPBACK_ENV = "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"
_BIN = Path(sys.executable).parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind((LOOPBACK, 0))
        return int(s.getsockname()[1])


def node_resource(name: str) -> str:
    """The custom resource (amount 1) that names a node started here."""
    return f"recsys_node_{name}"


def ray_start_unavailable() -> str | None:
    """Why `ray start` cannot run here, or None when it can."""
    for tool in ("ray", "serve", "recsys"):
        if not (_BIN / tool).is_file():
            return f"no `{tool}` executable in {_BIN}"
    if not Path("/proc/net/tcp").is_file():
        return "needs Linux /proc"
    # Found, not imported: Ray reads its node-address setting at import, and this process
    # may start an embedded Ray later (serving.local_ray sets that setting first).
    if importlib.util.find_spec("ray") is None:
        return "ray is not installed"
    return None


# What every process of the cluster (and every client of it) gets, besides RAY_AUTH_TOKEN.
CLUSTER_SETTINGS = {
    _LOOPBACK_ENV: "0",  # node addresses on 127.0.0.1 (see the module docstring)
    "RAY_AUTH_MODE": "token",
    "RAY_USAGE_STATS_ENABLED": "0",
    # Serve's Python HTTP proxy, on the head only (see serve_config_for_cluster).
    "RAY_SERVE_ENABLE_HA_PROXY": "0",
    # SIGTERM drains a node first (up to 30 s by default); nothing to drain for here.
    "RAY_GRACEFUL_SHUTDOWN_DRAIN_TIMEOUT_S": "2",
    # Serve's proxy start-up patience (see serving.local_ray).
    PROXY_READY_ENV: os.environ.get(PROXY_READY_ENV, PROXY_READY_TIMEOUT_S),
}


def cluster_env(
    token: str, extra: dict[str, str] | None = None, home: Path | None = None
) -> dict[str, str]:
    """The environment of every node of the cluster and of every client of it. `home`: the
    HOME of those processes, so that what Ray writes under ~/.ray (a token file, which turns
    token auth on for every later Ray on the machine) stays in the cluster's directory."""
    env = {**os.environ, **CLUSTER_SETTINGS, "RAY_AUTH_TOKEN": token, **(extra or {})}
    if home is not None:
        env["HOME"] = str(home)
    env["PYTHONPATH"] = os.pathsep.join(
        filter(None, [str(REPO_ROOT), os.environ.get("PYTHONPATH")])
    )
    return env


# --- processes -----------------------------------------------------------------------------


def _proc_stat(pid: int) -> list[str] | None:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return stat[stat.rindex(")") + 2 :].split()


def alive(pid: int, started: int | None = None) -> bool:
    """Running and not a zombie (and, given `started`, the same process: a pid can be
    reused once its process has ended)."""
    fields = _proc_stat(pid)
    return fields is not None and fields[0] != "Z" and started in (None, int(fields[19]))


def _start_times(pids: set[int]) -> dict[int, int]:
    """pid -> start time (clock ticks after boot) of the live ones among `pids`."""
    out = {}
    for pid in pids:
        if (fields := _proc_stat(pid)) and fields[0] != "Z":
            out[pid] = int(fields[19])
    return out


def process_tree(pid: int) -> set[int]:
    """`pid` and its live descendants, from /proc."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit() and (fields := _proc_stat(int(entry.name))) and fields[0] != "Z":
            children.setdefault(int(fields[1]), []).append(int(entry.name))
    found, frontier = set(), [pid]
    while frontier:
        p = frontier.pop()
        if p not in found:
            found.add(p)
            frontier.extend(children.get(p, []))
    return {p for p in found if alive(p)}


def processes_mentioning(text: str) -> set[int]:
    """Live processes (other than this one) whose command line contains `text`."""
    found = set()
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if text in cmdline and alive(int(entry.name)):
            found.add(int(entry.name))
    return found


def _signal_all(pids: set[int], sig: int) -> None:
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, sig)


@dataclass
class Node:
    """One `ray start --block` node."""

    name: str
    temp_dir: Path
    num_cpus: int
    proc: subprocess.Popen
    log: Path
    seen: dict[int, int] = field(default_factory=dict)  # pid -> start time, as last seen

    def processes(self) -> set[int]:
        """The node's live processes: its tree, and any that mention its temp dir (only
        those seen here, checked by start time, so a reused pid is never taken for one)."""
        found = processes_mentioning(str(self.temp_dir))
        if self.proc.poll() is None:
            found |= process_tree(self.proc.pid)
        for pid, started in _start_times(found).items():
            self.seen.setdefault(pid, started)
        return {p for p, started in self.seen.items() if alive(p, started)}

    def _wait_gone(self, timeout: float) -> set[int]:
        deadline = time.monotonic() + timeout
        while (left := self.processes()) and time.monotonic() < deadline:
            time.sleep(0.2)
        return left

    def kill(self) -> None:
        """SIGKILL every process of the node at once: it dies as a machine would."""
        _signal_all(self.processes(), signal.SIGKILL)
        self.proc.wait(timeout=30)
        if left := self._wait_gone(30):
            raise RuntimeError(f"node {self.name}: processes survived SIGKILL: {sorted(left)}")

    def stop(self, grace_s: float = 20.0) -> set[int]:
        """Ray's own shutdown (SIGTERM to `ray start --block`), then SIGKILL to whatever is
        left; the pids still alive after that (none, normally)."""
        self.processes()
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.proc.wait(timeout=grace_s)
        _signal_all(self._wait_gone(5), signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.proc.wait(timeout=10)
        return self._wait_gone(10)


@dataclass
class LocalCluster:
    """A head and further nodes on 127.0.0.1; `stop()` ends every process it started."""

    root: Path
    env: dict[str, str]
    gcs_port: int
    dashboard_port: int
    nodes: list[Node] = field(default_factory=list)
    names: dict[str, str] = field(default_factory=dict)  # NodeID -> name, as seen so far

    @property
    def address(self) -> str:
        """The GCS address (`ray start --address`, `ray.init`, `recsys recommend --address`)."""
        return f"{LOOPBACK}:{self.gcs_port}"

    @property
    def dashboard(self) -> str:
        """The dashboard (`serve deploy -a`, the state API)."""
        return f"http://{LOOPBACK}:{self.dashboard_port}"

    def node(self, name: str) -> Node:
        return next(n for n in self.nodes if n.name == name)

    def _start(self, name: str, cmd: list[str], num_cpus: int, object_store_mb: int) -> Node:
        temp_dir = self.root / name
        temp_dir.mkdir(parents=True)
        log = self.root / f"{name}.log"
        cmd = [
            *cmd,
            "--block",
            f"--node-ip-address={LOOPBACK}",
            f"--num-cpus={num_cpus}",
            "--num-gpus=0",
            f"--resources={json.dumps({node_resource(name): 1})}",
            f"--object-store-memory={object_store_mb * 1024**2}",
            f"--temp-dir={temp_dir}",
            "--disable-usage-stats",
            f"--node-manager-port={free_port()}",
            f"--object-manager-port={free_port()}",
            f"--metrics-export-port={free_port()}",
            f"--runtime-env-agent-port={free_port()}",
            f"--dashboard-agent-listen-port={free_port()}",
            f"--dashboard-agent-grpc-port={free_port()}",
        ]
        with log.open("wb") as out:
            proc = subprocess.Popen(
                cmd,
                env=self.env,
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
                cwd=REPO_ROOT,
            )
        node = Node(name, temp_dir, num_cpus, proc, log)
        self.nodes.append(node)
        return node

    def start_head(self, num_cpus: int, object_store_mb: int) -> Node:
        cmd = [
            str(_BIN / "ray"),
            "start",
            "--head",
            f"--port={self.gcs_port}",
            "--include-dashboard=true",  # `serve deploy` goes through it
            f"--dashboard-host={LOOPBACK}",
            f"--dashboard-port={self.dashboard_port}",
            f"--ray-client-server-port={free_port()}",
        ]
        return self._start("head", cmd, num_cpus, object_store_mb)

    def add_node(self, name: str, num_cpus: int, object_store_mb: int) -> Node:
        cmd = [sys.executable, "-m", "serving.cluster", "ray-start", f"--address={self.address}"]
        return self._start(name, cmd, num_cpus, object_store_mb)

    # --- queries (each a short-lived driver process, so this process never joins Ray) ---

    def run_python(self, code: str, timeout: float = 120) -> Any:
        """Run `code` in a fresh Python connected to the cluster (`ray.init(address)`); it
        prints one JSON document last, returned here."""
        script = f"import json, ray\nray.init(address={self.address!r}, log_to_driver=False)\n"
        done = subprocess.run(
            [sys.executable, "-c", script + code],
            env=self.env,
            capture_output=True,
            text=True,
            timeout=timeout,
            cwd=REPO_ROOT,
        )
        if done.returncode != 0:
            raise RuntimeError(f"cluster query failed:\n{done.stderr[-4000:]}")
        return json.loads(done.stdout.strip().splitlines()[-1])

    def snapshot(self) -> dict[str, Any]:
        """{"nodes": ray.nodes() (alive and dead), "actors": [{name, class_name, state,
        node}]} where node is the name given at start; names learnt here are kept."""
        out = self.run_python(_SNAPSHOT.format(dashboard=self.dashboard))
        prefix = node_resource("")
        for n in out["nodes"]:
            for key in n["Resources"]:
                if key.startswith(prefix):
                    self.names[n["NodeID"]] = key.removeprefix(prefix)
        for a in out["actors"]:
            a["node"] = self.names.get(a.pop("node_id"), "?")
        return out

    def alive_nodes(self) -> list[dict[str, Any]]:
        """`ray.nodes()` entries of the live nodes (NodeID, NodeManagerAddress, ...)."""
        nodes = self.run_python("print(json.dumps(ray.nodes(), default=str))")
        return [n for n in nodes if n["Alive"]]

    def wait_nodes(self, count: int, timeout: float = 120) -> list[dict[str, Any]]:
        """Wait until exactly `count` nodes are alive; their `ray.nodes()` entries."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                nodes = self.alive_nodes()
                if len(nodes) == count:
                    return nodes
            except (RuntimeError, subprocess.TimeoutExpired, json.JSONDecodeError, IndexError):
                nodes = []
            if time.monotonic() > deadline:
                logs = "\n".join(f"--- {n.log}\n{n.log.read_text()[-3000:]}" for n in self.nodes)
                raise TimeoutError(f"{len(nodes)} nodes alive, expected {count}\n{logs}")
            time.sleep(1.0)

    def watch_nodes(self, period_s: float = 0.5) -> subprocess.Popen:
        """A driver that prints {"t": wall time, "alive": [NodeID, ...]} every `period_s`
        until stopped (`stop_watch`)."""
        code = (
            "import time\n"
            "while True:\n"
            "    alive = sorted(n['NodeID'] for n in ray.nodes() if n['Alive'])\n"
            "    print(json.dumps({'t': time.time(), 'alive': alive}), flush=True)\n"
            f"    time.sleep({period_s})\n"
        )
        script = f"import json, ray\nray.init(address={self.address!r}, log_to_driver=False)\n"
        return subprocess.Popen(
            [sys.executable, "-c", script + code],
            env=self.env,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
            cwd=REPO_ROOT,
        )

    def stop(self, keep_files: bool = False) -> set[int]:
        """Stop every node, the others before the head; the pids left alive (none,
        normally), also counting any process that mentions the cluster's directory. The
        directory (temp dirs, logs) is removed when nothing is left, unless `keep_files`."""
        left: set[int] = set()
        for node in reversed(self.nodes):
            left |= node.stop()
        left |= processes_mentioning(str(self.root))
        if not left and not keep_files:
            shutil.rmtree(self.root, ignore_errors=True)
        return left


_SNAPSHOT = """
from ray.util.state import list_actors
actors = [
    {{"name": a.name, "class_name": a.class_name, "state": a.state, "node_id": a.node_id}}
    for a in list_actors(address={dashboard!r}, limit=10000, raise_on_missing_output=False)
]
print(json.dumps({{"nodes": ray.nodes(), "actors": actors}}, default=str))
"""


def stop_watch(proc: subprocess.Popen) -> list[dict[str, Any]]:
    """Stop a `watch_nodes` driver; what it printed."""
    proc.terminate()
    try:
        out, _ = proc.communicate(timeout=20)
    except subprocess.TimeoutExpired:
        proc.kill()
        out, _ = proc.communicate()
    lines = []
    for line in out.splitlines():
        with contextlib.suppress(json.JSONDecodeError):
            lines.append(json.loads(line))
    return lines


def _wait_port(port: int, node: Node, timeout: float = 120) -> None:
    """Wait until 127.0.0.1:`port` accepts connections (`node` must keep running)."""
    deadline = time.monotonic() + timeout
    while True:
        with socket.socket() as s:
            if s.connect_ex((LOOPBACK, port)) == 0:
                return
        if node.proc.poll() is not None or time.monotonic() > deadline:
            raise RuntimeError(f"{node.name} is not listening on {port}:\n{node.log.read_text()}")
        time.sleep(0.2)


def _home(root: Path) -> Path:
    home = root / "home"
    home.mkdir(parents=True, exist_ok=True)
    return home


def start_cluster(
    nodes: dict[str, int],
    object_store_mb: int = 80,
    extra_env: dict[str, str] | None = None,
) -> LocalCluster:
    """Start a head ("head", the first entry of `nodes`: name -> CPUs) and the other nodes
    (one after another), and wait until all are alive. `extra_env`: more environment for
    every process (e.g. Ray's `RAY_health_check_*` settings). On failure everything started
    is stopped again."""
    (head, head_cpus), *others = nodes.items()
    if head != "head":
        raise ValueError("the first node must be named 'head'")
    # A short path: Ray's Unix sockets live under the temp dirs (108-byte limit).
    root = Path(tempfile.mkdtemp(prefix="rc", dir="/tmp"))
    cluster = LocalCluster(
        root=root,
        env=cluster_env(secrets.token_hex(32), extra_env, home=_home(root)),
        gcs_port=free_port(),
        dashboard_port=free_port(),
    )
    try:
        head_node = cluster.start_head(head_cpus, object_store_mb)
        _wait_port(cluster.gcs_port, head_node)
        for name, cpus in others:
            cluster.add_node(name, cpus, object_store_mb)
        cluster.wait_nodes(len(nodes))
        for node in cluster.nodes:
            node.processes()
    except BaseException:
        cluster.stop()
        raise
    return cluster


# --- Serve ---------------------------------------------------------------------------------


def serve_config_for_cluster(
    base: Path, bundle: Path, port: int, replicas: int, max_replicas_per_node: int = 1
) -> dict[str, Any]:
    """configs/serve.yaml (`base`) ready for a multi-node deploy: the bundle's absolute
    path, HTTP on 127.0.0.1:`port`, `replicas` model replicas at most
    `max_replicas_per_node` to a node (so two replicas land on two nodes), and the HTTP
    proxy on the head only (`proxy_location: HeadOnly`: with Serve's default, a proxy on
    every node, two proxies would bind the same address on one machine)."""
    import yaml

    from serving.app import AppArgs
    from serving.deploy import model_deployment_name

    config = yaml.safe_load(base.read_text())
    config["proxy_location"] = "HeadOnly"
    config["http_options"] = {**config.get("http_options", {}), "host": LOOPBACK, "port": port}
    (app,) = config["applications"]
    app["args"] = {**app["args"], "bundle_path": str(bundle.resolve()), "replicas": replicas}
    name = model_deployment_name(AppArgs(**app["args"]))
    app["deployments"] = [{"name": name, "max_replicas_per_node": max_replicas_per_node}]
    return config


def serve_cli(cluster: LocalCluster, *args: str, timeout: float = 120) -> str:
    """Serve's CLI (`serve deploy FILE`, `serve status`, `serve shutdown -y`) against the
    cluster's dashboard; its stdout (RuntimeError with its output when it fails)."""
    done = subprocess.run(
        [str(_BIN / "serve"), *args, "-a", cluster.dashboard],
        env=cluster.env,
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=REPO_ROOT,
    )
    if done.returncode != 0:
        raise RuntimeError(f"serve {' '.join(args)} failed:\n{done.stdout}\n{done.stderr}")
    return done.stdout


def serve_status(cluster: LocalCluster) -> dict[str, Any]:
    import yaml

    return yaml.safe_load(serve_cli(cluster, "status")) or {}


def replica_states(status: dict[str, Any], app: str, deployment: str) -> dict[str, int]:
    """{"RUNNING": n, ...} of one deployment in `serve status` output."""
    apps = status.get("applications") or {}
    return ((apps.get(app) or {}).get("deployments", {}).get(deployment) or {}).get(
        "replica_states"
    ) or {}


def wait_app_running(
    cluster: LocalCluster, app: str, deployment: str, replicas: int, timeout: float = 240
) -> dict[str, Any]:
    """Wait until `app` is RUNNING with `replicas` running replicas of `deployment`; the
    `serve status` then. RuntimeError if the deploy failed, TimeoutError after `timeout`."""
    deadline = time.monotonic() + timeout
    while True:
        status = serve_status(cluster)
        state = (status.get("applications") or {}).get(app) or {}
        if state.get("status") == "DEPLOY_FAILED":
            raise RuntimeError(f"deploying {app} failed: {state.get('message')}")
        running = replica_states(status, app, deployment).get("RUNNING", 0)
        if state.get("status") == "RUNNING" and running == replicas:
            return status
        if time.monotonic() > deadline:
            raise TimeoutError(f"{app} not running with {replicas} replicas: {state}")
        time.sleep(1.0)


def listening_addresses(port: int) -> set[str]:
    """Local addresses with a TCP socket listening on `port`, IPv4 and IPv6 (an
    IPv4-mapped IPv6 address, as Ray's GCS uses, counts as its IPv4 address)."""
    out = set()
    for table in ("tcp", "tcp6"):
        path = Path("/proc/net") / table
        if not path.is_file():
            continue
        for line in path.read_text().splitlines()[1:]:
            local, state = line.split()[1], line.split()[3]
            host_hex, port_hex = local.split(":")
            if state != "0A" or int(port_hex, 16) != port:
                continue
            raw = bytes.fromhex(host_hex)  # 32-bit words in host (little-endian) order
            raw = b"".join(raw[i : i + 4][::-1] for i in range(0, len(raw), 4))
            if len(raw) == 4:
                out.add(socket.inet_ntop(socket.AF_INET, raw))
            elif raw[:12] == b"\0" * 10 + b"\xff\xff":
                out.add(socket.inet_ntop(socket.AF_INET, raw[12:]))
            else:
                out.add(socket.inet_ntop(socket.AF_INET6, raw))
    return out


# --- the batch job -------------------------------------------------------------------------


def recommend_cli(
    bundle: Path,
    out: Path,
    k: int,
    actors: int,
    cluster: LocalCluster | None = None,
    batch_size: int = 64,
    timeout: float = 300,
) -> dict[str, Any]:
    """`recsys recommend BUNDLE --out OUT --k K --actors N --batch-size B`, with
    `--address` of `cluster` when given (else on the command's own embedded Ray); its JSON
    report."""
    cmd = [str(_BIN / "recsys"), "recommend", str(bundle), "--out", str(out), "--k", str(k)]
    cmd += ["--retriever", "rails", "--actors", str(actors), "--batch-size", str(batch_size)]
    env = dict(os.environ)
    if cluster is not None:
        cmd += ["--address", cluster.address]
        # Ray Data hands out work as soon as one actor of the pool is up; on a busy
        # machine the first can finish a small job before the other node's has started.
        # Waiting for the whole pool makes every node's actor take part.
        env = {**cluster.env, "RAY_DATA_DEFAULT_WAIT_FOR_MIN_ACTORS_S": "300"}
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=timeout)
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed:\n{done.stderr[-4000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def library_recommendations(bundle: Path, keys: list[str], k: int) -> dict[str, list]:
    """What the batch job computes for `keys` (rails retriever and budget, seen items
    excluded, one thread as each of its actors), by the library in this process: the
    single-process reference, as columns like the job's Parquet."""
    import torch

    from recsys.recommend import DEFAULT_RAILS_BUDGET, Recommender, RecRequest

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        rec = Recommender.load(
            bundle.resolve(), default_retriever="rails", rails_budget=DEFAULT_RAILS_BUDGET
        )
        results = rec.recommend([RecRequest(user_key=u, k=k, exclude_seen=True) for u in keys])
    finally:
        torch.set_num_threads(before)
    return {
        "user_key": list(keys),
        "item_keys": [list(r.item_keys) for r in results],
        "scores": [[float(x) for x in r.scores] for r in results],
        "fallback": [r.fallback for r in results],
    }


def compare_recommendations(got: dict[str, list], want: dict[str, list]) -> dict[str, Any]:
    """Two batch outputs row by row (any row order): the same users, the same items in the
    same order, the same fallbacks, scores within float32 noise (relative 1e-5)."""
    import numpy as np

    g = {u: i for i, u in enumerate(got["user_key"])}
    w = {u: i for i, u in enumerate(want["user_key"])}
    users = sorted(set(g) & set(w))
    same_users = set(g) == set(w) and len(g) == len(got["user_key"]) == len(want["user_key"])
    items_equal = all(got["item_keys"][g[u]] == want["item_keys"][w[u]] for u in users)
    fallback_equal = all(got["fallback"][g[u]] == want["fallback"][w[u]] for u in users)
    max_diff, scale = 0.0, 0.0
    for u in users:
        a = np.asarray(got["scores"][g[u]], dtype=np.float64)
        b = np.asarray(want["scores"][w[u]], dtype=np.float64)
        if a.shape == b.shape and a.size:
            max_diff = max(max_diff, float(np.abs(a - b).max()))
            scale = max(scale, float(np.abs(b).max()))
    scores_close = max_diff <= 1e-5 * max(scale, 1.0)
    return {
        "users": len(users),
        "same_users": same_users,
        "items_equal": items_equal,
        "fallback_equal": fallback_equal,
        "max_abs_score_diff": max_diff,
        "equal": same_users and items_equal and fallback_equal and scores_close,
    }


# --- load with a node failure --------------------------------------------------------------


def load_with_kill(
    port: int,
    bodies: list[dict[str, Any]],
    concurrency: int,
    kill_after_s: float,
    seconds: float,
    kill: Callable[[], None],
) -> dict[str, Any]:
    """Closed-loop HTTP load (`concurrency` keep-alive clients) on 127.0.0.1:`port` for
    `seconds`; `kill()` runs in a thread `kill_after_s` into it. Returns the wall time of
    the kill, how long `kill()` took, and per request its start and end (seconds relative
    to the kill) and HTTP status (0: no answer: connection error or timeout)."""
    from serving.loadgen import REQUEST_TIMEOUT_S, HttpConnection, encode_post

    raw = [encode_post(LOOPBACK, port, "/v1/recommend", b) for b in bodies]
    records: list[tuple[float, float, int]] = []
    kill_times: list[float] = []

    async def client(first: int, stop_at: float) -> None:
        conn, i = HttpConnection(LOOPBACK, port), first
        while (start := time.perf_counter()) < stop_at:
            i = (i + concurrency) % len(raw)
            try:
                async with asyncio.timeout(REQUEST_TIMEOUT_S):
                    status, _ = await conn.send(raw[i])
            except (OSError, TimeoutError, asyncio.IncompleteReadError, ValueError):
                conn.close()
                status = 0
            records.append((start, time.perf_counter(), status))
        conn.close()

    async def killer(at: float) -> None:
        await asyncio.sleep(max(0.0, at - time.perf_counter()))
        kill_times.extend([time.perf_counter(), time.time()])
        await asyncio.to_thread(kill)
        kill_times.append(time.perf_counter())

    async def run() -> None:
        t0 = time.perf_counter()
        clients = (client(c, t0 + seconds) for c in range(concurrency))
        await asyncio.gather(killer(t0 + kill_after_s), *clients)

    asyncio.run(run())
    t_kill, wall_kill, t_done = kill_times
    return {
        "kill_wall_time": wall_kill,
        "kill_call_s": round(t_done - t_kill, 3),
        "requests": [
            {"start": s - t_kill, "end": e - t_kill, "status": st} for s, e, st in records
        ],
    }


def summarize(requests: list[dict[str, Any]]) -> dict[str, Any]:
    """Counts, statuses and latency percentiles (of the OK answers) of `requests`."""
    import numpy as np

    ok = [r for r in requests if r["status"] == 200]
    lat = np.asarray([(r["end"] - r["start"]) * 1000 for r in ok])
    span = max((r["end"] for r in requests), default=0.0) - min(
        (r["start"] for r in requests), default=0.0
    )
    statuses: dict[str, int] = {}
    for r in requests:
        statuses[str(r["status"])] = statuses.get(str(r["status"]), 0) + 1

    def pct(q: float) -> float | None:
        return round(float(np.percentile(lat, q)), 1) if lat.size else None

    return {
        "sent": len(requests),
        "ok": len(ok),
        "failed": len(requests) - len(ok),
        "statuses": statuses,
        "ok_per_s": round(len(ok) / span, 1) if span > 0 else None,
        "p50_ms": pct(50),
        "p99_ms": pct(99),
        "max_ms": round(float(lat.max()), 1) if lat.size else None,
    }


# --- `ray start` on loopback ---------------------------------------------------------------


def _ray_start(argv: list[str]) -> None:
    """`ray start ARGV` with Ray's node address on loopback (see the module docstring)."""
    os.environ[_LOOPBACK_ENV] = "0"
    import types

    import ray._private.ray_constants as ray_constants
    from ray.scripts import scripts

    # Only the CLI's "multi-node is not supported here" guard sees clusters as enabled;
    # Ray's address resolution (ray._private.services) keeps loopback.
    shim = types.ModuleType(ray_constants.__name__)
    shim.__dict__.update(vars(ray_constants))
    shim.ENABLE_RAY_CLUSTER = True  # type: ignore[attr-defined]
    scripts.ray_constants = shim  # type: ignore[attr-defined]
    sys.argv = ["ray", "start", *argv]
    scripts.main()


if __name__ == "__main__":
    if len(sys.argv) < 2 or sys.argv[1] != "ray-start":
        raise SystemExit("usage: python -m serving.cluster ray-start [ray start options]")
    _ray_start(sys.argv[2:])
