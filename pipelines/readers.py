"""Lazy Polars readers for raw interaction logs.

Every reader returns an `EventSource` whose `events` LazyFrame has the columns

    user       original user key (Int64 for the numeric formats, the file's own type otherwise)
    item       original item key (same rule)
    timestamp  Int64 unix seconds; absent for order-only formats (the position gives the order)
    rating     Float64; only when `ReadOptions.with_rating` asks for it
    _line      the 1-based line number (text files) or 0-based row number (Parquet) of the event
    _problem   UInt8: 0 for a good row, otherwise 1 + an index into `EventSource.problems`

in input order. Rows are never dropped silently: a malformed row keeps its `_line` and a
`_problem` code, so the caller either reports the first one precisely (file, line, column,
what was expected) or skips them and counts them (`check_rows` in `pipelines.prepare`).

Formats (`open_source`):
- `movielens`: `ratings.dat` (`user::item::rating::ts`, 1M/10M), `u.data` (tab, 100K) or
  `ratings.csv` (`userId,movieId,rating,timestamp` with a header, 20M/25M/latest); a directory
  is searched for one of them.
- `csv`: a generic event log with a header; the user, item, optional timestamp and optional
  rating columns are named by the caller. Quoted fields are allowed.
- `parquet`: the same with Parquet columns (integer, decimal or temporal timestamps).
- `sequences`: one line per user, `user item item ...`, chronological (SASRec/S3Rec files).

Text is parsed line by line with Polars string expressions (`scan_lines`, `split_exact`, casts
with `strict=False`), so a bad line becomes a null that is flagged, not an exception.
"""

from __future__ import annotations

import csv
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import polars as pl

from pipelines.text_errors import line_text, utf8_lines
from recsys.errors import DataFormatError, UserError

FORMATS = ("movielens", "csv", "parquet", "sequences")
IdType = Literal["auto", "int", "str"]

LINE = "_line"
PROBLEM = "_problem"
MOVIELENS_FILES = ("ratings.dat", "u.data", "ratings.csv")
MOVIELENS_CSV_HEADER = ["userId", "movieId", "rating", "timestamp"]
STRIP = " \t\r\ufeff"  # whitespace and a UTF-8 byte-order mark around a value
EXTRA = "__extra_fields__"


@dataclass(frozen=True)
class ReadOptions:
    """How to read a generic log; the MovieLens and sequence formats fix their own columns."""

    user_col: str = "user_id"
    item_col: str = "item_id"
    time_col: str | None = "timestamp"
    rating_col: str | None = None
    separator: str = ","
    id_type: IdType = "auto"
    with_rating: bool = False  # read ratings (MovieLens: its own column; else rating_col)
    lossy_utf8: bool = False

    def __post_init__(self) -> None:
        if self.id_type not in ("auto", "int", "str"):
            raise ValueError(f"id_type must be 'auto', 'int' or 'str', got {self.id_type!r}")
        if len(self.separator.encode()) != 1:
            raise ValueError(f"separator must be a single byte, got {self.separator!r}")


@dataclass(frozen=True)
class EventSource:
    """A lazy view of a raw log plus what is needed to explain its bad rows."""

    path: Path
    format: str
    events: pl.LazyFrame
    problems: tuple[str, ...]
    row_label: str  # "line" (1-based, text files) or "row" (0-based, Parquet)
    raw_row: Callable[[int], str]  # the raw text of one line/row, for error messages
    id_type: IdType = "int"

    def describe(self, line: int, code: int) -> str:
        """The message for one bad row: file, line, column and what was expected."""
        return (
            f"{self.path}: {self.row_label} {line}: {self.problems[code - 1]}; "
            f"got {self.raw_row(line)}"
        )


@dataclass(frozen=True)
class _Field:
    out: str | None  # output column, or None when the field is only validated
    label: str  # how the file names it, for messages
    kind: Literal["int", "float", "seconds", "key"]


_EXPECTED = {
    "int": "an integer id",
    "float": "a number",
    "seconds": "an integer unix timestamp (seconds)",
    "key": "a non-empty value",
}


def _typed(raw: pl.Expr, kind: str) -> pl.Expr:
    """Parse a string expression; a value that does not parse becomes null (flagged later)."""
    raw = raw.str.strip_chars(STRIP)
    if kind in ("int", "seconds"):
        return raw.cast(pl.Int64, strict=False)
    if kind == "float":
        return raw.cast(pl.Float64, strict=False)
    return pl.when(raw.str.len_bytes() > 0).then(raw)


