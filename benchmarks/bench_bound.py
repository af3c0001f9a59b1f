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
- `cluster_oracle_box`: the same test with one interval per query and item cluster
  (k-means on the item components, `--cluster-size` items per cluster on average): the
  observed min and max of a_qx,k over the cluster's members. The floor of any certificate
  that bounds the cross gate per cluster instead of per item (the way to avoid running the
  cross MLP on every item).
- `cluster_ibp_box`: a certified version of it: the cluster's box of exact s values (min and
  max of each s_k over its members) pushed through the cross MLP by interval arithmetic
  (interval bound propagation: Linear, SiLU's exact range, Linear). Sound by construction.
- `cluster_ball_ibp`: per item instead of per cluster: the cross MLP's hidden
  pre-activations are exact at the cluster's mean s (s is linear in the item components,
  so that is s at the mean components) and move by at most ||W1_r|| ||s - s_mean|| for an
  item (Cauchy-Schwarz), then SiLU's exact range and the second Linear by intervals. Sound;
  it costs the mean's MLP once per cluster plus O(hidden) per item.
`a_qx_width` reports the mean width of each certificate's a_qx intervals.

    recsys bench bound --bundle ml-1m=out/bundles/ml-1m-20 [--users 512] [--ks 10,100]

Writes benchmarks/results/bound-<name>-cpu.json with provenance.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from recsys.atomic import atomic_write_text
from recsys.provenance import command_line, provenance

REPO_ROOT = Path(__file__).resolve().parent.parent

SILU_ARGMIN = -1.2784645  # silu's minimum on the real line


