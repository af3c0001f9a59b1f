"""The bundle: everything serving and batch jobs need from a trained model, in one directory.

```
BUNDLE/
  model.safetensors   SeqRecModel.state_dict() (safetensors: never unpickled)
  index.safetensors   the item index, rows 0..N (row 0 = padding), float32:
                        g (N+1, P_X, d_P), a_x (N+1, P) (MoL only), item_emb (N+1, D)
  config.json         ModelConfig.to_dict()
  items.parquet       item_id Int32 (1..N), item_key Utf8, count Int64, title Utf8 (optional)
  users.parquet       user_id Int32 (0..U-1), user_key Utf8
  histories.parquet   user_id Int32, item_ids List(Int32) (the most recent max_len events,
                      oldest first: what the encoder reads), timestamps List(Int64) (when
                      the data has times)
  seen.parquet        user_id Int32, item_ids List(Int32): every item the user interacted
                      with in the whole dataset, sorted and unique (what `exclude_seen`
                      removes; a history longer than max_len is excluded whole)
  metadata.json       bundle_version, model_version (content hash of weights + config),
                      created_at, data (checksum, counts), metrics (validation/test, when
                      the run recorded them), warnings (the run's, e.g. "does not beat
                      popularity"), source checkpoint, max_len, files (the size and sha256
                      of every other file)
```

`export_bundle` writes it atomically (`recsys.atomic.atomic_dir`: a failed export never
replaces a good bundle). `load_bundle` checks the version, every file and every tensor shape
against the config, and that the stored index matches the weights, with errors that name
the file and what was expected; last, that every file is byte for byte the one exported
(its size and sha256 against `files` in metadata.json), so that what is served is the
model, catalog and histories that `model_version` names, not a file changed or copied in
since. The index is stored in float32 and cast on load: bf16 on
CUDA (halves memory and bandwidth), float32 on CPU (`recsys.retrieval.index
.default_index_dtype` says why, from `benchmarks/bench_retrieval.py`'s measurements).

Shapes: N catalog size, U users, D model dim, P_X item components, d_P component dim, P logits.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save

from recsys.atomic import atomic_dir
from recsys.dataset import SequenceDataset, load_dataset
from recsys.errors import UserError
from recsys.models.seqrec import ModelConfig, SeqRecModel
from recsys.retrieval.checkpoints import read_checkpoint_source
from recsys.retrieval.index import ItemIndex, default_index_dtype, index_from_model

BUNDLE_VERSION = 2  # 2: seen.parquet (whole-history exclusion)
MODEL_FILE = "model.safetensors"
INDEX_FILE = "index.safetensors"
CONFIG_FILE = "config.json"
ITEMS_FILE = "items.parquet"
USERS_FILE = "users.parquet"
HISTORIES_FILE = "histories.parquet"
SEEN_FILE = "seen.parquet"
METADATA_FILE = "metadata.json"
BUNDLE_FILES = (
    MODEL_FILE,
    INDEX_FILE,
    CONFIG_FILE,
    ITEMS_FILE,
    USERS_FILE,
    HISTORIES_FILE,
    SEEN_FILE,
    METADATA_FILE,
)
CHECKED_FILES = tuple(f for f in BUNDLE_FILES if f != METADATA_FILE)  # in metadata "files"
HASH_BLOCK = 1 << 20
VERIFY_ROWS = 16  # index rows recomputed from the weights on load
VERIFY_ATOL = 1e-4


@dataclass(frozen=True)
class Bundle:
    """A loaded bundle. The model is in eval mode on `device`; the index is on the same
    device in its load dtype.

    item_keys (N+1,) object ("" at 0), titles (N+1,) object or None, item_counts (N+1,)
    int64, user_keys (U,) object, history_items flat int32 + history_offsets (U+1,) int64
    (user u's recent items, oldest first), history_timestamps flat int64 or None,
    seen_items flat int32 + seen_offsets (U+1,) int64 (user u's whole set of items, sorted).
    """

    path: Path
    config: ModelConfig
    model: SeqRecModel
    index: ItemIndex
    item_keys: np.ndarray
    titles: np.ndarray | None
    item_counts: np.ndarray
    user_keys: np.ndarray
    history_items: np.ndarray
    history_offsets: np.ndarray
    history_timestamps: np.ndarray | None
    seen_items: np.ndarray
    seen_offsets: np.ndarray
    metadata: dict[str, Any]

    @property
    def model_version(self) -> str:
        return str(self.metadata["model_version"])

    @property
    def max_len(self) -> int:
        return int(self.config.encoder.max_len)

    @property
    def num_items(self) -> int:
        return self.config.num_items

    @property
    def num_users(self) -> int:
        return len(self.user_keys)

    @property
    def device(self) -> torch.device:
        return self.index.device


# ---------------------------------------------------------------------------- export


def export_bundle(
    checkpoint: str | Path, out: str | Path, data_dir: str | Path | None = None
) -> Path:
    """Export a trained model to a bundle directory at `out`; returns `out`.

    checkpoint: a run directory (best.safetensors + model_config.json), a .safetensors file
    with model_config.json beside it, or a Lightning .ckpt (read with weights_only=True).
    data_dir: the dataset directory; defaults to the one the run recorded.
    """
    source = read_checkpoint_source(checkpoint)
    data_path = Path(data_dir) if data_dir is not None else source.data_dir
    if data_path is None:
        raise UserError(
            f"{checkpoint}: no dataset directory recorded next to this checkpoint; pass --data DIR"
        )
    dataset = load_dataset(data_path)
    return export_bundle_from_model(
        source.model, dataset, out, metrics=source.metrics, source=str(Path(checkpoint).resolve())
    )


def export_bundle_from_model(
    model: SeqRecModel,
    dataset: SequenceDataset,
    out: str | Path,
    metrics: dict[str, Any] | None = None,
    source: str | None = None,
) -> Path:
    """Write the bundle of `model` trained on `dataset` to `out` (atomic); returns `out`."""
    if dataset.num_items != model.config.num_items:
        raise UserError(
            f"the dataset has {dataset.num_items} items but the model was built for "
            f"{model.config.num_items}: export with the dataset the model was trained on"
        )
    model = model.eval()
    max_len = int(model.config.encoder.max_len)
    weights = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    model_bytes = save(weights)
    config_text = json.dumps(model.config.to_dict(), indent=2) + "\n"
    index = index_from_model(model, torch.float32).to("cpu")
    tensors = {"g": index.g.contiguous(), "item_emb": index.item_emb.contiguous()}
    if index.a_x is not None:
        tensors["a_x"] = index.a_x.contiguous()
    digest = hashlib.sha256(model_bytes + config_text.encode()).hexdigest()[:12]
    metadata = {
        "bundle_version": BUNDLE_VERSION,
        "model_version": digest,
        "created_at": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "max_len": max_len,
        "data": _data_metadata(dataset),
        "metrics": metrics,
        # The run's quality warnings (e.g. not beating popularity), repeated to every reader.
        "warnings": list((metrics or {}).get("warnings", [])),
        "source": source,
        "index": {"stored_dtype": "float32", "rows": index.num_items + 1},
    }
    out = Path(out)
    with atomic_dir(out) as tmp:
        (tmp / MODEL_FILE).write_bytes(model_bytes)
        (tmp / INDEX_FILE).write_bytes(save(tensors))
        (tmp / CONFIG_FILE).write_text(config_text)
        _items_frame(dataset).write_parquet(tmp / ITEMS_FILE)
        pl.DataFrame(
            {
                "user_id": np.arange(dataset.num_users, dtype=np.int32),
                "user_key": dataset.user_keys.astype(str),
            },
            schema={"user_id": pl.Int32, "user_key": pl.String},
        ).write_parquet(tmp / USERS_FILE)
        _histories_frame(dataset, max_len).write_parquet(tmp / HISTORIES_FILE)
        _seen_frame(dataset).write_parquet(tmp / SEEN_FILE)
        metadata["files"] = {name: _file_record(tmp / name) for name in CHECKED_FILES}
        (tmp / METADATA_FILE).write_text(json.dumps(metadata, indent=2) + "\n")
    return out


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        while block := f.read(HASH_BLOCK):
            digest.update(block)
    return digest.hexdigest()


def _file_record(path: Path) -> dict[str, Any]:
    return {"bytes": path.stat().st_size, "sha256": _sha256(path)}


def _data_metadata(dataset: SequenceDataset) -> dict[str, Any]:
    stats = dataset.stats
    source = stats.get("source") if isinstance(stats.get("source"), dict) else {}
    canonical = json.dumps(stats, sort_keys=True, default=str).encode()
    return {
        "checksum": (source or {}).get("sha256"),
        "stats_sha256": hashlib.sha256(canonical).hexdigest(),
        "num_users": dataset.num_users,
        "num_items": dataset.num_items,
        "num_interactions": dataset.num_interactions,
        "created_at": stats.get("created_at"),
    }


def _items_frame(dataset: SequenceDataset) -> pl.DataFrame:
    n = dataset.num_items
    columns: dict[str, Any] = {
        "item_id": pl.Series("item_id", np.arange(1, n + 1), pl.Int32),
        "item_key": pl.Series("item_key", dataset.item_keys[1:].astype(str), pl.String),
        "count": pl.Series("count", dataset.item_counts[1:], pl.Int64),
    }
    if dataset.titles is not None:
        columns["title"] = pl.Series("title", list(dataset.titles[1:]), pl.String)
    return pl.DataFrame(columns)


def _histories_frame(dataset: SequenceDataset, max_len: int) -> pl.DataFrame:
    """One row per user: the last max_len events (oldest first)."""
    lengths = dataset.lengths
    users = np.repeat(np.arange(dataset.num_users, dtype=np.int32), lengths)
    position_from_end = np.repeat(dataset.offsets[1:], lengths) - np.arange(
        dataset.num_interactions
    )
    recent = position_from_end <= max_len
    events = {"user_id": users[recent], "item_ids": dataset.item_ids[recent].astype(np.int32)}
    schema: dict[str, Any] = {"user_id": pl.Int32, "item_ids": pl.Int32}
    if dataset.timestamps is not None:
        events["timestamps"] = dataset.timestamps[recent]
        schema["timestamps"] = pl.Int64
    grouped = (
        pl.DataFrame(events, schema=schema).group_by("user_id", maintain_order=True).agg(pl.all())
    )
    all_users = pl.DataFrame({"user_id": np.arange(dataset.num_users, dtype=np.int32)})
    frame = all_users.join(grouped, on="user_id", how="left", maintain_order="left")
    return frame.with_columns(pl.exclude("user_id").fill_null([]))


def _seen_frame(dataset: SequenceDataset) -> pl.DataFrame:
    """One row per user: every item of the user's whole sequence, sorted and unique."""
    users = np.repeat(np.arange(dataset.num_users, dtype=np.int32), dataset.lengths)
    events = pl.DataFrame(
        {"user_id": users, "item_ids": dataset.item_ids.astype(np.int32)},
        schema={"user_id": pl.Int32, "item_ids": pl.Int32},
    ).unique()
    grouped = events.group_by("user_id").agg(pl.col("item_ids").sort())
    all_users = pl.DataFrame({"user_id": np.arange(dataset.num_users, dtype=np.int32)})
    frame = all_users.join(grouped, on="user_id", how="left", maintain_order="left")
    return frame.with_columns(pl.col("item_ids").fill_null([]))


# ---------------------------------------------------------------------------- load


def load_bundle(
    path: str | Path,
    device: str | torch.device = "cpu",
    index_dtype: torch.dtype | None = None,
    verify: bool = True,
) -> Bundle:
    """Load and check a bundle directory; the model and index go to `device`.

    index_dtype: None = `default_index_dtype(device)`. verify: recompute a
    few index rows from the weights and compare (catches an index from another model), and
    check every file's size and sha256 against metadata.json (catches any file changed
    since export). A bundle exported before files were recorded loads with a warning in
    its metadata instead.
    """
    root = Path(path)
    device = torch.device(device)
    if not root.is_dir():
        raise UserError(f"bundle {root} is not a directory (create one with `recsys export`)")
    missing = [f for f in BUNDLE_FILES if not (root / f).is_file()]
    if missing:
        raise UserError(f"bundle {root} is missing {', '.join(missing)} (re-run `recsys export`)")
    metadata = _read_json(root / METADATA_FILE)
    version = metadata.get("bundle_version")
    if version != BUNDLE_VERSION:
        raise UserError(
            f"{root / METADATA_FILE}: bundle_version {version!r} is not supported (expected "
            f"{BUNDLE_VERSION}: version 2 added {SEEN_FILE}, every item a user interacted "
            "with, so that seen items are excluded however long the history); re-export it "
            "with `recsys export --checkpoint RUN_DIR --out BUNDLE`"
        )
    if "model_version" not in metadata:
        raise UserError(f"{root / METADATA_FILE}: missing key 'model_version'")
    try:
        config = ModelConfig.from_dict(_read_json(root / CONFIG_FILE))
    except (ValueError, TypeError) as e:
        raise UserError(f"{root / CONFIG_FILE}: {e}") from e

    model = SeqRecModel(config)
    weights = _read_safetensors(root / MODEL_FILE)
    try:
        model.load_state_dict(weights, strict=True)
    except RuntimeError as e:
        raise UserError(f"{root / MODEL_FILE}: weights do not match {CONFIG_FILE}: {e}") from e
    model.eval()
    index = _read_index(root / INDEX_FILE, config)
    if verify:
        _verify_index(model, index, root / INDEX_FILE)
    if index_dtype is None:
        index_dtype = default_index_dtype(device)
    items = _read_items(root / ITEMS_FILE, config.num_items)
    users = _read_frame(root / USERS_FILE, {"user_id": pl.Int32, "user_key": pl.String})
    if not users["user_id"].equals(pl.Series("user_id", np.arange(users.height), pl.Int32)):
        raise UserError(f"{root / USERS_FILE}: user_id must be the dense sorted range 0..U-1")
    hist_items, hist_offsets, hist_times = _read_histories(
        root / HISTORIES_FILE, users.height, config.num_items
    )
    seen_items, seen_offsets = _read_seen(root / SEEN_FILE, users.height, config.num_items)
    if verify:
        metadata = _verify_files(root, metadata)
    titles = None
    if "title" in items.columns:
        titles = np.empty(config.num_items + 1, dtype=object)
        titles[1:] = items["title"].to_numpy()
    return Bundle(
        path=root,
        config=config,
        model=model.to(device),
        index=index.to(device, index_dtype),
        item_keys=np.concatenate(
            [np.array([""], dtype=object), items["item_key"].to_numpy().astype(object)]
        ),
        titles=titles,
        item_counts=np.concatenate([[0], items["count"].to_numpy()]).astype(np.int64),
        user_keys=users["user_key"].to_numpy().astype(object),
        history_items=hist_items,
        history_offsets=hist_offsets,
        history_timestamps=hist_times,
        seen_items=seen_items,
        seen_offsets=seen_offsets,
        metadata=metadata,
    )


def check_bundle_dataset(bundle: Bundle, dataset: SequenceDataset, data_dir: str | Path) -> None:
    """UserError unless `dataset` is the one `bundle` was exported with (the same stats.json,
    compared by its hash, and the same catalog size)."""
    recorded = (bundle.metadata.get("data") or {}).get("stats_sha256")
    if dataset.num_items != bundle.num_items or recorded != _data_metadata(dataset)["stats_sha256"]:
        raise UserError(
            f"{data_dir}: not the dataset bundle {bundle.path} was exported with (its "
            f"stats.json differs from the one recorded in {METADATA_FILE})"
        )


def _read_json(path: Path) -> dict[str, Any]:
    try:
        value = json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise UserError(f"{path}: not valid JSON ({e})") from e
    if not isinstance(value, dict):
        raise UserError(f"{path}: expected a JSON object, got {type(value).__name__}")
    return value


def _read_safetensors(path: Path) -> dict[str, torch.Tensor]:
    try:
        return load_file(str(path))
    except (SafetensorError, OSError, ValueError) as e:
        raise UserError(f"{path}: not a readable safetensors file ({e})") from e


def _read_index(path: Path, config: ModelConfig) -> ItemIndex:
    tensors = _read_safetensors(path)
    sim = config.similarity
    rows, dim = config.num_items + 1, config.encoder.dim
    is_mol = hasattr(sim, "p_x")
    expected: dict[str, tuple[int, ...]] = {
        "g": (rows, sim.p_x, sim.d_p) if is_mol else (rows, 1, dim),  # type: ignore[union-attr]
        "item_emb": (rows, dim),
    }
    if is_mol:
        expected["a_x"] = (rows, sim.p_q * sim.p_x)  # type: ignore[union-attr]
    for name, shape in expected.items():
        if name not in tensors:
            raise UserError(f"{path}: missing tensor {name!r} (expected shape {shape})")
        if tuple(tensors[name].shape) != shape:
            raise UserError(
                f"{path}: tensor {name!r} has shape {tuple(tensors[name].shape)}, expected {shape} "
                f"from {CONFIG_FILE}"
            )
        if tensors[name].dtype != torch.float32:
            raise UserError(f"{path}: tensor {name!r} is {tensors[name].dtype}, expected float32")
    extra = sorted(set(tensors) - set(expected))
    if extra:
        raise UserError(f"{path}: unexpected tensors {extra} for this model config")
    return ItemIndex(g=tensors["g"], a_x=tensors.get("a_x"), item_emb=tensors["item_emb"])


@torch.no_grad()
def _verify_index(model: SeqRecModel, index: ItemIndex, path: Path) -> None:
    """Recompute a few rows of the index from the weights: a stale or foreign index fails."""
    rows = torch.linspace(1, index.num_items, min(VERIFY_ROWS, index.num_items)).long().unique()
    if not torch.equal(index.item_emb[rows], model.item_emb.weight[rows]):
        raise UserError(f"{path}: item_emb does not match {MODEL_FILE} (index from another model?)")
    parts = model.similarity.item_parts(model.item_emb.weight[rows])
    bad = not torch.allclose(parts.g, index.g[rows], atol=VERIFY_ATOL)
    if parts.a_x is not None and index.a_x is not None:
        bad = bad or not torch.allclose(parts.a_x, index.a_x[rows], atol=VERIFY_ATOL)
    if bad:
        raise UserError(f"{path}: item components do not match {MODEL_FILE} (stale index?)")


def _verify_files(root: Path, metadata: dict[str, Any]) -> dict[str, Any]:
    """Check each file against its record in metadata["files"]; returns the metadata, with
    a warning added when the bundle has no records (exported before they were kept)."""
    records = metadata.get("files")
    if records is None:
        warning = (
            f"{root / METADATA_FILE} records no file checksums (an older export): its files "
            "cannot be checked against the export; re-export to have them checked"
        )
        return {**metadata, "warnings": [*(metadata.get("warnings") or []), warning]}
    if not isinstance(records, dict):
        raise UserError(f"{root / METADATA_FILE}: 'files' must map file names to records")
    for name in CHECKED_FILES:
        record = records.get(name)
        if not isinstance(record, dict) or not {"bytes", "sha256"} <= set(record):
            raise UserError(f"{root / METADATA_FILE}: 'files' has no bytes and sha256 of {name}")
        path = root / name
        size = path.stat().st_size
        if size != record["bytes"]:
            raise UserError(
                f"{path}: {size} bytes, but {METADATA_FILE} recorded {record['bytes']} at "
                "export: the file changed since (re-export the bundle or restore the file)"
            )
        digest = _sha256(path)
        if digest != record["sha256"]:
            raise UserError(
                f"{path}: sha256 {digest[:16]}..., but {METADATA_FILE} recorded "
                f"{str(record['sha256'])[:16]}... at export: the file changed since "
                "(re-export the bundle or restore the file)"
            )
    return metadata


def _read_frame(path: Path, schema: dict[str, Any]) -> pl.DataFrame:
    try:
        frame = pl.read_parquet(path)
    except (pl.exceptions.PolarsError, OSError) as e:
        raise UserError(f"{path}: not a readable Parquet file ({e})") from e
    for col, dtype in schema.items():
        if col not in frame.columns:
            raise UserError(f"{path}: missing column {col!r} (expected {dtype})")
        if frame.schema[col] != dtype:
            raise UserError(
                f"{path}: column {col!r} has type {frame.schema[col]}, expected {dtype}"
            )
    return frame


def _read_items(path: Path, num_items: int) -> pl.DataFrame:
    items = _read_frame(path, {"item_id": pl.Int32, "item_key": pl.String, "count": pl.Int64})
    if items.height != num_items:
        raise UserError(
            f"{path}: {items.height} items, expected num_items={num_items} from {CONFIG_FILE}"
        )
    if not items["item_id"].equals(pl.Series("item_id", np.arange(1, num_items + 1), pl.Int32)):
        raise UserError(f"{path}: item_id must be the dense sorted range 1..{num_items}")
    return items


def _read_histories(
    path: Path, num_users: int, num_items: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    frame, items, offsets = _read_id_lists(path, num_users, num_items)
    times = None
    if "timestamps" in frame.columns:
        if frame.schema["timestamps"] != pl.List(pl.Int64):
            raise UserError(f"{path}: column 'timestamps' must be List(Int64)")
        times = frame["timestamps"].explode().drop_nulls().to_numpy().astype(np.int64)
        if len(times) != len(items):
            raise UserError(f"{path}: timestamps and item_ids lengths differ")
    return items, offsets, times


def _read_seen(path: Path, num_users: int, num_items: int) -> tuple[np.ndarray, np.ndarray]:
    """seen.parquet -> (flat int32 ids, (U+1,) int64 offsets); each user's ids sorted, unique."""
    _, items, offsets = _read_id_lists(path, num_users, num_items)
    steps = np.diff(items.astype(np.int64))
    within = np.ones(len(steps), dtype=bool)  # False where a step crosses to the next user
    within[offsets[1:-1][(offsets[1:-1] > 0) & (offsets[1:-1] < len(items))] - 1] = False
    if np.any(steps[within] <= 0):
        bad = int(np.searchsorted(offsets, np.flatnonzero(within & (steps <= 0))[0], "right") - 1)
        raise UserError(f"{path}: user_id {bad}: item_ids must be sorted and unique")
    return items, offsets


def _read_id_lists(
    path: Path, num_users: int, num_items: int
) -> tuple[pl.DataFrame, np.ndarray, np.ndarray]:
    """A per-user Parquet file (user_id Int32 0..U-1 in order, item_ids List(Int32) of ids in
    1..N) -> (frame, flat int32 ids, (U+1,) int64 offsets)."""
    frame = _read_frame(path, {"user_id": pl.Int32, "item_ids": pl.List(pl.Int32)})
    if not frame["user_id"].equals(pl.Series("user_id", np.arange(num_users), pl.Int32)):
        raise UserError(f"{path}: expected one row per user, user_id 0..{num_users - 1} in order")
    lengths = frame["item_ids"].list.len().to_numpy().astype(np.int64)
    offsets = np.zeros(num_users + 1, dtype=np.int64)
    np.cumsum(lengths, out=offsets[1:])
    items = frame["item_ids"].explode().drop_nulls().to_numpy().astype(np.int32)
    if len(items) != offsets[-1] or (len(items) and (items.min() < 1 or items.max() > num_items)):
        raise UserError(f"{path}: item_ids must be non-null ids in 1..{num_items}")
    return frame, items, offsets
