"""Fixtures for the training tests: one torch thread, tiny dataset directories."""

from __future__ import annotations

from pathlib import Path

import pytest
from dataset_helpers import make_dataset, one_thread  # noqa: F401 (autouse fixture)


@pytest.fixture
def tiny_data(tmp_path: Path) -> Path:
    return make_dataset(tmp_path / "data")


@pytest.fixture
def tiny_data_ts(tmp_path: Path) -> Path:
    return make_dataset(tmp_path / "data_ts", timestamps=True)