def silu_range(lo: torch.Tensor, hi: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Min and max of silu over [lo, hi] (element-wise; silu falls, then rises)."""
    smax = torch.maximum(F.silu(lo), F.silu(hi))
    smin = F.silu(torch.minimum(torch.maximum(torch.full_like(lo, SILU_ARGMIN), lo), hi))
    return smin, smax


CERTIFICATES = (
    "max_logit",
    "oracle_box",
    "cluster_oracle_box",
    "cluster_ibp_box",
    "cluster_ball_ibp",
)


def kmeans(x: torch.Tensor, clusters: int, iters: int = 20, seed: int = 0) -> torch.Tensor:
    """Lloyd's k-means on the rows of x (n, d) -> (n,) cluster ids in [0, clusters)."""
    gen = torch.Generator().manual_seed(seed)
    centres = x[torch.randperm(x.shape[0], generator=gen)[:clusters]].clone()
    for _ in range(iters):
        assign = torch.cdist(x, centres).argmin(1)
        sums = torch.zeros_like(centres).index_add_(0, assign, x)
        counts = torch.bincount(assign, minlength=clusters).unsqueeze(1)
        centres = torch.where(counts > 0, sums / counts.clamp(min=1), centres)
    return torch.cdist(x, centres).argmin(1)


def cluster_range(
    values: torch.Tensor, assign: torch.Tensor, clusters: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """values (B, N, P), assign (N,) -> per-cluster min and max (B, clusters, P)."""
    b, _, p = values.shape
    index = assign.view(1, -1, 1).expand_as(values)
    lo = values.new_full((b, clusters, p), torch.inf).scatter_reduce(1, index, values, "amin")
    hi = values.new_full((b, clusters, p), -torch.inf).scatter_reduce(1, index, values, "amax")
    return lo, hi


def ibp_cross_gate(
    s_lo: torch.Tensor, s_hi: torch.Tensor, w1, b1, w2, b2
) -> tuple[torch.Tensor, torch.Tensor]:
    """Interval bound propagation through a_qx = W2 silu(W1 s + b1) + b2 for s in [lo, hi]."""
    mid, rad = (s_lo + s_hi) / 2, (s_hi - s_lo) / 2
    h_mid, h_rad = F.linear(mid, w1, b1), F.linear(rad, w1.abs())
    u_lo, u_hi = silu_range(h_mid - h_rad, h_mid + h_rad)
    u_mid, u_rad = (u_lo + u_hi) / 2, (u_hi - u_lo) / 2
    a_mid, a_rad = F.linear(u_mid, w2, b2), F.linear(u_rad, w2.abs())
    return a_mid - a_rad, a_mid + a_rad


def ball_ibp_cross_gate(
    s: torch.Tensor, s_mean: torch.Tensor, w1, b1, w2, b2
) -> tuple[torch.Tensor, torch.Tensor]:
    """Bounds on a_qx = W2 silu(W1 s + b1) + b2 (B, N, P) from the exact hidden layer at
    s_mean (B, N, P; each item's cluster mean) and |W1_r (s - s_mean)| <= |W1_r| |s - s_mean|."""
    h_mid = F.linear(s_mean, w1, b1)
    h_rad = w1.norm(dim=1) * (s - s_mean).norm(dim=-1, keepdim=True)
    u_lo, u_hi = silu_range(h_mid - h_rad, h_mid + h_rad)
    u_mid, u_rad = (u_lo + u_hi) / 2, (u_hi - u_lo) / 2
    a_mid, a_rad = F.linear(u_mid, w2, b2), F.linear(u_rad, w2.abs())
    return a_mid - a_rad, a_mid + a_rad


def cluster_mean(values: torch.Tensor, assign: torch.Tensor, clusters: int) -> torch.Tensor:
    """values (B, N, P), assign (N,) -> per-cluster mean (B, clusters, P)."""
    b, _, p = values.shape
    sums = values.new_zeros(b, clusters, p).index_add_(1, assign, values)
    return sums / torch.bincount(assign, minlength=clusters).clamp(min=1).view(1, -1, 1)


@torch.no_grad()
def kept_shares(
    bundle: Any, users: int, ks: list[int], seed: int, cluster_size: int = 32
) -> tuple[dict[int, dict[str, list]], dict[str, float]]:
    """Per k, per user: the share of admissible items each certificate keeps (and each
    certificate's mean a_qx interval width). The queries are those of the retrieval
    benchmark (recent histories of random users)."""
    from benchmarks.bench_retrieval import query_batches
    from recsys.similarity.mol import component_logits, cross_gate

    sim, index = bundle.model.similarity, bundle.index
    out: dict[int, dict[str, list]] = {
        k: {**{c: [] for c in CERTIFICATES}, "sound": []} for k in ks
    }
    widths: dict[str, list[float]] = {c: [] for c in CERTIFICATES[1:]}
    g = index.g.float()
    clusters = max(1, (g.shape[0] - 1) // cluster_size)
    # Row 0 is the padding item (always excluded): a cluster of its own.
    assign = torch.cat([torch.tensor([clusters]), kmeans(g[1:].flatten(1), clusters, seed=seed)])
    for qb in query_batches(bundle, 32, max(1, users // 32), seed):
        qp, excluded = qb.qp, qb.exclude  # (B, N+1), padding included
        s = component_logits(qp.f, g, sim.tau)  # (B, N+1, P)
        w1, b1 = sim.cross_in.weight, sim.cross_in.bias
        a_qx = cross_gate(s, w1, b1, sim.cross_out.weight, sim.cross_out.bias)
        base = qp.a_q.unsqueeze(1) * index.a_x.float().unsqueeze(0)
        pi = torch.softmax(F.silu(base + a_qx), dim=-1)  # (B, N+1, P)
        phi = (pi * s).sum(-1).masked_fill(excluded, -torch.inf)
        admissible = ~excluded
        lo = a_qx.masked_fill(excluded.unsqueeze(-1), torch.inf).amin(1, keepdim=True)
        hi = a_qx.masked_fill(excluded.unsqueeze(-1), -torch.inf).amax(1, keepdim=True)
        c_lo, c_hi = cluster_range(a_qx, assign, clusters + 1)
        i_lo, i_hi = ibp_cross_gate(
            *cluster_range(s, assign, clusters + 1),
            w1,
            b1,
            sim.cross_out.weight,
            sim.cross_out.bias,
        )
        s_mean = cluster_mean(s, assign, clusters + 1)[:, assign]
        intervals = {
            "oracle_box": (lo, hi),
            "cluster_oracle_box": (c_lo[:, assign], c_hi[:, assign]),
            "cluster_ibp_box": (i_lo[:, assign], i_hi[:, assign]),
            "cluster_ball_ibp": ball_ibp_cross_gate(
                s, s_mean, w1, b1, sim.cross_out.weight, sim.cross_out.bias
            ),
        }
        for cert, (a_lo, a_hi) in intervals.items():
            widths[cert].append(float((a_hi - a_lo).expand_as(a_qx)[:, 1:].mean()))
        n_adm = admissible.sum(1).float()
        for k in ks:
            t = phi.topk(k, dim=1).values[:, -1:]  # (B, 1) exact k-th best score
            kept = {"max_logit": s.amax(-1) >= t}
            for cert, (a_lo, a_hi) in intervals.items():
                kept[cert] = box_test(s, base + a_lo, base + a_hi, t)
            for cert, keep in kept.items():
                out[k][cert] += ((keep & admissible).sum(1).float() / n_adm).tolist()
            # Soundness: every item clearly above T passes every certified test (rounding
            # aside; the oracles are sound by construction on the items they were taken on).
            above = (phi >= t + 1e-3) & admissible
            missed = torch.zeros_like(above)
            for keep in kept.values():
                missed |= above & ~keep
            out[k]["sound"].append(not bool(missed.any()))
    return out, {cert: float(np.mean(v)) for cert, v in widths.items()}


def box_test(s: torch.Tensor, z_lo: torch.Tensor, z_hi: torch.Tensor, t: torch.Tensor):
    """Can phi = sum_k softmax(silu(z))_k s_k reach t (B, 1) for some z in [z_lo, z_hi]?
    Yes iff sum_k w_max,k (s_k - t)^+ >= sum_k w_min,k (t - s_k)^+ with w = exp(silu(z))."""
    smin, smax = silu_range(z_lo, z_hi)
    top = smax.amax(-1, keepdim=True)  # a common scale: the test is homogeneous in w
    w_min, w_max = torch.exp(smin - top), torch.exp(smax - top)
    d = s - t.unsqueeze(-1)
    return (w_max * d.clamp(min=0)).sum(-1) >= (w_min * (-d).clamp(min=0)).sum(-1)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="recsys bench bound", description=__doc__.split("\n\n")[0])
    p.add_argument("--bundle", required=True, help="NAME=PATH of a MoL bundle")
    p.add_argument("--users", type=int, default=512, help="random users (batches of 32)")
    p.add_argument("--ks", default="10,100")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--cluster-size", type=int, default=32, help="mean items per k-means cluster")
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
    shares, widths = kept_shares(bundle, args.users, ks, args.seed, args.cluster_size)
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
        "cluster_size": args.cluster_size,
        "kept_share": results,
        "a_qx_width": widths,
        "sound": sound,
        "provenance": provenance(command_line("recsys bench bound", argv)),
    }
    out = args.out or REPO_ROOT / "benchmarks" / "results" / f"bound-{name}-cpu.json"
    atomic_write_text(out, json.dumps(payload, indent=2) + "\n")
    for k, per_cert in results.items():
        print(f"k={k}: " + ", ".join(f"{c} keeps {v['mean']:.3f}" for c, v in per_cert.items()))
    print(f"-> {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
