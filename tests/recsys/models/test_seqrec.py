"""SeqRecModel: config round trip, gradients, full-catalog scores, loss vs a slow reference."""

from __future__ import annotations

import dataclasses
import json
import math

import pytest
import torch
import torch.nn.functional as F

from recsys.losses import sampled_softmax_rows
from recsys.models.hstu import HSTUConfig
from recsys.models.proposal import proposal_draws
from recsys.models.sasrec import SASRecConfig
from recsys.models.seqrec import (
    ModelConfig,
    ModelSpec,
    NegativesConfig,
    SeqRecModel,
    index_draws,
)
from recsys.similarity.dot import DotConfig
from recsys.similarity.mol import MoLConfig

N = 20
HSTU_CFG = HSTUConfig(max_len=8, dim=8, num_blocks=2, num_heads=2, attn_dim=4, linear_dim=4)
SASREC_CFG = SASRecConfig(max_len=8, dim=8, num_blocks=1, num_heads=2)
MOL_CFG = MoLConfig(p_q=3, p_x=2, d_p=4, user_hash_size=11, mlp_hidden=8, gate_hidden=6)


def model(encoder, similarity, seed: int = 0) -> SeqRecModel:
    torch.manual_seed(seed)
    return SeqRecModel(ModelConfig(num_items=N, encoder=encoder, similarity=similarity))


def batch():
    g = torch.Generator().manual_seed(3)
    ids = torch.randint(1, N + 1, (3, 8), generator=g)
    ids[1, 5:] = 0
    ids[2, 2:] = 0
    ts = torch.cumsum(torch.randint(0, 10_000, (3, 8), generator=g), dim=1) * (ids != 0)
    return ids, ts, torch.tensor([4, -1, 30])


@pytest.mark.parametrize("encoder", [HSTU_CFG, SASREC_CFG])
@pytest.mark.parametrize("similarity", [DotConfig(tau=0.1), MOL_CFG])
def test_config_round_trip(encoder, similarity):
    cfg = ModelConfig(num_items=N, encoder=encoder, similarity=similarity)
    d = json.loads(json.dumps(cfg.to_dict()))
    assert d["encoder"]["type"] in ("hstu", "sasrec") and d["similarity"]["type"] in ("dot", "mol")
    assert ModelConfig.from_dict(d) == cfg


def test_config_unknown_and_missing_keys_are_named():
    d = ModelConfig(num_items=N, encoder=HSTU_CFG, similarity=MOL_CFG).to_dict()
    with pytest.raises(ValueError, match="'extra'"):
        ModelConfig.from_dict({**d, "extra": 1})
    with pytest.raises(ValueError, match="heads"):
        ModelConfig.from_dict({**d, "encoder": {**d["encoder"], "heads": 2}})
    with pytest.raises(ValueError, match=r"similarity\.type"):
        ModelConfig.from_dict({**d, "similarity": {**d["similarity"], "type": "cosine"}})
    with pytest.raises(ValueError, match="num_items"):
        ModelConfig.from_dict({k: v for k, v in d.items() if k != "num_items"})
    with pytest.raises(ValueError, match="num_items"):
        ModelConfig(num_items=0, encoder=HSTU_CFG, similarity=MOL_CFG)
    with pytest.raises(ValueError, match="kind"):
        NegativesConfig(kind="popular")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="num"):
        NegativesConfig(num=0)


def test_model_spec_is_the_config_without_the_catalog():
    spec = ModelSpec(encoder=HSTU_CFG, similarity=MOL_CFG)
    d = spec.to_dict()
    assert list(d) == ["encoder", "similarity"] and d["similarity"]["type"] == "mol"
    assert ModelSpec.from_dict(json.loads(json.dumps(d))) == spec
    assert spec.with_items(N) == ModelConfig(num_items=N, encoder=HSTU_CFG, similarity=MOL_CFG)
    assert spec.with_items(N).to_dict() == {"num_items": N, **d}
    with pytest.raises(ValueError, match=r"^model\.encoder: unknown key 'heads'"):
        ModelSpec.from_dict({**d, "encoder": {**d["encoder"], "heads": 2}}, "model")
    with pytest.raises(ValueError, match=r"model\.similarity\.tau: expected a number"):
        ModelSpec.from_dict({**d, "similarity": {"type": "dot", "tau": "warm"}}, "model")


