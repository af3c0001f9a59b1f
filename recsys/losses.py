"""Sampled softmax for autoregressive next-item training (docs/SPEC.md section 2).

Every supervised position has one positive logit and R negative logits; a negative that
equals the positive is masked out. The loss of a row is `logsumexp([pos, negs]) - pos`,
averaged over rows. The similarities use these functions directly (dot product) or
reproduce them inside a chunked, hand-differentiated kernel (MoL, see
`recsys.similarity.mol_fused`), which the tests check against these definitions.

Shapes: n rows (supervised positions), R negatives per row.
"""

from __future__ import annotations

import torch
from torch import Tensor


def sampled_softmax_rows(pos: Tensor, neg: Tensor, neg_valid: Tensor | None = None) -> Tensor:
    """Per-row sampled-softmax loss.

    pos (n,) positive logits, neg (n, R) negative logits, neg_valid (n, R) bool (False =
    masked out, e.g. the negative equals the positive) -> (n,) `logsumexp - pos` (at least fp32).
    """
    logits = torch.cat([pos.unsqueeze(1), neg], dim=1)
    logits = logits.to(torch.promote_types(logits.dtype, torch.float32))  # bf16 -> fp32
    if neg_valid is not None:
        keep = torch.cat([torch.ones_like(neg_valid[:, :1]), neg_valid], dim=1)
        logits = logits.masked_fill(~keep, float("-inf"))
    return torch.logsumexp(logits, dim=1) - logits[:, 0]


def sampled_softmax_loss(pos: Tensor, neg: Tensor, neg_valid: Tensor | None = None) -> Tensor:
    """Mean over rows of `sampled_softmax_rows` (0, still differentiable, for zero rows)."""
    if pos.shape[0] == 0:
        return pos.sum() * 0.0 + neg.sum() * 0.0
    return sampled_softmax_rows(pos, neg, neg_valid).mean()
