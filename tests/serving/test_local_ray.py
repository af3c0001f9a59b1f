"""Settings that the embedded Ray and the local cluster hand to Ray's processes."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from serving.cluster import cluster_env
from serving.local_ray import (
    AUTH_MODE_ENV,
    AUTH_TOKEN_ENV,
    PROXY_READY_ENV,
    PROXY_READY_TIMEOUT_S,
    _use_token_auth,
)


def test_cluster_processes_give_serve_proxy_a_minute_to_start() -> None:
    # Serve's 5 s default killed the HTTP proxy before it ran on a busy 2-core machine.
    env = cluster_env("token")
    assert float(env[PROXY_READY_ENV]) == float(PROXY_READY_TIMEOUT_S) >= 60
    assert env["RAY_AUTH_TOKEN"] == "token"


@pytest.fixture
def no_auth_mode(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[Path]:
    """RAY_AUTH_MODE and RAY_AUTH_TOKEN unset and an empty home, as on a fresh machine;
    Ray's cached configuration and token re-read after. Yields the home directory."""
    from ray._raylet import AuthenticationTokenLoader, Config

    monkeypatch.delenv(AUTH_MODE_ENV, raising=False)
    monkeypatch.delenv(AUTH_TOKEN_ENV, raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))
    yield tmp_path
    monkeypatch.undo()
    Config.initialize("")
    AuthenticationTokenLoader.instance().reset_cache()


def test_embedded_ray_asks_for_token_auth_so_ray_does_not_warn(
    no_auth_mode: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from ray._private.authentication import authentication_token_setup as setup
    from ray._raylet import AuthenticationMode, AuthenticationTokenLoader, get_authentication_mode

    warnings: list[str] = []
    monkeypatch.setattr(setup, "_warn_token_auth_enabled", lambda: warnings.append("on"))
    _use_token_auth()
    assert os.environ[AUTH_MODE_ENV] == "token" and len(os.environ[AUTH_TOKEN_ENV]) == 64
    assert get_authentication_mode() == AuthenticationMode.TOKEN
    # What ray.init runs for a new local instance: token mode, no opt-out tip, and the
    # token from the environment rather than a new one written to the home directory.
    assert setup.enable_token_auth_by_default() is True
    setup.ensure_token_if_auth_enabled()
    assert warnings == []
    assert AuthenticationTokenLoader.instance().has_token(ignore_auth_mode=True)
    assert not (no_auth_mode / ".ray").exists()


def test_a_token_the_user_set_is_kept(no_auth_mode: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(AUTH_TOKEN_ENV, "u" * 64)
    _use_token_auth()
    assert os.environ[AUTH_TOKEN_ENV] == "u" * 64


def test_a_mode_the_user_chose_wins(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(AUTH_MODE_ENV, "disabled")
    _use_token_auth()
    assert os.environ[AUTH_MODE_ENV] == "disabled"
