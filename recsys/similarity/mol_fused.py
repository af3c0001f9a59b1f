"""MoL negatives for the sampled softmax: forward and backward of one chunk, by hand.

Training MoL (Ding & Zhai, WWW'25, arXiv 2407.15462) at the ML-1M settings scores ~3.3M
(position, negative) pairs per step, and the per-pair cross gate (P -> 128 -> P) dominates
the step. Materialising every pair's gate activations would take ~6 GB, so the negatives
are scored a chunk of rows at a time and each chunk's gradient is taken right away (the
loss is a scalar: d loss / d inputs is known as soon as a chunk's rows are scored), so
nothing is kept for, or recomputed in, the backward pass, which only scales the stored
gradients. The chunk's derivative is written out by hand rather than left to autograd, so
that

- the large (pairs, hidden) tensors are touched the minimum number of times,
- the matmuls run in the autocast dtype (bf16 matmuls are several times faster than fp32
  on CPUs with AVX512-BF16 or AMX) while the gate softmax, dropout and loss stay in fp32,
- no permutation is done twice and no autograd graph is built per chunk.

On a 2-core AVX512-BF16 CPU it ran faster than autograd through the same maths chunked
the same way (most under bf16 autocast), and `torch.compile` of the whole kernel ran slower
than eager there. Its element-wise gate maths (`gate_chain`: gates, phi, the loss and their
derivatives, about twenty passes over (rows, R, P) tensors in eager) can run compiled into
a few fused loops (`compiled=True`, `training.compile_mol`), with the same random numbers;
it is opt-in because it needs a C++ compiler and compiles in the first steps. Timings:
benchmarks/results/train-step-cpu.json and epoch-ml-1m-compile-cpu.json.

The maths is exactly `MoLSimilarity.score_all` / `score_gathered` followed by
`sampled_softmax_rows` (tests/recsys/similarity/test_mol_fused.py checks loss and every gradient
against autograd). Notation as in mol.py; c rows in the chunk, R negatives per row,
U distinct negative items (per-row negatives), H gate hidden size.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

from recsys.losses import compute_dtype
from recsys.similarity.dropout import random_keep

RENORM_EPS = 1e-6
CHUNK_BYTES = 4 << 20
# A chunk's item gradient is scattered in bf16 when it draws each catalog item at least
# this many times on average (component_grads): the bf16 buffer costs a pass over the
# catalog per chunk, the saving grows with the draws. Check a change with
# `recsys bench mol_chunk --items N --against REV`.
BF16_SCATTER_DRAWS_PER_ITEM = 3


@dataclass
class GateWeights:
    """Cross-gate weights: w1 (H, P), b1 (H,), w2 (P, H), b2 (P,)."""

    w1: Tensor
    b1: Tensor
    w2: Tensor
    b2: Tensor


@dataclass
class ChunkGrads:
    """Gradients of one chunk's summed loss (None where not requested)."""

    loss_sum: Tensor
    pos: Tensor | None
    f: Tensor | None
    a_q: Tensor | None
    g: Tensor | None
    a_x: Tensor | None
    gate: GateWeights | None


# Element types used to move a run of k contiguous bytes as one element (see _swap_middle).
_WIDE = {1: torch.uint8, 2: torch.int16, 4: torch.int32, 8: torch.int64, 16: torch.complex128}


def _swap_middle(x: Tensor, lead: int, a: int, b: int) -> Tensor:
    """x viewed as (lead, a, b, run) -> contiguous (lead, b, a, run), same dtype.

    The run (P_X components) is only 4 elements, and torch's strided copy with such short
    inner runs is several times slower than moving each run as one wide element.
    """
    run = x.numel() // (lead * a * b)
    wide = _WIDE.get(run * x.element_size())
    if wide is None or not x.is_contiguous():
        return x.view(lead, a, b, run).transpose(1, 2).contiguous()
    moved = x.view(wide).view(lead, a, b).transpose(1, 2).contiguous()
    return moved.view(x.dtype).view(lead, b, a, run)


