"""The pipeline benchmark script runs end to end at a tiny size and writes its JSON."""

from __future__ import annotations

import json

from benchmarks.bench_pipeline import main


def test_bench_pipeline_smoke(tmp_path):
    out = tmp_path / "pipeline.json"
    argv = ["--events", "3000", "--users", "100", "--items", "60", "--repeats", "1"]
    assert main([*argv, "--out", str(out)]) == 0
    result = json.loads(out.read_text())
    assert result["events"]["rows"] >= 3000
    assert result["prepare"]["runs"][0]["num_users"] == 100
    assert result["minimal_work"]["median_seconds"] > 0
    assert {"commit", "machine", "date", "command"} <= set(result["provenance"])
    assert set(result) >= {"time_ratio", "memory_ratio", "meets_targets", "targets"}
