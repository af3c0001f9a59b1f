"""Full-ranking evaluation: queries, seen-item masking and popularity vs slow references."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from dataset_helpers import make_dataset
from torch import Tensor

from recsys.dataset import SequenceDataset, load_dataset
from recsys.evaluation import (
    EvalSet,
    PopularityScorer,
    collect_ranks,
    evaluate,
    evaluate_popularity,
    format_table,
    training_item_counts,
)
from recsys.metrics import METRIC_KEYS, compute_metrics


class TableScorer:
    """A fixed random score per (user, item), to check ranking against a slow loop."""

    def __init__(self, num_users: int, num_items: int, seed: int = 0) -> None:
        rng = np.random.default_rng(seed)
        # coarse values so that ties occur
        self.table = torch.from_numpy(rng.integers(0, 8, (num_users, num_items + 1))).float()

    def score_all(
        self, item_ids: Tensor, timestamps: Tensor | None, user_ids: Tensor | None
    ) -> Tensor:
        assert user_ids is not None
        return self.table[user_ids].clone()


def _reference_ranks(
    data: SequenceDataset, table: Tensor, split: str
) -> tuple[list[int], list[int]]:
    back = 2 if split == "valid" else 1
    users, ranks = [], []
    for u in range(data.num_users):
        seq = data.sequence(u).tolist()
        if len(seq) < 3:
            continue
        target, history = seq[-back], set(seq[: len(seq) - back])
        t = float(table[u, target])
        higher = sum(
            1
            for i in range(1, data.num_items + 1)
            if i != target and i not in history and float(table[u, i]) > t
        )
        users.append(u)
        ranks.append(higher + 1)
    return users, ranks


@pytest.fixture
def data(tmp_path: Path) -> SequenceDataset:
    return load_dataset(make_dataset(tmp_path / "d", num_users=50, num_items=30, noise=0.5))


@pytest.mark.parametrize("split", ["valid", "test"])
def test_ranks_match_slow_reference(data: SequenceDataset, split: str) -> None:
    scorer = TableScorer(data.num_users, data.num_items)
    users, expected = _reference_ranks(data, scorer.table, split)
    evalset = EvalSet(data, split, max_len=4)  # type: ignore[arg-type]
    ranks, top10 = collect_ranks(scorer, evalset.loader(batch_size=7))
    assert evalset.cases.users.tolist() == users
    assert ranks.tolist() == expected
    metrics = evaluate(scorer, data, split, max_len=4, batch_size=7)  # type: ignore[arg-type]
    assert metrics == pytest.approx(compute_metrics(np.array(expected), top10, data.num_items))
    # seen items never appear in the top-10 lists
    for row, u in zip(top10, users, strict=True):
        back = 2 if split == "valid" else 1
        seq = data.sequence(u).tolist()
        assert not set(row.tolist()) & (set(seq[: len(seq) - back]) - {seq[-back]})


def test_eval_queries(data: SequenceDataset) -> None:
    evalset = EvalSet(data, "test", max_len=5)
    batch = evalset.collate([0, 1, 2])
    for row, (u, seen, target) in enumerate(
        zip(batch.user_ids.tolist(), batch.seen, batch.targets, strict=True)  # type: ignore[arg-type]
    ):
        seq = data.sequence(u).tolist()
        assert int(target) == seq[-1]
        assert [v for v in seen.tolist() if v] == seq[:-1]  # whole history for masking
        assert [v for v in batch.item_ids[row].tolist() if v] == seq[:-1][-5:]


def test_popularity_counts_training_part_only(data: SequenceDataset) -> None:
    expected = np.zeros(data.num_items + 1, dtype=np.int64)
    for u in range(data.num_users):
        seq = data.sequence(u)
        for item in seq[:-2] if len(seq) >= 3 else seq:
            expected[item] += 1
    np.testing.assert_array_equal(training_item_counts(data), expected)
    scores = PopularityScorer(expected).score_all(torch.zeros(2, 3, dtype=torch.long), None, None)
    assert scores.shape == (2, data.num_items + 1) and scores[0, 0] == float("-inf")
    pop = evaluate_popularity(data, "test")
    assert list(pop) == list(METRIC_KEYS)
    assert 0 < pop["hr@10"] <= 1


def test_format_table() -> None:
    table = format_table({"model": {"hr@10": 0.5, "mrr": 0.25}, "popularity": {"hr@10": 0.125}})
    lines = table.splitlines()
    assert lines[0] == "| model | hr@10 | mrr |"
    assert lines[2] == "| model | 0.5000 | 0.2500 |"
    assert lines[3] == "| popularity | 0.1250 |  |"


def test_popularity_warnings_name_both_figures() -> None:
    from recsys.evaluation import popularity_warnings

    pop = {"hr@10": 0.086, "ndcg@10": 0.04}
    assert popularity_warnings({"hr@10": 0.1, "ndcg@10": 0.05}, pop) == []
    (only,) = popularity_warnings({"hr@10": 0.043, "ndcg@10": 0.05}, pop)
    assert "popularity" in only and "hr@10" in only and "0.0430" in only and "0.0860" in only
    assert len(popularity_warnings({"hr@10": 0.086, "ndcg@10": 0.01}, pop)) == 2  # ties warn
