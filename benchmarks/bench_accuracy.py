"""Accuracy benchmark: train and evaluate configs on the real data sets in ../shared/data.

For each (dataset, config) pair it prepares the dataset directory once (cached under
--data-cache), trains with `recsys.training.run.train` (model selection on validation,
never test), and writes benchmarks/results/<dataset>-<config>.json with every metric on
valid and test, the popularity baseline, the selected epoch, the epochs run, the validation
curve, wall time, device, commit and seed. It also updates the dataset's summary,
benchmarks/results/accuracy-<dataset>.json: one row per config (replaced when the config
is run again), the source of the README's results tables, and the selected model's rank
of every valid and test query to benchmarks/results/ranks/<dataset>-<config>.parquet
(`benchmarks.query_ranks`: paired comparisons without the run directory). Each run trains in
runs/bench/<dataset>-<config>-<hash of the config>, and rerunning the same command resumes
it from its last checkpoint (a run spanning sessions); a resumed run's wall time adds
the fitting time its checkpoint recorded for the runs it continues. `--refit` also runs the
refit protocol (train + validation targets, the selected number of epochs) and records its
test figures beside the selected model's. `--refit-from RESULT` runs only the refit, for the
epoch count a committed result selected on validation (the same config, trained earlier,
perhaps at another commit; RESULT names that selection in the refit record), and adds it
to RESULT and its summary row: the refit of a run whose run directory is gone.

    recsys bench accuracy --dataset ml-1m --config configs/ml-1m-hstu-mol.yaml
    recsys bench accuracy --dataset beauty --config configs/beauty-sasrec-mol.yaml \
        --max-epochs 20
    recsys bench accuracy --dataset ml-1m --config configs/ml-1m-hstu-mol-cpu.yaml \
        --refit-from benchmarks/results/ml-1m-ml-1m-hstu-mol-cpu.json

Skips cleanly (exit 0 with a message) when the data directory is absent.
"""

from __future__ import annotations

import argparse
import csv
import hashlib
import json
import time
from pathlib import Path

import torch

from benchmarks.shared_data import prepared_sequences, shared_data_dir
from recsys.atomic import atomic_write_text
from recsys.malloc import tune_malloc
from recsys.provenance import REPO_ROOT, provenance

RESULTS = REPO_ROOT / "benchmarks" / "results"

# name -> file inside the shared data directory (one line per user, except ML-100K's
# official u.data, which carries timestamps).
DATASETS = {
    "ml-1m": "ml-1m/sequences.txt",
    "ml-100k": "ml-100k/u.data",
    "beauty": "amazon/Beauty.txt",
    "sports": "amazon/Sports_and_Outdoors.txt",
}
FORMATS = {"ml-100k": "movielens"}


def prepared(dataset: str, cache: Path) -> Path | None:
    """The prepared dataset directory for `dataset`, built on first use; None if no data."""
    return prepared_sequences(DATASETS[dataset], cache / dataset, FORMATS.get(dataset, "sequences"))


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
    """Per-epoch validation hr@10 / ndcg@10 (and the run's elapsed wall seconds at that
    validation; with weight averaging, the raw weights' raw_hr@10 / raw_ndcg@10 beside the
    average's) from the CSV logger (resumed runs included)."""
    by_epoch = {}
    for log in sorted(run_dir.glob("logs/version_*/metrics.csv")):
        for row in csv.DictReader(log.open()):
            if row.get("valid/hr@10"):
                by_epoch[int(row["epoch"])] = {
                    "epoch": int(row["epoch"]),
                    "hr@10": round(float(row["valid/hr@10"]), 4),
                    "ndcg@10": round(float(row["valid/ndcg@10"]), 4),
                }
                if row.get("valid_raw/hr@10"):  # training.ema_decay: the raw weights too
                    by_epoch[int(row["epoch"])] |= {
                        "raw_hr@10": round(float(row["valid_raw/hr@10"]), 4),
                        "raw_ndcg@10": round(float(row["valid_raw/ndcg@10"]), 4),
                    }
                if row.get("time/elapsed_s"):
                    by_epoch[int(row["epoch"])]["elapsed_s"] = round(
                        float(row["time/elapsed_s"]), 1
                    )
    return [by_epoch[e] for e in sorted(by_epoch)]


