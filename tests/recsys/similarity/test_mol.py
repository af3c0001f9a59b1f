"""MoL against an explicit per-pair loop (float64), plus its special cases and losses."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from recsys.similarity.mol import (
    MoLConfig,
    MoLSimilarity,
    component_logits,
    component_logits_gathered,
    cross_gate,
    gate_and_combine,
    mi_loss,
)
from recsys.similarity.parts import ItemParts

SMALL = {"p_q": 3, "p_x": 2, "d_p": 5, "user_hash_size": 7, "mlp_hidden": 6, "gate_hidden": 4}
DIM = 6


def make(**overrides) -> MoLSimilarity:
    torch.manual_seed(0)
    sim = MoLSimilarity(MoLConfig(**{**SMALL, **overrides}), DIM).double()
    # Non-zero biases so that every term is exercised.
    with torch.no_grad():
        for p in sim.parameters():
            if p.dim() == 1:
                p.normal_(0.0, 0.3)
    return sim.eval()


def silu(v) -> float:
    v = float(v)
    return v / (1.0 + math.exp(-v))


def vec(values) -> torch.Tensor:
    return torch.tensor([float(v) for v in values], dtype=torch.float64)


def reference_scores(sim: MoLSimilarity, q, e, user_ids, keep=None):
    """Per-pair Python loop straight from SPEC section 1 (eval mode unless `keep` given)."""
    c = sim.config
    w = {n: p.detach() for n, p in sim.named_parameters()}
    b_count, x_count, p = q.shape[0], e.shape[0], c.num_logits
    out = torch.zeros(b_count, x_count, dtype=torch.float64)
    gates = torch.zeros(b_count, x_count, p, dtype=torch.float64)
    for b in range(b_count):
        pre = w["query_mlp_in.weight"] @ q[b] + w["query_mlp_in.bias"]
        hidden = c.mlp_hidden
        swiglu = vec(silu(pre[h]) * pre[hidden + h] for h in range(hidden))
        mlp = w["query_mlp_out.weight"] @ swiglu + w["query_mlp_out.bias"]
        comps = [mlp[i * c.d_p : (i + 1) * c.d_p] for i in range(c.p_q - c.user_id_components)]
        if c.user_id_components:
            uid = user_ids[b].item() if user_ids is not None else -1
            row = uid % c.user_hash_size + 1 if uid >= 0 else 0
            e_uid = w["user_emb.weight"][row]
            comps += [e_uid[u * c.d_p : (u + 1) * c.d_p] for u in range(c.user_id_components)]
        f = [v / max(v.norm().item(), 1e-6) for v in comps]
        hq = [silu(v) for v in w["query_gate.0.weight"] @ q[b] + w["query_gate.0.bias"]]
        a_q = w["query_gate.2.weight"] @ vec(hq)
        for x in range(x_count):
            proj = w["item_proj.weight"] @ e[x] + w["item_proj.bias"]
            g = [proj[j * c.d_p : (j + 1) * c.d_p] for j in range(c.p_x)]
            g = [v / max(v.norm().item(), 1e-6) for v in g]
            hx = [silu(v) for v in w["item_gate.0.weight"] @ e[x] + w["item_gate.0.bias"]]
            a_x = w["item_gate.2.weight"] @ vec(hx)
            s = vec(f[i] @ g[j] / c.tau for i in range(c.p_q) for j in range(c.p_x))
            hc = [silu(v) for v in w["cross_in.weight"] @ s + w["cross_in.bias"]]
            a_qx = w["cross_out.weight"] @ vec(hc) + w["cross_out.bias"]
            z = [silu(a_q[k] * a_x[k] + a_qx[k]) for k in range(p)]
            m = max(z)
            pi = [math.exp(v - m) for v in z]
            pi = [v / sum(pi) for v in pi]
            if keep is not None:
                pi = [v * float(keep[b, x, k]) for k, v in enumerate(pi)]
                pi = [v / max(sum(pi), 1e-6) for v in pi]
            gates[b, x] = vec(pi)
            out[b, x] = sum(pi[k] * s[k].item() for k in range(p))
    return out, gates


def test_mol_matches_per_pair_loop_eval():
    sim = make()
    q, e = torch.randn(3, DIM, dtype=torch.float64), torch.randn(4, DIM, dtype=torch.float64)
    user_ids = torch.tensor([0, 9, -1])
    scores, aux = sim(q, e, user_ids)
    ref, ref_gates = reference_scores(sim, q, e, user_ids)
    torch.testing.assert_close(scores, ref)
    assert aux == {}
    _, gates = sim.score_all(sim.query_parts(q, user_ids), sim.item_parts(e), return_gates=True)
    torch.testing.assert_close(gates, ref_gates)
    torch.testing.assert_close(gates.sum(-1), torch.ones(3, 4, dtype=torch.float64))


def test_training_formula_with_fixed_dropout_mask():
    sim = make()
    q, e = torch.randn(2, DIM, dtype=torch.float64), torch.randn(5, DIM, dtype=torch.float64)
    qp, ip = sim.query_parts(q), sim.item_parts(e)
    keep = torch.rand(2, 5, sim.config.num_logits) >= 0.4
    keep[0, 0] = False  # every gate dropped: the clamp keeps phi finite (= 0)
    sim.train()
    s = component_logits(qp.f, ip.g, sim.tau)
    phi, pi = sim.combine(s, qp.a_q, ip.a_x, keep=keep)
    sim.eval()
    ref, ref_gates = reference_scores(sim, q, e, None, keep=keep)
    torch.testing.assert_close(phi, ref)
    torch.testing.assert_close(pi, ref_gates)
    assert phi[0, 0] == 0.0


def test_phi_is_a_convex_combination_of_component_logits():
    sim = make()
    q, e = torch.randn(4, DIM, dtype=torch.float64), torch.randn(6, DIM, dtype=torch.float64)
    qp, ip = sim.query_parts(q), sim.item_parts(e)
    s = component_logits(qp.f, ip.g, sim.tau)
    phi = sim.score_all(qp, ip)
    assert torch.all(phi <= s.amax(-1) + 1e-9) and torch.all(phi >= s.amin(-1) - 1e-9)


def test_single_component_reduces_to_scaled_cosine():
    sim = make(p_q=1, p_x=1, user_id_components=0)
    q, e = torch.randn(3, DIM, dtype=torch.float64), torch.randn(4, DIM, dtype=torch.float64)
    gate, value = sim.query_mlp_in(q).chunk(2, dim=-1)
    fq = sim.query_mlp_out(F.silu(gate) * value)
    ge = sim.item_proj(e)
    cosine = F.normalize(fq, dim=-1) @ F.normalize(ge, dim=-1).T
    torch.testing.assert_close(sim(q, e)[0], cosine / sim.tau)


def test_component_logits_layout_and_gathered_version():
    f = F.normalize(torch.randn(2, 3, 4, dtype=torch.float64), dim=-1)
    g = F.normalize(torch.randn(5, 2, 4, dtype=torch.float64), dim=-1)
    s = component_logits(f, g, 0.5)
    for b, x, i, j in [(0, 0, 0, 0), (1, 4, 2, 1), (0, 3, 1, 0)]:
        torch.testing.assert_close(s[b, x, i * 2 + j], (f[b, i] @ g[x, j]) / 0.5)
    idx = torch.tensor([[4, 0, 4], [1, 2, 3]])
    torch.testing.assert_close(
        component_logits_gathered(f, g[idx], 0.5), s.gather(1, idx.unsqueeze(-1).expand(-1, -1, 6))
    )


def test_score_gathered_equals_score_all_gathered():
    sim = make()
    q, e = torch.randn(3, DIM, dtype=torch.float64), torch.randn(7, DIM, dtype=torch.float64)
    qp, ip = sim.query_parts(q, torch.tensor([1, 2, 3])), sim.item_parts(e)
    idx = torch.tensor([[0, 6, 6, 2], [1, 1, 3, 5], [4, 0, 2, 6]])
    full, full_gates = sim.score_all(qp, ip, return_gates=True)
    got, gates = sim.score_gathered(qp, ip, idx, return_gates=True)
    torch.testing.assert_close(got, full.gather(1, idx))
    torch.testing.assert_close(gates, full_gates[torch.arange(3)[:, None], idx])
    torch.testing.assert_close(sim.score_gathered(qp, ip, idx), got)
    # score_pairs: the same scores from rows already gathered in pair order.
    torch.testing.assert_close(sim.score_pairs(qp, ip.index_select(idx.reshape(-1))), got)


def test_item_parts_index_select_matches_subset():
    sim = make()
    e = torch.randn(6, DIM, dtype=torch.float64)
    idx = torch.tensor([5, 1])
    sub = sim.item_parts(e).index_select(idx)
    direct = sim.item_parts(e[idx])
    assert isinstance(sub, ItemParts)
    torch.testing.assert_close(sub.g, direct.g)
    torch.testing.assert_close(sub.a_x, direct.a_x)


def test_mi_loss_hand_computed():
    pi = torch.tensor([[0.5, 0.5], [1.0, 0.0]], dtype=torch.float64)
    eps = 1e-6

    def h(p):
        return -sum(v * math.log(v + eps) for v in p)

    expected = -h([0.75, 0.25]) + (h([0.5, 0.5]) + h([1.0, 0.0])) / 2
    assert mi_loss(pi).item() == pytest.approx(expected, rel=1e-12)
    # Works on (B, X, P) gates too.
    assert mi_loss(pi.view(1, 2, 2)).item() == pytest.approx(expected, rel=1e-12)


def test_aux_losses_are_weighted_and_training_only():
    sim = make()
    user_ids = torch.tensor([3, -1, 10])
    pi = torch.softmax(torch.randn(3, 2, sim.config.num_logits, dtype=torch.float64), -1)
    assert sim.aux_losses(user_ids, pi) == {}
    sim.train()
    aux = sim.aux_losses(user_ids, pi)
    c = sim.config
    torch.testing.assert_close(aux["mi_loss"], c.mi_loss_weight * mi_loss(pi))
    rows = sim.user_emb.weight[torch.tensor([3 % 7 + 1, 0, 10 % 7 + 1])]
    torch.testing.assert_close(aux["user_id_l2"], c.user_id_l2_weight * rows.pow(2).sum(-1).mean())
    _, fwd_aux = sim(
        torch.randn(3, DIM, dtype=torch.float64), torch.randn(2, DIM).double(), user_ids
    )
    assert set(fwd_aux) == {"user_id_l2"}


def test_cold_users_get_a_zero_component_and_finite_gradients():
    sim = make()
    assert torch.all(sim.user_emb.weight[0] == 0)
    q = torch.randn(2, DIM, dtype=torch.float64, requires_grad=True)
    e = torch.randn(3, DIM, dtype=torch.float64)
    qp_none = sim.query_parts(q, None)
    qp_neg = sim.query_parts(q, torch.tensor([-1, -5]))
    assert torch.all(qp_none.f[:, -1] == 0)
    torch.testing.assert_close(qp_none.f, qp_neg.f)
    norms = qp_none.f[:, :-1].norm(dim=-1)
    torch.testing.assert_close(norms, torch.ones_like(norms))
    sim.train()
    scores, _ = sim(q, e, None)
    scores.sum().backward()
    assert torch.isfinite(q.grad).all()


def test_pure_gate_functions_shapes():
    s = torch.randn(2, 3, 4)
    a_qx = cross_gate(s, torch.randn(5, 4), torch.randn(5), torch.randn(4, 5), torch.randn(4))
    phi, pi = gate_and_combine(s, torch.randn(2, 4), torch.randn(3, 4), a_qx)
    assert phi.shape == (2, 3) and pi.shape == (2, 3, 4)
    phi2, _ = gate_and_combine(s, None, None, a_qx)
    assert phi2.shape == (2, 3)


def test_xavier_normal_init_on_matrices():
    torch.manual_seed(0)
    sim = MoLSimilarity(MoLConfig(), 50)
    w = sim.cross_in.weight  # (128, 32): xavier std = sqrt(2 / (128 + 32))
    assert w.std().item() == pytest.approx(math.sqrt(2 / 160), rel=0.1)
    assert sim.item_proj.weight.std().item() == pytest.approx(math.sqrt(2 / (50 + 256)), rel=0.1)


def test_biases_start_as_in_the_reference():
    torch.manual_seed(0)
    c = MoLConfig()
    sim = MoLSimilarity(c, 50)
    for layer in (sim.item_proj, sim.query_gate[0], sim.item_gate[0], sim.cross_in, sim.cross_out):
        assert torch.count_nonzero(layer.bias) == 0
    # The SwiGLU bias is a (1, 2H) matrix in the reference: xavier-normal over (1, 2H).
    std = math.sqrt(2 / (1 + 2 * c.mlp_hidden))
    assert sim.query_mlp_in.bias.std().item() == pytest.approx(std, rel=0.1)
    bound = c.mlp_hidden**-0.5  # torch's default Linear bias, kept by the reference
    out_bias = sim.query_mlp_out.bias
    assert out_bias.abs().max().item() <= bound and out_bias.std().item() > 0.4 * bound


def _mean_pairwise_cosine(x: torch.Tensor) -> float:
    """x (X, d) -> mean cosine over the X (X - 1) ordered pairs of distinct rows."""
    x = F.normalize(x, dim=-1)
    c = x @ x.T
    n = x.shape[0]
    return ((c.sum() - c.diagonal().sum()) / (n * (n - 1))).item()


def test_item_components_at_init_are_not_collinear_and_scores_vary():
    """At ML-1M shapes (D 50, 8 x 4 x 64) with item embeddings as SeqRecModel draws them
    (N(0, 0.02)) and LayerNorm-ed queries, every item component points its own way and the
    score of one query varies across items. With torch's default biases instead, the item
    components nearly share one direction and the scores' spread over items shrinks several-fold
    (both fail here)."""
    torch.manual_seed(0)
    sim = MoLSimilarity(MoLConfig(user_id_components=0), 50).eval()
    e = torch.randn(2000, 50) * 0.02
    q = F.layer_norm(torch.randn(64, 50), (50,))
    with torch.no_grad():
        ip = sim.item_parts(e)
        for j in range(ip.g.shape[1]):
            assert abs(_mean_pairwise_cosine(ip.g[:, j])) < 0.05
        scores = sim.score_all(sim.query_parts(q), ip)
    spread = scores.std(dim=1).mean().item()
    assert 0.4 < spread < 1.5


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("p_q", 0),
        ("p_x", 0),
        ("d_p", -1),
        ("user_id_components", 3),
        ("user_id_components", -1),
        ("tau", 0.0),
        ("item_dropout", 1.0),
        ("user_id_dropout", -0.1),
        ("gate_dropout", 1.5),
        ("mi_loss_weight", -1.0),
        ("user_hash_size", 0),
        ("gate_hidden", 0),
    ],
)
def test_config_validation_names_the_field(field, value):
    with pytest.raises(ValueError, match=field):
        MoLConfig(**{**SMALL, field: value})


def test_residual_mol_starts_as_the_dot_product():
    """Maps at zero: every component logit is cos(q, e) / tau, so phi is too, whatever the
    gates; and the maps' output layers do get a gradient (they are what learns)."""
    from recsys.similarity.dot import DotConfig, DotSimilarity

    torch.manual_seed(0)
    sim = MoLSimilarity(
        MoLConfig(**{**SMALL, "d_p": DIM, "user_id_components": 0, "residual": True}), DIM
    )
    sim = sim.double().eval()
    dot = DotSimilarity(DotConfig(tau=sim.tau))
    q, e = torch.randn(3, DIM, dtype=torch.float64), torch.randn(5, DIM, dtype=torch.float64)
    mol_scores = sim.score_all(sim.query_parts(q), sim.item_parts(e))
    torch.testing.assert_close(mol_scores, dot.score_all(dot.query_parts(q), dot.item_parts(e)))
    sim.train()
    qp, ip = sim.query_parts(q), sim.item_parts(e)
    loss = sim.sampled_softmax(qp, sim.score_all(qp, ip)[:, 0], ip)
    loss.backward()
    for layer in (sim.query_mlp_out, sim.item_proj):
        assert layer.weight.grad is not None and layer.weight.grad.abs().sum() > 0


