"""benchmarks/bench_accuracy.py: the per-dataset summary rows."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

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


def _tiny_bench(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A tiny dataset as every benchmark's prepared data, results under tmp_path, and a
    tiny SASRec + dot config (tmp_path/tiny-dot.yaml, returned)."""
    import yaml
    from dataset_helpers import make_dataset

    from benchmarks import bench_accuracy

    data = make_dataset(tmp_path / "data", num_users=40, num_items=20)
    monkeypatch.setattr(bench_accuracy, "prepared", lambda dataset, cache: data)
    monkeypatch.setattr(bench_accuracy, "RESULTS", tmp_path / "results")
    raw = load_config(REPO / "configs/beauty-sasrec-dot-cpu.yaml").to_dict()
    raw["model"]["encoder"].update(max_len=8, dim=16, num_blocks=1, num_heads=1)
    raw["training"].update(batch_size=16, negatives={"kind": "shared", "num": 8}, num_workers=0)
    cfg = tmp_path / "tiny-dot.yaml"
    cfg.write_text(yaml.safe_dump(raw))
    return cfg


def test_refit_from_a_result_file_adds_the_refit_to_it_and_its_row(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from benchmarks import bench_accuracy

    cfg = _tiny_bench(tmp_path, monkeypatch)
    result_path = tmp_path / "results" / "beauty-tiny-dot.json"
    result_path.parent.mkdir()
    result = {**_result(str(cfg), 0.05), "dataset": "beauty", "selected_epoch": 1}
    result_path.write_text(json.dumps(result))
    argv = ["--dataset", "beauty", "--config", str(cfg), "--refit-from", str(result_path)]
    argv += ["--runs", str(tmp_path / "runs")]
    assert bench_accuracy.main(argv) == 0
    written = json.loads(result_path.read_text())
    refit = written.pop("refit")
    assert written == result  # the selection's record is kept as it was
    assert refit["epochs"] == 2 and refit["selected_in"] == str(result_path)
    assert set(refit["test"]) >= {"hr@10", "ndcg@10", "mrr"} and "commit" in refit["provenance"]
    row = json.loads((tmp_path / "results" / "accuracy-beauty.json").read_text())["rows"][0]
    assert row["refit"] == refit and row["test"] == result["test"]
    # A result for another config is refused, naming both.
    with pytest.raises(SystemExit, match=r"expected .*other\.yaml on beauty"):
        bench_accuracy.main([*argv[:3], str(tmp_path / "other.yaml"), *argv[4:]])
    # So is a missing or unreadable result file.
    with pytest.raises(SystemExit, match=r"--refit-from .*nope\.json: not a readable result"):
        bench_accuracy.main([*argv[:5], str(tmp_path / "nope.json"), *argv[6:]])


def test_a_run_records_its_result_its_summary_row_and_its_per_query_ranks(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from benchmarks import bench_accuracy
    from benchmarks.query_ranks import read_ranks

    cfg = _tiny_bench(tmp_path, monkeypatch)
    argv = ["--dataset", "beauty", "--config", str(cfg), "--max-epochs", "1"]
    assert bench_accuracy.main([*argv, "--runs", str(tmp_path / "runs")]) == 0
    result = json.loads((tmp_path / "results" / "beauty-tiny-dot.json").read_text())
    summary = json.loads((tmp_path / "results" / "accuracy-beauty.json").read_text())
    assert [row["name"] for row in summary["rows"]] == ["tiny-dot"]
    assert summary["rows"][0]["test"] == result["test"]
    ranks_file = tmp_path / "results" / "ranks" / "beauty-tiny-dot.parquet"
    for split in ("valid", "test"):
        ranks = read_ranks(ranks_file, split)
        assert len(ranks.ranks) == 40  # every user is a query
        for key, value in ranks.metrics().items():
            assert value == pytest.approx(result[split][key], abs=1e-12)
