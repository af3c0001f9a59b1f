"""Training speed on real data: random batches against length batches, in one process.

`training.batching: length` (recsys.training.data.LengthBatchSampler) groups windows of
about the same length so the encoder does not run over padding, while keeping the number of
batches per epoch and the targets per batch of random batches. This benchmark trains one
config's model for --steps optimizer steps with each batching, alternating them over
--rounds rounds (a fresh model each time, the same seed), and reports per batching the
median over rounds of the seconds per step (first --warmup steps of a round dropped), the
projected epoch (seconds per step x batches per epoch; validation not included), the
encoder positions per step (padding included) and the targets per step. Both batchings
have the same number of batches per epoch, so the ratio of the step times is the ratio of
the epochs.

    recsys bench epoch --config configs/ml-1m-hstu-mol-pp32-cpu.yaml

Writes benchmarks/results/epoch-<dataset>-cpu.json (or --out). Skips when the data is absent.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import lightning as L
import torch

from benchmarks.bench_accuracy import DATASETS, data_or_skip
from recsys.atomic import atomic_write_text
from recsys.malloc import tune_malloc
from recsys.provenance import REPO_ROOT, provenance

RESULTS = REPO_ROOT / "benchmarks" / "results"
BATCHINGS = ("random", "length")


class StepTimer(L.Callback):
    """Wall seconds, encoder positions and targets of every training step."""

    def __init__(self) -> None:
        self.seconds: list[float] = []
        self.positions: list[int] = []
        self.targets: list[int] = []
        self._start = 0.0

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        self._start = time.perf_counter()

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        self.seconds.append(time.perf_counter() - self._start)
        self.positions.append(int(batch.item_ids.numel()))
        self.targets.append(int((batch.item_ids[:, 1:] != 0).sum()))


def measure(config, data_dir: Path, data, batching: str, steps: int) -> StepTimer:
    """Train a fresh model of `config` for `steps` steps with `batching`; the step timer."""
    from recsys.training.run import _modules, _trainer_settings

    config = replace(config, training=replace(config.training, batching=batching))
    module, datamodule = _modules(config, data_dir, data)
    timer = StepTimer()
    settings = _trainer_settings(config.training)
    settings["limit_train_batches"] = steps
    trainer = L.Trainer(
        max_epochs=1,
        limit_val_batches=0,
        num_sanity_val_steps=0,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        callbacks=[timer],
        **settings,
    )
    trainer.fit(module, datamodule=datamodule)
    return timer


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="recsys bench epoch", description=__doc__.split("\n")[0])
    parser.add_argument("--dataset", choices=sorted(DATASETS), default="ml-1m")
    parser.add_argument("--config", type=Path, default=Path("configs/ml-1m-hstu-mol-pp32-cpu.yaml"))
    parser.add_argument("--steps", type=int, default=40, help="optimizer steps per round")
    parser.add_argument("--warmup", type=int, default=3, help="steps of a round not timed")
    parser.add_argument("--rounds", type=int, default=2, help="rounds of (random, length)")
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument("--data-cache", default="data", help="where prepared datasets are kept")
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args(argv)
    if args.steps <= args.warmup:
        parser.error("--steps must exceed --warmup")
    from recsys.dataset import load_dataset
    from recsys.training.config import load_config
    from recsys.training.data import TrainSet

    tune_malloc()  # as `recsys train`
    torch.set_num_threads(args.threads)
    data_dir = data_or_skip(args.dataset, args)
    if data_dir is None:
        return 0
    config = load_config(args.config)
    data = load_dataset(data_dir)
    windows = TrainSet(data, config.max_len, config.data.train_window, config.training.seed)
    batches_per_epoch = math.ceil(len(windows) / config.training.batch_size)  # either batching
    load_at_start = list(os.getloadavg())
    rounds: dict[str, list[dict[str, float]]] = {b: [] for b in BATCHINGS}
    for r in range(args.rounds):
        for batching in BATCHINGS:
            timer = measure(config, data_dir, data, batching, args.steps)
            w = args.warmup
            row = {
                "s_per_step": statistics.fmean(timer.seconds[w:]),
                "positions_per_step": statistics.fmean(timer.positions[w:]),
                "targets_per_step": statistics.fmean(timer.targets[w:]),
            }
            rounds[batching].append(row)
            print(
                f"round {r} {batching:>6}: {row['s_per_step']:.3f} s/step, "
                f"{row['positions_per_step']:.0f} positions, {row['targets_per_step']:.0f} targets"
            )
    results: dict[str, Any] = {}
    for batching, rows in rounds.items():
        step = statistics.median(x["s_per_step"] for x in rows)
        results[batching] = {
            "median_s_per_step": step,
            "projected_epoch_s": step * batches_per_epoch,
            "positions_per_step": statistics.fmean(x["positions_per_step"] for x in rows),
            "targets_per_step": statistics.fmean(x["targets_per_step"] for x in rows),
            "rounds": rows,
        }
    speedup = results["random"]["median_s_per_step"] / results["length"]["median_s_per_step"]
    out = {
        "benchmark": "epoch",
        "dataset": args.dataset,
        "config": str(args.config),
        "batches_per_epoch": batches_per_epoch,
        "steps": args.steps,
        "warmup": args.warmup,
        "threads": args.threads,
        "load_average_at_start": load_at_start,
        "load_average_at_end": list(os.getloadavg()),
        "results": results,
        "length_speedup": speedup,
        "provenance": provenance(),
    }
    path = args.out or RESULTS / f"epoch-{args.dataset}-cpu.json"
    atomic_write_text(path, json.dumps(out, indent=2) + "\n")
    print(f"length batches: {speedup:.2f}x the random batches' step speed -> {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
