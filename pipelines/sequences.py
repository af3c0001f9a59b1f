"""The sequence builder: raw events -> the frames of a dataset directory (`recsys.dataset`).

Input: a LazyFrame of events in input order with `user`, `item` (original keys) and, when
the source has times, `timestamp` (Int64 unix seconds). Steps, in this order:

1. `filter_min_rating`: keep events rated at least `min_rating` (optional).
2. `drop_exact_duplicates`: an event repeated with the same (user, item, timestamp) is kept
   once, its first occurrence in input order. The rating is not part of an event's identity.
   Sources without timestamps are not deduplicated: with order alone a repeat is a real
   re-interaction (listening to a song twice), not provably a double-logged event.
3. k-core (optional, `kcore_masks`): repeatedly drop users and items with fewer than k events
   until every remaining user and item has at least k.
4. Dense ids, in the order of the original keys (numeric for integer keys, lexicographic for
   text): users 0..U-1, items 1..N, 0 is padding. `users.parquet`/`items.parquet` map back.
5. Chronological order per user, ties (equal timestamps, or no timestamps) broken by input
   order: every sort is stable and every filter keeps order.

Memory: users are split into partitions (contiguous in key order) of about
`rows_per_partition` events; each partition is filtered from the input, sorted (on one packed
Int64 key when it fits), deduplicated and aggregated to lists on its own. A Parquet scan is
re-read per partition, so peak memory is the output lists plus one partition's working set
rather than the several copies of all events that a global multi-column sort needs.
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import polars as pl
from tqdm import tqdm

TIE_BREAK = "timestamp, then input order (stable sort; order-only sources keep input order)"
ID_ORDER = "dense ids follow the original keys' order: users 0..U-1, items 1..N (0 = padding)"


@dataclass(frozen=True)
class BuildConfig:
    """Filters of the builder; `rows_per_partition` bounds the working memory."""

    dedup: bool = True
    min_rating: float | None = None
    kcore: int = 0
    rows_per_partition: int = 2_500_000

    def __post_init__(self) -> None:
        if self.kcore < 0:
            raise ValueError(f"kcore must be >= 0 (0 disables it), got {self.kcore}")
        if self.min_rating is not None and not math.isfinite(self.min_rating):
            raise ValueError(f"min_rating must be a finite number, got {self.min_rating}")
        if self.rows_per_partition < 1:
            raise ValueError(f"rows_per_partition must be >= 1, got {self.rows_per_partition}")


@dataclass(frozen=True)
class Built:
    """The three frames `recsys.dataset.write_dataset` takes, plus what the builder did."""

    items: pl.DataFrame
    users: pl.DataFrame
    sequences: pl.DataFrame
    stats: dict[str, Any]


def filter_min_rating(events: pl.LazyFrame, min_rating: float | None) -> pl.LazyFrame:
    """Keep events with `rating >= min_rating`; the rating column is dropped either way."""
    if min_rating is not None:
        events = events.filter(pl.col("rating") >= min_rating)
    return events.drop("rating", strict=False)


def item_id_expr(item_keys: pl.Series) -> pl.Expr:
    """`item` key -> dense id 1..N given the sorted distinct keys.

    Compact integer keys use a lookup table (a gather, several times faster than hashing);
    other keys a hash map.
    """
    n = len(item_keys)
    if item_keys.dtype.is_integer() and n:
        lo, hi = int(item_keys[0]), int(item_keys[-1])
        if hi - lo < max(8 * n, 1 << 20):
            table = np.zeros(hi - lo + 1, dtype=np.int32)
            table[item_keys.to_numpy().astype(np.int64) - lo] = np.arange(1, n + 1)
            return pl.lit(pl.Series(table)).gather(pl.col("item").cast(pl.Int64) - lo)
    ids = pl.int_range(1, n + 1, dtype=pl.Int32, eager=True)
    return pl.col("item").replace_strict(item_keys, ids, return_dtype=pl.Int32)


def map_dense_ids(
    events: pl.LazyFrame, item_ids: pl.Expr, user_keys: pl.Series, first_user: int
) -> pl.LazyFrame:
    """`item` -> `item_id` (see `item_id_expr`); text user keys -> their index in key order.

    Integer user keys are kept: they already sort in key order, and user ids are assigned
    once the users are grouped (`build_sequences`).
    """
    events = events.with_columns(item_id=item_ids).drop("item")
    if user_keys.dtype.is_integer():
        return events
    index = pl.int_range(first_user, first_user + len(user_keys), dtype=pl.Int64, eager=True)
    return events.with_columns(pl.col("user").replace_strict(user_keys, index))


def sort_chronologically(
    events: pl.LazyFrame, user_range: tuple[int, int], time_range: tuple[int, int] | None
) -> pl.LazyFrame:
    """Stable sort by (user, timestamp) for integer `user` values in `user_range` (inclusive):
    ties keep input order.

    When users and timestamps (`time_range`, inclusive) fit in 62 bits together, the sort runs
    on one packed Int64 key, several times faster than a stable two-column sort.
    """
    if time_range is None:
        return events.sort("user", maintain_order=True)
    lo, hi = user_range
    t0, t1 = time_range
    time_bits = max(1, (t1 - t0).bit_length())
    if (hi - lo).bit_length() + time_bits > 62:
        return events.sort("user", "timestamp", maintain_order=True)
    key = (pl.col("user").cast(pl.Int64) - lo) * (1 << time_bits) + (pl.col("timestamp") - t0)
    return events.sort(key, maintain_order=True)


def drop_exact_duplicates(events: pl.DataFrame) -> tuple[pl.DataFrame, int]:
    """Drop repeats of (user, item_id, timestamp) from a frame sorted by `sort_chronologically`.

    Repeats share user and timestamp, so they sit in runs of equal (user, timestamp); only
    rows in such runs are hashed, which costs little when ties are rare. Returns the frame
    and the number of rows dropped.
    """
    same = (pl.col("user") == pl.col("user").shift(1)) & (
        pl.col("timestamp") == pl.col("timestamp").shift(1)
    )
    tied = (same | same.shift(-1)).fill_null(False)
    candidates = events.with_row_index("_pos").filter(tied)
    if candidates.height == 0:
        return events, 0
    key = pl.struct("user", "timestamp", "item_id")
    repeats = candidates.filter(~key.is_first_distinct())["_pos"]
    if repeats.len() == 0:
        return events, 0
    keep = ~pl.int_range(pl.len(), dtype=pl.UInt32).is_in(repeats.implode())
    return events.filter(keep), repeats.len()


def group_sequences(events: pl.DataFrame) -> pl.DataFrame:
    """One row per user of a frame sorted by user: `item_ids` (and `timestamps`) as lists."""
    aggs = {"item_ids": pl.col("item_id")}
    if "timestamp" in events.columns:
        aggs["timestamps"] = pl.col("timestamp")
    return events.group_by("user", maintain_order=True).agg(**aggs)


def _number_users(sequences: pl.DataFrame) -> pl.DataFrame:
    """Replace the `user` column of grouped, key-ordered users by `user_id` 0..U-1."""
    user_id = pl.int_range(pl.len(), dtype=pl.Int32).alias("user_id")
    return sequences.select(user_id, pl.exclude("user"))


def kcore_masks(
    users: np.ndarray, items: np.ndarray, num_users: int, num_items: int, k: int
) -> tuple[np.ndarray, np.ndarray]:
    """Iterative k-core of the user-item multigraph.

    users, items: (E,) dense ids of each event (items 1..num_items). Returns boolean masks
    (num_users,) and (num_items + 1,) of the users/items that keep at least k events among
    kept users and items; an event survives iff both its user and its item do.
    """
    keep_u = np.ones(num_users, dtype=np.bool_)
    keep_i = np.ones(num_items + 1, dtype=np.bool_)
    keep_i[0] = False
    alive = np.ones(len(users), dtype=np.bool_)
    while True:
        u_count = np.bincount(users[alive], minlength=num_users)
        i_count = np.bincount(items[alive], minlength=num_items + 1)
        new_u = keep_u & (u_count >= k)
        new_i = keep_i & (i_count >= k)
        if np.array_equal(new_u, keep_u) and np.array_equal(new_i, keep_i):
            return keep_u, keep_i
        keep_u, keep_i = new_u, new_i
        alive &= keep_u[users] & keep_i[items]


def _apply_kcore(
    sequences: pl.DataFrame, num_items: int, k: int
) -> tuple[pl.DataFrame, np.ndarray, np.ndarray, int]:
    """k-core over the list frame: (frame with ids renumbered, user mask, item mask, cut)."""
    lengths = sequences["item_ids"].list.len().to_numpy()
    items = sequences["item_ids"].explode().to_numpy()
    users = np.repeat(np.arange(sequences.height, dtype=np.int32), lengths)
    keep_u, keep_i = kcore_masks(users, items, sequences.height, num_items, k)
    alive = keep_u[users] & keep_i[items]
    removed = int(len(alive) - alive.sum())
    if removed == 0:
        return sequences, keep_u, keep_i, 0
    # Survivors keep their relative order, so renumbering keeps ids in key order.
    new_user = (np.cumsum(keep_u, dtype=np.int64) - 1).astype(np.int32)
    new_item = (np.cumsum(keep_i, dtype=np.int64) * keep_i).astype(np.int32)
    flat = {
        "user": pl.Series(new_user[users[alive]]).set_sorted(),
        "item_id": pl.Series(new_item[items[alive]]),
    }
    if "timestamps" in sequences.columns:
        flat["timestamp"] = pl.Series(sequences["timestamps"].explode().to_numpy()[alive])
    return _number_users(group_sequences(pl.DataFrame(flat))), keep_u, keep_i, removed


def _partitions(counts: np.ndarray, rows_per_partition: int) -> list[tuple[int, int]]:
    """Contiguous user index ranges [lo, hi) of about `rows_per_partition` events each."""
    if len(counts) == 0:
        return []
    ends = np.cumsum(counts)
    total = int(ends[-1])
    parts = max(1, math.ceil(total / rows_per_partition))
    cuts = np.searchsorted(ends, np.linspace(0, total, parts + 1)[1:-1], side="right")
    bounds = [0, *sorted(set(int(c) for c in cuts if 0 < c < len(counts))), len(counts)]
    return list(itertools.pairwise(bounds))


def build_sequences(
    events: pl.LazyFrame,
    config: BuildConfig = BuildConfig(),
    metadata: pl.LazyFrame | None = None,
    *,
    progress: bool = False,
) -> Built:
    """Build items/users/sequences frames from events (user, item, [timestamp], [rating]).

    `events` is scanned once per partition of users: pass a Parquet scan to keep only one
    partition in memory at a time, or `df.lazy()` for events already in memory.
    `metadata` (item, title, genres) is joined onto the items by original key when given.
    """
    has_ts = "timestamp" in events.collect_schema().names()
    rows_in = events.select(pl.len()).collect().item()
    events = events.pipe(filter_min_rating, config.min_rating)
    # The streaming engine aggregates in small morsels: a fraction of the in-memory
    # engine's peak memory on 20M rows.
    aggs = [pl.len()]
    if has_ts:
        aggs += [pl.col("timestamp").min().alias("t0"), pl.col("timestamp").max().alias("t1")]
    per_user = events.group_by("user").agg(*aggs).sort("user").collect(engine="streaming")
    distinct_items = events.select(pl.col("item").unique()).sort("item")
    item_keys = distinct_items.collect(engine="streaming")["item"]
    removed_by_rating = rows_in - int(per_user["len"].sum())
    time_range = None
    if has_ts and per_user.height:
        time_range = (int(per_user["t0"].min()), int(per_user["t1"].max()))  # type: ignore[arg-type]
    user_keys = per_user["user"]
    duplicates = 0
    parts = []
    counts = np.zeros(len(item_keys) + 1, dtype=np.int64)
    bounds = _partitions(per_user["len"].to_numpy(), config.rows_per_partition)
    item_ids = item_id_expr(item_keys)
    for lo, hi in tqdm(bounds, desc="ordering users", unit="part", disable=not progress):
        keys = user_keys.slice(lo, hi - lo)
        span = (int(keys[0]), int(keys[-1])) if keys.dtype.is_integer() else (lo, hi - 1)
        part = (
            events.filter(pl.col("user").is_between(pl.lit(keys[0]), pl.lit(keys[-1])))
            .pipe(map_dense_ids, item_ids, keys, lo)
            .pipe(sort_chronologically, span, time_range)
            .collect()
        )
        if config.dedup and has_ts:
            part, dropped = drop_exact_duplicates(part)
            duplicates += dropped
        counts += np.bincount(part["item_id"].to_numpy(), minlength=len(counts))
        parts.append(group_sequences(part))
    del events
    sequences = _number_users(pl.concat(parts)) if parts else _empty_sequences(has_ts)
    keep_users = np.ones(len(user_keys), dtype=np.bool_)
    keep_items = np.ones(len(item_keys) + 1, dtype=np.bool_)
    kcore_removed = 0
    if config.kcore > 1:
        sequences, keep_users, keep_items, kcore_removed = _apply_kcore(
            sequences, len(item_keys), config.kcore
        )
        flat = sequences["item_ids"].explode().to_numpy()
        counts = np.bincount(flat, minlength=int(keep_items.sum()) + 1)
    kept_keys = user_keys.filter(pl.Series(keep_users))
    users = pl.DataFrame(
        {
            "user_id": pl.int_range(0, len(kept_keys), dtype=pl.Int32, eager=True),
            "user_key": kept_keys.cast(pl.String),
        }
    )
    items = _items_frame(item_keys.filter(pl.Series(keep_items[1:])), counts[1:], metadata)
    stats = {
        "filters": {
            "dedup": config.dedup and has_ts,
            "min_rating": config.min_rating,
            "kcore": config.kcore if config.kcore > 1 else None,
        },
        "removed": {
            "min_rating": removed_by_rating,
            "duplicates": duplicates,
            "kcore_events": kcore_removed,
            "kcore_users": int(len(keep_users) - keep_users.sum()),
            "kcore_items": int(len(keep_items) - 1 - keep_items[1:].sum()),
        },
        "tie_break": TIE_BREAK,
        "id_order": ID_ORDER,
    }
    return Built(items=items, users=users, sequences=sequences, stats=stats)


def _empty_sequences(has_ts: bool) -> pl.DataFrame:
    schema: dict[str, pl.DataType] = {"user_id": pl.Int32(), "item_ids": pl.List(pl.Int32)}
    if has_ts:
        schema["timestamps"] = pl.List(pl.Int64)
    return pl.DataFrame(schema=schema)


def _items_frame(
    item_keys: pl.Series, counts: np.ndarray, metadata: pl.LazyFrame | None
) -> pl.DataFrame:
    """item_id 1..N, item_key as text, interaction count (N,), and title/genres when known."""
    n = len(item_keys)
    items = pl.DataFrame(
        {
            "item_id": pl.int_range(1, n + 1, dtype=pl.Int32, eager=True),
            "item_key": item_keys.cast(pl.String),
            "count": pl.Series(counts.astype(np.int64)),
            "_key": item_keys,
        }
    )
    if metadata is not None:
        meta = (
            metadata.select(
                pl.col("item").cast(item_keys.dtype).alias("_key"),
                pl.col("title").cast(pl.String),
                pl.col("genres").cast(pl.List(pl.String)),
            )
            .unique("_key", keep="first", maintain_order=True)
            .collect()
        )
        items = items.join(meta, on="_key", how="left", maintain_order="left")
    return items.drop("_key")
