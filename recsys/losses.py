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


def sampled_softmax_rows(
    pos: Tensor, neg: Tensor, neg_valid: Tensor | None = None, offset: Tensor | None = None
) -> Tensor:
    """Per-row sampled-softmax loss.

    pos (n,) positive logits, neg (n, R) negative logits, neg_valid (n, R) bool (False =
    masked out, e.g. the negative equals the positive), offset (R,) or (n, R) added to the
    negative logits (the sampling correction: -log(R q_j) for a negative drawn with
    probability q_j, so that the loss estimates the softmax over the whole catalog; None = 0)
    -> (n,) `logsumexp - pos` (at least fp32).
    """
    if offset is not None:
        neg = neg + offset.to(neg.dtype)
    logits = torch.cat([pos.unsqueeze(1), neg], dim=1)
    logits = logits.to(torch.promote_types(logits.dtype, torch.float32))  # bf16 -> fp32
    if neg_valid is not None:
        keep = torch.cat([torch.ones_like(neg_valid[:, :1]), neg_valid], dim=1)
        logits = logits.masked_fill(~keep, float("-inf"))
    return torch.logsumexp(logits, dim=1) - logits[:, 0]


def sampled_softmax_loss(
    pos: Tensor, neg: Tensor, neg_valid: Tensor | None = None, offset: Tensor | None = None
) -> Tensor:
    """Mean over rows of `sampled_softmax_rows` (0, still differentiable, for zero rows)."""
    if pos.shape[0] == 0:
        return pos.sum() * 0.0 + neg.sum() * 0.0
    return sampled_softmax_rows(pos, neg, neg_valid, offset).mean()


FULL_CHUNK_ELEMENTS = 1 << 20  # logits of one chunk: 4 MiB in fp32


def full_softmax_loss(
    q: Tensor, items: Tensor, targets: Tensor, scale: float, chunk_rows: int | None = None
) -> Tensor:
    """Mean softmax cross-entropy of n rows over X items: row i's logits are
    `scale * items @ q[i]`, its target the item row targets[i].

    q (n, D), items (X, D), targets (n,) long in [0, X). Equal to
    `F.cross_entropy(scale * q @ items.T, targets)`, but computed `chunk_rows` rows at a
    time (default: ~1M logits a chunk), each chunk's gradient taken at once (softmax minus
    one-hot, two matmuls), so the (n, X) logits never exist and are read from memory once
    instead of about six times; the backward pass only scales the stored gradients. The
    matmuls run in the autocast dtype when autocast is on, the softmax in fp32 (or the
    inputs' dtype if wider).
    """
    if chunk_rows is None:
        chunk_rows = max(1, FULL_CHUNK_ELEMENTS // max(1, items.shape[0]))
    return _FullSoftmax.apply(chunk_rows, scale, targets, q, items)


def compute_dtype(t: Tensor) -> torch.dtype:
    """The autocast dtype when autocast is on for t's device, else t's own dtype."""
    kind = t.device.type
    return torch.get_autocast_dtype(kind) if torch.is_autocast_enabled(kind) else t.dtype


class _FullSoftmax(torch.autograd.Function):
    @staticmethod
    def forward(  # type: ignore[override]
        ctx, chunk_rows: int, scale: float, targets: Tensor, q: Tensor, items: Tensor
    ) -> Tensor:
        n = q.shape[0]
        cd = compute_dtype(q)
        acc = torch.promote_types(q.dtype, torch.float32)  # softmax / gradient accumulation
        need_q, need_items = ctx.needs_input_grad[3], ctx.needs_input_grad[4]
        with torch.autocast(q.device.type, enabled=False):
            items_c = items.to(cd)
            grad_q = torch.empty(q.shape, dtype=acc, device=q.device) if need_q else None
            grad_items = (
                torch.zeros(items.shape, dtype=acc, device=q.device) if need_items else None
            )
            total = torch.zeros((), dtype=acc, device=q.device)
            for start in range(0, n, chunk_rows):
                qc = q[start : start + chunk_rows].to(cd)
                tc = targets[start : start + chunk_rows].unsqueeze(1)
                logits = torch.mm(qc, items_c.t()).to(acc).mul_(scale)  # (c, X)
                lse = torch.logsumexp(logits, dim=1, keepdim=True)
                total += (lse - logits.gather(1, tc)).sum()
                if grad_q is None and grad_items is None:
                    continue
                # d loss_i / d logits_i = softmax_i - onehot(target_i)
                p = logits.sub_(lse).exp_()
                p.scatter_add_(1, tc, torch.full(tc.shape, -1.0, dtype=acc, device=q.device))
                p = p.mul_(scale).to(cd)
                if grad_q is not None:
                    grad_q[start : start + chunk_rows] = torch.mm(p, items_c)
                if grad_items is not None and cd == acc:
                    grad_items.addmm_(p.t(), qc)
                elif grad_items is not None:
                    grad_items.add_(torch.mm(p.t(), qc))
        ctx.grads = [
            None if gr is None else (gr / n).to(t.dtype)
            for gr, t in ((grad_q, q), (grad_items, items))
        ]
        return total / n

    @staticmethod
    def backward(ctx, grad_out: Tensor) -> tuple[Tensor | None, ...]:
        grad_q, grad_items = (None if gr is None else gr * grad_out for gr in ctx.grads)
        ctx.grads = None
        return None, None, None, grad_q, grad_items
