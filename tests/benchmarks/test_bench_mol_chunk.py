"""benchmarks/bench_mol_chunk.py: one MoL negatives chunk, whole and stage by stage."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from benchmarks.bench_mol_chunk import main


def test_times_a_tiny_chunk_whole_and_by_stage(tmp_path: Path) -> None:
    out = tmp_path / "chunk.json"
    args = ["--negatives", "4", "--rows", "3", "--items", "20", "--reps", "1"]
    assert main([*args, "--threads", "1", "--out", str(out)]) == 0
    result = json.loads(out.read_text())
    assert result["config"]["rows"] == 3 and result["config"]["negatives_per_row"] == 4
    assert set(result["chunk_ms"]) == {"eager", "compiled"}
    assert all(ms > 0 for ms in result["chunk_ms"].values())
    stages = result["stage_ms"]
    assert "gate maths, compiled" in stages and "component gradients" in stages
    assert all(ms > 0 for ms in stages.values())
    eager = sum(ms for name, ms in stages.items() if name != "gate maths, compiled")
    assert abs(result["eager_stage_sum_ms"] - eager) < 1e-9
    assert result["provenance"]["commit"]


def test_against_a_revision_times_both_kernels_on_the_same_chunk(tmp_path: Path) -> None:
    out = tmp_path / "chunk.json"
    args = ["--negatives", "4", "--rows", "3", "--items", "20", "--reps", "1", "--rounds", "2"]
    assert main([*args, "--threads", "1", "--against", "HEAD", "--out", str(out)]) == 0
    result = json.loads(out.read_text())["against"]
    assert result["rev"] == "HEAD" and len(result["commit"]) == 40 and result["rounds"] == 2
    assert set(result["median_ms"]) == {"current", "HEAD"}
    lo, hi = result["ratio_range"]
    assert 0 < lo <= result["ratio_current_over_rev"] <= hi


def test_against_an_unknown_revision_says_which(tmp_path: Path) -> None:
    args = ["--negatives", "4", "--rows", "3", "--items", "20", "--reps", "1"]
    with pytest.raises(SystemExit, match="no-such-rev"):
        main([*args, "--against", "no-such-rev", "--out", str(tmp_path / "c.json")])
