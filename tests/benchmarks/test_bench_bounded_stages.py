"""benchmarks/bench_bounded_stages.py: the stage record on a small catalog, the skip path."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

from retrieval_helpers import make_catalog, random_exclude

from benchmarks.bench_bounded_stages import main, stage_record
from recsys.retrieval.bounded import STAGES, BoundedConfig, BoundedExact
from recsys.retrieval.brute_force import BruteForce


def test_stage_record_on_a_small_catalog() -> None:
    cat = make_catalog(num_items=80, batch=4, seed=3)
    exclude = random_exclude(4, 80, seed=4)
    qb = SimpleNamespace(qp=cat.queries, exclude=exclude)
    truth = BruteForce(cat.similarity, cat.index).search(cat.queries, 7, exclude)
    config = BoundedConfig(first_stage_k=5, brute_force_below=0, time_stages=True)
    retriever = BoundedExact(cat.similarity, cat.index, config=config)
    record = stage_record(retriever, qb, 7, reps=2, truth=truth)
    assert record["exact"] is True
    assert set(record["stage_ms"]) == set(STAGES)
    assert len(record["survivors_sorted"]) == 4
    assert record["survivors_sorted"] == sorted(record["survivors_sorted"])
    assert 0.0 < record["survivor_fraction_mean"] <= 1.0
    assert len(record["gate_survivors"]) == record["dense_queries"]


def test_missing_bundle_skips_without_writing(tmp_path: Path) -> None:
    out = tmp_path / "results"
    assert main(["--bundle", str(tmp_path / "none"), "--out-dir", str(out)]) == 0
    assert not out.exists()


def test_command_line_of_a_run_without_arguments() -> None:
    from recsys.provenance import command_line

    assert command_line("recsys bench x", []) == "recsys bench x"
    assert command_line("recsys bench x", ["--k", "10"]) == "recsys bench x --k 10"
