"""Mixture of Logits (MoL) learned similarity.

Ding & Zhai, "Retrieval with Learned Similarities" (WWW'25, arXiv 2407.15462), introduced
in Zhai et al., "Revisiting Neural Retrieval on Accelerators" (KDD'23, arXiv 2306.04039).
Every formula below is docs/SPEC.md section 1:

    f_i(q)  P_Q L2-normalised query components (SwiGLU MLP + hashed user-id components)
    g_j(x)  P_X L2-normalised item components (Linear(Dropout(e_x)))
    s_ij  = <f_i, g_j> / tau, flattened to P logits at index i * P_X + j
    z     = a_q * a_x + a_qx,  pi = softmax(SiLU(z))  (training: dropout on pi, renormalise)
    phi   = sum_k pi_k s_k

The item half (g, a_x) depends on the item alone and is computed once per distinct item
(`item_parts`); only the component logits and the cross gate a_qx are evaluated per pair.

Deliberate choices: the U user-id components share one hash (`user_id % hash_size + 1`, row 0
= unknown user, a zero vector that stays zero after normalisation) and live in one table of
width U * d_P; with dense user ids the hash is collision-free while the user count is at
most the hash size (the default 100_000 covers MovieLens-1M; ML-20M's 138k users share
rows); a user id < 0 means "unknown" (cold user). `forward` reports the user-id L2 loss only:
the MI loss is defined on positive pairs, which only the training loss knows, so it is
computed from the positive pairs' gates through `aux_losses`.

Residual MoL (`MoLConfig.residual`, our option, not the paper's): the MLP query components
are `normalize(q + MLP(q))` and the item components `normalize(e_x + Linear(Dropout(e_x)))`,
with both maps' output layers initialised to zero (d_P = D, no user-id components). MoL then
starts as the dot product exactly (every s_ij = cos(q, e_x) / tau, so phi is too, whatever
the gates), and training grows the components apart from it. With
`TrainingConfig.dot_warmup_epochs` the first epochs train that dot product alone; MoL's
maps start learning from an encoder and item table that already rank well. On sparse
catalogs, MoL trained from the reference init collapses its queries onto nearly one vector
(benchmarks/results/collapse-beauty-cpu.json); see docs/RESULTS.md for what the residual
start changes.

Shapes: B queries, X items, C candidates per query, D model dim, P_Q / P_X components,
d_P component dim, P = P_Q * P_X, U user-id components.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, overload

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from recsys.similarity.dropout import dropout, random_keep
from recsys.similarity.mol_fused import CHUNK_BYTES, GateWeights, fused_sampled_softmax
from recsys.similarity.parts import ItemParts, QueryParts

NORM_EPS = 1e-6
ENTROPY_EPS = 1e-6
RENORM_EPS = 1e-6


@dataclass(frozen=True)
class MoLConfig:
    """MoL hyper-parameters; defaults are the authors' MovieLens-1M settings."""

    p_q: int = 8
    p_x: int = 4
    d_p: int = 64
    user_id_components: int = 1
    user_hash_size: int = 100_000
    mlp_hidden: int = 512
    gate_hidden: int = 128
    tau: float = 0.05
    item_dropout: float = 0.1
    user_id_dropout: float = 0.5
    gate_dropout: float = 0.2
    mi_loss_weight: float = 0.001
    user_id_l2_weight: float = 0.1
    residual: bool = False

    def __post_init__(self) -> None:
        for name in ("p_q", "p_x", "d_p", "user_hash_size", "mlp_hidden", "gate_hidden"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"MoLConfig.{name} must be an integer >= 1, got {value!r}")
        u = self.user_id_components
        if isinstance(u, bool) or not isinstance(u, int) or not 0 <= u < self.p_q:
            raise ValueError(
                f"MoLConfig.user_id_components must be an integer in [0, p_q={self.p_q}) "
                f"(at least one query component comes from the MLP), got {u!r}"
            )
        if not self.tau > 0:
            raise ValueError(f"MoLConfig.tau must be > 0, got {self.tau!r}")
        for name in ("item_dropout", "user_id_dropout", "gate_dropout"):
            value = getattr(self, name)
            if not 0.0 <= value < 1.0:
                raise ValueError(f"MoLConfig.{name} must be in [0, 1), got {value!r}")
        for name in ("mi_loss_weight", "user_id_l2_weight"):
            value = getattr(self, name)
            if not value >= 0.0:
                raise ValueError(f"MoLConfig.{name} must be >= 0, got {value!r}")
        if not isinstance(self.residual, bool):
            raise ValueError(f"MoLConfig.residual must be a boolean, got {self.residual!r}")
        if self.residual and u > 0:
            raise ValueError(
                "MoLConfig.residual needs user_id_components = 0 (a user-id component is "
                f"not a map of the query embedding), got {u}"
            )

    @property
    def num_logits(self) -> int:
        """P = P_Q * P_X."""
        return self.p_q * self.p_x