def elapsed_in_checkpoint(path: Path) -> float:
    """Seconds of fitting recorded in a checkpoint by recsys.training.run.ElapsedTime (0 if
    none): the earlier sessions' share of a resumed run's wall time."""
    state = torch.load(path, map_location="cpu", weights_only=True).get("callbacks", {})
    return max((float(v["elapsed_s"]) for v in state.values() if "elapsed_s" in v), default=0.0)


def summary_row(result: dict, config) -> dict:
    """One row of accuracy-<dataset>.json from a per-run result and its RunConfig."""
    plain = config.to_dict()  # the tags (hstu/sasrec, dot/mol) as the YAML writes them
    return {
        "name": Path(result["config"]).stem,
        "config": result["config"],
        "encoder": plain["model"]["encoder"]["type"],
        "similarity": plain["model"]["similarity"]["type"],
        "negatives": plain["training"]["negatives"],
        "valid": result["valid"],
        "test": result["test"],
        "popularity": result["popularity"],
        "selected_epoch": result["selected_epoch"],
        "epochs_run": result["epochs_run"],
        "wall_time_s": result["wall_time_s"],
        "device": result["device"],
        "commit": result["provenance"]["commit"],
        **({"refit": result["refit"]} if "refit" in result else {}),
    }


def update_summary(path: Path, dataset: str, row: dict) -> dict:
    """Insert or replace `row` (by name) in the summary file at `path`; rows sorted by name."""
    summary: dict = (
        json.loads(path.read_text()) if path.is_file() else {"dataset": dataset, "rows": []}
    )
    rows = [r for r in summary["rows"] if r["name"] != row["name"]] + [row]
    summary["rows"] = sorted(rows, key=lambda r: r["name"])
    atomic_write_text(path, json.dumps(summary, indent=2) + "\n")
    return summary


def data_or_skip(dataset: str, args: argparse.Namespace) -> Path | None:
    """The prepared data of `dataset`, or None after saying why the run is skipped."""
    data_dir = prepared(dataset, Path(args.data_cache))
    if data_dir is None:
        print(f"skip {dataset}: {shared_data_dir() / DATASETS[dataset]} is absent")
    return data_dir


def bench_run_dir(dataset: str, config_path: Path, config, args: argparse.Namespace) -> Path:
    """Where a (dataset, config) trains: one directory per whole configuration."""
    return Path(args.runs) / f"{dataset}-{config_path.stem}-{config_key(config)}"


