"""An upper bound on the MoL score from the exact gates of a few components.

MoL (docs/SPEC.md section 1) scores phi = sum_k pi_k s_k with pi = softmax(h), h = SiLU(z),
so phi <= max_k s_k: the bound of bounded-exact retrieval (section 3). It is loose where a
component has large logits s_k for every item but the gate gives it little weight: on the
synthetic 1M-item model, for 4 of the 32 benchmark queries one component (the user-id
component, in those we looked at, against item components that share a mean direction)
has larger logits on every item than the top-100 scores, so max_k s_k keeps the whole
catalog for them.

Knowing the exact gate logits h_T of a few components T (the large-logit ones and those
that usually take the gate's mass) is enough for a much tighter bound. With U the other
components, m_U = max_{k in U} s_k, N = sum_T e^{h_k} s_k, D = sum_T e^{h_k} and
W = sum_U e^{h_k}:

    phi = (N + sum_U e^{h_k} s_k) / (D + W) <= (N + W m_U) / (D + W),

a function of W that moves monotonically towards m_U as W grows. h_k = SiLU(z_k) >=
min SiLU > -0.2785 gives W >= |U| e^{-0.2785}, so

    phi <= max(m_U, (N + |U| e^{-0.2785} m_U) / (D + |U| e^{-0.2785})).

The bound needs the exact component logits s and the cross gate's hidden layer (every
gate logit depends on all of s), but only |T| of the P output rows and none of the
softmax. On the 1M synthetic catalog it keeps a small fraction of the items for the
queries that max_k s_k leaves dense, and the gate pass plus rescoring beats brute force on
them (benchmarks/results/bounded-stages-1M-cpu.json). It pays only when few components
reach the threshold: every such component must be in T (an item whose unchosen logit
reaches it cannot be pruned). On the trained ML-1M (P = 32) and Beauty (P = 64) bundles
most components do, and with T that large the bound costs as much as the score
(bounded-exact then uses brute force: `BoundedConfig.gate_share`).

Shapes: B queries, X items, S sample items, P = P_Q * P_X logits, T chosen components,
H gate hidden size.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from recsys.similarity.mol import MoLSimilarity, component_logits
from recsys.similarity.parts import ItemParts, QueryParts

# Strictly below min_z SiLU(z) = -0.278464... (at z ~ -1.2785): a lower bound on every
# unknown gate logit h_k.
SILU_FLOOR = -0.2785
# A component whose logit reaches the cut on more than this share of the sample is always
# chosen; items where an unchosen one does are merely not pruned (they are scored exactly).
REACH = 0.01


@torch.no_grad()
def partial_gate_bound(
    similarity: MoLSimilarity, qp: QueryParts, ip: ItemParts, comps: Tensor
) -> Tensor:
    """Upper bound (B, X) on `similarity.score_all(qp, ip)` from the exact gate logits of
    the components comps (B, T) long (distinct within a row; module docstring). With T = P
    it is the score itself, up to float32 rounding."""
    return GateBound(similarity, qp, comps)(ip)


class GateBound:
    """`partial_gate_bound` for one batch of queries and components, applied to many item
    blocks: what does not depend on the items (the scaled query components, the chosen
    rows of the gate's output layer, the query gate terms, the mask of the chosen logits)
    is prepared once. Shapes as `partial_gate_bound`."""

    def __init__(self, similarity: MoLSimilarity, qp: QueryParts, comps: Tensor) -> None:
        b, p_q, d = qp.f.shape
        self.b, self.t, self.p = b, comps.shape[1], similarity.config.num_logits
        self.fq = (qp.f / similarity.tau).reshape(b * p_q, d)
        self.w1, self.b1 = similarity.cross_in.weight, similarity.cross_in.bias
        # (B, H, T) as a transposed view of (B, T, H) rows: baddbmm is faster with this
        # layout than with a contiguous (B, H, T) copy.
        self.w2 = similarity.cross_out.weight[comps].transpose(1, 2)
        self.b2 = similarity.cross_out.bias[comps].unsqueeze(1)  # (B, 1, T)
        self.a_q = None if qp.a_q is None else qp.a_q.gather(1, comps).unsqueeze(1)
        self.cols = comps.reshape(-1)  # (B*T,) columns of a_x
        self.comps = comps.unsqueeze(1)  # (B, 1, T)
        # Adding it hides the chosen logits (-inf) from the max over the others.
        hide = torch.zeros(b, self.p, dtype=qp.f.dtype, device=qp.f.device)
        self.hide = hide.scatter_(1, comps, float("-inf")).unsqueeze(1)  # (B, 1, P)

    @torch.no_grad()
    def __call__(self, ip: ItemParts) -> Tensor:
        """ip: X items -> (B, X) upper bounds."""
        b, t, p = self.b, self.t, self.p
        x, p_x, d = ip.g.shape
        s = self.fq @ ip.g.reshape(x * p_x, d).T  # (B*P_Q, X*P_X): component_logits
        s = s.view(b, -1, x, p_x).transpose(1, 2).reshape(b, x, p)
        hidden = F.silu(F.linear(s, self.w1, self.b1), inplace=True)  # (B, X, H)
        z = torch.baddbmm(self.b2, hidden, self.w2)  # (B, X, T)
        if self.a_q is not None and ip.a_x is not None:
            a_x = ip.a_x.index_select(1, self.cols).view(x, b, t).transpose(0, 1)
            z.addcmul_(self.a_q, a_x)
        h = F.silu(z, inplace=True)
        s_t = s.gather(2, self.comps.expand(b, x, t))  # (B, X, T)
        if t == p:
            return (torch.softmax(h, dim=-1) * s_t).sum(dim=-1)
        m_u = s.add_(self.hide).amax(dim=-1)  # (B, X); s is ours
        top = h.amax(dim=-1).clamp_(min=SILU_FLOOR)  # shift: no overflow in exp
        e = h.sub_(top.unsqueeze(-1)).exp_()
        w = torch.exp(SILU_FLOOR - top).mul_(p - t)  # the least mass U can hold, same shift
        avg = (e * s_t).sum(dim=-1).addcmul_(w, m_u).div_(e.sum(dim=-1).add_(w))
        return torch.maximum(m_u, avg)


@torch.no_grad()
def reach_share(
    similarity: MoLSimilarity, qp: QueryParts, sample: ItemParts, cut: Tensor
) -> Tensor:
    """(B, P): the share of the `sample` items on which each component's logit reaches the
    query's cut (B,). Components above REACH must have their gates computed (an item whose
    unchosen logit reaches the cut cannot be pruned); `gate_need` counts them."""
    s = component_logits(qp.f, sample.g, similarity.tau)  # (B, S, P)
    return (s >= cut.view(-1, 1, 1)).float().mean(dim=1)


def gate_need(reach: Tensor) -> Tensor:
    """reach (B, P) -> (B,) long: 1 + the components above REACH (at most P), the fewest
    gates worth computing."""
    return (1 + (reach > REACH).sum(dim=1)).clamp(max=reach.shape[1])


@torch.no_grad()
def rank_gate_components(
    similarity: MoLSimilarity, qp: QueryParts, sample: ItemParts, reach: Tensor
) -> Tensor:
    """(B, P) long, best first: the components above REACH (`reach_share`), most often
    first, then those with the most gate mass on the sample."""
    _, pi = similarity.score_all(qp, sample, return_gates=True)
    mass = pi.mean(dim=1)  # (B, P), each in [0, 1]
    key = torch.where(reach > REACH, 2.0 + reach, mass)
    return key.argsort(dim=1, descending=True)


def choose_gate_components(
    similarity: MoLSimilarity, qp: QueryParts, sample: ItemParts, cut: Tensor, t: int
) -> Tensor:
    """(B, T) long: the first T of `rank_gate_components`, T = max(t, the largest
    `gate_need`), at most P."""
    reach = reach_share(similarity, qp, sample, cut)
    order = rank_gate_components(similarity, qp, sample, reach)
    return order[:, : min(order.shape[1], max(t, int(gate_need(reach).max())))]
