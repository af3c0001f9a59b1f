"""Batch recommendations: top-k for many users through Ray Data, written atomically.

`ray.data.from_items(user keys)` -> `map_batches(RecommendBatch)` on a fixed pool of actors
(each loads the bundle once; one encoder call and one retriever call per batch of users) ->
Parquet. The same job runs on the embedded local Ray or, unchanged, on a Ray cluster, where
the actor pool spreads over the nodes.

Users are grouped into batches of similar history length (cheaper encoder calls), so the
output rows come in no particular order. Output, one row per user, best item first:
`user_key` Utf8, `item_keys` List(Utf8), `scores` List(Float32), `fallback` Utf8 (null, or
"popularity" for users without a usable history). `out` ending in `.parquet` is one file
(collected on the driver); any other path is a directory of Parquet files written by the
workers. Either way it appears whole or not at all.
"""

from __future__ import annotations

import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import torch

from recsys.atomic import atomic_dir, atomic_write_bytes
from recsys.errors import UserError
from recsys.malloc import tune_malloc
from recsys.recommend import DEFAULT_RAILS_BUDGET, MAX_K, RETRIEVERS, Recommender, RecRequest

OUTPUT_SCHEMA = pa.schema(
    [
        ("user_key", pa.string()),
        ("item_keys", pa.list_(pa.string())),
        ("scores", pa.list_(pa.float32())),
        ("fallback", pa.string()),
    ]
)


@dataclass(frozen=True)
class BatchRecommendConfig:
    """bundle_path, out (.parquet file or directory), users ("all" or a file of user keys:
    text with one key a line, or Parquet/CSV with a `user_key` column), k, retriever,
    exclude_seen, batch_size (users per model call), actors (model copies), num_cpus per
    actor (= torch threads), rails_budget (TopKAvg candidates; None = the retrieval default)."""

    bundle_path: str
    out: str
    users: str = "all"
    k: int = 100
    retriever: str = "rails"
    exclude_seen: bool = True
    batch_size: int = 256
    actors: int = 1
    num_cpus: int = 1
    rails_budget: int | None = DEFAULT_RAILS_BUDGET

    def __post_init__(self) -> None:
        if not 1 <= self.k <= MAX_K:
            raise UserError(f"k: expected 1..{MAX_K}, got {self.k}")
        if self.retriever not in RETRIEVERS:
            raise UserError(f"retriever: expected one of {RETRIEVERS}, got {self.retriever!r}")
        for name in ("batch_size", "actors", "num_cpus"):
            if getattr(self, name) < 1:
                raise UserError(f"{name}: expected >= 1, got {getattr(self, name)}")


@dataclass(frozen=True)
class BatchReport:
    out: str
    num_users: int
    num_fallback: int
    seconds: float


class RecommendBatch:
    """Ray Data callable class: loads the bundle once per actor, answers batches of users."""

    def __init__(
        self,
        bundle_path: str,
        k: int,
        retriever: str,
        exclude_seen: bool,
        threads: int,
        rails_budget: int | None,
    ) -> None:
        tune_malloc()  # see recsys.malloc
        torch.set_num_threads(threads)
        self.recommender = Recommender.load(
            bundle_path, default_retriever=retriever, rails_budget=rails_budget
        )
        self.k = k
        self.exclude_seen = exclude_seen

    def __call__(self, batch: dict[str, np.ndarray]) -> pa.Table:
        keys = [str(u) for u in batch["user_key"]]
        results = self.recommender.recommend(
            [RecRequest(user_key=u, k=self.k, exclude_seen=self.exclude_seen) for u in keys]
        )
        return pa.table(
            {
                "user_key": keys,
                "item_keys": [list(r.item_keys) for r in results],
                "scores": [list(r.scores) for r in results],
                "fallback": [r.fallback for r in results],
            },
            schema=OUTPUT_SCHEMA,
        )


