"""HSTU sequential encoder (Hierarchical Sequential Transduction Unit).

Zhai et al., "Actions Speak Louder than Words" (ICML'24, arXiv 2402.17152); docs/SPEC.md
section 2. One layer:

    xh = LayerNorm(x)                              (no affine)
    u, v, q, k = split(SiLU(xh W))                 (one matrix, no bias)
    A = SiLU(q k^T + rab) / n, causal              (n = max_len, pointwise, no softmax)
    out = x + Linear(Dropout(u * LayerNorm(A v)))

`rab` is a learned relative-position bias plus, when timestamps are given, a learned bias
on the log-bucketed time gap; each layer owns its biases, as in the authors' code.
Deliberate deviations from the authors' code: the gap is between the query's own event and
the key's event (`ts_i - ts_j`, known at request time), not between the *next* event and
the key, so serving and offline evaluation need no future timestamp; and the position
bias is applied with or without timestamps (theirs only with).

Sequences are right-padded; padded positions are zeroed at the input and the output.
Shapes: B batch, T sequence length (<= max_len), D model dim, H heads.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from recsys.similarity.dropout import dropout

LN_EPS = 1e-6
# Bucket = floor(log(gap seconds) / 0.301): the authors' log base (0.301 ~ ln 1.35).
TIME_LOG_SCALE = 0.301


@dataclass(frozen=True)
class HSTUConfig:
    """HSTU hyper-parameters; defaults are the authors' MovieLens-1M settings."""

    max_len: int = 200
    dim: int = 50
    num_blocks: int = 8
    num_heads: int = 2
    attn_dim: int = 25
    linear_dim: int = 25
    input_dropout: float = 0.2
    linear_dropout: float = 0.2
    attn_dropout: float = 0.0
    time_bias: bool = True
    time_buckets: int = 128

    def __post_init__(self) -> None:
        for name in ("max_len", "dim", "num_blocks", "num_heads", "attn_dim", "linear_dim"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"HSTUConfig.{name} must be an integer >= 1, got {value!r}")
        for name in ("input_dropout", "linear_dropout", "attn_dropout"):
            value = getattr(self, name)
            if not 0.0 <= value < 1.0:
                raise ValueError(f"HSTUConfig.{name} must be in [0, 1), got {value!r}")
        if not isinstance(self.time_bias, bool):
            raise ValueError(f"HSTUConfig.time_bias must be a bool, got {self.time_bias!r}")
        tb = self.time_buckets
        if isinstance(tb, bool) or not isinstance(tb, int) or tb < 1:
            raise ValueError(f"HSTUConfig.time_buckets must be an integer >= 1, got {tb!r}")


def time_gap_buckets(timestamps: Tensor, num_buckets: int) -> Tensor:
    """timestamps (B, T) long seconds -> (B, T, T) long bucket of |ts_i - ts_j| in [0, buckets]."""
    gap = (timestamps.unsqueeze(2) - timestamps.unsqueeze(1)).abs_().clamp_(min=1)
    return gap.float().log_().mul_(1.0 / TIME_LOG_SCALE).long().clamp_(0, num_buckets)


def compute_dtype(x: Tensor) -> torch.dtype:
    """The autocast dtype when autocast is on for x's device, else x's dtype."""
    if torch.is_autocast_enabled(x.device.type):
        return torch.get_autocast_dtype(x.device.type)
    return x.dtype


class _AddRelativeBias(torch.autograd.Function):
    """scores (B, H, T, T) += rab (B|1, T, T) in place, with a cheap backward.

    Autograd's own backward for the broadcast add reduces over heads with a strided bf16
    sum and scatters with index_add; summing the H head slices and using scatter_add is
    far cheaper on CPU, and the encoder's step time is dominated by (B, H, T, T) passes.
    """

    @staticmethod
    def forward(  # type: ignore[override]
        ctx,
        scores: Tensor,
        pos_w: Tensor,
        time_w: Tensor | None,
        pos_idx: Tensor,
        buckets: Tensor | None,
    ) -> Tensor:
        t = scores.shape[-1]
        rab = pos_w.index_select(0, pos_idx).view(1, t, t)
        if time_w is not None and buckets is not None:
            rab = rab + time_w.index_select(0, buckets.reshape(-1)).view(buckets.shape)
        ctx.mark_dirty(scores)
        ctx.save_for_backward(pos_idx, buckets)
        ctx.sizes = (pos_w.shape[0], None if time_w is None else time_w.shape[0])
        return scores.add_(rab.to(scores.dtype).unsqueeze(1))

    @staticmethod
    def backward(ctx, grad: Tensor) -> tuple[Tensor | None, ...]:
        pos_idx, buckets = ctx.saved_tensors
        acc = torch.promote_types(grad.dtype, torch.float32)
        per_pair = grad[:, 0].to(acc, copy=True)  # (B, T, T): the sum over heads, at least in fp32
        for h in range(1, grad.shape[1]):
            per_pair += grad[:, h]
        n_pos, n_time = ctx.sizes
        d_pos = per_pair.new_zeros(n_pos).index_add_(0, pos_idx, per_pair.sum(0).reshape(-1))
        d_time = None
        if n_time is not None and buckets is not None:
            d_time = per_pair.new_zeros(n_time).scatter_add_(
                0, buckets.reshape(-1), per_pair.reshape(-1)
            )
        return grad, d_pos, d_time, None, None


