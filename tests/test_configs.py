"""Every run config in configs/ loads (through its `extends` chain), validates, builds the
model it describes and survives the run directory's run_config.yaml round trip; every base
file in configs/base/ is used; configs/README.md indexes them all."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml

from recsys.models.seqrec import SeqRecModel
from recsys.training.config import config_from_dict, load_config, read_config_file
from recsys.training.run import resolve_precision

CONFIGS = Path(__file__).resolve().parent.parent / "configs"
NOT_RUN_CONFIGS = {"serve.yaml"}  # Ray Serve's deployment file, tested with serving/
RUN_CONFIGS = sorted(p for p in CONFIGS.glob("*.yaml") if p.name not in NOT_RUN_CONFIGS)
BASES = sorted((CONFIGS / "base").glob("*.yaml"))  # partial configs, only for `extends`


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


@pytest.mark.parametrize("path", RUN_CONFIGS, ids=lambda p: p.name)
def test_config_round_trips_through_run_config_yaml(path: Path) -> None:
    config = load_config(path)
    written = yaml.safe_dump(config.to_dict(), sort_keys=False)  # as recsys.training.run does
    assert config_from_dict(yaml.safe_load(written), "run_config.yaml") == config


def test_every_base_is_extended() -> None:
    used = {f.resolve() for p in RUN_CONFIGS for f in read_config_file(p)[1][1:]}
    assert BASES and set(p.resolve() for p in BASES) <= used


def test_the_index_names_every_config_and_only_configs() -> None:
    """configs/README.md, the index a reader starts from, lists every file here and names
    no file that is gone."""
    index = (CONFIGS / "README.md").read_text()
    named = set(re.findall(r"`([\w./-]+\.yaml)`", index))
    present = {str(p.relative_to(CONFIGS)) for p in CONFIGS.rglob("*.yaml")}
    assert present - named == set(), "add these to configs/README.md"
    assert named - present == set(), "configs/README.md names files that do not exist"
