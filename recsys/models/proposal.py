"""Per-position negatives drawn from the model's own dot product, with the importance weight.

R uniform negatives out of N items rarely include the few items that compete with a
position's target for the top of the ranking, and those decide HR@10. Drawing them from a
proposal that favours high-scoring items, and weighting each draw by how much more often
it is drawn than under uniform sampling, keeps the loss an estimate of the same objective
while its negatives are mostly the informative ones (importance sampling for the softmax:
Bengio & Senecal 2008; Blanc & Rendle, ICML'18).

The proposal of one position with encoder output q is the mixture

    Q(x) = (1 - a) / N + a * softmax_x(cos(q, e_x) / tau),   x = 1..N,

of uniform draws and the plain dot product's softmax (what the auxiliary full-catalog loss
trains, `training.dot_aux_weight`), computed without gradient. Each negative's logit gets
the offset -log(N * Q(x)), so that E[sum over draws of exp(s + offset)] = R * mean_x
exp(s_x): the same expectation as R uniform draws without correction, the authors'
estimator (docs/SPEC.md section 2.5). With a = 0 the offset is 0 and the draws are uniform.
The uniform share keeps every item's Q(x) >= (1 - a) / N, so no weight exceeds 1 / (1 - a).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor

ROW_CHUNK = 1024


@torch.no_grad()
def proposal_draws(
    rows: Tensor, items: Tensor, tau: float, share: float, num: int
) -> tuple[Tensor, Tensor]:
    """rows (n, D) encoder outputs, items (N, D) the catalog's embeddings (item id - 1 =
    row), share a in [0, 1), num R -> (ids (n, R) long in 1..N, offset (n, R) fp32 =
    -log(N * Q(ids))). Rows are handled ROW_CHUNK at a time so that the (rows, N)
    probabilities stay small."""
    n, num_items = rows.shape[0], items.shape[0]
    e = F.normalize(items.detach().float(), dim=-1)
    ids = torch.empty(n, num, dtype=torch.long, device=rows.device)
    offset = torch.empty(n, num, dtype=torch.float32, device=rows.device)
    for start in range(0, n, ROW_CHUNK):
        stop = min(start + ROW_CHUNK, n)
        q = F.normalize(rows[start:stop].detach().float(), dim=-1) / tau
        prob = torch.softmax(q @ e.T, dim=-1).mul_(share).add_((1.0 - share) / num_items)
        cdf = prob.cumsum(dim=-1)
        u = torch.rand(stop - start, num, device=rows.device) * cdf[:, -1:]
        drawn = torch.searchsorted(cdf, u).clamp_(max=num_items - 1)
        ids[start:stop] = drawn + 1
        offset[start:stop] = -torch.log(prob.gather(1, drawn)) - math.log(num_items)
    return ids, offset
