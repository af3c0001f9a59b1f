"""Dropout with cheap random masks.

`torch.nn.functional.dropout` draws one 32-bit random number per element (Bernoulli via
mt19937 on CPU), which in this project's CPU training step costs as much as the layer it
regularises. Here one 64-bit draw gives four 16-bit uniforms (the drop probability is exact
to within 2^-16) and the mask is written straight into a float tensor (element-wise
products with bool masks take a slow path on CPU). Used by the encoders (input / linear
dropout), MoL (item, user-id and gate dropout) and the fused MoL kernel.
"""

from __future__ import annotations

import torch
from torch import Tensor


def random_keep(
    shape: torch.Size | tuple[int, ...], p: float, device: torch.device, dtype: torch.dtype
) -> Tensor:
    """Float mask of `shape`: 1.0 (keep) with probability 1 - p, else 0.0 (to 2^-16)."""
    n = 1
    for size in shape:
        n *= size
    words = torch.randint(-(2**63), 2**63 - 1, ((n + 3) // 4,), dtype=torch.int64, device=device)
    threshold = -(2**15) + round(p * 2**16)  # P(int16 uniform < threshold) = p
    keep = torch.empty(shape, dtype=dtype, device=device)
    torch.ge(words.view(torch.int16)[:n].view(shape), threshold, out=keep)
    return keep


def dropout(x: Tensor, p: float, training: bool) -> Tensor:
    """Inverted dropout like `F.dropout(x, p, training)`, with `random_keep` masks."""
    if not training or p == 0.0:
        return x
    # The scalar rescale is in place: the product's output is not saved for backward.
    return (x * random_keep(x.shape, p, x.device, x.dtype)).mul_(1.0 / (1.0 - p))
