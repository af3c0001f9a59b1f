"""The embedded Ray that `recsys serve`, `recsys recommend` and the benchmark start locally.

A fresh single-node instance (`address="local"`: it never attaches to a cluster that
happens to run on the machine), no dashboard, a small object store, and Ray's node address
set to 127.0.0.1 so its control-plane ports listen on loopback. The HTTP endpoint binds the
host given to `serving.deploy.deploy` (127.0.0.1 by default). Ray itself leaves a few
listeners on all interfaces that no setting moves: each Serve replica's inter-deployment
gRPC server and, with the HAProxy ingress, HAProxy's stats and metrics ports.

Two HTTP ingresses (Serve's own choices, set before Ray starts because its processes read
them from the environment):
- "proxy": Serve's Python HTTP proxy forwards each request to a replica (the default);
- "haproxy": Serve's HAProxy ingress sends requests straight to the replicas' own HTTP
  servers ("direct ingress"), skipping the Python proxy hop; several times the throughput of
  "proxy" on a 2-core machine (see benchmarks/bench_serve.py).
On a real cluster use `serve deploy configs/serve.yaml` or `recsys recommend --address`.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import socket
from collections.abc import Iterator
from typing import Literal

DEFAULT_OBJECT_STORE_BYTES = 256 * 1024**2
INGRESSES = ("proxy", "haproxy")
Ingress = Literal["proxy", "haproxy"]

# Read by Ray when it is imported and inherited by its processes: with it, Ray takes the
# loopback address as the node address instead of the machine's network address.
_LOOPBACK_ENV = "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"
_HAPROXY_ENV = "RAY_SERVE_ENABLE_HA_PROXY"
# HAProxy's fixed default ports would collide between two embedded instances on one machine.
_HAPROXY_PORT_ENVS = ("RAY_SERVE_HAPROXY_STATS_PORT", "RAY_SERVE_HAPROXY_METRICS_PORT")
# Serve gives a new HTTP proxy actor 5 s to come up before it kills and restarts it. On a
# busy 2-core machine the proxy's worker process takes longer than that to start (seen
# with a training run beside the tests: the proxy was killed before it ran, and serve.run
# failed), so the embedded Ray and the local cluster give it a minute. A value already in
# the environment wins.
PROXY_READY_ENV = "RAY_SERVE_PROXY_READY_CHECK_TIMEOUT_S"
PROXY_READY_TIMEOUT_S = "60"
# Ray 2.60 turns token authentication on for a new local instance when this is unset, logs
# a warning telling the user how to opt out, and writes a token to ~/.ray/auth_token, which
# then turns token auth on for every Ray the user starts on the machine later. The embedded
# Ray asks for token mode itself, with a token of its own (see _use_token_auth).
AUTH_MODE_ENV = "RAY_AUTH_MODE"
AUTH_TOKEN_ENV = "RAY_AUTH_TOKEN"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _set_ingress_env(ingress: Ingress) -> None:
    if ingress not in INGRESSES:
        raise ValueError(f"ingress: expected one of {INGRESSES}, got {ingress!r}")
    if ingress == "haproxy":
        os.environ[_HAPROXY_ENV] = "1"
        for name in _HAPROXY_PORT_ENVS:
            os.environ[name] = str(_free_port())
    else:
        os.environ[_HAPROXY_ENV] = "0"


def _use_token_auth() -> None:
    """Token authentication for the instance about to start, unless the user chose a mode.

    Ray's own default in two steps (set the mode in the environment, which Ray's processes
    inherit, then re-read Ray's configuration, cached when Ray was imported), minus the
    warning, and with a random token in the environment (one per process; a token the user
    set wins) instead of one written to the home directory. The token loader's cache is
    dropped so that this process reads the token it was just given.
    """
    if AUTH_MODE_ENV in os.environ:
        return
    os.environ[AUTH_MODE_ENV] = "token"
    os.environ.setdefault(AUTH_TOKEN_ENV, secrets.token_hex(32))
    from ray._raylet import AuthenticationTokenLoader, Config  # type: ignore[attr-defined]

    Config.initialize("")
    AuthenticationTokenLoader.instance().reset_cache()


def start_local_ray(
    num_cpus: int | None = None,
    object_store_bytes: int = DEFAULT_OBJECT_STORE_BYTES,
    log_to_driver: bool = True,
    ingress: Ingress = "proxy",
) -> None:
    """Start a fresh single-node Ray on 127.0.0.1 in this process.

    log_to_driver: print the workers' and replicas' logs here (off in tests/benchmarks).
    ingress: the HTTP ingress Serve will use on this instance ("proxy" or "haproxy").
    """
    _set_ingress_env(ingress)
    os.environ[_LOOPBACK_ENV] = "0"
    os.environ.setdefault(PROXY_READY_ENV, PROXY_READY_TIMEOUT_S)
    import ray
    from ray._private import ray_constants

    # If Ray was imported before the variable was set, its constant is already fixed.
    ray_constants.ENABLE_RAY_CLUSTER = False
    _use_token_auth()
    ray.init(
        address="local",
        num_cpus=num_cpus,
        object_store_memory=object_store_bytes,
        include_dashboard=False,
        _node_ip_address="127.0.0.1",
        log_to_driver=log_to_driver,
    )


def stop_local_ray() -> None:
    """Stop the embedded Ray and every process it started (Serve's included); safe to call
    when none runs.

    The whole instance goes away, so Serve's own graceful shutdown is skipped: with the
    HAProxy ingress it waits 30 s for a drain that nothing needs here.
    """
    import ray

    if ray.is_initialized():
        ray.shutdown()


@contextlib.contextmanager
def local_ray(
    num_cpus: int | None = None,
    object_store_bytes: int = DEFAULT_OBJECT_STORE_BYTES,
    log_to_driver: bool = True,
    ingress: Ingress = "proxy",
) -> Iterator[None]:
    """`start_local_ray` ... `stop_local_ray`, also on errors and Ctrl-C."""
    start_local_ray(num_cpus, object_store_bytes, log_to_driver, ingress)
    try:
        yield
    finally:
        stop_local_ray()
