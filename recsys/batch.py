"""The batch format shared by training and evaluation: `SeqBatch` and how batches are cut.

A dataset directory's events are flat arrays (`recsys.dataset`); a batch is a right-padded
(B, T) window of each user's history (`batch_windows`), from the train/valid/test split the
dataset asks for (`dataset_split`). Training (`recsys.training.data`) and evaluation
(`recsys.evaluation.EvalSet`) both build `SeqBatch`es; neither depends on the other for them.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np
from torch import Tensor

from recsys.dataset import SequenceDataset
from recsys.errors import UserError
from recsys.splits import Split, padded_windows, split_from_stats

SplitName = Literal["valid", "test"]
SPLITS: tuple[SplitName, ...] = ("valid", "test")


@dataclass
class SeqBatch:
    """A right-padded batch of user histories (training or evaluation).

    item_ids (B, T) long, 0 = padding; timestamps (B, T) long or None; user_ids (B,) long
    (dense dataset user ids); targets (B,) long or None (training); seen (B, S) long, 0-padded,
    the whole history for the seen-item filter, or None (training); index (B,) long positions
    of the queries in their EvalSet, or None (training); first_target (B,) long or None
    (training with a window stride): the first window position (>= 1) whose event is a
    supervised target; None = every position >= 1.
    """

    item_ids: Tensor
    timestamps: Tensor | None
    user_ids: Tensor
    targets: Tensor | None = None
    seen: Tensor | None = None
    index: Tensor | None = None
    first_target: Tensor | None = None


def dataset_split(data: SequenceDataset) -> Split:
    """The train/valid/test split the dataset's stats.json asks for (leave-one-out default)."""
    try:
        return split_from_stats(data.stats, data.item_ids, data.offsets, data.timestamps)
    except (ValueError, KeyError) as e:
        raise UserError(f"dataset split ({data.stats.get('split')!r}): {e}") from e


def batch_windows(
    values: np.ndarray, starts: np.ndarray, ends: np.ndarray, max_len: int
) -> np.ndarray:
    """(B, W) int64: the last <= max_len values of each range, right-padded with 0, where
    W = min(max_len, longest range) (>= 1): batches are only as wide as they need to be."""
    width = int(min(max_len, max(int((ends - starts).max(initial=0)), 1)))
    return padded_windows(values, starts, ends, width).astype(np.int64)


__all__ = ["SPLITS", "SeqBatch", "SplitName", "batch_windows", "dataset_split"]
