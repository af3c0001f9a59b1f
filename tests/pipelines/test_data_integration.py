"""The real data sets in ../shared/data (skipped when absent): counts, order, splits, k-core."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import polars as pl
import pytest

from pipelines.prepare import PrepareConfig, prepare
from pipelines.sequences import BuildConfig
from recsys.dataset import load_dataset
from recsys.splits import leave_one_out

pytestmark = pytest.mark.integration

ML1M_SHA256 = "3b3803d72c034929ada18b2cbd114296261c012b7a3e10282543adeceba53fb1"


def file_sequences(path: Path) -> dict[str, list[str]]:
    lines = path.read_text().split("\n")
    return {t[0]: t[1:] for t in (line.split() for line in lines) if t}


def dataset_sequences(out: Path) -> dict[str, list[str]]:
    data = load_dataset(out)
    return {
        data.user_keys[u]: data.item_keys[data.sequence(u)].tolist() for u in range(data.num_users)
    }


def test_ml1m_sequences(shared_data, tmp_path):
    src = shared_data / "ml-1m" / "sequences.txt"
    config = PrepareConfig(
        format="sequences", input=src, out=tmp_path / "ml1m", metadata=src.with_name("movies.dat")
    )
    stats = prepare(config)
    assert (stats["num_users"], stats["num_items"], stats["num_interactions"]) == (
        6040,
        3706,
        1_000_209,
    )
    assert stats["source"]["sha256"] == ML1M_SHA256
    assert dataset_sequences(tmp_path / "ml1m") == file_sequences(src)  # order kept exactly
    data = load_dataset(tmp_path / "ml1m")
    assert data.titles is not None and all(t is not None for t in data.titles[1:])
    # Leave-one-out: targets are each user's last and second-to-last items.
    split = leave_one_out(data.item_ids, data.offsets)
    expected = file_sequences(src)
    assert len(split.test) == 6040
    for j in range(0, 6040, 97):
        seq = expected[data.user_keys[split.test.users[j]]]
        assert data.item_keys[split.test.targets[j]] == seq[-1]
        assert data.item_keys[split.valid.targets[j]] == seq[-2]


def test_ml100k_timestamp_order(shared_data, tmp_path):
    src = shared_data / "ml-100k"
    stats = prepare(PrepareConfig(format="movielens", input=src, out=tmp_path / "ml100k"))
    assert (stats["num_users"], stats["num_items"], stats["num_interactions"]) == (
        943,
        1682,
        100_000,
    )
    data = load_dataset(tmp_path / "ml100k")
    assert data.timestamps is not None and data.titles is not None
    for u in range(data.num_users):
        assert (np.diff(data.times(u)) >= 0).all()
    # Same-second ratings keep the file's order: compare with an explicit stable sort.
    raw = pl.read_csv(
        src / "u.data", separator="\t", has_header=False, new_columns=["u", "i", "r", "t"]
    )
    ref = raw.with_row_index().sort("u", "t", "index").group_by("u", maintain_order=True).agg("i")
    got = dataset_sequences(tmp_path / "ml100k")
    assert {str(u): [str(i) for i in items] for u, items in ref.iter_rows()} == got


def test_amazon_beauty(shared_data, tmp_path):
    src = shared_data / "amazon" / "Beauty.txt"
    stats = prepare(PrepareConfig(format="sequences", input=src, out=tmp_path / "beauty"))
    assert (stats["num_users"], stats["num_items"], stats["num_interactions"]) == (
        22_363,
        12_101,
        198_502,
    )
    assert dataset_sequences(tmp_path / "beauty") == file_sequences(src)


def test_kcore_on_ml100k(shared_data, tmp_path):
    config = PrepareConfig(
        format="movielens",
        input=shared_data / "ml-100k",
        out=tmp_path / "core",
        build=BuildConfig(kcore=30, min_rating=4),
    )
    stats = prepare(config)
    assert stats["removed"]["kcore_events"] > 0
    data = load_dataset(tmp_path / "core")
    assert data.lengths.min() >= 30
    counts = np.bincount(data.item_ids, minlength=data.num_items + 1)[1:]
    assert counts.min() >= 30 and np.array_equal(counts, data.item_counts[1:])
