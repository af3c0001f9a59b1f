"""benchmarks/query_ranks.py: ranks files round-trip, are checked, and line up queries."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import polars as pl
import pytest

from benchmarks.query_ranks import (
    QueryRanks,
    check_aligned,
    read_ranks,
    read_ranks_meta,
    write_ranks,
)
from recsys.errors import UserError
from recsys.paired import per_query


def _ranks(ranks: list[int], users: str = "abcd") -> QueryRanks:
    return QueryRanks(
        user_keys=np.array(list(users[: len(ranks)])),
        target_keys=np.array([f"item{i}" for i in range(len(ranks))]),
        ranks=np.array(ranks, dtype=np.int64),
    )


def test_ranks_round_trip_per_split_and_give_the_metrics_of_their_ranks(tmp_path: Path) -> None:
    path = tmp_path / "ranks" / "ml-1m-x.parquet"
    valid, test = _ranks([1, 12, 3]), _ranks([2, 60, 1, 300])
    write_ranks(
        path, {"valid": valid, "test": test}, {"config": "x", "provenance": {"commit": "c"}}
    )
    assert read_ranks_meta(path) == {"config": "x", "provenance": {"commit": "c"}}
    for split, expected in (("valid", valid), ("test", test)):
        got = read_ranks(path, split)
        assert got.user_keys.tolist() == expected.user_keys.tolist()
        assert got.target_keys.tolist() == expected.target_keys.tolist()
        assert got.ranks.tolist() == expected.ranks.tolist()
    metrics = read_ranks(path, "test").metrics()
    assert metrics["hr@10"] == 0.5  # ranks 2 and 1 of 4
    assert metrics["mrr"] == pytest.approx((1 / 2 + 1 / 60 + 1 + 1 / 300) / 4)
    ndcg = np.mean([1 / np.log2(3), 0.0, 1.0, 0.0])
    assert metrics["ndcg@10"] == pytest.approx(ndcg)
    assert metrics["ndcg@10"] == pytest.approx(per_query(test.ranks, "ndcg@10").mean())


def test_bad_ranks_files_are_refused_naming_the_file_and_what_was_expected(
    tmp_path: Path,
) -> None:
    with pytest.raises(UserError, match="does not exist"):
        read_ranks(tmp_path / "none.parquet", "test")
    junk = tmp_path / "junk.parquet"
    junk.write_text("not parquet")
    with pytest.raises(UserError, match=r"junk\.parquet: not a readable Parquet"):
        read_ranks(junk, "test")
    path = tmp_path / "r.parquet"
    write_ranks(path, {"valid": _ranks([1, 2])})
    assert read_ranks_meta(path) == {}
    with pytest.raises(UserError, match=r"no rows for split 'test' \(it holds \['valid'\]\)"):
        read_ranks(path, "test")
    frame = pl.read_parquet(path)
    frame.with_columns(pl.col("rank").cast(pl.Float64)).write_parquet(path)
    with pytest.raises(UserError, match="column 'rank' is Float64, expected Int64"):
        read_ranks(path, "valid")
    frame.drop("target_key").write_parquet(path)
    with pytest.raises(UserError, match="column 'target_key' is missing"):
        read_ranks(path, "valid")
    frame.with_columns(pl.lit(0, pl.Int64).alias("rank")).write_parquet(path)
    with pytest.raises(UserError, match="rank below 1"):
        read_ranks(path, "valid")


def test_only_the_same_queries_in_the_same_order_are_aligned() -> None:
    check_aligned(_ranks([1, 2, 3]), _ranks([9, 8, 7]), "a", "b")  # ranks may differ
    with pytest.raises(UserError, match="a has 3 queries and b has 2"):
        check_aligned(_ranks([1, 2, 3]), _ranks([1, 2]), "a", "b")
    with pytest.raises(UserError, match=r"differ at query 1: user 'b' .* user 'x'"):
        check_aligned(_ranks([1, 2, 3]), _ranks([1, 2, 3], users="axc"), "a", "b")
    other_target = _ranks([1, 2, 3])
    other_target.target_keys[2] = "item9"
    with pytest.raises(UserError, match="differ at query 2"):
        check_aligned(_ranks([1, 2, 3]), other_target, "a", "b")
