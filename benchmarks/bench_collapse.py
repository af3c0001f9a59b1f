"""Where MoL's query and item components collapse: short ablations against the dot product.

On sparse Amazon data, SASRec + MoL ranks nearly the same few items for every user. Each
variant here trains the Beauty CPU encoder (SASRec 2 x 64, length 50, batches of 64) for a
fixed number of steps from the same seed, then measures on a fixed sample of validation
users: HR@10, NDCG@10, coverage@10, and the spread of the representations:

- enc_cos: mean pairwise cosine of the encoder outputs of 256 users;
- qcomp_cos / icomp_cos: the same for each query component (256 users) and each item
  component (1,000 random items), averaged over components (near 1 = one shared vector);
- score_std: the spread of one user's scores over those items, averaged over users;
- gate_entropy: mean entropy of the gates (MoL only).

Variants (MoL "mol1" is the degenerate P_Q = P_X = 1, d_P 64, no user id: a scaled cosine
of a query MLP and an item projection, which should train about as well as the dot product):
`dot`, `mol1`, `mol1-no-item-proj` (item component = the raw embedding), `mol1-no-query-mlp`
(query component = the encoder output), `mol1-no-dropout` (no item or gate dropout),
`mol1-tau0.2`, `mol1-logq` (log-Q correction), `mol1-mixed-logq` (half in-batch, half
uniform negatives, corrected), `mol1-per-position`, `mol1-uniformity` (plus Wang & Isola's
uniformity loss, weight 1, on the query components of the batch's users and the item
components of 256 random items), `mol1-similarity-lr0.1` (the MoL parameters at a tenth of
the lr), `mol` (8 x 8 x 32, the Beauty config), `dot-xavier-blocks` (the reference's
xavier-normal SASRec block weights instead of torch's default: the measurement behind
recsys.models.sasrec's init; run it for a few epochs, e.g. --steps 1400).
The ablations replace one half of the similarity on the instance; the library is unchanged.

    recsys bench collapse --data data/beauty --steps 150
    recsys bench collapse --data data/beauty --gradient-check

Writes benchmarks/results/collapse-<dataset>-cpu.json with provenance. `--gradient-check`
instead compares, in float64 on one real training batch, every parameter's gradient of the
MoL loss through the fused, hand-differentiated negatives kernel with plain autograd
through `score_all` + `sampled_softmax_loss` (same negatives, dropout off), for mol1 and
mol, and writes collapse-gradcheck-<dataset>-cpu.json. Skips cleanly (exit 0)
when the dataset directory does not exist.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from recsys.atomic import atomic_write_text
from recsys.dataset import SequenceDataset, load_dataset
from recsys.diagnostics import spread
from recsys.evaluation import EvalSet, collect_ranks
from recsys.losses import sampled_softmax_loss
from recsys.metrics import compute_metrics
from recsys.models.sasrec import SASRecConfig
from recsys.models.seqrec import ModelConfig, NegativesConfig, SeqRecModel
from recsys.provenance import command_line, provenance
from recsys.similarity.dot import DotConfig
from recsys.similarity.mol import MoLConfig
from recsys.similarity.parts import ItemParts, QueryParts
from recsys.training.data import SeqDataModule

REPO_ROOT = Path(__file__).resolve().parent.parent

ENCODER = SASRecConfig(max_len=50, dim=64, num_blocks=2, num_heads=2, dropout=0.5)
MOL1 = MoLConfig(p_q=1, p_x=1, d_p=64, user_id_components=0)
MOL = MoLConfig(p_q=8, p_x=8, d_p=32, user_id_components=0)
SHARED = NegativesConfig("shared", 128)


@dataclasses.dataclass(frozen=True)
class Variant:
    similarity: DotConfig | MoLConfig
    negatives: NegativesConfig = SHARED
    ablation: str | None = None  # "no_item_proj" | "no_query_mlp"
    uniformity: float = 0.0  # weight of the uniformity loss on the components
    similarity_lr_scale: float = 1.0  # the similarity's parameters at lr x this
    xavier_blocks: bool = False  # SASRec block weights xavier-normal, as the reference's reset


VARIANTS: dict[str, Variant] = {
    "dot": Variant(DotConfig()),
    "mol1": Variant(MOL1),
    "mol1-no-item-proj": Variant(MOL1, ablation="no_item_proj"),
    "mol1-no-query-mlp": Variant(MOL1, ablation="no_query_mlp"),
    "mol1-no-dropout": Variant(dataclasses.replace(MOL1, item_dropout=0.0, gate_dropout=0.0)),
    "mol1-tau0.2": Variant(dataclasses.replace(MOL1, tau=0.2)),
    "mol1-logq": Variant(MOL1, NegativesConfig("shared", 128, correction=True)),
    "mol1-mixed-logq": Variant(MOL1, NegativesConfig("mixed", 128, correction=True)),
    "mol1-per-position": Variant(MOL1, NegativesConfig("per_position", 128)),
    "mol1-uniformity": Variant(MOL1, uniformity=1.0),
    "mol1-similarity-lr0.1": Variant(MOL1, similarity_lr_scale=0.1),
    "mol": Variant(MOL),
    "dot-xavier-blocks": Variant(DotConfig(), xavier_blocks=True),
}


def ablate(model: SeqRecModel, ablation: str | None) -> None:
    """Replace one half of a (P_Q = P_X = 1, d_P = D) MoL by the dot product's."""
    sim = model.similarity
    if ablation is None:
        return
    query_parts: Callable = sim.query_parts
    item_parts: Callable = sim.item_parts
    if ablation == "no_query_mlp":

        def plain_query(q, user_ids=None):
            a_q = query_parts(q, user_ids).a_q
            return QueryParts(f=F.normalize(q, dim=-1).unsqueeze(1), a_q=a_q)

        sim.query_parts = plain_query  # type: ignore[method-assign]
    elif ablation == "no_item_proj":

        def plain_items(e):
            return ItemParts(g=F.normalize(e, dim=-1).unsqueeze(1), a_x=item_parts(e).a_x)

        sim.item_parts = plain_items  # type: ignore[method-assign]
    else:
        raise ValueError(f"unknown ablation {ablation!r}")