# ---------------------------------------------------------------------------- pure maths


def user_hash_index(user_ids: Tensor | None, hash_size: int, batch: int, device) -> Tensor:
    """user_ids (B,) long (< 0 = unknown) or None -> (B,) rows of the user-id table.

    Known ids map to `id % hash_size + 1`; unknown users map to the padding row 0.
    """
    if user_ids is None:
        return torch.zeros(batch, dtype=torch.long, device=device)
    user_ids = user_ids.long()
    return torch.where(user_ids >= 0, user_ids % hash_size + 1, torch.zeros_like(user_ids))


def component_logits(f: Tensor, g: Tensor, tau: float) -> Tensor:
    """f (B, P_Q, d_P), g (X, P_X, d_P) -> s (B, X, P), s[b, x, i*P_X + j] = <f_i, g_j> / tau."""
    b, p_q, d = f.shape
    x, p_x, _ = g.shape
    # One (B*P_Q, d) x (d, X*P_X) matmul, then bring the item axis before the components.
    s = (f.reshape(b * p_q, d) / tau) @ g.reshape(x * p_x, d).transpose(0, 1)
    return s.view(b, p_q, x, p_x).transpose(1, 2).reshape(b, x, p_q * p_x)


def component_logits_gathered(f: Tensor, g: Tensor, tau: float) -> Tensor:
    """f (B, P_Q, d_P), g (B, C, P_X, d_P) per-query candidates -> s (B, C, P)."""
    b, p_q, d = f.shape
    _, c, p_x, _ = g.shape
    s = torch.bmm(f / tau, g.reshape(b, c * p_x, d).transpose(1, 2))  # (B, P_Q, C*P_X)
    return s.view(b, p_q, c, p_x).transpose(1, 2).reshape(b, c, p_q * p_x)


def cross_gate(s: Tensor, w1: Tensor, b1: Tensor, w2: Tensor, b2: Tensor) -> Tensor:
    """a_qx = Linear(H -> P)(SiLU(Linear(P -> H)(s))): s (..., P) -> (..., P)."""
    return F.linear(F.silu(F.linear(s, w1, b1)), w2, b2)


def gate_and_combine(
    s: Tensor,
    a_q: Tensor | None,
    a_x: Tensor | None,
    a_qx: Tensor,
    dropout: float = 0.0,
    training: bool = False,
    keep: Tensor | None = None,
) -> tuple[Tensor, Tensor]:
    """Gating weights and the combined score.

    s, a_qx (B, X, P); a_q (B, P) or None; a_x (X, P) or (B, X, P) or None.
    z = a_q * a_x + a_qx, pi = softmax(SiLU(z)); in training, dropout on pi with keep
    probability 1 - dropout (or the given boolean `keep` mask (B, X, P)), then renormalise.
    Returns (phi (B, X), pi (B, X, P)).
    """
    z = a_qx
    if a_q is not None and a_x is not None:
        a_x = a_x if a_x.dim() == 3 else a_x.unsqueeze(0)
        z = torch.addcmul(a_qx, a_q.unsqueeze(1), a_x)
    pi = torch.softmax(F.silu(z), dim=-1)
    if training and (dropout > 0.0 or keep is not None):
        if keep is None:
            keep = random_keep(pi.shape, dropout, pi.device, pi.dtype)
        pi = pi * keep.to(pi.dtype)
        # F.dropout's 1/(1-p) scale cancels in the renormalisation, so it is left out.
        pi = pi / pi.sum(dim=-1, keepdim=True).clamp(min=RENORM_EPS)
    return (pi * s).sum(dim=-1), pi


def entropy(p: Tensor) -> Tensor:
    """H(p) = -sum p log(p + 1e-6) over the last axis."""
    return -(p * torch.log(p + ENTROPY_EPS)).sum(dim=-1)


