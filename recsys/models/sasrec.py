"""SASRec sequential encoder: a causal pre-LN transformer.

Kang & McAuley, "Self-Attentive Sequential Recommendation" (ICDM'18); docs/SPEC.md
section 2. Input `e * sqrt(D) + pos_emb`, dropout, padding zeroed; each block is
`x + Dropout(MHA(LN(x)))` then `x + Dropout(FFN(LN(x)))` with a ReLU point-wise FFN.
Attention uses torch's fused `scaled_dot_product_attention` with a causal mask: sequences
are right-padded, so a valid position never sees padding.

Shapes: B batch, T sequence length (<= max_len), D model dim, H heads.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from recsys.similarity.dropout import dropout


@dataclass(frozen=True)
class SASRecConfig:
    """SASRec hyper-parameters (the common ML-1M setting). ffn_dim None = dim."""

    max_len: int = 200
    dim: int = 50
    num_blocks: int = 2
    num_heads: int = 1
    ffn_dim: int | None = None
    dropout: float = 0.2

    def __post_init__(self) -> None:
        for name in ("max_len", "dim", "num_blocks", "num_heads"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"SASRecConfig.{name} must be an integer >= 1, got {value!r}")
        if self.dim % self.num_heads != 0:
            raise ValueError(f"SASRecConfig.num_heads={self.num_heads} must divide dim={self.dim}")
        f = self.ffn_dim
        if f is not None and (isinstance(f, bool) or not isinstance(f, int) or f < 1):
            raise ValueError(f"SASRecConfig.ffn_dim must be None or an integer >= 1, got {f!r}")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"SASRecConfig.dropout must be in [0, 1), got {self.dropout!r}")

    @property
    def hidden(self) -> int:
        """The FFN width (ffn_dim, defaulting to dim)."""
        return self.ffn_dim if self.ffn_dim is not None else self.dim


class SASRecBlock(nn.Module):
    """Pre-LN causal self-attention + point-wise FFN."""

    def __init__(self, config: SASRecConfig) -> None:
        super().__init__()
        c = config
        self.config = c
        self.attn_norm = nn.LayerNorm(c.dim)
        self.qkv = nn.Linear(c.dim, 3 * c.dim)
        self.proj = nn.Linear(c.dim, c.dim)
        self.ffn_norm = nn.LayerNorm(c.dim)
        self.ffn_in = nn.Linear(c.dim, c.hidden)
        self.ffn_out = nn.Linear(c.hidden, c.dim)
        # Deliberately not the reference's init here (its model-level reset draws every block
        # weight xavier-normal): torch's default Linear init trained SASRec + dot clearly
        # better on Amazon Beauty (benchmarks/results/init-sasrec-beauty-cpu.json).

    def forward(self, x: Tensor, last: Tensor | None = None) -> Tensor:
        """x (B, T, D) -> (B, T, D); with `last` (B,) long only the rows at those positions,
        (B, D): keys and values of every position, one attention query per sequence."""
        c = self.config
        b, t, d = x.shape
        p = c.dropout if self.training else 0.0
        q, k, v = self.qkv(self.attn_norm(x)).view(b, t, 3, c.num_heads, d // c.num_heads).unbind(2)
        if last is None:
            y = F.scaled_dot_product_attention(
                q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2), dropout_p=p, is_causal=True
            )  # (B, H, T, D/H)
            x = x + dropout(self.proj(y.transpose(1, 2).reshape(b, t, d)), p, self.training)
        else:
            rows = torch.arange(b, device=x.device)
            visible = torch.arange(t, device=x.device) <= last.unsqueeze(1)  # (B, T) causal row
            y = F.scaled_dot_product_attention(
                q[rows, last].unsqueeze(2),  # (B, H, 1, D/H)
                k.transpose(1, 2),
                v.transpose(1, 2),
                attn_mask=visible.view(b, 1, 1, t),
                dropout_p=p,
            )  # (B, H, 1, D/H)
            x = x[rows, last] + dropout(self.proj(y.reshape(b, d)), p, self.training)
        h = dropout(F.relu(self.ffn_in(self.ffn_norm(x))), p, self.training)
        return x + dropout(self.ffn_out(h), p, self.training)


class SASRec(nn.Module):
    """Stack of SASRec blocks over item embeddings with learned absolute positions."""

    def __init__(self, config: SASRecConfig) -> None:
        super().__init__()
        self.config = config
        self.pos_emb = nn.Embedding(config.max_len, config.dim)
        # The reference's SASRec keeps its position table at truncated N(0, 1/D).
        nn.init.trunc_normal_(
            self.pos_emb.weight,
            std=config.dim**-0.5,
            a=-2 * config.dim**-0.5,
            b=2 * config.dim**-0.5,
        )
        self.blocks = nn.ModuleList(SASRecBlock(config) for _ in range(config.num_blocks))

    def forward(
        self,
        x: Tensor,
        mask: Tensor,
        timestamps: Tensor | None = None,
        last: Tensor | None = None,
    ) -> Tensor:
        """x (B, T, D) item embeddings, mask (B, T) bool valid; timestamps are unused.

        Returns (B, T, D); padded positions are zero. Position t sees positions <= t only.
        With `last` (B,) long: only the outputs at those positions, (B, D) (zero where the
        position is padding); the last block then computes one attention row per sequence.
        """
        c = self.config
        t = x.shape[1]
        if t > c.max_len:
            raise ValueError(f"sequence length {t} exceeds SASRecConfig.max_len={c.max_len}")
        keep = mask.unsqueeze(-1).to(x.dtype)
        x = x * math.sqrt(c.dim) + self.pos_emb.weight[:t]
        x = dropout(x, c.dropout, self.training) * keep
        if last is None:
            for block in self.blocks:
                x = block(x)
            return x * keep
        for block in self.blocks[:-1]:
            x = block(x)
        rows = torch.arange(x.shape[0], device=x.device)
        return self.blocks[-1](x, last) * keep[rows, last]
