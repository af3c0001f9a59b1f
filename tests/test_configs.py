"""Every run config in configs/ loads, validates and builds the model it describes."""

from __future__ import annotations

from pathlib import Path

import pytest

from recsys.models.seqrec import SeqRecModel
from recsys.training.config import load_config
from recsys.training.run import resolve_precision

CONFIGS = Path(__file__).resolve().parent.parent / "configs"
NOT_RUN_CONFIGS = {"serve.yaml"}  # Ray Serve's deployment file, tested with serving/
RUN_CONFIGS = sorted(p for p in CONFIGS.glob("*.yaml") if p.name not in NOT_RUN_CONFIGS)


def test_there_are_run_configs() -> None:
    names = {p.name for p in RUN_CONFIGS}
    assert {"demo.yaml", "ml-1m-hstu-mol.yaml", "ml-1m-sasrec-dot.yaml"} <= names


@pytest.mark.parametrize("path", RUN_CONFIGS, ids=lambda p: p.name)
def test_config_builds(path: Path) -> None:
    config = load_config(path)
    assert config.name == path.stem
    assert config.data.path is not None or config.data.synthetic is not None
    model = SeqRecModel(config.model_config(num_items=50))
    assert model.num_items == 50
    assert sum(p.numel() for p in model.parameters()) > 0
    assert resolve_precision(config.training.precision, config.training.accelerator) in (
        "32-true",
        "bf16-mixed",
        "16-mixed",
        "bf16-true",
    )
