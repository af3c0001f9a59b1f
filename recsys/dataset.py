"""The dataset directory: the contract between the Polars pipelines and training.

Layout (FORMAT_VERSION 1):
- `items.parquet`: item_id Int32 (dense 1..N; 0 is padding), item_key Utf8 (original id),
  count Int64 (interactions), optional title Utf8, optional genres List(Utf8).
- `users.parquet`: user_id Int32 (dense 0..U-1), user_key Utf8 (original id).
- `sequences.parquet`: user_id Int32, item_ids List(Int32) in chronological order,
  optional timestamps List(Int64) (unix seconds).
- `stats.json`: format_version, num_users, num_items, num_interactions, has_timestamps,
  source, filters, tie_break, created_at, ...

`write_dataset` validates the frames and writes atomically; `load_dataset` returns a compact
numpy view (ragged arrays: flat values + offsets) for training and evaluation.
"""

from __future__ import annotations

import datetime as dt
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl

from recsys.atomic import atomic_dir
from recsys.errors import UserError

FORMAT_VERSION = 1
FILES = ("items.parquet", "users.parquet", "sequences.parquet", "stats.json")
REQUIRED_STATS = ("format_version", "num_users", "num_items", "num_interactions")

ITEMS_SCHEMA: dict[str, pl.DataType] = {
    "item_id": pl.Int32(),
    "item_key": pl.String(),
    "count": pl.Int64(),
}
USERS_SCHEMA: dict[str, pl.DataType] = {"user_id": pl.Int32(), "user_key": pl.String()}
SEQUENCES_SCHEMA: dict[str, pl.DataType] = {"user_id": pl.Int32(), "item_ids": pl.List(pl.Int32)}


@dataclass(frozen=True)
class SequenceDataset:
    """Per-user chronological histories as ragged numpy arrays.

    User u's events are `item_ids[offsets[u]:offsets[u + 1]]` (ids 1..N), with the matching
    `timestamps` slice when the source had times. `item_keys[i]` is item i's original key
    (`item_keys[0]` is the padding entry "").
    """

    item_ids: np.ndarray  # (E,) int32
    offsets: np.ndarray  # (U+1,) int64
    timestamps: np.ndarray | None  # (E,) int64
    user_keys: np.ndarray  # (U,) object (str)
    item_keys: np.ndarray  # (N+1,) object (str)
    item_counts: np.ndarray  # (N+1,) int64, 0 for padding
    titles: np.ndarray | None  # (N+1,) object (str | None)
    stats: dict[str, Any] = field(default_factory=dict)

    @property
    def num_users(self) -> int:
        return len(self.offsets) - 1

    @property
    def num_items(self) -> int:
        return len(self.item_keys) - 1

    @property
    def num_interactions(self) -> int:
        return int(self.offsets[-1])

    @property
    def lengths(self) -> np.ndarray:
        """(U,) int64 number of events per user."""
        return np.diff(self.offsets)

    def sequence(self, user: int) -> np.ndarray:
        """User `user`'s items, oldest first."""
        return self.item_ids[self.offsets[user] : self.offsets[user + 1]]

    def times(self, user: int) -> np.ndarray | None:
        if self.timestamps is None:
            return None
        return self.timestamps[self.offsets[user] : self.offsets[user + 1]]


def _check_schema(df: pl.DataFrame, schema: dict[str, pl.DataType], name: str) -> None:
    for col, dtype in schema.items():
        if col not in df.columns:
            raise ValueError(f"{name}: missing column {col!r} (expected {dtype})")
        if df.schema[col] != dtype:
            raise ValueError(f"{name}: column {col!r} has type {df.schema[col]}, expected {dtype}")


def validate_frames(items: pl.DataFrame, users: pl.DataFrame, sequences: pl.DataFrame) -> None:
    """Check the invariants every consumer relies on; raise ValueError naming what broke."""
    _check_schema(items, ITEMS_SCHEMA, "items.parquet")
    _check_schema(users, USERS_SCHEMA, "users.parquet")
    _check_schema(sequences, SEQUENCES_SCHEMA, "sequences.parquet")
    n, u = items.height, users.height
    if not items["item_id"].equals(pl.Series("item_id", np.arange(1, n + 1), pl.Int32)):
        raise ValueError("items.parquet: item_id must be the dense sorted range 1..N")
    if not users["user_id"].equals(pl.Series("user_id", np.arange(u), pl.Int32)):
        raise ValueError("users.parquet: user_id must be the dense sorted range 0..U-1")
    if not sequences["user_id"].equals(users["user_id"]):
        raise ValueError("sequences.parquet: one row per user, in user_id order, is expected")
    flat = sequences["item_ids"].explode()
    if flat.null_count() or (flat.len() and (flat.min() < 1 or flat.max() > n)):  # type: ignore[operator]
        raise ValueError(f"sequences.parquet: item ids must lie in 1..{n}")
    if "timestamps" in sequences.columns:
        if sequences.schema["timestamps"] != pl.List(pl.Int64):
            raise ValueError("sequences.parquet: timestamps must be List(Int64)")
        if not (sequences["timestamps"].list.len() == sequences["item_ids"].list.len()).all():
            raise ValueError("sequences.parquet: timestamps and item_ids lengths differ")


