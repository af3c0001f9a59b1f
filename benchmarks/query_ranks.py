"""Per-query ranks of a finished run, kept so that runs can be compared query by query
after their run directories are gone.

A paired comparison (`recsys bench paired`) needs each model's rank of every evaluation
query, aligned by query. A run directory gives them by ranking the split again with its
selected weights (RUN_DIR/best.safetensors), which needs the directory; a ranks file keeps
them beside the run's result instead:

    benchmarks/results/ranks/<dataset>-<config>.parquet

one row per (split, query), in the split's query order, with columns

- `split`: "valid" or "test";
- `user_key`: the user's original id (the query);
- `target_key`: the held-out item's original id;
- `rank`: 1 + the number of catalog items scoring strictly higher than the target, seen
  items masked (`recsys.metrics`, the rank every reported metric is computed from).

The keys make alignment checkable: two sources are compared only when they hold the same
queries with the same targets, in the same order. The file's stem is that of the run's
per-run result (benchmarks/results/<dataset>-<config>.json), whose figures the ranks must
reproduce. The Parquet key-value metadata `recsys.ranks` (JSON) says where the ranks came
from: dataset, config, run directory and provenance (command, commit, machine, date).
"""

from __future__ import annotations

import io
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl

from recsys.atomic import atomic_write_bytes
from recsys.batch import SPLITS, SplitName
from recsys.dataset import SequenceDataset
from recsys.errors import UserError
from recsys.paired import per_query
from recsys.provenance import REPO_ROOT, provenance

RANKS_DIR = REPO_ROOT / "benchmarks" / "results" / "ranks"
SCHEMA: dict[str, pl.DataType] = {
    "split": pl.String(),
    "user_key": pl.String(),
    "target_key": pl.String(),
    "rank": pl.Int64(),
}
CHECK_KEYS = ("hr@10", "ndcg@10", "hr@50", "hr@200", "mrr")
META_KEY = "recsys.ranks"


@dataclass(frozen=True)
class QueryRanks:
    """One model's ranks on one split: query q is user `user_keys[q]` with held-out item
    `target_keys[q]`, ranked `ranks[q]` (1 = best)."""

    user_keys: np.ndarray  # (M,) str
    target_keys: np.ndarray  # (M,) str
    ranks: np.ndarray  # (M,) int64

    def metrics(self, keys: tuple[str, ...] = CHECK_KEYS) -> dict[str, float]:
        """The split's metrics from the ranks alone (what `recsys.metrics` reports)."""
        return {key: float(per_query(self.ranks, key).mean()) for key in keys}


def ranks_path(dataset: str, config_name: str, ranks_dir: Path = RANKS_DIR) -> Path:
    return ranks_dir / f"{dataset}-{config_name}.parquet"


def run_query_ranks(
    run_dir: Path, data: SequenceDataset, splits: tuple[SplitName, ...]
) -> tuple[dict[SplitName, QueryRanks], str]:
    """(ranks of the run's selected model on each of `splits`, the run's config name), the
    weights loaded once and ranked on the CPU as its training run ranked them (its eval
    batch size and eval_bf16)."""
    from recsys.evaluation import EvalSet, collect_ranks
    from recsys.training.config import load_config
    from recsys.training.rundir import RUN_CONFIG, load_model

    model, info = load_model(run_dir)
    config = load_config(run_dir / RUN_CONFIG)
    by_split: dict[SplitName, QueryRanks] = {}
    for split in splits:
        evalset = EvalSet(data, split, info.max_len)
        ranks, _ = collect_ranks(
            model, evalset.loader(config.training.eval_batch_size), bf16=config.training.eval_bf16
        )
        cases = evalset.cases
        by_split[split] = QueryRanks(
            user_keys=np.asarray(data.user_keys[cases.users], dtype=str),
            target_keys=np.asarray(data.item_keys[cases.targets], dtype=str),
            ranks=np.asarray(ranks, dtype=np.int64),
        )
    return by_split, config.name


def write_ranks(
    path: Path, by_split: dict[SplitName, QueryRanks], meta: dict[str, Any] | None = None
) -> None:
    """Write one ranks file, with `meta` as its `recsys.ranks` metadata (atomically: a
    failed write leaves the old file in place)."""
    frames = [
        pl.DataFrame(
            {
                "split": [split] * len(q.ranks),
                "user_key": q.user_keys.tolist(),
                "target_key": q.target_keys.tolist(),
                "rank": q.ranks,
            },
            schema=SCHEMA,
        )
        for split, q in by_split.items()
    ]
    buffer = io.BytesIO()
    pl.concat(frames).write_parquet(
        buffer, compression="zstd", statistics=False, metadata={META_KEY: json.dumps(meta or {})}
    )
    atomic_write_bytes(path, buffer.getvalue())


