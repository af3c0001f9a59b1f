"""benchmarks/bench_blocks.py: every variant measured on a small catalog, the skip path."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import pytest
from retrieval_helpers import make_catalog, random_exclude

from benchmarks.bench_blocks import RAGGED_PAIRS, brute_force_chunks, main, ragged_variants


@pytest.mark.slow
def test_block_variants_agree_on_a_small_catalog() -> None:
    cat = make_catalog(num_items=90, batch=5, seed=2)
    qb = SimpleNamespace(qp=cat.queries, exclude=random_exclude(5, 90, seed=3))
    brute = brute_force_chunks(cat.similarity, cat.index, qb, 6, chunks=(7, 64), rounds=2)
    assert set(brute) == {"7", "64"}
    assert all(r["same_topk"] and len(r["times_ms"]) == 2 for r in brute.values())
    ragged = ragged_variants(cat.similarity, cat.index, qb, 6, reps=1, dense_fraction=1.0)
    assert ragged["queries"] == 5
    assert len(ragged["variants"]) == 2 * len(RAGGED_PAIRS)
    assert all(v["same_topk"] for v in ragged["variants"].values())
    assert ragged["distinct_items"] <= ragged["pairs"] == ragged["survivors_of_listed_queries"]


def test_missing_bundle_skips_without_writing(tmp_path: Path) -> None:
    out = tmp_path / "results"
    assert main(["--bundle", str(tmp_path / "none"), "--out-dir", str(out)]) == 0
    assert not out.exists()