class RelativeBias(nn.Module):
    """rab (B or 1, T, T) of one layer: learned bias on j - i plus one on the time-gap bucket.

    Each layer owns its biases, as in the authors' code.
    """

    def __init__(self, config: HSTUConfig) -> None:
        super().__init__()
        n = config.max_len
        self.pos_w = nn.Parameter(torch.empty(2 * n - 1).normal_(0.0, 0.02))
        self.time_w = (
            nn.Parameter(torch.empty(config.time_buckets + 1).normal_(0.0, 0.02))
            if config.time_bias
            else None
        )
        pos = torch.arange(n)
        self.rel_idx: Tensor
        self.register_buffer("rel_idx", pos.unsqueeze(0) - pos.unsqueeze(1) + n - 1, False)

    def forward(self, t: int, buckets: Tensor | None) -> Tensor:
        """buckets (B, T, T) long time-gap buckets or None -> rab (B or 1, T, T)."""
        rab = self.pos_w[self.rel_idx[:t, :t]].unsqueeze(0)
        if self.time_w is not None and buckets is not None:
            rab = rab + self.time_w[buckets]
        return rab

    def add_to(self, scores: Tensor, buckets: Tensor | None) -> Tensor:
        """scores (B, H, T, T) + rab broadcast over heads, in place (same maths as forward)."""
        t = scores.shape[-1]
        pos_idx = self.rel_idx[:t, :t].reshape(-1)
        time_w = self.time_w if buckets is not None else None
        return _AddRelativeBias.apply(scores, self.pos_w, time_w, pos_idx, buckets)


