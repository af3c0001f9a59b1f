"""The sequence builder against a slow, obvious reference, plus each rule on a hand example."""

from __future__ import annotations

from collections import defaultdict

import numpy as np
import polars as pl
import pytest

from pipelines.sequences import BuildConfig, Built, build_sequences, kcore_masks


def build(rows: dict[str, list], **config) -> Built:
    return build_sequences(pl.DataFrame(rows).lazy(), BuildConfig(**config))


def as_histories(built: Built) -> dict[str, list[tuple[str, int | None]]]:
    """{user_key: [(item_key, timestamp), ...]} read back through the id maps."""
    items = dict(built.items.select("item_id", "item_key").iter_rows())
    users = dict(built.users.iter_rows())
    has_ts = "timestamps" in built.sequences.columns
    out = {}
    for row in built.sequences.iter_rows(named=True):
        times = row["timestamps"] if has_ts else [None] * len(row["item_ids"])
        out[users[row["user_id"]]] = [
            (items[i], t) for i, t in zip(row["item_ids"], times, strict=True)
        ]
    return out


def reference(users, items, times, dedup: bool, k: int) -> dict[str, list[tuple[str, int | None]]]:
    """Plain Python: dedup first occurrences, stable sort by time, iterative k-core."""
    events, seen = [], set()
    for order, (u, i, t) in enumerate(zip(users, items, times, strict=True)):
        if dedup and t is not None:
            if (u, i, t) in seen:
                continue
            seen.add((u, i, t))
        events.append((u, i, t, order))
    while k > 1:
        uc, ic = defaultdict(int), defaultdict(int)
        for u, i, _, _ in events:
            uc[u] += 1
            ic[i] += 1
        kept = [e for e in events if uc[e[0]] >= k and ic[e[1]] >= k]
        if len(kept) == len(events):
            break
        events = kept
    hist = defaultdict(list)
    for u, i, t, _ in sorted(events, key=lambda e: (e[2] or 0, e[3])):
        hist[str(u)].append((str(i), t))
    return dict(hist)


