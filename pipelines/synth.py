"""Synthetic interaction logs that look real and hide a sequential pattern, deterministic by seed.

Each item belongs to one of C latent clusters; inside a cluster item popularity is Zipf-like.
A user's history walks over clusters as a Markov chain: at each step the user stays in the
cluster (`p_stay`), moves to the successor cluster c -> c + 1 mod C (`p_next`) or jumps to a
cluster drawn by cluster popularity (the rest; every history starts with a jump), then picks
an item of that cluster by popularity. The previous item therefore predicts the next one far
better than global popularity does, which a sequential model must learn.

History lengths are log-normal (heavy-tailed like MovieLens), at least `min_length`, and sum to
exactly `num_events`. Timestamps increase within a history (log-normal gaps, some zero: equal
timestamps happen in real logs) and the raw log is written in global time order, interleaving
users like a real event stream. Keys are sparse integers, as in real logs.

Everything is vectorised numpy over blocks of users (no Python loop per event), each block
from its own child of `SeedSequence(seed)`, so the output depends on the seed only and memory
stays at a block's working set plus the output columns.
"""

from __future__ import annotations

import dataclasses
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import polars as pl
from tqdm import tqdm

BLOCK_USERS = 8192
DAY = 86_400


@dataclass(frozen=True)
class SynthConfig:
    """Size and shape of a synthetic log; `num_events` defaults to users x `mean_length`."""

    num_users: int = 1000
    num_items: int = 500
    seed: int = 0
    num_events: int | None = None
    mean_length: float = 30.0
    length_sigma: float = 1.0
    min_length: int = 5
    num_clusters: int | None = None  # default: about sqrt(num_items), at least 2
    p_stay: float = 0.2
    p_next: float = 0.6
    item_zipf: float = 1.1
    cluster_zipf: float = 0.7
    tie_rate: float = 0.05  # share of same-second events (at most p_next)
    duplicate_rate: float = 0.0  # share of events logged twice (raw logs only)
    with_ratings: bool = False
    start_time: int = 1_262_304_000  # 2010-01-01
    span_days: int = 3 * 365

    def __post_init__(self) -> None:
        for name in ("num_users", "num_items", "min_length", "span_days"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.clusters > self.num_items:
            raise ValueError(f"num_clusters={self.clusters} exceeds num_items={self.num_items}")
        if self.clusters < 1:
            raise ValueError(f"num_clusters must be >= 1, got {self.num_clusters}")
        if self.events < self.num_users * self.min_length:
            raise ValueError(
                f"num_events={self.events} is below num_users x min_length = "
                f"{self.num_users * self.min_length}"
            )
        if not (self.p_stay >= 0 and self.p_next >= 0 and self.p_stay + self.p_next <= 1):
            raise ValueError(f"p_stay={self.p_stay}, p_next={self.p_next} must be >= 0, sum <= 1")
        for name in ("tie_rate", "duplicate_rate"):
            if not 0 <= getattr(self, name) < 1:
                raise ValueError(f"{name} must lie in [0, 1), got {getattr(self, name)}")
        if self.mean_length <= 0 or self.length_sigma < 0:
            raise ValueError("mean_length must be > 0 and length_sigma >= 0")

    @property
    def events(self) -> int:
        if self.num_events is not None:
            return self.num_events
        return max(round(self.num_users * self.mean_length), self.num_users * self.min_length)

    @property
    def clusters(self) -> int:
        if self.num_clusters is not None:
            return self.num_clusters
        return min(self.num_items, max(2, round(self.num_items**0.5)))


@dataclass(frozen=True)
class Catalog:
    """The planted structure: keys, clusters and within-cluster popularity order."""

    user_keys: np.ndarray  # (U,) int64
    item_keys: np.ndarray  # (N,) int64
    cluster_start: np.ndarray  # (C+1,) offsets into `members`
    members: np.ndarray  # (N,) item indices grouped by cluster, most popular first
    cluster_weights: np.ndarray  # (C,) probabilities of a jump's target
    lengths: np.ndarray  # (U,) int64 history lengths

    def cluster_of_item(self) -> np.ndarray:
        """(N,) the cluster of each item index."""
        sizes = np.diff(self.cluster_start)
        out = np.empty(len(self.members), dtype=np.int64)
        out[self.members] = np.repeat(np.arange(len(sizes)), sizes)
        return out


def _zipf(n: int, s: float) -> np.ndarray:
    w = 1.0 / np.arange(1, n + 1, dtype=np.float64) ** s
    return w / w.sum()


def _lengths(config: SynthConfig, rng: np.random.Generator) -> np.ndarray:
    """Log-normal lengths >= min_length summing to exactly `config.events`."""
    u, extra = config.num_users, config.events - config.num_users * config.min_length
    w = rng.lognormal(0.0, config.length_sigma, size=u)
    share = w / w.sum() * extra
    lengths = np.floor(share).astype(np.int64)
    short = extra - int(lengths.sum())
    lengths[np.argsort(share - lengths)[::-1][:short]] += 1  # largest remainders first
    return lengths + config.min_length


def catalog(config: SynthConfig) -> Catalog:
    """The deterministic keys, clusters and lengths behind `generate_events(config)`."""
    rng = np.random.default_rng(np.random.SeedSequence(config.seed).spawn(1)[0])
    n, c = config.num_items, config.clusters
    item_keys = np.sort(rng.choice(np.arange(1, 4 * n + 1), size=n, replace=False))
    user_keys = np.sort(
        rng.choice(np.arange(1, 2 * config.num_users + 1), size=config.num_users, replace=False)
    )
    members = rng.permutation(n)
    cluster_start = np.linspace(0, n, c + 1).round().astype(np.int64)
    cluster_weights = _zipf(c, config.cluster_zipf)[rng.permutation(c)]
    return Catalog(
        user_keys, item_keys, cluster_start, members, cluster_weights, _lengths(config, rng)
    )


def _block(
    config: SynthConfig, cat: Catalog, users: np.ndarray, rng: np.random.Generator
) -> dict[str, np.ndarray]:
    """Events of the users `users` (index array), user-major, oldest first."""
    lengths = cat.lengths[users]
    e = int(lengths.sum())
    starts = np.concatenate([[0], np.cumsum(lengths)[:-1]])
    c = len(cat.cluster_weights)
    move = rng.random(e)
    is_jump = move >= config.p_stay + config.p_next
    is_next = (move >= config.p_stay) & ~is_jump
    is_jump[starts] = True
    is_next[starts] = False
    jump_pos = np.flatnonzero(is_jump)
    jump_id = np.cumsum(is_jump) - 1
    base = rng.choice(c, size=len(jump_pos), p=cat.cluster_weights)
    steps = np.cumsum(is_next)
    cluster = (base[jump_id] + steps - steps[jump_pos][jump_id]) % c
    sizes = np.diff(cat.cluster_start)
    rank = np.empty(e, dtype=np.int64)
    draw = rng.random(e)
    for size in np.unique(sizes):  # a handful of distinct cluster sizes
        sel = sizes[cluster] == size
        rank[sel] = np.searchsorted(np.cumsum(_zipf(int(size), config.item_zipf)), draw[sel])
    rank = np.minimum(rank, sizes[cluster] - 1)
    item = cat.members[cat.cluster_start[cluster] + rank]
    # Same-second events (a user rating a batch) happen only on a move to the successor
    # cluster and never twice in a row, so tied events are always distinct items: the log
    # holds no accidental exact duplicates and prepare keeps exactly `num_events`.
    ties_possible = config.p_next > 0 and config.clusters > 1
    share = min(1.0, config.tie_rate / config.p_next) if ties_possible else 0.0
    tie = is_next & (rng.random(e) < share)
    tie[1:] &= ~tie[:-1]
    gaps = np.where(tie, 0, np.minimum(rng.lognormal(8.0, 2.0, size=e), 30 * DAY)).astype(np.int64)
    gaps[~tie & (gaps == 0)] = 1
    gaps[starts] = 0
    elapsed = np.cumsum(gaps)
    elapsed -= np.repeat(elapsed[starts], lengths)
    span = config.span_days * DAY
    first = config.start_time + (rng.random(len(users)) * span * 0.8).astype(np.int64)
    out = {
        "user_id": np.repeat(cat.user_keys[users], lengths),
        "item_id": cat.item_keys[item],
        "timestamp": np.repeat(first, lengths) + elapsed,
    }
    if config.with_ratings:
        out["rating"] = rng.choice(np.arange(1, 6), size=e, p=[0.06, 0.11, 0.27, 0.35, 0.21])
    return out


def generate_events(config: SynthConfig, *, progress: bool = False) -> pl.DataFrame:
    """The raw log: user_id, item_id (Int32 keys), timestamp (Int64 s), [rating Int8].

    Rows are in global time order (ties keep each user's order); with `duplicate_rate`, some
    events appear twice, as double-logged events do.
    """
    cat = catalog(config)
    blocks = range(0, config.num_users, BLOCK_USERS)
    seeds = np.random.SeedSequence(config.seed).spawn(2 + len(blocks))[2:]
    frames = []
    for start, seed in tqdm(
        list(zip(blocks, seeds, strict=True)), desc="synthesising", disable=not progress
    ):
        users = np.arange(start, min(start + BLOCK_USERS, config.num_users))
        cols = _block(config, cat, users, np.random.default_rng(seed))
        frames.append(
            pl.DataFrame(
                {
                    "user_id": pl.Series(cols["user_id"], dtype=pl.Int32),
                    "item_id": pl.Series(cols["item_id"], dtype=pl.Int32),
                    "timestamp": pl.Series(cols["timestamp"], dtype=pl.Int64),
                    **(
                        {"rating": pl.Series(cols["rating"], dtype=pl.Int8)}
                        if "rating" in cols
                        else {}
                    ),
                }
            )
        )
    events = pl.concat(frames, rechunk=False)
    if config.duplicate_rate > 0:
        rng = np.random.default_rng(np.random.SeedSequence(config.seed).spawn(2)[1])
        repeat = np.flatnonzero(rng.random(events.height) < config.duplicate_rate)
        events = pl.concat([events, events[repeat]])
    return events.sort("timestamp", maintain_order=True)


def write_events(
    config: SynthConfig,
    path: str | Path,
    fmt: Literal["parquet", "csv"] = "parquet",
    *,
    progress: bool = False,
) -> Path:
    """Write the raw log of `config` to `path` (Parquet or CSV with a header), atomically."""
    if fmt not in ("parquet", "csv"):
        raise ValueError(f"fmt must be 'parquet' or 'csv', got {fmt!r}")
    target = Path(path)
    events = generate_events(config, progress=progress)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(prefix=f".{target.name}.tmp-", dir=target.parent)
    os.close(fd)
    staged = Path(name)
    try:
        if fmt == "parquet":
            events.write_parquet(staged)
        else:
            events.write_csv(staged)
        staged.chmod(0o644)  # mkstemp creates 0600; a data file is for everyone to read
        staged.replace(target)
    except BaseException:
        staged.unlink(missing_ok=True)
        raise
    return target


def synth_config(fields: Any, where: str = "data.synthetic") -> SynthConfig:
    """A mapping of SynthConfig fields (a run config's `data.synthetic`) -> SynthConfig;
    unknown keys, wrong types and bad values raise `ConfigError` (a `UserError`) naming
    `where`, e.g. `data.synthetic: num_users must be >= 1, got 0`."""
    from recsys.schema import build_dataclass

    config: SynthConfig = build_dataclass(SynthConfig, fields, where)
    return config


def make_dataset(config: SynthConfig, out: str | Path, *, progress: bool = False) -> dict[str, Any]:
    """Generate a log and prepare it into the dataset directory `out`; return its stats.

    The log goes through the same builder as `recsys data prepare` (dedup, dense ids,
    chronological order), so the directory is exactly what preparing the raw log gives.
    """
    from pipelines.sequences import build_sequences
    from recsys.dataset import write_dataset

    events = generate_events(config, progress=progress).rename(
        {"user_id": "user", "item_id": "item"}
    )
    built = build_sequences(events.drop("rating", strict=False).lazy(), progress=progress)
    del events
    stats = {
        "source": {"path": None, "format": "synthetic", "sha256": None},
        "synth": dataclasses.asdict(config),
        **built.stats,
        "skipped_rows": 0,
        "split": {"protocol": "leave_one_out"},
    }
    write_dataset(out, built.items, built.users, built.sequences, stats)
    return {
        "num_users": built.users.height,
        "num_items": built.items.height,
        "num_interactions": int(built.sequences["item_ids"].list.len().sum()),
        **stats,
    }