@pytest.mark.parametrize(
    ("encoder", "similarity", "kind"),
    [
        (HSTU_CFG, MOL_CFG, "shared"),
        (HSTU_CFG, MOL_CFG, "per_sequence"),
        (SASREC_CFG, DotConfig(), "per_position"),
    ],
)
def test_gradients_reach_every_parameter(encoder, similarity, kind):
    m = model(encoder, similarity).train()
    ids, ts, users = batch()
    loss, logs = m.training_loss(ids, ts, users, NegativesConfig(kind, 5))
    loss.backward()
    missing = [n for n, p in m.named_parameters() if p.grad is None or not p.grad.any()]
    assert missing == []
    assert logs["loss"].item() == pytest.approx(loss.item())
    if isinstance(similarity, MoLConfig):
        assert set(logs) == {"loss", "sampled_softmax", "mi_loss", "user_id_l2", "num_positions"}
        total = logs["sampled_softmax"] + logs["mi_loss"] + logs["user_id_l2"]
        assert total.item() == pytest.approx(loss.item(), rel=1e-6)
    assert logs["num_positions"].item() == 7 + 4 + 1


@pytest.mark.parametrize("similarity", [DotConfig(), MOL_CFG])
def test_score_all_chunking_and_padding_column(similarity):
    m = model(HSTU_CFG, similarity).eval()
    ids, ts, users = batch()
    with torch.no_grad():
        a = m.score_all(ids, ts, users, item_chunk=3)
        b = m.score_all(ids, ts, users)
        direct = m.similarity.score_all(m.query_parts(ids, ts, users), m.item_parts())
    assert a.shape == (3, N + 1) and torch.all(a[:, 0] == float("-inf"))
    torch.testing.assert_close(a, b)
    torch.testing.assert_close(a[:, 1:], direct[:, 1:])


@pytest.mark.parametrize(
    "encoder",
    [
        SASREC_CFG,
        dataclasses.replace(SASREC_CFG, num_blocks=3),
        HSTU_CFG,
        dataclasses.replace(HSTU_CFG, num_blocks=1, time_bias=False),
    ],
)
@pytest.mark.parametrize("with_times", [True, False])
def test_query_is_the_last_valid_position(encoder, with_times):
    """query()'s last layer computes one attention row: equal to the full encode() there."""
    m = model(encoder, DotConfig()).eval()
    ids, ts, _ = batch()
    ids = torch.cat([ids, torch.zeros(1, 8, dtype=torch.long)])  # an empty history too
    ts = torch.cat([ts, torch.zeros(1, 8, dtype=torch.long)]) if with_times else None
    with torch.no_grad():
        out = m.encode(ids, ts)
        q = m.query(ids, ts)
    expected = torch.stack([out[0, 7], out[1, 4], out[2, 1], torch.zeros(8)])
    torch.testing.assert_close(q, expected)


def reference_loss(m: SeqRecModel, ids, ts, users, negatives: NegativesConfig):
    """Eval-mode loss one supervised position at a time (the same negatives drawn); with
    `correction`, uniform draws add log(N / R) to every negative logit."""
    out = m.encode(ids, ts)
    rows, targets, row_users, row_of = [], [], [], []
    for b in range(ids.shape[0]):
        for t in range(ids.shape[1] - 1):
            if ids[b, t + 1] != 0:
                rows.append(out[b, t])
                targets.append(int(ids[b, t + 1]))
                row_users.append(int(users[b]))
                row_of.append(b)
    n, r = len(rows), negatives.num
    if negatives.kind == "shared":
        negs = torch.randint(1, N + 1, (r,)).expand(n, r)
    elif negatives.kind == "per_sequence":
        negs = torch.randint(1, N + 1, (ids.shape[0], r))[torch.tensor(row_of)]
    else:
        negs = torch.randint(1, N + 1, (n, r))
        torch.unique(negs, return_inverse=True)  # no RNG use; mirrors the model's calls
    losses = []
    for i in range(n):
        items = torch.cat([torch.tensor([targets[i]]), negs[i]])
        scores, _ = m.similarity(
            rows[i].unsqueeze(0), m.item_emb(items), users[:1] * 0 + row_users[i]
        )
        neg = scores[:, 1:] + (math.log(N / r) if negatives.correction else 0.0)
        losses.append(sampled_softmax_rows(scores[0, :1], neg, (negs[i] != targets[i])[None]))
    return torch.cat(losses).mean()


