"""benchmarks/bench_sasrec_epoch.py: epoch sizes and options taken from the config."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "benchmarks"))

from bench_sasrec_epoch import _config_defaults, epoch_sizes  # noqa: E402

from tests.training.conftest import make_dataset  # noqa: E402


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
