"""benchmarks/retrieval_catalogs.py: a cached catalog is keyed by everything that made it."""

from __future__ import annotations

from pathlib import Path

import torch

import benchmarks.retrieval_catalogs as retrieval_catalogs
from benchmarks.retrieval_catalogs import (
    cache_key,
    cached_bundle_path,
    catalog_key,
    code_fingerprint,
    synthetic_bundle,
)


def test_key_covers_settings_model_and_code(tmp_path: Path) -> None:
    base = catalog_key(1000, steps=5)
    assert base["model"]["num_items"] == 1000 and len(base["code"]) == 64
    assert cache_key(base) == cache_key(catalog_key(1000, steps=5))
    for other in (catalog_key(1000, steps=6), catalog_key(1000, 5, seed=1), catalog_key(2000, 5)):
        assert cache_key(other) != cache_key(base)
    path = cached_bundle_path(1000, tmp_path, steps=5)
    assert path == tmp_path / f"synthetic-1000-{cache_key(base)}" / "bundle"


def test_fingerprint_changes_with_any_source_file(tmp_path: Path, monkeypatch) -> None:
    (tmp_path / "pkg").mkdir()
    (tmp_path / "pkg" / "a.py").write_text("x = 1\n")
    (tmp_path / "b.py").write_text("y = 2\n")
    monkeypatch.setattr(retrieval_catalogs, "FINGERPRINT_PACKAGES", ("pkg",))
    monkeypatch.setattr(retrieval_catalogs, "FINGERPRINT_FILES", ("b.py",))
    monkeypatch.setattr(retrieval_catalogs, "__file__", str(tmp_path / "b.py"))
    first = code_fingerprint(tmp_path)
    assert code_fingerprint(tmp_path) == first
    (tmp_path / "pkg" / "a.py").write_text("x = 2\n")
    assert code_fingerprint(tmp_path) != first


def test_the_seed_fixes_the_model_whatever_ran_before(tmp_path: Path) -> None:
    # The first model of a process used to take the global generator's state at its init.
    from safetensors.torch import load_file

    quiet = lambda _msg: None  # noqa: E731
    torch.manual_seed(1)
    first, _ = synthetic_bundle(400, tmp_path / "a", steps=1, batch_size=8, seed=3, log=quiet)
    torch.rand(7)
    second, _ = synthetic_bundle(400, tmp_path / "b", steps=1, batch_size=8, seed=3, log=quiet)
    weights = sorted(p.name for p in first.glob("*.safetensors"))
    assert weights and weights == sorted(p.name for p in second.glob("*.safetensors"))
    for name in weights:
        a, b = load_file(first / name), load_file(second / name)
        assert a.keys() == b.keys()
        for key in a:  # equal up to float summation order (last-bit differences seen)
            torch.testing.assert_close(a[key], b[key], rtol=1e-5, atol=1e-6, msg=key)
