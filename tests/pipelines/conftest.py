"""Helpers for the pipeline tests: tiny files written on the fly, and the shared data sets."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


def shared_data_dir() -> Path | None:
    """$RECSYS_DATA_DIR or ../shared/data beside the repository, when it exists."""
    env = os.environ.get("RECSYS_DATA_DIR")
    path = Path(env) if env else REPO.parent / "shared" / "data"
    return path if path.is_dir() else None


@pytest.fixture
def shared_data() -> Path:
    path = shared_data_dir()
    if path is None:
        pytest.skip("shared data sets absent (set RECSYS_DATA_DIR or provide ../shared/data)")
    return path


@pytest.fixture
def write(tmp_path: Path):
    """write(name, text or bytes) -> path of a new file under tmp_path."""

    def _write(name: str, content: str | bytes) -> Path:
        path = tmp_path / name
        path.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(content, bytes):
            path.write_bytes(content)
        else:
            path.write_text(content, encoding="utf-8")
        return path

    return _write
