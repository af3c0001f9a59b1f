"""Generate docs/RESULTS.md from the measured results in benchmarks/results/*.json.

    recsys bench results_doc            # (re)write docs/RESULTS.md
    recsys bench results_doc --check    # exit 1 if docs/RESULTS.md is not current

Each accuracy summary (accuracy-<dataset>.json, written by `recsys bench accuracy`) becomes
a table; every other JSON gets one row with its benchmark, a few well-known top-level
figures, its provenance and a link (plus its plot, when a PNG with the same stem exists).
The output depends only on the files: sorted by name, relative links, no generation time.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parent.parent
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))

from recsys.atomic import atomic_write_text  # noqa: E402

RESULTS = REPO_ROOT / "benchmarks" / "results"
DOC = REPO_ROOT / "docs" / "RESULTS.md"
COMMAND = "recsys bench results_doc"
LINK = "../benchmarks/results/"  # from docs/ to the results
DASH = "–"
TEST_METRICS = ("hr@10", "ndcg@10", "hr@50", "hr@200", "mrr", "coverage@10")
# Top-level scalars worth showing for any benchmark that records them.
FIGURES = (
    "device",
    "wall_time_s",
    "median_s",
    "speedup",
    "time_ratio",
    "memory_ratio",
    "meets_target",
    "meets_targets",
)


def _load(path: Path) -> Any:
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise ValueError(f"{path.name}: not valid JSON ({exc})") from exc


def _cell(text: object) -> str:
    """Text safe inside a Markdown table cell."""
    return str(text).replace("|", "\\|").replace("\n", " ")


def _num(value: object, digits: int = 4) -> str:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return DASH
    return f"{value:.{digits}f}"


def _scalar(value: object) -> str:
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


def _short(commit: object) -> str:
    """A 7-character commit, keeping the `-dirty` mark."""
    if not isinstance(commit, str) or not commit:
        return DASH
    sha, dirty, _ = commit.partition("-dirty")
    return sha[:7] + dirty


def _link(name: str) -> str:
    return f"[{name}]({LINK}{name})"


def _table(header: list[str], rows: list[list[str]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    return lines + ["| " + " | ".join(_cell(c) for c in row) + " |" for row in rows]


def find_provenance(data: Any) -> dict | None:
    """The `provenance` object: top level, else the first one nested anywhere."""
    if isinstance(data, dict):
        if isinstance(data.get("provenance"), dict):
            return data["provenance"]
        children = list(data.values())
    elif isinstance(data, list):
        children = data
    else:
        return None
    return next((p for p in map(find_provenance, children) if p is not None), None)


def _accuracy_row(label: str, row: dict, test: dict, popularity: dict, epochs: str) -> list[str]:
    wall = row.get("wall_time_s")
    return [
        label,
        row.get("encoder", DASH),
        row.get("similarity", DASH),
        *(_num(test.get(m)) for m in TEST_METRICS),
        _num(popularity.get("hr@10")),
        epochs,
        _num(wall / 60, 1) if isinstance(wall, (int, float)) else DASH,
        _short(row.get("commit")),
    ]


def accuracy_section(path: Path, summary: dict) -> list[str]:
    """One dataset's table: a row per config, each followed by its refit row if recorded."""
    header = ["Config", "Encoder", "Similarity", "HR@10", "NDCG@10", "HR@50", "HR@200", "MRR"]
    header += ["Coverage@10", "Popularity HR@10", "Epochs", "Wall time (min)", "Commit"]
    rows = []
    for row in summary["rows"]:
        name = row.get("name") or Path(row.get("config", DASH)).stem
        selected, run = row.get("selected_epoch"), row.get("epochs_run")
        epochs = f"{selected + 1 if isinstance(selected, int) else DASH}/{run or DASH}"
        rows.append(
            _accuracy_row(name, row, row.get("test", {}), row.get("popularity", {}), epochs)
        )
        refit = row.get("refit")
        if isinstance(refit, dict):
            n = refit.get("epochs", DASH)
            timed = {**row, "wall_time_s": refit.get("wall_time_s")}
            rows.append(
                _accuracy_row(f"{name} (refit)", timed, refit.get("test", {}), {}, f"{n}/{n}")
            )
    dataset = summary.get("dataset") or path.stem.removeprefix("accuracy-")
    return [f"### {dataset}", "", f"Source: {_link(path.name)}", "", *_table(header, rows), ""]


def other_row(path: Path, data: Any, plots: set[str]) -> list[str]:
    """A generic row: link (and plot), benchmark, well-known figures, provenance."""
    top = data if isinstance(data, dict) else {}
    figures = [
        f"{k} {_scalar(top[k])}" for k in FIGURES if isinstance(top.get(k), (str, int, float))
    ]
    prov = find_provenance(data) or {}
    command = prov.get("command")
    plot = path.with_suffix(".png").name
    return [
        _link(path.name) + (f" ({_link(plot)})" if plot in plots else ""),
        top.get("benchmark") or DASH,
        ", ".join(figures) or DASH,
        f"`{command.strip()}`" if isinstance(command, str) and command.strip() else DASH,
        _short(prov.get("commit")),
        str(prov["date"])[:10] if prov.get("date") else DASH,
    ]


def render(results_dir: Path) -> str:
    """The whole of docs/RESULTS.md for the JSON files in `results_dir`."""
    plots = {p.name for p in results_dir.glob("*.png")}
    accuracy, others = [], []
    for path in sorted(results_dir.glob("*.json")):
        data = _load(path)
        if path.name.startswith("accuracy-") and isinstance(data, dict) and "rows" in data:
            accuracy += accuracy_section(path, data)
        else:
            others.append(other_row(path, data, plots))
    lines = [
        "# Results",
        "",
        f"> Generated by `{COMMAND}` from `benchmarks/results/*.json`. Do not edit by hand:",
        f"> rerun `{COMMAND}` after adding or changing a result (`--check` tells whether this",
        "> file is current).",
        "",
        "## Accuracy",
        "",
        "Test figures of the model selected on validation (test is never used for selection).",
        "Epochs: the selected epoch, counted from 1, / the epochs run. Popularity HR@10: the",
        "most-popular baseline on the same test set. A (refit) row retrains from scratch on",
        "train + validation for the selected number of epochs and evaluates test once. Wall time",
        f"is fitting time. {DASH}: not recorded.",
        "",
        *(accuracy or ["No accuracy summaries yet.", ""]),
        "## Other benchmarks",
        "",
        "One row per result file; see each file for its figures. Commit and date come from",
        "its provenance.",
        "",
        *_table(["File", "Benchmark", "Figures", "Command", "Commit", "Date"], others),
    ]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog=COMMAND, description=__doc__.split("\n")[0])
    parser.add_argument(
        "--check", action="store_true", help="exit 1 if docs/RESULTS.md is not current"
    )
    args = parser.parse_args(argv)
    text = render(RESULTS)
    doc = DOC.relative_to(REPO_ROOT) if DOC.is_relative_to(REPO_ROOT) else DOC
    if args.check:
        if not DOC.is_file() or DOC.read_text() != text:
            print(f"{doc} is out of date with benchmarks/results/; run: {COMMAND}", file=sys.stderr)
            return 1
        print(f"{doc} is current")
        return 0
    atomic_write_text(DOC, text)
    print(f"wrote {doc}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
