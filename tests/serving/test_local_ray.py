"""Settings that the embedded Ray and the local cluster hand to Ray's processes."""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest

from serving.cluster import cluster_env
from serving.local_ray import AUTH_MODE_ENV, PROXY_READY_ENV, PROXY_READY_TIMEOUT_S, _use_token_auth


def test_cluster_processes_give_serve_proxy_a_minute_to_start() -> None:
    # Serve's 5 s default killed the HTTP proxy before it ran on a busy 2-core machine.
    env = cluster_env("token")
    assert float(env[PROXY_READY_ENV]) == float(PROXY_READY_TIMEOUT_S) >= 60
    assert env["RAY_AUTH_TOKEN"] == "token"


@pytest.fixture
def no_auth_mode(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """RAY_AUTH_MODE unset, as on a fresh machine; Ray's cached configuration re-read after."""
    from ray._raylet import Config

    monkeypatch.delenv(AUTH_MODE_ENV, raising=False)
    yield
    monkeypatch.undo()
    Config.initialize("")


def test_embedded_ray_asks_for_token_auth_so_ray_does_not_warn(
    no_auth_mode: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    from ray._private.authentication import authentication_token_setup as setup
    from ray._raylet import AuthenticationMode, get_authentication_mode

    warnings: list[str] = []
    monkeypatch.setattr(setup, "_warn_token_auth_enabled", lambda: warnings.append("on"))
    _use_token_auth()
    assert os.environ[AUTH_MODE_ENV] == "token"
    assert get_authentication_mode() == AuthenticationMode.TOKEN
    # What ray.init runs for a new local instance: token mode, and no opt-out tip.
    assert setup.enable_token_auth_by_default() is True
    assert warnings == []


def test_a_mode_the_user_chose_wins(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(AUTH_MODE_ENV, "disabled")
    _use_token_auth()
    assert os.environ[AUTH_MODE_ENV] == "disabled"
