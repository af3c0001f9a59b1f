"""Full-ranking evaluation speed: all 6,040 ML-1M test users with the paper's HSTU + MoL.

Model: configs/ml-1m-hstu-mol.yaml (8 HSTU blocks, d 50, length 200; MoL 8 x 4 x 64 with
a user-id component), freshly initialised (speed does not depend on the weights) or loaded
from a run directory with --run. Every user's whole catalog (3,706 items) is scored, the
history masked, the target ranked (recsys.evaluation.evaluate). Target: <= 30 s on this
2-core CPU.

Baselines in the same run: the same encoder with the dot-product similarity (what MoL costs
on top of the encoder) and popularity (the ranking machinery alone). RecBole's SASRec full
evaluation took about 9 s here (../shared/docs/BENCHMARKS.md).

    recsys bench eval [--batch-size 512] [--repeats 3] [--run RUN_DIR]

Writes benchmarks/results/eval-ml-1m-cpu.json (or -cuda). Skips when the data is absent.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parent.parent

TARGET_S = 30.0
RECBOLE_EVAL_S = 9.0


def prepared_ml1m(cache: Path) -> Path | None:
    """data/ml-1m prepared from ../shared/data/ml-1m/sequences.txt on first use (None if absent)."""
    from benchmarks.shared_data import prepared_sequences

    return prepared_sequences("ml-1m/sequences.txt", cache / "ml-1m")


def _time(fn: Any, repeats: int) -> tuple[float, list[float], Any]:
    """(median seconds, all seconds, last result)."""
    times, result = [], None
    for _ in range(repeats):
        start = time.perf_counter()
        result = fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times), [round(t, 2) for t in times], result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="recsys bench eval", description=__doc__)
    parser.add_argument("--batch-size", type=int, default=512)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--run", type=Path, help="evaluate this trained run instead")
    parser.add_argument("--config", type=Path, default=REPO_ROOT / "configs/ml-1m-hstu-mol.yaml")
    parser.add_argument("--data-cache", type=Path, default=REPO_ROOT / "data")
    parser.add_argument("--out", type=Path, help="result JSON (default benchmarks/results/...)")
    args = parser.parse_args(argv)

    import numpy as np
    import torch

    from recsys.atomic import atomic_write_text
    from recsys.dataset import load_dataset
    from recsys.evaluation import (
        EvalSet,
        PopularityScorer,
        collect_ranks,
        evaluate,
        training_item_counts,
    )
    from recsys.models.seqrec import ModelConfig, SeqRecModel
    from recsys.provenance import command_line, provenance
    from recsys.similarity.dot import DotConfig
    from recsys.training.config import load_config
    from recsys.training.rundir import load_model

    data_dir = prepared_ml1m(args.data_cache)
    if data_dir is None:
        from benchmarks.shared_data import shared_data_dir

        print(f"skip: {shared_data_dir() / 'ml-1m' / 'sequences.txt'} is absent")
        return 0
    torch.set_num_threads(args.threads)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    data = load_dataset(data_dir)
    torch.manual_seed(0)
    if args.run is not None:
        mol, info = load_model(args.run)
        max_len = info.max_len
    else:
        config = load_config(args.config)
        mol, max_len = SeqRecModel(config.model_config(data.num_items)), config.max_len
    mc = mol.config
    dot = SeqRecModel(ModelConfig(mc.num_items, mc.encoder, DotConfig()))
    mol, dot = mol.to(device).eval(), dot.to(device).eval()
    popularity = PopularityScorer(training_item_counts(data)).to(device)
    users = len(EvalSet(data, "test", max_len))

    def run(scorer: Any, bf16: bool = False) -> dict[str, float]:
        return evaluate(scorer, data, "test", max_len, args.batch_size, device, bf16)

    timings: dict[str, Any] = {}
    for name, scorer, bf16 in (
        ("mol_fp32", mol, False),
        ("mol_bf16", mol, True),
        ("dot_fp32", dot, False),
        ("popularity", popularity, False),
    ):
        median, all_s, metrics = _time(lambda s=scorer, b=bf16: run(s, b), args.repeats)
        timings[name] = {"median_s": round(median, 2), "all_s": all_s, "test": metrics}
        print(f"{name}: {median:.2f} s (median of {all_s})")

    # How much bf16 scoring moves the ranks (ties from 8-bit mantissas; see recsys.evaluation).
    evalset = EvalSet(data, "test", max_len)
    with torch.inference_mode():
        r32, _ = collect_ranks(mol, evalset.loader(args.batch_size), device, bf16=False)
        r16, _ = collect_ranks(mol, evalset.loader(args.batch_size), device, bf16=True)
    result = {
        "benchmark": "full-ranking evaluation, ML-1M test, HSTU + MoL (paper config)",
        "weights": str(args.run) if args.run else "random init (speed only)",
        "users": users,
        "items": data.num_items,
        "batch_size": args.batch_size,
        "device": str(device),
        "threads": torch.get_num_threads(),
        "target_s": TARGET_S,
        "meets_target": timings["mol_fp32"]["median_s"] <= TARGET_S,
        "recbole_sasrec_eval_s": RECBOLE_EVAL_S,
        "timings": timings,
        "bf16_rank_agreement": {
            "same_rank_share": round(float(np.mean(r32 == r16)), 4),
            "median_abs_rank_change": float(np.median(np.abs(r32 - r16))),
        },
        "load_average": [round(x, 2) for x in os.getloadavg()],
        "provenance": provenance(command_line("recsys bench eval", argv)),
    }
    out = args.out or REPO_ROOT / "benchmarks" / "results" / f"eval-ml-1m-{device.type}.json"
    atomic_write_text(out, json.dumps(result, indent=2) + "\n")
    print(f"-> {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
