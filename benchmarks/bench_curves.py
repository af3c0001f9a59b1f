"""Validation curves of finished training runs, side by side at equal epochs.

Reads each run directory's CSV logs (resumed runs included) and writes the per-epoch
validation hr@10 / ndcg@10 of every run, plus, for each epoch that every run reached, the
runs' values next to each other: how two similarities compare at an equal training budget
even when one of them ran longer. Trains nothing.

    recsys bench curves --name beauty-cpu \\
        runs/bench/beauty-beauty-sasrec-dot-cpu runs/bench/beauty-beauty-sasrec-mol-cpu

Writes benchmarks/results/curves-<name>.json with provenance, and curves-<name>.png:
validation hr@10 and ndcg@10 against epoch and, where the runs logged it
(recsys.training.run.ElapsedTime), against fitting wall time.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from benchmarks.bench_accuracy import validation_curve
from recsys.atomic import atomic_write_text
from recsys.provenance import command_line, provenance

REPO_ROOT = Path(__file__).resolve().parent.parent


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


def run_config(run: Path) -> dict | None:
    """The run's config as `recsys train` wrote it (run_config.yaml), or None."""
    import yaml

    path = run / "run_config.yaml"
    return yaml.safe_load(path.read_text()) if path.is_file() else None


def plot(curves: dict[str, list[dict]], path: Path, title: str) -> None:
    """hr@10 / ndcg@10 against epoch (top) and elapsed minutes (bottom, if logged)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    timed = any("elapsed_s" in row for curve in curves.values() for row in curve)
    rows = 2 if timed else 1
    fig, axes = plt.subplots(rows, 2, figsize=(10, 3.6 * rows), squeeze=False)
    for name, curve in curves.items():
        for col, metric in enumerate(("hr@10", "ndcg@10")):
            axes[0][col].plot(
                [r["epoch"] + 1 for r in curve],
                [r[metric] for r in curve],
                label=name,
                marker=".",  # a one-epoch pilot is a single point
            )
            if timed:
                points = [(r["elapsed_s"] / 60, r[metric]) for r in curve if "elapsed_s" in r]
                axes[1][col].plot(*zip(*points, strict=True), label=name, marker=".")
    for col, metric in enumerate(("hr@10", "ndcg@10")):
        axes[0][col].set(xlabel="epoch", ylabel=f"validation {metric}")
        if timed:
            axes[1][col].set(xlabel="fitting wall time (min)", ylabel=f"validation {metric}")
    for ax in (a for row in axes for a in row):
        ax.grid(alpha=0.3)
    axes[0][0].legend(fontsize=8)
    fig.suptitle(title)
    fig.tight_layout()
    tmp = path.with_suffix(".tmp.png")
    fig.savefig(tmp, dpi=110)
    plt.close(fig)
    tmp.replace(path)  # atomic: a failed plot never replaces a good one


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
        "configs": {str(run): run_config(run) for run in args.runs},
        "equal_epochs": equal_epochs(curves),
        "provenance": provenance(command_line("recsys bench curves", argv)),
    }
    out = REPO_ROOT / "benchmarks" / "results" / f"curves-{args.name}.json"
    atomic_write_text(out, json.dumps(payload, indent=2) + "\n")
    plot(curves, out.with_suffix(".png"), f"validation curves: {args.name}")
    last = payload["equal_epochs"][-1] if payload["equal_epochs"] else None
    if last is not None:
        print(
            f"last common epoch {last['epoch']}: "
            + ", ".join(f"{name} hr@10 {v['hr@10']}" for name, v in last.items() if name != "epoch")
        )
    print(f"-> {out} and {out.with_suffix('.png').name}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
