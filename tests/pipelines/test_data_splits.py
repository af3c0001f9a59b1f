"""recsys.splits: leave-one-out and temporal views against explicit per-user loops."""

from __future__ import annotations

import numpy as np
import pytest

from recsys.splits import (
    cutoff_at_quantile,
    leave_one_out,
    padded_windows,
    refit_split,
    split_from_stats,
    temporal_split,
)


def ragged(rng: np.random.Generator, users: int, max_len: int = 9):
    lengths = rng.integers(0, max_len, users)
    offsets = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
    items = rng.integers(1, 50, offsets[-1]).astype(np.int32)
    times = np.concatenate([np.sort(rng.integers(0, 100, n)) for n in lengths]).astype(np.int64)
    return items, offsets, times


@pytest.mark.parametrize("seed", range(4))
def test_leave_one_out_matches_loop(seed):
    items, offsets, _ = ragged(np.random.default_rng(seed), 40)
    split = leave_one_out(items, offsets)
    cases = 0
    for u in range(40):
        seq = items[offsets[u] : offsets[u + 1]]
        train = items[split.train_starts[u] : split.train_ends[u]]
        if len(seq) < 3:
            assert np.array_equal(train, seq)
            assert u not in split.test.users
            continue
        j = cases
        cases += 1
        assert split.test.users[j] == u and split.valid.users[j] == u
        assert split.test.targets[j] == seq[-1]  # last item = test target
        assert split.valid.targets[j] == seq[-2]  # second-to-last = validation target
        assert np.array_equal(items[split.test.starts[j] : split.test.ends[j]], seq[:-1])
        assert np.array_equal(items[split.valid.starts[j] : split.valid.ends[j]], seq[:-2])
        assert np.array_equal(train, seq[:-2])
    assert len(split.test) == cases


@pytest.mark.parametrize("seed", range(4))
def test_temporal_split_matches_loop(seed):
    items, offsets, times = ragged(np.random.default_rng(seed), 40)
    for valid_cutoff in (None, 30):
        split = temporal_split(items, offsets, times, test_cutoff=60, valid_cutoff=valid_cutoff)
        test_cases, valid_cases = {}, {}
        for u in range(40):
            seq, t = items[offsets[u] : offsets[u + 1]], times[offsets[u] : offsets[u + 1]]
            before = int((t < 60).sum())
            if 0 < before < len(seq):
                test_cases[u] = (seq[before], seq[:before])
            if valid_cutoff is None:
                train = seq[: before - 1] if before >= 2 else seq[:before]
                if before >= 2:
                    valid_cases[u] = (seq[before - 1], seq[: before - 1])
            else:
                vb = int((t < valid_cutoff).sum())
                train = seq[:vb]
                if 0 < vb < before:
                    valid_cases[u] = (seq[vb], seq[:vb])
            assert np.array_equal(items[split.train_starts[u] : split.train_ends[u]], train)
        for cases, expected in ((split.test, test_cases), (split.valid, valid_cases)):
            assert cases.users.tolist() == sorted(expected)
            for j, u in enumerate(cases.users):
                assert cases.targets[j] == expected[u][0]
                assert np.array_equal(items[cases.starts[j] : cases.ends[j]], expected[u][1])


def test_padded_windows_matches_loop():
    rng = np.random.default_rng(0)
    values = rng.integers(1, 9, 60).astype(np.int32)
    starts = rng.integers(0, 30, 20)
    ends = starts + rng.integers(0, 30, 20)
    out = padded_windows(values, starts, ends, 7)
    for j in range(20):
        window = values[max(starts[j], ends[j] - 7) : ends[j]]
        expected = np.concatenate([window, np.zeros(7 - len(window), np.int32)])
        assert np.array_equal(out[j], expected)


def test_split_from_stats_and_quantile():
    items, offsets, times = ragged(np.random.default_rng(1), 10)
    loo = split_from_stats({}, items, offsets, times)
    assert loo.protocol == "leave_one_out"
    cutoff = cutoff_at_quantile(times, 0.8)
    assert (times < cutoff).mean() <= 0.8 <= (times <= cutoff).mean()
    spec = {"split": {"protocol": "temporal", "test_cutoff": cutoff}}
    assert split_from_stats(spec, items, offsets, times).protocol == "temporal"
    with pytest.raises(ValueError, match="needs timestamps"):
        split_from_stats(spec, items, offsets, None)
    with pytest.raises(ValueError, match="strictly between 0 and 1"):
        cutoff_at_quantile(times, 1.0)


def test_users_without_events_anywhere():
    items = np.array([5, 6, 7, 8], dtype=np.int32)
    offsets = np.array([0, 0, 4, 4, 4])  # empty users first, in the middle and last
    times = np.array([1, 2, 3, 4])
    split = temporal_split(items, offsets, times, test_cutoff=3)
    assert split.test.users.tolist() == [1] and split.test.targets.tolist() == [7]
    assert split.valid.targets.tolist() == [6]
    assert split.train_lengths.tolist() == [0, 1, 0, 0]
    loo = leave_one_out(items, offsets)
    assert loo.test.users.tolist() == [1] and loo.train_lengths.tolist() == [0, 2, 0, 0]


@pytest.mark.parametrize("seed", range(3))
@pytest.mark.parametrize("protocol", ["leave_one_out", "temporal", "temporal_valid_cutoff"])
def test_refit_split_trains_through_the_validation_target(seed, protocol):
    items, offsets, times = ragged(np.random.default_rng(seed), 40)
    if protocol == "leave_one_out":
        split = leave_one_out(items, offsets)
    else:
        cutoff = 30 if protocol == "temporal_valid_cutoff" else None
        split = temporal_split(items, offsets, times, test_cutoff=60, valid_cutoff=cutoff)
    refit = refit_split(split)
    assert len(refit.valid) == 0 and refit.protocol == f"{split.protocol}+refit"
    assert refit.test is split.test
    valid = dict(zip(split.valid.users.tolist(), split.valid.ends.tolist(), strict=True))
    test = dict(zip(split.test.users.tolist(), split.test.ends.tolist(), strict=True))
    for u in range(40):
        end = split.train_ends[u]
        if u in valid:  # the validation target becomes a training target
            end = max(end, valid[u] + 1)
        if u in test:  # and the whole test history is training data
            end = max(end, test[u])
        assert refit.train_starts[u] == split.train_starts[u]
        assert refit.train_ends[u] == end
        if protocol == "leave_one_out":
            n = offsets[u + 1] - offsets[u]
            assert end == offsets[u + 1] - (1 if n >= 3 else 0)
