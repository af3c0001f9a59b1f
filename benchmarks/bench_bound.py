"""How much of a trained catalog can a certificate on MoL scores prune? (bounded-exact)

Bounded-exact (`recsys.retrieval.bounded`) keeps every item whose bound m(x) = max_k s_k
reaches the query's k-th best exact score T. On trained bundles that bound keeps most of the
catalog. This script measures, for random users of a bundle (seen items excluded):
- `max_logit`: the share of admissible items with max_k s_k >= T (what bounded-exact keeps);
- `oracle_box`: the share kept by the tightest certificate of a wider family, which bounds
  each cross-gate logit a_qx,k of a query by an interval valid for all items, and uses the
  exact a_q * a_x term and the exact s. Given gate logits z_k in [l_k, u_k], phi >= T is
  possible only if max over w_k in [exp(silu_min), exp(silu_max)] of sum_k w_k (s_k - T)
  >= 0, i.e. sum_k w_max,k (s_k - T)^+ >= sum_k w_min,k (T - s_k)^+. The intervals used
  here are the observed min and max of a_qx,k over the admissible items, which any valid
  interval must contain; so no certificate of this family can keep fewer items. (It still
  needs every s_k, the cost of the current bound pass, plus the box test.)

    recsys bench bound --bundle ml-1m=out/bundles/ml-1m-20 [--users 512] [--ks 10,100]

Writes benchmarks/results/bound-<name>-cpu.json with provenance.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parent.parent
for _path in (REPO_ROOT, REPO_ROOT / "benchmarks"):
    if str(_path) not in sys.path:
        sys.path.insert(0, str(_path))

import numpy as np  # noqa: E402
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

from recsys.atomic import atomic_write_text  # noqa: E402
from recsys.provenance import provenance  # noqa: E402

SILU_ARGMIN = -1.2784645  # silu's minimum on the real line


def silu_range(lo: torch.Tensor, hi: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Min and max of silu over [lo, hi] (element-wise; silu falls, then rises)."""
    smax = torch.maximum(F.silu(lo), F.silu(hi))
    smin = F.silu(torch.minimum(torch.maximum(torch.full_like(lo, SILU_ARGMIN), lo), hi))
    return smin, smax


@torch.no_grad()
def kept_shares(bundle: Any, users: int, ks: list[int], seed: int) -> dict[int, dict[str, list]]:
    """Per k, per user: the share of admissible items each certificate keeps. The queries
    are those of the retrieval benchmark (recent histories of random users)."""
    from bench_retrieval import query_batches

    from recsys.similarity.mol import component_logits, cross_gate

    sim, index = bundle.model.similarity, bundle.index
    out: dict[int, dict[str, list]] = {
        k: {"max_logit": [], "oracle_box": [], "sound": []} for k in ks
    }
    for qb in query_batches(bundle, 32, max(1, users // 32), seed):
        qp, excluded = qb.qp, qb.exclude  # (B, N+1), padding included
        s = component_logits(qp.f, index.g.float(), sim.tau)  # (B, N+1, P)
        w1, b1 = sim.cross_in.weight, sim.cross_in.bias
        a_qx = cross_gate(s, w1, b1, sim.cross_out.weight, sim.cross_out.bias)
        base = qp.a_q.unsqueeze(1) * index.a_x.float().unsqueeze(0)
        pi = torch.softmax(F.silu(base + a_qx), dim=-1)
        phi = (pi * s).sum(-1).masked_fill(excluded, -torch.inf)
        admissible = ~excluded
        lo = a_qx.masked_fill(excluded.unsqueeze(-1), torch.inf).amin(1, keepdim=True)
        hi = a_qx.masked_fill(excluded.unsqueeze(-1), -torch.inf).amax(1, keepdim=True)
        smin, smax = silu_range(base + lo, base + hi)
        top = smax.amax(-1, keepdim=True)  # a common scale: the test is homogeneous in w
        w_min, w_max = torch.exp(smin - top), torch.exp(smax - top)
        n_adm = admissible.sum(1).float()
        for k in ks:
            t = phi.topk(k, dim=1).values[:, -1:]  # (B, 1) exact k-th best score
            d = s - t.unsqueeze(-1)
            box = (w_max * d.clamp(min=0)).sum(-1) >= (w_min * (-d).clamp(min=0)).sum(-1)
            kept_max = ((s.amax(-1) >= t) & admissible).sum(1).float() / n_adm
            kept_box = (box & admissible).sum(1).float() / n_adm
            out[k]["max_logit"] += kept_max.tolist()
            out[k]["oracle_box"] += kept_box.tolist()
            # Soundness: every item clearly above T passes both tests (rounding aside).
            above = phi >= t + 1e-3
            missed = above & (~box | (s.amax(-1) < t))
            out[k]["sound"].append(not bool(missed.any()))
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="recsys bench bound", description=__doc__.split("\n\n")[0])
    p.add_argument("--bundle", required=True, help="NAME=PATH of a MoL bundle")
    p.add_argument("--users", type=int, default=512, help="random users (batches of 32)")
    p.add_argument("--ks", default="10,100")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", type=Path, default=None)
    args = p.parse_args(argv)
    name, _, path = args.bundle.partition("=")
    if not path:
        p.error("--bundle: expected NAME=PATH")

    from recsys.bundle import load_bundle

    torch.set_num_threads(1)
    bundle = load_bundle(path, "cpu", index_dtype=torch.float32)
    if bundle.index.a_x is None:
        p.error(f"--bundle {path}: a dot-product bundle has no gate to bound")
    ks = [int(k) for k in args.ks.split(",")]
    shares = kept_shares(bundle, args.users, ks, args.seed)
    results = {
        str(k): {
            cert: {"mean": float(np.mean(v)), "p10": float(np.percentile(v, 10))}
            for cert, v in per_cert.items()
            if cert != "sound"
        }
        for k, per_cert in shares.items()
    }
    sound = all(all(per_cert["sound"]) for per_cert in shares.values())
    payload = {
        "benchmark": "share of admissible items kept by MoL score certificates",
        "bundle": name,
        "num_items": bundle.num_items,
        "users": len(shares[ks[0]]["max_logit"]),
        "kept_share": results,
        "sound": sound,
        "provenance": provenance("recsys bench bound " + " ".join(argv or sys.argv[1:])),
    }
    out = args.out or REPO_ROOT / "benchmarks" / "results" / f"bound-{name}-cpu.json"
    atomic_write_text(out, json.dumps(payload, indent=2) + "\n")
    for k, per_cert in results.items():
        print(f"k={k}: " + ", ".join(f"{c} keeps {v['mean']:.3f}" for c, v in per_cert.items()))
    print(f"-> {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
