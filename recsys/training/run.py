"""`train(config)`: one Lightning run from a dataset directory to a run directory.

Steps: resolve and load the dataset (errors surface before any training), seed everything,
fit with ModelCheckpoint + EarlyStopping on a *validation* metric (never test), CSV and
TensorBoard loggers and a progress bar, then reload the best checkpoint and evaluate it on
the validation and test splits beside a popularity baseline. Outputs: see
`recsys.training.rundir`.

Precision `auto`: bf16-mixed on CUDA devices with bf16 and on CPUs with native bf16 matmul
(AVX512-BF16 / AMX); fp32 elsewhere. On such a CPU bf16 pays where large matmuls dominate
(MoL) and matters little for small models; quality after one epoch is the same in both
(benchmarks/results/sasrec-epoch-ml-1m-summary.json). Evaluation scores in fp32 unless
`eval_bf16` (bf16 scores create ties, see recsys.evaluation).

Multi-device: `devices: N` + `strategy: ddp` (or auto) runs Lightning's DDP; the data
module shards users itself (`use_distributed_sampler=False`), validation ranks are gathered,
and only global rank 0 runs the final evaluation and writes the outputs.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import lightning as L
import torch
import yaml
from lightning.pytorch.callbacks import (
    Callback,
    EarlyStopping,
    LearningRateMonitor,
    ModelCheckpoint,
)
from lightning.pytorch.loggers import CSVLogger, TensorBoardLogger

from recsys.dataset import SequenceDataset, load_dataset
from recsys.errors import UserError
from recsys.evaluation import (
    PopularityScorer,
    evaluate,
    popularity_warnings,
    training_item_counts,
    write_json,
)
from recsys.models.seqrec import ModelConfig, SeqRecModel
from recsys.schema import build_dataclass, to_plain
from recsys.training import rundir
from recsys.training.averaging import averaging_callbacks
from recsys.training.config import RunConfig, TrainingConfig
from recsys.training.data import SeqDataModule
from recsys.training.module import SeqRecModule

DEFAULT_RUNS = Path("runs")


def cpu_has_bf16() -> bool:
    """True when this CPU multiplies bf16 natively (oneDNN's check: AVX512-BF16 or AMX)."""
    try:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        return False


def resolve_precision(precision: str, accelerator: str) -> str:
    """`auto` -> bf16-mixed where bf16 pays (CUDA with bf16, bf16-capable CPU), else 32-true."""
    if precision != "auto":
        return precision
    use_cuda = accelerator in ("gpu", "cuda") or (
        accelerator == "auto" and torch.cuda.is_available()
    )
    if use_cuda:
        return "bf16-mixed" if torch.cuda.is_bf16_supported() else "32-true"
    return "bf16-mixed" if accelerator in ("auto", "cpu") and cpu_has_bf16() else "32-true"


def resolve_data_dir(config: RunConfig, data_dir: str | Path | None) -> Path:
    """--data beats the config's data.path. (Generating a missing synthetic dataset,
    `data.synthetic`, is the caller's: `app.train.prepare_data` does it for the CLI.)"""
    path = data_dir if data_dir is not None else config.data.path
    if path is None:
        raise UserError("no dataset: pass --data DIR or set data.path in the config")
    return Path(path)


def resolve_resume(resume: str | Path | None) -> Path | None:
    """A checkpoint file, or a run directory (-> its checkpoints/last.ckpt)."""
    if resume is None:
        return None
    p = Path(resume)
    if p.is_dir():
        p = p / rundir.CHECKPOINTS / "last.ckpt"
    if not p.is_file():
        raise UserError(f"cannot resume: checkpoint {p} does not exist")
    return p


def _normalised_hparams(hparams: dict[str, Any], where: Path) -> dict[str, Any]:
    """A module's hyper-parameters with every field filled in (a checkpoint written before
    a field existed holds its default)."""
    try:
        model = ModelConfig.from_dict(hparams["model_config"], "model_config")
        training = build_dataclass(TrainingConfig, hparams["training"], "training")
    except (KeyError, TypeError, ValueError) as e:
        raise UserError(f"{where}: not a recsys training checkpoint ({e})") from e
    return {"model": to_plain(model), "training": to_plain(training)}


# Where and how fast a run trains, not what it learns: free to change when resuming (say,
# on another machine).
RESUMABLE_CHANGES = frozenset(
    {
        "num_workers",
        "accelerator",
        "devices",
        "strategy",
        "num_nodes",
        "eval_batch_size",
        "log_every_n_steps",
        "compile_mol",
    }
)


def check_resume_config(ckpt_path: Path, module: SeqRecModule) -> None:
    """UserError unless the checkpoint was trained with the module's model and training
    configuration (hardware settings aside, RESUMABLE_CHANGES): a resumed run must
    continue the same run, not mix two."""
    theirs = _normalised_hparams(
        rundir.read_checkpoint(ckpt_path).get("hyper_parameters") or {}, ckpt_path
    )
    ours = _normalised_hparams(dict(module.hparams), ckpt_path)
    differ = [
        f"{section}.{key}"
        for section, fields in ours.items()
        for key in sorted(set(fields) | set(theirs[section]))
        if fields.get(key) != theirs[section].get(key)
        and not (section == "training" and key in RESUMABLE_CHANGES)
    ]
    if differ:
        raise UserError(
            f"cannot resume from {ckpt_path}: it was trained with another configuration "
            f"({', '.join(differ)} differ); resume with the same config or start a new run "
            "directory"
        )


def _modules(
    config: RunConfig, data_path: Path, data: SequenceDataset, refit: bool = False
) -> tuple[SeqRecModule, SeqDataModule]:
    """Seed, then the LightningModule and the DataModule of `config` on `data` (refit:
    training through the validation targets, see recsys.splits.refit_split)."""
    t = config.training
    L.seed_everything(t.seed, workers=True, verbose=False)
    module = SeqRecModule(
        config.model_config(data.num_items).to_dict(), config.to_dict()["training"]
    )
    datamodule = SeqDataModule(
        data_path,
        config.max_len,
        batch_size=t.batch_size,
        eval_batch_size=t.eval_batch_size,
        train_window=config.data.train_window,
        train_stride=config.data.train_stride,
        length_batches=t.batching == "length",
        seed=t.seed,
        num_workers=t.num_workers,
        data=data,
        val_users=None if refit else t.val_users,
        refit=refit,
    )
    return module, datamodule


def _last_checkpoint(run_dir: Path) -> ModelCheckpoint:
    """last.ckpt after every epoch, for resuming. Not `save_last=True` of a monitoring
    callback: Lightning 2.6 refreshes that copy only when a new best is saved, so it goes
    stale whenever the validation metric does not improve."""
    return ModelCheckpoint(
        dirpath=run_dir / rundir.CHECKPOINTS,
        filename="last",
        monitor=None,
        save_top_k=1,
        save_on_train_epoch_end=True,
        enable_version_counter=False,
    )


class ElapsedTime(Callback):
    """Logs `time/elapsed_s` at each validation: wall seconds of fitting so far, training and
    validation included, carried across `--resume` in the checkpoint (so a curve of a run that
    spans sessions reads against its total time)."""

    def __init__(self) -> None:
        self.before = 0.0  # seconds recorded by the runs this one resumes
        self.start: float | None = None

    def elapsed(self) -> float:
        return self.before + (time.perf_counter() - self.start if self.start is not None else 0.0)

    def on_fit_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.start = time.perf_counter()

    def on_validation_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if not trainer.sanity_checking:
            pl_module.log("time/elapsed_s", self.elapsed(), sync_dist=trainer.world_size > 1)

    def state_dict(self) -> dict[str, float]:
        return {"elapsed_s": self.elapsed()}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.before = float(state_dict.get("elapsed_s", 0.0))


def _trainer(
    config: RunConfig,
    run_dir: Path,
    max_epochs: int,
    progress_bar: bool,
    extra_callbacks: list[Callback],
) -> L.Trainer:
    t = config.training
    monitor = f"valid/{t.early_stopping.metric}"
    best = ModelCheckpoint(
        dirpath=run_dir / rundir.CHECKPOINTS,
        filename="epoch{epoch:03d}",
        monitor=monitor,
        mode="max",
        save_top_k=1,
        auto_insert_metric_name=False,
    )
    last = _last_checkpoint(run_dir)
    stopping = EarlyStopping(monitor=monitor, mode="max", patience=t.early_stopping.patience)
    return L.Trainer(
        max_epochs=max_epochs,
        callbacks=[
            best,
            stopping,
            last,
            ElapsedTime(),
            *_lr_log(t),
            *averaging_callbacks(t.ema_decay),
            *extra_callbacks,
        ],
        logger=[
            CSVLogger(run_dir, name="logs"),
            TensorBoardLogger(run_dir, name="tensorboard", default_hp_metric=False),
        ],
        default_root_dir=run_dir,
        check_val_every_n_epoch=t.val_every_n_epochs,
        enable_progress_bar=progress_bar,
        enable_model_summary=progress_bar,
        **_trainer_settings(t),
    )


def _trainer_settings(t: Any) -> dict[str, Any]:
    """The Trainer arguments a fit and its refit share: hardware, precision, steps."""
    return {
        "accelerator": t.accelerator,
        "devices": t.devices,
        "num_nodes": t.num_nodes,
        "strategy": t.strategy,
        "precision": resolve_precision(t.precision, t.accelerator),
        "log_every_n_steps": t.log_every_n_steps,
        "limit_train_batches": t.limit_train_batches,
        "gradient_clip_val": t.gradient_clip_val,
        "use_distributed_sampler": False,  # SeqDataModule shards users itself (deterministic)
    }


def _lr_log(t: Any) -> list[Callback]:
    """The learning rate in the logs ("lr-AdamW") when it changes during the run."""
    scheduled = t.lr_schedule != "constant" or t.warmup_steps > 0
    return [LearningRateMonitor(logging_interval="step")] if scheduled else []


def _best_checkpoint(trainer: L.Trainer) -> str:
    """Path of the best checkpoint by the validation metric ('' if none was saved)."""
    for cb in trainer.checkpoint_callbacks:
        if isinstance(cb, ModelCheckpoint) and cb.monitor is not None:
            return cb.best_model_path
    return ""


def final_metrics(
    model: SeqRecModel,
    data: SequenceDataset,
    max_len: int,
    batch_size: int,
    device: torch.device,
    bf16: bool = False,
) -> dict[str, Any]:
    """{"valid": model on valid, "test": model on test, "popularity": popularity on test,
    "popularity_valid": popularity on valid, "warnings": [...]}: a warning for each of
    hr@10 / ndcg@10 on which the model does not beat popularity on validation."""
    model = model.to(device).eval()
    popularity = PopularityScorer(training_item_counts(data)).to(device)
    valid = evaluate(model, data, "valid", max_len, batch_size, device, bf16)
    popularity_valid = evaluate(popularity, data, "valid", max_len, batch_size, device)
    return {
        "valid": valid,
        "test": evaluate(model, data, "test", max_len, batch_size, device, bf16),
        "popularity": evaluate(popularity, data, "test", max_len, batch_size, device),
        "popularity_valid": popularity_valid,
        "warnings": popularity_warnings(valid, popularity_valid),
    }


def train(
    config: RunConfig,
    data_dir: str | Path | None = None,
    out_dir: str | Path | None = None,
    resume: str | Path | None = None,
    max_epochs: int | None = None,
    progress_bar: bool = True,
    callbacks: list[Callback] | None = None,
) -> dict[str, Any]:
    """Train `config`, write the run directory, return metrics.json's content.

    data_dir overrides config.data.path; out_dir defaults to runs/<config.name>; resume is a
    checkpoint (or a run dir, meaning its last.ckpt) to continue from, at the same global
    step and epoch; max_epochs overrides training.epochs; callbacks are added to the
    trainer's (e.g. timers in benchmarks). Non-zero DDP ranks return {}.
    """
    t = config.training
    data_path = resolve_data_dir(config, data_dir)
    data = load_dataset(data_path)
    run_dir = Path(out_dir) if out_dir is not None else DEFAULT_RUNS / config.name
    ckpt_path = resolve_resume(resume)
    existing = run_dir / rundir.CHECKPOINTS
    if ckpt_path is None and existing.is_dir() and any(existing.glob("*.ckpt")):
        raise UserError(
            f"{run_dir} already holds checkpoints: resume with --resume {run_dir} "
            "or choose another --out"
        )
    module, datamodule = _modules(config, data_path, data)
    if ckpt_path is not None:
        check_resume_config(ckpt_path, module)
    trainer = _trainer(config, run_dir, max_epochs or t.epochs, progress_bar, callbacks or [])
    if trainer.is_global_zero:
        run_dir.mkdir(parents=True, exist_ok=True)
        rundir.atomic_write_text(
            run_dir / rundir.RUN_CONFIG, yaml.safe_dump(config.to_dict(), sort_keys=False)
        )
    trainer.fit(module, datamodule=datamodule, ckpt_path=ckpt_path, weights_only=True)
    if not trainer.is_global_zero:
        return {}
    return _finish(trainer, module, config, data, data_path, run_dir)


def _finish(
    trainer: L.Trainer,
    module: SeqRecModule,
    config: RunConfig,
    data: SequenceDataset,
    data_path: Path,
    run_dir: Path,
) -> dict[str, Any]:
    """Reload the best checkpoint, write weights + config, evaluate, write metrics.json."""
    best = _best_checkpoint(trainer)
    model = module.model
    best_epoch: Any = None
    if best:
        model, _ = rundir.load_checkpoint_model(best)
        best_epoch = rundir.read_checkpoint(best).get("epoch")
    rundir.write_weights(run_dir / rundir.WEIGHTS, model)
    rundir.write_model_config(
        run_dir,
        module.model_config,
        data_path,
        config.max_len,
        name=config.name,
        selected_on=f"valid/{config.training.early_stopping.metric}",
        best_checkpoint=str(Path(best).resolve()) if best else None,
        best_epoch=best_epoch,
    )
    device = trainer.strategy.root_device
    if device.type != "cpu":
        device = torch.device(device.type, device.index or 0)
    metrics = final_metrics(
        model,
        data,
        config.max_len,
        config.training.eval_batch_size,
        device,
        config.training.eval_bf16,
    )
    write_json(run_dir / rundir.METRICS, metrics)
    return metrics


REFIT_DIR = "refit"


def refit(
    config: RunConfig,
    run_dir: str | Path,
    data_dir: str | Path | None = None,
    progress_bar: bool = True,
    epochs: int | None = None,
    selected_in: str | None = None,
) -> dict[str, Any]:
    """The refit protocol, after `train` selected an epoch on validation: train the same
    config from scratch on the training *and* validation targets
    (`recsys.splits.refit_split`) for the selected number of epochs, without validation,
    then evaluate test once. Writes a complete run directory at RUN_DIR/refit (exportable
    like any run; resumes from its last.ckpt when re-run) and returns its metrics.json:
    {"protocol": "refit", "epochs", "test", "popularity", "warnings"} (no validation
    figures: validation is training data here).

    The epoch count comes from RUN_DIR's model_config.json, or, when `epochs` is given,
    from a selection recorded elsewhere (`selected_in` names it, for example a committed
    benchmark result): RUN_DIR then needs no selected run, and `data_dir` is required."""
    run_dir = Path(run_dir)
    if epochs is None:
        info = rundir.read_run_info(run_dir)
        best_epoch = info.extra.get("best_epoch")
        if best_epoch is None:
            raise UserError(
                f"{run_dir}: no selected epoch in {rundir.MODEL_CONFIG}; nothing to refit"
            )
        epochs = int(best_epoch) + 1
        selected_in = str(run_dir)
        data_dir = data_dir if data_dir is not None else info.data_dir  # the run's data
    elif epochs < 1:
        raise UserError(f"refit epochs must be >= 1, got {epochs}")
    elif data_dir is None:
        raise UserError("a refit with a given epoch count needs data_dir")
    out = run_dir / REFIT_DIR
    t = config.training
    data_path = Path(data_dir)
    data = load_dataset(data_path)
    last = out / rundir.CHECKPOINTS / "last.ckpt"
    module, datamodule = _modules(config, data_path, data, refit=True)
    if last.is_file():
        check_resume_config(last, module)
    keep = _last_checkpoint(out)
    clock = ElapsedTime()
    trainer = L.Trainer(
        max_epochs=epochs,
        callbacks=[keep, clock, *_lr_log(t), *averaging_callbacks(t.ema_decay, log_raw=False)],
        logger=[CSVLogger(out, name="logs")],
        default_root_dir=out,
        limit_val_batches=0,  # no selection: the epoch count comes from the validated run
        num_sanity_val_steps=0,
        enable_progress_bar=progress_bar,
        enable_model_summary=False,
        **_trainer_settings(t),
    )
    if trainer.is_global_zero:
        out.mkdir(parents=True, exist_ok=True)
        rundir.atomic_write_text(
            out / rundir.RUN_CONFIG, yaml.safe_dump(config.to_dict(), sort_keys=False)
        )
    trainer.fit(
        module,
        datamodule=datamodule,
        ckpt_path=last if last.is_file() else None,
        weights_only=True,
    )
    if not trainer.is_global_zero:
        return {}
    model = module.model
    rundir.write_weights(out / rundir.WEIGHTS, model)
    rundir.write_model_config(
        out,
        module.model_config,
        data_path,
        config.max_len,
        name=f"{config.name}-refit",
        selected_on=f"refit: {epochs} epochs on train + valid (epoch chosen in {selected_in})",
        best_checkpoint=str(last.resolve()),
        best_epoch=epochs - 1,
    )
    device = trainer.strategy.root_device
    if device.type != "cpu":
        device = torch.device(device.type, device.index or 0)
    model = model.to(device).eval()
    popularity = PopularityScorer(training_item_counts(data)).to(device)
    b = t.eval_batch_size
    metrics = {
        "protocol": "refit",
        "epochs": epochs,
        "fit_s": round(clock.elapsed(), 1),  # all its fitting, across --resume
        "test": evaluate(model, data, "test", config.max_len, b, device, t.eval_bf16),
        "popularity": evaluate(popularity, data, "test", config.max_len, b, device),
        "warnings": [],
    }
    write_json(out / rundir.METRICS, metrics)
    return metrics


__all__ = ["final_metrics", "refit", "resolve_precision", "train"]
