"""The run configuration: one YAML file, sections that mirror typed dataclasses.

```yaml
extends: base/ml-1m-hstu.yaml # optional: a base file (path relative to this one)
name: ml-1m-hstu-mol          # default: the file's stem; run directory: runs/<name>
data:   {path: data/ml-1m, train_window: last}
model:                        # ModelSpec = ModelConfig without num_items (from the data)
  encoder:    {type: hstu, max_len: 200, dim: 50, num_blocks: 8, ...}
  similarity: {type: mol, p_q: 8, p_x: 4, d_p: 64, ...}
training: {epochs: 101, batch_size: 128, lr: 1.0e-3, negatives: {kind: per_position, num: 128}, ...}
```

`extends` composes files: the base (which may extend another; a cycle is an error naming
the files) is deep-merged under the file's own keys. Mappings merge key by key, anything
else (numbers, strings, lists, null) is replaced; a mapping whose `type` differs from the
base's (another encoder or similarity) replaces it whole; `name` is not inherited.

The merged mapping goes through one validator, `recsys.schema.build_dataclass`, straight
to typed objects (`RunConfig.model` is a `ModelSpec`): it rejects unknown keys and wrong
types and re-raises the dataclasses' own `__post_init__` errors prefixed with the file and
the dotted field path (`configs/x.yaml: model.similarity: MoLConfig.p_q must be ...`).
Everything is checked when the file is loaded, before any data is read or any model is
built. `RunConfig.to_dict()` is the merged, validated config (what run_config.yaml holds).

The model's maximum sequence length lives in the encoder (`model.encoder.max_len`); the
data module reads it from there, so it is stated once.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml

from recsys.errors import UserError
from recsys.metrics import METRIC_KEYS
from recsys.models.seqrec import ModelConfig, ModelSpec, NegativesConfig
from recsys.schema import TAG_KEY, build_dataclass, to_plain
from recsys.similarity.mol import MoLConfig

PRECISIONS = ("auto", "32-true", "bf16-mixed", "16-mixed", "bf16-true")
STRATEGIES = ("auto", "ddp", "ddp_spawn", "ddp_find_unused_parameters_true", "single_device")
ACCELERATORS = ("auto", "cpu", "gpu", "cuda", "mps")
LR_SCHEDULES = ("constant", "linear", "cosine")
BATCHINGS = ("random", "length")


@dataclass(frozen=True)
class DataConfig:
    """path: dataset directory (relative paths are taken from the current directory; the
    CLI's --data overrides it). train_window: which max_len windows of a long training
    sequence an epoch sees: `last` (the most recent events, the authors' choice; the same
    window every epoch), `random` (a fresh uniformly drawn window each epoch: more
    distinct targets on long histories, at the cost of training on older behaviour) or `all`
    (the whole sequence in consecutive windows: every target once per epoch, as RecBole's
    epochs do; more steps per epoch). See recsys.training.data.
    train_stride: with `all`, windows end every `train_stride` events and each supervises
    only its last `train_stride` targets, so every target but a user's earliest has at least
    max_len - train_stride events of context (null = max_len - 1: windows overlap by one).
    synthetic: the fields of a synthetic-data generator (`pipelines.synth.SynthConfig`), kept
    here as given: the library only reads dataset directories; the `recsys` CLI (`app.train`)
    checks these fields when it reads the config and, when `path` does not exist, generates
    the synthetic dataset there first (the demo needs no download)."""

    path: str | None = None
    train_window: Literal["last", "random", "all"] = "last"
    train_stride: int | None = None
    synthetic: dict[str, Any] | None = None

    def __post_init__(self) -> None:
        if self.train_window not in ("last", "random", "all"):
            raise ValueError(
                "DataConfig.train_window must be 'last', 'random' or 'all', "
                f"got {self.train_window!r}"
            )
        if self.train_stride is not None:
            if self.train_stride < 1:
                raise ValueError(f"DataConfig.train_stride must be >= 1, got {self.train_stride}")
            if self.train_window != "all":
                raise ValueError(
                    "DataConfig.train_stride applies to train_window 'all' only, "
                    f"got train_window {self.train_window!r}"
                )


@dataclass(frozen=True)
class EarlyStoppingConfig:
    """Stop when the validation `metric` has not improved for `patience` validations.
    The best checkpoint is selected on the same validation metric (never on test)."""

    metric: str = "ndcg@10"
    patience: int = 10

    def __post_init__(self) -> None:
        if self.metric not in METRIC_KEYS:
            raise ValueError(
                f"EarlyStoppingConfig.metric must be one of {list(METRIC_KEYS)}, "
                f"got {self.metric!r}"
            )
        if self.patience < 1:
            raise ValueError(f"EarlyStoppingConfig.patience must be >= 1, got {self.patience}")


@dataclass(frozen=True)
class TrainingConfig:
    """Optimisation and hardware. AdamW defaults are SPEC section 1's (no warm-up, no schedule).

    precision: `auto` = bf16-mixed on CUDA devices with bf16 support and on CPUs with native
    bf16 matmul (see recsys.training.run for the measured trade-off), fp32 otherwise.
    devices: an int >= 1 or "auto"; strategy: Lightning strategy name (ddp for multi-GPU);
    num_nodes: machines of a multi-node DDP run (each runs the same command under a cluster
    launcher that sets MASTER_ADDR / NODE_RANK, e.g. torchrun or SLURM).
    limit_train_batches: cap on training batches per epoch (smoke runs; None = all).
    eval_bf16: score validation/test in bf16 (faster; see recsys.evaluation on ties).
    val_users: the per-epoch validation (checkpoint selection, early stopping) ranks a fixed
    sample of this many validation users, drawn once from the seed (None = all). The selected
    checkpoint is then evaluated on every validation and test user, as always.
    lr_schedule: `constant` (SPEC), or `linear` / `cosine` decay to 0 over all the run's
    optimiser steps (`epochs` x steps per epoch); warmup_steps: linear warm-up from 0 first.
    embedding_lr_scale: the embedding tables (items, positions, MoL user ids) train at
    lr x this (1 = SPEC: one lr for everything). Large batches with few optimiser steps
    learn the item table too slowly at the lr the transformer tolerates (README: one epoch
    of SASRec in batches of 128 windows).
    dot_warmup_epochs: a residual MoL (`model.similarity.residual`) trains as the dot
    product it starts as for this many epochs, then as MoL (recsys.models.seqrec).
    dot_aux_weight: a MoL model's loss adds this weight times the full-catalog softmax loss
    of the plain dot product between the encoder output and the item table (a training
    signal for the encoder and items over every item, at the dot product's cost; MoL's own
    parameters get none of it). 0 = off (SPEC).
    batching: how training windows form batches. `random`: batch_size windows drawn at
    random. `length`: windows of about the same length together, with about the same number
    of targets in every batch and as many batches per epoch as `random` (so the same mean
    targets per step and the same schedule), but little padding for the encoder
    (recsys.training.data.LengthBatchSampler). It pays where the encoder bounds the step; on
    the ML-1M MoL recipe it did not (the MoL negatives do: epoch-ml-1m-cpu.json) and its
    first epoch validated lower than random batches' (curves-ml-1m-batching-pilot.json in
    benchmarks/results), so `random` stays the default.
    ema_decay: keep an exponential moving average of the weights with this decay per
    optimiser step; validation, checkpoint selection and the saved model use the average,
    and `valid_raw/<metric>` logs the raw weights beside it (recsys.training.averaging).
    None = off (SPEC).
    compile_mol: run the element-wise gate maths of MoL's sampled negatives through
    `torch.compile` (`recsys.similarity.mol_fused.gate_chain`): the same maths and random
    numbers, with fewer passes over memory (benchmarks/results/train-step-cpu.json). Needs
    a C++ compiler on CPU, and the first steps pay for compiling. False = eager.
    """

    epochs: int = 100
    batch_size: int = 128
    lr: float = 1e-3
    betas: tuple[float, float] = (0.9, 0.98)
    weight_decay: float = 1e-3
    negatives: NegativesConfig = field(default_factory=NegativesConfig)
    precision: str = "auto"
    early_stopping: EarlyStoppingConfig = field(default_factory=EarlyStoppingConfig)
    num_workers: int = 0
    accelerator: str = "auto"
    devices: int | str = "auto"
    strategy: str = "auto"
    num_nodes: int = 1
    seed: int = 42
    eval_batch_size: int = 256
    eval_bf16: bool = False
    val_every_n_epochs: int = 1
    val_users: int | None = None
    limit_train_batches: int | None = None
    log_every_n_steps: int = 20
    gradient_clip_val: float | None = None
    lr_schedule: str = "constant"
    warmup_steps: int = 0
    embedding_lr_scale: float = 1.0
    dot_warmup_epochs: int = 0
    dot_aux_weight: float = 0.0
    batching: str = "random"
    ema_decay: float | None = None
    compile_mol: bool = False

    def __post_init__(self) -> None:
        for name in ("epochs", "batch_size", "eval_batch_size", "val_every_n_epochs"):
            if getattr(self, name) < 1:
                raise ValueError(f"TrainingConfig.{name} must be >= 1, got {getattr(self, name)}")
        if not self.lr > 0:
            raise ValueError(f"TrainingConfig.lr must be > 0, got {self.lr}")
        if len(self.betas) != 2 or not all(0.0 <= b < 1.0 for b in self.betas):
            raise ValueError(
                f"TrainingConfig.betas must be two numbers in [0, 1), got {self.betas}"
            )
        if not self.embedding_lr_scale > 0:
            raise ValueError(
                f"TrainingConfig.embedding_lr_scale must be > 0, got {self.embedding_lr_scale}"
            )
        if self.weight_decay < 0:
            raise ValueError(f"TrainingConfig.weight_decay must be >= 0, got {self.weight_decay}")
        if self.num_workers < 0:
            raise ValueError(f"TrainingConfig.num_workers must be >= 0, got {self.num_workers}")
        if self.log_every_n_steps < 1:
            raise ValueError(
                f"TrainingConfig.log_every_n_steps must be >= 1, got {self.log_every_n_steps}"
            )
        if self.dot_warmup_epochs < 0:
            raise ValueError(
                f"TrainingConfig.dot_warmup_epochs must be >= 0, got {self.dot_warmup_epochs}"
            )
        if not self.dot_aux_weight >= 0:
            raise ValueError(
                f"TrainingConfig.dot_aux_weight must be >= 0, got {self.dot_aux_weight}"
            )
        if self.ema_decay is not None and not 0.0 <= self.ema_decay < 1.0:
            raise ValueError(
                f"TrainingConfig.ema_decay must be null or in [0, 1), got {self.ema_decay}"
            )
        if self.warmup_steps < 0:
            raise ValueError(f"TrainingConfig.warmup_steps must be >= 0, got {self.warmup_steps}")
        if self.val_users is not None and self.val_users < 1:
            raise ValueError(f"TrainingConfig.val_users must be None or >= 1, got {self.val_users}")
        _one_of("lr_schedule", self.lr_schedule, LR_SCHEDULES)
        _one_of("batching", self.batching, BATCHINGS)
        _one_of("precision", self.precision, PRECISIONS)
        _one_of("accelerator", self.accelerator, ACCELERATORS)
        _one_of("strategy", self.strategy, STRATEGIES)
        if isinstance(self.devices, str) and self.devices != "auto":
            raise ValueError(
                f"TrainingConfig.devices must be an int >= 1 or 'auto', got {self.devices!r}"
            )
        if (
            isinstance(self.num_nodes, bool)
            or not isinstance(self.num_nodes, int)
            or self.num_nodes < 1
        ):
            raise ValueError(
                f"TrainingConfig.num_nodes must be an integer >= 1, got {self.num_nodes!r}"
            )
        if isinstance(self.devices, int) and self.devices < 1:
            raise ValueError(f"TrainingConfig.devices must be >= 1, got {self.devices}")
        if self.limit_train_batches is not None and self.limit_train_batches < 1:
            raise ValueError(
                "TrainingConfig.limit_train_batches must be >= 1 or null, "
                f"got {self.limit_train_batches}"
            )
        if self.gradient_clip_val is not None and not self.gradient_clip_val > 0:
            raise ValueError(
                "TrainingConfig.gradient_clip_val must be > 0 or null, "
                f"got {self.gradient_clip_val}"
            )


def _one_of(name: str, value: str, allowed: tuple[str, ...]) -> None:
    if value not in allowed:
        raise ValueError(f"TrainingConfig.{name} must be one of {list(allowed)}, got {value!r}")


@dataclass(frozen=True)
class RunConfig:
    """A whole training run. `model` is the ModelSpec (encoder + similarity); the catalog
    size comes from the dataset: `model_config(num_items)` is the full ModelConfig."""

    name: str
    data: DataConfig
    model: ModelSpec
    training: TrainingConfig

    @property
    def max_len(self) -> int:
        """Longest history the encoder sees (model.encoder.max_len)."""
        return self.model.encoder.max_len

    def model_config(self, num_items: int) -> ModelConfig:
        """The typed ModelConfig for a catalog of `num_items` items."""
        return self.model.with_items(num_items)

    def to_dict(self) -> dict[str, Any]:
        """Plain-data form (YAML/JSON safe), loadable by `config_from_dict`."""
        return to_plain(self)


# ----------------------------------------------------------------------------- building


def config_from_dict(raw: Any, source: str = "<config>") -> RunConfig:
    """Validate a whole run config (a parsed YAML mapping); errors name `source` and the field."""
    if not isinstance(raw, dict):
        raise UserError(f"{source}: expected a mapping with data/model/training sections")
    allowed = ("name", "data", "model", "training")
    unknown = sorted(set(raw) - set(allowed))
    if unknown:
        raise UserError(f"{source}: unknown top-level key(s) {unknown} (allowed: {list(allowed)})")
    if "model" not in raw:
        raise UserError(f"{source}: missing the `model` section")
    if isinstance(raw["model"], dict) and "num_items" in raw["model"]:
        raise UserError(
            f"{source}: model: unknown key 'num_items' (num_items comes from the dataset)"
        )
    name = raw.get("name", Path(source).stem)
    if not isinstance(name, str) or not name:
        raise UserError(f"{source}: name must be a non-empty string, got {name!r}")
    try:
        data = build_dataclass(DataConfig, raw.get("data"), "data")
        training = build_dataclass(TrainingConfig, raw.get("training"), "training")
        model = build_dataclass(ModelSpec, raw["model"], "model")
        max_len = model.encoder.max_len
        if data.train_stride is not None and data.train_stride > max_len - 1:
            raise UserError(
                f"data.train_stride: must be <= model.encoder.max_len - 1 = {max_len - 1}, "
                f"got {data.train_stride}"
            )
        sim = model.similarity
        if training.dot_warmup_epochs and not (isinstance(sim, MoLConfig) and sim.residual):
            raise UserError(
                "training.dot_warmup_epochs: needs a residual MoL "
                "(model.similarity: {type: mol, residual: true, ...})"
            )
        if training.dot_aux_weight and not isinstance(sim, MoLConfig):
            raise UserError(
                "training.dot_aux_weight: needs a MoL similarity (model.similarity: "
                "{type: mol, ...}); a dot model trains that loss already"
            )
        if isinstance(sim, MoLConfig) and sim.residual and sim.d_p != model.encoder.dim:
            raise UserError(
                f"model.similarity.residual: needs d_p = model.encoder.dim "
                f"({model.encoder.dim}), got d_p {sim.d_p}"
            )
    except UserError as e:
        raise UserError(f"{source}: {e}") from e
    return RunConfig(name=name, data=data, model=model, training=training)


# ----------------------------------------------------------------------------- YAML files

EXTENDS_KEY = "extends"


def _read_yaml(path: Path) -> Any:
    try:
        return yaml.safe_load(path.read_text())
    except yaml.YAMLError as e:
        raise UserError(f"{path}: not valid YAML ({e})") from e


def merge_config(base: Any, own: Any) -> Any:
    """`own` over `base` (see the module docstring): mappings merge key by key, anything
    else in `own` replaces; a mapping with another `type` than the base's replaces it."""
    if not isinstance(base, dict) or not isinstance(own, dict):
        return own
    if TAG_KEY in base and TAG_KEY in own and base[TAG_KEY] != own[TAG_KEY]:
        return own
    merged = dict(base)
    for key, value in own.items():
        merged[key] = merge_config(base[key], value) if key in base else value
    return merged


