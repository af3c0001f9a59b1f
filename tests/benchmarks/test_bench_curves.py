"""benchmarks/bench_curves.py: validation curves from CSV logs, compared at equal epochs."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from benchmarks.bench_curves import (
    equal_epochs,
    main,
    plot,
    run_config,
    source_config,
    source_curves,
    validation_curve,
)


def _log(path: Path, rows: list[tuple[int, float, float]]) -> None:
    path.mkdir(parents=True)
    lines = ["epoch,step,train/loss,valid/hr@10,valid/ndcg@10"]
    for epoch, hr, ndcg in rows:
        lines.append(f"{epoch},{epoch * 10},0.5,,")  # a training row: no validation
        lines.append(f"{epoch},{epoch * 10 + 9},,{hr},{ndcg}")
    (path / "metrics.csv").write_text("\n".join(lines) + "\n")


def test_curve_joins_resumed_logs_and_compares_common_epochs(tmp_path: Path) -> None:
    _log(tmp_path / "a/logs/version_0", [(0, 0.1, 0.05), (1, 0.2, 0.1)])
    _log(tmp_path / "a/logs/version_1", [(2, 0.3, 0.15)])  # resumed
    _log(tmp_path / "b/logs/version_0", [(0, 0.15, 0.07), (1, 0.25, 0.12)])
    curve_a = validation_curve(tmp_path / "a")
    assert [row["epoch"] for row in curve_a] == [0, 1, 2]
    assert curve_a[2] == {"epoch": 2, "hr@10": 0.3, "ndcg@10": 0.15}
    rows = equal_epochs({"a": curve_a, "b": validation_curve(tmp_path / "b")})
    assert [row["epoch"] for row in rows] == [0, 1]
    assert rows[1]["a"] == {"hr@10": 0.2, "ndcg@10": 0.1}
    assert rows[1]["b"] == {"hr@10": 0.25, "ndcg@10": 0.12}


def test_elapsed_time_is_read_and_plotted(tmp_path: Path) -> None:
    run = tmp_path / "r/logs/version_0"
    run.mkdir(parents=True)
    (run / "metrics.csv").write_text(
        "epoch,step,time/elapsed_s,valid/hr@10,valid/ndcg@10\n"
        "0,9,61.25,0.1,0.05\n1,19,122.5,0.2,0.1\n"
    )
    curve = validation_curve(tmp_path / "r")
    assert [row["elapsed_s"] for row in curve] == [61.2, 122.5]
    png = tmp_path / "c.png"
    plot({"r": curve}, png, "t")
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_run_config_is_read_when_present(tmp_path: Path) -> None:
    assert run_config(tmp_path) is None
    (tmp_path / "run_config.yaml").write_text("name: x\ntraining: {lr: 0.004}\n")
    assert run_config(tmp_path) == {"name": "x", "training": {"lr": 0.004}}


def test_raw_weights_are_read_beside_the_average(tmp_path: Path) -> None:
    run = tmp_path / "r/logs/version_0"
    run.mkdir(parents=True)
    (run / "metrics.csv").write_text(
        "epoch,step,valid/hr@10,valid/ndcg@10,valid_raw/hr@10,valid_raw/ndcg@10\n"
        "0,9,0.2,0.1,0.18,0.09\n"
    )
    assert validation_curve(tmp_path / "r") == [
        {"epoch": 0, "hr@10": 0.2, "ndcg@10": 0.1, "raw_hr@10": 0.18, "raw_ndcg@10": 0.09}
    ]


def test_a_result_file_is_a_source_and_raw_weights_get_their_own_curve(tmp_path: Path) -> None:
    result = tmp_path / "ml-1m-ml-1m-x.json"
    epoch = {"epoch": 0, "hr@10": 0.2, "ndcg@10": 0.1, "elapsed_s": 60.0}
    raw = {"raw_hr@10": 0.18, "raw_ndcg@10": 0.09}
    result.write_text(json.dumps({"config": "configs/x.yaml", "valid_by_epoch": [epoch | raw]}))
    assert source_curves(result) == {
        "ml-1m-ml-1m-x": [epoch],
        "ml-1m-ml-1m-x (raw weights)": [
            {"epoch": 0, "hr@10": 0.18, "ndcg@10": 0.09, "elapsed_s": 60.0}
        ],
    }
    assert source_config(result) == "configs/x.yaml"
    # a run directory without weight averaging: one curve, named after the directory
    _log(tmp_path / "plain/logs/version_0", [(0, 0.1, 0.05)])
    assert list(source_curves(tmp_path / "plain")) == ["plain"]


def test_a_source_file_that_is_not_a_result_is_named_in_the_error(tmp_path: Path, capsys) -> None:
    bad = tmp_path / "notes.json"
    bad.write_text("{not json")
    with pytest.raises(ValueError, match=r"notes\.json: not a readable per-run result JSON"):
        source_curves(bad)
    listed = tmp_path / "list.json"
    listed.write_text("[1, 2]")
    with pytest.raises(ValueError, match=r"list\.json: expected a per-run result"):
        source_config(listed)
    with pytest.raises(SystemExit):
        main(["--name", "x", str(bad)])
    assert "notes.json: not a readable per-run result JSON" in capsys.readouterr().err
