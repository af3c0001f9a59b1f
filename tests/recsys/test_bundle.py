"""Bundle export/load: round trip, every accepted checkpoint form, atomicity, clear errors."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import polars as pl
import pytest
import torch
from retrieval_helpers import toy_dataset, toy_model
from safetensors.torch import load_file, save_file

import recsys.bundle as bundle_mod
from recsys.bundle import (
    BUNDLE_FILES,
    BUNDLE_VERSION,
    export_bundle,
    export_bundle_from_model,
    load_bundle,
)
from recsys.errors import UserError
from recsys.retrieval.index import default_index_dtype, index_from_model
from recsys.training.rundir import write_model_config, write_weights


@pytest.fixture
def exported(tmp_path):
    data = toy_dataset(tmp_path / "data", num_users=40, num_items=30)
    model = toy_model(data.num_items)
    out = export_bundle_from_model(
        model, data, tmp_path / "bundle", metrics={"test": {"hr@10": 0.5}}
    )
    return model, data, out


def test_round_trip(exported) -> None:
    model, data, out = exported
    assert sorted(p.name for p in out.iterdir()) == sorted(BUNDLE_FILES)
    b = load_bundle(out, index_dtype=torch.float32)
    for name, value in model.state_dict().items():
        assert torch.equal(b.model.state_dict()[name], value)
    ref = index_from_model(model)
    assert torch.equal(b.index.g, ref.g) and torch.equal(b.index.a_x, ref.a_x)
    assert torch.equal(b.index.item_emb, ref.item_emb)
    assert list(b.item_keys) == list(data.item_keys) and b.titles[1] == "Item 1"
    assert np.array_equal(b.item_counts, data.item_counts)
    assert list(b.user_keys) == list(data.user_keys)
    max_len = model.config.encoder.max_len
    for u in range(data.num_users):
        stored = b.history_items[b.history_offsets[u] : b.history_offsets[u + 1]]
        assert np.array_equal(stored, data.sequence(u)[-max_len:])
    meta = b.metadata
    assert meta["bundle_version"] == BUNDLE_VERSION and len(b.model_version) == 12
    assert meta["data"]["checksum"] == "abc123" and meta["metrics"] == {"test": {"hr@10": 0.5}}
    assert meta["data"]["num_items"] == 30 and "created_at" in meta
    assert b.history_timestamps is None and b.max_len == max_len


def test_model_version_is_a_content_hash(exported, tmp_path) -> None:
    model, data, out = exported
    again = export_bundle_from_model(model, data, tmp_path / "again")
    assert load_bundle(again).model_version == load_bundle(out).model_version
    with torch.no_grad():
        model.item_emb.weight[1] += 1.0
    changed = export_bundle_from_model(model, data, tmp_path / "changed")
    assert load_bundle(changed).model_version != load_bundle(out).model_version


def test_index_dtype_default_and_on_request(exported) -> None:
    assert load_bundle(exported[2]).index.dtype == default_index_dtype("cpu")
    b = load_bundle(exported[2], index_dtype=torch.bfloat16)
    assert b.index.dtype == torch.bfloat16 and b.index.a_x.dtype == torch.bfloat16
    assert b.device == torch.device("cpu")
    assert default_index_dtype("cuda") == torch.bfloat16


def _run_dir(tmp_path: Path, model, data_dir: Path) -> Path:
    run = tmp_path / "run"
    run.mkdir()
    write_weights(run / "best.safetensors", model)
    write_model_config(run, model.config, data_dir, model.config.encoder.max_len)
    (run / "metrics.json").write_text(json.dumps({"valid": {"ndcg@10": 0.25}}))
    return run


def test_export_from_run_dir_weights_file_and_lightning_checkpoint(tmp_path) -> None:
    data = toy_dataset(tmp_path / "data", num_users=30, num_items=20)
    model = toy_model(data.num_items, seed=3)
    run = _run_dir(tmp_path, model, tmp_path / "data")
    ckpt_dir = run / "checkpoints"
    ckpt_dir.mkdir()
    torch.save(
        {
            "state_dict": {f"model.{k}": v for k, v in model.state_dict().items()},
            "hyper_parameters": {"model_config": model.config.to_dict(), "training": {}},
        },
        ckpt_dir / "last.ckpt",
    )
    versions = set()
    for source in (run, run / "best.safetensors", ckpt_dir / "last.ckpt"):
        out = export_bundle(source, tmp_path / f"b-{source.name}")
        b = load_bundle(out)
        assert b.metadata["metrics"] == {"valid": {"ndcg@10": 0.25}}
        versions.add(b.model_version)
    assert len(versions) == 1  # the same weights, whichever form they came in


def test_checkpoint_without_data_dir_needs_data(tmp_path) -> None:
    data = toy_dataset(tmp_path / "data", num_users=30, num_items=20)
    model = toy_model(data.num_items)
    lone = tmp_path / "lone.ckpt"
    torch.save(
        {
            "state_dict": {f"model.{k}": v for k, v in model.state_dict().items()},
            "hyper_parameters": {"model_config": model.config.to_dict(), "training": {}},
        },
        lone,
    )
    with pytest.raises(UserError, match="--data"):
        export_bundle(lone, tmp_path / "b")
    assert load_bundle(export_bundle(lone, tmp_path / "b", tmp_path / "data")).num_items == 20


def test_wrong_dataset_is_refused(tmp_path) -> None:
    data = toy_dataset(tmp_path / "data", num_users=30, num_items=20)
    with pytest.raises(UserError, match="20 items"):
        export_bundle_from_model(toy_model(25), data, tmp_path / "b")


def test_failed_export_keeps_the_old_bundle(exported, monkeypatch) -> None:
    model, data, out = exported
    before = (out / "metadata.json").read_text()

    def boom(*args, **kwargs):
        raise RuntimeError("disk full")

    monkeypatch.setattr(bundle_mod, "_histories_frame", boom)
    with pytest.raises(RuntimeError, match="disk full"):
        export_bundle_from_model(model, data, out)
    assert (out / "metadata.json").read_text() == before
    assert [p.name for p in out.parent.iterdir() if p.name.startswith(".bundle")] == []


def test_missing_file(exported) -> None:
    (exported[2] / "histories.parquet").unlink()
    with pytest.raises(UserError, match=r"missing histories\.parquet"):
        load_bundle(exported[2])


def test_unsupported_version(exported) -> None:
    path = exported[2] / "metadata.json"
    meta = json.loads(path.read_text())
    path.write_text(json.dumps({**meta, "bundle_version": 99}))
    with pytest.raises(UserError, match="bundle_version 99 is not supported"):
        load_bundle(exported[2])


def test_index_shape_mismatch_names_file_and_tensor(exported) -> None:
    path = exported[2] / "index.safetensors"
    tensors = load_file(str(path))
    tensors["g"] = tensors["g"][:-1].contiguous()
    save_file(tensors, str(path))
    with pytest.raises(UserError, match=r"index\.safetensors: tensor 'g' has shape"):
        load_bundle(exported[2])


def test_stale_index_is_detected(exported) -> None:
    path = exported[2] / "index.safetensors"
    tensors = load_file(str(path))
    tensors["g"] = torch.roll(tensors["g"], 1, dims=0).contiguous()
    save_file(tensors, str(path))
    with pytest.raises(UserError, match=r"do not match model\.safetensors"):
        load_bundle(exported[2])


def test_weights_from_another_config(exported) -> None:
    path = exported[2] / "config.json"
    config = json.loads(path.read_text())
    config["encoder"]["num_blocks"] = 2
    path.write_text(json.dumps(config))
    with pytest.raises(UserError, match=r"model\.safetensors: weights do not match config\.json"):
        load_bundle(exported[2])


def test_bad_config_and_items(exported) -> None:
    (exported[2] / "config.json").write_text("{not json")
    with pytest.raises(UserError, match=r"config\.json: not valid JSON"):
        load_bundle(exported[2])


def test_items_row_count(exported) -> None:
    path = exported[2] / "items.parquet"
    pl.read_parquet(path).head(10).write_parquet(path)
    with pytest.raises(UserError, match=r"items\.parquet: 10 items, expected num_items=30"):
        load_bundle(exported[2])


def test_seen_sets_are_whole_histories_and_served_lists_exclude_them(exported) -> None:
    """A user with more than max_len events never gets any of them back, and the exact
    retriever's list equals a brute-force ranking with every seen item masked."""
    from recsys.recommend import Recommender, RecRequest

    model, data, out = exported
    b = load_bundle(out, index_dtype=torch.float32)
    max_len = model.config.encoder.max_len
    for u in range(data.num_users):
        seen = b.seen_items[b.seen_offsets[u] : b.seen_offsets[u + 1]]
        assert np.array_equal(seen, np.unique(data.sequence(u)))
    long_users = [  # users with items older than the stored window, and only there
        u
        for u in range(data.num_users)
        if set(data.sequence(u)[:-max_len]) - set(data.sequence(u)[-max_len:])
    ]
    assert long_users, "the toy data must have users whose old items are not in the window"
    rec = Recommender.load(out, default_retriever="exact", device="cpu")
    n = data.num_items
    for u in long_users[:4]:
        whole = np.unique(data.sequence(u))
        got = rec.recommend([RecRequest(user_key=str(data.user_keys[u]), k=n)])[0]
        assert not {str(data.item_keys[i]) for i in whole} & set(got.item_keys)
        assert len(got.item_keys) == n - len(whole)
        with torch.no_grad():
            window = torch.from_numpy(data.sequence(u)[-max_len:].astype(np.int64))[None]
            scores = model.score_all(window, None, torch.tensor([u]))[0]
        scores[torch.from_numpy(whole.astype(np.int64))] = float("-inf")
        order = torch.argsort(scores, descending=True, stable=True)[: n - len(whole)]
        assert list(got.item_keys) == [str(data.item_keys[i]) for i in order.tolist()]


