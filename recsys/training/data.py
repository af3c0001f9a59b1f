"""LightningDataModule over a dataset directory: training windows and evaluation queries.

Training (autoregressive, SPEC section 2): each user's training sequence is the training
range of `recsys.splits` (leave-one-out: every event but the last two; users with fewer than
3 events keep everything); users with fewer than 2 training events have no next-item target
and are skipped. A step sees a window of at most `max_len` consecutive
events (the encoder's limit): `SeqRecModel.training_loss` encodes the window and supervises
each position by the next event of the window. Which windows (`train_window`):
- `last`: the most recent `max_len` events (the authors' choice; same every epoch). Events
  older than that are never a target (on ML-1M with max_len 200: 646k of 982k targets);
- `random`: a window drawn uniformly per (user, epoch) from the training sequence;
- `all`: the whole training sequence, cut from its end into windows of `max_len` events
  that overlap by one event, so that every training target is supervised exactly once per
  epoch (the same targets as a RecBole epoch); a window's first events see no older context.
  With `train_stride` s < max_len - 1, windows end every s events and each supervises only
  its last s targets (`SeqBatch.first_target`): still every target once, and each has at
  least max_len - s events of context unless it is near its user's start (a RecBole prefix
  sees up to max_len; so does every query at evaluation). About (max_len - 1) / s times the
  windows on long histories.

Batches (`training.batching`): `random` draws batch_size windows at random; `length`
(`LengthBatchSampler`) groups windows of about the same length, so the encoder does not
run over padding (random batches of long and short windows are mostly as wide as their
longest; benchmarks/results/epoch-ml-1m-cpu.json has the positions per step of both).

Batches are `recsys.batch.SeqBatch`; validation / test queries are `recsys.evaluation.EvalSet`
(full ranking, seen items masked).

Determinism and resuming: the sampler's order and the random windows are pure functions of
(seed, epoch, rank), so a run resumed from a checkpoint replays exactly the batches an
uninterrupted run would have seen. Multi-device runs shard both the training and the
evaluation users here (the trainer runs with `use_distributed_sampler=False`): every rank gets
the same number of batches, as DDP requires.

Shapes: B users per batch, T <= max_len window length.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from pathlib import Path

import lightning as L
import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, Sampler

from recsys.batch import SeqBatch, SplitName, batch_windows, dataset_split
from recsys.dataset import SequenceDataset, load_dataset
from recsys.evaluation import EvalSet
from recsys.splits import Split, refit_split

TRAIN_WINDOWS = ("last", "random", "all")


def tile_windows(
    users: np.ndarray,
    starts: np.ndarray,
    ends: np.ndarray,
    width: int,
    stride: int | None = None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Cut each range [start, end) (length >= 2) from its end into windows of `width`
    events whose ends are `stride` (default width - 1) events apart, so that the windows'
    last `stride` targets (a window's target: any event but its first) cover the range's
    events after its first exactly once. -> (users, starts, ends) per window, users in
    order, the windows of a user from the most recent back; a window's start is left at its
    user's start (the batch keeps the last `width` events)."""
    step = width - 1 if stride is None else stride
    if not 1 <= step <= width - 1:
        raise ValueError(f"stride must be in [1, {width - 1}], got {step}")
    # Windows per range: ends e, e - step, ... while end - start >= 2.
    counts = (ends - starts - 2) // step + 1
    row = np.repeat(np.arange(len(users)), counts)
    first = np.cumsum(counts) - counts
    back = np.arange(len(row)) - first[row]  # 0 for the most recent window of a user
    return users[row], starts[row], ends[row] - back * step