def _problem_code(bad: list[pl.Expr]) -> pl.Expr:
    """The first failing check of each row (1-based), or 0."""
    code = pl.lit(0, dtype=pl.UInt8)
    for k in reversed(range(len(bad))):
        code = pl.when(bad[k]).then(pl.lit(k + 1, dtype=pl.UInt8)).otherwise(code)
    return code.alias(PROBLEM)


def _scan_text(path: Path, lossy: bool) -> pl.LazyFrame:
    """Lines with their 1-based numbers; `lossy` decodes invalid UTF-8 as U+FFFD."""
    source: Path | bytes = path
    if lossy:
        source = path.read_bytes().decode("utf-8", errors="replace").encode()
    return pl.scan_lines(source, name="line", row_index_name=LINE, row_index_offset=1)


def _check_nonempty(path: Path, what: str) -> None:
    if not path.is_file():
        raise UserError(f"{path}: no such file")
    if path.stat().st_size == 0:
        raise DataFormatError(f"{path}: empty file; expected {what}")


def read_delimited(
    path: Path,
    fields: list[_Field],
    separator: str,
    fmt: str,
    *,
    header: list[str] | None = None,
    lossy: bool = False,
) -> EventSource:
    """A separator-delimited text file without quoting (MovieLens), parsed line by line."""
    sep_name = {"\t": "a tab"}.get(separator, repr(separator))
    _check_nonempty(path, f"lines of {len(fields)} fields separated by {sep_name}")
    n = len(fields)
    lines = _scan_text(path, lossy)
    if header is not None:
        first = line_text(path, 1)
        if first.strip(STRIP).split(separator) != header:
            raise DataFormatError(
                f"{path}: line 1: expected the header {separator.join(header)!r}, got {first!r}"
            )
        lines = lines.filter(pl.col(LINE) > 1)
    text = pl.col("line")
    parts = text.str.split_exact(separator, n - 1)
    values = [_typed(parts.struct.field(f"field_{k}"), f.kind) for k, f in enumerate(fields)]
    problems = [f"expected {n} fields separated by {sep_name}"]
    problems += [
        f"field {k + 1} ({f.label}): expected {_EXPECTED[f.kind]}" for k, f in enumerate(fields)
    ]
    bad = [text.str.count_matches(separator, literal=True) != n - 1]
    bad += [v.is_null() for v in values]
    outputs = [v.alias(f.out) for v, f in zip(values, fields, strict=True) if f.out is not None]
    events = lines.filter(text.str.strip_chars() != "").select(
        *outputs, pl.col(LINE), _problem_code(bad)
    )
    return EventSource(
        path=path,
        format=fmt,
        events=events,
        problems=tuple(problems),
        row_label="line",
        raw_row=lambda line: repr(line_text(path, line)),
    )


def read_movielens(path: Path, options: ReadOptions = ReadOptions()) -> EventSource:
    """MovieLens ratings: `ratings.dat` (`::`), `u.data` (tab) or `ratings.csv` (header)."""
    path = find_movielens_ratings(path)
    rating_out = "rating" if options.with_rating else None
    fields = [
        _Field("user", "user id", "int"),
        _Field("item", "movie id", "int"),
        _Field(rating_out, "rating", "float"),
        _Field("timestamp", "timestamp", "seconds"),
    ]
    lossy = options.lossy_utf8
    if path.suffix == ".dat":
        return read_delimited(path, fields, "::", "movielens-dat", lossy=lossy)
    if path.suffix == ".csv":
        header = MOVIELENS_CSV_HEADER
        return read_delimited(path, fields, ",", "movielens-csv", header=header, lossy=lossy)
    return read_delimited(path, fields, "\t", "movielens-100k", lossy=lossy)


def find_movielens_ratings(path: Path) -> Path:
    """The ratings file itself, or the one of `MOVIELENS_FILES` inside a directory."""
    if path.is_dir():
        for name in MOVIELENS_FILES:
            if (path / name).is_file():
                return path / name
        raise UserError(f"{path}: no MovieLens ratings file; expected one of {MOVIELENS_FILES}")
    if not path.exists():
        raise UserError(f"{path}: no such file or directory")
    if path.suffix not in (".dat", ".data", ".csv"):
        raise UserError(
            f"{path}: not a MovieLens ratings file; expected ratings.dat, u.data or ratings.csv"
        )
    return path


