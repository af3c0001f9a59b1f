"""The one LightningModule: SeqRecModel + AdamW + full-ranking validation.

The model maths lives in `recsys.models` (a plain nn.Module); this file only wires it into
Lightning: the training step calls `training_loss` and logs its parts; validation and test
share one step that ranks the whole catalog (`recsys.evaluation.rank_batch`) and, at the end
of the epoch, gathers the ranks of every device and logs `valid/<metric>` (or `test/...`)
with the key names of `recsys.metrics.METRIC_KEYS`. The first validation batch also logs
`valid/spread/*` (`recsys.diagnostics`: are queries, items and scores collapsing?).

Optimiser (SPEC section 1): AdamW, lr 1e-3, betas (0.9, 0.98), weight decay 1e-3 on every
parameter, no warm-up, no schedule (the values come from TrainingConfig). Optionally a
per-step warm-up and a linear or cosine decay to 0 over the run (`lr_factor`), and a
separate lr for the embedding tables (`param_groups`).

Randomness: at the start of every training epoch the torch/numpy generators are reseeded
from (seed, epoch, rank), so dropout and negative sampling of epoch e are the same whether
the run was interrupted before e or not: a resumed run replays an uninterrupted one.
"""

from __future__ import annotations

import math
from typing import Any

import lightning as L
import numpy as np
import torch
from torch import Tensor, nn

from recsys.batch import SeqBatch
from recsys.diagnostics import spread
from recsys.evaluation import rank_batch
from recsys.metrics import compute_metrics
from recsys.models.seqrec import ModelConfig, SeqRecModel
from recsys.schema import build_dataclass
from recsys.similarity.mol import MoLSimilarity
from recsys.training.config import TrainingConfig

SPREAD_ITEMS = 1000


def epoch_seed(seed: int, epoch: int, rank: int) -> int:
    """A 64-bit seed that is a pure function of (seed, epoch, rank)."""
    return int(np.random.SeedSequence((seed, epoch, rank)).generate_state(1, np.uint64)[0])


def lr_factor(step: int, total: int, warmup: int, schedule: str) -> float:
    """Multiplier of the base lr at optimiser step `step` (0-based) of `total`: linear
    warm-up over the first `warmup` steps, then `schedule` (constant, or a linear or cosine
    decay that reaches 0 at step `total`)."""
    if step < warmup:
        return (step + 1) / warmup
    if schedule == "constant":
        return 1.0
    progress = min(1.0, (step - warmup) / max(1, total - warmup))
    if schedule == "linear":
        return 1.0 - progress
    return 0.5 * (1.0 + math.cos(math.pi * progress))


def param_groups(model: nn.Module, lr: float, embedding_lr_scale: float) -> list[dict[str, Any]]:
    """AdamW parameter groups: one group of every parameter (scale 1, the SPEC optimiser and
    the layout of existing checkpoints), or the weights of every nn.Embedding (items,
    positions, MoL user ids) at lr x scale and the rest at lr."""
    params = list(model.parameters())
    if embedding_lr_scale == 1.0:
        return [{"params": params}]
    tables = {id(m.weight) for m in model.modules() if isinstance(m, nn.Embedding)}
    return [
        {"params": [p for p in params if id(p) in tables], "lr": lr * embedding_lr_scale},
        {"params": [p for p in params if id(p) not in tables]},
    ]


