"""The real benchmark data beside the repository (../shared/data or $RECSYS_DATA_DIR).

Benchmarks prepare a file from there (one line per user, or MovieLens ratings) into a cached
dataset directory on first use, and skip cleanly (None) when the data is absent.
"""

from __future__ import annotations

import os
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent


def shared_data_dir() -> Path:
    """$RECSYS_DATA_DIR, else ../shared/data beside the repository."""
    return Path(os.environ.get("RECSYS_DATA_DIR", REPO_ROOT.parent / "shared" / "data"))


def prepared_sequences(relative: str, out: Path, format: str = "sequences") -> Path | None:
    """The dataset directory `out`, prepared from shared_data_dir()/`relative` (a sequences
    file, or any `recsys data prepare` format) on first use; None when the source is absent."""
    source = shared_data_dir() / relative
    if not source.is_file():
        return None
    if not (out / "stats.json").is_file():
        from pipelines.prepare import PrepareConfig, prepare

        prepare(PrepareConfig(format=format, input=source, out=out))
    return out