def mi_loss(pi: Tensor) -> Tensor:
    """Load-balancing loss on gates pi (..., P): -H(mean pi) + mean H(pi)."""
    flat = pi.reshape(-1, pi.shape[-1])
    return -entropy(flat.mean(dim=0)) + entropy(flat).mean()


# ---------------------------------------------------------------------------- module


class MoLSimilarity(nn.Module):
    """MoL over a query embedding q (B, D) and raw item embeddings e_x (X, D)."""

    def __init__(self, config: MoLConfig, dim: int) -> None:
        super().__init__()
        c = config
        self.config = c
        self.tau = c.tau
        # A runtime setting, not part of the model: run the negatives' element-wise gate
        # maths through torch.compile (TrainingConfig.compile_mol).
        self.compile_kernel = False
        p = c.num_logits
        self.num_mlp_components = c.p_q - c.user_id_components
        # SwiGLU_{D->H}: one Linear(D -> 2H) holds both halves (gate, value).
        self.query_mlp_in = nn.Linear(dim, 2 * c.mlp_hidden)
        self.query_mlp_out = nn.Linear(c.mlp_hidden, c.d_p * self.num_mlp_components)
        self.user_emb: nn.Embedding | None = None
        if c.user_id_components > 0:
            self.user_emb = nn.Embedding(
                c.user_hash_size + 1, c.user_id_components * c.d_p, padding_idx=0
            )
        self.item_proj = nn.Linear(dim, c.d_p * c.p_x)
        self.query_gate = nn.Sequential(
            nn.Linear(dim, c.gate_hidden), nn.SiLU(), nn.Linear(c.gate_hidden, p, bias=False)
        )
        self.item_gate = nn.Sequential(
            nn.Linear(dim, c.gate_hidden), nn.SiLU(), nn.Linear(c.gate_hidden, p, bias=False)
        )
        self.cross_in = nn.Linear(p, c.gate_hidden)
        self.cross_out = nn.Linear(c.gate_hidden, p)
        if c.residual and c.d_p != dim:
            raise ValueError(
                f"MoLConfig.residual needs d_p equal to the model dim ({dim}), got {c.d_p}"
            )
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """The reference's init (docs/SPEC.md section 1; bailuding/rails).

        Its model-level reset draws every >= 2-D MoL parameter xavier-normal. Its layers are
        built with zero biases (item projection, gates), except the query MLP: the SwiGLU's
        bias is a (1, 2H) parameter, so the reset draws it xavier-normal too (std
        sqrt(2 / (1 + 2H))), and the MLP's output Linear keeps torch's default uniform bias
        (the reference's zero-bias init is not applied to that branch). A non-zero item
        projection bias would make every item's components nearly one vector at init.
        """
        for param in self.parameters():
            if param.dim() >= 2:
                nn.init.xavier_normal_(param)
        for layer in (self.item_proj, self.query_gate[0], self.item_gate[0]):
            assert isinstance(layer, nn.Linear)
            nn.init.zeros_(layer.bias)
        nn.init.zeros_(self.cross_in.bias)
        nn.init.zeros_(self.cross_out.bias)
        with torch.no_grad():
            nn.init.xavier_normal_(self.query_mlp_in.bias.view(1, -1))
            bound = self.query_mlp_out.in_features**-0.5
            nn.init.uniform_(self.query_mlp_out.bias, -bound, bound)
            if self.user_emb is not None:
                self.user_emb.weight[0].zero_()  # unknown users stay a zero component
        if self.config.residual:  # the maps start at zero: MoL starts as the dot product
            for layer in (self.query_mlp_out, self.item_proj):
                nn.init.zeros_(layer.weight)
                nn.init.zeros_(layer.bias)

    def maps_at_zero(self) -> bool:
        """A residual MoL whose query MLP and item projection output layers are all zero:
        it scores exactly as the dot product (module docstring)."""
        if not self.config.residual:
            return False
        layers = (self.query_mlp_out, self.item_proj)
        return not any(layer.weight.any() or layer.bias.any() for layer in layers)

    # -- halves -----------------------------------------------------------------------

    def query_parts(self, q: Tensor, user_ids: Tensor | None = None) -> QueryParts:
        """q (B, D), user_ids (B,) long (< 0 = unknown) or None -> QueryParts.

        f (B, P_Q, d_P): P_Q - U MLP components then U user-id components; a_q (B, P).
        """
        c = self.config
        b = q.shape[0]
        gate, value = self.query_mlp_in(q).chunk(2, dim=-1)
        f = self.query_mlp_out(F.silu(gate) * value).view(b, self.num_mlp_components, c.d_p)
        if c.residual:
            f = f + q.unsqueeze(1).to(f.dtype)
        if self.user_emb is not None:
            idx = user_hash_index(user_ids, c.user_hash_size, b, q.device)
            e_uid = dropout(self.user_emb(idx), c.user_id_dropout, self.training)
            f = torch.cat([f, e_uid.view(b, c.user_id_components, c.d_p).to(f.dtype)], dim=1)
        return QueryParts(f=F.normalize(f, dim=-1, eps=NORM_EPS), a_q=self.query_gate(q))

    def item_parts(self, e: Tensor) -> ItemParts:
        """e (X, D) raw item embeddings -> ItemParts(g (X, P_X, d_P), a_x (X, P))."""
        c = self.config
        g = self.item_proj(dropout(e, c.item_dropout, self.training)).view(e.shape[0], c.p_x, c.d_p)
        if c.residual:
            g = g + e.unsqueeze(1).to(g.dtype)
        g = F.normalize(g, dim=-1, eps=NORM_EPS)
        return ItemParts(g=g, a_x=self.item_gate(e))

    # -- scores ----------------------------------------------------------------------

    def combine(
        self, s: Tensor, a_q: Tensor | None, a_x: Tensor | None, keep: Tensor | None = None
    ) -> tuple[Tensor, Tensor]:
        """Component logits s (B, X, P) + gate terms -> (phi (B, X), pi (B, X, P))."""
        a_qx = cross_gate(
            s, self.cross_in.weight, self.cross_in.bias, self.cross_out.weight, self.cross_out.bias
        )
        return gate_and_combine(
            s, a_q, a_x, a_qx, self.config.gate_dropout, self.training, keep=keep
        )

    @overload
    def score_all(
        self, qp: QueryParts, ip: ItemParts, return_gates: Literal[False] = False
    ) -> Tensor: ...

    @overload
    def score_all(
        self, qp: QueryParts, ip: ItemParts, return_gates: Literal[True]
    ) -> tuple[Tensor, Tensor]: ...

    def score_all(
        self, qp: QueryParts, ip: ItemParts, return_gates: bool = False
    ) -> Tensor | tuple[Tensor, Tensor]:
        """(B, X) scores of every query against every item (and gates (B, X, P) if asked).

        Scored a slice of items at a time, so that the cross gate's (pairs, hidden)
        activations stay near CHUNK_BYTES (in cache); a few times faster than one pass
        over thousands of items, with the same per-pair maths.
        """
        step = max(1, CHUNK_BYTES // (qp.batch_size * self.config.gate_hidden * 4))
        phis, pis = [], []
        for start in range(0, max(ip.num_items, 1), step):
            part = ip.slice(start, min(start + step, ip.num_items))
            s = component_logits(qp.f, part.g, self.tau)
            phi, pi = self.combine(s, qp.a_q, part.a_x)
            phis.append(phi)
            pis.append(pi)
        if len(phis) == 1:
            return (phis[0], pis[0]) if return_gates else phis[0]
        phi = torch.cat(phis, dim=1)
        return (phi, torch.cat(pis, dim=1)) if return_gates else phi

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
        """idx (B, C) long rows of `ip` -> (B, C) scores (and gates (B, C, P) if asked)."""
        s = component_logits_gathered(qp.f, ip.g[idx], self.tau)
        a_x = None if ip.a_x is None else ip.a_x[idx]
        phi, pi = self.combine(s, qp.a_q, a_x)
        return (phi, pi) if return_gates else phi

    @overload
    def score_pairs(
        self, qp: QueryParts, ip: ItemParts, return_gates: Literal[False] = False
    ) -> Tensor: ...

    @overload
    def score_pairs(
        self, qp: QueryParts, ip: ItemParts, return_gates: Literal[True]
    ) -> tuple[Tensor, Tensor]: ...

    def score_pairs(
        self, qp: QueryParts, ip: ItemParts, return_gates: bool = False
    ) -> Tensor | tuple[Tensor, Tensor]:
        """ip: the parts of B*C items in pair order (row b*C + c = candidate c of query b)
        -> (B, C) scores (and gates (B, C, P) if asked). `score_gathered` without the
        gather: the rows are only viewed."""
        b = qp.batch_size
        g = ip.g.view(b, -1, *ip.g.shape[1:])  # (B, C, P_X, d_P)
        s = component_logits_gathered(qp.f, g, self.tau)
        a_x = None if ip.a_x is None else ip.a_x.view(b, g.shape[1], -1)
        phi, pi = self.combine(s, qp.a_q, a_x)
        return (phi, pi) if return_gates else phi

    # -- losses ----------------------------------------------------------------------

    def sampled_softmax(
        self,
        qp: QueryParts,
        pos: Tensor,
        ip_neg: ItemParts,
        idx: Tensor | None = None,
        neg_valid: Tensor | None = None,
        chunk_pairs: int | None = None,
        offset: Tensor | None = None,
    ) -> Tensor:
        """Mean sampled-softmax loss of n query rows: pos (n,) positive scores, negatives
        `ip_neg` shared by all rows (idx None, R items) or per row (idx (n, R) into U items),
        neg_valid (n, R) bool, offset (R,) or (n, R) added to the negative logits (the
        sampling correction; None = 0). Scored in chunks of `chunk_pairs` (row, negative)
        pairs (None = mol_fused's default) with a hand-written backward; equal to
        `score_all` / `score_gathered` followed by `recsys.losses.sampled_softmax_loss`.
        """
        assert qp.a_q is not None and ip_neg.a_x is not None
        gate = GateWeights(
            self.cross_in.weight, self.cross_in.bias, self.cross_out.weight, self.cross_out.bias
        )
        c = self.config
        return fused_sampled_softmax(
            pos,
            qp.f,
            qp.a_q,
            ip_neg.g,
            ip_neg.a_x,
            gate,
            c.tau,
            c.gate_dropout,
            self.training,
            idx,
            neg_valid,
            chunk_pairs,
            offset,
            compiled=self.compile_kernel,
        )

    def full_softmax(self, qp: QueryParts, pos: Tensor, ip: ItemParts, targets: Tensor) -> Tensor:
        """Mean softmax cross-entropy of n query rows over all X items of `ip`: the sampled
        softmax with every item a negative shared by all rows and each row's positive
        (targets (n,) long rows of `ip`; pos (n,) its score) masked among them."""
        items = torch.arange(ip.num_items, device=targets.device)
        return self.sampled_softmax(qp, pos, ip, None, items.unsqueeze(0) != targets.unsqueeze(1))

    def user_id_l2(self, user_ids: Tensor | None, batch: int, device) -> Tensor | None:
        """mean_b ||e_uid(b)||^2 (before dropout), or None without user-id components."""
        if self.user_emb is None:
            return None
        idx = user_hash_index(user_ids, self.config.user_hash_size, batch, device)
        return self.user_emb(idx).pow(2).sum(dim=-1).mean()

    def aux_losses(
        self, user_ids: Tensor | None = None, gates: Tensor | None = None
    ) -> dict[str, Tensor]:
        """Weighted auxiliary losses (training only), ready to add to the main loss.

        user_ids (B,) of the scored queries (B rows of query_parts); gates (..., P) the
        training-time pi of the positive pairs. Keys: "mi_loss", "user_id_l2".
        """
        if not self.training:
            return {}
        c = self.config
        out: dict[str, Tensor] = {}
        if gates is not None:
            out["mi_loss"] = c.mi_loss_weight * mi_loss(gates)
        if self.user_emb is not None and user_ids is not None:
            l2 = self.user_id_l2(user_ids, user_ids.shape[0], user_ids.device)
            assert l2 is not None
            out["user_id_l2"] = c.user_id_l2_weight * l2
        return out

    def forward(
        self, query: Tensor, item_emb: Tensor, user_ids: Tensor | None = None
    ) -> tuple[Tensor, dict[str, Tensor]]:
        """query (B, D), item_emb (X, D) -> (scores (B, X), weighted aux losses).

        The aux losses hold "user_id_l2" in training; the MI loss needs the positive pairs
        and comes from `aux_losses(gates=...)` in the training loss.
        """
        qp = self.query_parts(query, user_ids)
        scores = self.score_all(qp, self.item_parts(item_emb))
        return scores, self.aux_losses(user_ids=user_ids)
