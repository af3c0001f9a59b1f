"""The prepare job end to end: stats.json, metadata, skipped rows, atomicity."""

from __future__ import annotations

import hashlib
import json

import pytest

from pipelines.prepare import PrepareConfig, prepare
from pipelines.readers import ReadOptions
from pipelines.sequences import BuildConfig
from recsys.dataset import load_dataset
from recsys.errors import DataFormatError, UserError

RATINGS = "1::10::5::100\n1::20::3::50\n2::10::4::70\n1::10::5::100\n2::30::1::80\n"
MOVIES = "10::Ten (1990)::Drama\n20::Twenty (1991)::Comedy|Drama\n30::Thirty::\n"


def test_movielens_end_to_end(write, tmp_path):
    ratings = write("ml/ratings.dat", RATINGS)
    write("ml/movies.dat", MOVIES)
    stats = prepare(PrepareConfig(format="movielens", input=tmp_path / "ml", out=tmp_path / "ds"))
    on_disk = json.loads((tmp_path / "ds" / "stats.json").read_text())
    for key in ("num_users", "num_items", "num_interactions", "tie_break", "skipped_rows"):
        assert on_disk[key] == stats[key]
    assert (on_disk["num_users"], on_disk["num_items"], on_disk["num_interactions"]) == (2, 3, 4)
    assert on_disk["source"] == {
        "path": str(ratings.resolve()),
        "format": "movielens-dat",
        "sha256": hashlib.sha256(ratings.read_bytes()).hexdigest(),
    }
    assert on_disk["filters"] == {"dedup": True, "min_rating": None, "kcore": None}
    assert on_disk["removed"]["duplicates"] == 1
    data = load_dataset(tmp_path / "ds")
    assert data.sequence(0).tolist() == [2, 1]  # user 1: item 20 at t=50, then item 10
    assert data.titles[1:].tolist() == ["Ten (1990)", "Twenty (1991)", "Thirty"]


def test_min_rating_and_kcore_recorded(write, tmp_path):
    write("ml/ratings.dat", RATINGS)
    config = PrepareConfig(
        format="movielens",
        input=tmp_path / "ml",
        out=tmp_path / "ds",
        build=BuildConfig(min_rating=4, kcore=1),
    )
    stats = prepare(config)
    assert stats["filters"]["min_rating"] == 4 and stats["removed"]["min_rating"] == 2
    assert stats["num_interactions"] == 2  # (1, 10) once after dedup, (2, 10)


def test_min_rating_needs_rating_column(write, tmp_path):
    path = write("log.csv", "user_id,item_id,timestamp\n1,2,3\n")
    config = PrepareConfig(
        format="csv", input=path, out=tmp_path / "ds", build=BuildConfig(min_rating=3)
    )
    with pytest.raises(UserError, match="--min-rating needs --rating-col"):
        prepare(config)


def test_skip_bad_rows_reported(write, tmp_path):
    path = write("ratings.dat", "1::10::5::100\n1::x::3::50\n2::10::4\n2::11::4::9\n")
    config = PrepareConfig(format="movielens", input=path, out=tmp_path / "ds")
    with pytest.raises(DataFormatError, match="line 2"):
        prepare(config)
    assert not (tmp_path / "ds").exists()  # nothing partial left behind
    stats = prepare(
        PrepareConfig(format="movielens", input=path, out=tmp_path / "ds", skip_bad_rows=True)
    )
    assert stats["skipped_rows"] == 2 and stats["num_interactions"] == 2


def test_failed_prepare_keeps_the_old_dataset(write, tmp_path):
    good = write("good.txt", "1 2 3\n2 3 4\n")
    out = tmp_path / "ds"
    prepare(PrepareConfig(format="sequences", input=good, out=out))
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    bad = write("bad.txt", "1 2 3\n2 three 4\n")
    with pytest.raises(DataFormatError):
        prepare(PrepareConfig(format="sequences", input=bad, out=out))
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bad.txt", "ds", "good.txt"]


def test_temporal_split_recorded(write, tmp_path):
    path = write(
        "log.csv",
        "user_id,item_id,timestamp\n"
        + "".join(f"{u},{i},{u * 10 + i}\n" for u in range(3) for i in range(5)),
    )
    stats = prepare(
        PrepareConfig(format="csv", input=path, out=tmp_path / "ds", temporal_split=0.5)
    )
    assert stats["split"]["protocol"] == "temporal"
    assert stats["split"]["test_cutoff"] == 12
    seq = write("seq.txt", "1 2 3\n")
    with pytest.raises(UserError, match="needs timestamps"):
        prepare(
            PrepareConfig(format="sequences", input=seq, out=tmp_path / "s", temporal_split=0.5)
        )


def test_read_options_validation():
    with pytest.raises(ValueError, match="separator must be a single byte"):
        ReadOptions(separator="::")
    with pytest.raises(ValueError, match="id_type must be"):
        ReadOptions(id_type="float")  # type: ignore[arg-type]


def test_filters_that_remove_everything(write, tmp_path):
    write("ml/ratings.dat", RATINGS)
    config = PrepareConfig(
        format="movielens", input=tmp_path / "ml", out=tmp_path / "ds", build=BuildConfig(kcore=9)
    )
    with pytest.raises(UserError, match="no events left after the filters"):
        prepare(config)
    config = PrepareConfig(
        format="movielens",
        input=tmp_path / "ml",
        out=tmp_path / "ds",
        build=BuildConfig(min_rating=6),
    )
    with pytest.raises(UserError, match="no events left after the filters"):
        prepare(config)
    assert not (tmp_path / "ds").exists()