@pytest.mark.parametrize("similarity", [DotConfig(), MOL_CFG])
@pytest.mark.parametrize("kind", ["shared", "per_position", "per_sequence"])
@pytest.mark.parametrize("correction", [False, True])
def test_training_loss_matches_per_position_reference(similarity, kind, correction):
    m = model(HSTU_CFG, similarity).double().eval()
    ids, ts, users = batch()
    neg = NegativesConfig(kind, 6, correction=correction)
    with torch.no_grad():
        torch.manual_seed(11)
        loss, logs = m.training_loss(ids, ts, users, neg)
        torch.manual_seed(11)
        ref = reference_loss(m, ids, ts, users, neg)
    torch.testing.assert_close(loss, ref)
    assert set(logs) == {"loss", "sampled_softmax", "num_positions"}  # no aux losses in eval


@pytest.mark.parametrize("similarity", [DotConfig(), MOL_CFG])
@pytest.mark.parametrize("first_target", [None, [3, 1, 2]])
def test_full_negatives_are_cross_entropy_over_the_catalog(similarity, first_target):
    """kind "full": per position, F.cross_entropy of the scores against every item 1..N
    (with first_target: only the targets at positions >= first_target[b])."""
    m = model(HSTU_CFG, similarity).double().eval()
    ids, ts, users = batch()
    first = None if first_target is None else torch.tensor(first_target)
    with torch.no_grad():
        loss, logs = m.training_loss(ids, ts, users, NegativesConfig("full", 3), first)
        out = m.encode(ids, ts)
        losses = []
        for b in range(ids.shape[0]):
            for t in range(ids.shape[1] - 1):
                if ids[b, t + 1] != 0 and (first is None or t + 1 >= first[b]):
                    scores, _ = m.similarity(
                        out[b, t].unsqueeze(0), m.item_emb.weight[1:], users[b : b + 1]
                    )
                    losses.append(F.cross_entropy(scores, ids[b, t + 1 : t + 2] - 1))
    torch.testing.assert_close(loss, torch.stack(losses).mean())
    assert logs["num_positions"].item() == len(losses)


@pytest.mark.parametrize("similarity", [DotConfig(), MOL_CFG])
@pytest.mark.parametrize("k", [1, 4, 100])
def test_full_negatives_on_a_row_sample_average_the_drawn_positions(similarity, k):
    """kind "full" with rows=K: the per-position cross-entropy over the catalog, averaged
    over K positions drawn without replacement (every position when K >= their count)."""
    m = model(HSTU_CFG, similarity).double().eval()
    ids, ts, users = batch()
    with torch.no_grad():
        torch.manual_seed(7)
        loss, logs = m.training_loss(ids, ts, users, NegativesConfig("full", rows=k))
        out = m.encode(ids, ts)
        supervised = ids[:, 1:] != 0
        rows, targets = out[:, :-1][supervised], ids[:, 1:][supervised]
        row_users = users[torch.arange(3).unsqueeze(1).expand_as(supervised)[supervised]]
        n = targets.shape[0]
        torch.manual_seed(7)
        pick = torch.randperm(n)[:k] if k < n else torch.arange(n)
        losses = [
            F.cross_entropy(
                m.similarity(rows[i : i + 1], m.item_emb.weight[1:], row_users[i : i + 1])[0],
                targets[i : i + 1] - 1,
            )
            for i in pick.tolist()
        ]
    torch.testing.assert_close(loss, torch.stack(losses).mean())
    assert logs["num_positions"].item() == n


def test_full_negatives_rows_is_checked():
    with pytest.raises(ValueError, match=r"NegativesConfig\.rows must be an integer >= 1"):
        NegativesConfig("full", rows=0)
    with pytest.raises(ValueError, match="applies to kind 'full' only"):
        NegativesConfig("shared", rows=4)


