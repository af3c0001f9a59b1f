"""benchmarks/bench_paired.py: two tiny run directories compared on a tiny dataset."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import yaml
from dataset_helpers import make_dataset

from benchmarks import bench_paired, bench_ranks
from recsys.dataset import load_dataset
from recsys.evaluation import evaluate
from recsys.models.seqrec import SeqRecModel
from recsys.training.config import load_config
from recsys.training.rundir import RUN_CONFIG, write_model_config, write_weights

REPO = Path(__file__).resolve().parents[2]


def _run(tmp_path: Path, name: str, data: Path, similarity: str, seed: int):
    """A run directory holding a freshly initialised tiny model (no training needed)."""
    raw = load_config(REPO / f"configs/beauty-sasrec-{similarity}-cpu.yaml").to_dict()
    raw["model"]["encoder"].update(max_len=8, dim=16, num_blocks=1, num_heads=1)
    raw["name"] = name
    run = tmp_path / name
    run.mkdir()
    (run / RUN_CONFIG).write_text(yaml.safe_dump(raw))
    config = load_config(run / RUN_CONFIG)
    torch.manual_seed(seed)
    model = config.model_config(load_dataset(data).num_items)
    seqrec = SeqRecModel(model).eval()
    write_weights(run / "best.safetensors", seqrec)
    write_model_config(run, model, data, config.max_len)
    return run, seqrec, config


def _two_runs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """A tiny dataset as the paired benchmark's data (data dir, loaded) and two tiny runs
    on it, MoL (a) and dot (b)."""
    data = make_dataset(tmp_path / "data", num_users=60, num_items=30)
    monkeypatch.setattr(bench_paired, "data_or_skip", lambda dataset, args: data)
    run_a = _run(tmp_path, "tiny-mol", data, "mol", 1)
    run_b = _run(tmp_path, "tiny-dot", data, "dot", 2)
    return data, load_dataset(data), run_a, run_b


def test_two_runs_are_compared_query_by_query(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _, dataset, (run_a, model_a, config_a), (run_b, model_b, config_b) = _two_runs(
        tmp_path, monkeypatch
    )
    expected_a = evaluate(model_a, dataset, "test", config_a.max_len)
    expected_b = evaluate(model_b, dataset, "test", config_b.max_len)
    (run_a / "metrics.json").write_text(json.dumps({"test": expected_a}))
    (run_b / "metrics.json").write_text(json.dumps({"test": {**expected_b, "hr@10": 2.0}}))

    out = tmp_path / "paired.json"
    argv = ["--dataset", "ml-1m", "--name", "t", "--resamples", "300", "--out", str(out)]
    assert bench_paired.main([*argv, str(run_a), str(run_b)]) == 0
    result = json.loads(out.read_text())
    assert result["queries"] == 60
    a, b = result["models"]["a"], result["models"]["b"]
    assert (a["name"], b["name"]) == ("tiny-mol", "tiny-dot")
    assert a["matches"] is True and b["matches"] is False  # b's record was altered
    rows = {row["metric"]: row for row in result["rows"]}
    for key in ("hr@10", "ndcg@10", "mrr"):
        assert rows[key]["a"] == pytest.approx(expected_a[key])
        assert rows[key]["b"] == pytest.approx(expected_b[key])
        assert rows[key]["diff"] == pytest.approx(expected_a[key] - expected_b[key])
    assert result["provenance"]["command"].startswith("recsys bench paired")

    assert bench_paired.main([*argv, str(run_a), str(run_a)]) == 0
    same = json.loads(out.read_text())
    assert all(row["diff"] == 0.0 and row["p_value"] == 1.0 for row in same["rows"])


def test_committed_ranks_files_stand_in_for_gone_run_directories(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from benchmarks.query_ranks import save_run_ranks
    from recsys.errors import UserError

    data, dataset, (run_a, model_a, config_a), (run_b, model_b, config_b) = _two_runs(
        tmp_path, monkeypatch
    )
    recorded = {}
    for run, model, config in ((run_a, model_a, config_a), (run_b, model_b, config_b)):
        recorded[run] = {s: evaluate(model, dataset, s, config.max_len) for s in ("valid", "test")}
        (run / "metrics.json").write_text(json.dumps(recorded[run]))
    results = tmp_path / "results"
    monkeypatch.setattr(bench_ranks, "data_or_skip", lambda dataset, args: data)
    argv = ["--dataset", "ml-1m", "--out-dir", str(results / "ranks"), str(run_a)]
    assert bench_ranks.main(argv) == 0  # `recsys bench ranks RUN_DIR`
    ranks_a = results / "ranks" / "ml-1m-tiny-mol.parquet"
    ranks_b = save_run_ranks(run_b, dataset, "ml-1m", results / "ranks")
    assert ranks_a.is_file() and ranks_b == results / "ranks" / "ml-1m-tiny-dot.parquet"
    (results / "ml-1m-tiny-mol.json").write_text(json.dumps(recorded[run_a]))  # its result

    argv = ["--dataset", "ml-1m", "--name", "t", "--resamples", "300", "--split", "valid"]
    out_dirs, out_files = tmp_path / "dirs.json", tmp_path / "files.json"
    assert bench_paired.main([*argv, "--out", str(out_dirs), str(run_a), str(run_b)]) == 0
    # Two ranks files need no data at all.
    monkeypatch.setattr(bench_paired, "data_or_skip", lambda dataset, args: 1 / 0)
    assert bench_paired.main([*argv, "--out", str(out_files), str(ranks_a), str(ranks_b)]) == 0
    from_dirs, from_files = json.loads(out_dirs.read_text()), json.loads(out_files.read_text())
    assert from_files["rows"] == from_dirs["rows"]
    a, b = from_files["models"]["a"], from_files["models"]["b"]
    assert (a["name"], a["ranks_file"], a["matches"]) == ("tiny-mol", str(ranks_a), True)
    assert a["ranks_provenance"]["command"].startswith("recsys bench ranks")
    assert (b["name"], b["matches"]) == ("tiny-dot", None)  # no per-run result beside it

    # Ranks that do not reproduce the run's recorded figures are not written.
    (run_b / "metrics.json").write_text(json.dumps({"valid": {"hr@10": 2.0}}))
    with pytest.raises(UserError, match=r"not the figures recorded in metrics\.json"):
        save_run_ranks(run_b, dataset, "ml-1m", tmp_path / "refused")
    assert not (tmp_path / "refused").exists()
    # Ranks of other queries (another dataset) are refused, naming both sources.
    other = make_dataset(tmp_path / "other", num_users=60, num_items=30, seed=5)
    run_c, _, _ = _run(tmp_path, "tiny-other", other, "dot", 3)
    (run_c / "metrics.json").unlink(missing_ok=True)
    monkeypatch.setattr(bench_paired, "data_or_skip", lambda dataset, args: other)
    with pytest.raises(UserError, match="differ at query"):
        bench_paired.main([*argv, "--out", str(out_files), str(run_c), str(ranks_b)])
