"""Is one trained model better than another, or is the gap within sampling noise?

Loads the selected weights of two finished runs (RUN_DIR/best.safetensors, as
`recsys bench accuracy` leaves them), ranks the same queries of one split with both
(full ranking, seen items masked: `recsys.evaluation`), and compares them query by query
(`recsys.paired`: bootstrap interval of each metric's gap, sign-flip p-value, discordant
queries for HR@K). Trains and selects nothing: it re-reads the split the two runs were
already evaluated on, and checks that its figures are the ones each run recorded in
RUN_DIR/metrics.json.

    recsys bench paired --dataset ml-1m --name ml-1m-hstu-pp32-mol-vs-dot \\
        runs/bench/ml-1m-ml-1m-hstu-mol-pp32-cpu-5a0f1ecd60 \\
        runs/bench/ml-1m-ml-1m-hstu-dot-pp32-cpu-7862547bb4

Writes benchmarks/results/paired-<name>.json. Skips cleanly when the data is absent.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from benchmarks.bench_accuracy import DATASETS, data_or_skip
from recsys.atomic import atomic_write_text
from recsys.batch import SplitName
from recsys.provenance import REPO_ROOT, command_line, provenance

RESULTS = REPO_ROOT / "benchmarks" / "results"
CHECK_KEYS = ("hr@10", "ndcg@10", "hr@50", "hr@200", "mrr")


def run_ranks(run_dir: Path, data, split: SplitName):
    """(ranks (M,), metrics, config name) of the run's selected model on `split`, on the
    CPU, scored as its training run scored it (its eval batch size and eval_bf16)."""
    from recsys.evaluation import EvalSet, collect_ranks
    from recsys.metrics import compute_metrics
    from recsys.training.config import load_config
    from recsys.training.rundir import RUN_CONFIG, load_model

    model, info = load_model(run_dir)
    config = load_config(run_dir / RUN_CONFIG)
    training = config.training
    evalset = EvalSet(data, split, info.max_len)
    ranks, top10 = collect_ranks(
        model, evalset.loader(training.eval_batch_size), bf16=training.eval_bf16
    )
    return ranks, compute_metrics(ranks, top10, data.num_items), config.name


def recorded_check(run_dir: Path, split: str, metrics: dict) -> dict:
    """Whether `metrics` reproduce the figures the run recorded (RUN_DIR/metrics.json)."""
    path = run_dir / "metrics.json"
    if not path.is_file():
        return {"recorded": None, "matches": None}
    recorded = json.loads(path.read_text()).get(split, {})
    matches = all(abs(recorded.get(k, float("nan")) - metrics[k]) < 1e-9 for k in CHECK_KEYS)
    return {"recorded": {k: recorded.get(k) for k in CHECK_KEYS}, "matches": matches}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="recsys bench paired", description=__doc__)
    parser.add_argument("runs", type=Path, nargs=2, metavar="RUN_DIR", help="model a, model b")
    parser.add_argument("--dataset", choices=sorted(DATASETS), required=True)
    parser.add_argument("--name", required=True, help="result name: paired-<name>.json")
    parser.add_argument("--split", choices=("valid", "test"), default="test")
    parser.add_argument("--resamples", type=int, default=10_000)
    parser.add_argument("--confidence", type=float, default=0.95)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--data-cache", default="data", help="where prepared datasets are kept")
    parser.add_argument("--out", type=Path, help="result JSON (default benchmarks/results/...)")
    args = parser.parse_args(argv)

    data_dir = data_or_skip(args.dataset, args)
    if data_dir is None:
        return 0
    from recsys.dataset import load_dataset
    from recsys.paired import paired_compare

    data = load_dataset(data_dir)
    models, ranks = {}, []
    for label, run_dir in zip(("a", "b"), args.runs, strict=True):
        r, metrics, name = run_ranks(run_dir, data, args.split)
        ranks.append(r)
        models[label] = {
            "name": name,
            "run_dir": str(run_dir),
            "metrics": {k: metrics[k] for k in CHECK_KEYS},
            **recorded_check(run_dir, args.split, metrics),
        }
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
            print(f"warning: model {label} does not reproduce {model['run_dir']}/metrics.json")
    print(f"-> {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
