"""The dot-product retriever (torch and FAISS) against brute force."""

from __future__ import annotations

import pytest
import torch
from retrieval_helpers import assert_same_topk, make_catalog, random_exclude, reference_topk

from recsys.retrieval.dot import DotRetriever


@pytest.mark.parametrize("backend", ["torch", "faiss"])
def test_dot_retriever_equals_brute_force(backend: str) -> None:
    cat = make_catalog(num_items=60, batch=4, kind="dot")
    retriever = DotRetriever(cat.similarity, cat.index, backend)
    exclude = random_exclude(4, 60, rate=0.5)
    assert_same_topk(retriever.search(cat.queries, 9, exclude), reference_topk(cat, 9, exclude))
    scores, ids = retriever.search(cat.queries, 70)
    assert (ids[:, 60:] == 0).all() and torch.isinf(scores[:, 60:]).all()
    assert all(sorted(r[:60].tolist()) == list(range(1, 61)) for r in ids)


def test_dot_retriever_rejects_a_mol_index() -> None:
    cat = make_catalog(num_items=10)
    with pytest.raises(ValueError, match="dot-product index"):
        DotRetriever(cat.similarity, cat.index)
