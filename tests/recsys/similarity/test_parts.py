"""QueryParts / ItemParts helpers."""

from __future__ import annotations

import torch

from recsys.similarity.parts import ItemParts, QueryParts


def test_parts_select_slice_and_cast():
    qp = QueryParts(f=torch.randn(4, 2, 3), a_q=torch.randn(4, 6))
    ip = ItemParts(g=torch.randn(5, 3, 3), a_x=None)
    sel = qp.index_select(torch.tensor([3, 0]))
    torch.testing.assert_close(sel.f, qp.f[[3, 0]])
    torch.testing.assert_close(sel.a_q, qp.a_q[[3, 0]])
    assert qp.slice(1, 3).f.shape == (2, 2, 3) and qp.batch_size == 4
    half = ip.to(dtype=torch.bfloat16)
    assert half.g.dtype == torch.bfloat16 and half.a_x is None and half.num_items == 5
    assert ip.index_select(torch.tensor([1])).g.shape == (1, 3, 3)
    assert ip.slice(2, 5).num_items == 3
    assert qp.to(dtype=torch.float64).a_q.dtype == torch.float64


def test_select_rows_matches_index_select_for_any_layout():
    from recsys.similarity.parts import select_rows

    idx = torch.tensor([4, 0, 4, 2])
    for t in (torch.randn(5), torch.randn(5, 3), torch.randn(5, 2, 3), torch.randn(3, 5, 2)[0:3]):
        torch.testing.assert_close(select_rows(t, idx[idx < t.shape[0]]), t[idx[idx < t.shape[0]]])
    strided = torch.randn(2, 5, 3).transpose(0, 1)  # (5, 2, 3), not contiguous
    torch.testing.assert_close(select_rows(strided, idx), strided[idx])
