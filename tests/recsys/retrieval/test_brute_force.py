"""Brute force against the one-shot reference, and its memory bound."""

from __future__ import annotations

import pytest
import torch
from retrieval_helpers import assert_same_topk, make_catalog, random_exclude, reference_topk
from torch.utils._python_dispatch import TorchDispatchMode

from recsys.retrieval.brute_force import BruteForce, BruteForceConfig


@pytest.mark.parametrize("pair_chunk,query_chunk", [(7, 2), (4096, 32), (1, 1)])
def test_brute_force_equals_reference(pair_chunk: int, query_chunk: int) -> None:
    cat = make_catalog(num_items=50, batch=5)
    retriever = BruteForce(cat.similarity, cat.index, BruteForceConfig(pair_chunk, query_chunk))
    exclude = random_exclude(5, 50)
    assert_same_topk(retriever.search(cat.queries, 8, exclude), reference_topk(cat, 8, exclude))
    assert_same_topk(retriever.search(cat.queries, 8), reference_topk(cat, 8))


def test_k_larger_than_catalog_is_padded() -> None:
    cat = make_catalog(num_items=6, batch=3)
    scores, ids = BruteForce(cat.similarity, cat.index).search(cat.queries, 10)
    assert scores.shape == ids.shape == (3, 10)
    assert (ids[:, 6:] == 0).all() and torch.isinf(scores[:, 6:]).all()
    assert all(sorted(row[:6].tolist()) == [1, 2, 3, 4, 5, 6] for row in ids)


def test_bf16_index_scores_like_its_float32_upcast() -> None:
    cat = make_catalog(num_items=40, dtype=torch.bfloat16)
    got = BruteForce(cat.similarity, cat.index, BruteForceConfig(pair_chunk=9)).search(
        cat.queries, 5
    )
    assert got[0].dtype == torch.float32
    assert_same_topk(got, reference_topk(cat, 5))


class LargestAllocation(TorchDispatchMode):
    """Records the largest new storage (bytes) any op allocates; views of existing tensors
    (slices of the inputs) allocate nothing and are not counted."""

    def __init__(self) -> None:
        super().__init__()
        self.largest = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        inputs = {
            t.untyped_storage().data_ptr()
            for t in torch.utils._pytree.tree_leaves((args, kwargs))
            if isinstance(t, torch.Tensor)
        }
        out = func(*args, **(kwargs or {}))
        for t in torch.utils._pytree.tree_leaves(out):
            if isinstance(t, torch.Tensor) and t.untyped_storage().data_ptr() not in inputs:
                self.largest = max(self.largest, t.untyped_storage().nbytes())
        return out


def test_memory_is_bounded_by_the_chunk_sizes_not_the_catalog() -> None:
    config = BruteForceConfig(pair_chunk=256, query_chunk=4)
    k, largest = 10, {}
    for n in (300, 6000):
        cat = make_catalog(num_items=n, batch=8)
        exclude = random_exclude(8, n)
        retriever = BruteForce(cat.similarity, cat.index, config)
        with LargestAllocation() as probe:
            retriever.search(cat.queries, k, exclude)
        largest[n] = probe.largest
    sim = cat.similarity.config
    p = sim.p_q * sim.p_x
    # The biggest per-chunk tensors: the gate activations (query_chunk, item_chunk, hidden)
    # and logits (.., P), the float32 item components (item_chunk, P_X, d_P), the merge.
    b, c = config.query_chunk, config.pair_chunk // config.query_chunk
    budget = 4 * max(b * c * max(sim.gate_hidden, p), c * sim.p_x * sim.d_p, b * (k + c))
    assert largest[6000] == largest[300] <= budget
