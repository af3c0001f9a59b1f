"""`recsys data ...`: prepare raw logs, synthesise data, download MovieLens.

Each subcommand turns its arguments into a typed config and calls one entry function:
`pipelines.prepare.prepare`, `pipelines.synth.make_dataset` / `write_events` and
`pipelines.download.download`. Invalid arguments become `UserError`s (one line, exit 2).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from recsys.errors import UserError

PREPARE_EPILOG = """\
examples:
  recsys data prepare --format movielens --input ml-1m/ --out data/ml-1m
  recsys data prepare --format sequences --input Beauty.txt --out data/beauty
  recsys data prepare --format csv --input events.csv --out data/shop \\
      --user-col customer --item-col sku --time-col ts --kcore 5
  recsys data prepare --format parquet --input ratings.parquet --out data/r \\
      --rating-col rating --min-rating 4

Users get ids 0..U-1 and items 1..N (0 is padding) in the order of their original keys;
each user's events are sorted by time, ties kept in input order. The output directory is
replaced only when the run succeeds.
"""


def register(subparsers: argparse._SubParsersAction) -> None:
    data = subparsers.add_parser(
        "data",
        help="prepare, synthesise or download interaction data",
        description="Turn interaction logs into the dataset directory that training reads.",
    )
    sub = data.add_subparsers(dest="data_command", required=True, metavar="SUBCOMMAND")
    _register_prepare(sub)
    _register_synth(sub)
    _register_download(sub)


def _register_prepare(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "prepare",
        help="raw log -> dataset directory",
        description="Read a raw interaction log and write a dataset directory "
        "(items.parquet, users.parquet, sequences.parquet, stats.json).",
        epilog=PREPARE_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument(
        "--format",
        required=True,
        choices=["movielens", "csv", "parquet", "sequences"],
        help="movielens: ratings.dat / u.data / ratings.csv (or their folder); csv/parquet: "
        "an event log with named columns; sequences: one line per user, 'user item item ...'",
    )
    p.add_argument("--input", required=True, type=Path, help="input file (or MovieLens folder)")
    p.add_argument("--out", required=True, type=Path, help="dataset directory to write")
    cols = p.add_argument_group("columns (csv and parquet)")
    cols.add_argument("--user-col", default="user_id", help="user column (default: user_id)")
    cols.add_argument("--item-col", default="item_id", help="item column (default: item_id)")
    cols.add_argument(
        "--time-col",
        default="timestamp",
        help="timestamp column, unix seconds (default: timestamp)",
    )
    cols.add_argument(
        "--no-time",
        action="store_true",
        help="the log has no time column: the row order is the order of events",
    )
    cols.add_argument("--rating-col", default=None, help="rating column (needed by --min-rating)")
    cols.add_argument("--separator", default=",", help="csv field separator (default: ',')")
    cols.add_argument(
        "--id-type",
        default="auto",
        choices=["auto", "int", "str"],
        help="csv ids: integers when every id is one (auto), always integers, or text",
    )
    filt = p.add_argument_group("filters")
    filt.add_argument("--min-rating", type=float, default=None, help="keep events rated >= this")
    filt.add_argument(
        "--kcore", type=int, default=0, help="iteratively keep users and items with >= K events"
    )
    filt.add_argument(
        "--no-dedup",
        action="store_true",
        help="keep exact duplicate (user, item, timestamp) events",
    )
    p.add_argument("--metadata", type=Path, default=None, help="movies.dat / u.item / movies.csv")
    p.add_argument(
        "--skip-bad-rows",
        action="store_true",
        help="skip malformed rows (and report how many) instead of failing on the first",
    )
    p.add_argument(
        "--temporal-split",
        type=float,
        default=None,
        metavar="Q",
        help="evaluate on a global time split: the test cut-off is the Q-quantile of event "
        "times (default: leave-one-out)",
    )
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.set_defaults(func=run_prepare)


def run_prepare(args: argparse.Namespace) -> int:
    from pipelines.prepare import PrepareConfig, prepare
    from pipelines.readers import ReadOptions
    from pipelines.sequences import BuildConfig

    try:
        config = PrepareConfig(
            format=args.format,
            input=args.input,
            out=args.out,
            read=ReadOptions(
                user_col=args.user_col,
                item_col=args.item_col,
                time_col=None if args.no_time else args.time_col,
                rating_col=args.rating_col,
                separator=args.separator,
                id_type=args.id_type,
            ),
            build=BuildConfig(
                dedup=not args.no_dedup, min_rating=args.min_rating, kcore=args.kcore
            ),
            metadata=args.metadata,
            skip_bad_rows=args.skip_bad_rows,
            temporal_split=args.temporal_split,
            progress=not args.quiet,
        )
    except ValueError as e:
        raise UserError(str(e)) from e
    stats = prepare(config)
    _summary(args.out, stats)
    return 0


def _summary(out: Path, stats: dict[str, Any]) -> None:
    print(
        f"wrote {out}: {stats['num_users']:,} users, {stats['num_items']:,} items, "
        f"{stats['num_interactions']:,} interactions"
    )
    removed = {k: v for k, v in stats.get("removed", {}).items() if v}
    if stats.get("skipped_rows"):
        print(f"skipped {stats['skipped_rows']:,} malformed rows")
    if removed:
        print("removed: " + ", ".join(f"{k} {v:,}" for k, v in removed.items()))


def _register_synth(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "synth",
        help="synthetic log with planted sequential structure",
        description="Generate a synthetic interaction log (Zipf-like popularity, log-normal "
        "history lengths, latent clusters with Markov transitions), deterministic by seed. "
        "--format dataset writes a prepared dataset directory; parquet/csv write the raw log "
        "(columns user_id, item_id, timestamp) to the file --out.",
    )
    p.add_argument("--out", required=True, type=Path, help="dataset directory (or raw log file)")
    p.add_argument("--users", type=int, default=1000, help="number of users (default: 1000)")
    p.add_argument("--items", type=int, default=500, help="number of items (default: 500)")
    p.add_argument("--seed", type=int, default=0, help="random seed (default: 0)")
    size = p.add_mutually_exclusive_group()
    size.add_argument("--events", type=int, default=None, help="total number of events")
    size.add_argument(
        "--mean-length", type=float, default=30.0, help="mean history length (default: 30)"
    )
    p.add_argument("--clusters", type=int, default=None, help="latent clusters (default: sqrt N)")
    p.add_argument("--duplicate-rate", type=float, default=0.0, help="share of events logged twice")
    p.add_argument("--with-ratings", action="store_true", help="add a 1-5 rating column")
    p.add_argument(
        "--format",
        default="dataset",
        choices=["dataset", "parquet", "csv"],
        help="what to write (default: dataset)",
    )
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.set_defaults(func=run_synth)


def run_synth(args: argparse.Namespace) -> int:
    from pipelines.synth import SynthConfig, make_dataset, write_events

    try:
        config = SynthConfig(
            num_users=args.users,
            num_items=args.items,
            seed=args.seed,
            num_events=args.events,
            mean_length=args.mean_length,
            num_clusters=args.clusters,
            duplicate_rate=args.duplicate_rate,
            with_ratings=args.with_ratings,
        )
    except ValueError as e:
        raise UserError(str(e)) from e
    if args.format == "dataset":
        _summary(args.out, make_dataset(config, args.out, progress=not args.quiet))
    else:
        write_events(config, args.out, args.format, progress=not args.quiet)
        print(f"wrote {args.out}: {config.events:,} events ({args.format})")
    return 0


def _register_download(sub: argparse._SubParsersAction) -> None:
    from pipelines.download import BASE_URL_ENV, DATASETS

    p = sub.add_parser(
        "download",
        help="download a MovieLens data set from GroupLens",
        description="Download the official GroupLens zip over HTTPS, verify its checksum and "
        "unpack it into --out. MovieLens terms forbid redistribution: the files stay local.",
    )
    p.add_argument("name", choices=sorted(DATASETS), help="data set")
    p.add_argument("--out", required=True, type=Path, help="folder to unpack into")
    p.add_argument(
        "--base-url",
        default=None,
        help=f"mirror to download from (default: ${BASE_URL_ENV} or the GroupLens site)",
    )
    p.add_argument("--md5", default=None, help="expected md5 of the zip (default: GroupLens' .md5)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=run_download)


def run_download(args: argparse.Namespace) -> int:
    from pipelines.download import download

    info = download(
        args.name, args.out, base_url=args.base_url, md5=args.md5, progress=not args.quiet
    )
    json.dump(info, sys.stdout, indent=2)
    print()
    print(f"next: recsys data prepare --format movielens --input {args.out} --out DATASET_DIR")
    return 0
