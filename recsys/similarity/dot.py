"""Dot-product baseline: cosine similarity divided by a temperature.

The degenerate case of Mixture of Logits (Ding & Zhai, WWW'25, arXiv 2407.15462) with
P_Q = P_X = 1, d_P = D and no gates: `phi(q, x) = <q/|q|, e_x/|e_x|> / tau`.

Shapes: B queries, X items, C candidates per query, D model dim.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, overload

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from recsys.losses import full_softmax_loss, sampled_softmax_loss
from recsys.similarity.parts import ItemParts, QueryParts

NORM_EPS = 1e-6


@dataclass(frozen=True)
class DotConfig:
    """tau: softmax temperature (scores are cosine / tau)."""

    tau: float = 0.05

    def __post_init__(self) -> None:
        if not self.tau > 0:
            raise ValueError(f"DotConfig.tau must be > 0, got {self.tau!r}")


class DotSimilarity(nn.Module):
    """Cosine / tau. No parameters; `dim` is accepted for symmetry with MoL and unused."""

    def __init__(self, config: DotConfig | None = None, dim: int | None = None) -> None:
        super().__init__()
        self.config = config if config is not None else DotConfig()
        self.tau = self.config.tau

    def query_parts(self, q: Tensor, user_ids: Tensor | None = None) -> QueryParts:
        """q (B, D) -> QueryParts(f (B, 1, D) unit norm, a_q None). user_ids are ignored."""
        return QueryParts(f=F.normalize(q, dim=-1, eps=NORM_EPS).unsqueeze(1), a_q=None)

    def item_parts(self, e: Tensor) -> ItemParts:
        """e (X, D) -> ItemParts(g (X, 1, D) unit norm, a_x None)."""
        return ItemParts(g=F.normalize(e, dim=-1, eps=NORM_EPS).unsqueeze(1), a_x=None)

    def score_all(self, qp: QueryParts, ip: ItemParts) -> Tensor:
        """(B, X) scores of every query against every item."""
        return (qp.f[:, 0] @ ip.g[:, 0].transpose(0, 1)) / self.tau

    @overload
    def score_gathered(
        self, qp: QueryParts, ip: ItemParts, idx: Tensor, return_gates: Literal[False] = False
    ) -> Tensor: ...

    @overload
    def score_gathered(
        self, qp: QueryParts, ip: ItemParts, idx: Tensor, return_gates: Literal[True]
    ) -> tuple[Tensor, Tensor | None]: ...

    def score_gathered(
        self, qp: QueryParts, ip: ItemParts, idx: Tensor, return_gates: bool = False
    ) -> Tensor | tuple[Tensor, Tensor | None]:
        """idx (B, C) long rows of `ip` -> (B, C) scores (and gates = None if asked)."""
        g = ip.g[:, 0][idx]  # (B, C, D)
        scores = torch.einsum("bd,bcd->bc", qp.f[:, 0], g) / self.tau
        return (scores, None) if return_gates else scores

    def score_pairs(self, qp: QueryParts, ip: ItemParts) -> Tensor:
        """ip: the parts of B*C items in pair order (row b*C + c = candidate c of query b)
        -> (B, C) scores. `score_gathered` without the gather: the rows are only viewed."""
        g = ip.g[:, 0].view(qp.batch_size, -1, ip.g.shape[-1])  # (B, C, D)
        return torch.einsum("bd,bcd->bc", qp.f[:, 0], g) / self.tau

    def sampled_softmax(
        self,
        qp: QueryParts,
        pos: Tensor,
        ip_neg: ItemParts,
        idx: Tensor | None = None,
        neg_valid: Tensor | None = None,
        offset: Tensor | None = None,
    ) -> Tensor:
        """Mean sampled-softmax loss of n query rows: pos (n,) positive scores, negatives
        shared (idx None, R items) or per row (idx (n, R)), neg_valid (n, R) bool, offset
        (R,) or (n, R) added to the negative logits (the sampling correction; None = 0).
        The (n, R) scores are small for a dot product, so they are materialised in one go.
        """
        neg = self.score_all(qp, ip_neg) if idx is None else self.score_gathered(qp, ip_neg, idx)
        return sampled_softmax_loss(pos, neg, neg_valid, offset)

    def full_softmax(self, qp: QueryParts, pos: Tensor, ip: ItemParts, targets: Tensor) -> Tensor:
        """Mean softmax cross-entropy of n query rows over all X items of `ip`; targets (n,)
        long rows of `ip`. `sampled_softmax` with every item a negative and the positive
        masked among them, computed chunk by chunk (`recsys.losses.full_softmax_loss`),
        which scores the positives itself: `pos` is not needed."""
        return full_softmax_loss(qp.f[:, 0], ip.g[:, 0], targets, 1.0 / self.tau)

    def aux_losses(
        self, user_ids: Tensor | None = None, gates: Tensor | None = None
    ) -> dict[str, Tensor]:
        """The dot product has no auxiliary losses."""
        return {}

    def forward(
        self, query: Tensor, item_emb: Tensor, user_ids: Tensor | None = None
    ) -> tuple[Tensor, dict[str, Tensor]]:
        """query (B, D), item_emb (X, D) -> (scores (B, X), {})."""
        return self.score_all(self.query_parts(query), self.item_parts(item_emb)), {}
