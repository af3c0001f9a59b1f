"""benchmarks/bench_bound.py: the interval maths of the oracle-box certificate."""

from __future__ import annotations

import sys
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "benchmarks"))

from bench_bound import silu_range


def test_silu_range_matches_a_dense_grid():
    torch.manual_seed(0)
    lo = torch.randn(200) * 3
    hi = lo + torch.rand(200) * 4
    smin, smax = silu_range(lo, hi)
    grid = lo[:, None] + (hi - lo)[:, None] * torch.linspace(0, 1, 20001)[None, :]
    values = F.silu(grid)
    torch.testing.assert_close(smin, values.amin(1), atol=1e-5, rtol=0)
    torch.testing.assert_close(smax, values.amax(1), atol=1e-5, rtol=0)
