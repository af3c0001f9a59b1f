"""Synthetic logs: deterministic, realistic in shape, and with a structure a model can learn."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import polars as pl
import pytest

from pipelines.prepare import PrepareConfig, prepare
from pipelines.synth import (
    SynthConfig,
    catalog,
    generate_events,
    make_dataset,
    synth_config,
    write_events,
)
from recsys.dataset import load_dataset
from recsys.errors import UserError
from recsys.splits import leave_one_out

SMALL = SynthConfig(num_users=600, num_items=200, seed=3, mean_length=25)


def test_deterministic_by_seed():
    a, b = generate_events(SMALL), generate_events(SMALL)
    assert a.equals(b)
    other = generate_events(SynthConfig(num_users=600, num_items=200, seed=4, mean_length=25))
    assert not a.equals(other)


def test_sizes_order_and_shape():
    config = SynthConfig(num_users=300, num_items=120, num_events=9000, seed=1, min_length=4)
    events = generate_events(config)
    assert events.height == 9000
    assert events.schema == pl.Schema(
        {"user_id": pl.Int32, "item_id": pl.Int32, "timestamp": pl.Int64}
    )
    assert events["timestamp"].is_sorted()  # a global event stream
    per_user = events.group_by("user_id").len()["len"].to_numpy()
    assert per_user.min() >= 4 and per_user.std() / per_user.mean() > 0.5  # varied lengths
    counts = np.sort(events["item_id"].value_counts()["count"].to_numpy())[::-1]
    assert counts[: len(counts) // 10].sum() > 0.3 * counts.sum()  # heavy-tailed popularity
    assert events["user_id"].n_unique() == 300 and events["item_id"].n_unique() <= 120
    keys = catalog(config).item_keys
    assert set(events["item_id"].to_list()) <= set(keys.tolist())  # sparse original keys


def test_duplicates_and_ratings():
    config = SynthConfig(
        num_users=200, num_items=50, seed=2, duplicate_rate=0.05, with_ratings=True
    )
    events = generate_events(config)
    extra = events.height - config.events
    assert 0.03 * config.events < extra < 0.07 * config.events
    assert events["rating"].is_between(1, 5).all()


def test_make_dataset_equals_preparing_the_raw_log(tmp_path: Path):
    config = SynthConfig(num_users=150, num_items=80, seed=5, duplicate_rate=0.02)
    stats = make_dataset(config, tmp_path / "direct")
    assert stats["num_users"] == 150 and stats["num_interactions"] == config.events
    for fmt in ("parquet", "csv"):
        raw = write_events(config, tmp_path / f"log.{fmt}", fmt)
        prepare(PrepareConfig(format=fmt, input=raw, out=tmp_path / f"via-{fmt}"))
        for name in ("items.parquet", "users.parquet", "sequences.parquet"):
            direct = pl.read_parquet(tmp_path / "direct" / name)
            assert direct.equals(pl.read_parquet(tmp_path / f"via-{fmt}" / name)), (fmt, name)


def test_planted_structure_beats_popularity(tmp_path: Path):
    config = SynthConfig(num_users=2000, num_items=300, seed=0, mean_length=30)
    make_dataset(config, tmp_path / "ds")
    data = load_dataset(tmp_path / "ds")
    split = leave_one_out(data.item_ids, data.offsets)
    n = data.num_items + 1
    bigram = np.zeros((n, n), dtype=np.int64)
    popularity = np.zeros(n, dtype=np.int64)
    for u in range(data.num_users):
        train = data.item_ids[split.train_starts[u] : split.train_ends[u]]
        np.add.at(bigram, (train[:-1], train[1:]), 1)
        popularity += np.bincount(train, minlength=n)
    popularity[0] = -1
    previous = data.item_ids[split.test.ends - 1]
    top_next = np.argsort(-bigram[previous], axis=1, kind="stable")[:, :10]
    hr_markov = (top_next == split.test.targets[:, None]).any(axis=1).mean()
    hr_pop = np.isin(split.test.targets, np.argsort(-popularity)[:10]).mean()
    assert hr_markov > 2 * hr_pop and hr_markov - hr_pop > 0.15, (hr_markov, hr_pop)


@pytest.mark.parametrize(
    ("fields", "pattern"),
    [
        ({"num_users": 0}, "num_users must be >= 1"),
        ({"num_items": 3, "num_clusters": 5}, "num_clusters=5 exceeds num_items=3"),
        ({"num_events": 10}, "num_events=10 is below"),
        ({"p_stay": 0.7, "p_next": 0.5}, "sum <= 1"),
    ],
)
def test_config_errors_name_the_field(fields, pattern):
    with pytest.raises(ValueError, match=pattern):
        SynthConfig(**fields)


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"num_users": 0}, r"^data\.synthetic: num_users must be >= 1"),
        ({"users": 5}, r"^data\.synthetic: unknown key 'users'"),
        ({"seed": "x"}, r"^data\.synthetic\.seed: expected an integer"),
        ([1, 2], r"^data\.synthetic: expected a mapping"),
    ],
)
def test_synth_config_names_the_field(fields, message):
    with pytest.raises(UserError, match=message):
        synth_config(fields)
    assert synth_config({"num_users": 7, "seed": 2}) == SynthConfig(num_users=7, seed=2)
