"""Does HSTU's time bias matter on MovieLens? The same run with and without it, over seeds.

Our ML-1M file holds each user's order but no timestamps, so HSTU's relative time bias
(docs/SPEC.md) is unused there, while the published ML-1M figures had it. ML-100K comes with
timestamps. This trains one ML-100K config (default `configs/ml-100k-hstu-dot.yaml`) with
`model.encoder.time_bias` on and off, from the same seeds, and records each run's selected
validation figures and the per-seed gap (on - off). Validation only: this is an ablation,
so test is not recorded.

    recsys bench time_bias --seeds 42 43 44 45 --data-cache data

Writes benchmarks/results/time-bias-ml-100k-cpu.json with provenance. Skips cleanly (exit 0)
when the shared ML-100K data is absent. Run directories go under --runs (not kept in git),
one per configuration and seed: a rerun resumes a run that stopped, and re-reads one that
finished.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import statistics
import time
from pathlib import Path

from benchmarks.bench_accuracy import config_key, data_or_skip
from recsys.atomic import atomic_write_text
from recsys.malloc import tune_malloc
from recsys.provenance import REPO_ROOT, provenance, repo_relative

RESULT = REPO_ROOT / "benchmarks" / "results" / "time-bias-ml-100k-cpu.json"
METRICS = ("ndcg@10", "hr@10", "mrr")


def variant(config, time_bias: bool, seed: int):
    """`config` with the encoder's time bias set and the training seed replaced."""
    encoder = dataclasses.replace(config.model.encoder, time_bias=time_bias)
    model = dataclasses.replace(config.model, encoder=encoder)
    training = dataclasses.replace(config.training, seed=seed)
    return dataclasses.replace(config, model=model, training=training)


def summarize(runs: list[dict]) -> dict:
    """Per-seed gaps (time bias on - off) and their mean, for each metric."""
    by_seed = {(r["time_bias"], r["seed"]): r["valid"] for r in runs}
    seeds = sorted({r["seed"] for r in runs})
    out = {}
    for metric in METRICS:
        gaps = [by_seed[(True, s)][metric] - by_seed[(False, s)][metric] for s in seeds]
        out[metric] = {
            "on_mean": statistics.mean(by_seed[(True, s)][metric] for s in seeds),
            "off_mean": statistics.mean(by_seed[(False, s)][metric] for s in seeds),
            "gap_by_seed": gaps,
            "gap_mean": statistics.mean(gaps),
            "gap_stdev": statistics.stdev(gaps) if len(gaps) > 1 else None,
            "seeds_on_ahead": sum(g > 0 for g in gaps),
        }
    return out


def main(argv: list[str] | None = None) -> int:
    from recsys.training.config import load_config
    from recsys.training.run import train

    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--config", type=Path, default=REPO_ROOT / "configs/ml-100k-hstu-dot.yaml")
    parser.add_argument("--seeds", type=int, nargs="+", default=[42, 43, 44, 45])
    parser.add_argument("--data-cache", default="data", help="where prepared datasets are kept")
    parser.add_argument("--runs", default="runs/time-bias", help="where run directories go")
    parser.add_argument("--out", type=Path, default=RESULT)
    args = parser.parse_args(argv)
    tune_malloc()
    base = load_config(args.config)
    if not hasattr(base.model.encoder, "time_bias"):
        kind = type(base.model.encoder).__name__
        raise SystemExit(f"{args.config}: model.encoder is {kind}, which has no time bias (HSTU)")
    data_dir = data_or_skip("ml-100k", args)
    if data_dir is None:
        return 0
    runs = []
    for seed in args.seeds:
        for time_bias in (True, False):
            config = variant(base, time_bias, seed)
            # one directory per whole configuration: a rerun resumes (or re-reads) it
            name = f"{'on' if time_bias else 'off'}-seed{seed}-{config_key(config)}"
            out_dir = Path(args.runs) / name
            last = out_dir / "checkpoints" / "last.ckpt"
            start = time.perf_counter()
            metrics = train(
                config,
                data_dir=data_dir,
                out_dir=out_dir,
                resume=out_dir if last.is_file() else None,
                progress_bar=False,
            )
            valid = {m: metrics["valid"][m] for m in METRICS}
            runs.append(
                {
                    "time_bias": time_bias,
                    "seed": seed,
                    "valid": valid,
                    "wall_s": round(time.perf_counter() - start, 1),
                }
            )
            print(f"time_bias={time_bias} seed={seed}: valid ndcg@10 {valid['ndcg@10']:.4f}")
    summary = summarize(runs)
    result = {
        "benchmark": "time_bias",
        "dataset": "ml-100k",
        "config": repo_relative(args.config),
        "split": "valid",
        "runs": runs,
        "summary": summary,
        "provenance": provenance(),
    }
    atomic_write_text(args.out, json.dumps(result, indent=2) + "\n")
    gap = summary["ndcg@10"]
    print(
        f"valid ndcg@10 with - without time bias: mean {gap['gap_mean']:+.4f} "
        f"({gap['seeds_on_ahead']}/{len(args.seeds)} seeds ahead) -> {args.out}"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