class HSTULayer(nn.Module):
    """One HSTU block (see the module docstring)."""

    def __init__(self, config: HSTUConfig) -> None:
        super().__init__()
        c = config
        self.config = c
        h = c.num_heads
        self.split_sizes = [h * c.linear_dim, h * c.linear_dim, h * c.attn_dim, h * c.attn_dim]
        self.uvqk = nn.Parameter(torch.empty(c.dim, sum(self.split_sizes)).normal_(0.0, 0.02))
        self.out = nn.Linear(h * c.linear_dim, c.dim)
        nn.init.xavier_uniform_(self.out.weight)
        self.rel_bias = RelativeBias(c)

    def forward(
        self, x: Tensor, attn_scale: Tensor, buckets: Tensor | None, last: Tensor | None = None
    ) -> Tensor:
        """x (B, T, D); attn_scale (B, 1, T, T) = causal & valid mask / n in the compute
        dtype; buckets (B, T, T) long time-gap buckets or None. Returns (B, T, D), or with
        `last` (B,) long only the rows at positions `last`: (B, D)."""
        c = self.config
        b, t, _ = x.shape
        xh = F.layer_norm(x, (c.dim,), eps=LN_EPS)
        u, v, q, k = F.silu(xh @ self.uvqk).split(self.split_sizes, dim=-1)
        if last is not None:
            return self._last_row(x, u, v, q, k, attn_scale, buckets, last)
        q = q.view(b, t, c.num_heads, c.attn_dim).transpose(1, 2)  # (B, H, T, d_qk)
        k = k.view(b, t, c.num_heads, c.attn_dim).transpose(1, 2)
        v = v.view(b, t, c.num_heads, c.linear_dim).transpose(1, 2)  # (B, H, T, d_v)
        # The (B, H, T, T) work dominates the encoder: keep it in the matmul's dtype (bf16
        # under autocast) and update in place where autograd allows (the matmul backward
        # needs q, k; SiLU's needs its input; the mask product needs only the mask).
        scores = self.rel_bias.add_to(q @ k.transpose(2, 3), buckets)  # (B, H, T, T)
        attn = dropout(F.silu(scores).mul_(attn_scale), c.attn_dropout, self.training)
        av = (attn @ v).transpose(1, 2).reshape(b, t, c.num_heads * c.linear_dim)
        av = F.layer_norm(av, (av.shape[-1],), eps=LN_EPS)
        return x + self.out(dropout(u * av, c.linear_dropout, self.training))

    def _last_row(
        self,
        x: Tensor,
        u: Tensor,
        v: Tensor,
        q: Tensor,
        k: Tensor,
        attn_scale: Tensor,
        buckets: Tensor | None,
        last: Tensor,
    ) -> Tensor:
        """The layer's output at one query row per sequence, (B, D): keys and values of
        every position, the (1, T) attention row of position `last` only (inference: the
        last layer of `HSTU.forward(..., last=...)`)."""
        c = self.config
        b, t, _ = x.shape
        rows = torch.arange(b, device=x.device)
        q = q[rows, last].view(b, c.num_heads, 1, c.attn_dim)
        k = k.view(b, t, c.num_heads, c.attn_dim).transpose(1, 2)
        v = v.view(b, t, c.num_heads, c.linear_dim).transpose(1, 2)
        rb = self.rel_bias
        rab = rb.pos_w[rb.rel_idx[:t, :t][last]]  # (B, T): row `last` of the position bias
        if rb.time_w is not None and buckets is not None:
            rab = rab + rb.time_w[buckets[rows, last]]
        scores = q @ k.transpose(2, 3) + rab.to(q.dtype).view(b, 1, 1, t)  # (B, H, 1, T)
        attn = dropout(
            F.silu(scores) * attn_scale[rows, :, last].unsqueeze(2), c.attn_dropout, self.training
        )
        av = (attn @ v).reshape(b, c.num_heads * c.linear_dim)
        av = F.layer_norm(av, (av.shape[-1],), eps=LN_EPS)
        out = self.out(dropout(u[rows, last] * av, c.linear_dropout, self.training))
        return x[rows, last] + out


class HSTU(nn.Module):
    """Stack of HSTU layers over item embeddings with learned absolute positions."""

    def __init__(self, config: HSTUConfig) -> None:
        super().__init__()
        self.config = config
        self.pos_emb = nn.Embedding(config.max_len, config.dim)
        # The reference's model-level reset gives HSTU's position table xavier-normal
        # (std ~0.09 at ML-1M shapes: (200, 50) here, (211, 50) there), SPEC section 1.
        nn.init.xavier_normal_(self.pos_emb.weight)
        self.layers = nn.ModuleList(HSTULayer(config) for _ in range(config.num_blocks))

    def forward(
        self,
        x: Tensor,
        mask: Tensor,
        timestamps: Tensor | None = None,
        last: Tensor | None = None,
    ) -> Tensor:
        """x (B, T, D) item embeddings, mask (B, T) bool valid, timestamps (B, T) | None.

        Returns (B, T, D); padded positions are zero. Position t sees positions <= t only.
        With `last` (B,) long: only the outputs at those positions, (B, D) (zero where the
        position is padding); the last layer then computes one attention row per sequence.
        """
        c = self.config
        t = x.shape[1]
        if t > c.max_len:
            raise ValueError(f"sequence length {t} exceeds HSTUConfig.max_len={c.max_len}")
        keep = mask.unsqueeze(-1).to(x.dtype)
        x = x * math.sqrt(c.dim) + self.pos_emb.weight[:t]
        x = dropout(x, c.input_dropout, self.training) * keep
        causal = torch.ones(t, t, dtype=torch.bool, device=x.device).tril()
        attn_scale = (causal & mask.unsqueeze(1)).unsqueeze(1).to(compute_dtype(x)) / c.max_len
        buckets = None
        if c.time_bias and timestamps is not None:
            buckets = time_gap_buckets(timestamps, c.time_buckets)
        if last is None:
            for layer in self.layers:
                x = layer(x, attn_scale, buckets)
            return x * keep
        for layer in self.layers[:-1]:
            x = layer(x, attn_scale, buckets)
        rows = torch.arange(x.shape[0], device=x.device)
        return self.layers[-1](x, attn_scale, buckets, last) * keep[rows, last]
