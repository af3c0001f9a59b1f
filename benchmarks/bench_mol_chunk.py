"""Where one chunk of MoL's sampled negatives spends its time: whole, and stage by stage.

`recsys.similarity.mol_fused` scores and differentiates the (row, negative) pairs a chunk
of rows at a time. This benchmark builds one chunk at a training recipe's shapes (default:
the selected ML-1M recipe, 192 negatives per row, bf16, gate dropout 0.2, the chunk size
the kernel picks) on random inputs and times, median over --reps after a warm-up:

- the whole chunk (`negatives_chunk`), eager and with the element-wise gate maths compiled;
- each stage alone, on the same shapes and with the same functions the chunk calls: the
  gathers of the negatives' parts, the component logits, the gate MLP, the gate-dropout
  mask, the element-wise gate maths (eager and compiled), the a_x gradient's scatter, the
  gate MLP's backward and the component gradients (d fs, and d g with its scatter).

Each stage's share of the eager chunk says where an optimisation can pay; the stages'
sum is close to, not equal to, the whole (caches are warmer for a stage run alone).

`--against REV` also times the whole eager chunk with `recsys/similarity/mol_fused.py` as it
was at git revision REV (loaded from `git show`, every other module as it is now), in
alternating rounds of --reps calls, and records the median over rounds of each round's
ratio (this kernel / REV's): a before/after of a kernel change that holds on a machine
whose speed drifts from minute to minute, which separate runs do not.

    recsys bench mol_chunk [--negatives 192] [--reps 30] [--against REV] [--out PATH]

Writes benchmarks/results/mol-chunk-cpu.json.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from recsys.atomic import atomic_write_text
from recsys.malloc import malloc_settings, tune_malloc
from recsys.provenance import REPO_ROOT, provenance
from recsys.similarity.dropout import random_keep
from recsys.similarity.mol_fused import (
    CHUNK_BYTES,
    GateWeights,
    _compiled_chain,
    _logits,
    component_grads,
    gate_chain,
    gate_mlp,
    gate_mlp_backward,
    negatives_chunk,
)

RESULT = REPO_ROOT / "benchmarks" / "results" / "mol-chunk-cpu.json"


def median_ms(fn: Callable[[], Any], reps: int, warmup: int = 3) -> float:
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(reps):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times) * 1e3


def kernel_at(rev: str) -> Any:
    """`recsys.similarity.mol_fused` as it was at git revision `rev`, as a separate module."""
    path = "recsys/similarity/mol_fused.py"
    source = subprocess.run(
        ["git", "show", f"{rev}:{path}"], cwd=REPO_ROOT, capture_output=True, text=True
    )
    if source.returncode != 0:
        raise SystemExit(f"--against {rev}: git show {rev}:{path} failed: {source.stderr.strip()}")
    name = f"mol_fused_at_{rev.replace('-', '_').replace('~', '_').replace('^', '_')}"
    with tempfile.TemporaryDirectory() as tmp:
        file = Path(tmp) / f"{name}.py"
        file.write_text(source.stdout)
        spec = importlib.util.spec_from_file_location(name, file)
        assert spec is not None and spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module  # dataclasses look their module up while it loads
        spec.loader.exec_module(module)
    return module


def whole_chunk(
    module: Any, t: dict[str, Any], dropout: float, compiled: bool = False
) -> Callable[[], Any]:
    """A call of `module.negatives_chunk` (a version of mol_fused) on the chunk `t`."""
    gate = module.GateWeights(*(getattr(t["gate"], k) for k in ("w1", "b1", "w2", "b2")))
    return lambda: module.negatives_chunk(
        t["fs"],
        t["g"],
        t["a_q"],
        t["a_x"],
        gate,
        t["pos"],
        t["idx"],
        t["valid"],
        dropout,
        training=True,
        need_grads=True,
        into=t["into"],
        compiled=compiled,
    )


def against(t: dict[str, Any], dropout: float, rev: str, old: Any, reps: int, rounds: int) -> dict:
    """The eager chunk with the current kernel and with `old` (REV's), in alternating rounds."""
    kernels = {"current": sys.modules[negatives_chunk.__module__], rev: old}
    commit = subprocess.run(
        ["git", "rev-parse", rev], cwd=REPO_ROOT, capture_output=True, text=True, check=True
    ).stdout.strip()

    calls = {label: whole_chunk(module, t, dropout) for label, module in kernels.items()}
    times: dict[str, list[float]] = {label: [] for label in calls}
    for r in range(rounds):
        for label, fn in calls.items():
            times[label].append(median_ms(fn, reps, warmup=3 if r == 0 else 1))
    ratios = [a / b for a, b in zip(times["current"], times[rev], strict=True)]
    return {
        "rev": rev,
        "commit": commit,
        "rounds": rounds,
        "median_ms": {label: statistics.median(ms) for label, ms in times.items()},
        "ratio_current_over_rev": statistics.median(ratios),
        "ratio_range": [min(ratios), max(ratios)],
    }


def make_chunk(
    rows: int, negatives: int, items: int, p_q: int, p_x: int, d_p: int, hidden: int, seed: int
) -> dict[str, Any]:
    """Random inputs of one chunk, as `_run_chunks` hands them to `negatives_chunk`."""
    gen = torch.Generator().manual_seed(seed)
    cd, p = torch.bfloat16, p_q * p_x

    def rnd(*shape: int, scale: float = 1.0, dtype: torch.dtype = cd) -> torch.Tensor:
        return (torch.randn(*shape, generator=gen) * scale).to(dtype)

    return {
        "fs": rnd(rows, p_q, d_p, scale=0.1),
        "g": rnd(items, p_x, d_p, scale=0.1),
        "a_q": rnd(rows, p, dtype=torch.float32),
        "a_x": rnd(items, p, dtype=torch.float32),
        "gate": GateWeights(
            rnd(hidden, p, scale=0.1), rnd(hidden, scale=0.1), rnd(p, hidden, scale=0.1), rnd(p)
        ),
        "pos": rnd(rows, dtype=torch.float32),
        "idx": torch.randint(1, items, (rows, negatives), generator=gen),
        "valid": torch.ones(rows, negatives, dtype=torch.bool),
        "into": (torch.zeros(items, p_x, d_p), torch.zeros(items, p)),
    }


def stage_calls(t: dict[str, Any], dropout: float) -> dict[str, Callable[[], Any]]:
    """Each stage of `negatives_chunk` as a call on the chunk's shapes (per-row negatives)."""
    fs, g, a_q, a_x, gate, pos, idx, valid = (
        t[k] for k in ("fs", "g", "a_q", "a_x", "gate", "pos", "idx", "valid")
    )
    c, r = idx.shape
    p = a_q.shape[1]
    acc = torch.float32
    flat = idx.reshape(-1)
    g_rows = torch.index_select(g.reshape(g.shape[0], -1), 0, flat).view(c, -1, g.shape[2])
    ax = torch.index_select(a_x, 0, flat).view(c, r, -1)
    s = _logits(fs, g, g_rows)
    hidden_pre, hidden, z_c = gate_mlp(s, gate)
    kept = random_keep((c, r, p), dropout, fs.device, acc)
    chain_args = (z_c.view(c, r, -1), a_q, ax, kept, s.view(c, r, -1), pos, valid, None, True, acc)
    _, _, d_s, d_zc, _, d_ax_rows, _ = gate_chain(*chain_args)
    compiled = _compiled_chain()
    d_s2, *_ = gate_mlp_backward(
        d_zc.view(c * r, -1), d_s.view(c * r, -1), s, hidden_pre, hidden, gate, acc
    )
    into_g, into_ax = t["into"]
    return {
        "gather negatives' parts": lambda: (
            torch.index_select(g.reshape(g.shape[0], -1), 0, flat),
            torch.index_select(a_x, 0, flat),
        ),
        "component logits": lambda: _logits(fs, g, g_rows),
        "gate MLP": lambda: gate_mlp(s, gate),
        "gate dropout mask": lambda: random_keep((c, r, p), dropout, fs.device, acc),
        "gate maths, eager": lambda: gate_chain(*chain_args),
        "gate maths, compiled": lambda: compiled(*chain_args),
        "a_x gradient scatter": lambda: into_ax.index_add_(0, flat, d_ax_rows.view(c * r, -1)),
        "gate MLP backward": lambda: gate_mlp_backward(
            d_zc.view(c * r, -1), d_s.view(c * r, -1), s, hidden_pre, hidden, gate, acc
        ),
        "component gradients": lambda: component_grads(d_s2, fs, g, g_rows, flat, into_g),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="recsys bench mol_chunk", description=__doc__.split("\n")[0]
    )
    parser.add_argument("--negatives", type=int, default=192, help="per row")
    parser.add_argument("--rows", type=int, default=None, help="default: the kernel's chunk")
    parser.add_argument("--items", type=int, default=3707, help="catalog rows (ML-1M + pad)")
    parser.add_argument("--dropout", type=float, default=0.2, help="gate dropout")
    parser.add_argument("--reps", type=int, default=30)
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument("--against", metavar="REV", help="git revision of the kernel to compare")
    parser.add_argument("--rounds", type=int, default=16, help="alternating rounds (--against)")
    parser.add_argument("--out", type=Path, default=RESULT)
    args = parser.parse_args(argv)
    old = kernel_at(args.against) if args.against else None  # a bad REV fails before timing
    tune_malloc()  # as `recsys train`
    torch.set_num_threads(args.threads)
    p_q, p_x, d_p, hidden = 8, 4, 64, 128  # MoL 8x4x64, gate hidden 128 (the paper's ML-1M)
    # the kernel's own chunk: about CHUNK_BYTES of bf16 (pairs, hidden) activations
    rows = args.rows or max(1, CHUNK_BYTES // (hidden * 2) // args.negatives)
    kernel = sys.modules[negatives_chunk.__module__]
    t = make_chunk(rows, args.negatives, args.items, p_q, p_x, d_p, hidden, seed=0)
    load_at_start = list(os.getloadavg())

    chunk = {
        "eager": median_ms(whole_chunk(kernel, t, args.dropout), args.reps),
        "compiled": median_ms(whole_chunk(kernel, t, args.dropout, compiled=True), args.reps),
    }
    stages = {name: median_ms(fn, args.reps) for name, fn in stage_calls(t, args.dropout).items()}
    eager_stages = {k: v for k, v in stages.items() if k != "gate maths, compiled"}
    for name, ms in stages.items():
        share = ms / chunk["eager"] if name in eager_stages else None
        print(f"{name:>26}: {ms:7.3f} ms" + (f" ({share:.0%} of the eager chunk)" if share else ""))
    print(f"whole chunk: eager {chunk['eager']:.3f} ms, compiled {chunk['compiled']:.3f} ms")
    compared = None
    if args.against:
        compared = against(t, args.dropout, args.against, old, args.reps, args.rounds)
        lo, hi = compared["ratio_range"]
        print(
            f"against {args.against}: this kernel takes {compared['ratio_current_over_rev']:.3f}x "
            f"its time (median of {args.rounds} rounds; rounds {lo:.3f}-{hi:.3f})"
        )
    out = {
        "benchmark": "mol_chunk",
        "config": {
            "rows": rows,
            "negatives_per_row": args.negatives,
            "items": args.items,
            "p_q": p_q,
            "p_x": p_x,
            "d_p": d_p,
            "gate_hidden": hidden,
            "dtype": "bf16 matmuls, fp32 gate maths",
            "gate_dropout": args.dropout,
            "reps": args.reps,
            "threads": args.threads,
            "malloc": malloc_settings() or "glibc default",
            "load_average_at_start": load_at_start,
            "load_average_at_end": list(os.getloadavg()),
        },
        "chunk_ms": chunk,
        "stage_ms": stages,
        "eager_stage_sum_ms": sum(eager_stages.values()),
        **({"against": compared} if compared else {}),
        "provenance": provenance(),
    }
    atomic_write_text(args.out, json.dumps(out, indent=2) + "\n")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
