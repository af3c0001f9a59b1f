"""Is one trained model better than another, or is the gap within sampling noise?

Takes each model's rank of every query of one split, aligned by query, and compares them
query by query (`recsys.paired`: bootstrap interval of each metric's gap, sign-flip p-value,
discordant queries for HR@K). Each of the two SOURCEs is either

- a finished run directory: its selected weights (RUN_DIR/best.safetensors, as
  `recsys bench accuracy` leaves them) rank the split again (full ranking, seen items
  masked: `recsys.evaluation`), and the figures are checked against RUN_DIR/metrics.json;
- or a committed ranks file (benchmarks/results/ranks/<dataset>-<config>.parquet,
  `benchmarks.query_ranks`), whose figures are checked against the per-run result of the
  same stem, benchmarks/results/<dataset>-<config>.json: the run directory may be gone.

The two must hold the same queries with the same targets (checked). Trains and selects
nothing.

    recsys bench paired --dataset ml-1m --name ml-1m-hstu-pp32-mol-vs-dot \\
        runs/bench/ml-1m-ml-1m-hstu-mol-pp32-cpu-5a0f1ecd60 \\
        benchmarks/results/ranks/ml-1m-ml-1m-hstu-dot-pp32-cpu.parquet

Writes benchmarks/results/paired-<name>.json. Skips cleanly when a run directory is to be
ranked and the data is absent.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from benchmarks.bench_accuracy import DATASETS, data_or_skip
from benchmarks.query_ranks import (
    QueryRanks,
    check_aligned,
    read_ranks,
    read_ranks_meta,
    recorded_check,
    run_query_ranks,
)
from recsys.atomic import atomic_write_text
from recsys.batch import SplitName
from recsys.dataset import SequenceDataset
from recsys.provenance import REPO_ROOT, command_line, provenance

RESULTS = REPO_ROOT / "benchmarks" / "results"


def source_ranks(
    source: Path, dataset: str, split: SplitName, data: SequenceDataset | None
) -> tuple[QueryRanks, dict]:
    """(ranks on `split`, the model's record) of a run directory (ranked again on `data`)
    or of a ranks file."""
    if source.is_dir():
        if data is None:
            raise ValueError("a run directory is ranked again: it needs the dataset")
        by_split, name = run_query_ranks(source, data, (split,))
        query = by_split[split]
        recorded_in = source / "metrics.json"
        record = {"name": name, "run_dir": str(source)}
    else:
        query = read_ranks(source, split)
        name = source.stem.removeprefix(f"{dataset}-")
        recorded_in = source.parent.parent / f"{source.stem}.json"
        made = read_ranks_meta(source).get("provenance", {})
        record = {"name": name, "ranks_file": str(source), "ranks_provenance": made}
    metrics = query.metrics()
    return query, {**record, "metrics": metrics, **recorded_check(recorded_in, split, metrics)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="recsys bench paired", description=__doc__)
    parser.add_argument(
        "sources",
        type=Path,
        nargs=2,
        metavar="SOURCE",
        help="model a, model b: each a run directory or a ranks .parquet file",
    )
    parser.add_argument("--dataset", choices=sorted(DATASETS), required=True)
    parser.add_argument("--name", required=True, help="result name: paired-<name>.json")
    parser.add_argument("--split", choices=("valid", "test"), default="test")
    parser.add_argument("--resamples", type=int, default=10_000)
    parser.add_argument("--confidence", type=float, default=0.95)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--data-cache", default="data", help="where prepared datasets are kept")
    parser.add_argument("--out", type=Path, help="result JSON (default benchmarks/results/...)")
    args = parser.parse_args(argv)

    data = None
    if any(source.is_dir() for source in args.sources):  # ranks files need no data
        data_dir = data_or_skip(args.dataset, args)
        if data_dir is None:
            return 0
        from recsys.dataset import load_dataset

        data = load_dataset(data_dir)
    from recsys.paired import paired_compare

    models, queries = {}, []
    for label, source in zip(("a", "b"), args.sources, strict=True):
        query, models[label] = source_ranks(source, args.dataset, args.split, data)
        queries.append(query)
    check_aligned(queries[0], queries[1], str(args.sources[0]), str(args.sources[1]))
    ranks = [q.ranks for q in queries]
    rows = paired_compare(
        ranks[0], ranks[1], resamples=args.resamples, confidence=args.confidence, seed=args.seed
    )
    result = {
        "benchmark": "two runs compared query by query on one split",
        "dataset": args.dataset,
        "split": args.split,
        "queries": len(ranks[0]),
        "models": models,
        "method": {
            "interval": f"percentile bootstrap over queries, {args.confidence:.0%}",
            "p_value": "two-sided sign-flip randomisation test of the mean per-query gap",
            "resamples": args.resamples,
            "seed": args.seed,
            "diff": "a - b",
        },
        "rows": rows,
        "provenance": provenance(command_line("recsys bench paired", argv)),
    }
    out = args.out or RESULTS / f"paired-{args.name}.json"
    atomic_write_text(out, json.dumps(result, indent=2) + "\n")
    for row in rows:
        print(
            f"{row['metric']:>8}: a {row['a']:.4f} b {row['b']:.4f} diff {row['diff']:+.4f} "
            f"[{row['ci_low']:+.4f}, {row['ci_high']:+.4f}] p {row['p_value']:.3f}"
        )
    for label, model in models.items():
        if model["matches"] is False:
            source = model.get("run_dir") or model["ranks_file"]
            print(f"warning: model {label} ({source}) does not reproduce its recorded figures")
    print(f"-> {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
