"""Settings that the embedded Ray and the local cluster hand to Ray's processes."""

from __future__ import annotations

from serving.cluster import cluster_env
from serving.local_ray import PROXY_READY_ENV, PROXY_READY_TIMEOUT_S


def test_cluster_processes_give_serve_proxy_a_minute_to_start() -> None:
    # Serve's 5 s default killed the HTTP proxy before it ran on a busy 2-core machine.
    env = cluster_env("token")
    assert float(env[PROXY_READY_ENV]) == float(PROXY_READY_TIMEOUT_S) >= 60
    assert env["RAY_AUTH_TOKEN"] == "token"