def test_residual_mol_matches_the_per_pair_loop_once_trained():
    """Non-zero maps: f = normalize(q + MLP(q)), g = normalize(e + Linear(e)) (eval mode)."""
    torch.manual_seed(1)
    cfg = MoLConfig(**{**SMALL, "d_p": DIM, "user_id_components": 0, "residual": True})
    sim = MoLSimilarity(cfg, DIM).double().eval()
    with torch.no_grad():
        for p in sim.parameters():
            p.normal_(0.0, 0.3)
    q, e = torch.randn(2, DIM, dtype=torch.float64), torch.randn(3, DIM, dtype=torch.float64)
    qp, ip = sim.query_parts(q), sim.item_parts(e)
    gate, value = sim.query_mlp_in(q).chunk(2, dim=-1)
    f = sim.query_mlp_out(F.silu(gate) * value).view(2, cfg.p_q, DIM) + q.unsqueeze(1)
    g = sim.item_proj(e).view(3, cfg.p_x, DIM) + e.unsqueeze(1)
    torch.testing.assert_close(qp.f, F.normalize(f, dim=-1))
    torch.testing.assert_close(ip.g, F.normalize(g, dim=-1))


def test_residual_mol_config_errors():
    with pytest.raises(ValueError, match="residual needs user_id_components = 0"):
        MoLConfig(**{**SMALL, "residual": True})
    with pytest.raises(ValueError, match="residual must be a boolean"):
        MoLConfig(**{**SMALL, "user_id_components": 0, "residual": 1})
    with pytest.raises(ValueError, match=r"d_p equal to the model dim \(6\), got 5"):
        MoLSimilarity(MoLConfig(**{**SMALL, "user_id_components": 0, "residual": True}), DIM)


def test_score_all_in_item_slices_equals_one_pass(monkeypatch):
    import recsys.similarity.mol as mol_module

    sim = make()
    q, e = torch.randn(3, DIM, dtype=torch.float64), torch.randn(7, DIM, dtype=torch.float64)
    qp, ip = sim.query_parts(q), sim.item_parts(e)
    whole, whole_gates = sim.score_all(qp, ip, return_gates=True)
    # 2 items per slice (3 queries x 4 hidden x 4 bytes x 2), the last slice a single item
    monkeypatch.setattr(mol_module, "CHUNK_BYTES", 3 * sim.config.gate_hidden * 4 * 2)
    sliced, sliced_gates = sim.score_all(qp, ip, return_gates=True)
    torch.testing.assert_close(sliced, whole)
    torch.testing.assert_close(sliced_gates, whole_gates)
    assert sim.score_all(qp, ip.slice(0, 0)).shape == (3, 0)
