"""Training speed on real data: two settings of one config, alternated in one process.

`--compare batching` (the default): random batches against length batches.
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

`--compare compile_mol`: the MoL negatives' gate maths eager against compiled
(`training.compile_mol`), on the same batches; a compiled round's first steps compile, so
keep --warmup above the few steps that takes.

    recsys bench epoch --config configs/ml-1m-hstu-mol-pp32-cpu.yaml
    recsys bench epoch --config configs/ml-1m-hstu-mol-pp192-cpu.yaml --compare compile_mol

Writes benchmarks/results/epoch-<dataset>-cpu.json (batching) or
epoch-<dataset>-compile-cpu.json (or --out). Skips when the data is absent.
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
# compared setting -> (label, value) of its two arms, baseline first
COMPARISONS: dict[str, tuple[tuple[str, Any], tuple[str, Any]]] = {
    "batching": (("random", "random"), ("length", "length")),
    "compile_mol": (("eager", False), ("compiled", True)),
}


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


def measure(config, data_dir: Path, data, field: str, value: Any, steps: int) -> StepTimer:
    """Train a fresh model of `config` for `steps` steps with training.`field` = `value`;
    the step timer."""
    from recsys.training.run import _modules, _trainer_settings

    config = replace(config, training=replace(config.training, **{field: value}))
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
    parser.add_argument("--rounds", type=int, default=2, help="rounds of the two settings")
    parser.add_argument(
        "--compare", choices=sorted(COMPARISONS), default="batching", help="the setting compared"
    )
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
    arms = COMPARISONS[args.compare]
    rounds: dict[str, list[dict[str, float]]] = {label: [] for label, _ in arms}
    for r in range(args.rounds):
        for label, value in arms:
            timer = measure(config, data_dir, data, args.compare, value, args.steps)
            w = args.warmup
            row = {
                "s_per_step": statistics.fmean(timer.seconds[w:]),
                "positions_per_step": statistics.fmean(timer.positions[w:]),
                "targets_per_step": statistics.fmean(timer.targets[w:]),
            }
            rounds[label].append(row)
            print(
                f"round {r} {label:>8}: {row['s_per_step']:.3f} s/step, "
                f"{row['positions_per_step']:.0f} positions, {row['targets_per_step']:.0f} targets"
            )
    results: dict[str, Any] = {}
    for label, rows in rounds.items():
        step = statistics.median(x["s_per_step"] for x in rows)
        results[label] = {
            "median_s_per_step": step,
            "projected_epoch_s": step * batches_per_epoch,
            "positions_per_step": statistics.fmean(x["positions_per_step"] for x in rows),
            "targets_per_step": statistics.fmean(x["targets_per_step"] for x in rows),
            "rounds": rows,
        }
    (base, _), (other, _) = arms
    speedup = results[base]["median_s_per_step"] / results[other]["median_s_per_step"]
    out: dict[str, Any] = {
        "benchmark": "epoch",
        "dataset": args.dataset,
        "config": str(args.config),
        "compare": args.compare,
        "batches_per_epoch": batches_per_epoch,
        "steps": args.steps,
        "warmup": args.warmup,
        "threads": args.threads,
        "load_average_at_start": load_at_start,
        "load_average_at_end": list(os.getloadavg()),
        "results": results,
        f"{other}_speedup": speedup,
        "provenance": provenance(),
    }
    name = "" if args.compare == "batching" else "-compile"
    path = args.out or RESULTS / f"epoch-{args.dataset}{name}-cpu.json"
    atomic_write_text(path, json.dumps(out, indent=2) + "\n")
    print(f"{other}: {speedup:.2f}x the {base} step speed -> {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
