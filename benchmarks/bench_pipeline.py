"""Pipeline benchmark: 20M synthetic events at ML-20M scale from Parquet to a dataset directory.

Steps, each in its own subprocess so that its peak RSS (from `wait4`) is its own:
1. synthesise the raw log (138k users, 27k items, 20M events) and write it as Parquet;
2. minimal work, the baseline: Polars scans the same Parquet and sorts it by (user, timestamp);
   the collected frame's `estimated_size()` is the in-memory size of the events;
3. `recsys data prepare --format parquet` on that file (`pipelines.prepare.prepare`).
Steps 2 and 3 alternate `--repeats` times; medians are reported. Targets (issue 2): prepare
time <= 2x the minimal work, prepare peak memory <= 3x the events' in-memory size.

    python benchmarks/bench_pipeline.py            # full size (a few minutes)
    python benchmarks/bench_pipeline.py --events 2000000 --users 14000 --items 3000 \\
        --out /tmp/small.json
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from recsys.provenance import command_line, provenance

REPO = Path(__file__).resolve().parent.parent

BASELINE = """
import json, sys, time
import polars as pl
t = time.perf_counter()
events = pl.scan_parquet(sys.argv[1]).sort("user_id", "timestamp").collect()
seconds = time.perf_counter() - t
print(json.dumps({"seconds": seconds, "rows": events.height, "bytes": events.estimated_size()}))
"""

PREPARE = """
import json, sys, time
from pathlib import Path
from pipelines.prepare import PrepareConfig, prepare
t = time.perf_counter()
stats = prepare(PrepareConfig(format="parquet", input=Path(sys.argv[1]), out=Path(sys.argv[2])))
seconds = time.perf_counter() - t
keys = ("num_users", "num_items", "num_interactions", "removed")
print(json.dumps({"seconds": seconds, **{k: stats[k] for k in keys}}))
"""

SYNTH = """
import json, sys, time
from pipelines.synth import SynthConfig, write_events
config = SynthConfig(num_users=int(sys.argv[2]), num_items=int(sys.argv[3]),
                     num_events=int(sys.argv[4]), seed=int(sys.argv[5]), duplicate_rate=0.0005)
t = time.perf_counter()
write_events(config, sys.argv[1], "parquet")
print(json.dumps({"seconds": time.perf_counter() - t}))
"""


def run_child(code: str, *args: str) -> dict[str, Any]:
    """Run `code` in a fresh interpreter; its JSON line plus wall time and peak RSS (bytes)."""
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        start = time.perf_counter()
        env = {**os.environ, "PYTHONPATH": str(REPO)}
        proc = subprocess.Popen(
            [sys.executable, "-c", code, *args], stdout=out, stderr=err, env=env
        )
        _, status, usage = os.wait4(proc.pid, 0)
        proc.returncode = os.waitstatus_to_exitcode(status)
        wall = time.perf_counter() - start
        out.seek(0)
        err.seek(0)
        if proc.returncode != 0:
            raise RuntimeError(f"child failed ({proc.returncode}): {err.read().decode()[-2000:]}")
        result = json.loads(out.read().decode().strip().splitlines()[-1])
    cpu = usage.ru_utime + usage.ru_stime  # all threads, imports included
    return {
        **result,
        "wall_seconds": wall,
        "cpu_seconds": cpu,
        "peak_rss_bytes": usage.ru_maxrss * 1024,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--events", type=int, default=20_000_000)
    parser.add_argument("--users", type=int, default=138_000)
    parser.add_argument("--items", type=int, default=27_000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--workdir", type=Path, default=None, help="default: a temporary dir")
    parser.add_argument("--out", type=Path, default=REPO / "benchmarks/results/pipeline-20m.json")
    args = parser.parse_args(argv)

    load_before = os.getloadavg()  # other work on the machine slows both sides
    work = args.workdir or Path(tempfile.mkdtemp(prefix="bench-pipeline-"))
    work.mkdir(parents=True, exist_ok=True)
    raw, dataset = work / "events.parquet", work / "dataset"
    try:
        sizes = (str(args.users), str(args.items), str(args.events), str(args.seed))
        synth = run_child(SYNTH, str(raw), *sizes)
        print(f"synthesised {args.events:,} events in {synth['seconds']:.1f} s", flush=True)
        baseline, prepared = [], []
        for r in range(args.repeats):
            baseline.append(run_child(BASELINE, str(raw)))
            prepared.append(run_child(PREPARE, str(raw), str(dataset)))
            print(
                f"repeat {r + 1}: minimal work {baseline[-1]['seconds']:.2f} s, "
                f"prepare {prepared[-1]['seconds']:.2f} s, prepare peak RSS "
                f"{prepared[-1]['peak_rss_bytes'] / 2**20:.0f} MiB",
                flush=True,
            )
        parquet_bytes = raw.stat().st_size
    finally:
        if args.workdir is None:
            shutil.rmtree(work, ignore_errors=True)

    def median(runs: list[dict[str, Any]], key: str) -> float:
        return statistics.median(run[key] for run in runs)

    events_bytes = baseline[0]["bytes"]
    time_ratio = median(prepared, "seconds") / median(baseline, "seconds")
    memory_ratio = median(prepared, "peak_rss_bytes") / events_bytes
    result = {
        "benchmark": "pipeline",
        "config": {**vars(args), "workdir": str(args.workdir), "out": str(args.out)},
        "events": {
            "rows": baseline[0]["rows"],
            "in_memory_bytes": events_bytes,
            "parquet_bytes": parquet_bytes,
        },
        "synth_seconds": synth["seconds"],
        "minimal_work": {
            "what": "pl.scan_parquet(path).sort('user_id', 'timestamp').collect()",
            "median_seconds": median(baseline, "seconds"),
            "median_wall_seconds": median(baseline, "wall_seconds"),
            "median_peak_rss_bytes": median(baseline, "peak_rss_bytes"),
            "median_cpu_seconds": median(baseline, "cpu_seconds"),
            "runs": baseline,
        },
        "prepare": {
            "what": "pipelines.prepare.prepare(format='parquet'): Parquet -> dataset directory",
            "median_seconds": median(prepared, "seconds"),
            "median_wall_seconds": median(prepared, "wall_seconds"),
            "median_peak_rss_bytes": median(prepared, "peak_rss_bytes"),
            "median_cpu_seconds": median(prepared, "cpu_seconds"),
            "runs": prepared,
        },
        "time_ratio": time_ratio,
        "memory_ratio": memory_ratio,
        "wall_time_ratio": median(prepared, "wall_seconds") / median(baseline, "wall_seconds"),
        "cpu_time_ratio": median(prepared, "cpu_seconds") / median(baseline, "cpu_seconds"),
        "load_average": {"before": load_before, "after": os.getloadavg()},
        "targets": {"time_ratio_max": 2.0, "memory_ratio_max": 3.0},
        "meets_targets": time_ratio <= 2.0 and memory_ratio <= 3.0,
        "provenance": provenance(command_line("python benchmarks/bench_pipeline.py", argv)),
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(
        f"time ratio {time_ratio:.2f} (target <= 2), memory ratio {memory_ratio:.2f} "
        f"(target <= 3; events {events_bytes / 2**20:.0f} MiB) -> {args.out}"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
