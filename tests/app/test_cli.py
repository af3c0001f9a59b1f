"""The console script: third-party notices a user cannot act on are hidden (and nothing
else), and `recsys bench NAME` runs the module benchmarks.bench_NAME."""

from __future__ import annotations

import logging
import sys
import types
import warnings

import pytest

from app.cli import bench_names, main, quiet_third_party


def test_lightning_tip_and_pytree_deprecation_are_hidden(caplog: pytest.LogCaptureFixture) -> None:
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        quiet_third_party()
        quiet_third_party()  # idempotent: one filter per logger
        warnings.warn(
            "`isinstance(treespec, LeafSpec)` is deprecated, use x", FutureWarning, stacklevel=1
        )
        warnings.warn("something a user should see", UserWarning, stacklevel=1)
    assert [str(w.message) for w in caught] == ["something a user should see"]
    logger = logging.getLogger("lightning.pytorch.utilities.rank_zero")
    assert len(logger.filters) == 1
    with caplog.at_level(logging.INFO, logger=logger.name):
        logger.info("💡 Tip: For seamless cloud logging ...")
        logger.info("GPU available: False")
    assert [r.getMessage() for r in caplog.records] == ["GPU available: False"]


def test_bench_runs_a_benchmark_module(monkeypatch: pytest.MonkeyPatch) -> None:
    names = bench_names()
    assert {"retrieval", "results_doc", "pipeline"} <= set(
        names
    ) and "retrieval_catalogs" not in names
    seen: list[list[str]] = []
    fake = types.ModuleType("benchmarks.bench_fake")
    fake.main = lambda argv: seen.append(argv) or 3  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "benchmarks.bench_fake", fake)
    monkeypatch.setattr("app.cli.bench_names", lambda: [*names, "fake"])
    assert main(["bench", "fake", "--size", "1M"]) == 3
    assert seen == [["--size", "1M"]]
