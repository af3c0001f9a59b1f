"""`recsys demo`: the whole product on built-in data, end to end, in a few minutes.

synthetic log -> dataset directory -> train (HSTU + MoL, configs/demo.yaml) -> evaluate
beside popularity -> export a bundle -> serve it on 127.0.0.1 (Ray Serve) -> query it over
HTTP for a known user and for a made-up history -> shut down.

Every stage is the same code the CLI subcommands run; the demo only chains them.
"""

from __future__ import annotations

import argparse
import datetime as dt
import socket
import time
from pathlib import Path
from typing import Any

from recsys.errors import UserError
from recsys.provenance import REPO_ROOT

DEMO_CONFIG = REPO_ROOT / "configs" / "demo.yaml"


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "demo",
        help="synthetic data -> train -> evaluate -> export -> serve -> query",
        description=__doc__.split("\n\n")[1] if __doc__ else None,
    )
    p.add_argument("--out", default="out/demo", help="working directory (default out/demo)")
    p.add_argument("--config", default=str(DEMO_CONFIG), help="run config (default demo.yaml)")
    p.add_argument("--max-epochs", type=int, default=None, help="override training.epochs")
    p.add_argument("--no-serve", action="store_true", help="stop after the export")
    p.add_argument("--port", type=int, default=0, help="HTTP port (default: a free one)")
    p.set_defaults(func=run_demo)


def _step(title: str) -> None:
    print(f"\n=== {title} ===", flush=True)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def run_demo(args: argparse.Namespace) -> int:
    from app.train import load_run_config
    from pipelines.synth import make_dataset, synth_config
    from recsys.bundle import export_bundle
    from recsys.dataset import load_dataset
    from recsys.evaluation import format_table
    from recsys.training.run import train

    out = Path(args.out)
    config = load_run_config(args.config)
    data_dir = out / "data"
    run_dir = out / "runs" / dt.datetime.now().strftime("%Y%m%d-%H%M%S")

    _step("1. data: synthetic log with planted sequential structure")
    if config.data.synthetic is None:
        raise UserError(f"{args.config}: the demo needs a data.synthetic section")
    if not (data_dir / "stats.json").is_file():
        make_dataset(synth_config(config.data.synthetic), data_dir)
    data = load_dataset(data_dir)
    print(
        f"{data_dir}: {data.num_users:,} users, {data.num_items:,} items, "
        f"{data.num_interactions:,} interactions"
    )

    _step("2. train + evaluate (model selected on validation, reported on test)")
    started = time.perf_counter()
    metrics = train(
        config, data_dir=data_dir, out_dir=run_dir, max_epochs=args.max_epochs, progress_bar=False
    )
    print(f"trained in {time.perf_counter() - started:.0f} s -> {run_dir}")
    print(
        format_table({"model (test)": metrics["test"], "popularity (test)": metrics["popularity"]})
    )
    for warning in metrics["warnings"]:
        print(f"warning: {warning}")

    _step("3. export the bundle")
    bundle = export_bundle(run_dir, out / "bundle")
    print(f"bundle: {bundle}")
    print(
        f"(to check it against its run's figures: "
        f"recsys evaluate --bundle {bundle} --data {data_dir})"
    )
    if args.no_serve:
        return 0

    _step("4. serve on 127.0.0.1 (Ray Serve) and query over HTTP")
    _serve_and_query(bundle, data, args.port or _free_port())
    return 0


def _serve_and_query(bundle: Path, data: Any, port: int) -> None:
    import httpx

    from serving.app import AppArgs
    from serving.deploy import deploy
    from serving.local_ray import local_ray

    host = "127.0.0.1"
    url = f"http://{host}:{port}"
    with local_ray(num_cpus=2, log_to_driver=False):
        deploy(AppArgs(bundle_path=str(bundle.resolve())), host=host, port=port)
        with httpx.Client(base_url=url, timeout=30.0) as client:
            model = client.get("/v1/model").json()
            print(f"{url}/v1/model: version {model['model_version']}, {model['num_items']} items")
            user = str(data.user_keys[0])
            _show(client, f"user {user}", {"user_id": user, "k": 5})
            history = [str(k) for k in data.item_keys[1:4]] + ["not-an-item"]
            _show(client, f"made-up history {history}", {"history": history, "k": 5})
            _show(client, "unknown user, no history", {"user_id": "nobody", "k": 5})
    print("server stopped")


def _show(client: Any, label: str, body: dict[str, Any]) -> None:
    response = client.post("/v1/recommend", json=body)
    response.raise_for_status()
    answer = response.json()
    print(
        f"\n{label}: retriever={answer['retriever']} fallback={answer['fallback']}"
        + (f" unknown_items={answer['unknown_items']}" if answer.get("unknown_items") else "")
    )
    for item in answer["items"]:
        title = f"  {item['title']}" if item.get("title") else ""
        print(f"  {item['item_id']:>8}  {item['score']:8.3f}{title}")