def read_sequences(path: Path, options: ReadOptions = ReadOptions()) -> EventSource:
    """One line per user: `user item item ...` (whitespace-separated, oldest first).

    A line with a user and no items contributes nothing; blank lines are ignored. A bad token
    makes its whole line bad (a line is one row of this format).
    """
    _check_nonempty(path, "lines of 'user item item ...' integer ids")
    tokens = pl.col("line").str.extract_all(r"\S+")
    user = tokens.list.first().cast(pl.Int64, strict=False)
    items = tokens.list.slice(1).cast(pl.List(pl.Int64), strict=False)
    bad = [user.is_null(), items.list.drop_nulls().list.len() != items.list.len()]
    events = (
        _scan_text(path, options.lossy_utf8)
        .filter(pl.col("line").str.strip_chars() != "")
        .select(user.alias("user"), items.alias("item"), pl.col(LINE), _problem_code(bad))
        .explode("item")
    )
    return EventSource(
        path=path,
        format="sequences",
        events=events,
        problems=(
            "field 1 (user id): expected an integer id",
            "item ids (fields 2...): expected integer ids separated by spaces",
        ),
        row_label="line",
        raw_row=lambda line: repr(line_text(path, line)[:200]),
    )


def _require_columns(path: Path, available: list[str], options: ReadOptions) -> None:
    wanted = {"--user-col": options.user_col, "--item-col": options.item_col}
    if options.time_col is not None:
        wanted["--time-col"] = options.time_col
    if options.with_rating and options.rating_col is not None:
        wanted["--rating-col"] = options.rating_col
    for flag, name in wanted.items():
        if name not in available:
            raise DataFormatError(
                f"{path}: no column {name!r} ({flag}); the columns are {available}"
            )


def read_csv_events(path: Path, options: ReadOptions = ReadOptions()) -> EventSource:
    """A generic CSV event log with a header row; ids are kept as text until `finalize_keys`."""
    _check_nonempty(path, "a header line naming the columns, then one event per line")
    first = next(iter(utf8_lines(path)), "")
    header = next(csv.reader([first.lstrip("\ufeff")], delimiter=options.separator), [])
    duplicated = sorted({h for h in header if header.count(h) > 1})
    if duplicated:
        raise DataFormatError(f"{path}: line 1: duplicate column names {duplicated}")
    if not any(h.strip() for h in header):
        raise DataFormatError(
            f"{path}: line 1: expected a header naming the columns, got {first!r}"
        )
    _require_columns(path, header, options)
    # One column past the header catches lines with too many fields (Polars truncates them).
    schema = {name: pl.String for name in header} | {EXTRA: pl.String}
    scan = pl.scan_csv(
        path,
        has_header=False,
        skip_rows=1,
        separator=options.separator,
        schema=schema,
        missing_columns="insert",
        truncate_ragged_lines=True,
        encoding="utf8-lossy" if options.lossy_utf8 else "utf8",
        row_index_name=LINE,
        row_index_offset=2,
    )
    id_kind = "int" if options.id_type == "int" else "key"
    fields = [("user", options.user_col, id_kind), ("item", options.item_col, id_kind)]
    if options.time_col is not None:
        fields.append(("timestamp", options.time_col, "seconds"))
    if options.with_rating and options.rating_col is not None:
        fields.append(("rating", options.rating_col, "float"))
    values = [_typed(pl.col(col), kind) for _, col, kind in fields]
    if options.time_col is not None:
        # Decimal seconds are accepted and floored.
        seconds = pl.col(options.time_col).str.strip_chars().cast(pl.Float64, strict=False)
        values[2] = pl.coalesce(values[2], seconds.floor().cast(pl.Int64))
    bad = [pl.col(EXTRA).is_not_null()] + [v.is_null() for v in values]
    problems = [f"expected {len(header)} fields (as in the header)"]
    problems += [f"column {col!r}: expected {_EXPECTED[kind]}" for _, col, kind in fields]
    if options.lossy_utf8:  # bytes that were not UTF-8 were replaced by U+FFFD
        bad += [pl.col(col).str.contains("\ufffd", literal=True) for _, col, _ in fields]
        problems += [f"column {col!r}: not valid UTF-8" for _, col, _ in fields]
    blank = pl.all_horizontal(pl.col(name).is_null() for name in schema)
    events = scan.filter(~blank).select(
        *[v.alias(out) for v, (out, _, _) in zip(values, fields, strict=True)],
        pl.col(LINE),
        _problem_code(bad),
    )
    return EventSource(
        path=path,
        format="csv",
        events=events,
        problems=tuple(problems),
        row_label="line",
        raw_row=lambda line: repr(line_text(path, line)),
        id_type=options.id_type,
    )


