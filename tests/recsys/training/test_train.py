"""Real Lightning fits on tiny synthetic data: quality vs popularity, resuming, bad input."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import torch
from dataset_helpers import make_dataset
from safetensors.torch import load_file

from recsys.dataset import load_dataset
from recsys.errors import UserError
from recsys.evaluation import evaluate
from recsys.metrics import METRIC_KEYS
from recsys.training import rundir
from recsys.training.config import RunConfig, config_from_dict
from recsys.training.run import refit, train


def tiny_config(
    encoder: str = "sasrec", similarity: str = "dot", epochs: int = 3, **training: Any
) -> RunConfig:
    enc = (
        {"type": "sasrec", "max_len": 16, "dim": 32, "num_blocks": 1, "num_heads": 1}
        if encoder == "sasrec"
        else {
            "type": "hstu",
            "max_len": 16,
            "dim": 32,
            "num_blocks": 1,
            "num_heads": 2,
            "attn_dim": 16,
            "linear_dim": 16,
        }
    )
    sim = (
        {"type": "dot"}
        if similarity == "dot"
        else {
            "type": "mol",
            "p_q": 2,
            "p_x": 2,
            "d_p": 16,
            "mlp_hidden": 32,
            "gate_hidden": 16,
            "user_hash_size": 512,
        }
    )
    return config_from_dict(
        {
            "name": "tiny",
            "model": {"encoder": enc, "similarity": sim},
            "training": {
                "epochs": epochs,
                "batch_size": 16,
                "lr": 3.0e-3,
                "negatives": {"kind": "shared", "num": 16},
                "precision": "32-true",
                "early_stopping": {"metric": "ndcg@10", "patience": 50},
                "log_every_n_steps": 1,
                "seed": 7,
                **training,
            },
        },
        "test",
    )


def test_short_run_beats_popularity(tmp_path: Path) -> None:
    data_dir = make_dataset(tmp_path / "data", num_users=200, num_items=50, timestamps=True)
    run = tmp_path / "run"
    metrics = train(tiny_config("hstu", "mol", epochs=12), data_dir, run, progress_bar=False)
    assert set(metrics) == {"valid", "test", "popularity", "popularity_valid", "warnings"}
    for name in ("valid", "test", "popularity", "popularity_valid"):
        assert list(metrics[name]) == list(METRIC_KEYS)
    assert metrics["warnings"] == []  # it beats popularity: nothing to warn about
    assert metrics["test"]["hr@10"] >= 2 * metrics["popularity"]["hr@10"]
    assert metrics["valid"]["hr@10"] >= 2 * metrics["popularity"]["hr@10"]

    # The run directory is self-describing and readable without unpickling.
    assert json.loads((run / "metrics.json").read_text()) == metrics
    model, info = rundir.load_model(run)
    assert info.data_dir == str(data_dir.resolve())
    assert info.extra["selected_on"] == "valid/ndcg@10"
    assert (run / "checkpoints" / "last.ckpt").is_file()
    assert list((run / "logs").glob("version_*/metrics.csv"))
    assert list((run / "tensorboard").glob("version_*/events.out.tfevents.*"))
    again = evaluate(model, load_dataset(data_dir), "test", info.max_len)
    assert again == pytest.approx(metrics["test"])
    # best.safetensors holds the weights of the selected (best) checkpoint
    best, _ = rundir.load_checkpoint_model(info.extra["best_checkpoint"])
    weights = load_file(str(run / "best.safetensors"))
    for name, value in best.state_dict().items():
        torch.testing.assert_close(weights[name], value)


def _last_ckpt(run: Path) -> dict[str, Any]:
    return torch.load(run / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)


@pytest.mark.parametrize(
    "schedule",
    [
        {},
        {
            "lr_schedule": "linear",
            "warmup_steps": 3,
            "negatives": {"kind": "full"},
            "embedding_lr_scale": 5.0,
        },
    ],
)
def test_resume_continues_from_the_same_step(tmp_path: Path, schedule: dict[str, Any]) -> None:
    data_dir = make_dataset(tmp_path / "data", num_users=64, num_items=30)
    # coverage@10 reaches 1.0 at once on 30 items and never improves again: last.ckpt must
    # still advance every epoch (not only when a new best is saved).
    config = tiny_config(
        "sasrec", "dot", epochs=3, early_stopping={"metric": "coverage@10"}, **schedule
    )
    straight = tmp_path / "straight"
    train(config, data_dir, straight, progress_bar=False)

    resumed = tmp_path / "resumed"
    train(config, data_dir, resumed, max_epochs=2, progress_bar=False)
    first = _last_ckpt(resumed)
    steps_per_epoch = first["global_step"] // 2
    assert first["epoch"] == 1 and steps_per_epoch == 4  # 64 users / batch 16

    train(config, data_dir, resumed, resume=resumed, progress_bar=False)
    after, reference = _last_ckpt(resumed), _last_ckpt(straight)
    # The fitting time carries over: the resumed run's clock starts from the first's.
    assert (
        after["callbacks"]["ElapsedTime"]["elapsed_s"]
        > first["callbacks"]["ElapsedTime"]["elapsed_s"]
        > 0
    )
    csv = next((resumed / "logs").glob("version_1/metrics.csv")).read_text().splitlines()
    assert "time/elapsed_s" in csv[0]
    assert after["global_step"] == reference["global_step"] == 3 * steps_per_epoch
    assert after["epoch"] == reference["epoch"] == 2
    if schedule:  # the lr schedule resumed at the same step and decayed to 0, logged
        assert after["lr_schedulers"][0]["last_epoch"] == 3 * steps_per_epoch
        groups = after["optimizer_states"][0]["param_groups"]
        assert len(groups) == 2 and all(g["lr"] == 0.0 for g in groups)
        assert [g["initial_lr"] for g in groups] == pytest.approx([5 * 3e-3, 3e-3])
        csv = next((straight / "logs").glob("version_*/metrics.csv")).read_text()
        assert "lr-AdamW" in csv.splitlines()[0]
    # Per-epoch seeding: the resumed run replays the uninterrupted one exactly.
    for name, value in reference["state_dict"].items():
        torch.testing.assert_close(after["state_dict"][name], value, rtol=1e-5, atol=1e-6)


def test_existing_run_dir_needs_resume(tmp_path: Path) -> None:
    data_dir = make_dataset(tmp_path / "data", num_users=32, num_items=20)
    run = tmp_path / "run"
    train(tiny_config(epochs=1), data_dir, run, progress_bar=False)
    with pytest.raises(UserError, match="already holds checkpoints"):
        train(tiny_config(epochs=1), data_dir, run, progress_bar=False)
    with pytest.raises(UserError, match="does not exist"):
        train(tiny_config(epochs=1), data_dir, tmp_path / "r2", resume=tmp_path / "no.ckpt")
    # A resumed run must continue the same run: another config is named, nothing trains.
    other = tiny_config(epochs=2, lr=5e-3)
    with pytest.raises(UserError, match=r"another configuration \(training\.epochs, training\.lr"):
        train(other, data_dir, run, resume=run, progress_bar=False)
    assert not (run / "logs" / "version_1").exists()
    # Hardware and I/O settings may change (another machine): that run resumes.
    moved = tiny_config(epochs=1, eval_batch_size=7, log_every_n_steps=3)
    assert moved.training != tiny_config(epochs=1).training
    train(moved, data_dir, run, resume=run, progress_bar=False)  # finished: nothing to add
    assert _last_ckpt(run)["epoch"] == 0


def test_bad_dataset_dirs_fail_before_training(tmp_path: Path) -> None:
    config = tiny_config(epochs=1)
    with pytest.raises(UserError, match="does not exist"):
        train(config, tmp_path / "nowhere", tmp_path / "run", progress_bar=False)
    with pytest.raises(UserError, match="no dataset"):
        train(config, None, tmp_path / "run", progress_bar=False)

    missing = make_dataset(tmp_path / "missing", num_users=10, num_items=10)
    (missing / "sequences.parquet").unlink()
    with pytest.raises(UserError, match=r"missing sequences\.parquet"):
        train(config, missing, tmp_path / "run", progress_bar=False)

    old = make_dataset(tmp_path / "old", num_users=10, num_items=10)
    stats = json.loads((old / "stats.json").read_text())
    (old / "stats.json").write_text(json.dumps({**stats, "format_version": 999}))
    with pytest.raises(UserError, match="format_version 999"):
        train(config, old, tmp_path / "run", progress_bar=False)
    assert not (tmp_path / "run").exists()  # nothing was started


@pytest.mark.parametrize(
    ("stride", "batching"), [(None, "random"), (5, "random"), (None, "length")]
)
def test_all_windows_fit_one_step_per_batch_of_windows(
    tmp_path: Path, stride: int | None, batching: str
) -> None:
    from recsys.training.data import TrainSet

    data_dir = make_dataset(tmp_path / "data", num_users=40, num_items=30, length=(8, 40))
    data = {"train_window": "all", "train_stride": stride}
    config = config_from_dict({**tiny_config(epochs=1, batching=batching).to_dict(), "data": data})
    windows = len(TrainSet(load_dataset(data_dir), config.max_len, "all", stride=stride))
    assert windows > 40  # long users give several windows
    run = tmp_path / "run"
    train(config, data_dir, run, progress_bar=False)
    # as many steps as batches of 16 windows, whichever the batching
    assert _last_ckpt(run)["global_step"] == -(-windows // 16)


def test_lr_factor_warms_up_then_decays_to_zero() -> None:
    from recsys.training.module import lr_factor

    assert [lr_factor(s, 10, 0, "constant") for s in (0, 9, 20)] == [1.0, 1.0, 1.0]
    assert [lr_factor(s, 10, 2, "linear") for s in range(11)] == pytest.approx(
        [0.5, 1.0, 1.0, 7 / 8, 6 / 8, 5 / 8, 4 / 8, 3 / 8, 2 / 8, 1 / 8, 0.0]
    )
    assert [lr_factor(s, 6, 0, "cosine") for s in (0, 3, 6, 9)] == pytest.approx(
        [1.0, 0.5, 0.0, 0.0]
    )
    assert lr_factor(1, 10, 4, "cosine") == 0.5  # still warming up


def test_embedding_tables_get_their_own_lr() -> None:
    from torch import nn

    from recsys.models.seqrec import SeqRecModel
    from recsys.training.module import param_groups

    config = tiny_config("sasrec", "mol", epochs=1)
    model = SeqRecModel(config.model_config(30))
    assert param_groups(model, 1e-2, 1.0) == [{"params": list(model.parameters())}]
    tables, rest = param_groups(model, 1e-2, 4.0)
    assert tables["lr"] == pytest.approx(4e-2) and "lr" not in rest
    embeddings = {id(m.weight) for m in model.modules() if isinstance(m, nn.Embedding)}
    assert len(embeddings) == 3  # items, positions, MoL user ids
    assert {id(p) for p in tables["params"]} == embeddings
    everything = [id(p) for p in tables["params"] + rest["params"]]
    assert sorted(everything) == sorted(id(p) for p in model.parameters())


def test_refit_trains_the_selected_epochs_on_train_and_valid(tmp_path: Path) -> None:
    data_dir = make_dataset(tmp_path / "data", num_users=64, num_items=30)
    run = tmp_path / "run"
    config = tiny_config("sasrec", "dot", epochs=3)
    train(config, data_dir, run, progress_bar=False)
    selected = rundir.read_run_info(run).extra["best_epoch"]

    metrics = refit(config, run, progress_bar=False)
    out = run / "refit"
    assert metrics["protocol"] == "refit" and metrics["epochs"] == selected + 1
    assert list(metrics["test"]) == list(METRIC_KEYS) and "valid" not in metrics
    assert json.loads((out / "metrics.json").read_text()) == metrics
    last = _last_ckpt(out)
    assert last["epoch"] == selected and last["global_step"] == 4 * (selected + 1)
    # A complete run directory: its model loads and scores test as reported.
    model, info = rundir.load_model(out)
    assert "refit" in info.extra["selected_on"]
    again = evaluate(model, load_dataset(data_dir), "test", info.max_len)
    assert again == pytest.approx(metrics["test"])
    # Its weights differ from the selected model's: it saw the validation targets.
    original, _ = rundir.load_model(run)
    name = "item_emb.weight"
    assert not torch.equal(model.state_dict()[name], original.state_dict()[name])
    # Its fitting time is in the checkpoint, so a resumed refit still reports all of it: all
    # but what follows the last save (fit_s is rounded to 0.1 s; on a loaded machine the
    # end of the fit after the save can take more than that).
    saved = last["callbacks"]["ElapsedTime"]["elapsed_s"]
    assert 0.5 * metrics["fit_s"] <= saved <= metrics["fit_s"] + 0.05
    # Re-running resumes from its last.ckpt: nothing left to train, same result.
    again_metrics = refit(config, run, progress_bar=False)
    assert again_metrics["test"] == pytest.approx(metrics["test"])
    assert again_metrics["fit_s"] >= metrics["fit_s"] > 0


def test_refit_needs_a_selected_epoch(tmp_path: Path) -> None:
    with pytest.raises(UserError, match="not a run directory"):
        refit(tiny_config(), tmp_path)


def test_num_nodes_reaches_the_trainer(tmp_path: Path) -> None:
    from recsys.training.run import _trainer

    config = tiny_config(epochs=1, accelerator="cpu", devices=1, strategy="ddp", num_nodes=2)
    trainer = _trainer(config, tmp_path, 1, False, [])
    assert trainer.num_nodes == 2


def test_dot_warmup_epochs_train_the_dot_product_then_mol(tmp_path: Path) -> None:
    """A real fit of a residual MoL: through the warm-up epochs its maps stay at zero (the
    model is the dot product), after them they learn."""
    data_dir = make_dataset(tmp_path / "data", num_users=64, num_items=30)
    residual = {
        "type": "mol",
        "p_q": 2,
        "p_x": 2,
        "d_p": 32,
        "user_id_components": 0,
        "mlp_hidden": 32,
        "gate_hidden": 16,
        "residual": True,
    }
    raw = tiny_config(epochs=2).to_dict()
    raw["model"]["similarity"] = residual
    raw["training"]["dot_warmup_epochs"] = 1
    config = config_from_dict(raw, "test")
    run = tmp_path / "run"
    train(config, data_dir, run, max_epochs=1, progress_bar=False)
    maps = ("similarity.query_mlp_out.weight", "similarity.item_proj.weight")
    first = _last_ckpt(run)["state_dict"]
    assert all(not first[f"model.{name}"].any() for name in maps)
    assert first["model.item_emb.weight"].abs().sum() > 0
    train(config, data_dir, run, resume=run, progress_bar=False)
    second = _last_ckpt(run)["state_dict"]
    assert all(second[f"model.{name}"].abs().sum() > 0 for name in maps)


def test_refit_for_a_given_epoch_count_needs_no_selected_run(tmp_path: Path) -> None:
    data_dir = make_dataset(tmp_path / "data", num_users=64, num_items=30)
    run = tmp_path / "elsewhere"  # no selection run here: the count was chosen in a result file
    config = tiny_config("sasrec", "dot", epochs=5)
    metrics = refit(config, run, data_dir, progress_bar=False, epochs=2, selected_in="r.json")
    assert metrics["epochs"] == 2 and _last_ckpt(run / "refit")["epoch"] == 1
    _, info = rundir.load_model(run / "refit")
    assert info.extra["selected_on"] == "refit: 2 epochs on train + valid (epoch chosen in r.json)"
    with pytest.raises(UserError, match="needs data_dir"):
        refit(config, tmp_path / "other", progress_bar=False, epochs=2)
    with pytest.raises(UserError, match="epochs must be >= 1, got 0"):
        refit(config, tmp_path / "other", data_dir, progress_bar=False, epochs=0)


@pytest.mark.parametrize("compile_mol", [False, True])
def test_training_compile_mol_reaches_the_mol_kernel(compile_mol: bool) -> None:
    from recsys.training.module import SeqRecModule

    config = tiny_config("hstu", "mol", compile_mol=compile_mol)
    module = SeqRecModule(config.model_config(40).to_dict(), config.to_dict()["training"])
    assert module.model.similarity.compile_kernel is compile_mol
