"""Validation curves of finished training runs, side by side at equal epochs.

Reads each run directory's CSV logs (resumed runs included), or a committed per-run result
of `recsys bench accuracy` (its `valid_by_epoch`, for a run whose directory is gone), and
writes the per-epoch validation hr@10 / ndcg@10 of every run, plus, for each epoch that
every run reached, the runs' values next to each other: how two similarities compare at an
equal training budget even when one of them ran longer. A run trained with weight averaging
(`training.ema_decay`) gives two curves, its average's and its raw weights'. Trains nothing.

    recsys bench curves --name beauty-cpu \\
        runs/bench/beauty-beauty-sasrec-dot-cpu runs/bench/beauty-beauty-sasrec-mol-cpu
    recsys bench curves --name ml-1m-ema benchmarks/results/ml-1m-ml-1m-hstu-mol-pp192-cpu.json \\
        runs/bench/ml-1m-ml-1m-hstu-mol-pp192-ema-cpu-...

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


RAW = " (raw weights)"


def source_curves(source: Path) -> dict[str, list[dict]]:
    """{name: curve} of one source: a run directory (its CSV logs, named after it) or a per-run
    result file (its valid_by_epoch, named after the file). With raw-weight figures (weight
    averaging), a second curve "NAME (raw weights)" holds them."""
    if source.is_file():
        curve = _result(source).get("valid_by_epoch") or []
    else:
        curve = validation_curve(source)
    name = source.stem if source.is_file() else source.name
    curves = {name: [{k: v for k, v in r.items() if not k.startswith("raw_")} for r in curve]}
    raw = [r for r in curve if "raw_hr@10" in r]
    if raw:
        curves[name + RAW] = [
            {
                "epoch": r["epoch"],
                "hr@10": r["raw_hr@10"],
                "ndcg@10": r["raw_ndcg@10"],
                **({"elapsed_s": r["elapsed_s"]} if "elapsed_s" in r else {}),
            }
            for r in raw
        ]
    return curves


def source_config(source: Path) -> dict | str | None:
    """A run directory's config (run_config.yaml), or the config path a result file names."""
    if source.is_file():
        return _result(source).get("config")
    return run_config(source)


def _result(path: Path) -> dict:
    """A per-run result file of `recsys bench accuracy`, or ValueError saying why not."""
    try:
        result = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, ValueError) as e:
        raise ValueError(f"{path}: not a readable per-run result JSON ({e})") from e
    if not isinstance(result, dict) or not isinstance(result.get("valid_by_epoch", []), list):
        raise ValueError(f"{path}: expected a per-run result with a valid_by_epoch list")
    return result


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
    p.add_argument(
        "runs",
        nargs="+",
        type=Path,
        help="run directories (with logs/) or per-run result files (ml-1m-ml-1m-NAME.json)",
    )
    p.add_argument("--name", required=True, help="results file: curves-NAME.json")
    args = p.parse_args(argv)
    curves: dict[str, list[dict]] = {}
    for run in args.runs:
        try:
            found = source_curves(run)
        except ValueError as e:
            p.error(str(e))
        if not any(found.values()):
            where = "valid_by_epoch" if run.is_file() else "logs/version_*/metrics.csv"
            p.error(f"{run}: no validation rows in its {where}")
        curves |= found
    payload = {
        "benchmark": "validation curves at equal epochs",
        "runs": curves,
        "sources": [str(run) for run in args.runs],
        "configs": {str(run): source_config(run) for run in args.runs},
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