@pytest.mark.parametrize(("kind", "fraction"), [("in_batch", 0.5), ("mixed", 0.25), ("mixed", 0.5)])
def test_logq_offsets_are_minus_log_expected_draws(kind, fraction):
    """The offset of negative j is -log(R_b c_j / n + R_u / N): R_b draws from the n batch
    targets (c_j of them item j), R_u uniform draws; masked negatives are the positive."""
    m = model(HSTU_CFG, DotConfig())
    targets = torch.tensor([3, 3, 3, 5, 7, 7, 9, 2])
    r = 8
    torch.manual_seed(0)
    rows = torch.randn(len(targets), HSTU_CFG.dim)
    ids, idx, valid, offset = m._negatives(
        rows, targets, NegativesConfig(kind, r, correction=True, in_batch_fraction=fraction)
    )
    r_b = r if kind == "in_batch" else round(r * fraction)
    assert idx is None and ids.shape == (r,) and offset is not None
    assert set(ids[:r_b].tolist()) <= set(targets.tolist())
    for j, item in enumerate(ids.tolist()):
        count = sum(t == item for t in targets.tolist())
        expected = r_b * count / len(targets) + (r - r_b) / N
        assert offset[j].item() == pytest.approx(-math.log(expected), rel=1e-5)
    assert torch.equal(valid, ids.unsqueeze(0) != targets.unsqueeze(1))
    _, _, _, none = m._negatives(
        rows, targets, NegativesConfig(kind, r, in_batch_fraction=fraction)
    )
    assert none is None


def test_in_batch_negatives_and_empty_batch():
    m = model(HSTU_CFG, MOL_CFG).train()
    ids, ts, users = batch()
    loss, _ = m.training_loss(ids, ts, users, NegativesConfig("in_batch", 4))
    assert torch.isfinite(loss)
    single = torch.tensor([[3, 0, 0], [5, 0, 0]])
    loss, logs = m.training_loss(single, None, None)
    assert loss.item() == 0.0 and logs["num_positions"].item() == 0
    loss.backward()  # still part of the graph


def test_cold_users_and_no_timestamps_work_for_scoring():
    m = model(HSTU_CFG, MOL_CFG).eval()
    ids, _, _ = batch()
    with torch.no_grad():
        none = m.score_all(ids, None, None)
        cold = m.score_all(ids, None, torch.tensor([-1, -1, -1]))
    torch.testing.assert_close(none, cold)
    assert torch.isfinite(none[:, 1:]).all()


def test_model_config_is_frozen():
    cfg = ModelConfig(num_items=N, encoder=HSTU_CFG, similarity=MOL_CFG)
    with pytest.raises(dataclasses.FrozenInstanceError):
        cfg.num_items = 3  # type: ignore[misc]


RESIDUAL_CFG = MoLConfig(
    p_q=3, p_x=2, d_p=8, user_id_components=0, mlp_hidden=8, gate_hidden=6, residual=True
)


@pytest.mark.parametrize("kind", ["shared", "per_position", "full"])
def test_dot_warmup_is_the_dot_product_and_leaves_mol_untouched(kind):
    """A residual MoL's warm-up loss is the dot-product model's loss on the same encoder
    and item table (same negatives), and no MoL parameter gets a gradient."""
    m = model(HSTU_CFG, RESIDUAL_CFG).double().train()
    dot = model(HSTU_CFG, DotConfig(tau=RESIDUAL_CFG.tau)).double().train()
    dot.load_state_dict(
        {k: v for k, v in m.state_dict().items() if not k.startswith("similarity.")}
    )
    ids, ts, users = batch()
    neg = NegativesConfig(kind, 6)
    torch.manual_seed(5)
    loss, logs = m.training_loss(ids, ts, users, neg, dot_warmup=True)
    torch.manual_seed(5)
    ref, _ = dot.training_loss(ids, ts, users, neg)
    torch.testing.assert_close(loss, ref)
    assert set(logs) == {"loss", "sampled_softmax", "num_positions"}
    loss.backward()
    assert all(p.grad is None for p in m.similarity.parameters())
    assert m.item_emb.weight.grad is not None


def test_residual_mol_scores_equal_the_dot_product_at_init():
    m = model(HSTU_CFG, RESIDUAL_CFG).double().eval()
    dot = model(HSTU_CFG, DotConfig(tau=RESIDUAL_CFG.tau)).double().eval()
    dot.load_state_dict(
        {k: v for k, v in m.state_dict().items() if not k.startswith("similarity.")}
    )
    ids, ts, users = batch()
    with torch.no_grad():
        torch.testing.assert_close(m.score_all(ids, ts, users), dot.score_all(ids, ts, users))


def test_dot_warmup_needs_a_residual_mol():
    ids, ts, users = batch()
    for similarity in (DotConfig(), MOL_CFG):
        with pytest.raises(ValueError, match="residual MoL"):
            model(HSTU_CFG, similarity).training_loss(ids, ts, users, dot_warmup=True)


