"""Full-ranking leave-one-out evaluation of a scorer (SPEC section 4).

For every user with at least 3 events, the validation query is "history = all events before
the second-to-last, target = the second-to-last" and the test query is "history = all
events before the last, target = the last" (`recsys.splits`). The model sees the most
recent `max_len` events of the history; the seen-item filter uses the *whole* history
(an item the user interacted with is never recommended again, however long ago).

Every catalog item is scored (`score_all(item_ids, timestamps, user_ids) -> (B, N+1)`), the
history is masked to -inf, and the target's rank follows the tie rule of `recsys.metrics`
(rank = 1 + number of items scoring strictly higher). A popularity baseline (item counts
over the training part only, so neither the validation nor the test targets leak into it)
speaks the same `score_all` interface and is measured by the same code.

Scores are computed in fp32 by default. bf16 is optional and faster on bf16-capable
hardware, but it rounds scores to 8 mantissa bits: near-ties become exact ties, which the
optimistic tie rule resolves in the target's favour, so bf16 numbers can read slightly high.

Shapes: B users per batch, T history length (<= max_len), S whole-history length,
N catalog size (ids 1..N, 0 = padding).
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Protocol

import numpy as np
import torch
from torch import Tensor, nn

from recsys.atomic import atomic_write_text
from recsys.batch import SPLITS, SeqBatch, SplitName, batch_windows, dataset_split
from recsys.dataset import SequenceDataset
from recsys.metrics import METRIC_KEYS, compute_metrics, mask_seen, ranks_from_scores, top_k_items
from recsys.splits import Split

TABLE_KEYS = (
    "hr@1",
    "hr@10",
    "hr@50",
    "hr@200",
    "ndcg@10",
    "ndcg@50",
    "ndcg@200",
    "mrr",
    "coverage@10",
)


class Scorer(Protocol):
    """Anything that scores the whole catalog for a batch of histories (SeqRecModel, popularity)."""

    def score_all(
        self, item_ids: Tensor, timestamps: Tensor | None, user_ids: Tensor | None
    ) -> Tensor: ...


class EvalSet(torch.utils.data.Dataset):
    """The evaluation queries of one split: one item per evaluated user, a `SeqBatch` per batch.

    The model input is the most recent `max_len` history events; `seen` is the whole history.
    """

    def __init__(
        self, data: SequenceDataset, split: SplitName, max_len: int, splits: Split | None = None
    ) -> None:
        if split not in SPLITS:
            raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
        if max_len < 1:
            raise ValueError(f"max_len must be >= 1, got {max_len}")
        splits = splits if splits is not None else dataset_split(data)
        cases = splits.valid if split == "valid" else splits.test
        self.data = data
        self.split = split
        self.max_len = max_len
        self.cases = cases

    def __len__(self) -> int:
        return len(self.cases)

    def __getitem__(self, i: int) -> int:
        return i  # batches are assembled in `collate`, vectorised over the flat arrays

    def collate(self, idx: list[int]) -> SeqBatch:
        """Indices into this set -> SeqBatch with targets and whole-history `seen`."""
        d, c = self.data, self.cases
        ix = np.asarray(idx, dtype=np.int64)
        starts, ends = c.starts[ix], c.ends[ix]
        times = None
        if d.timestamps is not None:
            times = torch.from_numpy(batch_windows(d.timestamps, starts, ends, self.max_len))
        longest = int((ends - starts).max(initial=1))
        return SeqBatch(
            item_ids=torch.from_numpy(batch_windows(d.item_ids, starts, ends, self.max_len)),
            timestamps=times,
            user_ids=torch.from_numpy(c.users[ix].astype(np.int64)),
            targets=torch.from_numpy(c.targets[ix].astype(np.int64)),
            seen=torch.from_numpy(batch_windows(d.item_ids, starts, ends, longest)),
            index=torch.from_numpy(ix),
        )

    def length_order(self) -> np.ndarray:
        """(M,) positions sorted by model-input length, longest first: batches of similar
        lengths carry little padding (the encoder's cost grows with the padded width, the
        attention's quadratically), and the first batch is the largest (memory peaks early)."""
        lengths = np.minimum(self.cases.ends - self.cases.starts, self.max_len)
        return np.argsort(-lengths, kind="stable")

    def loader(self, batch_size: int, num_workers: int = 0) -> torch.utils.data.DataLoader:
        """DataLoader of SeqBatch in `length_order` (results are put back in EvalSet order
        by `collect_ranks`, through `SeqBatch.index`)."""
        return torch.utils.data.DataLoader(
            self,
            batch_size=batch_size,
            sampler=self.length_order().tolist(),
            collate_fn=self.collate,
            num_workers=num_workers,
        )


def training_item_counts(data: SequenceDataset, splits: Split | None = None) -> np.ndarray:
    """(N+1,) interactions per item over the training part only (so neither validation nor
    test targets leak into the popularity baseline); index 0 = padding = 0."""
    splits = splits if splits is not None else dataset_split(data)
    lengths = splits.train_lengths
    flat = np.repeat(splits.train_starts, lengths) + (
        np.arange(int(lengths.sum())) - np.repeat(np.cumsum(lengths) - lengths, lengths)
    )
    counts = np.bincount(data.item_ids[flat], minlength=data.num_items + 1).astype(np.int64)
    counts[0] = 0
    return counts


class PopularityScorer(nn.Module):
    """Scores every item by its training-part interaction count, the same for every user."""

    def __init__(self, counts: np.ndarray | Tensor) -> None:
        super().__init__()
        self.counts: Tensor
        self.register_buffer("counts", torch.as_tensor(counts, dtype=torch.float32))

    def score_all(
        self, item_ids: Tensor, timestamps: Tensor | None, user_ids: Tensor | None
    ) -> Tensor:
        """item_ids (B, T) -> (B, N+1) counts (column 0 = -inf, padding)."""
        scores = self.counts.to(item_ids.device).expand(item_ids.shape[0], -1).clone()
        scores[:, 0] = float("-inf")
        return scores


def _to_device(batch: SeqBatch, device: torch.device) -> SeqBatch:
    def move(t: Tensor | None) -> Tensor | None:
        return None if t is None else t.to(device, non_blocking=True)

    return SeqBatch(
        item_ids=batch.item_ids.to(device, non_blocking=True),
        timestamps=move(batch.timestamps),
        user_ids=batch.user_ids.to(device, non_blocking=True),
        targets=move(batch.targets),
        seen=move(batch.seen),
        index=batch.index,
    )


def rank_batch(scorer: Scorer, batch: SeqBatch, bf16: bool = False) -> tuple[Tensor, Tensor]:
    """Score, mask the seen items, rank: -> (ranks (B,) long, top10 (B, 10) long).

    Autocast is set explicitly (on for bf16, off otherwise) so that evaluation inside a
    bf16-mixed training run still scores in fp32 unless asked.
    """
    assert batch.targets is not None and batch.seen is not None
    device_type = batch.item_ids.device.type
    with torch.autocast(device_type, dtype=torch.bfloat16, enabled=bf16):
        scores = scorer.score_all(batch.item_ids, batch.timestamps, batch.user_ids)
    scores = scores.float()
    mask_seen(scores, batch.seen, batch.targets)
    return ranks_from_scores(scores, batch.targets), top_k_items(scores)


@torch.inference_mode()
def collect_ranks(
    scorer: Scorer,
    batches: Iterable[SeqBatch],
    device: torch.device | str = "cpu",
    bf16: bool = False,
) -> tuple[np.ndarray, np.ndarray]:
    """Rank every batch -> (ranks (M,) int64, top10 (M, 10) int64), in EvalSet order when
    the batches carry their positions (`SeqBatch.index`), in iteration order otherwise."""
    device = torch.device(device)
    ranks, tops, index = [], [], []
    for batch in batches:
        r, t = rank_batch(scorer, _to_device(batch, device), bf16)
        ranks.append(r.cpu())
        tops.append(t.cpu())
        if batch.index is not None:
            index.append(batch.index)
    if not ranks:
        return np.zeros(0, dtype=np.int64), np.zeros((0, 10), dtype=np.int64)
    r_all, t_all = torch.cat(ranks).numpy(), torch.cat(tops).numpy()
    if len(index) == len(ranks):
        order = np.argsort(torch.cat(index).numpy(), kind="stable")
        r_all, t_all = r_all[order], t_all[order]
    return r_all, t_all


def evaluate(
    scorer: Scorer,
    data: SequenceDataset,
    split: SplitName,
    max_len: int,
    batch_size: int = 256,
    device: torch.device | str = "cpu",
    bf16: bool = False,
) -> dict[str, float]:
    """Full-ranking metrics of `scorer` on `split` (keys `recsys.metrics.METRIC_KEYS`).

    The scorer must already be on `device` and in eval mode (this function does not move
    modules: the caller owns placement).
    """
    evalset = EvalSet(data, split, max_len)
    ranks, top10 = collect_ranks(scorer, evalset.loader(batch_size), device, bf16)
    return compute_metrics(ranks, top10, data.num_items)


def evaluate_popularity(
    data: SequenceDataset, split: SplitName, batch_size: int = 1024
) -> dict[str, float]:
    """The popularity baseline on `split`, measured by the same code as the models."""
    scorer = PopularityScorer(training_item_counts(data))
    return evaluate(scorer, data, split, max_len=1, batch_size=batch_size)


GUARD_METRICS = ("hr@10", "ndcg@10")


def popularity_warnings(model: Mapping[str, float], popularity: Mapping[str, float]) -> list[str]:
    """A warning (naming both figures) for each of GUARD_METRICS on which the model does not
    beat the popularity baseline; both dicts are metrics of the same split."""
    return [
        f"the model does not beat popularity on validation {key}: "
        f"{model[key]:.4f} vs popularity {popularity[key]:.4f}"
        for key in GUARD_METRICS
        if not model[key] > popularity[key]
    ]


def format_table(
    results: Mapping[str, Mapping[str, float]], keys: Iterable[str] = TABLE_KEYS
) -> str:
    """Markdown table: one row per scorer name, one column per metric (4 decimals)."""
    keys = [k for k in keys if any(k in m for m in results.values())]
    lines = ["| model | " + " | ".join(keys) + " |", "|---|" + "---|" * len(keys)]
    for name, metrics in results.items():
        cells = [_fmt(metrics.get(k)) for k in keys]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _fmt(value: float | None) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return ""
    return f"{value:.4f}"


def write_json(path: str | Path, payload: Mapping[str, object]) -> None:
    """Write results as indented JSON, atomically."""
    atomic_write_text(path, json.dumps(payload, indent=2, sort_keys=False) + "\n")


__all__ = [
    "METRIC_KEYS",
    "EvalSet",
    "PopularityScorer",
    "collect_ranks",
    "evaluate",
    "evaluate_popularity",
    "format_table",
    "rank_batch",
    "training_item_counts",
    "write_json",
]
