"""benchmarks/bench_retrieval.py: several seeds give one file with each seed's records and
the spread of every method's speed-up and recall over the seeds."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

import benchmarks.bench_retrieval as bench_retrieval


def _record(speedups: dict[str, float], recall: float) -> dict:
    methods = {
        name: {"speedup_vs_brute_force": s, "recall": None if name == "dot_floor" else recall}
        for name, s in speedups.items()
    }
    return {"index_dtype": "float32", "batch": 1, "k": 10, "methods": methods}


def test_over_seeds_spreads_each_method_over_the_seeds() -> None:
    runs = [
        {"seed": 0, "records": [_record({"dot_floor": 40.0, "bounded_exact:64": 1.5}, 1.0)]},
        {"seed": 1, "records": [_record({"dot_floor": 50.0, "bounded_exact:64": 0.9}, 1.0)]},
        {"seed": 2, "records": [_record({"dot_floor": 45.0, "bounded_exact:64": 3.0}, 0.5)]},
    ]
    rows = {r["method"]: r for r in bench_retrieval.over_seeds(runs)}
    bounded = rows["bounded_exact:64"]
    assert bounded["speedup_vs_brute_force"] == {
        "per_seed": [1.5, 0.9, 3.0],
        "median": 1.5,
        "min": 0.9,
        "max": 3.0,
    }
    assert bounded["recall"]["median"] == 1.0 and bounded["recall"]["min"] == 0.5
    assert rows["dot_floor"]["recall"] == {"per_seed": [None, None, None]}
    assert (bounded["index_dtype"], bounded["batch"], bounded["k"]) == ("float32", 1, 10)
    runs[1]["records"][0]["k"] = 100
    with pytest.raises(ValueError, match="different settings"):
        bench_retrieval.over_seeds(runs)


@pytest.mark.slow
def test_two_seeds_train_two_models_and_write_one_file(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setitem(bench_retrieval.SIZES, "tiny", 600)
    argv = (
        "--catalogs tiny --seeds 0,1 --train-steps 2 --batches 2 --ks 5 "
        "--methods topk_avg:64,bounded_exact:64 --index-dtypes float32 --truth-queries 2 "
        f"--time-budget 0.01 --device cpu --cache-dir {tmp_path / 'cache'} "
        f"--out-dir {tmp_path / 'out'}"
    ).split()
    assert bench_retrieval.main(argv) == 0
    out = json.loads((tmp_path / "out" / "retrieval-tiny-seeds-cpu.json").read_text())
    assert out["seeds"] == [0, 1] and [r["seed"] for r in out["runs"]] == [0, 1]
    first, second = (r["training"] for r in out["runs"])
    assert (first["seed"], second["seed"]) == (0, 1)
    assert first["first_loss"] != second["first_loss"]  # two models, not one trained twice
    methods = {r["method"] for r in out["over_seeds"]}
    assert methods == {"dot_floor", "topk_avg:64", "bounded_exact:64", "brute_force"}
    for row in out["over_seeds"]:
        assert len(row["speedup_vs_brute_force"]["per_seed"]) == 2
        if row["method"] == "bounded_exact:64":  # exact: recall 1 on both models
            assert row["recall"]["per_seed"] == [1.0, 1.0]
    assert (tmp_path / "out" / "retrieval-tiny-seeds-cpu.png").is_file()
    assert len(list((tmp_path / "cache").iterdir())) == 2  # one cached bundle per seed
