"""benchmarks/bench_collapse.py: the spread measures, the ablations and the record."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from dataset_helpers import make_dataset

from benchmarks.bench_collapse import VARIANTS, main


@pytest.mark.slow
def test_writes_one_row_per_variant(tmp_path: Path) -> None:
    data = make_dataset(tmp_path / "d", num_users=300, num_items=1200)
    out = tmp_path / "collapse.json"
    names = [
        "dot",
        "mol1-no-item-proj",
        "mol1-no-query-mlp",
        "mol1-mixed-logq",
        "mol1-uniformity",
        "mol1-similarity-lr0.1",
    ]
    argv = ["--data", str(data), "--steps", "2", "--val-users", "300", "--out", str(out)]
    assert main([*argv, "--variants", *names]) == 0
    record = json.loads(out.read_text())
    assert [row["variant"] for row in record["rows"]] == names
    for row in record["rows"]:
        assert 0.0 <= row["hr@10"] <= 1.0 and row["steps"] == 2
        assert -1.0 <= row["qcomp_cos"] <= 1.0 and -1.0 <= row["icomp_cos"] <= 1.0
    assert "commit" in json.dumps(record["provenance"])
    assert set(VARIANTS) >= set(names)


@pytest.mark.slow
def test_gradient_check_finds_the_fused_backward_exact(tmp_path: Path) -> None:
    data = make_dataset(tmp_path / "d", num_users=200, num_items=300)
    out = tmp_path / "grad.json"
    assert main(["--data", str(data), "--gradient-check", "--out", str(out)]) == 0
    checks = json.loads(out.read_text())["checks"]
    assert len(checks) == 2
    for check in checks:
        assert check["max_relative_gradient_difference"] < 1e-9
        assert abs(check["loss_fused"] - check["loss_autograd"]) < 1e-9


def test_missing_dataset_skips(tmp_path: Path) -> None:
    assert main(["--data", str(tmp_path / "none")]) == 0
