"""Representation-spread diagnostics: is a model collapsing onto one ranking for everyone?

A sequential recommender can fit its training loss by ranking the same popular items first
for every user. The symptom is a loss of spread: every user's query (and with MoL, every
query component) points the same way, the item components share one direction, the scores
of one user barely differ across items, and the top-10 lists of all users hold a few
items (coverage@10, in `recsys.metrics`). These measures are logged at every validation
(`valid/spread/*`, see recsys.training.module) and by `benchmarks/bench_collapse.py`.

- `mean_pairwise_cosine(x)`: near 0 for spread-out rows, near 1 for one shared vector;
- `spread(model, ...)`: the encoder outputs, the query and item components and the scores of
  a batch of users against a sample of items, and the gates' mean entropy (MoL).

Shapes: B users, X items, P_Q / P_X components, d_P component dim, P = P_Q * P_X.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from recsys.models.seqrec import SeqRecModel
from recsys.similarity.mol import MoLSimilarity

ENTROPY_EPS = 1e-9


def mean_pairwise_cosine(x: Tensor) -> float:
    """x (n, d), n >= 2 -> mean cosine over the n (n - 1) ordered pairs of distinct rows."""
    x = F.normalize(x.float(), dim=-1)
    c = x @ x.T
    n = x.shape[0]
    return float((c.sum() - c.diagonal().sum()) / (n * (n - 1)))


def component_cosine(parts: Tensor) -> float:
    """parts (n, P, d_P) -> mean over the P components of `mean_pairwise_cosine`."""
    return sum(mean_pairwise_cosine(parts[:, k]) for k in range(parts.shape[1])) / parts.shape[1]


@torch.no_grad()
def spread(
    model: SeqRecModel,
    item_ids: Tensor,
    timestamps: Tensor | None,
    user_ids: Tensor | None,
    items: Tensor,
) -> dict[str, float]:
    """Spread measures of B >= 2 histories (item_ids (B, T)) against items (X,) >= 2 ids.

    Keys: enc_cos (encoder outputs), qcomp_cos, icomp_cos (query / item components),
    score_std (std of a user's scores over the items, averaged over users) and, for MoL,
    gate_entropy (mean entropy of the gates over the B x X pairs; log P = uniform gates).
    The caller chooses train/eval mode; nothing is changed here.
    """
    q = model.query(item_ids, timestamps)
    qp = model.similarity.query_parts(q, user_ids)
    ip = model.item_parts(items)
    out = {
        "enc_cos": mean_pairwise_cosine(q),
        "qcomp_cos": component_cosine(qp.f),
        "icomp_cos": component_cosine(ip.g),
    }
    if isinstance(model.similarity, MoLSimilarity):
        scores, pi = model.similarity.score_all(qp, ip, return_gates=True)
        pi = pi.float()
        out["gate_entropy"] = float(-(pi * torch.log(pi + ENTROPY_EPS)).sum(-1).mean())
    else:
        scores = model.similarity.score_all(qp, ip)
    out["score_std"] = float(scores.float().std(dim=1).mean())
    return out