def read_user_keys(users: str, bundle_path: str) -> list[str]:
    """ "all" -> every user of the bundle; else the keys listed in the file `users`."""
    import polars as pl

    if users == "all":
        users_file = Path(bundle_path) / "users.parquet"
        if not users_file.is_file():
            raise UserError(f"bundle {bundle_path}: {users_file.name} is missing")
        return pl.read_parquet(users_file, columns=["user_key"])["user_key"].to_list()
    path = Path(users)
    if not path.is_file():
        raise UserError(f"--users: {path} is not a file (expected 'all' or a file of user keys)")
    if path.suffix in (".parquet", ".csv"):
        frame = (
            pl.read_parquet(path)
            if path.suffix == ".parquet"
            else pl.read_csv(path, infer_schema=False)
        )
        if "user_key" not in frame.columns:
            raise UserError(f"{path}: expected a 'user_key' column, found {frame.columns}")
        return [str(u) for u in frame["user_key"].drop_nulls().to_list()]
    keys = [line.strip() for line in path.read_text().splitlines()]
    return [k for k in keys if k]


def by_history_length(keys: list[str], bundle_path: str) -> list[str]:
    """`keys` ordered by stored history length (unknown users first).

    The encoder pads each batch to its longest history and attention costs T^2, so batches
    of similar lengths do much less work than batches of random users.
    """
    import polars as pl

    root = Path(bundle_path)
    users = pl.read_parquet(root / "users.parquet", columns=["user_id", "user_key"])
    lengths = pl.read_parquet(root / "histories.parquet", columns=["user_id", "item_ids"])
    table = users.join(
        lengths.select("user_id", pl.col("item_ids").list.len().alias("length")), on="user_id"
    )
    length_of = dict(zip(table["user_key"].to_list(), table["length"].to_list(), strict=True))
    return sorted(keys, key=lambda k: length_of.get(k, 0))


def run_batch_recommend(config: BatchRecommendConfig) -> BatchReport:
    """Run the job on the connected Ray (start one first: `serving.local_ray`)."""
    import ray.data

    # Progress bars only on a terminal; in logs they are a wall of lines.
    ray.data.DataContext.get_current().enable_progress_bars = sys.stderr.isatty()
    start = time.perf_counter()
    keys = read_user_keys(config.users, config.bundle_path)
    if not keys:
        raise UserError(f"--users {config.users}: no user keys to recommend for")
    keys = by_history_length(keys, config.bundle_path)
    blocks = max(config.actors * 4, len(keys) // config.batch_size + 1)
    ds = ray.data.from_items([{"user_key": k} for k in keys], override_num_blocks=blocks)
    recs = ds.map_batches(
        RecommendBatch,
        fn_constructor_kwargs={
            "bundle_path": str(Path(config.bundle_path).resolve()),
            "k": config.k,
            "retriever": config.retriever,
            "exclude_seen": config.exclude_seen,
            "threads": config.num_cpus,
            "rails_budget": config.rails_budget,
        },
        batch_size=config.batch_size,
        batch_format="numpy",
        compute=ray.data.ActorPoolStrategy(size=config.actors),
        num_cpus=config.num_cpus,
    )
    out = Path(config.out)
    if out.suffix == ".parquet":
        tables = list(recs.iter_batches(batch_format="pyarrow", batch_size=None))
        table = pa.concat_tables(tables) if tables else OUTPUT_SCHEMA.empty_table()
        atomic_write_bytes(out, _parquet_bytes(table))
        fallback = table["fallback"]
    else:
        with atomic_dir(out) as staging:
            recs.write_parquet(str(staging))
        fallback = pq.ParquetDataset(out).read(columns=["fallback"])["fallback"]
    return BatchReport(
        out=str(out),
        num_users=len(fallback),
        num_fallback=len(fallback) - fallback.null_count,
        seconds=time.perf_counter() - start,
    )


def _parquet_bytes(table: pa.Table) -> bytes:
    sink = pa.BufferOutputStream()
    pq.write_table(table, sink)
    return sink.getvalue().to_pybytes()
