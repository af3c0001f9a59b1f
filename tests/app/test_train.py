"""`recsys train` / `recsys evaluate` end to end on a tiny dataset (real Lightning fit)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import pytest
import yaml

# tiny datasets, and the autouse one-thread fixture
from dataset_helpers import make_dataset, one_thread  # noqa: F401

from app.train import register
from recsys.bundle import export_bundle
from recsys.errors import UserError
from recsys.metrics import METRIC_KEYS

CONFIG = {
    "name": "cli",
    "model": {
        "encoder": {"type": "sasrec", "max_len": 12, "dim": 16, "num_blocks": 1},
        "similarity": {"type": "mol", "p_q": 2, "p_x": 2, "d_p": 8, "mlp_hidden": 16},
    },
    "training": {
        "epochs": 2,
        "batch_size": 16,
        "negatives": {"kind": "shared", "num": 8},
        "precision": "32-true",
    },
}


def run_cli(argv: list[str]) -> int:
    parser = argparse.ArgumentParser()
    register(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(argv)
    return int(args.func(args))


def test_train_then_evaluate(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    data = make_dataset(tmp_path / "data", num_users=40, num_items=20)
    cfg = tmp_path / "cfg.yaml"
    cfg.write_text(yaml.safe_dump(CONFIG))
    run = tmp_path / "run"
    argv = ["train", "--config", str(cfg), "--data", str(data), "--out", str(run)]
    assert run_cli([*argv, "--no-progress"]) == 0
    out = capsys.readouterr().out
    assert "| model (test) |" in out and "| popularity (test) |" in out
    assert "| popularity (valid) |" in out
    metrics = json.loads((run / "metrics.json").read_text())
    assert set(metrics) == {"valid", "test", "popularity", "popularity_valid", "warnings"}

    result = tmp_path / "eval.json"
    assert run_cli(["evaluate", "--run", str(run), "--out", str(result)]) == 0
    table = capsys.readouterr().out
    assert "| model (brute-force) |" in table and "| popularity |" in table
    saved = json.loads(result.read_text())
    assert list(saved["model"]) == list(METRIC_KEYS)
    assert saved["model"] == pytest.approx(metrics["test"])
    assert saved["popularity"] == pytest.approx(metrics["popularity"])

    ckpt = next((run / "checkpoints").glob("epoch*.ckpt"))
    assert run_cli(["evaluate", "--checkpoint", str(ckpt), "--split", "valid"]) == 0
    assert "| model (brute-force) |" in capsys.readouterr().out

    # An exact retriever of recsys.retrieval ranks like brute force.
    assert run_cli(["evaluate", "--run", str(run), "--retriever", "brute_force"]) == 0
    assert "| model (brute_force) |" in capsys.readouterr().out

    # The exported bundle, the model as served, ranks test as the run recorded.
    bundle = export_bundle(run, tmp_path / "bundle")
    assert run_cli(["evaluate", "--bundle", str(bundle), "--data", str(data)]) == 0
    out = capsys.readouterr().out
    assert "| recorded at export |" in out and "figures its run recorded are reproduced" in out
    meta_path = bundle / "metadata.json"
    meta = json.loads(meta_path.read_text())
    meta["metrics"]["test"]["hr@10"] += 0.01  # a record that is not this model's
    meta_path.write_text(json.dumps(meta))
    assert run_cli(["evaluate", "--bundle", str(bundle), "--data", str(data)]) == 1
    assert "but its run recorded" in capsys.readouterr().err
    with pytest.raises(UserError, match="--data DIR is required with --bundle"):
        run_cli(["evaluate", "--bundle", str(bundle)])
    other = make_dataset(tmp_path / "other", num_users=41, num_items=20)
    with pytest.raises(UserError, match="not the dataset bundle"):
        run_cli(["evaluate", "--bundle", str(bundle), "--data", str(other)])

    # Resuming past the end trains one more epoch.
    assert run_cli([*argv, "--no-progress", "--resume", str(run), "--max-epochs", "3"]) == 0


def test_evaluate_bad_inputs(tmp_path: Path) -> None:
    with pytest.raises(UserError, match="not a run directory"):
        run_cli(["evaluate", "--run", str(tmp_path)])
    with pytest.raises(UserError, match="does not exist"):
        run_cli(["evaluate", "--checkpoint", str(tmp_path / "x.ckpt")])
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump({**CONFIG, "training": {"epochs": 0}}))
    with pytest.raises(UserError, match=r"TrainingConfig\.epochs must be >= 1"):
        run_cli(["train", "--config", str(bad), "--data", str(tmp_path)])


def test_train_refit(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    data = make_dataset(tmp_path / "data", num_users=40, num_items=20)
    cfg = tmp_path / "cfg.yaml"
    cfg.write_text(yaml.safe_dump(CONFIG))
    run = tmp_path / "run"
    argv = ["train", "--config", str(cfg), "--data", str(data), "--out", str(run), "--refit"]
    assert run_cli([*argv, "--no-progress"]) == 0
    out = capsys.readouterr().out
    assert "| model (test) |" in out and "| refit (test) |" in out
    refit = json.loads((run / "refit" / "metrics.json").read_text())
    best = json.loads((run / "model_config.json").read_text())["best_epoch"]
    assert refit["epochs"] == best + 1 and list(refit["test"]) == list(METRIC_KEYS)


def test_synthetic_fields_are_checked_when_the_config_is_read(tmp_path: Path) -> None:
    cfg = tmp_path / "cfg.yaml"
    data = tmp_path / "syn"
    for fields, message in [
        ({"num_users": 0}, r"cfg\.yaml: data\.synthetic: num_users must be >= 1"),
        ({"users": 5}, r"cfg\.yaml: data\.synthetic: unknown key 'users'"),
    ]:
        cfg.write_text(yaml.safe_dump({**CONFIG, "data": {"path": str(data), "synthetic": fields}}))
        with pytest.raises(UserError, match=message):
            run_cli(["train", "--config", str(cfg), "--out", str(tmp_path / "run")])
    assert not data.exists() and not (tmp_path / "run").exists()


def test_train_generates_a_missing_synthetic_dataset(tmp_path: Path) -> None:
    data = tmp_path / "syn"
    synthetic = {"num_users": 40, "num_items": 20, "mean_length": 10, "seed": 1}
    cfg = tmp_path / "cfg.yaml"
    cfg.write_text(yaml.safe_dump({**CONFIG, "data": {"path": str(data), "synthetic": synthetic}}))
    run = tmp_path / "run"
    argv = ["train", "--config", str(cfg), "--out", str(run), "--max-epochs", "1", "--no-progress"]
    assert run_cli(argv) == 0
    stats = json.loads((data / "stats.json").read_text())
    assert stats["num_users"] == 40 and stats["synth"]["seed"] == 1
    assert json.loads((run / "model_config.json").read_text())["data_dir"] == str(data.resolve())
    before = (data / "stats.json").stat().st_mtime_ns
    assert run_cli([*argv[:4], str(tmp_path / "run2"), *argv[5:]]) == 0  # present: reused
    assert (data / "stats.json").stat().st_mtime_ns == before


def test_print_config_shows_the_merged_config_and_trains_nothing(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from recsys.training.config import load_config

    (tmp_path / "base.yaml").write_text(yaml.safe_dump(CONFIG))
    child = tmp_path / "child.yaml"
    child.write_text("extends: base.yaml\ntraining: {epochs: 5}\ndata: {path: missing}\n")
    out = tmp_path / "run"
    assert run_cli(["train", "--config", str(child), "--out", str(out), "--print-config"]) == 0
    text = capsys.readouterr().out
    assert not out.exists()  # no run directory, no data read (data.path does not exist)
    header = [line for line in text.splitlines() if line.startswith("#")]
    assert str(child) in header[0] and str(tmp_path / "base.yaml") in header[-1]
    printed = yaml.safe_load(text)
    assert printed == load_config(child).to_dict()
    assert printed["name"] == "child" and printed["training"]["epochs"] == 5
    assert printed["training"]["batch_size"] == 16  # from the base
    assert "lr" in printed["training"]  # a default, filled in
    # what it prints is itself a config that runs the same
    again = tmp_path / "printed.yaml"
    again.write_text(text)
    assert load_config(again).to_dict() == printed