def test_residual_mol_at_zero_is_scored_as_the_dot_product():
    """score_all takes the dot product's path while the maps are zero (the same scores,
    cheaper), and MoL's as soon as they are not."""
    m = model(HSTU_CFG, RESIDUAL_CFG).double().eval()
    ids, ts, users = batch()
    assert m.similarity.maps_at_zero()
    with torch.no_grad():
        at_zero = m.score_all(ids, ts, users)
        qp = m.query_parts(ids, ts, users)
        full = m.similarity.score_all(qp, m.item_parts(torch.arange(1, N + 1)))
        torch.testing.assert_close(at_zero[:, 1:], full.float())
        m.similarity.item_proj.bias[0] = 0.5
        assert not m.similarity.maps_at_zero()
        moved = m.score_all(ids, ts, users)
        full = m.similarity.score_all(qp, m.item_parts(torch.arange(1, N + 1)))
        torch.testing.assert_close(moved[:, 1:], full.float())
    assert not model(HSTU_CFG, MOL_CFG).similarity.maps_at_zero()


def test_dot_aux_loss_adds_the_dot_models_full_softmax_loss():
    """MoL loss + w x (the loss of a dot model with the same encoder and item table over the
    full catalog); the aux term's gradient reaches the encoder and items, not MoL."""
    m = model(HSTU_CFG, MOL_CFG).double().eval()  # eval: no dropout, so both runs agree
    dot = model(HSTU_CFG, DotConfig(tau=MOL_CFG.tau)).double().eval()
    dot.load_state_dict(
        {k: v for k, v in m.state_dict().items() if not k.startswith("similarity.")}
    )
    ids, ts, users = batch()
    neg = NegativesConfig("shared", 6)
    torch.manual_seed(5)
    base, _ = m.training_loss(ids, ts, users, neg)
    torch.manual_seed(5)
    loss, logs = m.training_loss(ids, ts, users, neg, dot_aux_weight=0.5)
    ref, _ = dot.training_loss(ids, ts, users, NegativesConfig("full"))
    torch.testing.assert_close(loss, base + 0.5 * ref)
    torch.testing.assert_close(logs["dot_aux"], 0.5 * ref.detach())
    grads = []
    for total in (base, loss):
        m.zero_grad()
        total.backward()
        grads.append({k: p.grad.clone() for k, p in m.named_parameters() if p.grad is not None})
    for name, g in grads[0].items():
        if name.startswith("similarity."):
            torch.testing.assert_close(grads[1][name], g)
    assert not torch.allclose(grads[1]["item_emb.weight"], grads[0]["item_emb.weight"])
    with pytest.raises(ValueError, match="needs a MoL similarity"):
        model(HSTU_CFG, DotConfig()).training_loss(ids, ts, users, neg, dot_aux_weight=0.5)


def _hard_reference(m, rows, targets, context, k):
    """Per row, in a plain loop: the k items of highest cosine outside target and context."""
    e = F.normalize(m.item_emb.weight.detach().double(), dim=-1)
    q = F.normalize(rows.detach().double(), dim=-1)
    out = []
    for i in range(rows.shape[0]):
        banned = set(context[i].tolist()) | {int(targets[i]), 0}
        allowed = [j for j in range(1, N + 1) if j not in banned]
        allowed.sort(key=lambda j: -float(q[i] @ e[j]))
        out.append(allowed[:k])
    return out


def test_hard_negatives_match_a_slow_reference():
    m = model(HSTU_CFG, MOL_CFG).double()
    g = torch.Generator().manual_seed(7)
    rows = torch.randn(5, HSTU_CFG.dim, generator=g, dtype=torch.float64)
    targets = torch.randint(1, N + 1, (5,), generator=g)
    context = torch.randint(0, N + 1, (5, 6), generator=g)
    for k in (3, N):  # N: more than remain, so the tail of each row is invalid
        ids, valid = m._hard_negatives(rows, targets, context, k)
        ref = _hard_reference(m, rows, targets, context, k)
        for i, expected in enumerate(ref):
            assert ids[i][valid[i]].tolist() == expected
        assert valid.sum(dim=1).tolist() == [len(r) for r in ref]