@torch.no_grad()
def measure(model: SeqRecModel, data: SequenceDataset, sample: np.ndarray) -> dict[str, float]:
    model.eval()
    evalset = EvalSet(data, "valid", ENCODER.max_len)
    batch = evalset.collate(list(sample[:256]))
    items = torch.from_numpy(
        np.random.default_rng(1).choice(np.arange(1, data.num_items + 1), 1000, replace=False)
    )
    out = spread(model, batch.item_ids, batch.timestamps, None, items)
    batches = (evalset.collate(list(sample[i : i + 512])) for i in range(0, len(sample), 512))
    ranks, top = collect_ranks(model, batches)
    metrics = compute_metrics(ranks, top, data.num_items)
    out.update({k: metrics[k] for k in ("hr@10", "ndcg@10", "coverage@10")})
    model.train()
    return out


def uniformity_loss(x: torch.Tensor) -> torch.Tensor:
    """Wang & Isola (ICML'20): log mean_{i != j} exp(-2 |x_i - x_j|^2), x (n, d) unit rows."""
    x = x.float()
    d2 = 2 - 2 * x @ x.T
    off = ~torch.eye(x.shape[0], dtype=torch.bool, device=x.device)
    return torch.log(torch.exp(-2 * d2[off]).mean())


def component_uniformity(
    model: SeqRecModel, item_ids: torch.Tensor, num_items: int
) -> torch.Tensor:
    """Mean uniformity loss over the query components of these histories and the item
    components of 256 random items."""
    f = model.similarity.query_parts(model.query(item_ids), None).f
    g = model.item_parts(torch.randint(1, num_items + 1, (256,))).g
    parts = [f[:, i] for i in range(f.shape[1])] + [g[:, j] for j in range(g.shape[1])]
    return torch.stack([uniformity_loss(x) for x in parts]).mean()


def run_variant(
    name: str, data: SequenceDataset, path: Path, steps: int, sample: np.ndarray, seed: int
) -> dict:
    v = VARIANTS[name]
    torch.manual_seed(seed)
    model = SeqRecModel(ModelConfig(data.num_items, ENCODER, v.similarity))
    ablate(model, v.ablation)
    if v.xavier_blocks:
        for block in model.encoder.blocks:
            for layer in (block.qkv, block.proj, block.ffn_in, block.ffn_out):
                torch.nn.init.xavier_normal_(layer.weight)
            torch.nn.init.zeros_(block.qkv.bias)
            torch.nn.init.zeros_(block.proj.bias)
    sim_params = {id(p) for p in model.similarity.parameters()}
    groups = [
        {"params": [p for p in model.parameters() if id(p) not in sim_params]},
        {"params": list(model.similarity.parameters()), "lr": 1e-3 * v.similarity_lr_scale},
    ]
    opt = torch.optim.AdamW(groups, lr=1e-3, betas=(0.9, 0.98), weight_decay=1e-3)
    dm = SeqDataModule(path, ENCODER.max_len, batch_size=64, seed=seed, data=data)
    start, losses = time.perf_counter(), []
    model.train()
    while len(losses) < steps:
        for batch in dm.train_dataloader():
            with torch.autocast("cpu", dtype=torch.bfloat16):
                loss, _ = model.training_loss(
                    batch.item_ids, batch.timestamps, batch.user_ids, v.negatives
                )
                if v.uniformity:
                    loss = loss + v.uniformity * component_uniformity(
                        model, batch.item_ids, data.num_items
                    )
            opt.zero_grad()
            loss.backward()
            opt.step()
            losses.append(float(loss.detach()))
            if len(losses) == steps:
                break
    train_s = time.perf_counter() - start
    return {
        "variant": name,
        "similarity": dataclasses.asdict(v.similarity),
        "negatives": dataclasses.asdict(v.negatives),
        "ablation": v.ablation,
        "steps": steps,
        "train_loss_last_50": float(np.mean(losses[-50:])),
        "train_s": round(train_s, 1),
        **measure(model, data, sample),
    }