class SeqRecModule(L.LightningModule):
    """Wraps `SeqRecModel`. Hyper-parameters are plain dicts (ModelConfig.to_dict() and the
    training section), so checkpoints load with `torch.load(weights_only=True)`."""

    def __init__(self, model_config: dict[str, Any], training: dict[str, Any]) -> None:
        super().__init__()
        self.save_hyperparameters()
        self.model_config = ModelConfig.from_dict(model_config)
        self.training_config: TrainingConfig = build_dataclass(TrainingConfig, training, "training")
        self.model = SeqRecModel(self.model_config)
        if isinstance(self.model.similarity, MoLSimilarity):
            self.model.similarity.compile_kernel = self.training_config.compile_mol
        self._eval_outputs: list[tuple[Tensor, Tensor, Tensor]] = []

    # -- training ----------------------------------------------------------------------

    def on_train_epoch_start(self) -> None:
        seed = epoch_seed(self.training_config.seed, self.current_epoch, self.global_rank)
        torch.manual_seed(seed)
        np.random.seed(seed % 2**32)

    def training_step(self, batch: SeqBatch, batch_idx: int) -> Tensor:
        loss, logs = self.model.training_loss(
            batch.item_ids,
            batch.timestamps,
            batch.user_ids,
            self.training_config.negatives,
            batch.first_target,
            dot_warmup=self.current_epoch < self.training_config.dot_warmup_epochs,
            dot_aux_weight=self.training_config.dot_aux_weight,
        )
        size = batch.item_ids.shape[0]
        self.log("train/loss", loss.detach(), prog_bar=True, batch_size=size)
        for name, value in logs.items():
            if name != "loss":
                self.log(f"train/{name}", value.float(), batch_size=size)
        return loss

    def configure_optimizers(self) -> Any:
        t = self.training_config
        optimizer = torch.optim.AdamW(
            param_groups(self, t.lr, t.embedding_lr_scale),
            lr=t.lr,
            betas=t.betas,
            weight_decay=t.weight_decay,
        )
        if t.lr_schedule == "constant" and t.warmup_steps == 0:
            return optimizer
        # Over the configured epochs, also when this fit stops earlier (max_epochs override):
        # a run cut short and resumed follows the same schedule as an uninterrupted one.
        fit_epochs = max(1, self.trainer.max_epochs or t.epochs)  # run.py always sets it
        per_epoch = self.trainer.estimated_stepping_batches / fit_epochs
        total = round(per_epoch * t.epochs)
        scheduler = torch.optim.lr_scheduler.LambdaLR(
            optimizer, lambda step: lr_factor(step, total, t.warmup_steps, t.lr_schedule)
        )
        return {
            "optimizer": optimizer,
            "lr_scheduler": {"scheduler": scheduler, "interval": "step"},
        }

    # -- validation / test: one shared step -------------------------------------------

    def _eval_step(self, batch: SeqBatch) -> None:
        ranks, top = rank_batch(self.model, batch, bf16=self.training_config.eval_bf16)
        self._eval_outputs.append((batch.user_ids, ranks, top))

    def _log_spread(self, batch: SeqBatch) -> None:
        """`valid/spread/*` (recsys.diagnostics) of this batch's users against a fixed
        sample of SPREAD_ITEMS catalog items: is the model collapsing?"""
        if batch.item_ids.shape[0] < 2:
            return
        n = self.model.num_items
        gen = torch.Generator().manual_seed(0)
        items = torch.randperm(n, generator=gen)[: min(n, SPREAD_ITEMS)] + 1
        values = spread(
            self.model,
            batch.item_ids,
            batch.timestamps,
            batch.user_ids,
            items.to(batch.item_ids.device),
        )
        sync = self.trainer.world_size > 1
        for name, value in values.items():
            self.log(f"valid/spread/{name}", value, sync_dist=sync, batch_size=1)

    def _eval_epoch_end(self, split: str) -> None:
        outputs, self._eval_outputs = self._eval_outputs, []
        if not outputs:
            return
        users, ranks, top = (torch.cat(parts) for parts in zip(*outputs, strict=True))
        if self.trainer.world_size > 1:
            # Every rank holds the same number of queries (wrap-around padding): gather,
            # then drop the padding duplicates by user id.
            users, ranks, top = (self._gather(t) for t in (users, ranks, top))
        users_np = users.cpu().numpy()
        _, first = np.unique(users_np, return_index=True)
        metrics = compute_metrics(
            ranks.cpu().numpy()[first], top.cpu().numpy()[first], self.model.num_items
        )
        # Every rank now holds the same values; sync_dist only silences Lightning's warning
        # (the mean of equal values is the value).
        sync = self.trainer.world_size > 1
        for name, value in metrics.items():
            self.log(
                f"{split}/{name}", value, prog_bar=name in ("hr@10", "ndcg@10"), sync_dist=sync
            )

    def _gather(self, t: Tensor) -> Tensor:
        """(n, ...) on every rank -> (world_size * n, ...) on every rank."""
        gathered = self.all_gather(t)
        assert isinstance(gathered, Tensor)
        return gathered.flatten(0, 1)

    def on_validation_epoch_start(self) -> None:
        self._eval_outputs = []

    def validation_step(self, batch: SeqBatch, batch_idx: int) -> None:
        self._eval_step(batch)
        if batch_idx == 0:
            self._log_spread(batch)

    def on_validation_epoch_end(self) -> None:
        self._eval_epoch_end("valid")

    def on_test_epoch_start(self) -> None:
        self._eval_outputs = []

    def test_step(self, batch: SeqBatch, batch_idx: int) -> None:
        self._eval_step(batch)

    def on_test_epoch_end(self) -> None:
        self._eval_epoch_end("test")