def _logits(fs: Tensor, g: Tensor, g_rows: Tensor | None) -> Tensor:
    """fs (c, P_Q, d) already / tau; g (R, P_X, d) shared, or g_rows (c, R*P_X, d) each
    row's own negatives (then g is not read).

    Returns s (c*R, P) in the compute dtype, P index i * P_X + j.
    """
    c, p_q, d = fs.shape
    p_x = g.shape[1]
    if g_rows is None:
        r = g.shape[0]
        s = fs.reshape(c * p_q, d) @ g.reshape(r * p_x, d).T  # (c*P_Q, R*P_X)
    else:
        r = g_rows.shape[1] // p_x
        s = torch.bmm(fs, g_rows.transpose(1, 2))  # (c, P_Q, R*P_X)
    return _swap_middle(s, c, p_q, r).view(c * r, p_q * p_x)


def gate_chain(
    z_c: Tensor,
    a_q: Tensor,
    ax: Tensor,
    kept: Tensor | None,
    s3: Tensor,
    pos: Tensor,
    valid: Tensor | None,
    offset: Tensor | None,
    need_grads: bool,
    acc: torch.dtype,
) -> tuple[Tensor, ...]:
    """The element-wise part of one chunk, forward and backward: gates, phi, the loss.

    z_c (c, R, P) = cross_out(hidden) in the compute dtype; a_q (c, P) and ax ((R or c, R),
    P) fp32; kept an optional gate-dropout mask (1 = keep, c*R*P elements); s3 (c, R, P)
    component logits (compute dtype); pos (c,); valid (c, R) bool; offset (R,) or (c, R).
    Returns (loss_sum,) without gradients, else (loss_sum, d_pos, d_s (c, R, P) compute
    dtype, d_z (c, R, P) compute dtype, d_a_q (c, P), d_a_x (like ax: per row (c, R, P),
    or summed over the rows (R, P) when the negatives are shared), d_b2 (P,)).
    Pure tensor code so that `torch.compile` can fuse it into a few loops (`compiled=True`
    in `fused_sampled_softmax`).
    """
    z = torch.addcmul(z_c.to(acc), a_q.unsqueeze(1), ax)  # (c, R, P)
    pi = torch.softmax(F.silu(z), dim=-1)
    if kept is not None:
        pi = pi * kept.view_as(pi).to(acc)
        pi = pi / pi.sum(dim=-1, keepdim=True).clamp(min=RENORM_EPS)
    s3 = s3.to(acc)
    phi = (pi * s3).sum(dim=-1)  # (c, R)
    neg = phi if offset is None else phi + offset
    if valid is not None:
        neg = neg.masked_fill(~valid, float("-inf"))
    logits = torch.cat([pos.unsqueeze(1), neg], dim=1)
    lse = torch.logsumexp(logits, dim=1)
    loss_sum = (lse - pos).sum()
    if not need_grads:
        return (loss_sum,)
    prob = torch.exp(logits - lse.unsqueeze(1))  # (c, 1+R); masked entries are 0
    d_pos = prob[:, 0] - 1.0
    d_s = prob[:, 1:].unsqueeze(-1) * pi  # (c, R, P): the direct path of phi = sum pi s
    # Through pi = renorm(keep * softmax(y)), y = SiLU(z): d_y = d_phi * pi * (s - phi),
    # with or without dropout (the renormalisation's and the softmax's correction terms
    # cancel because sum_k pi_k s_k = phi). Exact unless the 1e-6 clamp on the kept mass
    # is active, i.e. every kept gate < 1e-6 (then pi ~ 0 and so is this gradient).
    d_z = torch.ops.aten.silu_backward(d_s * (s3 - phi.unsqueeze(-1)), z)  # (c, R, P)
    d_aq = (d_z * ax).sum(dim=1)
    d_ax = d_z * a_q.unsqueeze(1)
    if ax.dim() == 2:  # negatives shared by the rows
        d_ax = d_ax.sum(dim=0)
    d_b2 = d_z.sum(dim=(0, 1))
    cd = z_c.dtype
    return loss_sum, d_pos, d_s.to(cd), d_z.to(cd), d_aq, d_ax, d_b2