@pytest.mark.parametrize("seed", range(6))
def test_builder_matches_reference(seed):
    rng = np.random.default_rng(seed)
    n = int(rng.integers(50, 400))
    users = rng.integers(0, 25, n).tolist()
    items = rng.integers(100, 130, n).tolist()
    has_ts = seed % 3 != 2
    times = rng.integers(0, 8, n).tolist() if has_ts else [None] * n  # many ties
    k = [0, 2, 3][seed % 3]
    rows = {"user": users, "item": items}
    if has_ts:
        rows["timestamp"] = times
        dup = rng.integers(0, n, n // 5)  # exact repeats, inserted later in the log
        for key, values in (("user", users), ("item", items), ("timestamp", times)):
            rows[key] = values + [values[j] for j in dup]
    partition = int(rng.integers(1, 60))
    got = build(rows, kcore=k, rows_per_partition=partition)
    t = rows.get("timestamp", [None] * len(rows["user"]))
    assert as_histories(got) == reference(rows["user"], rows["item"], t, True, k)
    one_part = build(rows, kcore=k, rows_per_partition=10**6)
    assert got.sequences.equals(one_part.sequences)
    assert got.items.equals(one_part.items) and got.users.equals(one_part.users)


def test_tie_break_is_input_order():
    rows = {"user": [1, 1, 1, 1], "item": [10, 11, 12, 13], "timestamp": [5, 3, 5, 3]}
    built = build(rows)
    assert as_histories(built) == {"1": [("11", 3), ("13", 3), ("10", 5), ("12", 5)]}
    assert "input order" in built.stats["tie_break"]


def test_order_only_source_keeps_input_order_and_repeats():
    built = build({"user": [2, 1, 2, 2], "item": [5, 6, 5, 7]})
    assert as_histories(built) == {"1": [("6", None)], "2": [("5", None), ("5", None), ("7", None)]}
    assert built.stats["filters"]["dedup"] is False
    assert "timestamps" not in built.sequences.columns


def test_dedup_keeps_first_occurrence():
    rows = {"user": [1, 1, 1, 1], "item": [7, 8, 7, 7], "timestamp": [1, 1, 1, 2]}
    built = build(rows)
    assert as_histories(built) == {"1": [("7", 1), ("8", 1), ("7", 2)]}
    assert built.stats["removed"]["duplicates"] == 1
    assert as_histories(build(rows, dedup=False))["1"] == [("7", 1), ("8", 1), ("7", 1), ("7", 2)]


def test_min_rating():
    rows = {"user": [1, 1, 2], "item": [3, 4, 3], "timestamp": [1, 2, 3], "rating": [4.0, 2.5, 5.0]}
    built = build(rows, min_rating=4.0)
    assert as_histories(built) == {"1": [("3", 1)], "2": [("3", 3)]}
    assert built.stats["removed"]["min_rating"] == 1
    assert built.items["item_key"].to_list() == ["3"]  # item 4 lost its only event


def test_dense_ids_follow_key_order():
    built = build({"user": [30, 4, 100], "item": [20, 3, 100], "timestamp": [1, 2, 3]})
    assert built.users.rows() == [(0, "4"), (1, "30"), (2, "100")]  # numeric, not text order
    assert built.items.select("item_id", "item_key", "count").rows() == [
        (1, "3", 1), (2, "20", 1), (3, "100", 1),
    ]  # fmt: skip
    assert built.sequences.rows() == [(0, [1], [2]), (1, [2], [1]), (2, [3], [3])]
    text = build({"user": ["b", "a"], "item": ["y", "x"], "timestamp": [1, 2]})
    assert text.users["user_key"].to_list() == ["a", "b"]
    assert as_histories(text) == {"a": [("x", 2)], "b": [("y", 1)]}


def test_sparse_integer_item_keys_take_the_hash_path():
    built = build({"user": [1, 1], "item": [5, 10**15], "timestamp": [1, 2]})
    assert built.items["item_key"].to_list() == ["5", str(10**15)]
    assert built.sequences["item_ids"].to_list() == [[1, 2]]


def test_wide_timestamps_fall_back_to_two_column_sort():
    t = [2**61, -(2**61), 0]
    built = build({"user": [1, 1, 1], "item": [1, 2, 3], "timestamp": t}, rows_per_partition=1)
    assert built.sequences["timestamps"].to_list() == [[-(2**61), 0, 2**61]]


def test_metadata_joined_by_key():
    meta = pl.LazyFrame(
        {
            "item": [3, 9, 20],
            "title": ["Three", "Nine", "Twenty"],
            "genres": [["a"], [], ["b", "c"]],
        }
    )
    rows = {"user": [1, 1], "item": [20, 3], "timestamp": [1, 2]}
    built = build_sequences(pl.DataFrame(rows).lazy(), BuildConfig(), meta)
    assert built.items.select("item_key", "title", "genres").rows() == [
        ("3", "Three", ["a"]), ("20", "Twenty", ["b", "c"]),
    ]  # fmt: skip


def test_kcore_property_and_maximality():
    rng = np.random.default_rng(3)
    users = rng.integers(0, 60, 900)
    items = rng.integers(1, 80, 900)
    for k in (2, 5, 10):
        keep_u, keep_i = kcore_masks(users, items, 60, 79, k)
        alive = keep_u[users] & keep_i[items]
        assert (np.bincount(users[alive], minlength=60)[keep_u] >= k).all()
        assert (np.bincount(items[alive], minlength=80)[keep_i] >= k).all()
        # Maximal: the reference core (same rule, plain Python) keeps the same events.
        ref = reference(users.tolist(), items.tolist(), [None] * 900, False, k)
        assert sum(len(v) for v in ref.values()) == int(alive.sum())


def test_kcore_output_satisfies_core_property():
    rng = np.random.default_rng(4)
    n = 3000
    rows = {
        "user": rng.integers(0, 200, n),
        "item": rng.zipf(1.5, n) % 150,
        "timestamp": rng.integers(0, 10**6, n),
    }
    built = build(rows, kcore=5)
    assert built.stats["removed"]["kcore_events"] > 0
    lengths = built.sequences["item_ids"].list.len()
    assert lengths.min() >= 5
    assert built.items["count"].min() >= 5
    flat = built.sequences["item_ids"].explode().to_numpy()
    assert np.array_equal(np.bincount(flat)[1:], built.items["count"].to_numpy())
    assert built.users["user_id"].to_list() == list(range(built.users.height))