def read_ranks(path: Path, split: str) -> QueryRanks:
    """The ranks of `split` in the ranks file at `path` (clear errors for a bad file)."""
    if not path.is_file():
        raise UserError(f"ranks file {path} does not exist")
    try:
        frame = pl.read_parquet(path)
    except Exception as e:  # polars raises several types for a file that is not Parquet
        raise UserError(f"{path}: not a readable Parquet ranks file ({e})") from e
    for column, dtype in SCHEMA.items():
        if column not in frame.columns:
            raise UserError(f"{path}: column {column!r} is missing (expected {list(SCHEMA)})")
        if frame[column].dtype != dtype:
            raise UserError(f"{path}: column {column!r} is {frame[column].dtype}, expected {dtype}")
    rows = frame.filter(pl.col("split") == split)
    if rows.height == 0:
        found = sorted(frame["split"].unique().to_list())
        raise UserError(f"{path}: no rows for split {split!r} (it holds {found})")
    ranks = rows["rank"].to_numpy()
    if rows["rank"].null_count() or ranks.min() < 1:
        raise UserError(f"{path}: split {split!r} has a rank below 1 or missing (1 = best)")
    return QueryRanks(
        user_keys=rows["user_key"].to_numpy().astype(str),
        target_keys=rows["target_key"].to_numpy().astype(str),
        ranks=ranks.astype(np.int64),
    )


def read_ranks_meta(path: Path) -> dict[str, Any]:
    """A ranks file's `recsys.ranks` metadata ({} when it has none)."""
    try:
        raw = pl.read_parquet_metadata(path).get(META_KEY)
        return json.loads(raw) if raw else {}
    except Exception as e:  # a file that is not Parquet, or metadata that is not JSON
        raise UserError(f"{path}: unreadable {META_KEY} metadata ({e})") from e


def check_aligned(a: QueryRanks, b: QueryRanks, name_a: str, name_b: str) -> None:
    """Raise unless `a` and `b` rank the same queries (users and targets) in the same order."""
    if len(a.ranks) != len(b.ranks):
        raise UserError(
            f"{name_a} has {len(a.ranks)} queries and {name_b} has {len(b.ranks)}: they were "
            "not ranked on the same split of the same dataset"
        )
    differs = (a.user_keys != b.user_keys) | (a.target_keys != b.target_keys)
    if differs.any():
        q = int(np.flatnonzero(differs)[0])
        ua, ta, ub, tb = (
            str(x[q]) for x in (a.user_keys, a.target_keys, b.user_keys, b.target_keys)
        )
        raise UserError(
            f"{name_a} and {name_b} differ at query {q}: user {ua!r} target {ta!r} against "
            f"user {ub!r} target {tb!r}; they were not ranked on the same queries"
        )


def recorded_check(recorded_path: Path, split: str, metrics: dict[str, float]) -> dict:
    """Whether `metrics` reproduce the figures recorded for `split` in the JSON at
    `recorded_path` (RUN_DIR/metrics.json, or a per-run result); None when there is none."""
    if not recorded_path.is_file():
        return {"recorded": None, "matches": None}
    recorded = json.loads(recorded_path.read_text()).get(split, {})
    matches = all(abs(recorded.get(k, float("nan")) - metrics[k]) < 1e-9 for k in CHECK_KEYS)
    return {"recorded": {k: recorded.get(k) for k in CHECK_KEYS}, "matches": matches}


def save_run_ranks(
    run_dir: Path,
    data: SequenceDataset,
    dataset: str,
    ranks_dir: Path = RANKS_DIR,
    name: str | None = None,
    command: str | None = None,
) -> Path:
    """Rank the valid and test queries with the run's selected model and write its ranks
    file, <dataset>-<name>.parquet (name: the run config's by default; give the per-run
    result's config stem where they differ; command: as `recsys.provenance.provenance` takes
    it). Refuses (UserError, nothing written) when the ranks do not reproduce the figures
    the run recorded in RUN_DIR/metrics.json: such ranks would not be that result's."""
    by_split, config_name = run_query_ranks(run_dir, data, SPLITS)
    name = name or config_name
    for split, query in by_split.items():
        metrics = query.metrics()
        check = recorded_check(run_dir / "metrics.json", split, metrics)
        if check["matches"] is not True:
            raise UserError(
                f"{run_dir}: the {split} ranks give {metrics}, not the figures recorded "
                f"in metrics.json ({check['recorded']}); no ranks file written"
            )
    path = ranks_path(dataset, name, ranks_dir)
    meta: dict[str, Any] = {"dataset": dataset, "config": name, "run_dir": str(run_dir)}
    meta["provenance"] = provenance(command)
    write_ranks(path, by_split, meta)
    return path