@functools.cache
def _compiled_chain() -> Callable[..., tuple[Tensor, ...]]:
    """`gate_chain` through torch.compile, made once per process (torch compiles it on the
    first call and again, shape-generic, the first time a chunk's row count differs)."""
    return torch.compile(gate_chain)


def gate_mlp(s: Tensor, gate: GateWeights) -> tuple[Tensor, Tensor, Tensor]:
    """The cross gate's MLP over the (pairs, P) component logits s: (hidden_pre, hidden =
    SiLU(hidden_pre), z_c = the gate's output) in the compute dtype."""
    hidden_pre = torch.addmm(gate.b1, s, gate.w1.T)  # (pairs, H)
    hidden = F.silu(hidden_pre)
    return hidden_pre, hidden, torch.addmm(gate.b2, hidden, gate.w2.T)


def gate_mlp_backward(
    d_zc: Tensor,
    d_s: Tensor,
    s: Tensor,
    hidden_pre: Tensor,
    hidden: Tensor,
    gate: GateWeights,
    acc: torch.dtype,
) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """Back through `gate_mlp`: d_zc (pairs, P) the gradient at its output and d_s (pairs,
    P) the logits' own (direct) gradient, both in the compute dtype. Returns (the logits'
    whole gradient (pairs, P), d_w1 (H, P), d_b1 (H,) in acc, d_w2 (P, H))."""
    d_w2 = d_zc.T @ hidden  # (P, H)
    d_hidden_pre = torch.ops.aten.silu_backward(d_zc @ gate.w2, hidden_pre)  # (pairs, H)
    d_b1 = d_hidden_pre.sum(dim=0).to(acc)  # fp32 accumulation inside, one bf16 rounding
    d_w1 = (s.T @ d_hidden_pre).T  # (H, P); this order runs faster on CPU
    return torch.addmm(d_s, d_hidden_pre, gate.w1), d_w1, d_b1, d_w2


def component_grads(
    d_s2: Tensor,
    fs: Tensor,
    g: Tensor,
    g_rows: Tensor | None,
    flat_idx: Tensor | None,
    into: Tensor | None = None,
) -> tuple[Tensor, Tensor]:
    """Back through the component logits s = fs g^T: d_s2 (c*R, P) their gradient. Returns
    d fs (c, P_Q, d) and d g (like g; per-row negatives: added into `into` when given, an
    fp32 (U, P_X, d) buffer, else a new one)."""
    c, p_q, d = fs.shape
    p_x = g.shape[1]
    r = d_s2.shape[0] // c
    d_s4 = _swap_middle(d_s2, c, r, p_q)  # (c, P_Q, R, P_X)
    if g_rows is None:
        d_s_mat = d_s4.view(c * p_q, r * p_x)
        d_fs = d_s_mat @ g.reshape(r * p_x, d)  # (c*P_Q, d)
        d_g = (d_s_mat.T @ fs.reshape(c * p_q, d)).view(r, p_x, d)
        return d_fs.view(c, p_q, d), d_g
    assert flat_idx is not None
    acc = torch.promote_types(fs.dtype, torch.float32)
    d_s_b = d_s4.reshape(c, p_q, r * p_x)
    d_fs = torch.bmm(d_s_b, g_rows)  # (c, P_Q, d)
    buffer = torch.zeros(g.shape, dtype=acc, device=g.device) if into is None else into
    # d g per (row, negative): (c, R*P_X, d), a product over P_Q only, so memory-bound.
    # When the chunk draws each item several times on average (a small catalog), it and its
    # scatter run in the compute dtype, which halves the bytes they move, into a bf16
    # catalog-sized buffer of this chunk's own, then added to the fp32 one: bf16 sums only
    # one chunk's few draws of an item (autocast's own backward of the gather would sum the
    # whole batch's). On a large catalog that buffer costs more than the scatter saves, so
    # d g goes straight into fp32.
    if fs.dtype != acc and BF16_SCATTER_DRAWS_PER_ITEM * g.shape[0] <= c * r:
        d_g_rows = torch.bmm(d_s_b.transpose(1, 2), fs)
        chunk = torch.zeros(g.shape, dtype=fs.dtype, device=g.device)
        chunk.index_add_(0, flat_idx, d_g_rows.view(c * r, p_x, d))
        return d_fs, buffer.add_(chunk)
    d_g_rows = torch.bmm(d_s_b.transpose(1, 2).to(acc), fs.to(acc))
    return d_fs, buffer.index_add_(0, flat_idx, d_g_rows.view(c * r, p_x, d))


