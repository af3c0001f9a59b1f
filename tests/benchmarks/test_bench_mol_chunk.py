"""benchmarks/bench_mol_chunk.py: one MoL negatives chunk, whole and stage by stage."""

from __future__ import annotations

import json
from pathlib import Path

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
