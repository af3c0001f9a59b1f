"""A short, hand-rolled training loop for retrieval benchmarks and tests.

Retrieval quality (recall of the approximate methods, how tight the bound of bounded-exact
is) depends on how the item and query components are spread, which only training shapes:
random weights would flatter or punish the methods arbitrarily. `recsys.training` is the
real trainer, but it validates and tests on the full catalog every run (full-ranking MoL
over 1M items for every user), so the retrieval benchmark trains its synthetic 1M-item
models with this loop instead: `steps` AdamW steps (SPEC section 1 settings) of
`SeqRecModel.training_loss` on the last `max_len` events of randomly drawn users' training
sequences (the dataset's split: validation and test targets held out).

Shapes: B users per step, T = max_len.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np
import torch

from recsys.batch import dataset_split
from recsys.dataset import SequenceDataset
from recsys.models.seqrec import NegativesConfig, SeqRecModel
from recsys.splits import padded_windows


@dataclass(frozen=True)
class QuickTrainConfig:
    """steps AdamW steps of batch_size users; lr, betas, weight decay as SPEC section 1."""

    steps: int = 200
    batch_size: int = 128
    lr: float = 1e-3
    weight_decay: float = 1e-3
    negatives: int = 128
    seed: int = 0

    def __post_init__(self) -> None:
        for name in ("steps", "batch_size", "negatives"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"QuickTrainConfig.{name} must be an integer >= 1, got {value!r}")
        if not self.lr > 0:
            raise ValueError(f"QuickTrainConfig.lr must be > 0, got {self.lr!r}")


def quick_train(
    model: SeqRecModel, data: SequenceDataset, config: QuickTrainConfig | None = None
) -> dict[str, float]:
    """Train `model` in place on `data`; returns {"first_loss", "last_loss", "seconds"}
    (last_loss = mean of the last 10 steps)."""
    c = config if config is not None else QuickTrainConfig()
    rng = np.random.default_rng(c.seed)
    torch.manual_seed(c.seed)
    max_len = int(model.config.encoder.max_len)
    split = dataset_split(data)
    lengths = split.train_lengths
    users = np.flatnonzero(lengths >= 2)  # at least one supervised position
    if len(users) == 0:
        raise ValueError("no user has a training sequence of at least 2 events")
    opt = torch.optim.AdamW(
        model.parameters(), lr=c.lr, betas=(0.9, 0.98), weight_decay=c.weight_decay
    )
    negatives = NegativesConfig(kind="shared", num=c.negatives)
    model.train()
    losses: list[float] = []
    start = time.perf_counter()
    for _ in range(c.steps):
        batch = rng.choice(users, size=min(c.batch_size, len(users)), replace=False)
        starts, ends = split.train_starts[batch], split.train_ends[batch]
        items = torch.from_numpy(padded_windows(data.item_ids, starts, ends, max_len)).long()
        times = None
        if data.timestamps is not None:
            times = torch.from_numpy(padded_windows(data.timestamps, starts, ends, max_len))
        loss, _ = model.training_loss(items, times, torch.from_numpy(batch).long(), negatives)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        losses.append(float(loss.detach()))
    model.eval()
    return {
        "first_loss": losses[0],
        "last_loss": float(np.mean(losses[-10:])),
        "seconds": time.perf_counter() - start,
    }
