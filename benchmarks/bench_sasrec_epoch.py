"""SASRec-dot training epoch on MovieLens-1M: wall time, peak memory, quality after N epochs.

Setting of the RecBole peer in ../shared/docs/BENCHMARKS.md: 2 blocks, 1 head, d 50, max
length 200, batch 128. RecBole 1.2.1 needs 3,303 s an epoch here (every prefix is a row:
982,089 rows) and reaches test HR@10 .241 / NDCG@10 .131 after one epoch (seen items
masked). Our epoch encodes each training window once and supervises all its positions,
with a sampled softmax (configs/ml-1m-sasrec-dot.yaml). With the config's training window
(`last`: each user's most recent 200 training events) that is 6,040 windows and 646k of the
982k targets; `--train-window all` cuts every training sequence into windows so that each of
the 982k targets is supervised once per epoch, as in RecBole's (8,645 windows).

One run per (negatives, precision) pair, each in its own child process (clean peak RSS).
Per run: training-epoch wall time (a Lightning callback around the training loop,
validation excluded) and the process CPU seconds over it (on a shared machine the wall time
includes waiting for the cores; CPU seconds / threads estimates the unshared wall time),
validation time, peak RSS, the validation curve and the test metrics of the selected
checkpoint. Quality after one epoch is reported beside RecBole's, but note the step count:
an epoch of the default config is 48 optimizer steps of 128 windows (~13k targets each; 68
steps with `--train-window all`), RecBole's is 7,673 steps of 128 prefixes, and Adam moves
the weights by about lr per step, so one such epoch learns far less (HR@10 ~.04 whatever
the loss); `--epochs N` records how many epochs reach RecBole's figure.
`configs/ml-1m-sasrec-dot-one-epoch.yaml` is set up for one epoch: every target once
(window `all`, stride 50: each target with >= 150 events of context), RecBole's loss (full
softmax), batches of 16 windows (1,410 steps), a warm-up + linear-decay schedule.
Training options not given on the command line come from `--config`.

    recsys bench sasrec_epoch            # {shared:128, config (per_position:128)} x {fp32, bf16}
    recsys bench sasrec_epoch --epochs 10 --precision bf16-mixed --negatives shared:128
    recsys bench sasrec_epoch --config configs/ml-1m-sasrec-dot-one-epoch.yaml \
        --negatives config --out benchmarks/results/sasrec-epoch-ml-1m-cpu-one-epoch.json

Writes benchmarks/results/sasrec-epoch-ml-1m-cpu.json (or -cuda, or --out) and adds one
row per run to the summary, benchmarks/results/sasrec-epoch-ml-1m-summary.json (a row is
replaced when the same --label is run again; the label defaults to the output's stem).
`--summarize FILE...` folds earlier result files into the summary without training. Skips
when the data is absent.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

REPO_ROOT = Path(__file__).resolve().parent.parent

RECBOLE = {
    "epoch_s": 3303,
    "peak_memory_gib": 6.7,
    "test_after_1_epoch": {"hr@10": 0.241, "ndcg@10": 0.131, "hr@50": 0.503, "hr@200": 0.724},
}
TARGET_EPOCH_S = 66.0


def prepared_ml1m(cache: Path) -> Path | None:
    """data/ml-1m prepared from ../shared/data/ml-1m/sequences.txt on first use (None if absent)."""
    from benchmarks.shared_data import prepared_sequences

    return prepared_sequences("ml-1m/sequences.txt", cache / "ml-1m")


def _cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def _child(args: argparse.Namespace) -> int:
    """One training run in this process; writes its measurements as JSON to args.child."""
    import lightning as L
    import torch

    from benchmarks.bench_accuracy import validation_curve
    from recsys.training.config import config_from_dict, load_config
    from recsys.training.run import train

    torch.set_num_threads(args.threads)
    base = load_config(args.config).to_dict()
    base["training"].update(
        {
            "epochs": args.epochs,
            "precision": args.precision,
            "lr": args.lr,
            "batch_size": args.batch_size,
            "lr_schedule": args.lr_schedule,
            "warmup_steps": args.warmup_steps,
            "embedding_lr_scale": args.embedding_lr_scale,
            "seed": args.seed,
            "early_stopping": {"metric": "ndcg@10", "patience": 100},
        }
    )
    if args.negatives != "config":
        kind, _, num = args.negatives.partition(":")  # "full" needs no NUM
        base["training"]["negatives"] = {"kind": kind, "num": int(num or 128)}
    base["data"]["train_window"] = args.train_window
    base["data"]["train_stride"] = args.train_stride
    config = config_from_dict(base, str(args.config))

    class Timer(L.Callback):
        def __init__(self) -> None:
            self.epochs: list[float] = []
            self.epoch_cpu: list[float] = []
            self.vals: list[float] = []
            self._val_this_epoch: list[float] = []
            self._val_cpu_this_epoch: list[float] = []

        def on_train_epoch_start(self, trainer: L.Trainer, module: L.LightningModule) -> None:
            self._t, self._c = time.perf_counter(), _cpu_seconds()

        def on_train_epoch_end(self, trainer: L.Trainer, module: L.LightningModule) -> None:
            # Lightning runs the epoch-end validation before this hook: subtract it.
            self.epochs.append(time.perf_counter() - self._t - sum(self._val_this_epoch))
            self.epoch_cpu.append(_cpu_seconds() - self._c - sum(self._val_cpu_this_epoch))
            self._val_this_epoch, self._val_cpu_this_epoch = [], []

        def on_validation_start(self, trainer: L.Trainer, module: L.LightningModule) -> None:
            self._v, self._vc = time.perf_counter(), _cpu_seconds()

        def on_validation_end(self, trainer: L.Trainer, module: L.LightningModule) -> None:
            if trainer.sanity_checking:
                return
            dt = time.perf_counter() - self._v
            self.vals.append(dt)
            self._val_this_epoch.append(dt)
            self._val_cpu_this_epoch.append(_cpu_seconds() - self._vc)

    timer = Timer()
    with tempfile.TemporaryDirectory() as run_dir:
        start = time.perf_counter()
        metrics = train(
            config, data_dir=args.data, out_dir=run_dir, progress_bar=False, callbacks=[timer]
        )
        total = time.perf_counter() - start
        curve = validation_curve(Path(run_dir))
    peak_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    result = {
        "precision": args.precision,
        "negatives": _negatives_label(config.training.negatives),
        "epochs": args.epochs,
        "epoch_wall_s": [round(t, 2) for t in timer.epochs],
        # CPU seconds (user + sys) of this process over the epoch: on a shared machine the
        # wall time includes waiting for the cores; cpu_s / threads estimates it unshared.
        "epoch_cpu_s": [round(t, 2) for t in timer.epoch_cpu],
        "epoch_cpu_s_per_thread": [round(t / args.threads, 2) for t in timer.epoch_cpu],
        "validation_wall_s": [round(t, 2) for t in timer.vals],
        "total_wall_s": round(total, 1),
        "peak_rss_gib": round(peak_kib / 2**20, 2),
        "valid_by_epoch": curve,
        "test": metrics["test"],
        "valid": metrics["valid"],
        "popularity_test": metrics["popularity"],
    }
    Path(args.child).write_text(json.dumps(result))
    return 0


def _config_defaults(args: argparse.Namespace) -> None:
    """Fill the training options not given on the command line from the config file."""
    from recsys.training.config import load_config

    config = load_config(args.config)
    t = config.training
    for name, value in (
        ("lr", t.lr),
        ("batch_size", t.batch_size),
        ("lr_schedule", t.lr_schedule),
        ("warmup_steps", t.warmup_steps),
        ("embedding_lr_scale", t.embedding_lr_scale),
        ("seed", t.seed),
        ("train_window", config.data.train_window),
        ("train_stride", config.data.train_stride),
    ):
        if getattr(args, name) is None:
            setattr(args, name, value)


def _negatives_label(negatives: Any) -> str:
    return "full" if negatives.kind == "full" else f"{negatives.kind}:{negatives.num}"


def _run_child(
    args: argparse.Namespace, data: Path, precision: str, negatives: str
) -> dict[str, Any]:
    with tempfile.NamedTemporaryFile(suffix=".json", delete=False) as f:
        out = Path(f.name)
    cmd = [
        sys.executable,
        __file__,
        "--child",
        str(out),
        "--data",
        str(data),
        "--precision",
        precision,
        "--epochs",
        str(args.epochs),
        "--threads",
        str(args.threads),
        "--lr",
        str(args.lr),
        "--batch-size",
        str(args.batch_size),
        "--config",
        str(args.config),
        "--train-window",
        args.train_window,
        *([] if args.train_stride is None else ["--train-stride", str(args.train_stride)]),
        "--lr-schedule",
        args.lr_schedule,
        "--warmup-steps",
        str(args.warmup_steps),
        "--embedding-lr-scale",
        str(args.embedding_lr_scale),
        "--seed",
        str(args.seed),
    ]
    cmd += ["--negatives", negatives]
    subprocess.run(cmd, check=True)
    result = json.loads(out.read_text())
    out.unlink()
    return result


def epoch_sizes(data: Path, max_len: int, stride: int | None = None) -> dict[str, dict[str, int]]:
    """Training windows, supervised targets and encoded events of one epoch, per
    `train_window` (`random` is the size of `last`); `all` with `stride` when given."""
    from recsys.dataset import load_dataset
    from recsys.training.data import TrainSet

    dataset = load_dataset(data)
    sizes = {}
    kinds = [("last", None), ("all", None)] + ([("all", stride)] if stride else [])
    for window, step in kinds:
        ts = TrainSet(dataset, max_len, window, stride=step)
        lengths = np.minimum(ts.ends - ts.starts, max_len)
        targets = lengths - 1 if step is None else np.minimum(lengths - 1, step)
        name = window if step is None else f"all-stride-{step}"
        sizes[name] = {
            "windows": len(ts),
            "targets": int(targets.sum()),
            "events": int(lengths.sum()),
        }
    return sizes


def _load_average() -> list[float]:
    return [round(x, 2) for x in os.getloadavg()]


SUMMARY = REPO_ROOT / "benchmarks" / "results" / "sasrec-epoch-ml-1m-summary.json"
SUMMARY_METRICS = ("hr@10", "ndcg@10", "hr@50", "hr@200")


def summary_rows(result: dict[str, Any], label: str) -> list[dict[str, Any]]:
    """One summary row per run of a result file: its settings, the last epoch's wall time,
    test figures and provenance (the detailed curve and memory stay out of the summary)."""
    settings = (
        "config", "lr", "batch_size", "lr_schedule", "warmup_steps", "embedding_lr_scale",
        "seed", "train_window", "train_stride", "device",
    )  # fmt: skip
    prov = result.get("provenance", {})
    rows = []
    for run in result["runs"]:
        several = len(result["runs"]) > 1
        rows.append(
            {
                "label": f"{label} {run['negatives']} {run['precision']}" if several else label,
                **{k: result.get(k) for k in settings},
                "negatives": run["negatives"],
                "precision": run["precision"],
                "epochs": run.get("epochs"),
                "epoch_wall_s": run["epoch_wall_s"][-1],
                "valid_hr@10": run["valid_by_epoch"][-1]["hr@10"],
                "test": {m: round(run["test"][m], 4) for m in SUMMARY_METRICS},
                "load_average_before": result.get("load_average_before"),
                "command": prov.get("command"),
                "commit": prov.get("commit"),
                "date": prov.get("date"),
            }
        )
    return rows


def update_summary(rows: list[dict[str, Any]], path: Path = SUMMARY) -> None:
    """Upsert `rows` (by label) into the summary file, rows sorted by label."""
    from recsys.atomic import atomic_write_text

    summary = (
        json.loads(path.read_text())
        if path.is_file()
        else {"benchmark": "sasrec-dot epochs on ML-1M, one row per run", "recbole": RECBOLE}
    )
    labels = {row["label"] for row in rows}
    kept = [row for row in summary.get("rows", []) if row["label"] not in labels]
    summary["rows"] = sorted(kept + rows, key=lambda row: row["label"])
    atomic_write_text(path, json.dumps(summary, indent=2) + "\n")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="recsys bench sasrec_epoch", description=__doc__)
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument(
        "--precision", nargs="+", default=["32-true", "bf16-mixed"], help="one run per value"
    )
    parser.add_argument("--lr", type=float, help="default: the config's")
    parser.add_argument("--batch-size", type=int, help="windows per step (default: the config's)")
    parser.add_argument(
        "--lr-schedule", choices=["constant", "linear", "cosine"], help="default: the config's"
    )
    parser.add_argument("--warmup-steps", type=int, help="default: the config's")
    parser.add_argument(
        "--embedding-lr-scale",
        type=float,
        help="training.embedding_lr_scale: lr multiplier of the embedding tables (default: "
        "the config's)",
    )
    parser.add_argument("--seed", type=int, help="training seed (default: the config's)")
    parser.add_argument(
        "--train-window",
        choices=["last", "random", "all"],
        help="data.train_window (`all`: every training target once per epoch; default: the "
        "config's)",
    )
    parser.add_argument(
        "--train-stride", type=int, help="data.train_stride (with `all`; default: the config's)"
    )
    parser.add_argument(
        "--negatives",
        nargs="+",
        default=["shared:128", "config"],
        help="KIND:NUM values (e.g. shared:128), 'full' (softmax over the whole catalog, "
        "RecBole's loss) or 'config'; one run per (negatives, precision)",
    )
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--config", type=Path, default=REPO_ROOT / "configs/ml-1m-sasrec-dot.yaml")
    parser.add_argument("--data-cache", type=Path, default=REPO_ROOT / "data")
    parser.add_argument("--data", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--out", type=Path, help="result JSON (default benchmarks/results/...)")
    parser.add_argument("--label", help="summary row label (default: the output file's stem)")
    parser.add_argument(
        "--summarize", type=Path, nargs="+", help="fold these result files into the summary"
    )
    args = parser.parse_args(argv)
    if args.summarize:
        for path in args.summarize:
            update_summary(summary_rows(json.loads(path.read_text()), path.stem))
        print(f"-> {SUMMARY}")
        return 0
    _config_defaults(args)
    if args.child:
        args.precision, args.negatives = args.precision[0], args.negatives[0]
        return _child(args)

    import torch

    from recsys.atomic import atomic_write_text
    from recsys.provenance import command_line, provenance, repo_relative
    from recsys.training.config import load_config

    data = prepared_ml1m(args.data_cache)
    if data is None:
        from benchmarks.shared_data import shared_data_dir

        print(f"skip: {shared_data_dir() / 'ml-1m' / 'sequences.txt'} is absent")
        return 0
    device = "cuda" if torch.cuda.is_available() else "cpu"
    load_before = _load_average()
    runs = [_run_child(args, data, p, n) for n in args.negatives for p in args.precision]
    for run in runs:
        run["meets_epoch_target"] = max(run["epoch_wall_s"]) <= TARGET_EPOCH_S
        reached = [
            e["epoch"] + 1
            for e in run["valid_by_epoch"]
            if e["hr@10"] >= RECBOLE["test_after_1_epoch"]["hr@10"]
        ]
        run["epochs_to_recbole_1_epoch_hr10_on_valid"] = reached[0] if reached else None
        if args.epochs == 1:
            run["beats_recbole_1_epoch"] = {
                k: run["test"][k] >= v for k, v in RECBOLE["test_after_1_epoch"].items()
            }
    result = {
        "benchmark": "sasrec-dot epoch, ML-1M (2 blocks, 1 head, d 50, length 200)",
        "config": repo_relative(args.config),
        "lr": args.lr,
        "batch_size": args.batch_size,
        "lr_schedule": args.lr_schedule,
        "warmup_steps": args.warmup_steps,
        "embedding_lr_scale": args.embedding_lr_scale,
        "seed": args.seed,
        "train_window": args.train_window,
        "train_stride": args.train_stride,
        "device": device,
        "target_epoch_s": TARGET_EPOCH_S,
        "recbole_baseline": RECBOLE,
        "epoch_size": epoch_sizes(data, load_config(args.config).max_len, args.train_stride),
        "runs": runs,
        "load_average_before": load_before,
        "load_average_after": _load_average(),
        "provenance": provenance(command_line("recsys bench sasrec_epoch", argv)),
    }
    out = args.out or REPO_ROOT / "benchmarks" / "results" / f"sasrec-epoch-ml-1m-{device}.json"
    atomic_write_text(out, json.dumps(result, indent=2) + "\n")
    update_summary(summary_rows(result, args.label or out.stem))
    for run in runs:
        print(
            f"{run['negatives']} {run['precision']}: epoch {run['epoch_wall_s']} s "
            f"(cpu/thread {run['epoch_cpu_s_per_thread']} s), peak {run['peak_rss_gib']} GiB, "
            f"test hr@10 {run['test']['hr@10']:.4f} ndcg@10 {run['test']['ndcg@10']:.4f}"
        )
    print(f"-> {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
