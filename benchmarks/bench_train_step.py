"""Training-step speed of HSTU + MoL at the paper's ML-1M settings, against the FLOP floor.

Builds the ML-1M configuration of Ding & Zhai (WWW'25): batch 128, length 200, 128 sampled
negatives, HSTU 8 blocks D=50, MoL 8x4x64, AdamW, on random data where every sequence is
full (the most work a batch can hold). It then

- counts the step's matmul FLOPs analytically (the model's floor: forward + 2x backward)
  and with torch.utils.flop_counter.FlopCounterMode (what the implementation executes),
- measures this machine's fp32 and bf16 matmul peak in the same run,
- times forward + backward + AdamW step (median after warm-up) in fp32 and bf16 autocast,
  with shared and per-position negatives,
- with `--compiled`, also times the bf16 steps with MoL's element-wise gate maths through
  torch.compile (`training.compile_mol`), beside the eager rows of the same run,
- with `--parts`, also times the encoder's forward + backward and the optimizer step
  alone, so each part's time can be set against its own FLOP floor (the similarity head
  is the rest of the step),

and writes benchmarks/results/train-step-cpu.json (with `--before OLD.json`, an earlier
output of this script, kept under "before" with its own provenance: the figures before a
change, measured on the same machine) with `ratio = time / (flops / peak)`
(1.0 = every FLOP at peak matmul speed; elementwise work, memory traffic and the
optimizer make up the rest). Wall time and process CPU time are both reported: on a shared
machine the CPU time (with --threads 1) is the figure that other processes disturb least,
and `ratio_cpu` compares it with the peak measured in CPU time (CPU seconds of all threads,
so with several threads it also charges their idle spinning).

The heap is tuned as `recsys train` tunes it (recsys.malloc); `--malloc default` times
glibc's default heap instead (the "before" of the tuned heap).

Run: `python benchmarks/bench_train_step.py [--quick] [--threads N] [--before OLD.json]
[--malloc default] [--parts] [--compiled]`
(or `recsys bench train_step ...`).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import sys
import time
from pathlib import Path
from typing import Literal

import torch
from torch.utils.flop_counter import FlopCounterMode

from recsys.atomic import atomic_write_text
from recsys.malloc import malloc_settings, tune_malloc
from recsys.models.hstu import HSTUConfig
from recsys.models.seqrec import ModelConfig, NegativesConfig, SeqRecModel
from recsys.provenance import provenance
from recsys.similarity.mol import MoLConfig

RESULT = Path(__file__).resolve().parent / "results" / "train-step-cpu.json"
ML1M_ITEMS = 3706
ML1M_USERS = 6040
DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16}


def analytic_flops(cfg: ModelConfig, batch: int, length: int, negatives: int) -> dict:
    """Matmul FLOPs of one training step (forward x 3 for forward + backward).

    Counts every matmul of the model; elementwise work is not counted. Items scored: the
    distinct positives (at most the catalog) plus the R negatives' item parts.
    """
    enc, mol = cfg.encoder, cfg.similarity
    assert isinstance(enc, HSTUConfig) and isinstance(mol, MoLConfig)
    tokens = batch * length
    rows = batch * (length - 1)  # supervised positions (full sequences)
    h, d = enc.num_heads, enc.dim
    per_layer = (
        2 * tokens * d * (2 * h * enc.linear_dim + 2 * h * enc.attn_dim)  # uvqk
        + 2 * batch * h * length * length * (enc.attn_dim + enc.linear_dim)  # qk^T, A v
        + 2 * tokens * h * enc.linear_dim * d  # output linear
    )
    encoder = enc.num_blocks * per_layer
    p, gh = mol.num_logits, mol.gate_hidden
    query = rows * (
        2 * d * 2 * mol.mlp_hidden  # SwiGLU input
        + 2 * mol.mlp_hidden * mol.d_p * (mol.p_q - mol.user_id_components)
        + 2 * d * gh
        + 2 * gh * p  # a_q
    )
    items = min(rows, cfg.num_items) + negatives
    item = items * (2 * d * mol.d_p * mol.p_x + 2 * d * gh + 2 * gh * p)
    pairs = rows * (negatives + 1)
    pair = pairs * (2 * p * mol.d_p + 2 * 2 * p * gh)  # component logits + cross gate
    forward = encoder + query + item + pair
    return {
        "forward": forward,
        "step": 3 * forward,
        "parts_forward": {"encoder": encoder, "query": query, "items": item, "pairs": pair},
        "pairs_per_step": pairs,
    }


def matmul_peak(dtype: torch.dtype, reps: int) -> dict:
    """Best matmul FLOP/s over a few shapes (square and tall-skinny like the model's).

    The best of `reps` runs per shape, timed by the wall clock and by process CPU time, so
    that a busy machine's stalls lower neither peak (a low peak would flatter the ratio).
    """
    shapes = [(1024, 1024, 1024), (2048, 2048, 2048), (16384, 512, 512), (16384, 128, 128)]
    wall: dict[str, float] = {}
    cpu: dict[str, float] = {}
    for m, k, n in shapes:
        a, b = torch.randn(m, k, dtype=dtype), torch.randn(k, n, dtype=dtype)
        a @ b
        runs = [_timed(lambda a=a, b=b: a @ b) for _ in range(reps)]
        name = f"{m}x{k}x{n}"
        wall[name] = 2 * m * k * n / min(w for w, _ in runs)
        cpu[name] = 2 * m * k * n / min(c for _, c in runs)
    return {"peak": max(wall.values()), "peak_cpu": max(cpu.values()), "by_shape": wall}


def _timed(fn) -> tuple[float, float]:
    w0, c0 = time.perf_counter(), time.process_time()
    fn()
    return time.perf_counter() - w0, time.process_time() - c0


def make_batch(batch: int, length: int, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(1, ML1M_ITEMS + 1, (batch, length), generator=g)
    ts = torch.cumsum(torch.randint(0, 100_000, (batch, length), generator=g), dim=1)
    users = torch.randint(0, ML1M_USERS, (batch,), generator=g)
    return ids, ts, users


def make_step(model: SeqRecModel, opt, batch, negatives: NegativesConfig, bf16: bool):
    ids, ts, users = batch

    def step() -> float:
        opt.zero_grad(set_to_none=True)
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            loss, _ = model.training_loss(ids, ts, users, negatives)
        loss.backward()
        opt.step()
        return float(loss.detach())

    return step


def time_steps(step, warmup: int, steps: int) -> tuple[list[float], list[float]]:
    """(wall seconds, process CPU seconds) of each timed step after `warmup` steps."""
    for _ in range(warmup):
        step()
    wall, cpu = [], []
    for _ in range(steps):
        w0, c0 = time.perf_counter(), time.process_time()
        step()
        wall.append(time.perf_counter() - w0)
        cpu.append(time.process_time() - c0)
    return wall, cpu


def time_parts(model: SeqRecModel, opt, batch, bf16: bool, steps: int) -> dict[str, float]:
    """Median wall seconds of the encoder's forward + backward alone (a fixed random
    gradient on its output) and of the optimizer step alone; the rest of a step is the
    similarity head: query and item parts, the scored pairs and the losses."""
    ids, ts, _ = batch
    grad_out = torch.randn(*ids.shape, model.config.encoder.dim, generator=torch.Generator())

    def encoder_pass() -> None:
        opt.zero_grad(set_to_none=True)
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            out = model.encode(ids, ts)
        (out.float() * grad_out).sum().backward()

    encoder, _ = time_steps(encoder_pass, warmup=1, steps=steps)
    optimizer, _ = time_steps(opt.step, warmup=1, steps=steps)  # grads from the last pass
    return {"encoder": statistics.median(encoder), "optimizer": statistics.median(optimizer)}


def parts_row(step_s: float, parts: dict[str, float], flops: dict, peak: float) -> dict:
    """Where a step's time goes: each part's median seconds, its matmul floor at `peak`
    and their ratio (the head is the step less the encoder and the optimizer)."""
    fwd = flops["parts_forward"]
    head_flops = 3 * (fwd["query"] + fwd["items"] + fwd["pairs"])
    head_s = step_s - parts["encoder"] - parts["optimizer"]
    out = {}
    for name, seconds, part_flops in (
        ("encoder", parts["encoder"], 3 * fwd["encoder"]),
        ("head", head_s, head_flops),
        ("optimizer", parts["optimizer"], 0),
    ):
        floor = part_flops / peak
        out[name] = {
            "median_s": seconds,
            "share_of_step": seconds / step_s,
            "floor_s": floor,
            "ratio": seconds / floor if floor > 0 else None,
        }
    return out


def counted_flops(step) -> int:
    with FlopCounterMode(display=False) as counter:
        step()
    return counter.get_total_flops()


def _read_before(path: Path) -> dict:
    """The parts of an earlier output kept as "before": its figures and provenance."""
    try:
        old = json.loads(path.read_text())
        keep = ("config", "peak_flops", "peak_flops_cpu_time", "results", "provenance")
        return {key: old[key] for key in keep}
    except (OSError, ValueError, KeyError) as e:
        raise SystemExit(f"--before {path}: not an output of this script ({e})") from e


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="batch 32, 1 timed step")
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument("--steps", type=int, default=3, help="timed steps per variant")
    parser.add_argument("--batch", type=int, default=None, help="override the batch size")
    parser.add_argument("--out", type=Path, default=RESULT)
    parser.add_argument(
        "--parts", action="store_true", help="also time the encoder and optimizer alone"
    )
    parser.add_argument(
        "--compiled",
        action="store_true",
        help="also time bf16 steps with the MoL gate maths compiled (training.compile_mol)",
    )
    parser.add_argument(
        "--before", type=Path, default=None, help="an earlier output to keep as 'before'"
    )
    parser.add_argument(
        "--malloc",
        choices=("tuned", "default"),
        default="tuned",
        help="glibc heap: recsys.malloc.tune_malloc (as `recsys train`), or glibc's default",
    )
    args = parser.parse_args(argv)
    if args.malloc == "tuned" and not tune_malloc():
        print("tune_malloc: not applied (not glibc); timing the default heap")
    before = _read_before(args.before) if args.before else None
    argv_used = sys.argv[1:] if argv is None else argv
    torch.set_num_threads(args.threads)
    load_at_start = list(os.getloadavg())
    batch_size = args.batch or (32 if args.quick else 128)
    steps = 1 if args.quick else args.steps
    length, num_neg = 200, 128

    cfg = ModelConfig(num_items=ML1M_ITEMS, encoder=HSTUConfig(), similarity=MoLConfig())
    flops = analytic_flops(cfg, batch_size, length, num_neg)
    measured = {name: matmul_peak(dt, 3 if args.quick else 5) for name, dt in DTYPES.items()}
    peaks = {name: m["peak"] for name, m in measured.items()}
    peaks_cpu = {name: m["peak_cpu"] for name, m in measured.items()}
    print(
        f"peak matmul GFLOP/s (wall / CPU time): fp32 {peaks['fp32'] / 1e9:.0f} / "
        f"{peaks_cpu['fp32'] / 1e9:.0f}, bf16 {peaks['bf16'] / 1e9:.0f} / "
        f"{peaks_cpu['bf16'] / 1e9:.0f}"
    )
    print(f"analytic step GFLOP: {flops['step'] / 1e9:.1f}")

    batch = make_batch(batch_size, length)
    results = []
    variants: list[tuple[Literal["shared", "per_position"], str, str]] = [
        (kind, precision, kernel)
        for kind in ("shared", "per_position")
        for precision, kernel in (
            ("fp32", "eager"),
            ("bf16", "eager"),
            *((("bf16", "compiled"),) if args.compiled else ()),
        )
    ]
    for kind, precision, kernel in variants:
        torch.manual_seed(0)
        model = SeqRecModel(cfg).train()
        model.similarity.compile_kernel = kernel == "compiled"
        opt = torch.optim.AdamW(model.parameters(), lr=1e-3, betas=(0.9, 0.98), weight_decay=1e-3)
        step = make_step(model, opt, batch, NegativesConfig(kind, num_neg), precision == "bf16")
        # a compiled kernel compiles in its first step, and again (shape-generic) for
        # the first chunk of another size
        wall, cpu = time_steps(step, warmup=2 if kernel == "compiled" else 1, steps=steps)
        counted = counted_flops(step)
        floor = flops["step"] / peaks[precision]
        row = {
            "negatives": kind,
            "precision": precision,
            "mol_kernel": kernel,
            "median_s": statistics.median(wall),
            "median_cpu_s": statistics.median(cpu),
            "times_s": wall,
            "cpu_times_s": cpu,
            "counted_flops": counted,
            "floor_s": floor,
            "ratio": statistics.median(wall) / floor,
            "floor_cpu_s": flops["step"] / peaks_cpu[precision],
            "ratio_cpu": statistics.median(cpu) / (flops["step"] / peaks_cpu[precision]),
            "achieved_gflops": flops["step"] / statistics.median(wall) / 1e9,
        }
        if args.parts:
            parts = time_parts(model, opt, batch, precision == "bf16", steps)
            row["parts"] = parts_row(row["median_s"], parts, flops, peaks[precision])
            print(
                "  parts: "
                + ", ".join(
                    f"{k} {v['median_s']:.2f} s ({v['share_of_step']:.0%})"
                    for k, v in row["parts"].items()
                )
            )
        results.append(row)
        print(
            f"{kind:>12} {precision} {kernel}: {row['median_s']:.2f} s/step "
            f"({row['median_cpu_s']:.2f} CPU s), floor {floor:.2f} s, ratio "
            f"{row['ratio']:.2f} (CPU {row['ratio_cpu']:.2f}), counted/analytic "
            f"{counted / flops['step']:.3f}"
        )
        del model, opt, step

    out = {
        "benchmark": "train_step",
        "config": {
            "batch": batch_size,
            "length": length,
            "negatives": num_neg,
            "model": cfg.to_dict(),
            "optimizer": "AdamW(lr=1e-3, betas=(0.9, 0.98), weight_decay=1e-3)",
            "data": "random ids in 1..3706, every sequence full, with timestamps",
            "threads": args.threads,
            "quick": args.quick,
            "malloc": malloc_settings() or "glibc default",
            "load_average_at_start": load_at_start,
            "load_average_at_end": list(os.getloadavg()),
        },
        "max_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "flops": flops,
        "peak_flops": peaks,
        "peak_flops_cpu_time": peaks_cpu,
        "peak_by_shape": {name: m["by_shape"] for name, m in measured.items()},
        "results": results,
        "provenance": provenance(" ".join(["benchmarks/bench_train_step.py", *argv_used])),
    }
    if before is not None:
        out["before"] = before
    atomic_write_text(args.out, json.dumps(out, indent=2) + "\n")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