def config_key(config) -> str:
    """Ten hex digits of the run config's hash: the benchmark's run directory (and so the
    checkpoint a rerun resumes) belongs to one configuration, seed included."""
    text = json.dumps(config.to_dict(), sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()[:10]


def run_refit(
    config,
    run_dir: Path,
    data_dir: Path,
    progress: bool,
    epochs: int | None = None,
    selected_in: str | None = None,
) -> dict:
    """The refit record of a result: `recsys.training.run.refit` into RUN_DIR/refit, for the
    epochs selected in RUN_DIR, or for `epochs` chosen in the result file `selected_in`."""
    from recsys.training.run import refit

    refit_ckpt = run_dir / "refit" / "checkpoints" / "last.ckpt"
    refit_earlier_s = elapsed_in_checkpoint(refit_ckpt) if refit_ckpt.is_file() else 0.0
    start = time.perf_counter()
    refitted = refit(config, run_dir, data_dir, progress, epochs=epochs, selected_in=selected_in)
    record = {
        "epochs": refitted["epochs"],
        "test": refitted["test"],
        # fitting carried over from earlier sessions (0 for a refit checkpoint written
        # before the refit recorded its clock), plus this session's fit and evaluation
        "wall_time_s": round(time.perf_counter() - start + refit_earlier_s, 1),
    }
    if selected_in is not None:  # run apart from its selection: its own provenance
        record["selected_in"] = selected_in
        record["provenance"] = provenance()
    return record


def refit_from(dataset: str, config_path: Path, result_path: Path, args) -> Path | None:
    """`--refit-from`: the refit of the selection recorded in `result_path`, added to it."""
    from recsys.training.config import load_config

    data_dir = data_or_skip(dataset, args)
    if data_dir is None:
        return None
    try:
        result = json.loads(result_path.read_text())
    except (OSError, ValueError) as e:
        raise SystemExit(f"--refit-from {result_path}: not a readable result file ({e})") from e
    if not isinstance(result, dict):
        raise SystemExit(f"--refit-from {result_path}: not a result of this benchmark")
    if result.get("dataset") != dataset or Path(result.get("config", "")) != config_path:
        raise SystemExit(
            f"{result_path}: holds {result.get('config')} on {result.get('dataset')}, "
            f"expected {config_path} on {dataset}"
        )
    if result.get("selected_epoch") is None:
        raise SystemExit(f"{result_path}: no selected_epoch to refit for")
    config = load_config(config_path)
    run_dir = bench_run_dir(dataset, config_path, config, args)
    epochs = int(result["selected_epoch"]) + 1
    result["refit"] = run_refit(
        config, run_dir, data_dir, args.progress, epochs, selected_in=str(result_path)
    )
    atomic_write_text(result_path, json.dumps(result, indent=2) + "\n")
    update_summary(RESULTS / f"accuracy-{dataset}.json", dataset, summary_row(result, config))
    test = result["refit"]["test"]
    print(
        f"{dataset} {config_path.stem} (refit, {result['refit']['epochs']} epochs): test hr@10 "
        f"{test['hr@10']:.4f} ndcg@10 {test['ndcg@10']:.4f} -> {result_path}"
    )
    return result_path


def run_one(dataset: str, config_path: Path, args: argparse.Namespace) -> Path | None:
    from benchmarks.query_ranks import save_run_ranks
    from recsys.dataset import load_dataset
    from recsys.training.config import load_config
    from recsys.training.run import train

    data_dir = data_or_skip(dataset, args)
    if data_dir is None:
        return None
    config = load_config(config_path)
    run_dir = bench_run_dir(dataset, config_path, config, args)
    resume = run_dir if (run_dir / "checkpoints" / "last.ckpt").is_file() else None
    out = RESULTS / f"{dataset}-{config_path.stem}.json"
    earlier_s = elapsed_in_checkpoint(run_dir / "checkpoints" / "last.ckpt") if resume else 0.0
    start = time.perf_counter()
    metrics = train(
        config,
        data_dir=data_dir,
        out_dir=run_dir,
        resume=resume,
        max_epochs=args.max_epochs,
        progress_bar=args.progress,
    )
    wall = time.perf_counter() - start + earlier_s
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
    if args.refit:
        result["refit"] = run_refit(config, run_dir, data_dir, args.progress)
    atomic_write_text(out, json.dumps(result, indent=2) + "\n")
    update_summary(RESULTS / f"accuracy-{dataset}.json", dataset, summary_row(result, config))
    # Last, so that a failure here loses no result: `recsys bench ranks RUN_DIR` redoes it.
    ranks = save_run_ranks(
        run_dir, load_dataset(data_dir), dataset, args.ranks_dir, name=config_path.stem
    )
    test = metrics["test"]
    print(
        f"{dataset} {config_path.stem}: test hr@10 {test['hr@10']:.4f} ndcg@10 "
        f"{test['ndcg@10']:.4f} (popularity hr@10 {metrics['popularity']['hr@10']:.4f}) -> {out}, "
        f"{ranks}"
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
    parser.add_argument(
        "--ranks-dir",
        type=Path,
        default=RESULTS / "ranks",
        help="where each run's per-query ranks go (benchmarks.query_ranks)",
    )
    parser.add_argument(
        "--refit",
        action="store_true",
        help="also run the refit protocol (recsys.training.run.refit) and record its test row",
    )
    parser.add_argument(
        "--refit-from",
        type=Path,
        help="run only the refit, for the epoch selected in this result file (one --config)",
    )
    args = parser.parse_args(argv)
    # Training, as `recsys train` runs it: the tuned heap (recsys.malloc), recorded in
    # each result's provenance.
    tune_malloc()
    if args.refit_from is not None:
        if len(args.config) != 1:
            parser.error("--refit-from takes exactly one --config")
        refit_from(args.dataset, args.config[0], args.refit_from, args)
        return 0
    for config_path in args.config:
        run_one(args.dataset, config_path, args)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
