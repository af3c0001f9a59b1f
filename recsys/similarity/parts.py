"""The two precomputable halves of a learned similarity: query parts and item parts.

A similarity (dot product or Mixture of Logits, Ding & Zhai, WWW'25, arXiv 2407.15462) is
split into what depends on the query alone and what depends on the item alone, so that the
item half is computed once per distinct item (training) or once per catalog (retrieval), and
only the cheap cross terms are evaluated per (query, item) pair.

Shapes: B queries, X items, P_Q / P_X components, d_P component dim, P = P_Q * P_X.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor


def select_rows(t: Tensor, idx: Tensor) -> Tensor:
    """t.index_select(0, idx) for any t (N, ...), through a 2-D view when t is contiguous:
    on CPU, index_select copies the rows of a 2-D tensor whole, but walks a 3-D one element
    by element, several times slower."""
    if t.dim() <= 2 or not t.is_contiguous():
        return t.index_select(0, idx)
    return t.view(t.shape[0], -1).index_select(0, idx).view(-1, *t.shape[1:])


@dataclass
class QueryParts:
    """Query half of a similarity.

    f: (B, P_Q, d_P) L2-normalised query components.
    a_q: (B, P) query-only gate term, or None (dot product).
    """

    f: Tensor
    a_q: Tensor | None = None

    @property
    def batch_size(self) -> int:
        return self.f.shape[0]

    def to(
        self, device: torch.device | str | None = None, dtype: torch.dtype | None = None
    ) -> QueryParts:
        """Same parts on another device and/or floating dtype."""
        return QueryParts(
            f=self.f.to(device=device, dtype=dtype),
            a_q=None if self.a_q is None else self.a_q.to(device=device, dtype=dtype),
        )

    def index_select(self, idx: Tensor) -> QueryParts:
        """Rows `idx` (K,) long -> QueryParts with K queries."""
        return QueryParts(
            f=select_rows(self.f, idx),
            a_q=None if self.a_q is None else self.a_q.index_select(0, idx),
        )

    def slice(self, start: int, stop: int) -> QueryParts:
        """Rows start:stop (a view, no copy)."""
        return QueryParts(
            f=self.f[start:stop], a_q=None if self.a_q is None else self.a_q[start:stop]
        )


@dataclass
class ItemParts:
    """Item half of a similarity.

    g: (X, P_X, d_P) L2-normalised item components.
    a_x: (X, P) item-only gate term, or None (dot product).
    """

    g: Tensor
    a_x: Tensor | None = None

    @property
    def num_items(self) -> int:
        return self.g.shape[0]

    def to(
        self, device: torch.device | str | None = None, dtype: torch.dtype | None = None
    ) -> ItemParts:
        """Same parts on another device and/or floating dtype."""
        return ItemParts(
            g=self.g.to(device=device, dtype=dtype),
            a_x=None if self.a_x is None else self.a_x.to(device=device, dtype=dtype),
        )

    def index_select(self, idx: Tensor) -> ItemParts:
        """Rows `idx` (K,) long -> ItemParts with K items."""
        return ItemParts(
            g=select_rows(self.g, idx),
            a_x=None if self.a_x is None else self.a_x.index_select(0, idx),
        )

    def slice(self, start: int, stop: int) -> ItemParts:
        """Items start:stop (a view, no copy)."""
        return ItemParts(
            g=self.g[start:stop], a_x=None if self.a_x is None else self.a_x[start:stop]
        )