class TrainSet(Dataset):
    """Training windows. Keys are `epoch * len(self) + i` (see `EpochSampler`), so that the
    random window of item i depends on the epoch without any state in worker processes."""

    def __init__(
        self,
        data: SequenceDataset,
        max_len: int,
        window: str = "last",
        seed: int = 0,
        splits: Split | None = None,
        stride: int | None = None,
    ) -> None:
        if stride is not None and window != "all":
            raise ValueError(f"stride applies to window 'all' only, got window {window!r}")
        if window not in TRAIN_WINDOWS:
            raise ValueError(f"window must be one of {list(TRAIN_WINDOWS)}, got {window!r}")
        if max_len < 2:
            raise ValueError(f"max_len must be >= 2 to have a training target, got {max_len}")
        splits = splits if splits is not None else dataset_split(data)
        self.data = data
        self.width = max_len
        self.window = window
        self.seed = seed
        self.stride = stride
        # One row per user, or (window `all`) one per window; a row = (user, start, end).
        self.users = np.flatnonzero(splits.train_lengths >= 2).astype(np.int64)
        self.starts = splits.train_starts[self.users]
        self.ends = splits.train_ends[self.users]
        if window == "all":
            self.users, self.starts, self.ends = tile_windows(
                self.users, self.starts, self.ends, max_len, stride
            )

    def __len__(self) -> int:
        return len(self.users)

    def __getitem__(self, key: int | list[int]) -> int | list[int]:
        return key  # batches are assembled in `collate` (a key list: a whole batch)

    def targets(self) -> np.ndarray:
        """(len(self),) the number of targets each window supervises (its length - 1, or
        `stride` of them), the same every epoch (a `random` window keeps its length)."""
        lengths = np.minimum(self.ends - self.starts, self.width)
        targets = lengths - 1
        return targets if self.stride is None else np.minimum(targets, self.stride)

    def window_ends(self, keys: np.ndarray) -> np.ndarray:
        """Flat end (exclusive) of each key's window."""
        n = len(self)
        idx, epoch = keys % n, keys // n
        if self.window in ("last", "all"):
            return self.ends[idx]
        slack = np.maximum(self.ends[idx] - self.starts[idx] - self.width, 0)
        # One generator per (seed, epoch, user): reproducible under any batching or sharding.
        back = [
            np.random.default_rng((self.seed, int(e), int(u))).integers(0, s + 1)
            for e, u, s in zip(epoch, self.users[idx], slack, strict=True)
        ]
        return self.ends[idx] - np.asarray(back, dtype=np.int64)

    def collate(self, keys: list[int]) -> SeqBatch:
        """Keys -> right-padded SeqBatch (item_ids (B, T), timestamps, user_ids)."""
        keys_arr = np.asarray(keys, dtype=np.int64)
        idx = keys_arr % len(self)
        starts, ends = self.starts[idx], self.window_ends(keys_arr)
        d = self.data
        times = None
        if d.timestamps is not None:
            times = torch.from_numpy(batch_windows(d.timestamps, starts, ends, self.width))
        first_target = None
        if self.stride is not None:  # a window supervises only its last `stride` targets
            lengths = np.minimum(ends - starts, self.width)
            first_target = torch.from_numpy(np.maximum(lengths - self.stride, 1))
        return SeqBatch(
            item_ids=torch.from_numpy(batch_windows(d.item_ids, starts, ends, self.width)),
            timestamps=times,
            user_ids=torch.from_numpy(self.users[idx]),
            first_target=first_target,
        )


def rank_share(n: int, rank: int, world_size: int) -> np.ndarray:
    """Positions in [0, n) rank `rank` of `world_size` takes: every world_size-th, wrapping
    around so that every rank gets ceil(n / world_size) of them (DDP needs equal counts)."""
    per_rank = math.ceil(n / world_size)
    return np.arange(rank, per_rank * world_size, world_size) % n


