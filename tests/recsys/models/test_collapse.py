"""The MoL collapse on a sparse, long-tailed catalog, and what the residual MoL changes.

From the reference init, MoL's query components fall onto nearly one vector within a few
hundred steps and every user gets nearly the same top 10 (the Amazon Beauty symptom,
benchmarks/results/collapse-beauty-cpu.json). A residual MoL (docs/SPEC.md section 1.6a)
trained first as the dot product keeps its queries apart and its top-10 lists varied.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from dataset_helpers import make_long_tail_dataset

from recsys.dataset import load_dataset
from recsys.diagnostics import spread
from recsys.evaluation import EvalSet, collect_ranks
from recsys.metrics import compute_metrics
from recsys.models.sasrec import SASRecConfig
from recsys.models.seqrec import ModelConfig, NegativesConfig, SeqRecModel
from recsys.similarity.mol import MoLConfig
from recsys.training.data import SeqDataModule

DIM = 32
STEPS = 400
WARMUP = 200
SMALL_MOL = {"p_q": 2, "p_x": 2, "d_p": DIM, "user_id_components": 0, "mlp_hidden": 64}


def train_and_measure(data_dir: Path, similarity: MoLConfig, warmup: int) -> dict[str, float]:
    data = load_dataset(data_dir)
    encoder = SASRecConfig(max_len=20, dim=DIM, num_blocks=1, num_heads=1, dropout=0.2)
    torch.manual_seed(0)
    model = SeqRecModel(ModelConfig(data.num_items, encoder, similarity))
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3, betas=(0.9, 0.98), weight_decay=1e-3)
    loader = SeqDataModule(str(data_dir), 20, batch_size=32, seed=0, data=data)
    step = 0
    while step < STEPS:
        for batch in loader.train_dataloader():
            loss, _ = model.training_loss(
                batch.item_ids,
                batch.timestamps,
                batch.user_ids,
                NegativesConfig("shared", 64),
                batch.first_target,
                dot_warmup=step < warmup,
            )
            opt.zero_grad()
            loss.backward()
            opt.step()
            step += 1
            if step == STEPS:
                break
    model.eval()
    evalset = EvalSet(data, "valid", 20)
    users = evalset.collate(list(range(256)))
    out = spread(model, users.item_ids, None, None, torch.arange(1, data.num_items + 1))
    batches = (
        evalset.collate(list(range(i, min(i + 500, len(evalset)))))
        for i in range(0, len(evalset), 500)
    )
    ranks, top = collect_ranks(model, batches)
    out["coverage@10"] = compute_metrics(ranks, top, data.num_items)["coverage@10"]
    return out


@pytest.mark.slow
def test_reference_mol_collapses_and_residual_mol_with_dot_warmup_does_not(tmp_path: Path):
    data_dir = make_long_tail_dataset(tmp_path / "data")
    reference = train_and_measure(data_dir, MoLConfig(**SMALL_MOL), warmup=0)
    residual = train_and_measure(data_dir, MoLConfig(**SMALL_MOL, residual=True), WARMUP)
    # The collapse: queries nearly one vector, a few items in everyone's top 10.
    assert reference["qcomp_cos"] > 0.9
    assert reference["coverage@10"] < 0.05
    # The fix keeps them apart and the lists varied, with scores that still separate items.
    assert residual["qcomp_cos"] < reference["qcomp_cos"] - 0.05
    assert residual["coverage@10"] > 2 * reference["coverage@10"]
    assert residual["score_std"] > 1.5 * reference["score_std"]
