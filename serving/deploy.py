"""Deploy the app onto the connected Ray the way `serve run configs/serve.yaml` does.

Serve updates replicas in place (calling `reconfigure`, no restart) only for applications
deployed from a config whose import path and args are unchanged; `serve.run` of a built
app always replaces the replicas. So `recsys serve`, the tests and the benchmark deploy
`serving.app:build_app` from a config, and a hot swap is the same config with a
`deployments: [{name: <model deployment>, user_config: {...}}]` override.
"""

from __future__ import annotations

import time
from typing import Any

from ray import serve
from ray.serve._private.api import serve_start
from ray.serve.schema import ApplicationStatus, ServeDeploySchema

from recsys.errors import UserError
from serving.app import AppArgs

APP_NAME = "recsys"
IMPORT_PATH = "serving.app:build_app"
DEPLOY_TIMEOUT_S = 180.0


def model_deployment_name(args: AppArgs) -> str:
    """Name of the deployment whose user_config swaps bundles."""
    return "Noop" if args.noop else "Recommender" if args.layout == "single" else "RecommenderModel"


def app_config(
    args: AppArgs, host: str, port: int, user_config: dict[str, Any] | None = None
) -> ServeDeploySchema:
    """The serve.yaml equivalent of `args`; `user_config` goes to the model deployment."""
    app: dict[str, Any] = {
        "name": APP_NAME,
        "route_prefix": "/",
        "import_path": IMPORT_PATH,
        "args": args.model_dump(exclude_defaults=True),
    }
    if user_config is not None:
        app["deployments"] = [{"name": model_deployment_name(args), "user_config": user_config}]
    return ServeDeploySchema.model_validate(
        {"http_options": {"host": host, "port": port}, "applications": [app]}
    )


def deploy(args: AppArgs, host: str, port: int, user_config: dict[str, Any] | None = None) -> None:
    """Deploy (or update in place) the app and wait until it runs; UserError if it fails."""
    config = app_config(args, host, port, user_config)
    started = time.time()
    # What Serve's own `serve run CONFIG` does; there is no public Python call for a config
    # deploy, and only a config deploy lets Serve update replicas in place.
    client = serve_start(http_options=config.http_options.model_dump())
    client.deploy_apps(config)
    wait_until_running(APP_NAME, since=started)


def wait_until_running(name: str, since: float, timeout_s: float = DEPLOY_TIMEOUT_S) -> None:
    deadline = time.time() + timeout_s
    while time.time() < deadline:
        app = serve.status().applications.get(name)
        if app is not None and app.last_deployed_time_s >= since - 1:  # this deploy's state
            if app.status == ApplicationStatus.RUNNING:
                return
            if app.status == ApplicationStatus.DEPLOY_FAILED:
                raise UserError(f"deploying the app failed: {app.message}")
        time.sleep(0.2)
    raise UserError(f"the app was not running after {timeout_s:.0f} s (see the Serve logs)")
