"""HSTU and SASRec: causal, padding-invariant, HSTU layer against an explicit loop."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from recsys.models.hstu import HSTU, HSTUConfig, HSTULayer, time_gap_buckets
from recsys.models.sasrec import SASRec, SASRecConfig

HSTU_SMALL = HSTUConfig(max_len=10, dim=8, num_blocks=2, num_heads=2, attn_dim=3, linear_dim=4)
SASREC_SMALL = SASRecConfig(max_len=10, dim=8, num_blocks=2, num_heads=2)


def build(kind: str):
    torch.manual_seed(0)
    enc = HSTU(HSTU_SMALL) if kind == "hstu" else SASRec(SASREC_SMALL)
    return enc.double().eval()


def inputs(b: int, t: int, lengths: list[int]):
    x = torch.randn(b, t, 8, dtype=torch.float64)
    mask = torch.arange(t).unsqueeze(0) < torch.tensor(lengths).unsqueeze(1)
    ts = torch.cumsum(torch.randint(0, 5000, (b, t)), dim=1)
    return x * mask.unsqueeze(-1), mask, ts


@pytest.mark.parametrize("kind", ["hstu", "sasrec"])
def test_causal(kind):
    enc = build(kind)
    x, mask, ts = inputs(2, 8, [8, 8])
    out = enc(x, mask, ts)
    x2, ts2 = x.clone(), ts.clone()
    x2[:, 5] = torch.randn(2, 8, dtype=torch.float64)
    ts2[:, 5:] += 100_000  # a later event happening much later changes nothing before it
    out2 = enc(x2, mask, ts2)
    torch.testing.assert_close(out[:, :5], out2[:, :5])
    assert not torch.allclose(out[:, 5], out2[:, 5])


@pytest.mark.parametrize("kind", ["hstu", "sasrec"])
def test_padding_invariant(kind):
    enc = build(kind)
    x, mask, ts = inputs(3, 6, [6, 4, 1])
    out = enc(x, mask, ts)
    # More right padding, and each row alone, give the same valid outputs.
    pad = F.pad(x, (0, 0, 0, 4))
    out_long = enc(pad, F.pad(mask, (0, 4)), F.pad(ts, (0, 4)))
    torch.testing.assert_close(out_long[:, :6] * mask.unsqueeze(-1), out * mask.unsqueeze(-1))
    for b, length in enumerate([6, 4, 1]):
        alone = enc(x[b : b + 1, :length], mask[b : b + 1, :length], ts[b : b + 1, :length])
        torch.testing.assert_close(alone[0], out[b, :length])
    assert torch.all(out[~mask] == 0)


@pytest.mark.parametrize("kind", ["hstu", "sasrec"])
def test_too_long_sequence_is_rejected(kind):
    enc = build(kind)
    x, mask, _ = inputs(1, 11, [11])
    with pytest.raises(ValueError, match="max_len"):
        enc(x, mask)


def test_time_gap_buckets_hand_values():
    ts = torch.tensor([[0, 1, 2, 100, 10**6]])
    got = time_gap_buckets(ts, 40)[0]
    assert got[0, 0] == 0 and got[1, 0] == 0  # gaps 0 and 1 -> log 1 = 0
    assert got[2, 0] == int(math.log(2) / 0.301)
    assert got[3, 0] == int(math.log(100) / 0.301) == got[0, 3]
    assert time_gap_buckets(ts, 10)[0, 4, 0] == 10  # clamped to the last bucket


def test_hstu_time_bias_is_used_only_with_timestamps():
    enc = build("hstu")
    x, mask, ts = inputs(2, 6, [6, 5])
    with_ts = enc(x, mask, ts)
    assert not torch.allclose(with_ts, enc(x, mask, None))
    torch.manual_seed(0)
    plain = HSTU(HSTUConfig(**{**HSTU_SMALL.__dict__, "time_bias": False})).double().eval()
    torch.testing.assert_close(plain(x, mask, ts), plain(x, mask, None))


def reference_hstu_layer(layer: HSTULayer, x, mask, rab):
    """One HSTU layer written with explicit loops over batch, heads and positions."""
    c = layer.config
    b_count, t, _ = x.shape
    out = x.clone()
    for b in range(b_count):
        xh = F.layer_norm(x[b], (c.dim,), eps=1e-6)
        proj = F.silu(xh @ layer.uvqk)
        hv, ha = c.num_heads * c.linear_dim, c.num_heads * c.attn_dim
        u, v, q, k = (
            proj[:, :hv],
            proj[:, hv : 2 * hv],
            proj[:, 2 * hv : 2 * hv + ha],
            proj[:, 2 * hv + ha :],
        )
        for i in range(t):
            heads = []
            for h in range(c.num_heads):
                acc = torch.zeros(c.linear_dim, dtype=x.dtype)
                qs, vs = (
                    slice(h * c.attn_dim, (h + 1) * c.attn_dim),
                    slice(h * c.linear_dim, (h + 1) * c.linear_dim),
                )
                for j in range(i + 1):
                    if mask[b, j]:
                        a = F.silu(q[i, qs] @ k[j, qs] + rab[b, i, j]) / c.max_len
                        acc = acc + a * v[j, vs]
                heads.append(acc)
            av = F.layer_norm(torch.cat(heads), (hv,), eps=1e-6)
            out[b, i] = x[b, i] + layer.out(u[i] * av)
    return out


def test_hstu_layer_matches_explicit_loop():
    enc = build("hstu")
    x, mask, ts = inputs(2, 5, [5, 3])
    layer = enc.layers[1]
    buckets = time_gap_buckets(ts, HSTU_SMALL.time_buckets)
    rab = layer.rel_bias(5, buckets)
    causal = torch.ones(5, 5, dtype=torch.bool).tril()
    scale = (causal & mask.unsqueeze(1)).unsqueeze(1).double() / HSTU_SMALL.max_len
    got = layer(x, scale, buckets)
    ref = reference_hstu_layer(layer, x, mask, rab.expand(2, 5, 5))
    torch.testing.assert_close(got[mask], ref[mask])
    # The time bias is the layer's own bucket weight.
    assert rab[1, 4, 2] == layer.rel_bias.pos_w[2 - 4 + 9] + layer.rel_bias.time_w[buckets[1, 4, 2]]


def test_relative_position_bias_layout():
    enc = build("hstu")
    bias = enc.layers[0].rel_bias
    rab = bias(4, None)[0]
    n = HSTU_SMALL.max_len
    for i, j in [(0, 0), (3, 1), (1, 3)]:
        assert rab[i, j] == bias.pos_w[j - i + n - 1]
    assert enc.layers[1].rel_bias.pos_w is not bias.pos_w  # one bias per layer


@pytest.mark.parametrize(
    ("cls", "field", "value"),
    [
        (HSTUConfig, "num_blocks", 0),
        (HSTUConfig, "attn_dim", 0),
        (HSTUConfig, "input_dropout", 1.0),
        (HSTUConfig, "time_buckets", 0),
        (HSTUConfig, "time_bias", 1),
        (SASRecConfig, "num_heads", 3),
        (SASRecConfig, "dropout", -0.5),
        (SASRecConfig, "ffn_dim", 0),
        (SASRecConfig, "max_len", 0),
    ],
)
def test_config_validation_names_the_field(cls, field, value):
    with pytest.raises(ValueError, match=field):
        cls(**{field: value})


@pytest.mark.parametrize("with_time", [True, False])
def test_in_place_relative_bias_matches_autograd(with_time):
    enc = build("hstu")
    bias = enc.layers[0].rel_bias
    _, _, ts = inputs(2, 6, [6, 6])
    buckets = time_gap_buckets(ts, HSTU_SMALL.time_buckets) if with_time else None
    scores = torch.randn(2, 2, 6, 6, dtype=torch.float64, requires_grad=True)
    upstream = torch.randn(2, 2, 6, 6, dtype=torch.float64)
    params = [p for p in (bias.pos_w, bias.time_w) if p is not None]
    ref = scores + bias(6, buckets).unsqueeze(1)
    ref_grads = torch.autograd.grad((ref * upstream).sum(), [scores, *params], allow_unused=True)
    got = bias.add_to(scores.clone(), buckets)
    grads = torch.autograd.grad((got * upstream).sum(), [scores, *params], allow_unused=True)
    torch.testing.assert_close(got, ref)
    for a, b in zip(grads, ref_grads, strict=True):
        if b is None:
            assert a is None or not a.any()
        else:
            torch.testing.assert_close(a, b)
