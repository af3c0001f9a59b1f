"""Validation curves of finished training runs, side by side at equal epochs.

Reads each run directory's CSV logs (resumed runs included) and writes the per-epoch
validation hr@10 / ndcg@10 of every run, plus, for each epoch that every run reached, the
runs' values next to each other: how two similarities compare at an equal training budget
even when one of them ran longer. Trains nothing.

    recsys bench curves --name beauty-cpu \\
        runs/bench/beauty-beauty-sasrec-dot-cpu runs/bench/beauty-beauty-sasrec-mol-cpu

Writes benchmarks/results/curves-<name>.json with provenance.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
for _path in (REPO_ROOT, REPO_ROOT / "benchmarks"):
    if str(_path) not in sys.path:
        sys.path.insert(0, str(_path))

from bench_accuracy import validation_curve  # noqa: E402

from recsys.atomic import atomic_write_text  # noqa: E402
from recsys.provenance import command_line, provenance  # noqa: E402


def equal_epochs(curves: dict[str, list[dict]]) -> list[dict]:
    """Rows {epoch, <run>: {hr@10, ndcg@10}} for the epochs every run has."""
    by_run = {name: {row["epoch"]: row for row in curve} for name, curve in curves.items()}
    common = sorted(set.intersection(*(set(rows) for rows in by_run.values())))
    return [
        {
            "epoch": e,
            **{
                name: {m: rows[e][m] for m in ("hr@10", "ndcg@10")} for name, rows in by_run.items()
            },
        }
        for e in common
    ]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="recsys bench curves", description=__doc__.split("\n")[0])
    p.add_argument("runs", nargs="+", type=Path, help="run directories (with logs/)")
    p.add_argument("--name", required=True, help="results file: curves-NAME.json")
    args = p.parse_args(argv)
    curves = {}
    for run in args.runs:
        curve = validation_curve(run)
        if not curve:
            p.error(f"{run}: no validation rows in {run}/logs/version_*/metrics.csv")
        curves[run.name] = curve
    payload = {
        "benchmark": "validation curves at equal epochs",
        "runs": {str(run): curves[run.name] for run in args.runs},
        "equal_epochs": equal_epochs(curves),
        "provenance": provenance(command_line("recsys bench curves", argv)),
    }
    out = REPO_ROOT / "benchmarks" / "results" / f"curves-{args.name}.json"
    atomic_write_text(out, json.dumps(payload, indent=2) + "\n")
    last = payload["equal_epochs"][-1] if payload["equal_epochs"] else None
    if last is not None:
        print(
            f"last common epoch {last['epoch']}: "
            + ", ".join(f"{name} hr@10 {v['hr@10']}" for name, v in last.items() if name != "epoch")
        )
    print(f"-> {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
