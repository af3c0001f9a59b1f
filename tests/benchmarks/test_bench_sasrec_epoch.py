"""benchmarks/bench_sasrec_epoch.py: epoch sizes and options taken from the config."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from dataset_helpers import make_dataset

from benchmarks.bench_sasrec_epoch import _config_defaults, epoch_sizes

REPO = Path(__file__).resolve().parents[2]


def test_epoch_sizes_count_every_target_once_with_or_without_stride(tmp_path: Path) -> None:
    data = make_dataset(tmp_path / "d", num_users=30, num_items=20, length=(3, 40))
    sizes = epoch_sizes(data, 8, stride=3)
    assert set(sizes) == {"last", "all", "all-stride-3"}
    assert sizes["all"]["targets"] == sizes["all-stride-3"]["targets"]
    assert sizes["last"]["targets"] < sizes["all"]["targets"]
    assert sizes["all-stride-3"]["windows"] > sizes["all"]["windows"]
    assert sizes["all-stride-3"]["events"] > sizes["all"]["events"]


def test_options_not_given_come_from_the_config() -> None:
    args = argparse.Namespace(
        config=REPO / "configs/ml-1m-sasrec-dot-one-epoch.yaml",
        lr=None,
        batch_size=None,
        lr_schedule=None,
        warmup_steps=None,
        embedding_lr_scale=None,
        seed=7,  # given: kept
        train_window=None,
        train_stride=None,
    )
    _config_defaults(args)
    assert (args.lr, args.batch_size, args.lr_schedule, args.warmup_steps) == (
        8e-3,
        16,
        "linear",
        200,
    )
    assert (args.seed, args.train_window, args.train_stride) == (7, "all", 50)
    assert args.embedding_lr_scale == 1.0


def test_summary_rows_are_upserted_by_label(tmp_path: Path) -> None:
    from benchmarks.bench_sasrec_epoch import summary_rows, update_summary

    def run(negatives: str, hr: float) -> dict:
        test = {"hr@10": hr, "ndcg@10": 0.1, "hr@50": 0.5, "hr@200": 0.7, "mrr": 0.1}
        return {
            "negatives": negatives,
            "precision": "bf16-mixed",
            "epochs": 1,
            "epoch_wall_s": [50.0],
            "valid_by_epoch": [{"epoch": 0, "hr@10": hr, "ndcg@10": 0.1}],
            "test": test,
        }

    result = {"config": "c.yaml", "lr": 0.008, "runs": [run("full", 0.25)], "provenance": {}}
    rows = summary_rows(result, "one-epoch")
    assert rows[0]["label"] == "one-epoch" and rows[0]["lr"] == 0.008
    assert rows[0]["test"]["hr@10"] == 0.25 and "mrr" not in rows[0]["test"]
    two = dict(result, runs=[run("full", 0.2), run("shared:128", 0.1)])
    assert [r["label"] for r in summary_rows(two, "x")] == [
        "x full bf16-mixed",
        "x shared:128 bf16-mixed",
    ]
    path = tmp_path / "summary.json"
    update_summary(rows, path)
    update_summary(summary_rows(dict(result, runs=[run("full", 0.26)]), "one-epoch"), path)
    update_summary(summary_rows(two, "x"), path)
    saved = json.loads(path.read_text())["rows"]
    assert [r["label"] for r in saved] == [
        "one-epoch",
        "x full bf16-mixed",
        "x shared:128 bf16-mixed",
    ]
    assert saved[0]["test"]["hr@10"] == 0.26  # replaced, not duplicated
