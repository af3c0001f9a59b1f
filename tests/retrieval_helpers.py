"""Small random MoL / dot catalogs and an obvious brute-force reference for the retrievers."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from recsys.retrieval.index import ItemIndex, build_index
from recsys.similarity.dot import DotSimilarity
from recsys.similarity.mol import MoLConfig, MoLSimilarity
from recsys.similarity.parts import QueryParts

DIM = 12
SMALL_MOL = MoLConfig(
    p_q=4, p_x=3, d_p=8, user_id_components=1, user_hash_size=50, mlp_hidden=16, gate_hidden=16
)


@dataclass
class Catalog:
    similarity: torch.nn.Module
    index: ItemIndex
    queries: QueryParts

    @property
    def num_items(self) -> int:
        return self.index.num_items


def make_catalog(
    num_items: int = 60,
    batch: int = 5,
    seed: int = 0,
    kind: str = "mol",
    dtype: torch.dtype = torch.float32,
) -> Catalog:
    """A random similarity (non-zero biases), item table and query batch."""
    torch.manual_seed(seed)
    if kind == "mol":
        sim = MoLSimilarity(SMALL_MOL, DIM)
        with torch.no_grad():
            for p in sim.parameters():
                if p.dim() == 1:
                    p.normal_(0.0, 0.3)
    else:
        sim = DotSimilarity()
    sim.eval()
    item_emb = torch.randn(num_items + 1, DIM)
    item_emb[0] = 0
    index = build_index(sim, item_emb, dtype)
    with torch.no_grad():
        users = torch.arange(batch) - 1  # one unknown user (-1)
        queries = sim.query_parts(torch.randn(batch, DIM), users)
    return Catalog(sim, index, queries)


def reference_topk(
    cat: Catalog, k: int, exclude: torch.Tensor | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Score the whole catalog in one call, mask, sort: the obvious exact answer, padded
    with (-inf, 0) like the retrievers."""
    with torch.no_grad():
        scores = cat.similarity.score_all(cat.queries, cat.index.parts.to(dtype=torch.float32))
    scores = scores.float().clone()
    scores[:, 0] = float("-inf")
    if exclude is not None:
        scores[exclude] = float("-inf")
    order = scores.argsort(dim=1, descending=True)[:, :k]
    top = scores.gather(1, order)
    ids = order.masked_fill(top == float("-inf"), 0)
    if k > top.shape[1]:
        pad = k - top.shape[1]
        top = torch.cat([top, torch.full((top.shape[0], pad), float("-inf"))], dim=1)
        ids = torch.cat([ids, torch.zeros(ids.shape[0], pad, dtype=ids.dtype)], dim=1)
    return top, ids


def assert_same_topk(got, ref, atol: float = 1e-4) -> None:
    """Same scores (to atol) and the same ids, except where near-ties make order arbitrary."""
    (gs, gi), (rs, ri) = got, ref
    assert gs.shape == rs.shape and gi.shape == ri.shape
    finite = torch.isfinite(rs)
    assert torch.equal(torch.isfinite(gs), finite)
    assert torch.allclose(gs[finite], rs[finite], atol=atol)
    assert torch.equal(gi[~finite], torch.zeros_like(gi[~finite]))
    for b in range(rs.shape[0]):
        for pos in range(rs.shape[1]):
            if gi[b, pos] == ri[b, pos] or not finite[b, pos]:
                continue
            # A swapped id is only acceptable when its score ties the reference's.
            near = (rs[b] - rs[b, pos]).abs() <= atol
            assert gi[b, pos] in ri[b][near], f"row {b} slot {pos}: {gi[b, pos]} vs {ri[b, pos]}"


def random_exclude(batch: int, num_items: int, rate: float = 0.3, seed: int = 1) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    mask = torch.rand(batch, num_items + 1, generator=g) < rate
    mask[:, 0] = True
    return mask


def toy_dataset(path, num_users: int = 150, num_items: int = 120, seed: int = 0):
    """A small dataset directory with planted structure (users walk the item cycle with a
    per-user stride), loaded back as a SequenceDataset."""
    import numpy as np
    import polars as pl

    from recsys.dataset import load_dataset, write_dataset

    rng = np.random.default_rng(seed)
    seqs = []
    for _ in range(num_users):
        n = int(rng.integers(6, 25))
        walk = (
            int(rng.integers(0, num_items)) + int(rng.integers(1, 4)) * np.arange(n)
        ) % num_items
        seqs.append((walk + 1).astype(np.int32).tolist())
    flat = np.concatenate([np.asarray(s) for s in seqs])
    items = pl.DataFrame(
        {
            "item_id": pl.Series(np.arange(1, num_items + 1), dtype=pl.Int32),
            "item_key": [f"i{i}" for i in range(1, num_items + 1)],
            "count": pl.Series(np.bincount(flat, minlength=num_items + 1)[1:], dtype=pl.Int64),
            "title": [f"Item {i}" for i in range(1, num_items + 1)],
        }
    )
    users = pl.DataFrame(
        {
            "user_id": pl.Series(np.arange(num_users), dtype=pl.Int32),
            "user_key": [f"u{u}" for u in range(num_users)],
        }
    )
    sequences = pl.DataFrame(
        {"user_id": users["user_id"], "item_ids": pl.Series(seqs, dtype=pl.List(pl.Int32))}
    )
    stats = {"source": {"path": None, "format": "test", "sha256": "abc123"}}
    write_dataset(path, items, users, sequences, stats)
    return load_dataset(path)


def toy_model(num_items: int, seed: int = 0, kind: str = "mol"):
    from recsys.models.sasrec import SASRecConfig
    from recsys.models.seqrec import ModelConfig, SeqRecModel
    from recsys.similarity.dot import DotConfig

    torch.manual_seed(seed)
    similarity = SMALL_MOL if kind == "mol" else DotConfig()
    encoder = SASRecConfig(max_len=16, dim=DIM, num_blocks=1, num_heads=1, dropout=0.1)
    return SeqRecModel(
        ModelConfig(num_items=num_items, encoder=encoder, similarity=similarity)
    ).eval()


def trained_toy(path, steps: int = 60, seed: int = 0):
    """(model, dataset): a toy MoL model after `steps` quick AdamW steps."""
    from benchmarks.quick_train import QuickTrainConfig, quick_train

    data = toy_dataset(path, seed=seed)
    model = toy_model(data.num_items, seed)
    quick_train(model, data, QuickTrainConfig(steps=steps, batch_size=32, negatives=32, seed=seed))
    return model, data
