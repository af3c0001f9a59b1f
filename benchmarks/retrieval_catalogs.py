"""Catalogs for `bench_retrieval.py`: briefly trained MoL models on synthetic data with
100k / 1M items (cached as bundles), and trained bundles given on the command line.

The synthetic log comes from `pipelines.synth` (items in latent clusters, users walking
between clusters: a sequential pattern a model can learn). Unlike `recsys data prepare`,
the catalog keeps *every* item of the generator, seen or not, so that N is exactly the
requested size (a real catalog also holds items nobody has interacted with yet).
The model is the paper's ML-1M MoL (P_Q x P_X x d_P = 8 x 4 x 64, one user-id component,
D = 50) over a 2-block SASRec encoder (the encoder only shapes the queries; retrieval cost
does not depend on it), trained with `benchmarks.quick_train` (a hand-rolled loop:
`recsys.training` would validate on the full 1M catalog every epoch).

The cache is keyed by everything that made a catalog: its size, users, steps, batch, seed,
the model config, and a fingerprint of the code that generates, trains and exports it
(`code_fingerprint`). Each key gets its own directory, so a change to any of them trains a
new model instead of reusing a stale one.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from pathlib import Path
from typing import Any

import numpy as np
import torch

from benchmarks.quick_train import QuickTrainConfig, quick_train
from pipelines.synth import SynthConfig, catalog, generate_events
from recsys.atomic import atomic_write_text
from recsys.bundle import METADATA_FILE, export_bundle_from_model
from recsys.dataset import SequenceDataset
from recsys.models.sasrec import SASRecConfig
from recsys.models.seqrec import ModelConfig, SeqRecModel
from recsys.similarity.mol import MoLConfig

TRAINING_FILE = "training.json"
MAX_LEN = 50


def synthetic_dataset(
    num_items: int, num_users: int, mean_length: float, seed: int
) -> SequenceDataset:
    """In-memory SequenceDataset over the generator's full catalog (ids 1..num_items)."""
    config = SynthConfig(
        num_users=num_users, num_items=num_items, seed=seed, mean_length=mean_length
    )
    cat = catalog(config)
    events = generate_events(config)
    item_ids = np.searchsorted(cat.item_keys, events["item_id"].to_numpy()).astype(np.int32) + 1
    users = np.searchsorted(cat.user_keys, events["user_id"].to_numpy())
    order = np.argsort(users, kind="stable")  # events are in time order: stays chronological
    item_ids, users = item_ids[order], users[order]
    offsets = np.zeros(num_users + 1, dtype=np.int64)
    np.cumsum(np.bincount(users, minlength=num_users), out=offsets[1:])
    counts = np.bincount(item_ids, minlength=num_items + 1).astype(np.int64)
    counts[0] = 0
    item_keys = np.empty(num_items + 1, dtype=object)
    item_keys[0] = ""
    item_keys[1:] = cat.item_keys.astype(str)
    return SequenceDataset(
        item_ids=item_ids,
        offsets=offsets,
        timestamps=None,
        user_keys=cat.user_keys.astype(str).astype(object),
        item_keys=item_keys,
        item_counts=counts,
        titles=None,
        stats={
            "format_version": 1,
            "num_users": num_users,
            "num_items": num_items,
            "num_interactions": int(offsets[-1]),
            "source": {"path": None, "format": "synthetic", "sha256": None},
            "synth": dataclasses.asdict(config),
        },
    )


def bench_model_config(num_items: int) -> ModelConfig:
    return ModelConfig(
        num_items=num_items,
        encoder=SASRecConfig(max_len=MAX_LEN, dim=50, num_blocks=2, num_heads=1, dropout=0.2),
        similarity=MoLConfig(p_q=8, p_x=4, d_p=64, user_id_components=1),
    )


# The code whose change must invalidate a cached catalog: the generator, the trainer, the
# model and similarity, the export, and this file (bench_model_config).
FINGERPRINT_PACKAGES = (
    "pipelines/synth.py",
    "recsys/models",
    "recsys/similarity",
    "recsys/losses.py",
)
FINGERPRINT_FILES = (
    "benchmarks/quick_train.py",
    "recsys/bundle.py",
    "recsys/retrieval/index.py",
)
ROOT = Path(__file__).resolve().parent.parent


def code_fingerprint(root: Path = ROOT) -> str:
    """sha256 over the sources that make a cached catalog (path and content of each file)."""
    files: list[Path] = [Path(__file__).resolve()]
    for name in (*FINGERPRINT_PACKAGES, *FINGERPRINT_FILES):
        path = root / name
        files += sorted(path.rglob("*.py")) if path.is_dir() else [path]
    digest = hashlib.sha256()
    for path in files:
        digest.update(str(path.relative_to(root)).encode() + b"\0" + path.read_bytes() + b"\0")
    return digest.hexdigest()