def gradient_check(data: SequenceDataset, path: Path, similarity: MoLConfig) -> dict:
    """Max relative gradient difference, fused kernel vs autograd, over every parameter."""
    torch.manual_seed(0)
    sim = dataclasses.replace(similarity, item_dropout=0.0, gate_dropout=0.0)
    encoder = dataclasses.replace(ENCODER, dropout=0.0)
    model = SeqRecModel(ModelConfig(data.num_items, encoder, sim)).double().train()
    batch = next(
        iter(SeqDataModule(path, ENCODER.max_len, batch_size=64, data=data).train_dataloader())
    )
    params = list(model.parameters())
    torch.manual_seed(5)
    fused, _ = model.training_loss(batch.item_ids, None, None, SHARED)
    fused_grads = torch.autograd.grad(fused, params, allow_unused=True)
    torch.manual_seed(5)  # the same draws: training_loss samples its negatives first
    out = model.encode(batch.item_ids)
    targets_bt = batch.item_ids[:, 1:]
    supervised = targets_bt != 0
    targets = targets_bt[supervised]
    qp = model.similarity.query_parts(out[:, :-1][supervised], None)
    distinct, inv = torch.unique(targets, return_inverse=True)
    pos, gates = model.similarity.score_gathered(
        qp, model.item_parts(distinct), inv.unsqueeze(1), return_gates=True
    )
    neg_ids = torch.randint(1, data.num_items + 1, (SHARED.num,))
    neg = model.similarity.score_all(qp, model.item_parts(neg_ids))
    plain = sampled_softmax_loss(pos[:, 0], neg, neg_ids.unsqueeze(0) != targets.unsqueeze(1))
    plain = plain + sum(model.similarity.aux_losses(gates=gates).values())
    plain_grads = torch.autograd.grad(plain, params, allow_unused=True)
    worst = max(
        float((a - b).norm() / b.norm().clamp(min=1e-30))
        for a, b in zip(fused_grads, plain_grads, strict=True)
        if a is not None and b is not None
    )
    return {
        "similarity": dataclasses.asdict(sim),
        "loss_fused": float(fused),
        "loss_autograd": float(plain),
        "max_relative_gradient_difference": worst,
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="recsys bench collapse", description=__doc__.split("\n")[0])
    p.add_argument("--data", type=Path, default=Path("data/beauty"))
    p.add_argument("--steps", type=int, default=150)
    p.add_argument("--val-users", type=int, default=2000)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=list(VARIANTS))
    p.add_argument("--out", type=Path, default=None)
    p.add_argument("--gradient-check", action="store_true")
    args = p.parse_args(argv)
    if not args.data.exists():
        print(f"skip: no dataset at {args.data} (prepare it as the README shows)")
        return 0
    data = load_dataset(args.data)
    results = REPO_ROOT / "benchmarks" / "results"
    if args.gradient_check:
        checks = [gradient_check(data, args.data, sim) for sim in (MOL1, MOL)]
        out = args.out or results / f"collapse-gradcheck-{args.data.name}-cpu.json"
        payload = {
            "benchmark": "fused MoL negatives backward vs autograd, float64, one real batch",
            "dataset": args.data.name,
            "checks": checks,
            "provenance": provenance(command_line("recsys bench collapse", argv)),
        }
        atomic_write_text(out, json.dumps(payload, indent=2) + "\n")
        print(json.dumps(checks, indent=1))
        return 0
    n_valid = len(EvalSet(data, "valid", ENCODER.max_len))
    rng = np.random.default_rng(0)
    sample = np.sort(rng.choice(n_valid, size=min(args.val_users, n_valid), replace=False))
    rows = []
    for name in args.variants:
        row = run_variant(name, data, args.data, args.steps, sample, args.seed)
        print({k: row[k] for k in ("variant", "hr@10", "coverage@10", "qcomp_cos", "icomp_cos")})
        rows.append(row)
    out = args.out or results / f"collapse-{args.data.name}-cpu.json"
    payload = {
        "benchmark": "MoL collapse ablations (fixed steps, validation user sample)",
        "dataset": args.data.name,
        "encoder": dataclasses.asdict(ENCODER),
        "batch_size": 64,
        "val_users": len(sample),
        "rows": rows,
        "provenance": provenance(command_line("recsys bench collapse", argv)),
    }
    atomic_write_text(out, json.dumps(payload, indent=2) + "\n")
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