def test_a_version_1_bundle_asks_for_a_re_export(exported) -> None:
    out = exported[2]
    meta = json.loads((out / "metadata.json").read_text())
    (out / "metadata.json").write_text(json.dumps({**meta, "bundle_version": 1}))
    with pytest.raises(UserError, match=r"seen\.parquet.*re-export"):
        load_bundle(out)


def test_unsorted_seen_set_is_named(exported) -> None:
    out = exported[2]
    frame = pl.read_parquet(out / "seen.parquet")
    rows = frame["item_ids"].to_list()
    rows[2] = rows[2][::-1] if len(rows[2]) > 1 else [5, 5]
    frame.with_columns(pl.Series("item_ids", rows, pl.List(pl.Int32))).write_parquet(
        out / "seen.parquet"
    )
    with pytest.raises(UserError, match=r"seen\.parquet: user_id 2: item_ids must be sorted"):
        load_bundle(out)


def test_training_warnings_reach_the_bundle(tmp_path) -> None:
    data = toy_dataset(tmp_path / "data", num_users=20, num_items=30)
    warning = "the model does not beat popularity on validation hr@10: 0.0100 vs 0.0200"
    run = tmp_path / "run"
    model = toy_model(data.num_items)
    write_weights(run / "best.safetensors", model)
    write_model_config(run, model.config, tmp_path / "data", model.config.encoder.max_len)
    (run / "metrics.json").write_text(json.dumps({"valid": {}, "warnings": [warning]}))
    export_bundle(run, tmp_path / "b")
    assert load_bundle(tmp_path / "b").metadata["warnings"] == [warning]