def cache_key(wanted: dict[str, Any]) -> str:
    """Short stable hash of a catalog's full key (a directory name)."""
    return hashlib.sha256(json.dumps(wanted, sort_keys=True).encode()).hexdigest()[:16]


def catalog_key(num_items: int, steps: int, batch_size: int = 64, seed: int = 0) -> dict:
    """Everything that makes a cached synthetic catalog (see the module docstring)."""
    return {
        "num_items": num_items,
        "num_users": max(2000, min(50_000, num_items // 20)),
        "steps": steps,
        "batch_size": batch_size,
        "seed": seed,
        "model": bench_model_config(num_items).to_dict(),
        "code": code_fingerprint(),
    }


def cached_bundle_path(
    num_items: int, cache_dir: Path, steps: int, batch_size: int = 64, seed: int = 0
) -> Path:
    """Where `synthetic_bundle` keeps (or would keep) this catalog's bundle; builds nothing."""
    key = cache_key(catalog_key(num_items, steps, batch_size, seed))
    return cache_dir / f"synthetic-{num_items}-{key}" / "bundle"


def synthetic_bundle(
    num_items: int,
    cache_dir: Path,
    steps: int,
    batch_size: int = 64,
    seed: int = 0,
    log=print,
) -> tuple[Path, dict[str, Any]]:
    """Bundle of a MoL model trained `steps` steps on synthetic data with `num_items` items,
    built once and cached under cache_dir; returns (bundle path, training record)."""
    wanted = catalog_key(num_items, steps, batch_size, seed)
    num_users = wanted["num_users"]
    root = cache_dir / f"synthetic-{num_items}-{cache_key(wanted)}"
    bundle, record_path = root / "bundle", root / TRAINING_FILE
    if (bundle / METADATA_FILE).is_file() and record_path.is_file():
        record = json.loads(record_path.read_text())
        if all(record.get(k) == v for k, v in wanted.items()):
            return bundle, record
    log(f"building synthetic catalog of {num_items} items ({num_users} users), {steps} steps")
    data = synthetic_dataset(num_items, num_users, mean_length=30.0, seed=seed)
    # The seed fixes the model's init too, not only its training: built before any seeding,
    # the first model of a process took whatever state the global generator was in.
    torch.manual_seed(seed)
    model = SeqRecModel(bench_model_config(num_items))
    train = quick_train(
        model, data, QuickTrainConfig(steps=steps, batch_size=batch_size, seed=seed)
    )
    record = {
        **wanted,
        "trainer": "benchmarks.quick_train (hand-rolled AdamW loop on training_loss)",
        "num_interactions": data.num_interactions,
        "items_seen": int((data.item_counts > 0).sum()),
        **train,
    }
    log(
        f"trained in {train['seconds']:.0f}s, "
        f"loss {train['first_loss']:.3f} -> {train['last_loss']:.3f}"
    )
    export_bundle_from_model(model, data, bundle, source="benchmarks/retrieval_catalogs.py")
    atomic_write_text(record_path, json.dumps(record, indent=2) + "\n")
    return bundle, record


def history_batches(
    history_items: np.ndarray, history_offsets: np.ndarray, batch: int, count: int, seed: int
) -> list[tuple[np.ndarray, np.ndarray]]:
    """`count` batches of `batch` distinct users: (user ids (B,), right-padded recent
    histories (B, T)) drawn from a bundle's stored histories."""
    rng = np.random.default_rng(seed)
    lengths = np.diff(history_offsets)
    users = np.flatnonzero(lengths > 0)
    out = []
    for _ in range(count):
        pick = rng.choice(users, size=min(batch, len(users)), replace=False)
        width = int(lengths[pick].max())
        rows = np.zeros((len(pick), width), dtype=np.int64)
        for r, u in enumerate(pick):
            seq = history_items[history_offsets[u] : history_offsets[u + 1]]
            rows[r, : len(seq)] = seq
        out.append((pick.astype(np.int64), rows))
    return out


def exclusion_rows(
    history_items: np.ndarray, history_offsets: np.ndarray, users: np.ndarray, num_items: int
) -> np.ndarray:
    """(B, N+1) bool: each user's stored history (seen items) plus padding column 0."""
    mask = np.zeros((len(users), num_items + 1), dtype=bool)
    mask[:, 0] = True
    for r, u in enumerate(users):
        mask[r, history_items[history_offsets[u] : history_offsets[u + 1]]] = True
    return mask
