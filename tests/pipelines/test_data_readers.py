"""Readers: each format on tiny files, metadata, and every bad-input case."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import polars as pl
import pytest

from pipelines.metadata import read_metadata
from pipelines.prepare import PrepareConfig, check_rows, collect_events, load_events
from pipelines.readers import ReadOptions, finalize_keys, open_source
from recsys.errors import DataFormatError, UserError


def read(fmt: str, path: Path, skip: bool = False, **options) -> tuple[pl.DataFrame, int]:
    """Events as the builder gets them (checked), and the number of skipped rows."""
    config = PrepareConfig(
        format=fmt, input=path, out=path.parent / "out", read=ReadOptions(**options),
        skip_bad_rows=skip,
    )  # fmt: skip
    events, skipped = load_events(open_source(fmt, path, ReadOptions(**options)), config)
    return events.collect(), skipped


def test_movielens_dat(write):
    path = write(
        "ratings.dat", "1::1193::5::978300760\n1::661::3::978302109\n2::1357::4::978298709\n"
    )
    events, skipped = read("movielens", path)
    assert skipped == 0
    assert events.columns == ["user", "item", "timestamp"]
    assert events.rows() == [(1, 1193, 978300760), (1, 661, 978302109), (2, 1357, 978298709)]
    assert events.schema["user"] == pl.Int64


def test_movielens_folder_and_rating(write, tmp_path):
    write("ml/u.data", "196\t242\t3\t881250949\n186\t302\t3.5\t891717742\n")
    events, _ = read("movielens", tmp_path / "ml", with_rating=True, rating_col="rating")
    assert events.rows() == [(196, 242, 3.0, 881250949), (186, 302, 3.5, 891717742)]


def test_movielens_csv_header(write):
    path = write("ratings.csv", "userId,movieId,rating,timestamp\r\n1,2,3.5,1112486027\r\n")
    assert read("movielens", path)[0].rows() == [(1, 2, 1112486027)]
    bad = write("x/ratings.csv", "user,movie,rating,ts\n1,2,3.5,1112486027\n")
    with pytest.raises(DataFormatError, match=r"line 1: expected the header"):
        read("movielens", bad)


def test_sequences_format(write):
    path = write("seq.txt", "7 3 1 2\n\n5  9\t3 \n8\n")
    events, _ = read("sequences", path)
    assert events.columns == ["user", "item"]
    assert events.rows() == [(7, 3), (7, 1), (7, 2), (5, 9), (5, 3)]


def test_csv_generic_columns_quotes_and_text_keys(write):
    text = 'ts,who,what,note\n10,u1,"i,1",hello\n11.7,u2,i2,"x"\n'
    path = write("log.csv", text)
    events, _ = read("csv", path, user_col="who", item_col="what", time_col="ts")
    assert events.rows() == [("u1", "i,1", 10), ("u2", "i2", 11)]


def test_csv_auto_integer_keys_and_no_time(write):
    path = write("log.csv", "user_id,item_id\n10,2\n9,007\n")
    events, _ = read("csv", path, time_col=None)
    assert events.columns == ["user", "item"]
    assert events.schema["user"] == pl.Int64  # every user key is a plain integer
    assert events.schema["item"] == pl.String  # "007" would not survive a round trip
    assert finalize_keys(events, "str").schema["user"] == pl.Int64  # already converted


def test_parquet_types(tmp_path):
    path = tmp_path / "ev.parquet"
    stamps = [dt.datetime(2020, 1, 1, 0, 0, 1), dt.datetime(2020, 1, 1, 0, 0, 2)]
    pl.DataFrame({"u": ["a", "b"], "i": [5, 6], "t": stamps}).write_parquet(path)
    events, _ = read("parquet", path, user_col="u", item_col="i", time_col="t")
    assert events.rows() == [("a", 5, 1577836801), ("b", 6, 1577836802)]


def test_parquet_clean_file_stays_lazy(tmp_path):
    path = tmp_path / "ev.parquet"
    pl.DataFrame({"user_id": [1], "item_id": [2], "timestamp": [3]}).write_parquet(path)
    source = open_source("parquet", path)
    assert source.problems == ()
    config = PrepareConfig(format="parquet", input=path, out=tmp_path / "o")
    events, _ = load_events(source, config)
    assert events.collect().rows() == [(1, 2, 3)]


def test_metadata_files(write):
    dat = write(
        "movies.dat",
        b"1::Toy Story (1995)::Animation|Comedy\n"
        + "2::Misérables (1995)::Drama\n".encode("latin-1"),
    )
    meta = read_metadata(dat).collect()
    assert meta.rows() == [
        (1, "Toy Story (1995)", ["Animation", "Comedy"]),
        (2, "Misérables (1995)", ["Drama"]),
    ]
    flags = "|".join(["0"] * 19)
    item = write("u.item", f"1|Toy Story (1995)|01-Jan-1995||http://x|0|0|0|1|1{flags[9:]}\n")
    assert read_metadata(item).collect().row(0) == (
        1,
        "Toy Story (1995)",
        ["Animation", "Children's"],
    )
    csv = write(
        "movies.csv",
        'movieId,title,genres\n1,"American President, The (1995)",(no genres listed)\n',
    )
    assert read_metadata(csv).collect().row(0) == (1, "American President, The (1995)", [])


# --- bad input: the error names the file, the line, the column and what was expected ---


@pytest.mark.parametrize(
    ("content", "pattern"),
    [
        ("1::2::5::10\n1::2::5\n", r"line 2: expected 4 fields separated by '::'"),
        ("1::2::5::10\n1::x2::5::10\n", r"line 2: field 2 \(movie id\): expected an integer id"),
        (
            "1::2::5::10\n\n1::3::5::1e9x\n",
            r"line 3: field 4 \(timestamp\): expected an integer unix",
        ),
    ],
)
def test_bad_movielens_lines(write, content, pattern):
    path = write("ratings.dat", content)
    with pytest.raises(DataFormatError, match=pattern) as err:
        read("movielens", path)
    assert str(path) in str(err.value)
    assert "got '" in str(err.value)  # the offending line is quoted


def test_bad_sequence_token(write):
    path = write("seq.txt", "1 2 3\n2 4 five\n")
    with pytest.raises(DataFormatError, match=r"seq.txt: line 2: item ids .*expected integer"):
        read("sequences", path)


def test_unknown_column(write, tmp_path):
    path = write("log.csv", "user,item,ts\n1,2,3\n")
    with pytest.raises(
        DataFormatError,
        match=r"no column 'user_id' \(--user-col\); the columns are \['user', 'item', 'ts'\]",
    ):
        read("csv", path)
    pq = tmp_path / "ev.parquet"
    pl.DataFrame({"user_id": [1], "item_id": [2]}).write_parquet(pq)
    with pytest.raises(DataFormatError, match=r"ev.parquet: no column 'timestamp' \(--time-col\)"):
        read("parquet", pq)


@pytest.mark.parametrize("fmt", ["movielens", "csv", "sequences"])
def test_empty_text_file(write, fmt):
    path = write("ratings.dat" if fmt == "movielens" else "f.txt", "")
    with pytest.raises(DataFormatError, match=r"empty file; expected"):
        read(fmt, path)


def test_header_only_and_empty_parquet(write, tmp_path):
    path = write("log.csv", "user_id,item_id,timestamp\n")
    with pytest.raises(DataFormatError, match=r"nothing to prepare: it holds no events"):
        read("csv", path)
    pq = tmp_path / "ev.parquet"
    pl.DataFrame(
        schema={"user_id": pl.Int64, "item_id": pl.Int64, "timestamp": pl.Int64}
    ).write_parquet(pq)
    with pytest.raises(DataFormatError, match=r"empty file \(0 rows\)"):
        read("parquet", pq)


def test_wrong_encoding(write):
    path = write("log.csv", b"user_id,item_id,timestamp\n1,2,3\n1,caf\xe9,4\n")
    with pytest.raises(DataFormatError, match=r"log.csv: line 3, byte 6: 0xe9 is not valid UTF-8"):
        read("csv", path)
    events, skipped = read("csv", path, skip=True)
    assert (events.rows(), skipped) == ([(1, 2, 3)], 1)


def test_wrong_encoding_line_format(write):
    path = write("ratings.dat", b"1::2::5::10\n1::\xff3::5::11\n")
    with pytest.raises(DataFormatError, match=r"line 2, byte 4: 0xff is not valid UTF-8"):
        read("movielens", path)
    events, skipped = read("movielens", path, skip=True)
    assert (events.rows(), skipped) == ([(1, 2, 10)], 1)


def test_csv_field_count_and_values(write):
    path = write("log.csv", "user_id,item_id,timestamp\n1,2,3\n1,2,3,4\n2,3\n4,5,x\n6,7,8\n")
    with pytest.raises(DataFormatError, match=r"line 3: expected 3 fields \(as in the header\)"):
        read("csv", path)
    events, skipped = read("csv", path, skip=True)
    assert events.rows() == [(1, 2, 3), (6, 7, 8)]
    assert skipped == 3


def test_csv_int_ids_enforced(write):
    path = write("log.csv", "user_id,item_id,timestamp\n1,2,3\n1,b,3\n")
    with pytest.raises(DataFormatError, match=r"line 3: column 'item_id': expected an integer id"):
        read("csv", path, id_type="int")


def test_parquet_nulls(tmp_path):
    path = tmp_path / "ev.parquet"
    pl.DataFrame(
        {"user_id": [1, 2, None], "item_id": [5, None, 7], "timestamp": [1, 2, 3]}
    ).write_parquet(path)
    with pytest.raises(
        DataFormatError, match=r"ev.parquet: row 1: column 'item_id': expected a non-null id"
    ):
        read("parquet", path)
    events, skipped = read("parquet", path, skip=True)
    assert (events.rows(), skipped) == ([(1, 5, 1)], 2)


def test_skip_bad_rows_sequences_counts_lines(write):
    path = write("seq.txt", "1 2 3\nx 4 5\n2 6 y 7\n3 8\n")
    events, skipped = read("sequences", path, skip=True)
    assert skipped == 2
    assert events.rows() == [(1, 2), (1, 3), (3, 8)]


def test_all_rows_bad(write):
    path = write("ratings.dat", "a::b::c::d\n")
    with pytest.raises(DataFormatError, match=r"all 1 rows were malformed"):
        read("movielens", path, skip=True)


def test_missing_input_and_unknown_format(tmp_path):
    with pytest.raises(UserError, match="no such file"):
        open_source("sequences", tmp_path / "nope.txt")
    with pytest.raises(UserError, match="unknown format 'xml'"):
        open_source("xml", tmp_path / "x")


def test_check_rows_reports_first_bad_row(write):
    path = write("ratings.dat", "1::2::5::10\n1::2::5\n1::2\n")
    source = open_source("movielens", path)
    events = collect_events(source)
    with pytest.raises(DataFormatError, match="line 2"):
        check_rows(events, source, skip_bad_rows=False)


def test_byte_order_mark_and_duplicate_header(write):
    path = write("log.csv", "\ufeffuser_id,item_id,timestamp\n1,2,3\n")
    assert read("csv", path)[0].rows() == [(1, 2, 3)]
    dat = write("ratings.dat", "\ufeff1::2::5::10\n")
    assert read("movielens", dat)[0].rows() == [(1, 2, 10)]
    dup = write("dup.csv", "user_id,item_id,user_id\n1,2,3\n")
    with pytest.raises(DataFormatError, match=r"line 1: duplicate column names \['user_id'\]"):
        read("csv", dup)