def write_dataset(
    path: str | Path,
    items: pl.DataFrame,
    users: pl.DataFrame,
    sequences: pl.DataFrame,
    stats: dict[str, Any],
) -> Path:
    """Validate and write a dataset directory atomically; return its path.

    `stats` is completed with the counts and the format version; a failure anywhere leaves
    an existing directory at `path` untouched.
    """
    validate_frames(items, users, sequences)
    full_stats = {
        "format_version": FORMAT_VERSION,
        "num_users": users.height,
        "num_items": items.height,
        "num_interactions": int(sequences["item_ids"].list.len().sum()),
        "has_timestamps": "timestamps" in sequences.columns,
        "created_at": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        **{k: v for k, v in stats.items() if k not in REQUIRED_STATS},
    }
    with atomic_dir(path) as tmp:
        items.write_parquet(tmp / "items.parquet")
        users.write_parquet(tmp / "users.parquet")
        # Level 1: much faster to write at 20M events, for a slightly larger file.
        sequences.write_parquet(tmp / "sequences.parquet", compression_level=1)
        (tmp / "stats.json").write_text(json.dumps(full_stats, indent=2) + "\n")
    return Path(path)


def read_stats(path: str | Path) -> dict[str, Any]:
    """Read and check `stats.json` of a dataset directory."""
    root = Path(path)
    if not root.is_dir():
        raise UserError(f"dataset directory {root} does not exist (run `recsys data prepare`)")
    missing = [f for f in FILES if not (root / f).is_file()]
    if missing:
        raise UserError(f"dataset directory {root} is missing {', '.join(missing)}")
    try:
        stats = json.loads((root / "stats.json").read_text())
    except json.JSONDecodeError as e:
        raise UserError(f"{root / 'stats.json'}: not valid JSON ({e})") from e
    absent = [k for k in REQUIRED_STATS if k not in stats]
    if absent:
        raise UserError(f"{root / 'stats.json'}: missing keys {absent}")
    if stats["format_version"] != FORMAT_VERSION:
        raise UserError(
            f"{root}: dataset format_version {stats['format_version']} is not supported "
            f"(expected {FORMAT_VERSION}); re-run `recsys data prepare`"
        )
    return stats


def load_dataset(path: str | Path) -> SequenceDataset:
    """Load a dataset directory written by `write_dataset` into numpy arrays."""
    root = Path(path)
    stats = read_stats(root)
    items = pl.read_parquet(root / "items.parquet")
    users = pl.read_parquet(root / "users.parquet")
    sequences = pl.read_parquet(root / "sequences.parquet")
    try:
        validate_frames(items, users, sequences)
    except ValueError as e:
        raise UserError(f"dataset directory {root}: {e}") from e
    for key, actual in (("num_items", items.height), ("num_users", users.height)):
        if stats[key] != actual:
            raise UserError(
                f"{root / 'stats.json'}: {key}={stats[key]} but the files hold {actual}"
            )

    lengths = sequences["item_ids"].list.len().to_numpy().astype(np.int64)
    offsets = np.zeros(len(lengths) + 1, dtype=np.int64)
    np.cumsum(lengths, out=offsets[1:])
    item_ids = sequences["item_ids"].explode().drop_nulls().to_numpy().astype(np.int32)
    timestamps = None
    if "timestamps" in sequences.columns:
        timestamps = sequences["timestamps"].explode().drop_nulls().to_numpy().astype(np.int64)

    item_keys = np.empty(items.height + 1, dtype=object)
    item_keys[0] = ""
    item_keys[1:] = items["item_key"].to_numpy()
    counts = np.zeros(items.height + 1, dtype=np.int64)
    counts[1:] = items["count"].to_numpy()
    titles = None
    if "title" in items.columns:
        titles = np.empty(items.height + 1, dtype=object)
        titles[1:] = items["title"].to_numpy()
    return SequenceDataset(
        item_ids=item_ids,
        offsets=offsets,
        timestamps=timestamps,
        user_keys=users["user_key"].to_numpy().astype(object),
        item_keys=item_keys,
        item_counts=counts,
        titles=titles,
        stats=stats,
    )
