"""`recsys export`: a trained model -> a bundle directory (`recsys.bundle`)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "export",
        help="export a trained model to a bundle directory (weights, item index, id maps)",
        description=(
            "Write a bundle (model.safetensors, index.safetensors, config.json, items.parquet, "
            "users.parquet, histories.parquet, seen.parquet, metadata.json) atomically to --out."
        ),
    )
    p.add_argument(
        "--checkpoint",
        required=True,
        type=Path,
        help="run directory, best.safetensors (model_config.json beside it) or Lightning .ckpt",
    )
    p.add_argument("--out", required=True, type=Path, help="bundle directory to write")
    p.add_argument(
        "--data",
        type=Path,
        default=None,
        help="dataset directory (default: the one recorded by the training run)",
    )
    p.set_defaults(func=_export)


def _export(args: argparse.Namespace) -> int:
    from recsys.bundle import export_bundle, load_bundle

    out = export_bundle(args.checkpoint, args.out, args.data)
    bundle = load_bundle(out)  # a bundle that does not load back is not reported as written
    print(
        f"wrote bundle {out} (model_version {bundle.model_version}, {bundle.num_items} items, "
        f"{bundle.num_users} users)"
    )
    for warning in bundle.metadata.get("warnings", []):
        print(f"warning: {warning}", file=sys.stderr)
    return 0
