"""The item index: the item half of a learned similarity, precomputed once per catalog.

MoL (Ding & Zhai, WWW'25, arXiv 2407.15462) splits into a query half and an item half; the
item half (components g, item-only gate term a_x) depends on the item alone, so retrieval
computes it once and keeps it beside the raw item embeddings. Row i is item id i; row 0 is
the padding item, never returned by any retriever.

Storage precision vs compute precision: the index may be stored in bf16 (halves memory and
the bandwidth of every pass over the catalog; the default on CUDA, `default_index_dtype`).
MoL scores are always computed in float32 from the stored values (`score_slice`,
`score_ids` upcast the rows they read), so a bf16 index changes the item components by
bf16 rounding and nothing else.
Only the inner-product passes of the candidate searches and of the bound run in the index
dtype (`recsys.retrieval.topk`, `recsys.retrieval.bounded`).

Shapes: B queries, N catalog size (ids 1..N), X items, C candidates per query, D model dim,
P_X item components, d_P component dim, P = P_Q * P_X.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import torch
from torch import Tensor, nn

from recsys.retrieval.topk import NEG_INF, dedup_ids, excluded_ids, topk_padded
from recsys.similarity.parts import ItemParts, QueryParts

INDEX_DTYPES = (torch.float32, torch.bfloat16)
SCORE_DTYPE = torch.float32
BUILD_CHUNK = 65_536
# (query, item) pairs scored at once when rescoring candidates: bounds the (B, C, hidden)
# intermediates of the MoL cross gate and the gathered (B, C, P_X, d_P) components to
# 2-4 MiB, so the gate's element-wise passes run in cache (see brute_force.py;
# benchmarks/results/blocks-1M-cpu.json compares block sizes).
MAX_PAIRS = 1 << 12


class Similarity(Protocol):
    """What retrieval needs from a similarity (`DotSimilarity`, `MoLSimilarity`)."""

    tau: float

    def item_parts(self, e: Tensor) -> ItemParts: ...

    def score_all(self, qp: QueryParts, ip: ItemParts) -> Tensor: ...

    def score_gathered(self, qp: QueryParts, ip: ItemParts, idx: Tensor) -> Tensor: ...

    def score_pairs(self, qp: QueryParts, ip: ItemParts) -> Tensor: ...


@dataclass(frozen=True)
class ItemIndex:
    """Precomputed item side of a similarity for ids 0..N (row 0 = padding).

    g: (N+1, P_X, d_P) L2-normalised item components; a_x: (N+1, P) item-only gate term, or
    None (dot product); item_emb: (N+1, D) raw item embeddings. All three share one device
    and one dtype (float32 or bfloat16).
    """

    g: Tensor
    a_x: Tensor | None
    item_emb: Tensor

    def __post_init__(self) -> None:
        if self.g.dim() != 3:
            raise ValueError(
                f"ItemIndex.g must be (N+1, P_X, d_P), got shape {tuple(self.g.shape)}"
            )
        rows = self.g.shape[0]
        if rows < 2:
            raise ValueError(
                f"ItemIndex.g must hold the padding row and >= 1 item, got {rows} rows"
            )
        if self.item_emb.dim() != 2 or self.item_emb.shape[0] != rows:
            raise ValueError(
                f"ItemIndex.item_emb must be ({rows}, D), got shape {tuple(self.item_emb.shape)}"
            )
        if self.a_x is not None and (self.a_x.dim() != 2 or self.a_x.shape[0] != rows):
            raise ValueError(
                f"ItemIndex.a_x must be ({rows}, P), got shape {tuple(self.a_x.shape)}"
            )
        for name in ("g", "a_x", "item_emb"):
            t = getattr(self, name)
            if t is None:
                continue
            if t.dtype not in INDEX_DTYPES:
                raise ValueError(
                    f"ItemIndex.{name} dtype must be float32 or bfloat16, got {t.dtype}"
                )
            if t.dtype != self.g.dtype or t.device != self.g.device:
                raise ValueError(
                    f"ItemIndex.{name} is {t.dtype} on {t.device}, but g is {self.g.dtype} on "
                    f"{self.g.device}: all index tensors must share dtype and device"
                )

    @property
    def num_items(self) -> int:
        """N (ids 1..N; row 0 is padding)."""
        return self.g.shape[0] - 1

    @property
    def device(self) -> torch.device:
        return self.g.device

    @property
    def dtype(self) -> torch.dtype:
        return self.g.dtype

    @property
    def parts(self) -> ItemParts:
        """The stored item parts (index dtype), rows 0..N."""
        return ItemParts(g=self.g, a_x=self.a_x)

    def to(
        self, device: torch.device | str | None = None, dtype: torch.dtype | None = None
    ) -> ItemIndex:
        """The same index on another device and/or dtype (float32 or bfloat16)."""
        if dtype is not None and dtype not in INDEX_DTYPES:
            raise ValueError(f"index dtype must be float32 or bfloat16, got {dtype}")

        def move(t: Tensor | None) -> Tensor | None:
            return None if t is None else t.to(device=device, dtype=dtype)

        return ItemIndex(g=move(self.g), a_x=move(self.a_x), item_emb=move(self.item_emb))  # type: ignore[arg-type]

    def slice_parts(self, start: int, stop: int) -> ItemParts:
        """Items start:stop as float32 ItemParts (the compute precision of MoL scores)."""
        return self.parts.slice(start, stop).to(dtype=SCORE_DTYPE)

    def gather_parts(self, ids: Tensor) -> ItemParts:
        """ids (X,) long -> float32 ItemParts of those rows."""
        return self.parts.index_select(ids).to(dtype=SCORE_DTYPE)


def default_index_dtype(device: torch.device | str) -> torch.dtype:
    """bf16 on CUDA, float32 on CPU.

    On a CPU a bf16 index makes the candidate search faster, but its rounding alone changes
    part of the exact top-k (bf16 brute force against float32 brute force:
    benchmarks/results/retrieval-100k-cpu.json), while float32 already meets the latency
    targets. So CPU keeps float32 (exact retrievers return exactly the model's top-k);
    pass index_dtype=torch.bfloat16 to trade that for speed."""
    return torch.bfloat16 if torch.device(device).type == "cuda" else torch.float32


@torch.no_grad()
def build_index(
    similarity: nn.Module,
    item_emb: Tensor,
    dtype: torch.dtype = torch.float32,
    chunk: int = BUILD_CHUNK,
) -> ItemIndex:
    """Item parts of every row of item_emb (N+1, D), computed in eval mode, `chunk` rows at a
    time, stored in `dtype`. The similarity's train/eval mode is restored afterwards."""
    if dtype not in INDEX_DTYPES:
        raise ValueError(f"index dtype must be float32 or bfloat16, got {dtype}")
    was_training = similarity.training
    similarity.eval()
    try:
        gs, axs = [], []
        for start in range(0, item_emb.shape[0], chunk):
            ip = similarity.item_parts(item_emb[start : start + chunk].float())  # type: ignore[operator]
            gs.append(ip.g.to(dtype))
            axs.append(None if ip.a_x is None else ip.a_x.to(dtype))
    finally:
        similarity.train(was_training)
    a_x = None if axs[0] is None else torch.cat(axs)  # type: ignore[arg-type]
    return ItemIndex(g=torch.cat(gs), a_x=a_x, item_emb=item_emb.detach().to(dtype))


def index_from_model(model: nn.Module, dtype: torch.dtype = torch.float32) -> ItemIndex:
    """ItemIndex of a `SeqRecModel` (its item embedding table and similarity)."""
    weight = model.get_parameter("item_emb.weight")
    return build_index(model.get_submodule("similarity"), weight, dtype)


def score_slice(
    similarity: Similarity, qp: QueryParts, index: ItemIndex, start: int, stop: int
) -> Tensor:
    """(B, stop-start) float32 full-similarity scores of items start:stop."""
    return similarity.score_all(qp, index.slice_parts(start, stop)).float()


def score_ids(
    similarity: Similarity,
    qp: QueryParts,
    index: ItemIndex,
    ids: Tensor,
    max_pairs: int = MAX_PAIRS,
) -> Tensor:
    """ids (B, C) long -> (B, C) float32 full-similarity scores (a_x is read from the index,
    never recomputed). Scored in column chunks of max_pairs // B to bound the intermediates.
    The score of padding id 0 is computed like any other; callers mask it."""
    b, c = ids.shape
    out = torch.empty(b, c, dtype=SCORE_DTYPE, device=ids.device)
    step = max(1, max_pairs // max(b, 1))
    for start in range(0, c, step):
        cols = ids[:, start : start + step]
        # Gather the chunk's rows once, in pair order, with index_select (contiguous, and
        # in bf16 half the bytes), upcast, and let the similarity view them as (B, C, ...)
        # (cheaper per pair than indexing the index directly, and one copy fewer than a
        # second gather).
        rows = index.gather_parts(cols.reshape(-1))
        out[:, start : start + cols.shape[1]] = similarity.score_pairs(qp, rows)
    return out


def rescore_topk(
    similarity: Similarity,
    qp: QueryParts,
    index: ItemIndex,
    candidates: Tensor,
    k: int,
    exclude: Tensor | None,
    unique: bool = False,
) -> tuple[Tensor, Tensor]:
    """Exact scores of candidate ids (B, C) (duplicates allowed, 0 = none) -> the k best
    admissible ones (scores (B, k), ids (B, k)); padding, repeats and excluded ids never win.
    unique: the caller guarantees no repeated non-zero id within a row (skips the dedup)."""
    cand = candidates if unique else dedup_ids(candidates)
    scores = score_ids(similarity, qp, index, cand)
    scores.masked_fill_(excluded_ids(cand, exclude), NEG_INF)
    return topk_padded(scores, cand, k)
