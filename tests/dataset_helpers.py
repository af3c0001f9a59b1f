"""Shared by the training, evaluation and benchmark tests: tiny dataset directories with
planted sequential structure (written by write_dataset), and a one-thread fixture
(autouse wherever it is imported)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import polars as pl
import pytest
import torch

from recsys.dataset import write_dataset


def make_dataset(
    path: Path,
    num_users: int = 120,
    num_items: int = 40,
    length: tuple[int, int] = (8, 20),
    seed: int = 0,
    timestamps: bool = False,
    noise: float = 0.1,
) -> Path:
    """Every user walks the item cycle 1..N with a per-user stride in {1, 2, 3}: the next
    item is predictable from the last two, while popularity is nearly uniform."""
    rng = np.random.default_rng(seed)
    seqs, times = [], []
    for _ in range(num_users):
        n = int(rng.integers(length[0], length[1] + 1))
        stride = int(rng.integers(1, 4))
        start = int(rng.integers(0, num_items))
        walk = (start + stride * np.arange(n)) % num_items + 1
        flip = rng.random(n) < noise
        walk[flip] = rng.integers(1, num_items + 1, flip.sum())
        seqs.append(walk.astype(np.int32).tolist())
        times.append((1_000_000 + np.cumsum(rng.integers(1, 5000, n))).tolist())
    return _write(path, seqs, num_items, times if timestamps else None)


def make_long_tail_dataset(
    path: Path,
    num_users: int = 1500,
    num_items: int = 1000,
    clusters: int = 20,
    length: tuple[int, int] = (5, 11),
    seed: int = 0,
) -> Path:
    """A sparse, long-tailed catalog like Amazon 5-core data: item popularity ~ 1/rank, and
    each user draws short histories from one of `clusters` taste groups (an item of the
    user's group is 20x likelier), so a good model ranks per group, not by popularity."""
    rng = np.random.default_rng(seed)
    popularity = 1.0 / np.arange(1, num_items + 1)
    group = rng.integers(0, clusters, num_items)
    seqs = []
    for _ in range(num_users):
        weights = popularity * np.where(group == rng.integers(0, clusters), 20.0, 1.0)
        n = int(rng.integers(length[0], length[1] + 1))
        seqs.append((rng.choice(num_items, n, p=weights / weights.sum()) + 1).tolist())
    return _write(path, seqs, num_items)


def _write(
    path: Path, seqs: list[list[int]], num_items: int, times: list[list[int]] | None = None
) -> Path:
    """A dataset directory of these histories (one user per sequence, ids 1..num_items)."""
    num_users = len(seqs)
    counts = np.bincount(np.concatenate([np.asarray(s) for s in seqs]), minlength=num_items + 1)
    items = pl.DataFrame(
        {
            "item_id": pl.Series(np.arange(1, num_items + 1), dtype=pl.Int32),
            "item_key": [f"i{i}" for i in range(1, num_items + 1)],
            "count": pl.Series(counts[1:], dtype=pl.Int64),
        }
    )
    users = pl.DataFrame(
        {
            "user_id": pl.Series(np.arange(num_users), dtype=pl.Int32),
            "user_key": [f"u{u}" for u in range(num_users)],
        }
    )
    columns = {
        "user_id": pl.Series(np.arange(num_users), dtype=pl.Int32),
        "item_ids": pl.Series(seqs, dtype=pl.List(pl.Int32)),
    }
    if times is not None:
        columns["timestamps"] = pl.Series(times, dtype=pl.List(pl.Int64))
    return write_dataset(path, items, users, pl.DataFrame(columns), {"source": {"path": "test"}})


@pytest.fixture(autouse=True)
def one_thread():
    """Tiny models run fastest on one thread, and a busy machine (other jobs on the same
    cores) makes multi-threaded tiny matmuls spin-wait: 10-100x slower."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
