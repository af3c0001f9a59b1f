"""ItemIndex: built from the similarity, validated, and scored like the similarity itself."""

from __future__ import annotations

import pytest
import torch
from retrieval_helpers import make_catalog

from recsys.retrieval.index import ItemIndex, build_index, score_ids, score_slice


def test_build_index_matches_item_parts_in_eval_mode() -> None:
    cat = make_catalog(num_items=30)
    cat.similarity.train()  # build_index must switch dropout off and restore the mode
    index = build_index(cat.similarity, cat.index.item_emb, chunk=7)
    assert cat.similarity.training
    cat.similarity.eval()
    with torch.no_grad():
        ref = cat.similarity.item_parts(cat.index.item_emb)
    assert torch.allclose(index.g, ref.g, atol=1e-6)
    assert torch.allclose(index.a_x, ref.a_x, atol=1e-6)
    assert index.num_items == 30


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_score_ids_and_slice_equal_score_all(dtype: torch.dtype) -> None:
    cat = make_catalog(num_items=40, dtype=dtype)
    ref = cat.similarity.score_all(cat.queries, cat.index.parts.to(dtype=torch.float32))
    ids = torch.randint(0, 41, (cat.queries.batch_size, 23))
    got = score_ids(cat.similarity, cat.queries, cat.index, ids, max_pairs=9)
    assert got.dtype == torch.float32
    assert torch.allclose(got, ref.gather(1, ids), atol=1e-4)
    assert torch.allclose(
        score_slice(cat.similarity, cat.queries, cat.index, 5, 17), ref[:, 5:17], atol=1e-4
    )


def test_index_rejects_inconsistent_tensors() -> None:
    g = torch.randn(5, 2, 3)
    with pytest.raises(ValueError, match="item_emb"):
        ItemIndex(g=g, a_x=None, item_emb=torch.randn(4, 6))
    with pytest.raises(ValueError, match="share dtype"):
        ItemIndex(g=g, a_x=None, item_emb=torch.randn(5, 6).bfloat16())
    with pytest.raises(ValueError, match="a_x"):
        ItemIndex(g=g, a_x=torch.randn(3, 4), item_emb=torch.randn(5, 6))


def test_bf16_index_round_trip() -> None:
    cat = make_catalog(num_items=10)
    half = cat.index.to(dtype=torch.bfloat16)
    assert half.dtype == torch.bfloat16 and half.a_x.dtype == torch.bfloat16
    assert torch.allclose(half.g.float(), cat.index.g, atol=1e-2)
