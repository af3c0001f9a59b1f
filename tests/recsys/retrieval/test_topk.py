"""The shared top-k building blocks against explicit references."""

from __future__ import annotations

import pytest
import torch

import recsys.retrieval.topk as topk_mod
from recsys.retrieval.topk import (
    check_exclude,
    component_topk,
    dedup_ids,
    excluded_ids,
    merge_topk,
    select_topk,
    topk_padded,
)

NEG_INF = float("-inf")


def test_dedup_ids_keeps_one_copy_of_each_id() -> None:
    ids = torch.tensor([[3, 1, 3, 0, 2, 1], [5, 5, 5, 5, 5, 5]])
    out = dedup_ids(ids)
    for row_in, row_out in zip(ids, out, strict=True):
        kept = row_out[row_out != 0].tolist()
        assert sorted(kept) == sorted(set(row_in[row_in != 0].tolist()))
        assert len(kept) == len(set(kept))


def test_topk_padded_pads_with_minus_inf_and_zero() -> None:
    scores = torch.tensor([[1.0, NEG_INF, 3.0], [NEG_INF, NEG_INF, NEG_INF]])
    ids = torch.tensor([[7, 8, 9], [1, 2, 3]])
    top, top_ids = topk_padded(scores, ids, 5)
    assert top.shape == (2, 5) and top_ids.shape == (2, 5)
    assert top[0, :2].tolist() == [3.0, 1.0] and top_ids[0, :2].tolist() == [9, 7]
    assert torch.isinf(top[0, 2:]).all() and (top_ids[0, 2:] == 0).all()
    assert (top_ids[1] == 0).all()


@pytest.mark.parametrize("max_cols", [0, 1 << 18])  # torch.topk path / argpartition path
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("shape,k", [((5, 40), 7), ((2, 3, 40), 40), ((4, 40), 60), ((3, 1), 1)])
def test_select_topk_equals_torch_topk(shape, k, dtype, max_cols, monkeypatch) -> None:
    monkeypatch.setattr(topk_mod, "ARGPARTITION_MAX_COLS", max_cols)
    g = torch.Generator().manual_seed(sum(shape) + k)
    x = torch.randn(shape, generator=g).to(dtype)  # bf16 rounding makes ties
    x[..., ::5] = NEG_INF  # and some -inf entries, as masked scores have
    ref_values = x.topk(min(k, shape[-1]), dim=-1).values
    values, ids = select_topk(x, k)
    # A valid top-k: the same sorted values, read at distinct positions (ties in any order).
    assert values.dtype == dtype and torch.equal(values, ref_values)
    assert torch.equal(x.gather(-1, ids), values)
    assert torch.equal(ids.sort(dim=-1).values.diff(dim=-1) > 0, torch.ones_like(ids[..., 1:]) > 0)
    u_values, u_ids = select_topk(x, k, sorted=False)
    assert torch.equal(u_values.sort(dim=-1, descending=True).values, ref_values)
    assert torch.equal(x.gather(-1, u_ids), u_values)


def test_merge_topk_equals_one_topk_over_everything() -> None:
    torch.manual_seed(0)
    scores = torch.randn(3, 50)
    ids = torch.arange(50).expand(3, 50)
    best = None
    for s in range(0, 50, 7):
        best = merge_topk(best, scores[:, s : s + 7], ids[:, s : s + 7], 6)
    ref_scores, ref_ids = scores.topk(6, dim=1)
    assert torch.equal(best[0], ref_scores) and torch.equal(best[1], ref_ids)


@pytest.mark.parametrize("overfetch_limit", [0, 1024])  # mask the scores / over-fetch
@pytest.mark.parametrize("block", [1, 37, 1 << 20])
def test_component_topk_matches_explicit_loop(
    block: int, overfetch_limit: int, monkeypatch
) -> None:
    monkeypatch.setattr(topk_mod, "OVERFETCH_LIMIT", overfetch_limit)
    torch.manual_seed(1)
    b, q, j, d, n = 2, 3, 2, 4, 25
    queries, items = torch.randn(b, q, d), torch.randn(n + 1, j, d)
    exclude = torch.rand(b, n + 1) < 0.3
    ids = component_topk(queries, items, 4, exclude, block=block)
    assert ids.shape == (b, q * j, 4)
    for bi in range(b):
        for qi in range(q):
            for ji in range(j):
                s = items[:, ji] @ queries[bi, qi]
                s[0] = NEG_INF
                s[exclude[bi]] = NEG_INF
                ref = s.topk(4).indices
                assert torch.equal(ids[bi, qi * j + ji], ref)


def test_component_topk_pads_when_k_exceeds_admissible_items() -> None:
    queries, items = torch.randn(1, 1, 3), torch.randn(4, 1, 3)
    exclude = torch.tensor([[True, False, True, False]])
    ids = component_topk(queries, items, 6, exclude)
    assert sorted(ids[0, 0, :2].tolist()) == [1, 3]
    assert (ids[0, 0, 2:] == 0).all()


def test_excluded_ids_marks_padding_and_mask() -> None:
    exclude = torch.tensor([[False, False, True]])
    assert excluded_ids(torch.tensor([[0, 1, 2]]), exclude).tolist() == [[True, False, True]]


def test_check_exclude_names_the_expected_shape() -> None:
    with pytest.raises(ValueError, match=r"\(2, 11\)"):
        check_exclude(torch.zeros(2, 10, dtype=torch.bool), 2, 10, torch.device("cpu"))
    with pytest.raises(ValueError, match="bool"):
        check_exclude(torch.zeros(2, 11), 2, 10, torch.device("cpu"))
