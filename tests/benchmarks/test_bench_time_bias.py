"""benchmarks/bench_time_bias.py: the config variants and the per-seed gap summary."""

from __future__ import annotations

import pytest

from benchmarks.bench_time_bias import main, summarize, variant
from recsys.provenance import REPO_ROOT
from recsys.training.config import load_config


def test_variant_changes_only_time_bias_and_seed():
    base = load_config(REPO_ROOT / "configs/ml-100k-hstu-dot.yaml")
    assert base.model.encoder.time_bias is True
    off = variant(base, time_bias=False, seed=7)
    assert off.model.encoder.time_bias is False
    assert off.training.seed == 7
    back = variant(off, time_bias=True, seed=base.training.seed)
    assert back.to_dict() == base.to_dict()


def _run(time_bias: bool, seed: int, ndcg: float) -> dict:
    return {
        "time_bias": time_bias,
        "seed": seed,
        "valid": {"ndcg@10": ndcg, "hr@10": 2 * ndcg, "mrr": ndcg / 2},
    }


def test_summarize_pairs_runs_by_seed():
    runs = [_run(True, 1, 0.10), _run(False, 1, 0.08), _run(False, 2, 0.09), _run(True, 2, 0.08)]
    s = summarize(runs)["ndcg@10"]
    assert s["gap_by_seed"] == pytest.approx([0.02, -0.01])
    assert s["gap_mean"] == pytest.approx(0.005)
    assert s["on_mean"] == pytest.approx(0.09)
    assert s["off_mean"] == pytest.approx(0.085)
    assert s["seeds_on_ahead"] == 1
    assert summarize(runs)["hr@10"]["gap_mean"] == pytest.approx(0.01)


def test_skips_cleanly_without_data(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("RECSYS_DATA_DIR", str(tmp_path / "absent"))
    out = tmp_path / "out.json"
    assert main(["--data-cache", str(tmp_path / "cache"), "--out", str(out)]) == 0
    assert not out.exists()
    assert "skip ml-100k" in capsys.readouterr().out


def test_refuses_an_encoder_without_time_bias(tmp_path):
    config = tmp_path / "sasrec.yaml"
    config.write_text(
        "extends: " + str(REPO_ROOT / "configs/ml-100k-hstu-dot.yaml") + "\n"
        "model:\n  encoder: {type: sasrec, max_len: 50, dim: 32}\n"
    )
    with pytest.raises(SystemExit, match="has no time bias"):
        main(["--config", str(config), "--data-cache", str(tmp_path / "cache")])
