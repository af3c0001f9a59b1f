"""Cheap dropout masks: right probability, right scaling, right gradient."""

from __future__ import annotations

import pytest
import torch

from recsys.similarity.dropout import dropout, random_keep


@pytest.mark.parametrize("p", [0.1, 0.2, 0.5])
def test_random_keep_probability_shape_and_dtype(p):
    torch.manual_seed(0)
    keep = random_keep((250, 401), p, torch.device("cpu"), torch.bfloat16)  # odd size
    assert keep.shape == (250, 401) and keep.dtype == torch.bfloat16
    assert set(keep.unique().tolist()) == {0.0, 1.0}
    assert keep.float().mean().item() == pytest.approx(1 - p, abs=0.01)


def test_dropout_scales_kept_values_and_gradient():
    torch.manual_seed(1)
    x = torch.randn(300, 200, requires_grad=True)
    y = dropout(x, 0.25, training=True)
    kept = y != 0
    torch.testing.assert_close(y[kept], x[kept] / 0.75)
    assert kept.float().mean().item() == pytest.approx(0.75, abs=0.01)
    y.sum().backward()
    torch.testing.assert_close(x.grad, kept.float() / 0.75)
    assert dropout(x, 0.25, training=False) is x
    assert dropout(x, 0.0, training=True) is x
