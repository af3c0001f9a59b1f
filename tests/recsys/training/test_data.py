"""Training windows and the epoch sampler against slow, obvious references."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from dataset_helpers import make_dataset

from recsys.dataset import load_dataset
from recsys.training.data import EpochSampler, LengthBatchSampler, SeqDataModule, TrainSet


def _rows(batch_ids: np.ndarray) -> list[list[int]]:
    return [[int(v) for v in row if v != 0] for row in batch_ids]


@pytest.mark.parametrize("timestamps", [False, True])
def test_last_windows_match_reference(tmp_path: Path, timestamps: bool) -> None:
    data = load_dataset(make_dataset(tmp_path / "d", num_users=30, timestamps=timestamps))
    max_len = 6
    ts = TrainSet(data, max_len, "last")
    batch = ts.collate(list(range(len(ts))))
    expected, expected_t = [], []
    for u in range(data.num_users):
        seq = data.sequence(u)
        train = seq[:-2] if len(seq) >= 3 else seq
        if len(train) >= 2:
            expected.append(train[-max_len:].tolist())
            if timestamps:
                times = data.times(u)
                assert times is not None
                expected_t.append(times[: len(train)][-max_len:].tolist())
    assert _rows(batch.item_ids.numpy()) == expected
    assert batch.item_ids.shape[1] <= max_len
    if timestamps:
        assert batch.timestamps is not None
        assert _rows(batch.timestamps.numpy()) == expected_t
    else:
        assert batch.timestamps is None


def test_random_windows_are_contiguous_and_deterministic(tmp_path: Path) -> None:
    data = load_dataset(make_dataset(tmp_path / "d", num_users=20, length=(12, 20)))
    ts = TrainSet(data, 5, "random", seed=3)
    n = len(ts)
    keys0, keys1 = list(range(n)), [n + i for i in range(n)]  # epoch 0 and epoch 1
    a, b = ts.collate(keys0), ts.collate(keys0)
    assert (a.item_ids == b.item_ids).all()  # same (seed, epoch, user) -> same window
    c = ts.collate(keys1)
    assert not (a.item_ids == c.item_ids).all()  # a new epoch draws new windows
    for row, u in zip(_rows(c.item_ids.numpy()), c.user_ids.tolist(), strict=True):
        train = data.sequence(u)[:-2].tolist()
        assert len(row) == 5
        assert any(train[s : s + 5] == row for s in range(len(train) - 4))


@pytest.mark.parametrize("max_len", [2, 3, 5, 50])
def test_all_windows_supervise_every_target_once(tmp_path: Path, max_len: int) -> None:
    data = load_dataset(make_dataset(tmp_path / "d", num_users=25, length=(2, 17)))
    ts = TrainSet(data, max_len, "all")
    batch = ts.collate(list(range(len(ts))))
    expected = []  # slow reference: walk back from the end, one shared event per boundary
    for u in range(data.num_users):
        seq = data.sequence(u)
        train = (seq[:-2] if len(seq) >= 3 else seq).tolist()
        end = len(train)
        while end >= 2:
            expected.append((u, train[max(0, end - max_len) : end]))
            end -= max_len - 1
    got = list(zip(batch.user_ids.tolist(), _rows(batch.item_ids.numpy()), strict=True))
    assert got == expected
    for u in range(data.num_users):  # every training target exactly once
        seq = data.sequence(u)
        train = (seq[:-2] if len(seq) >= 3 else seq).tolist()
        targets = [item for user, row in got if user == u for item in row[1:]]
        assert sorted(targets) == sorted(train[1:])


@pytest.mark.parametrize(("max_len", "stride"), [(2, 1), (4, 1), (5, 2), (5, 3), (6, 5)])
def test_strided_windows_supervise_every_target_once_with_context(
    tmp_path: Path, max_len: int, stride: int
) -> None:
    data = load_dataset(make_dataset(tmp_path / "d", num_users=25, length=(2, 17)))
    ts = TrainSet(data, max_len, "all", stride=stride)
    batch = ts.collate(list(range(len(ts))))
    assert batch.first_target is not None
    rows = _rows(batch.item_ids.numpy())
    got = list(zip(batch.user_ids.tolist(), rows, batch.first_target.tolist(), strict=True))
    expected = []  # slow reference: window ends `stride` apart, walking back from the end
    for u in range(data.num_users):
        seq = data.sequence(u)
        train = (seq[:-2] if len(seq) >= 3 else seq).tolist()
        end, supervised = len(train), []
        while end >= 2:
            start = max(0, end - max_len)
            first = max(1, end - start - stride)
            expected.append((u, train[start:end], first))
            supervised += [start + t for t in range(first, end - start)]
            # context: a target sees max_len - stride earlier events, or all there are
            assert all(t >= min(start + t, max_len - stride) for t in range(first, end - start))
            end -= stride
        assert sorted(supervised) == list(range(1, len(train)))  # every target exactly once
    assert got == expected


def test_stride_needs_all_windows_and_fits_the_window(tmp_path: Path) -> None:
    data = load_dataset(make_dataset(tmp_path / "d", num_users=5))
    with pytest.raises(ValueError, match="window 'all' only"):
        TrainSet(data, 5, "last", stride=2)
    with pytest.raises(ValueError, match=r"stride must be in \[1, 4\]"):
        TrainSet(data, 5, "all", stride=5)
    assert TrainSet(data, 5, "all").collate([0]).first_target is None


def test_epoch_sampler_shards_and_replays() -> None:
    n, world = 10, 3
    shards = []
    for rank in range(world):
        s = EpochSampler(n, seed=1, shuffle=True, rank=rank, world_size=world, tag_epoch=False)
        s.set_epoch(4)
        shards.append(list(s))
    assert {len(x) for x in shards} == {4}  # equal batches on every rank (DDP)
    assert set().union(*map(set, shards)) == set(range(n))  # every item covered
    again = EpochSampler(n, seed=1, rank=1, world_size=world, tag_epoch=False)
    again.set_epoch(4)
    assert list(again) == shards[1]
    other = EpochSampler(n, seed=1, rank=1, world_size=world, tag_epoch=False)
    other.set_epoch(5)
    assert list(other) != shards[1]
    tagged = EpochSampler(n, seed=1)
    tagged.set_epoch(2)
    assert sorted(tagged) == [2 * n + i for i in range(n)]


def test_length_batches_cover_the_epoch_with_balanced_targets() -> None:
    rng = np.random.default_rng(0)
    # skewed like ML-1M's windows: many short ones, a block at the maximum
    targets = np.concatenate([rng.integers(1, 60, 700), np.full(300, 199)])
    batch_size = 16
    s = LengthBatchSampler(targets, batch_size, seed=3, pool=8)
    s.set_epoch(2)
    batches = [np.asarray(b) for b in s]
    assert len(batches) == len(s) == -(-len(targets) // batch_size)  # as many as random
    keys = np.sort(np.concatenate(batches))
    np.testing.assert_array_equal(keys, 2 * len(targets) + np.arange(len(targets)))
    idx = [b - 2 * len(targets) for b in batches]
    sums = np.array([targets[b].sum() for b in idx])
    # about equal targets per batch: within one longest window of the pool's mean share
    pool_mean = targets.sum() / len(batches)
    assert sums.max() <= 1.2 * pool_mean + targets.max() and sums.min() >= 0.5 * pool_mean
    # little padding, against the same windows in random batches (slow reference)
    padded = sum(len(b) * targets[b].max() for b in idx)
    perm = rng.permutation(len(targets))
    padded_random = sum(len(b) * targets[b].max() for b in np.array_split(perm, len(batches)))
    assert padded < 0.8 * padded_random
    assert padded <= 1.3 * targets.sum()
    # a pure function of (seed, epoch); another epoch groups differently
    again = LengthBatchSampler(targets, batch_size, seed=3, pool=8)
    again.set_epoch(2)
    assert [list(b) for b in again] == [list(b) for b in batches]
    again.set_epoch(3)
    assert [sorted(b) for b in again] != [sorted(b) for b in batches]


def test_length_batches_shard_equally_over_ranks() -> None:
    targets = np.arange(1, 51)
    shards = []
    for rank in range(3):
        s = LengthBatchSampler(targets, 4, seed=0, rank=rank, world_size=3, pool=2)
        shards.append([tuple(b) for b in s])
    assert {len(x) for x in shards} == {5}  # 13 batches, wrapped to 15: equal on every rank
    covered = {k for x in shards for b in x for k in b}
    assert covered == set(range(50))


def test_datamodule_length_batches(tmp_path: Path) -> None:
    dm = SeqDataModule(
        make_dataset(tmp_path / "d", num_users=40, length=(3, 30)),
        max_len=8,
        batch_size=8,
        train_window="all",
        length_batches=True,
    )
    dm.setup("fit")
    loader = dm.train_dataloader()
    batches = list(loader)
    n = len(loader.dataset)
    assert len(batches) == len(loader) == -(-n // 8)
    assert sum(b.item_ids.shape[0] for b in batches) == n
    # every target once per epoch, as with random batches
    targets = sum(int((b.item_ids[:, 1:] != 0).sum()) for b in batches)
    assert targets == int(loader.dataset.targets().sum())
    # Lightning's per-epoch call (the one the Trainer makes) reaches the sampler: another
    # epoch, other batches
    from lightning.fabric.utilities.data import _set_sampler_epoch

    _set_sampler_epoch(loader, 5)
    assert loader.sampler.epoch == 5
    later = [b.user_ids.tolist() for b in loader]
    assert later != [b.user_ids.tolist() for b in batches]


def test_datamodule_loaders(tmp_path: Path) -> None:
    dm = SeqDataModule(make_dataset(tmp_path / "d", num_users=40), max_len=8, batch_size=16)
    dm.setup("fit")
    batches = list(dm.train_dataloader())
    assert sum(b.item_ids.shape[0] for b in batches) == 40
    val = list(dm.val_dataloader())
    assert all(b.targets is not None and b.seen is not None for b in val)
    assert sum(b.item_ids.shape[0] for b in val) == 40


def test_validation_user_sample_is_fixed_and_test_is_whole(tmp_path: Path) -> None:
    path = make_dataset(tmp_path / "d", num_users=40)
    dm = SeqDataModule(path, max_len=8, batch_size=16, eval_batch_size=7, val_users=15, seed=3)
    dm.setup("fit")

    def users(loader) -> list[int]:
        return sorted(int(u) for b in loader for u in b.user_ids)

    first = users(dm.val_dataloader())
    assert len(first) == len(set(first)) == 15
    assert users(dm.val_dataloader()) == first  # the same sample every epoch
    assert len(users(dm.test_dataloader())) == 40
    other = SeqDataModule(path, max_len=8, val_users=15, seed=4)
    assert users(other.val_dataloader()) != first
    whole = SeqDataModule(path, max_len=8, val_users=400)
    assert len(users(whole.val_dataloader())) == 40


def test_refit_windows_end_at_the_test_history(tmp_path: Path) -> None:
    """A refit's training windows end one event before the test target (the validation
    target is their last training target); a normal run's end two events before it."""
    path = make_dataset(tmp_path / "d", num_users=40)
    data = load_dataset(path)
    lengths = np.diff(data.offsets)

    def last_items(refit: bool) -> dict[int, int]:
        dm = SeqDataModule(path, max_len=64, batch_size=8, refit=refit)
        out = {}
        for b in dm.train_dataloader():
            for u, row in zip(b.user_ids.tolist(), b.item_ids.tolist(), strict=True):
                out[u] = [x for x in row if x][-1]
        return out

    normal, refit = last_items(False), last_items(True)
    assert set(normal) == set(refit) == set(range(40))
    for u in range(40):
        seq = data.item_ids[data.offsets[u] : data.offsets[u + 1]]
        assert lengths[u] >= 3  # every user is evaluated, so the refit changes each one
        assert normal[u] == seq[-3] and refit[u] == seq[-2]
