"""The hand-differentiated MoL sampled softmax against autograd on the plain formulas."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from recsys.losses import sampled_softmax_loss, sampled_softmax_rows
from recsys.similarity.mol import (
    MoLConfig,
    MoLSimilarity,
    component_logits,
    component_logits_gathered,
    cross_gate,
    gate_and_combine,
)
from recsys.similarity.mol_fused import GateWeights, fused_sampled_softmax, negatives_chunk

P_Q, P_X, D, H, TAU = 3, 2, 4, 5, 0.3
P = P_Q * P_X


def tensors(c: int, items: int, dtype=torch.float64):
    g = torch.Generator().manual_seed(7)

    def rnd(*shape, scale=1.0):
        return (torch.randn(*shape, generator=g, dtype=dtype) * scale).requires_grad_()

    return {
        "pos": rnd(c, scale=3.0),
        "f": F.normalize(torch.randn(c, P_Q, D, generator=g, dtype=dtype), dim=-1).requires_grad_(),
        "a_q": rnd(c, P),
        "g": F.normalize(
            torch.randn(items, P_X, D, generator=g, dtype=dtype), dim=-1
        ).requires_grad_(),
        "a_x": rnd(items, P),
        "w1": rnd(H, P, scale=0.5),
        "b1": rnd(H, scale=0.5),
        "w2": rnd(P, H, scale=0.5),
        "b2": rnd(P, scale=0.5),
    }


def reference_rows(t, idx, valid, tau, keep=None, training=False, offset=None):
    """score_all / score_gathered maths + sampled_softmax_rows, through autograd."""
    if idx is None:
        s = component_logits(t["f"], t["g"], tau)
        a_x = t["a_x"]
    else:
        s = component_logits_gathered(t["f"], t["g"][idx], tau)
        a_x = t["a_x"][idx]
    a_qx = cross_gate(s, t["w1"], t["b1"], t["w2"], t["b2"])
    phi, _ = gate_and_combine(s, t["a_q"], a_x, a_qx, 0.0, training, keep=keep)
    return sampled_softmax_rows(t["pos"], phi, valid, offset)


@pytest.mark.parametrize("gathered", [False, True])
def test_chunk_kernel_matches_autograd_with_dropout_mask(gathered):
    c, r, items = 4, 5, 6
    t = tensors(c, items if gathered else r)
    gen = torch.Generator().manual_seed(3)
    idx = torch.randint(0, items, (c, r), generator=gen) if gathered else None
    valid = torch.rand(c, r, generator=gen) > 0.2
    keep = torch.rand(c, r, P, generator=gen) > 0.3
    keep[0, 0] = False  # a pair with every gate dropped
    ref = reference_rows(t, idx, valid, 1.0, keep=keep, training=True).sum()
    grads = torch.autograd.grad(ref, list(t.values()))
    gate = GateWeights(t["w1"], t["b1"], t["w2"], t["b2"])
    with torch.no_grad():
        out = negatives_chunk(
            t["f"],
            t["g"],
            t["a_q"],
            t["a_x"],
            gate,
            t["pos"],
            idx,
            valid,
            0.5,
            True,
            True,
            keep=keep.view(c * r, P),
        )
    torch.testing.assert_close(out.loss_sum, ref)
    got = [
        out.pos,
        out.f,
        out.a_q,
        out.g,
        out.a_x,
        out.gate.w1,
        out.gate.b1,
        out.gate.w2,
        out.gate.b2,
    ]
    for name, a, b in zip(t, got, grads, strict=True):
        torch.testing.assert_close(a, b, msg=lambda m, name=name: f"{name}: {m}")


@pytest.mark.parametrize("gathered", [False, True])
@pytest.mark.parametrize("chunk_pairs", [1, 11, 10_000])
@pytest.mark.parametrize("offset_shape", [None, "shared", "per_row"])
def test_fused_loss_and_gradients_match_autograd(gathered, chunk_pairs, offset_shape):
    c, r, items = 7, 4, 5
    t = tensors(c, items if gathered else r)
    gen = torch.Generator().manual_seed(4)
    idx = torch.randint(0, items, (c, r), generator=gen) if gathered else None
    valid = torch.rand(c, r, generator=gen) > 0.25
    shape = {None: None, "shared": (r,), "per_row": (c, r)}[offset_shape]
    offset = None if shape is None else torch.randn(shape, generator=gen, dtype=torch.float64)
    ref = reference_rows(t, idx, valid, TAU, offset=offset).mean()
    ref_grads = torch.autograd.grad(3.0 * ref, list(t.values()))
    gate = GateWeights(t["w1"], t["b1"], t["w2"], t["b2"])
    args = (t["pos"], t["f"], t["a_q"], t["g"], t["a_x"], gate, TAU, 0.2, False, idx, valid)
    loss = fused_sampled_softmax(*args, chunk_pairs=chunk_pairs, offset=offset)
    grads = torch.autograd.grad(3.0 * loss, list(t.values()))
    torch.testing.assert_close(loss, ref)
    for name, a, b in zip(t, grads, ref_grads, strict=True):
        torch.testing.assert_close(a, b, msg=lambda m, name=name: f"{name}: {m}")
    with torch.no_grad():
        again = fused_sampled_softmax(*args, chunk_pairs=chunk_pairs, offset=offset)
    torch.testing.assert_close(again, ref)


@pytest.mark.parametrize("gathered", [False, True])
def test_compiled_gate_chain_matches_eager(gathered):
    """compiled=True runs the same maths with the same dropout masks: the loss and every
    gradient agree with the eager kernel to float rounding, over chunks of two sizes."""
    c, r, items = 7, 4, 5
    t = tensors(c, items if gathered else r, dtype=torch.float32)
    gen = torch.Generator().manual_seed(5)
    idx = torch.randint(0, items, (c, r), generator=gen) if gathered else None
    valid = torch.rand(c, r, generator=gen) > 0.25
    offset = torch.randn(c, r, generator=gen)
    gate = GateWeights(t["w1"], t["b1"], t["w2"], t["b2"])
    args = (t["pos"], t["f"], t["a_q"], t["g"], t["a_x"], gate, TAU, 0.3, True, idx, valid)
    results = []
    for compiled in (False, True):
        torch.manual_seed(11)  # the same gate-dropout masks
        loss = fused_sampled_softmax(*args, chunk_pairs=12, offset=offset, compiled=compiled)
        results.append((loss, torch.autograd.grad(loss, list(t.values()))))
    (eager, eager_grads), (comp, comp_grads) = results
    torch.testing.assert_close(comp, eager)
    for name, a, b in zip(t, comp_grads, eager_grads, strict=True):
        torch.testing.assert_close(a, b, msg=lambda m, name=name: f"{name}: {m}")


def test_module_sampled_softmax_equals_score_all_then_loss():
    torch.manual_seed(0)
    sim = MoLSimilarity(MoLConfig(p_q=2, p_x=3, d_p=4, mlp_hidden=8, gate_hidden=6), 5).double()
    sim.eval()
    q, e = torch.randn(6, 5, dtype=torch.float64), torch.randn(4, 5, dtype=torch.float64)
    qp, ip = sim.query_parts(q), sim.item_parts(e)
    pos = torch.randn(6, dtype=torch.float64)
    valid = torch.rand(6, 4) > 0.2
    expected = sampled_softmax_loss(pos, sim.score_all(qp, ip), valid)
    torch.testing.assert_close(sim.sampled_softmax(qp, pos, ip, None, valid), expected)
    idx = torch.randint(0, 4, (6, 3))
    expected = sampled_softmax_loss(pos, sim.score_gathered(qp, ip, idx), valid[:, :3])
    torch.testing.assert_close(sim.sampled_softmax(qp, pos, ip, idx, valid[:, :3]), expected)


def test_training_mode_dropout_keeps_the_loss_finite_and_random():
    t = tensors(8, 6, dtype=torch.float32)
    gate = GateWeights(t["w1"], t["b1"], t["w2"], t["b2"])
    args = (t["pos"], t["f"], t["a_q"], t["g"], t["a_x"], gate, TAU, 0.5, True)
    a, b = fused_sampled_softmax(*args), fused_sampled_softmax(*args)
    assert torch.isfinite(a) and a.item() != b.item()
    a.backward()
    assert all(torch.isfinite(v.grad).all() for v in t.values())


# chunk_pairs (per-row negatives, 12 per row, 8 items): 48 = 4 rows a chunk, 48 draws of
# 8 items, so the item gradient is scattered in bf16; 12 = 1 row, fewer draws than 3 per
# item, so it goes straight into fp32 (component_grads)
@pytest.mark.parametrize("chunk_pairs", [None, 48, 12])
def test_bf16_autocast_is_close_to_fp32(chunk_pairs):
    t = tensors(16, 8, dtype=torch.float32)
    gate = GateWeights(t["w1"], t["b1"], t["w2"], t["b2"])
    args = (t["pos"], t["f"], t["a_q"], t["g"], t["a_x"], gate, TAU, 0.0, False)
    idx = torch.randint(0, 8, (16, 12), generator=torch.Generator().manual_seed(5))
    kwargs = {} if chunk_pairs is None else {"idx": idx, "chunk_pairs": chunk_pairs}
    ref = fused_sampled_softmax(*args, **kwargs)
    ref_grads = torch.autograd.grad(ref, list(t.values()))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        low = fused_sampled_softmax(*args, **kwargs)
    grads = torch.autograd.grad(low, list(t.values()))
    assert low.dtype == torch.float32
    assert low.item() == pytest.approx(ref.item(), rel=0.03)
    for a, b in zip(grads, ref_grads, strict=True):
        assert a.dtype == b.dtype
        assert F.cosine_similarity(a.flatten(), b.flatten(), dim=0) > 0.98


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float32, torch.float64, torch.int8])
@pytest.mark.parametrize("run", [4, 3])
def test_swap_middle_equals_plain_permute(dtype, run):
    from recsys.similarity.mol_fused import _swap_middle

    x = (torch.randn(3, 5, 7, run) * 50).to(dtype)
    expected = x.transpose(1, 2).contiguous()
    got = _swap_middle(x.reshape(15, 7 * run), 3, 5, 7)
    assert got.shape == (3, 7, 5, run) and got.is_contiguous()
    assert torch.equal(got, expected)
