"""Train / validation / test views of a sequence dataset as index arithmetic (no data copies).

Works on the ragged arrays of `recsys.dataset.SequenceDataset`: a flat `item_ids` (E,) and
`offsets` (U+1,) with user u's chronological events at `item_ids[offsets[u]:offsets[u+1]]`.

Leave-one-out (the protocol of SASRec, HSTU and the MoL paper), by position:
- test: target = the last event, history = every event before it;
- validation: target = the second-to-last event, history = every event before it;
- training: every event but the last two.
Users with fewer than 3 events keep all of them for training and are not evaluated.

Global temporal split (`temporal_split`), by a timestamp cut-off shared by all users:
- test: for each user with events on both sides of `test_cutoff`, the target is the first event
  at or after the cut-off and the history is every event before it;
- validation: with `valid_cutoff`, the same one period earlier (target = first event in
  [valid_cutoff, test_cutoff), history = events before valid_cutoff, training = events before
  valid_cutoff); without it, the last event before `test_cutoff` of users with at least two
  (training = the events before it), which is leave-one-out inside the training period.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

MIN_EVAL_LENGTH = 3


@dataclass(frozen=True)
class Targets:
    """Evaluation cases. Case j: user `users[j]`, history `item_ids[starts[j]:ends[j]]`,
    next item `targets[j]`. All arrays (M,); starts/ends are flat offsets (int64)."""

    users: np.ndarray  # (M,) int64
    starts: np.ndarray  # (M,) int64
    ends: np.ndarray  # (M,) int64, exclusive
    targets: np.ndarray  # (M,) int32

    def __len__(self) -> int:
        return len(self.users)

    def histories(self, item_ids: np.ndarray, max_len: int) -> np.ndarray:
        """(M, max_len) int32: the latest `max_len` history items of each case, right-padded
        with 0."""
        return padded_windows(item_ids, self.starts, self.ends, max_len)


@dataclass(frozen=True)
class Split:
    """Training ranges for every user (U,) plus the validation and test cases."""

    protocol: str
    train_starts: np.ndarray  # (U,) int64
    train_ends: np.ndarray  # (U,) int64, exclusive
    valid: Targets
    test: Targets

    @property
    def train_lengths(self) -> np.ndarray:
        """(U,) int64 training events per user (0 for a user with none)."""
        return self.train_ends - self.train_starts


def _targets(
    item_ids: np.ndarray, users: np.ndarray, starts: np.ndarray, ends: np.ndarray
) -> Targets:
    return Targets(
        users=users.astype(np.int64),
        starts=starts.astype(np.int64),
        ends=ends.astype(np.int64),
        targets=item_ids[ends].astype(np.int32),
    )


def leave_one_out(item_ids: np.ndarray, offsets: np.ndarray) -> Split:
    """Leave-one-out by position: last = test target, second-to-last = validation target."""
    offsets = np.asarray(offsets, dtype=np.int64)
    starts, ends = offsets[:-1], offsets[1:]
    evaluated = (ends - starts) >= MIN_EVAL_LENGTH
    users = np.flatnonzero(evaluated)
    s, e = starts[users], ends[users]
    return Split(
        protocol="leave_one_out",
        train_starts=starts.copy(),
        train_ends=np.where(evaluated, ends - 2, ends),
        valid=_targets(item_ids, users, s, e - 2),
        test=_targets(item_ids, users, s, e - 1),
    )


def refit_split(split: Split) -> Split:
    """The split of a refit: each user's training range grows to cover its validation target
    and, for a user with a test case, the whole test history (leave-one-out: every event but
    the last; temporal: every event before the test cut-off). Validation cases are dropped:
    after a refit they are training data. Test cases are unchanged."""
    train_ends = split.train_ends.copy()
    valid, test = split.valid, split.test
    # Every history starts where its user's training range starts (both protocols).
    np.maximum.at(train_ends, valid.users, valid.ends + 1)
    np.maximum.at(train_ends, test.users, test.ends)
    empty = np.zeros(0, dtype=np.int64)
    return Split(
        protocol=f"{split.protocol}+refit",
        train_starts=split.train_starts,
        train_ends=train_ends,
        valid=Targets(users=empty, starts=empty, ends=empty, targets=empty.astype(np.int32)),
        test=test,
    )


def _first_at_or_after(offsets: np.ndarray, timestamps: np.ndarray, cutoff: int) -> np.ndarray:
    """(U,) flat position of each user's first event with timestamp >= cutoff (or its end).

    Each user's timestamps are non-decreasing, so the count of earlier events per user is
    the position inside the user's range.
    """
    cumulative = np.concatenate([[0], np.cumsum(timestamps < cutoff, dtype=np.int64)])
    return offsets[:-1] + cumulative[offsets[1:]] - cumulative[offsets[:-1]]


def temporal_split(
    item_ids: np.ndarray,
    offsets: np.ndarray,
    timestamps: np.ndarray,
    test_cutoff: int,
    valid_cutoff: int | None = None,
) -> Split:
    """Global temporal split at `test_cutoff` (unix seconds); see the module docstring."""
    if valid_cutoff is not None and valid_cutoff > test_cutoff:
        raise ValueError(f"valid_cutoff={valid_cutoff} must not be after test_cutoff={test_cutoff}")
    offsets = np.asarray(offsets, dtype=np.int64)
    starts, ends = offsets[:-1], offsets[1:]
    cut = _first_at_or_after(offsets, timestamps, test_cutoff)
    test_users = np.flatnonzero((cut > starts) & (cut < ends))
    test = _targets(item_ids, test_users, starts[test_users], cut[test_users])
    if valid_cutoff is None:
        has_valid = (cut - starts) >= 2
        valid_users = np.flatnonzero(has_valid)
        valid = _targets(item_ids, valid_users, starts[valid_users], cut[valid_users] - 1)
        train_ends = np.where(has_valid, cut - 1, cut)
    else:
        vcut = _first_at_or_after(offsets, timestamps, valid_cutoff)
        valid_users = np.flatnonzero((vcut > starts) & (vcut < cut))
        valid = _targets(item_ids, valid_users, starts[valid_users], vcut[valid_users])
        train_ends = vcut
    return Split("temporal", starts.copy(), train_ends, valid, test)


def cutoff_at_quantile(timestamps: np.ndarray, q: float) -> int:
    """The timestamp below which a fraction `q` (0 < q < 1) of all events fall."""
    if not 0.0 < q < 1.0:
        raise ValueError(f"quantile must lie strictly between 0 and 1, got {q}")
    if len(timestamps) == 0:
        raise ValueError("no timestamps to take a quantile of")
    return int(np.quantile(timestamps, q, method="higher"))


def split_from_stats(
    stats: dict[str, Any], item_ids: np.ndarray, offsets: np.ndarray, timestamps: np.ndarray | None
) -> Split:
    """The split a dataset's `stats.json` asks for (`split` key; leave-one-out by default)."""
    spec = stats.get("split") or {"protocol": "leave_one_out"}
    if spec["protocol"] == "leave_one_out":
        return leave_one_out(item_ids, offsets)
    if spec["protocol"] == "temporal":
        if timestamps is None:
            raise ValueError("a temporal split needs timestamps; this dataset has none")
        return temporal_split(
            item_ids, offsets, timestamps, spec["test_cutoff"], spec.get("valid_cutoff")
        )
    raise ValueError(f"unknown split protocol {spec['protocol']!r}")


def padded_windows(
    values: np.ndarray, starts: np.ndarray, ends: np.ndarray, max_len: int, pad: int = 0
) -> np.ndarray:
    """(M, max_len): the last min(end - start, max_len) values of each range, right-padded.

    values (E,), starts/ends (M,) flat offsets. Row j is
    `values[max(starts[j], ends[j] - max_len):ends[j]]` followed by `pad`.
    """
    if max_len < 1:
        raise ValueError(f"max_len must be >= 1, got {max_len}")
    starts = np.asarray(starts, dtype=np.int64)
    ends = np.asarray(ends, dtype=np.int64)
    lengths = np.minimum(ends - starts, max_len)
    cols = np.arange(max_len, dtype=np.int64)
    index = (ends - lengths)[:, None] + cols[None, :]
    valid = cols[None, :] < lengths[:, None]
    out = np.full((len(starts), max_len), pad, dtype=values.dtype)
    out[valid] = values[index[valid]]
    return out