class EpochSampler(Sampler[int]):
    """Shuffled (or ordered) keys for one rank: a pure function of (seed, epoch, rank).

    The n items are permuted with a generator seeded by (seed, epoch) (or, unshuffled, taken
    in the given `order`), padded by wrapping around to a multiple of `world_size`, and rank
    r takes every world_size-th key from r.
    Training keys carry the epoch (`epoch * n + i`, see TrainSet); `tag_epoch=False` yields
    plain indices (evaluation).
    """

    def __init__(
        self,
        n: int,
        seed: int = 0,
        shuffle: bool = True,
        rank: int = 0,
        world_size: int = 1,
        tag_epoch: bool = True,
        order: np.ndarray | None = None,
    ) -> None:
        if not 0 <= rank < world_size:
            raise ValueError(f"rank must lie in [0, world_size={world_size}), got {rank}")
        self.n, self.seed, self.shuffle = n, seed, shuffle
        self.rank, self.world_size, self.tag_epoch = rank, world_size, tag_epoch
        self.order = order
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        """Called by Lightning before every training epoch."""
        self.epoch = epoch

    def __len__(self) -> int:
        return math.ceil(self.n / self.world_size) if self.n else 0

    def __iter__(self) -> Iterator[int]:
        if self.n == 0:
            return iter(())
        if self.shuffle:
            order = np.random.default_rng((self.seed, self.epoch)).permutation(self.n)
        else:
            order = self.order if self.order is not None else np.arange(self.n)
        mine = order[rank_share(self.n, self.rank, self.world_size)]
        if self.tag_epoch:
            mine = mine + self.epoch * self.n
        return iter(mine.tolist())


class LengthBatchSampler(Sampler[list[int]]):
    """Batches of windows of about the same length: a pure function of (seed, epoch, rank).

    Each epoch the n windows are shuffled (generator seeded by (seed, epoch)) and cut into
    pools of `pool` x batch_size windows. A pool is sorted by length (ties stay in shuffled
    order) and split at equal steps of its cumulative targets into pool batches, so each
    batch holds about the same number of targets, however long its windows: the loss (a
    mean over a batch's targets) weighs every target about equally, as random batches do on
    average, and an epoch has ceil(n / batch_size) batches, as with `EpochSampler`. The
    batches are then shuffled; rank r takes every world_size-th (wrapping around so every
    rank gets as many). Keys carry the epoch (`epoch * n + i`, see TrainSet).
    """

    def __init__(
        self,
        targets: np.ndarray,
        batch_size: int,
        seed: int = 0,
        rank: int = 0,
        world_size: int = 1,
        pool: int = 64,
    ) -> None:
        if batch_size < 1 or pool < 1:
            raise ValueError(f"batch_size and pool must be >= 1, got {batch_size}, {pool}")
        if not 0 <= rank < world_size:
            raise ValueError(f"rank must lie in [0, world_size={world_size}), got {rank}")
        self.targets = np.asarray(targets, dtype=np.int64)
        self.batch_size, self.seed, self.pool = batch_size, seed, pool
        self.rank, self.world_size = rank, world_size
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        """Called by Lightning before every training epoch."""
        self.epoch = epoch

    def num_batches(self) -> int:
        """Batches of the whole epoch, over all ranks."""
        return math.ceil(len(self.targets) / self.batch_size)

    def __len__(self) -> int:
        return math.ceil(self.num_batches() / self.world_size)

    def epoch_batches(self) -> list[np.ndarray]:
        """Every batch of this epoch (window indices, longest window first), all ranks."""
        n = len(self.targets)
        rng = np.random.default_rng((self.seed, self.epoch))
        order = rng.permutation(n)
        batches: list[np.ndarray] = []
        size = self.pool * self.batch_size
        for start in range(0, n, size):
            members = order[start : start + size]
            members = members[np.argsort(-self.targets[members], kind="stable")]
            k = math.ceil(len(members) / self.batch_size)
            cum = np.cumsum(self.targets[members])
            # cut after the first window whose running total reaches j / k of the pool's;
            # then at least one window per batch, and room for the batches still to come
            cuts = np.searchsorted(cum, cum[-1] * np.arange(1, k) / k, side="left") + 1
            for j in range(len(cuts)):
                low = cuts[j - 1] + 1 if j else 1
                cuts[j] = min(max(cuts[j], low), len(members) - (k - 1 - j))
            batches.extend(np.split(members, cuts))
        return [batches[i] for i in rng.permutation(len(batches))]

    def __iter__(self) -> Iterator[list[int]]:
        batches = self.epoch_batches()
        if not batches:
            return iter(())
        mine = [batches[i] for i in rank_share(len(batches), self.rank, self.world_size)]
        offset = self.epoch * len(self.targets)
        return iter([(b + offset).tolist() for b in mine])


