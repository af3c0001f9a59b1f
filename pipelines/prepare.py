"""The `prepare` job: raw log -> reader -> sequence builder -> dataset directory.

`prepare(PrepareConfig(...))` reads the input lazily (`pipelines.readers`), checks every row
(the first bad one is reported with its file, line, column and what was expected, or bad rows
are skipped and counted with `skip_bad_rows`), builds the sequences (`pipelines.sequences`)
and writes the dataset directory atomically (`recsys.dataset.write_dataset`): a failed run
leaves no partial output and never replaces a good directory.
"""

from __future__ import annotations

import hashlib
import sys
import threading
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import polars as pl
from tqdm import tqdm

from pipelines.metadata import metadata_beside, read_metadata
from pipelines.readers import (
    LINE,
    PROBLEM,
    EventSource,
    ReadOptions,
    finalize_keys,
    find_movielens_ratings,
    open_source,
)
from pipelines.sequences import BuildConfig, build_sequences
from pipelines.text_errors import NotUtf8Error, encoding_error, is_utf8_failure
from recsys.dataset import write_dataset
from recsys.errors import DataFormatError, UserError
from recsys.splits import cutoff_at_quantile


@dataclass(frozen=True)
class PrepareConfig:
    """Arguments of `recsys data prepare` (see `app/data.py` for their help text)."""

    format: str
    input: Path
    out: Path
    read: ReadOptions = field(default_factory=ReadOptions)
    build: BuildConfig = field(default_factory=BuildConfig)
    metadata: Path | None = None  # titles/genres; MovieLens looks beside the ratings file
    skip_bad_rows: bool = False
    temporal_split: float | None = None  # quantile of event times used as the test cut-off
    progress: bool = False

    def __post_init__(self) -> None:
        if self.temporal_split is not None and not 0.0 < self.temporal_split < 1.0:
            raise ValueError(f"temporal_split must lie in (0, 1), got {self.temporal_split}")


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        while chunk := f.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


class _Digest(threading.Thread):
    """Hash the input beside the Polars work (hashlib releases the GIL on large buffers)."""

    def __init__(self, path: Path) -> None:
        super().__init__(daemon=True)
        self.path, self.value = path, ""

    def run(self) -> None:
        self.value = sha256_file(self.path)


def collect_events(source: EventSource) -> pl.DataFrame:
    """Run the reader's scan; a file that is not UTF-8 fails with its first bad byte's line."""
    try:
        return source.events.collect(engine="streaming")
    except pl.exceptions.PolarsError as e:
        if is_utf8_failure(e):
            raise encoding_error(source.path) from e
        raise DataFormatError(f"{source.path}: could not be read as {source.format}: {e}") from e


def check_rows(
    events: pl.DataFrame, source: EventSource, skip_bad_rows: bool
) -> tuple[pl.DataFrame, int]:
    """Raise on the first flagged row, or drop flagged rows and return how many input rows
    (lines for text files) were skipped."""
    skipped = 0
    if PROBLEM in events.columns:
        bad = pl.col(PROBLEM) != 0
        flagged = events.filter(bad)
        if flagged.height and not skip_bad_rows:
            first = flagged.row(0, named=True)
            raise DataFormatError(source.describe(first[LINE], first[PROBLEM]))
        if flagged.height:
            skipped = flagged[LINE].n_unique()
            events = events.filter(~bad)
        events = events.drop(LINE, PROBLEM)
    if events.height == 0:
        detail = f"all {skipped} rows were malformed" if skipped else "it holds no events"
        raise DataFormatError(f"{source.path}: nothing to prepare: {detail}")
    return events, skipped


def _input_file(config: PrepareConfig) -> Path:
    if config.format == "movielens":
        return find_movielens_ratings(config.input)
    if not config.input.is_file():
        raise UserError(f"{config.input}: no such file")
    return config.input


def load_events(source: EventSource, config: PrepareConfig) -> tuple[pl.LazyFrame, int]:
    """The events to build from and the number of bad rows skipped.

    Text is parsed once into memory and checked row by row. A Parquet file without nulls
    (the reader checked) stays a lazy scan: the builder re-scans it per partition of users
    instead of holding every event in memory.
    """
    if source.format == "parquet" and not source.problems:
        return source.events, 0
    try:
        events = collect_events(source)
    except NotUtf8Error:
        if not config.skip_bad_rows:
            raise
        # Re-read with bad bytes replaced: the rows holding them are flagged and skipped.
        lossy = replace(config.read, lossy_utf8=True, with_rating=_with_rating(config))
        source = open_source(config.format, source.path, lossy)
        events = collect_events(source)
    events, skipped = check_rows(events, source, config.skip_bad_rows)
    return finalize_keys(events, source.id_type).lazy(), skipped


def _status(config: PrepareConfig, message: str) -> None:
    if config.progress:
        tqdm.write(message, file=sys.stderr)


def _with_rating(config: PrepareConfig) -> bool:
    return config.build.min_rating is not None


def prepare(config: PrepareConfig) -> dict[str, Any]:
    """Build the dataset directory `config.out` from `config.input`; return its stats."""
    path = _input_file(config)
    digest = _Digest(path)
    digest.start()
    read = replace(config.read, with_rating=_with_rating(config))
    if read.with_rating and read.rating_col is None and config.format in ("csv", "parquet"):
        raise UserError("--min-rating needs --rating-col (the column that holds ratings)")
    if read.with_rating and config.format == "sequences":
        raise UserError("--min-rating: the sequences format has no ratings")
    source = open_source(config.format, path, read)
    _status(config, f"reading {path} ({source.format})")
    events, skipped = load_events(source, config)
    metadata_path = config.metadata
    if metadata_path is None and config.format == "movielens":
        metadata_path = metadata_beside(path)
    metadata = read_metadata(metadata_path) if metadata_path is not None else None
    built = build_sequences(events, config.build, metadata, progress=config.progress)
    del events  # the only reference to in-memory events: free them before writing
    if built.sequences.height == 0:
        raise UserError(f"{path}: no events left after the filters {built.stats['filters']}")
    split: dict[str, Any] = {"protocol": "leave_one_out"}
    if config.temporal_split is not None:
        if "timestamps" not in built.sequences.columns:
            raise UserError(f"{path}: --temporal-split needs timestamps; this source has none")
        times = built.sequences["timestamps"].explode().to_numpy()
        cutoff = cutoff_at_quantile(times, config.temporal_split)
        split = {"protocol": "temporal", "quantile": config.temporal_split, "test_cutoff": cutoff}
    digest.join()
    stats = {
        "source": {"path": str(path.resolve()), "format": source.format, "sha256": digest.value},
        **built.stats,
        "skipped_rows": skipped,
        "metadata": str(metadata_path) if metadata_path is not None else None,
        "split": split,
    }
    _status(config, f"writing {config.out}")
    write_dataset(config.out, built.items, built.users, built.sequences, stats)
    return {
        "num_users": built.users.height,
        "num_items": built.items.height,
        "num_interactions": int(built.sequences["item_ids"].list.len().sum()),
        **stats,
    }
