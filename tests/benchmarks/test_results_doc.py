"""benchmarks/bench_results_doc.py: docs/RESULTS.md generated from benchmarks/results/."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

import benchmarks.bench_results_doc as bench_results_doc
from benchmarks.bench_results_doc import (
    COMMAND,
    README_END,
    README_RETRIEVAL_END,
    README_RETRIEVAL_START,
    README_START,
    averaging_section,
    readme_retrieval_table,
    readme_table,
    render,
    seed_gaps_section,
    seeds_section,
    steps_section,
    with_readme_table,
)

REPO = Path(__file__).resolve().parents[2]


def _row(name: str, similarity: str, hr: float, **extra: object) -> dict:
    return {
        "name": name,
        "config": f"configs/{name}.yaml",
        "encoder": "sasrec",
        "similarity": similarity,
        "negatives": {"kind": "shared", "num": 128},
        "valid": {"hr@10": hr, "ndcg@10": hr / 2},
        "test": {"hr@10": hr, "ndcg@10": 0.03141, "hr@50": 0.25, "hr@200": 0.5, "mrr": 0.02},
        "popularity": {"hr@10": 0.0123},
        "selected_epoch": 6,
        "epochs_run": 9,
        "wall_time_s": 90.0,
        "device": "cpu",
        "commit": "0123456789abcdef0123456789abcdef01234567-dirty",
        **extra,
    }


def _results(tmp_path: Path) -> Path:
    results = tmp_path / "results"
    results.mkdir()
    refit = {"epochs": 7, "test": {"hr@10": 0.07, "ndcg@10": 0.04}, "wall_time_s": 30.0}
    summary = {
        "dataset": "beauty",
        "rows": [
            _row("beauty-dot", "dot", 0.05, refit={**refit, "provenance": {"commit": "abcdef012"}}),
            _row("beauty-mol", "mol", 0.06, refit=refit),
        ],
    }
    (results / "accuracy-beauty.json").write_text(json.dumps(summary))
    provenance = {
        "command": "recsys bench serve a|b",
        "commit": "fedcba9876543210",
        "date": "2026-01-02T03:04:05+00:00",
    }
    generic = {"benchmark": "serve", "median_s": 0.5, "provenance": provenance}
    (results / "serve-x.json").write_text(json.dumps(generic))
    (results / "serve-x.png").write_bytes(b"")
    where = {"index_dtype": "float32", "batch": 32, "k": 10}
    single = {
        "catalog": "tiny",
        "catalog_size": 50,
        "device": "cpu",
        "threads": 1,
        "provenance": provenance,
        "records": [
            {
                **where,
                "methods": {
                    "dot_floor": {"recall": None, "p50_ms": 0.5, "speedup_vs_brute_force": 8.0},
                    "topk_avg:64": {"recall": 0.95, "p50_ms": 1.0, "speedup_vs_brute_force": 4.0},
                },
            }
        ],
    }
    (results / "retrieval-tiny-cpu.json").write_text(json.dumps(single))
    spread = {"per_seed": [1.0, 3.5, 2.0], "median": 2.0, "min": 1.0, "max": 3.5}
    recall = {"per_seed": [1.0, 1.0, 0.5], "median": 1.0, "min": 0.5, "max": 1.0}
    seeds = {
        **{k: v for k, v in single.items() if k != "records"},
        "seeds": [0, 1, 2],
        "over_seeds": [
            {
                **where,
                "method": "bounded_exact:64",
                "speedup_vs_brute_force": spread,
                "recall": recall,
            }
        ],
        "runs": [],
    }
    (results / "retrieval-tiny-seeds-cpu.json").write_text(json.dumps(seeds))
    paired = {
        "benchmark": "two runs compared query by query on one split",
        "split": "test",
        "queries": 40,
        "models": {"a": {"name": "beauty-mol"}, "b": {"name": "beauty-dot"}},
        "method": {"interval": "bootstrap, 95%", "p_value": "sign flips"},
        "rows": [
            {
                "metric": "hr@10",
                "a": 0.5,
                "b": 0.25,
                "diff": 0.25,
                "ci_low": 0.05,
                "ci_high": 0.45,
                "p_value": 0.00005,
                "a_only": 12,
                "b_only": 2,
            },
            {
                "metric": "mrr",
                "a": 0.2,
                "b": 0.3,
                "diff": -0.1,
                "ci_low": -0.2,
                "ci_high": 0.01,
                "p_value": 0.0612,
                "a_ci_low": 0.15,
                "a_ci_high": 0.25,
                "b_ci_low": 0.25,
                "b_ci_high": 0.35,
            },
        ],
        "provenance": provenance,
    }
    (results / "paired-mol-vs-dot.json").write_text(json.dumps(paired))
    return results


def test_render_tables_links_and_refit_row(tmp_path: Path) -> None:
    text = render(_results(tmp_path))
    lines = text.splitlines()
    assert f"`{COMMAND}`" in lines[2] and "Do not edit by hand" in lines[2]
    assert "Source: [accuracy-beauty.json](../benchmarks/results/accuracy-beauty.json)" in lines
    assert (
        "| beauty-dot | sasrec | dot | 0.0250 | 0.0500 | 0.0314 | 0.2500 | 0.5000 | 0.0200 | – "
        "| 0.0123 | 7/9 | 1.5 | 0123456-dirty |"
    ) in lines
    # A refit run apart from its selection (--refit-from) shows its own commit.
    dot = lines.index(next(line for line in lines if line.startswith("| beauty-dot |")))
    assert lines[dot + 1].startswith("| beauty-dot (refit) |")
    assert lines[dot + 1].endswith("| 7/7 | 0.5 | abcdef0 |")
    mol = lines.index(next(line for line in lines if line.startswith("| beauty-mol |")))
    assert lines[mol + 1] == (
        "| beauty-mol (refit) | sasrec | mol | – | 0.0700 | 0.0400 | – | – | – | – | – "
        "| 7/7 | 0.5 | 0123456-dirty |"
    )
    assert (
        "| [serve-x.json](../benchmarks/results/serve-x.json) "
        "([serve-x.png](../benchmarks/results/serve-x.png)) | serve | median_s 0.5 "
        "| `recsys bench serve a\\|b` | fedcba9 | 2026-01-02 |"
    ) in lines
    assert "| float32 | 32 | 10 | topk_avg:64 | 4.00x | 0.9500 | 1.00 |" in lines
    assert "| float32 | 32 | 10 | dot_floor | 8.00x | – | 0.50 |" in lines
    assert (
        "| float32 | 32 | 10 | bounded_exact:64 | 2.00x (1.00–3.50) | 1.0000 (0.5000–1.0000) | – |"
    ) in lines
    assert any("one model trained per seed (0, 1, 2)" in line for line in lines)
    # A paired comparison gets its own table of signed gaps.
    assert "### mol-vs-dot" in lines
    assert any(
        line.startswith("beauty-mol (a) against beauty-dot (b) on the test split, 40")
        for line in lines
    )
    assert "| hr@10 | 0.5000 | 0.2500 | +0.2500 | [+0.0500, +0.4500] | < 0.001 | 12 / 2 |" in lines
    # Each model's own interval follows its figure where the comparison recorded one.
    assert (
        "| mrr | 0.2000 [0.1500, 0.2500] | 0.3000 [0.2500, 0.3500] | -0.1000 "
        "| [-0.2000, +0.0100] | 0.061 | – |"
    ) in lines
    assert any("after a and b: each model's own" in line for line in lines)
    assert not any(line.startswith("| [paired-") for line in lines)
    # Retrieval files get their own tables, not a generic row.
    assert not any(line.startswith("| [retrieval-") for line in lines)
    assert str(tmp_path) not in text
    assert render(tmp_path / "results") == text


def test_recipe_steps_table_reads_validation_figures_in_the_given_order(tmp_path: Path) -> None:
    results = _results(tmp_path)
    steps = ("beauty", (("beauty-mol", "MoL first"), ("beauty-dot", "then dot")))
    lines = steps_section(results, steps)
    assert lines[0] == "### beauty: recipe steps, on validation"
    body = [line for line in lines if line.startswith("| MoL") or line.startswith("| then")]
    assert body == [
        "| MoL first | beauty-mol | 0.0600 | 0.0300 | 7/9 | 1.5 |",
        "| then dot | beauty-dot | 0.0500 | 0.0250 | 7/9 | 1.5 |",
    ]
    with pytest.raises(ValueError, match="no row named 'beauty-x'"):
        steps_section(results, ("beauty", (("beauty-x", "missing"),)))
    assert steps_section(results, ("ml-1m", (("a", "b"),))) == []  # no summary: no table


def test_averaging_table_sets_the_average_beside_the_raw_weights(tmp_path: Path) -> None:
    run = {
        "config": "configs/x.yaml",
        "valid_by_epoch": [
            {"epoch": 0, "hr@10": 0.1, "ndcg@10": 0.05, "raw_hr@10": 0.12, "raw_ndcg@10": 0.06},
            {"epoch": 1, "hr@10": 0.3, "ndcg@10": 0.2, "raw_hr@10": 0.25, "raw_ndcg@10": 0.15},
        ],
    }
    lines = averaging_section(tmp_path / "ml-1m-x.json", run)
    assert lines[0] == "### ml-1m-x"
    body = [line for line in lines if line.startswith("| 1 ") or line.startswith("| best")]
    assert body == [
        "| 1 | 0.1000 | 0.0500 | 0.1200 | 0.0600 | -0.0100 |",
        "| best | 0.3000 | 0.2000 (epoch 2) | 0.2500 | 0.1500 (epoch 2) | +0.0500 |",
    ]
    # runs without raw figures (no weight averaging) get no table
    assert averaging_section(tmp_path / "y.json", {"valid_by_epoch": [{"epoch": 0}]}) == []


def test_check_fails_on_a_stale_doc_and_passes_once_written(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(bench_results_doc, "RESULTS", _results(tmp_path))
    monkeypatch.setattr(bench_results_doc, "DOC", tmp_path / "docs" / "RESULTS.md")
    readme = tmp_path / "README.md"
    readme.write_text(
        f"intro\n{README_START}\nold table\n{README_END}\n"
        f"{README_RETRIEVAL_START}\nold retrieval\n{README_RETRIEVAL_END}\nrest\n"
    )
    monkeypatch.setattr(bench_results_doc, "README", readme)
    rows = (("Beauty", "dot", "accuracy-beauty.json", "beauty-dot", "test"),)
    monkeypatch.setattr(bench_results_doc, "README_ROWS", rows)
    retrieval = (("tiny", "retrieval-tiny-cpu.json", "float32", 32, 10, "topk_avg:64"),)
    monkeypatch.setattr(bench_results_doc, "README_RETRIEVAL_ROWS", retrieval)
    assert bench_results_doc.main(["--check"]) == 1
    assert COMMAND in capsys.readouterr().err
    assert bench_results_doc.main([]) == 0
    assert bench_results_doc.main(["--check"]) == 0
    text = readme.read_text()
    assert "old table" not in text and "old retrieval" not in text and text.endswith("rest\n")
    assert "| tiny | topk_avg:64 | 32, 10 | 4.0x | 0.950 |" in text


def test_readme_retrieval_table_takes_its_figures_from_the_files(tmp_path: Path) -> None:
    results = _results(tmp_path)
    rows = (
        ("tiny", "retrieval-tiny-cpu.json", "float32", 32, 10, "topk_avg:64"),
        ("tiny", "retrieval-tiny-seeds-cpu.json", "float32", 32, 10, "bounded_exact:64"),
    )
    table = readme_retrieval_table(results, rows)
    link = "[tiny-seeds-cpu](benchmarks/results/retrieval-tiny-seeds-cpu.json)"
    assert table[3] == (
        f"| tiny (3 seeds) | bounded_exact:64 | 32, 10 | 2.0x (1.0–3.5) "
        f"| 1.000 (0.500–1.000) | {link} |"
    )
    with pytest.raises(ValueError, match="no record for"):
        readme_retrieval_table(
            results, (("tiny", "retrieval-tiny-cpu.json", "float32", 1, 10, "topk_avg:64"),)
        )


def test_readme_table_takes_its_figures_from_the_files(tmp_path: Path) -> None:
    results = _results(tmp_path)
    rows = (
        ("Beauty", "MoL", "accuracy-beauty.json", "beauty-mol", "test"),
        ("Beauty", "popularity", "accuracy-beauty.json", "beauty-mol", "popularity"),
        ("Beauty", "MoL refit", "accuracy-beauty.json", "beauty-mol", "refit.test"),
    )
    table = readme_table(results, rows)
    link = "[accuracy-beauty.json](benchmarks/results/accuracy-beauty.json)"
    assert table[2] == "| Beauty | MoL | 0.0600 | 0.0314 | 0.2500 | 0.0200 |"
    assert table[3] == "| Beauty | popularity | 0.0123 | – | – | – |"
    assert table[4] == "| Beauty | MoL refit | 0.0700 | 0.0400 | – | – |"
    assert table[5:] == ["", f"From {link}."]  # each file linked once
    with pytest.raises(ValueError, match="no row named 'nope'"):
        readme_table(results, (("B", "x", "accuracy-beauty.json", "nope", "test"),))
    text = f"a\n{README_START}\nx\n{README_END}\nb\n"
    assert (
        with_readme_table(text, table)
        == "a\n" + README_START + "\n" + "\n".join(table) + "\n" + README_END + "\nb\n"
    )
    with pytest.raises(ValueError, match="markers"):
        with_readme_table("no markers", table)


def test_committed_results_doc_is_current() -> None:
    doc = REPO / "docs" / "RESULTS.md"
    expected = render(REPO / "benchmarks" / "results")
    assert doc.is_file() and doc.read_text() == expected, (
        f"docs/RESULTS.md is not current with benchmarks/results/; regenerate it with "
        f"`{COMMAND}` (or `.venv/bin/python benchmarks/bench_results_doc.py`) and commit it"
    )
    readme = (REPO / "README.md").read_text()
    assert readme == with_readme_table(readme, readme_table(REPO / "benchmarks" / "results")), (
        f"README.md's results table is not current; regenerate it with `{COMMAND}`"
    )
    retrieval = readme_retrieval_table(REPO / "benchmarks" / "results")
    assert readme == with_readme_table(
        readme, retrieval, README_RETRIEVAL_START, README_RETRIEVAL_END
    ), f"README.md's retrieval table is not current; regenerate it with `{COMMAND}`"


def test_readme_stays_short() -> None:
    """The README is for users; the full record is docs/RESULTS.md."""
    assert len((REPO / "README.md").read_text()) <= 8000


def test_seeds_table_sets_runs_of_one_recipe_side_by_side_with_their_spread(
    tmp_path: Path,
) -> None:
    results = _results(tmp_path)
    (results / "beauty-beauty-mol.json").write_text(json.dumps({"seed": 43}))
    groups = (("beauty", (("Two runs", ("beauty-dot", "beauty-mol")),)),)
    lines = seeds_section(results, groups)
    assert lines[0] == "### Seeds: the same recipe trained again"
    assert "| beauty-dot | – | 0.0250 | 0.0500 | 0.0314 | 0.2500 | 0.5000 | 0.0200 | 7/9 |" in lines
    assert (
        "| beauty-mol | 43 | 0.0300 | 0.0600 | 0.0314 | 0.2500 | 0.5000 | 0.0200 | 7/9 |" in lines
    )
    mean = "| mean |  | 0.0275 | 0.0550 | 0.0314 | 0.2500 | 0.5000 | 0.0200 |  |"
    spread = "| spread (max - min) |  | 0.0050 | 0.0100 | 0.0000 | 0.0000 | 0.0000 | 0.0000 |  |"
    assert lines.index(mean) + 1 == lines.index(spread)
    with pytest.raises(ValueError, match="no row named 'beauty-x'"):
        seeds_section(results, (("beauty", (("x", ("beauty-x",)),)),))
    assert seeds_section(results, ()) == []
    assert seeds_section(results, (("ml-1m", (("x", ("a",)),)),)) == []  # no summary: no table


def test_seed_gaps_pair_each_mol_run_with_the_dot_run_of_its_seed(tmp_path: Path) -> None:
    results = _results(tmp_path)
    for name, seed in (("beauty-dot", 42), ("beauty-mol", 42)):
        (results / f"beauty-{name}.json").write_text(json.dumps({"seed": seed}))
    gaps = (("beauty", (("MoL v dot", ("beauty-mol",), ("beauty-dot",)),)),)
    lines = seed_gaps_section(results, gaps)
    assert lines[0] == "### MoL minus dot, seed by seed"
    # _results: valid NDCG@10 0.03 v 0.025, test HR@10 0.06 v 0.05, the rest equal
    zeros = "+0.0000 | +0.0000 | +0.0000 | +0.0000 |"
    row = f"| 42 | beauty-mol | beauty-dot | +0.0050 | +0.0100 | {zeros}"
    assert row in lines
    mean = f"| mean |  |  | +0.0050 | +0.0100 | {zeros}"
    assert lines.index(row) + 1 == lines.index(mean)
    (results / "beauty-beauty-dot.json").write_text(json.dumps({"seed": 43}))
    with pytest.raises(ValueError, match="must record the same seed"):
        seed_gaps_section(results, gaps)
    (results / "beauty-beauty-dot.json").unlink()
    with pytest.raises(ValueError, match="must record the same seed"):
        seed_gaps_section(results, gaps)
    with pytest.raises(ValueError, match="no row named 'beauty-x'"):
        seed_gaps_section(results, (("beauty", (("x", ("beauty-x",), ("beauty-dot",)),)),))
    assert seed_gaps_section(results, ()) == []
