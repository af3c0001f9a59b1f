"""`recsys export`: a run directory -> a bundle, its summary line and the run's warnings."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import pytest
from retrieval_helpers import toy_dataset, toy_model

from app.export import register
from recsys.bundle import load_bundle
from recsys.training.rundir import write_model_config, write_weights


def run_cli(argv: list[str]) -> int:
    parser = argparse.ArgumentParser()
    register(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(argv)
    return int(args.func(args))


def _run_dir(tmp_path: Path, num_items: int, metrics: dict) -> Path:
    run = tmp_path / "run"
    model = toy_model(num_items)
    write_weights(run / "best.safetensors", model)
    write_model_config(run, model.config, tmp_path / "data", model.config.encoder.max_len)
    (run / "metrics.json").write_text(json.dumps(metrics))
    return run


def test_cli_export(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    data = toy_dataset(tmp_path / "data", num_users=30, num_items=20)
    run = _run_dir(tmp_path, data.num_items, {"valid": {"ndcg@10": 0.25}})
    assert run_cli(["export", "--checkpoint", str(run), "--out", str(tmp_path / "b")]) == 0
    assert "model_version" in capsys.readouterr().out
    assert load_bundle(tmp_path / "b").num_items == 20


def test_training_warnings_reach_the_export_command(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data = toy_dataset(tmp_path / "data", num_users=20, num_items=30)
    warning = "the model does not beat popularity on validation hr@10: 0.0100 vs 0.0200"
    run = _run_dir(tmp_path, data.num_items, {"valid": {}, "warnings": [warning]})
    assert run_cli(["export", "--checkpoint", str(run), "--out", str(tmp_path / "b")]) == 0
    assert warning in capsys.readouterr().err
    assert load_bundle(tmp_path / "b").metadata["warnings"] == [warning]