def _parquet_time(col: str, dtype: pl.DataType) -> pl.Expr:
    if dtype.is_integer():
        return pl.col(col).cast(pl.Int64)
    if dtype.is_float():
        return pl.col(col).floor().cast(pl.Int64, strict=False)
    if isinstance(dtype, pl.Datetime):
        return pl.col(col).dt.epoch("s")
    if isinstance(dtype, pl.Date):
        return pl.col(col).cast(pl.Datetime("ms")).dt.epoch("s")
    return _typed(pl.col(col).cast(pl.String), "seconds")


def read_parquet_events(path: Path, options: ReadOptions = ReadOptions()) -> EventSource:
    """A Parquet event log. Good files take a fast path with no bookkeeping columns."""
    if not path.is_file():
        raise UserError(f"{path}: no such file")
    try:
        schema = pl.read_parquet_schema(path)
    except (pl.exceptions.ComputeError, OSError) as e:
        raise DataFormatError(f"{path}: not a readable Parquet file ({e})") from e
    _require_columns(path, list(schema), options)
    cols = {"user": options.user_col, "item": options.item_col}
    exprs = {}
    for out, col in cols.items():
        dtype = schema[col]
        if not (dtype.is_integer() or dtype == pl.String or isinstance(dtype, pl.Categorical)):
            raise DataFormatError(
                f"{path}: column {col!r} has type {dtype}; expected integer or string ids"
            )
        exprs[out] = (
            pl.col(col).cast(pl.String) if isinstance(dtype, pl.Categorical) else pl.col(col)
        )
    expected = {"user": "a non-null id", "item": "a non-null id"}
    if options.time_col is not None:
        cols["timestamp"] = options.time_col
        exprs["timestamp"] = _parquet_time(options.time_col, schema[options.time_col])
        expected["timestamp"] = "an integer, decimal or datetime timestamp"
    if options.with_rating and options.rating_col is not None:
        cols["rating"] = options.rating_col
        exprs["rating"] = pl.col(options.rating_col).cast(pl.Float64, strict=False)
        expected["rating"] = "a number"
    scan = pl.scan_parquet(path)
    # Nulls are rare in real logs: check once, and only then pay for the bookkeeping columns.
    counts = scan.select(rows=pl.len(), **{o: e.is_null().sum() for o, e in exprs.items()})
    nulls = counts.collect().row(0, named=True)
    if nulls["rows"] == 0:
        raise DataFormatError(f"{path}: empty file (0 rows); expected one event per row")
    problems: tuple[str, ...] = ()
    events = scan.select(**exprs)
    if any(nulls[out] for out in exprs):
        code = _problem_code([e.is_null() for e in exprs.values()])
        events = scan.with_row_index(LINE).select(pl.col(LINE), code, **exprs)
        problems = tuple(f"column {cols[o]!r}: expected {expected[o]}" for o in exprs)
    id_type: IdType = "int" if schema[options.user_col].is_integer() else "str"
    return EventSource(
        path=path,
        format="parquet",
        events=events,
        problems=problems,
        row_label="row",
        raw_row=lambda row: str(pl.scan_parquet(path).slice(row, 1).collect().row(0, named=True)),
        id_type=id_type,
    )


def open_source(fmt: str, path: str | Path, options: ReadOptions = ReadOptions()) -> EventSource:
    """The reader for `fmt` (one of `FORMATS`) applied to `path`."""
    readers = {
        "movielens": read_movielens,
        "csv": read_csv_events,
        "parquet": read_parquet_events,
        "sequences": read_sequences,
    }
    if fmt not in readers:
        raise UserError(f"unknown format {fmt!r}; expected one of {', '.join(FORMATS)}")
    return readers[fmt](Path(path), options)


def finalize_keys(events: pl.DataFrame, id_type: IdType) -> pl.DataFrame:
    """Turn text keys into integers when `id_type` is 'auto' and every key is a plain integer.

    Integer keys sort numerically (so dense ids follow 1, 2, 10 rather than 1, 10, 2). A key
    such as "007" that would not survive the round trip keeps every key as text.
    """
    if id_type != "auto":
        return events
    for col in ("user", "item"):
        keys = events[col]
        if keys.dtype != pl.String:
            continue
        as_int = keys.cast(pl.Int64, strict=False)
        if as_int.null_count() == keys.null_count() and (as_int.cast(pl.String) == keys).all():
            events = events.with_columns(as_int.alias(col))
    return events
