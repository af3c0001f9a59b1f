"""Tiny real bundles for the serving tests: synthetic data, random-weight HSTU + MoL."""

from __future__ import annotations

import shutil
from collections.abc import Callable
from pathlib import Path

import pytest
import torch

from pipelines.synth import SynthConfig, make_dataset
from recsys.bundle import export_bundle_from_model
from recsys.dataset import SequenceDataset, load_dataset
from recsys.models.hstu import HSTUConfig
from recsys.models.seqrec import ModelConfig, SeqRecModel
from recsys.similarity.mol import MoLConfig


def tiny_model(num_items: int, seed: int) -> SeqRecModel:
    torch.manual_seed(seed)
    config = ModelConfig(
        num_items=num_items,
        encoder=HSTUConfig(max_len=16, dim=16, num_blocks=2, num_heads=2, attn_dim=8, linear_dim=8),
        similarity=MoLConfig(p_q=2, p_x=2, d_p=8, mlp_hidden=16, gate_hidden=8, user_hash_size=64),
    )
    return SeqRecModel(config).eval()


@pytest.fixture(scope="session")
def tiny_dataset(tmp_path_factory: pytest.TempPathFactory) -> SequenceDataset:
    path = tmp_path_factory.mktemp("data") / "synth"
    make_dataset(SynthConfig(num_users=40, num_items=60, seed=3), path)
    return load_dataset(path)


@pytest.fixture(scope="session")
def make_bundle(
    tiny_dataset: SequenceDataset, tmp_path_factory: pytest.TempPathFactory
) -> Callable[[int], Path]:
    """seed -> a bundle directory (cached per seed); different seeds, different versions."""
    root = tmp_path_factory.mktemp("bundles")
    made: dict[int, Path] = {}

    def make(seed: int) -> Path:
        if seed not in made:
            model = tiny_model(tiny_dataset.num_items, seed)
            metrics = {"test": {"hr@10": 0.1 * seed}}
            made[seed] = export_bundle_from_model(model, tiny_dataset, root / f"b{seed}", metrics)
        return made[seed]

    return make


@pytest.fixture(scope="session")
def broken_bundle(make_bundle: Callable[[int], Path], tmp_path_factory: pytest.TempPathFactory):
    """A bundle whose weights file is corrupt (fails to load with a clear error)."""
    path = tmp_path_factory.mktemp("broken") / "bundle"
    shutil.copytree(make_bundle(1), path)
    (path / "model.safetensors").write_bytes(b"not safetensors")
    return path
