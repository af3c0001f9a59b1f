"""recsys.diagnostics: spread measures against loops and extreme cases."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from recsys.diagnostics import component_cosine, mean_pairwise_cosine, spread
from recsys.models.sasrec import SASRecConfig
from recsys.models.seqrec import ModelConfig, SeqRecModel
from recsys.similarity.dot import DotConfig
from recsys.similarity.mol import MoLConfig


def test_mean_pairwise_cosine_against_a_loop() -> None:
    x = torch.randn(6, 4)
    n = F.normalize(x, dim=-1)
    pairs = [float(n[i] @ n[j]) for i in range(6) for j in range(6) if i != j]
    assert mean_pairwise_cosine(x) == pytest.approx(sum(pairs) / len(pairs), rel=1e-5)
    assert mean_pairwise_cosine(torch.ones(5, 3) * 2) == pytest.approx(1.0)
    assert mean_pairwise_cosine(torch.tensor([[1.0, 0.0], [-1.0, 0.0]])) == pytest.approx(-1.0)


def test_component_cosine_averages_the_components() -> None:
    same = torch.ones(4, 1, 3)
    spread_out = torch.eye(4).unsqueeze(1)  # 4 orthogonal rows
    parts = torch.cat([same, spread_out[:, :, :3]], dim=1)
    expected = (1.0 + mean_pairwise_cosine(spread_out[:, 0, :3])) / 2
    assert component_cosine(parts) == pytest.approx(expected)


@pytest.mark.parametrize("similarity", [DotConfig(), MoLConfig(2, 3, 4, 0, 10, 8, 6)])
def test_spread_keys_and_ranges(similarity) -> None:
    torch.manual_seed(0)
    model = SeqRecModel(ModelConfig(30, SASRecConfig(max_len=8, dim=8, num_heads=2), similarity))
    model.eval()
    ids = torch.randint(1, 31, (5, 8))
    out = spread(model, ids, None, None, torch.arange(1, 31))
    keys = {"enc_cos", "qcomp_cos", "icomp_cos", "score_std"}
    if isinstance(similarity, MoLConfig):
        keys.add("gate_entropy")
        assert 0.0 <= out["gate_entropy"] <= math.log(6) + 1e-6
    assert set(out) == keys
    assert all(-1.0 <= out[k] <= 1.0 for k in ("enc_cos", "qcomp_cos", "icomp_cos"))
    assert out["score_std"] > 0
