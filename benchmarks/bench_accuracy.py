"""Accuracy benchmark: train and evaluate configs on the real data sets in ../shared/data.

For each (dataset, config) pair it prepares the dataset directory once (cached under
--data-cache), trains with `recsys.training.run.train` (model selection on validation,
never test), and writes benchmarks/results/<dataset>-<config>.json with every metric on
valid and test, the popularity baseline, the selected epoch, the epochs run, the validation
curve, wall time, device, commit and seed.

    recsys bench accuracy --dataset ml-1m --config configs/ml-1m-hstu-mol.yaml
    recsys bench accuracy --dataset beauty --config configs/beauty-sasrec-mol.yaml \
        --max-epochs 20

Skips cleanly (exit 0 with a message) when the data directory is absent.
"""

from __future__ import annotations

import argparse
import csv
import json
import time
from pathlib import Path

import torch

from pipelines.shared_data import prepared_sequences, shared_data_dir
from recsys.atomic import atomic_write_text
from recsys.provenance import REPO_ROOT, provenance

RESULTS = REPO_ROOT / "benchmarks" / "results"

# name -> file inside the shared data directory (all in the one-line-per-user format).
DATASETS = {
    "ml-1m": "ml-1m/sequences.txt",
    "beauty": "amazon/Beauty.txt",
    "sports": "amazon/Sports_and_Outdoors.txt",
}


def prepared(dataset: str, cache: Path) -> Path | None:
    """The prepared dataset directory for `dataset`, built on first use; None if no data."""
    return prepared_sequences(DATASETS[dataset], cache / dataset)


def epochs_run(run_dir: Path) -> int | None:
    """Epochs completed, read from the CSV logger (max logged epoch + 1)."""
    epochs = [
        int(row["epoch"])
        for log in run_dir.glob("logs/version_*/metrics.csv")
        for row in csv.DictReader(log.open())
        if row.get("epoch")
    ]
    return max(epochs) + 1 if epochs else None


def validation_curve(run_dir: Path) -> list[dict[str, float]]:
    """Per-epoch validation hr@10 / ndcg@10 from the CSV logger (resumed runs included)."""
    by_epoch = {}
    for log in sorted(run_dir.glob("logs/version_*/metrics.csv")):
        for row in csv.DictReader(log.open()):
            if row.get("valid/hr@10"):
                by_epoch[int(row["epoch"])] = {
                    "epoch": int(row["epoch"]),
                    "hr@10": round(float(row["valid/hr@10"]), 4),
                    "ndcg@10": round(float(row["valid/ndcg@10"]), 4),
                }
    return [by_epoch[e] for e in sorted(by_epoch)]


def run_one(dataset: str, config_path: Path, args: argparse.Namespace) -> Path | None:
    from recsys.training.config import load_config
    from recsys.training.run import train

    data_dir = prepared(dataset, Path(args.data_cache))
    if data_dir is None:
        print(f"skip {dataset}: {shared_data_dir() / DATASETS[dataset]} is absent")
        return None
    config = load_config(config_path)
    run_dir = Path(args.runs) / f"{dataset}-{config_path.stem}"
    resume = run_dir if (run_dir / "checkpoints" / "last.ckpt").is_file() else None
    start = time.perf_counter()
    metrics = train(
        config,
        data_dir=data_dir,
        out_dir=run_dir,
        resume=resume,
        max_epochs=args.max_epochs,
        progress_bar=args.progress,
    )
    wall = time.perf_counter() - start
    info = json.loads((run_dir / "model_config.json").read_text())
    result = {
        "dataset": dataset,
        "config": str(config_path),
        "valid": metrics["valid"],
        "test": metrics["test"],
        "popularity": metrics["popularity"],
        "selected_on": info.get("selected_on"),
        "selected_epoch": info.get("best_epoch"),
        "epochs_run": epochs_run(run_dir),
        "valid_by_epoch": validation_curve(run_dir),
        "max_epochs": args.max_epochs or config.training.epochs,
        "resumed": resume is not None,
        "wall_time_s": round(wall, 1),
        "device": "cuda:" + torch.cuda.get_device_name(0) if torch.cuda.is_available() else "cpu",
        "seed": config.training.seed,
        "run_dir": str(run_dir),
        "provenance": provenance(),
    }
    out = RESULTS / f"{dataset}-{config_path.stem}.json"
    atomic_write_text(out, json.dumps(result, indent=2) + "\n")
    test = metrics["test"]
    print(
        f"{dataset} {config_path.stem}: test hr@10 {test['hr@10']:.4f} ndcg@10 "
        f"{test['ndcg@10']:.4f} (popularity hr@10 {metrics['popularity']['hr@10']:.4f}) -> {out}"
    )
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="recsys bench accuracy", description=__doc__.split("\n")[0]
    )
    parser.add_argument("--dataset", choices=sorted(DATASETS), required=True)
    parser.add_argument("--config", type=Path, nargs="+", required=True, help="YAML run configs")
    parser.add_argument("--max-epochs", type=int, default=None, help="override training.epochs")
    parser.add_argument("--data-cache", default="data", help="where prepared datasets are kept")
    parser.add_argument("--runs", default="runs/bench", help="where run directories go")
    parser.add_argument("--progress", action="store_true", help="show Lightning's progress bar")
    args = parser.parse_args(argv)
    for config_path in args.config:
        run_one(args.dataset, config_path, args)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