def test_hard_negative_loss_is_the_softmax_against_the_mined_items():
    """Loss with K mined negatives = loss without + w x mean_rows(logsumexp([pos, hard]) -
    pos), each row's hard items the top of the dot product outside its own sequence."""
    m = model(HSTU_CFG, MOL_CFG).double().eval()  # eval: no dropout, so the runs agree
    ids, ts, users = batch()
    k, w = 4, 0.5
    torch.manual_seed(5)
    base, _ = m.training_loss(ids, ts, users, NegativesConfig("shared", 6))
    torch.manual_seed(5)
    neg = NegativesConfig("shared", 6, hard=k, hard_weight=w)
    loss, logs = m.training_loss(ids, ts, users, neg)

    out = m.encode(ids, ts)
    supervised = ids[:, 1:] != 0
    rows, targets = out[:, :-1][supervised], ids[:, 1:][supervised]
    row_of = torch.arange(3).unsqueeze(1).expand_as(supervised)[supervised]
    hard = _hard_reference(m, rows, targets, ids[row_of], k)
    qp = m.similarity.query_parts(rows, users[row_of])
    idx = torch.cat([targets.unsqueeze(1), torch.tensor(hard)], dim=1)
    logits = m.similarity.score_gathered(qp, m.item_parts(), idx)
    ref = (torch.logsumexp(logits, dim=1) - logits[:, 0]).mean()
    torch.testing.assert_close(loss, base + w * ref)
    torch.testing.assert_close(logs["hard_negatives"], w * ref.detach())


def test_hard_negatives_config_is_checked():
    with pytest.raises(ValueError, match=r"NegativesConfig\.hard must be an integer >= 0"):
        NegativesConfig(hard=-1)
    with pytest.raises(ValueError, match=r"NegativesConfig\.hard_weight must be > 0"):
        NegativesConfig(hard=2, hard_weight=0.0)
    with pytest.raises(ValueError, match="does not apply to kind 'full'"):
        NegativesConfig("full", hard=2)


@pytest.mark.parametrize("shape", [(2, 3), (4, 6), (1, 1), (0, 5)])
def test_index_draws_maps_every_draw_to_its_item(shape):
    """Both ways of indexing drawn negatives (the distinct draws, or the whole catalog once
    the draws outnumber it) give items[idx] == ids, items distinct and in 1..N."""
    ids = torch.randint(1, N + 1, shape, generator=torch.Generator().manual_seed(3))
    items, idx = index_draws(ids, N)
    assert idx.shape == ids.shape
    assert torch.equal(items[idx], ids)
    assert items.unique().numel() == items.numel()
    assert items.numel() == (N if ids.numel() >= N else ids.unique().numel())
    assert bool(((items >= 1) & (items <= N)).all())


def test_dot_proposal_negatives_are_the_proposal_draws_with_their_weights():
    """kind per_position with dot_proposal: the draws and offsets of
    recsys.models.proposal (same random stream), plus log(N/R) with the correction; the
    positive is masked where drawn."""
    m = model(HSTU_CFG, MOL_CFG)
    targets = torch.tensor([3, 5, 7, 9, 2])
    rows = torch.randn(len(targets), HSTU_CFG.dim)
    for correction in (False, True):
        cfg = NegativesConfig("per_position", 30, correction=correction, dot_proposal=0.6)
        torch.manual_seed(4)
        items, idx, valid, offset = m._negatives(rows, targets, cfg)
        torch.manual_seed(4)
        ids, weight = proposal_draws(rows, m.item_emb.weight[1:], MOL_CFG.tau, 0.6, 30)
        assert idx is not None and offset is not None
        assert torch.equal(items[idx], ids)
        assert torch.equal(valid, ids != targets.unsqueeze(1))
        extra = math.log(N / 30) if correction else 0.0
        torch.testing.assert_close(offset, weight + extra)


def test_dot_proposal_trains_and_is_checked():
    m = model(HSTU_CFG, MOL_CFG).train()
    ids, ts, users = batch()
    neg = NegativesConfig("per_position", 6, dot_proposal=0.5)
    loss, _ = m.training_loss(ids, ts, users, negatives=neg, dot_aux_weight=1.0)
    loss.backward()
    assert torch.isfinite(loss) and m.similarity.cross_in.weight.grad is not None
    with pytest.raises(ValueError, match=r"dot_proposal must be in \[0, 1\)"):
        NegativesConfig("per_position", dot_proposal=1.0)
    with pytest.raises(ValueError, match="applies to kind 'per_position' only"):
        NegativesConfig("shared", dot_proposal=0.5)