def read_config_file(path: str | Path, _chain: tuple[Path, ...] = ()) -> tuple[Any, list[Path]]:
    """The YAML mapping of `path` with its `extends` chain merged in, and the files read
    (`path` first, then its base, the base's base, ...)."""
    p = Path(path)
    seen = [f.resolve() for f in _chain]
    if p.resolve() in seen:
        cycle = [*_chain[seen.index(p.resolve()) :], p]
        raise UserError(f"{_chain[0]}: `{EXTENDS_KEY}` cycle: {' -> '.join(map(str, cycle))}")
    raw = _read_yaml(p)
    if not isinstance(raw, dict) or EXTENDS_KEY not in raw:
        return raw, [p]
    raw = dict(raw)
    base_name = raw.pop(EXTENDS_KEY)
    if not isinstance(base_name, str) or not base_name:
        raise UserError(
            f"{p}: {EXTENDS_KEY}: expected a file name (relative to {p.parent}), got {base_name!r}"
        )
    base_path = Path(os.path.normpath(p.parent / base_name))  # no a/../ in messages
    if not base_path.is_file():
        raise UserError(f"{p}: {EXTENDS_KEY}: {base_path} does not exist")
    base, files = read_config_file(base_path, (*_chain, p))
    if not isinstance(base, dict):
        raise UserError(f"{base_path}: expected a mapping to extend (from {p}), got {base!r}")
    base = {k: v for k, v in base.items() if k != "name"}  # a name belongs to its own file
    return merge_config(base, raw), [p, *files]


def load_config(path: str | Path) -> RunConfig:
    """Read (resolving `extends`) and validate a YAML run config; the name defaults to the
    file's stem, and errors name the file and, when it extends others, its bases."""
    p = Path(path)
    if not p.is_file():
        raise UserError(f"config file {p} does not exist")
    raw, files = read_config_file(p)
    source = str(p)
    if len(files) > 1:
        source += f" (extends {' -> '.join(str(f) for f in files[1:])})"
    if isinstance(raw, dict):
        raw = {"name": p.stem, **raw}
    return config_from_dict(raw, source)