class SeqDataModule(L.LightningDataModule):
    """Training windows + validation/test full-ranking queries of one dataset directory."""

    def __init__(
        self,
        data_dir: str | Path,
        max_len: int,
        batch_size: int = 128,
        eval_batch_size: int = 256,
        train_window: str = "last",
        seed: int = 0,
        num_workers: int = 0,
        data: SequenceDataset | None = None,
        train_stride: int | None = None,
        val_users: int | None = None,
        refit: bool = False,
        length_batches: bool = False,
    ) -> None:
        super().__init__()
        self.refit = refit
        self.length_batches = length_batches
        self.train_stride = train_stride
        self.val_users = val_users
        self.data_dir = Path(data_dir)
        self.max_len = max_len
        self.batch_size = batch_size
        self.eval_batch_size = eval_batch_size
        self.train_window = train_window
        self.seed = seed
        self.num_workers = num_workers
        self._data = data

    @property
    def data(self) -> SequenceDataset:
        """The loaded dataset (read on first use: errors surface before training starts)."""
        if self._data is None:
            self._data = load_dataset(self.data_dir)
        return self._data

    def setup(self, stage: str | None = None) -> None:
        _ = self.data

    def _rank_world(self) -> tuple[int, int]:
        trainer = self.trainer
        if trainer is None:
            return 0, 1
        return trainer.global_rank, trainer.world_size

    def _loader(
        self,
        dataset: Dataset,
        sampler: EpochSampler | LengthBatchSampler,
        batch_size: int | None,
        collate,
    ) -> DataLoader:
        return DataLoader(
            dataset,
            batch_size=batch_size,
            sampler=sampler,
            collate_fn=collate,
            num_workers=self.num_workers,
            persistent_workers=False,
            # Its own generator: creating an iterator then draws no number from the global
            # torch RNG, whose per-epoch state must not depend on when Lightning creates it
            # (before the epoch-start reseed on resume, after it otherwise).
            generator=torch.Generator().manual_seed(self.seed),
        )

    def train_dataloader(self) -> DataLoader:
        # A refit trains through each user's validation target too (recsys.splits.refit_split).
        splits = refit_split(dataset_split(self.data)) if self.refit else None
        trainset = TrainSet(
            self.data,
            self.max_len,
            self.train_window,
            self.seed,
            splits=splits,
            stride=self.train_stride,
        )
        rank, world = self._rank_world()
        if self.length_batches:
            # The sampler yields whole batches (lists of keys, which TrainSet returns as
            # they are), with automatic batching off: as the loader's `sampler` it is what
            # Lightning calls set_epoch on (it would not call a `batch_sampler`'s).
            batches = LengthBatchSampler(
                trainset.targets(), self.batch_size, self.seed, rank, world
            )
            return self._loader(trainset, batches, None, trainset.collate)
        sampler = EpochSampler(len(trainset), self.seed, True, rank, world, tag_epoch=True)
        return self._loader(trainset, sampler, self.batch_size, trainset.collate)

    def eval_dataloader(self, split: SplitName, users: int | None = None) -> DataLoader:
        """The queries of `split` in length order (little padding), sharded over ranks
        (wrap-around duplicates are removed after gathering, by user id). `users`: only a
        fixed sample of that many queries (drawn from the seed: the same every epoch)."""
        evalset = EvalSet(self.data, split, self.max_len)
        order = evalset.length_order()
        if users is not None and users < len(evalset):
            rng = np.random.default_rng((self.seed, len(evalset)))
            chosen = np.zeros(len(evalset), dtype=bool)
            chosen[rng.choice(len(evalset), size=users, replace=False)] = True
            order = order[chosen[order]]  # the sample, still longest first
        rank, world = self._rank_world()
        sampler = EpochSampler(
            len(order),
            self.seed,
            False,
            rank,
            world,
            tag_epoch=False,
            order=order,
        )
        return self._loader(evalset, sampler, self.eval_batch_size, evalset.collate)

    def val_dataloader(self) -> DataLoader:
        """The epoch checks: every validation query, or the `val_users` sample."""
        return self.eval_dataloader("valid", self.val_users)

    def test_dataloader(self) -> DataLoader:
        return self.eval_dataloader("test")
