"""benchmarks/bench_train_step.py: the per-part timing of a training step."""

from __future__ import annotations

import pytest
import torch

from benchmarks.bench_train_step import (
    ML1M_ITEMS,
    analytic_flops,
    make_batch,
    parts_row,
    time_parts,
)
from recsys.models.hstu import HSTUConfig
from recsys.models.seqrec import ModelConfig, SeqRecModel
from recsys.similarity.mol import MoLConfig


def test_parts_row_splits_the_step_and_sets_each_part_against_its_floor() -> None:
    flops = {"parts_forward": {"encoder": 100.0, "query": 20.0, "items": 10.0, "pairs": 70.0}}
    row = parts_row(10.0, {"encoder": 3.0, "optimizer": 1.0}, flops, peak=50.0)
    assert row["encoder"] == {"median_s": 3.0, "share_of_step": 0.3, "floor_s": 6.0, "ratio": 0.5}
    head = row["head"]  # the step less encoder and optimizer, against 3 x (20 + 10 + 70)
    assert head["median_s"] == pytest.approx(6.0) and head["floor_s"] == pytest.approx(6.0)
    assert head["ratio"] == pytest.approx(1.0) and head["share_of_step"] == pytest.approx(0.6)
    assert row["optimizer"]["ratio"] is None and row["optimizer"]["floor_s"] == 0.0


def test_time_parts_runs_the_encoder_and_optimizer_of_a_tiny_model() -> None:
    torch.manual_seed(0)
    cfg = ModelConfig(
        num_items=ML1M_ITEMS,  # make_batch draws ids from the whole ML-1M catalog
        encoder=HSTUConfig(max_len=8, dim=8, num_blocks=1, attn_dim=4, linear_dim=4),
        similarity=MoLConfig(p_q=2, p_x=2, d_p=4, mlp_hidden=8, gate_hidden=4),
    )
    model = SeqRecModel(cfg).train()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    before = [p.detach().clone() for p in model.parameters()]
    parts = time_parts(model, opt, make_batch(2, 8), bf16=False, steps=1)
    assert set(parts) == {"encoder", "optimizer"} and all(v > 0 for v in parts.values())
    after = list(model.parameters())
    assert any(not torch.equal(a, b) for a, b in zip(before, after, strict=True))  # it stepped
    assert analytic_flops(cfg, 2, 8, 4)["parts_forward"]["encoder"] > 0