def negatives_chunk(
    fs: Tensor,
    g: Tensor,
    a_q: Tensor,
    a_x: Tensor,
    gate: GateWeights,
    pos: Tensor,
    idx: Tensor | None,
    valid: Tensor | None,
    dropout: float,
    training: bool,
    need_grads: bool,
    keep: Tensor | None = None,
    offset: Tensor | None = None,
    into: tuple[Tensor, Tensor] | None = None,
    compiled: bool = False,
) -> ChunkGrads:
    """Summed sampled-softmax loss of c rows against their negatives, and its gradients.

    fs (c, P_Q, d) = f / tau in the compute dtype; g (R or U, P_X, d) compute dtype;
    a_q (c, P); a_x (R or U, P) fp32; gate weights in the compute dtype; pos (c,) fp32
    positive logits; idx (c, R) rows of g per row (None = g are R shared negatives);
    valid (c, R) bool; keep (c*R, P) optional fixed gate-dropout mask, 1 = keep (tests);
    offset (R,) or (c, R) fp32 added to the negatives' logits (the sampling correction,
    see `recsys.losses.sampled_softmax_rows`); it shifts the softmax, not the scores, so
    the gradients through phi are unchanged in form. into (with idx): fp32 (U, P_X, d) and
    (U, P) tensors the chunk's g and a_x gradients are added to in place (and returned),
    so a loop over chunks scatters into one buffer instead of allocating and summing a
    catalog-sized pair per chunk. compiled: run `gate_chain` through torch.compile.
    Gradients are w.r.t. fs (the caller multiplies by 1 / tau), g, a_q, a_x, gate, pos.
    """
    c = fs.shape[0]
    r = g.shape[0] if idx is None else idx.shape[1]
    cd = fs.dtype
    acc = torch.promote_types(cd, torch.float32)  # the gate maths run in fp32 (or fp64)
    p = a_q.shape[1]
    # per-row negatives: gathered once, for the logits and again for d fs (index_select
    # on flat rows: faster on CPU than advanced indexing g[idx])
    flat_idx = None if idx is None else idx.reshape(-1)
    g_rows = (
        None
        if flat_idx is None
        else torch.index_select(g.reshape(g.shape[0], -1), 0, flat_idx).view(c, -1, g.shape[2])
    )
    s = _logits(fs, g, g_rows)  # (c*R, P) compute dtype
    hidden_pre, hidden, z_c = gate_mlp(s, gate)
    z_c = z_c.view(c, r, -1)
    ax = a_x if flat_idx is None else torch.index_select(a_x, 0, flat_idx).view(c, r, -1)
    kept = None
    if training and (dropout > 0.0 or keep is not None):
        kept = random_keep((c, r, p), dropout, fs.device, acc) if keep is None else keep
    chain = _compiled_chain() if compiled else gate_chain
    out = chain(z_c, a_q, ax, kept, s.view(c, r, -1), pos, valid, offset, need_grads, acc)
    loss_sum = out[0].detach()
    if not need_grads:
        return ChunkGrads(loss_sum, None, None, None, None, None, None)
    _, d_pos, d_s, d_zc, d_aq, d_ax_rows, d_b2 = out
    if idx is None:
        d_ax = d_ax_rows
    else:
        assert flat_idx is not None
        d_ax = (torch.zeros_like(a_x) if into is None else into[1]).index_add_(
            0, flat_idx, d_ax_rows.view(c * r, -1)
        )
    d_s2, d_w1, d_b1, d_w2 = gate_mlp_backward(
        d_zc.view(c * r, -1), d_s.view(c * r, -1), s, hidden_pre, hidden, gate, acc
    )
    d_fs, d_g = component_grads(d_s2, fs, g, g_rows, flat_idx, None if into is None else into[0])
    return ChunkGrads(
        loss_sum=loss_sum,
        pos=d_pos,
        f=d_fs.to(acc),
        a_q=d_aq,
        g=d_g.to(acc),
        a_x=d_ax,
        gate=GateWeights(w1=d_w1.to(acc), b1=d_b1, w2=d_w2.to(acc), b2=d_b2),
    )


