"""Item metadata (titles and genres) from the MovieLens movie files.

- `movies.dat` (1M/10M): `MovieID::Title::Genre|Genre`, ISO-8859-1 in ML-1M.
- `u.item` (100K): `id|title|release date|video date|IMDb URL|19 genre flags`, ISO-8859-1;
  genre names from `u.genre` beside it, else the documented list.
- `movies.csv` (20M/25M/latest): `movieId,title,genres` with a header, quoted, UTF-8.

The files are small (tens of thousands of lines), so they are decoded in Python (UTF-8 first,
ISO-8859-1 when that fails: the encoding the GroupLens README documents) and parsed with Polars.
Output: a LazyFrame `item` Int64, `title` String, `genres` List(String).
"""

from __future__ import annotations

from pathlib import Path

import polars as pl

from recsys.errors import DataFormatError, UserError

METADATA_FILES = {"ratings.dat": "movies.dat", "u.data": "u.item", "ratings.csv": "movies.csv"}
ML100K_GENRES = (
    "unknown", "Action", "Adventure", "Animation", "Children's", "Comedy", "Crime",
    "Documentary", "Drama", "Fantasy", "Film-Noir", "Horror", "Musical", "Mystery", "Romance",
    "Sci-Fi", "Thriller", "War", "Western",
)  # fmt: skip
NO_GENRES = "(no genres listed)"


def _decode(path: Path) -> str:
    data = path.read_bytes()
    if not data.strip():
        raise DataFormatError(f"{path}: empty file; expected one item per line")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        # MovieLens 1M/100K titles are ISO-8859-1 (e.g. "Misérables"); every byte decodes.
        return data.decode("iso-8859-1")


def _lines(text: str) -> pl.DataFrame:
    lines = pl.Series("line", text.splitlines())
    return pl.DataFrame(lines).with_row_index("_line", offset=1).filter(pl.col("line") != "")


def _check(path: Path, df: pl.DataFrame, bad: pl.Expr, expected: str) -> None:
    first = df.filter(bad).head(1)
    if first.height:
        line, text = first["_line"].item(), first["line"].item()
        raise DataFormatError(f"{path}: line {line}: expected {expected}; got {text!r}")


def read_movies_dat(path: Path) -> pl.LazyFrame:
    df = _lines(_decode(path))
    parts = pl.col("line").str.split("::")
    item = parts.list.get(0, null_on_oob=True).cast(pl.Int64, strict=False)
    bad = (parts.list.len() != 3) | item.is_null()
    _check(path, df, bad, "'MovieID::Title::Genres' with an integer MovieID")
    genres = parts.list.get(2).str.split("|").list.filter(pl.element() != NO_GENRES)
    return df.lazy().select(
        item.alias("item"), parts.list.get(1).alias("title"), genres.alias("genres")
    )


def read_u_item(path: Path) -> pl.LazyFrame:
    names = list(ML100K_GENRES)
    genre_file = path.with_name("u.genre")
    if genre_file.is_file():
        pairs = [ln.split("|") for ln in _decode(genre_file).splitlines() if ln.strip()]
        names = [name for name, _ in sorted(pairs, key=lambda p: int(p[1]))]
    df = _lines(_decode(path))
    parts = pl.col("line").str.split("|")
    item = parts.list.get(0, null_on_oob=True).cast(pl.Int64, strict=False)
    n = 5 + len(names)
    _check(path, df, (parts.list.len() != n) | item.is_null(), f"{n} '|'-separated fields")
    flags = parts.list.slice(5)
    genres = pl.concat_list(
        pl.when(flags.list.get(k) == "1").then(pl.lit(name)) for k, name in enumerate(names)
    ).list.drop_nulls()
    return df.lazy().select(
        item.alias("item"), parts.list.get(1).alias("title"), genres.alias("genres")
    )


def read_movies_csv(path: Path) -> pl.LazyFrame:
    text = _decode(path)
    try:
        df = pl.read_csv(text.encode(), infer_schema=False)
    except pl.exceptions.ComputeError as e:
        raise DataFormatError(f"{path}: not a valid 'movieId,title,genres' CSV ({e})") from e
    missing = {"movieId", "title", "genres"} - set(df.columns)
    if missing:
        raise DataFormatError(
            f"{path}: line 1: missing columns {sorted(missing)}; got {df.columns}"
        )
    item = pl.col("movieId").cast(pl.Int64, strict=False)
    first = df.with_row_index("row").filter(item.is_null()).head(1)
    if first.height:
        line = first["row"].item() + 2
        raise DataFormatError(f"{path}: line {line}: column 'movieId': expected an integer id")
    genres = pl.col("genres").str.split("|").list.filter(pl.element() != NO_GENRES)
    return df.lazy().select(item.alias("item"), pl.col("title"), genres.alias("genres"))


def read_metadata(path: str | Path) -> pl.LazyFrame:
    """Titles and genres from a MovieLens `movies.dat`, `u.item` or `movies.csv`."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"{path}: no such metadata file")
    readers = {".dat": read_movies_dat, ".item": read_u_item, ".csv": read_movies_csv}
    if path.suffix not in readers:
        raise UserError(f"{path}: unknown metadata file; expected movies.dat, u.item or movies.csv")
    return readers[path.suffix](path)


def metadata_beside(ratings: Path) -> Path | None:
    """The MovieLens movie file that ships beside a ratings file, if present."""
    name = METADATA_FILES.get(ratings.name)
    if name is None or not (ratings.parent / name).is_file():
        return None
    return ratings.parent / name
