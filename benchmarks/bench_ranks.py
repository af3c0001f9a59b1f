"""Keep finished runs' per-query ranks, so that they can be compared query by query
(`recsys bench paired`) once their run directories are gone.

For each RUN_DIR (as `recsys bench accuracy` leaves it: best.safetensors, run_config.yaml,
metrics.json), ranks the valid and test queries with the selected weights and writes
benchmarks/results/ranks/<dataset>-<config>.parquet (format: `benchmarks.query_ranks`).
It refuses a run whose ranks do not reproduce the figures in its metrics.json.
`recsys bench accuracy` does this itself at the end of every run; this is for runs it
finished before it did.

    recsys bench ranks --dataset ml-1m runs/bench/ml-1m-ml-1m-hstu-mol-pp192-cpu-b4c4a889df

Skips cleanly when the data is absent.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from benchmarks.bench_accuracy import DATASETS, data_or_skip
from benchmarks.query_ranks import RANKS_DIR, save_run_ranks
from recsys.provenance import command_line


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="recsys bench ranks", description=__doc__.split("\n")[0])
    parser.add_argument("runs", type=Path, nargs="+", metavar="RUN_DIR")
    parser.add_argument("--dataset", choices=sorted(DATASETS), required=True)
    parser.add_argument("--data-cache", default="data", help="where prepared datasets are kept")
    parser.add_argument("--out-dir", type=Path, default=RANKS_DIR, help="where ranks files go")
    args = parser.parse_args(argv)
    data_dir = data_or_skip(args.dataset, args)
    if data_dir is None:
        return 0
    from recsys.dataset import load_dataset

    data = load_dataset(data_dir)
    for run_dir in args.runs:
        command = command_line("recsys bench ranks", argv)
        path = save_run_ranks(run_dir, data, args.dataset, args.out_dir, command=command)
        print(f"{run_dir} -> {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