class _FusedSampledSoftmax(torch.autograd.Function):
    """Mean sampled-softmax loss over MoL negatives; gradients computed chunk by chunk."""

    @staticmethod
    def forward(  # type: ignore[override]
        ctx,
        chunk_rows: int,
        tau: float,
        dropout: float,
        training: bool,
        idx: Tensor | None,
        valid: Tensor | None,
        offset: Tensor | None,
        compiled: bool,
        pos: Tensor,
        f: Tensor,
        a_q: Tensor,
        g: Tensor,
        a_x: Tensor,
        w1: Tensor,
        b1: Tensor,
        w2: Tensor,
        b2: Tensor,
    ) -> Tensor:
        inputs = (pos, f, a_q, g, a_x, w1, b1, w2, b2)
        need = any(ctx.needs_input_grad[8:])
        cd = compute_dtype(f)
        with torch.autocast(f.device.type, enabled=False):
            total, grads = _run_chunks(
                chunk_rows,
                tau,
                dropout,
                training,
                idx,
                valid,
                offset,
                *inputs,
                cd=cd,
                need=need,
                compiled=compiled,
            )
        n = pos.shape[0]
        ctx.grads = [
            None if gr is None else (gr / n).to(t.dtype)
            for gr, t in zip(grads, inputs, strict=True)
        ]
        return total / n

    @staticmethod
    def backward(ctx, grad_out: Tensor) -> tuple[Tensor | None, ...]:
        scaled = [None if gr is None else gr * grad_out for gr in ctx.grads]
        ctx.grads = None
        return (None, None, None, None, None, None, None, None, *scaled)


