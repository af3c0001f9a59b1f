"""FAISS (CPU) flat inner-product search, a drop-in for `topk.component_topk`.

One `IndexFlatIP` per item vector slot j holds every item's j-th vector (float32: FAISS
has no bf16 flat index), so a search returns the k best items per (query vector i, item
vector j) pair, exactly like the torch path. FAISS cannot take a per-query mask, so
exclusion is exact by over-fetching: a row with E excluded ids (padding included) asks for
k + E results and drops the excluded ones, which leaves k admissible ones whenever they exist.

Shapes: B queries, Q query vectors per row, J item vectors per item, d dim, N catalog size.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor

from recsys.retrieval.topk import NEG_INF


class FaissComponentSearch:
    """Exact k-best inner-product search per (query vector, item vector slot) with FAISS."""

    def __init__(self, items: Tensor) -> None:
        """items (N+1, J, d), any float dtype, row 0 = padding (never returned)."""
        if items.dim() != 3:
            raise ValueError(f"items must be (N+1, J, d), got shape {tuple(items.shape)}")
        import faiss  # imported here: only this backend needs it

        self.num_rows, self.slots, self.dim = items.shape
        self.indexes: list = []
        host = items.detach().float().cpu().numpy()
        for j in range(self.slots):
            flat = faiss.IndexFlatIP(self.dim)
            flat.add(np.ascontiguousarray(host[:, j, :]))
            self.indexes.append(flat)

    def search(self, queries: Tensor, k: int, exclude: Tensor | None) -> Tensor:
        """queries (B, Q, d), exclude (B, N+1) bool | None -> ids (B, Q*J, k) long on the
        queries' device (pair index i*J + j; 0 where fewer than k admissible items exist)."""
        b, q, d = queries.shape
        if d != self.dim:
            raise ValueError(f"queries have dim {d}, the FAISS index {self.dim}")
        n_excluded = 1  # padding row 0
        if exclude is not None:
            n_excluded += int(exclude[:, 1:].sum(dim=1).max().item())
        fetch = min(self.num_rows, k + n_excluded)
        host = np.ascontiguousarray(queries.detach().float().cpu().reshape(b * q, d).numpy())
        found = [flat.search(host, fetch) for flat in self.indexes]  # (B*Q, fetch) each
        # (J, B*Q, fetch) -> (B, Q, J, fetch) -> (B, Q*J, fetch)
        scores = torch.from_numpy(np.stack([s for s, _ in found])).view(self.slots, b, q, fetch)
        ids = torch.from_numpy(np.stack([i for _, i in found])).view(self.slots, b, q, fetch)
        scores = scores.permute(1, 2, 0, 3).reshape(b, q * self.slots, fetch).to(queries.device)
        ids = ids.permute(1, 2, 0, 3).reshape(b, q * self.slots, fetch).clamp(min=0)
        ids = ids.to(queries.device)
        bad = ids == 0
        if exclude is not None:
            bad |= exclude.gather(1, ids.reshape(b, -1)).view_as(ids)
        scores = scores.masked_fill(bad, NEG_INF)
        top, pos = scores.topk(min(k, fetch), dim=-1)
        out = ids.gather(-1, pos).masked_fill(top == NEG_INF, 0)
        if out.shape[-1] < k:
            out = torch.cat([out, out.new_zeros((b, q * self.slots, k - out.shape[-1]))], dim=-1)
        return out
