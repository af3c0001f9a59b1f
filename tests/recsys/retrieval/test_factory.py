"""Every retriever name builds, answers the same interface, and exact names agree."""

from __future__ import annotations

import pytest
import torch
from retrieval_helpers import assert_same_topk, make_catalog, random_exclude, reference_topk

from recsys.retrieval.factory import (
    EXACT_RETRIEVERS,
    RETRIEVER_NAMES,
    RetrievalConfig,
    make_retriever,
)


@pytest.mark.parametrize("name", RETRIEVER_NAMES)
def test_every_name_builds_and_searches(name: str) -> None:
    cat = make_catalog(num_items=40, batch=3, kind="dot" if name == "dot" else "mol")
    exclude = random_exclude(3, 40)
    retriever = make_retriever(name, cat.similarity, cat.index, RetrievalConfig(avg_k=40))
    scores, ids = retriever.search(cat.queries, 5, exclude)
    assert scores.shape == ids.shape == (3, 5) and ids.dtype == torch.long
    if name in EXACT_RETRIEVERS:
        assert_same_topk((scores, ids), reference_topk(cat, 5, exclude))


def test_unknown_name_and_bad_config() -> None:
    cat = make_catalog(num_items=10)
    with pytest.raises(ValueError, match="unknown retriever 'nope'"):
        make_retriever("nope", cat.similarity, cat.index)
    with pytest.raises(ValueError, match=r"RetrievalConfig\.avg_k"):
        RetrievalConfig(avg_k=0)
    with pytest.raises(ValueError, match=r"RetrievalConfig\.avg_probe"):
        RetrievalConfig(avg_probe=-1)


def test_avg_probe_applies_to_gated_indexes_only() -> None:
    config = RetrievalConfig(avg_k=8, avg_probe=3)
    mol = make_catalog(num_items=10)
    assert make_retriever("topk_avg", mol.similarity, mol.index, config).probe == 3  # type: ignore[attr-defined]
    dot = make_catalog(num_items=10, kind="dot")
    assert make_retriever("topk_avg", dot.similarity, dot.index, config).probe == 0  # type: ignore[attr-defined]