def _run_chunks(
    chunk_rows: int,
    tau: float,
    dropout: float,
    training: bool,
    idx: Tensor | None,
    valid: Tensor | None,
    offset: Tensor | None,
    pos: Tensor,
    f: Tensor,
    a_q: Tensor,
    g: Tensor,
    a_x: Tensor,
    w1: Tensor,
    b1: Tensor,
    w2: Tensor,
    b2: Tensor,
    cd: torch.dtype,
    need: bool,
    compiled: bool = False,
) -> tuple[Tensor, list[Tensor | None]]:
    """Loop over row chunks; returns (summed loss, summed gradients or Nones)."""
    n = pos.shape[0]
    acc = torch.promote_types(cd, torch.float32)
    fs = (f.to(acc) / tau).to(cd)
    gc = g.to(cd)
    gate = GateWeights(w1.to(cd), b1.to(cd), w2.to(cd), b2.to(cd))
    a_q32, a_x32, pos32 = a_q.to(acc), a_x.to(acc), pos.to(acc)
    total = torch.zeros((), dtype=acc, device=pos.device)
    per_row_offset = offset is not None and offset.dim() == 2
    if offset is not None:
        offset = offset.to(acc)
    rows: list[list[Tensor]] = [[], [], []]  # pos, f, a_q
    shared: list[Tensor | None] = [None] * 6  # g, a_x, w1, b1, w2, b2
    into = None
    if idx is not None and need:  # per-row negatives: every chunk scatters into these
        into = (torch.zeros(g.shape, dtype=acc, device=g.device), a_x32.new_zeros(a_x.shape))
        shared[0], shared[1] = into
    for start in range(0, n, chunk_rows):
        stop = min(start + chunk_rows, n)
        out = negatives_chunk(
            fs[start:stop],
            gc,
            a_q32[start:stop],
            a_x32,
            gate,
            pos32[start:stop],
            None if idx is None else idx[start:stop],
            None if valid is None else valid[start:stop],
            dropout,
            training,
            need,
            offset=offset[start:stop] if offset is not None and per_row_offset else offset,
            into=into,
            compiled=compiled,
        )
        total = total + out.loss_sum
        if not need:
            continue
        assert out.pos is not None and out.f is not None and out.a_q is not None
        assert out.g is not None and out.a_x is not None and out.gate is not None
        rows[0].append(out.pos)
        rows[1].append(out.f / tau)
        rows[2].append(out.a_q)
        parts = (out.g, out.a_x, out.gate.w1, out.gate.b1, out.gate.w2, out.gate.b2)
        for k, part in enumerate(parts):
            if into is not None and k < 2:
                continue  # already added into shared[k]
            prev = shared[k]
            shared[k] = part if prev is None else prev + part
    if not need:
        return total, [None] * 9
    return total, [torch.cat(r) for r in rows] + shared


def fused_sampled_softmax(
    pos: Tensor,
    f: Tensor,
    a_q: Tensor,
    g: Tensor,
    a_x: Tensor,
    gate: GateWeights,
    tau: float,
    dropout: float,
    training: bool,
    idx: Tensor | None = None,
    valid: Tensor | None = None,
    chunk_pairs: int | None = None,
    offset: Tensor | None = None,
    compiled: bool = False,
) -> Tensor:
    """Mean over n rows of `logsumexp([pos, phi(row, negatives) + offset]) - pos` for MoL.

    pos (n,) positive logits; f (n, P_Q, d_P), a_q (n, P) the rows' query parts; g (R or
    U, P_X, d_P), a_x (R or U, P) the negatives' item parts; idx (n, R) rows of g per row
    (None = R negatives shared by all rows); valid (n, R) bool; offset (R,) or (n, R) added
    to the negatives' logits (None = 0; not differentiated). Differentiable in every
    tensor argument; the matmuls run in the autocast dtype when autocast is on.
    chunk_pairs: (row, negative) pairs per chunk (None = about CHUNK_BYTES of hidden
    activations). compiled: run each chunk's element-wise gate maths (`gate_chain`) through
    `torch.compile` (needs a C++ compiler; the first chunks compile it, about 20-60 s).
    """
    n = pos.shape[0]
    if n == 0:
        return pos.sum() * 0.0
    r = g.shape[0] if idx is None else idx.shape[1]
    if chunk_pairs is None:
        # ~4 MB of (pairs, hidden) activations per chunk, so they stay in cache; larger
        # chunks fall out of it.
        itemsize = torch.empty((), dtype=compute_dtype(f)).element_size()
        chunk_pairs = CHUNK_BYTES // (gate.w1.shape[0] * itemsize)
    chunk_rows = max(1, chunk_pairs // max(r, 1))
    tensors = (pos, f, a_q, g, a_x, gate.w1, gate.b1, gate.w2, gate.b2)
    if torch.is_grad_enabled() and any(t.requires_grad for t in tensors):
        return _FusedSampledSoftmax.apply(
            chunk_rows, tau, dropout, training, idx, valid, offset, compiled, *tensors
        )
    cd = compute_dtype(f)
    total, _ = _run_chunks(
        chunk_rows,
        tau,
        dropout,
        training,
        idx,
        valid,
        offset,
        *tensors,
        cd=cd,
        need=False,
        compiled=compiled,
    )
    return total / n
