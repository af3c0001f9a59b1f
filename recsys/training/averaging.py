"""Weight averaging for a training run: `training.ema_decay`.

With `ema_decay: d` the run keeps an exponential moving average of every parameter,
`avg <- d * avg + (1 - d) * weights` after each optimiser step (the first step copies the
weights). Lightning's `WeightAveraging` callback does the bookkeeping: per-epoch validation,
checkpoint selection and the checkpoints' `state_dict` (so the selected, exported model)
use the average, the raw weights keep training, and `--resume` restores both. Buffers are
not averaged: the model's are constant integer tables (HSTU's relative-position index).

`RawValidation` also ranks the validation queries with the raw weights at each validation
and logs them as `valid_raw/<metric>`, so one run shows what the average bought along its
own trajectory (single device only; under DDP it logs nothing).
"""

from __future__ import annotations

import lightning as L
import numpy as np
import torch
from lightning.pytorch.callbacks import Callback, WeightAveraging
from torch.optim.swa_utils import get_ema_multi_avg_fn

from recsys.evaluation import rank_batch
from recsys.metrics import compute_metrics
from recsys.training.module import SeqRecModule

RAW_PREFIX = "valid_raw"


class RawValidation(Callback):
    """Logs `valid_raw/<metric>`: the validation queries ranked with the raw weights.

    Must come after the averaging callback in the trainer's list: Lightning calls the
    callbacks' `on_validation_epoch_end` in list order, and the averaging callback puts the
    raw weights back in its own.
    """

    def on_validation_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.sanity_checking or trainer.world_size > 1:
            return
        loader = trainer.val_dataloaders
        if isinstance(loader, list | tuple):
            loader = loader[0] if loader else None
        if loader is None:
            return
        if not isinstance(pl_module, SeqRecModule):
            raise TypeError(f"RawValidation ranks a SeqRecModule's model, got {type(pl_module)}")
        model = pl_module.model
        bf16 = pl_module.training_config.eval_bf16
        users, ranks, top = [], [], []
        with torch.no_grad():
            for batch in loader:
                batch = trainer.strategy.batch_to_device(batch)
                r, t = rank_batch(model, batch, bf16=bf16)
                users.append(batch.user_ids.cpu().numpy())
                ranks.append(r.cpu().numpy())
                top.append(t.cpu().numpy())
        if not ranks:
            return
        _, first = np.unique(np.concatenate(users), return_index=True)
        metrics = compute_metrics(
            np.concatenate(ranks)[first], np.concatenate(top)[first], model.num_items
        )
        for name, value in metrics.items():
            pl_module.log(f"{RAW_PREFIX}/{name}", value)


def averaging_callbacks(ema_decay: float | None, log_raw: bool = True) -> list[Callback]:
    """The callbacks of `training.ema_decay` (none when it is None), in the order they need."""
    if ema_decay is None:
        return []
    ema = WeightAveraging(use_buffers=False, multi_avg_fn=get_ema_multi_avg_fn(ema_decay))
    return [ema, RawValidation()] if log_raw else [ema]
