"""benchmarks/bench_accuracy.py: the per-dataset summary rows."""

from __future__ import annotations

import json
from pathlib import Path

from benchmarks.bench_accuracy import summary_row, update_summary
from recsys.training.config import load_config

REPO = Path(__file__).resolve().parents[2]


def _result(config: str, hr: float) -> dict:
    metrics = {"hr@10": hr, "ndcg@10": hr / 2}
    return {
        "config": config,
        "valid": metrics,
        "test": metrics,
        "popularity": {"hr@10": 0.01},
        "selected_epoch": 3,
        "epochs_run": 5,
        "wall_time_s": 12.5,
        "device": "cpu",
        "provenance": {"commit": "abc"},
    }


def test_summary_rows_are_upserted_by_config_name(tmp_path: Path) -> None:
    mol = "configs/beauty-sasrec-mol-cpu.yaml"
    dot = "configs/beauty-sasrec-dot-cpu.yaml"
    out = tmp_path / "accuracy-beauty.json"
    row = summary_row(_result(mol, 0.05), load_config(REPO / mol))
    assert row["name"] == "beauty-sasrec-mol-cpu"
    assert (row["encoder"], row["similarity"], row["commit"]) == ("sasrec", "mol", "abc")
    assert row["negatives"]["kind"] == "shared"
    update_summary(out, "beauty", row)
    update_summary(out, "beauty", summary_row(_result(dot, 0.06), load_config(REPO / dot)))
    update_summary(out, "beauty", summary_row(_result(mol, 0.07), load_config(REPO / mol)))
    summary = json.loads(out.read_text())
    assert summary["dataset"] == "beauty"
    assert [r["name"] for r in summary["rows"]] == [
        "beauty-sasrec-dot-cpu",
        "beauty-sasrec-mol-cpu",
    ]
    assert summary["rows"][1]["test"]["hr@10"] == 0.07


def test_run_directories_are_keyed_by_the_whole_config() -> None:
    from benchmarks.bench_accuracy import config_key
    from recsys.training.config import config_from_dict

    config = load_config(REPO / "configs/ml-1m-hstu-mol-cpu.yaml")
    assert config_key(config) == config_key(load_config(REPO / "configs/ml-1m-hstu-mol-cpu.yaml"))
    raw = config.to_dict()
    raw["training"]["seed"] = 7
    assert config_key(config_from_dict(raw)) != config_key(config)
