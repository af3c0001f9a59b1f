"""`training.ema_decay`: the averaged weights are what is validated, selected and saved."""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Any

import lightning as L
import pytest
import torch
from dataset_helpers import make_dataset
from lightning.pytorch.callbacks import Callback

from recsys.errors import UserError
from recsys.training.run import train

from .test_train import tiny_config


def _ckpt(path: Path) -> dict[str, Any]:
    return torch.load(path, map_location="cpu", weights_only=True)


def _valid_rows(run: Path) -> list[dict[str, str]]:
    rows = []
    for log in sorted(run.glob("logs/version_*/metrics.csv")):
        rows += [r for r in csv.DictReader(log.open()) if r.get("valid/ndcg@10")]
    return rows


class RecordWeights(Callback):
    """The raw parameters after every optimiser step (the slow reference's input)."""

    def __init__(self) -> None:
        self.steps: list[dict[str, torch.Tensor]] = []

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, *_: Any) -> None:
        self.steps.append({k: p.detach().clone() for k, p in pl_module.named_parameters()})


def test_the_checkpoints_hold_the_moving_average_of_every_step(tmp_path: Path) -> None:
    data_dir = make_dataset(tmp_path / "data", num_users=64, num_items=30)
    record = RecordWeights()
    run = tmp_path / "run"
    train(
        tiny_config("hstu", "mol", epochs=2, ema_decay=0.6),
        data_dir,
        run,
        progress_bar=False,
        callbacks=[record],
    )
    assert len(record.steps) == 8  # 2 epochs x 64 users / batch 16
    average = dict(record.steps[0])  # the first update copies the weights
    for step in record.steps[1:]:
        average = {k: 0.6 * average[k] + 0.4 * step[k] for k in average}
    last = _ckpt(run / "checkpoints" / "last.ckpt")
    for name, value in average.items():
        torch.testing.assert_close(last["state_dict"][name], value, rtol=1e-5, atol=1e-6)
        # the raw weights train on, and are kept to resume from
        torch.testing.assert_close(last["current_model_state"][name], record.steps[-1][name])
    # validation ranks with both: the average (selection) and the raw weights
    rows = _valid_rows(run)
    assert len(rows) == 2 and all(r["valid_raw/ndcg@10"] for r in rows)


def test_decay_zero_validates_the_raw_weights(tmp_path: Path) -> None:
    data_dir = make_dataset(tmp_path / "data", num_users=64, num_items=30)
    run = tmp_path / "run"
    train(tiny_config("sasrec", "dot", epochs=2, ema_decay=0.0), data_dir, run, progress_bar=False)
    rows = _valid_rows(run)
    assert len(rows) == 2
    for row in rows:
        for key in ("hr@10", "ndcg@10", "mrr"):
            assert float(row[f"valid/{key}"]) == pytest.approx(float(row[f"valid_raw/{key}"]))


def test_resume_restores_the_average(tmp_path: Path) -> None:
    data_dir = make_dataset(tmp_path / "data", num_users=64, num_items=30)
    config = tiny_config("sasrec", "dot", epochs=3, ema_decay=0.7)
    straight, resumed = tmp_path / "straight", tmp_path / "resumed"
    train(config, data_dir, straight, progress_bar=False)
    train(config, data_dir, resumed, max_epochs=2, progress_bar=False)
    train(config, data_dir, resumed, resume=resumed, progress_bar=False)
    after = _ckpt(resumed / "checkpoints" / "last.ckpt")
    reference = _ckpt(straight / "checkpoints" / "last.ckpt")
    assert after["global_step"] == reference["global_step"] == 12
    for key in ("state_dict", "current_model_state"):
        for name, value in reference[key].items():
            torch.testing.assert_close(after[key][name], value, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("decay", [1.0, -0.1])
def test_ema_decay_outside_0_1_is_refused(decay: float) -> None:
    with pytest.raises(UserError, match="ema_decay"):
        tiny_config(ema_decay=decay)