def test_every_file_is_recorded_with_its_size_and_sha256(exported) -> None:
    out = exported[2]
    records = json.loads((out / "metadata.json").read_text())["files"]
    assert sorted(records) == sorted(f for f in BUNDLE_FILES if f != "metadata.json")
    for name, record in records.items():
        raw = (out / name).read_bytes()
        assert record == {"bytes": len(raw), "sha256": hashlib.sha256(raw).hexdigest()}


def test_a_file_changed_after_export_is_refused(exported) -> None:
    out = exported[2]
    # Same schema and row count, keys shuffled: every structural check passes, yet the
    # service would answer with the wrong item keys.
    items = pl.read_parquet(out / "items.parquet")
    items.with_columns(pl.col("item_key").reverse()).write_parquet(out / "items.parquet")
    with pytest.raises(UserError, match=r"items\.parquet: .* at export: the file changed since"):
        load_bundle(out)
    assert load_bundle(out, verify=False).item_keys[1] == items["item_key"][-1]


def test_a_bundle_without_file_records_loads_with_a_warning(exported) -> None:
    out = exported[2]
    meta = json.loads((out / "metadata.json").read_text())
    del meta["files"]
    (out / "metadata.json").write_text(json.dumps(meta))
    warnings = load_bundle(out).metadata["warnings"]
    assert len(warnings) == 1 and "records no file checksums" in warnings[0]
    (out / "metadata.json").write_text(json.dumps({**meta, "files": {"model.safetensors": {}}}))
    with pytest.raises(UserError, match=r"'files' has no bytes and sha256 of model\.safetensors"):
        load_bundle(out)
