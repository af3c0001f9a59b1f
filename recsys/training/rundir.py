"""The run directory: what `recsys train` leaves behind, readable without unpickling.

```
RUN_DIR/
  checkpoints/*.ckpt     Lightning checkpoints (best by the validation metric + last.ckpt)
  best.safetensors       SeqRecModel.state_dict() of the best checkpoint
  model_config.json      {"format_version", "model": ModelConfig.to_dict(), "data_dir",
                          "max_len", "name", "selected_on", "best_checkpoint", "best_epoch"}
  run_config.yaml        the full, validated run config
  metrics.json           {"valid": {...}, "test": {...}, "popularity": {...}}
                          (popularity on the test split; keys = recsys.metrics.METRIC_KEYS)
  logs/version_*/        CSVLogger (metrics.csv, hparams.yaml)
  tensorboard/version_*/ TensorBoardLogger event files
```

Readers (`load_model`, `load_checkpoint_model`) never unpickle: weights are safetensors,
Lightning checkpoints are read with `torch.load(weights_only=True)`. Importable without
Lightning.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save

from recsys.atomic import atomic_write_bytes, atomic_write_text
from recsys.errors import UserError
from recsys.models.seqrec import ModelConfig, SeqRecModel

RUN_FORMAT_VERSION = 1
WEIGHTS = "best.safetensors"
MODEL_CONFIG = "model_config.json"
METRICS = "metrics.json"
RUN_CONFIG = "run_config.yaml"
CHECKPOINTS = "checkpoints"


@dataclass(frozen=True)
class RunInfo:
    """model_config.json: what a consumer needs besides the weights."""

    model: ModelConfig
    data_dir: str
    max_len: int
    extra: dict[str, Any]


def write_weights(path: str | Path, model: torch.nn.Module) -> None:
    """state_dict -> safetensors file (atomic)."""
    tensors = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    atomic_write_bytes(path, save(tensors))


def write_model_config(
    run_dir: str | Path, model: ModelConfig, data_dir: str | Path, max_len: int, **extra: Any
) -> None:
    """Write model_config.json (the data dir is stored as an absolute path)."""
    payload = {
        "format_version": RUN_FORMAT_VERSION,
        "model": model.to_dict(),
        "data_dir": str(Path(data_dir).resolve()),
        "max_len": max_len,
        **extra,
    }
    atomic_write_text(Path(run_dir) / MODEL_CONFIG, json.dumps(payload, indent=2) + "\n")


def read_run_info(run_dir: str | Path) -> RunInfo:
    """Parse RUN_DIR/model_config.json with errors that name the file and the field."""
    path = Path(run_dir) / MODEL_CONFIG
    if not path.is_file():
        raise UserError(f"{run_dir} is not a run directory: {MODEL_CONFIG} is missing")
    try:
        raw = json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise UserError(f"{path}: not valid JSON ({e})") from e
    if raw.get("format_version") != RUN_FORMAT_VERSION:
        raise UserError(
            f"{path}: format_version {raw.get('format_version')!r} is not supported "
            f"(expected {RUN_FORMAT_VERSION})"
        )
    for key in ("model", "data_dir", "max_len"):
        if key not in raw:
            raise UserError(f"{path}: missing key {key!r}")
    try:
        model = ModelConfig.from_dict(raw["model"], "model")
    except (ValueError, TypeError) as e:
        raise UserError(f"{path}: {e}") from e
    extra = {k: v for k, v in raw.items() if k not in ("model", "data_dir", "max_len")}
    return RunInfo(model=model, data_dir=raw["data_dir"], max_len=int(raw["max_len"]), extra=extra)


def load_model(run_dir: str | Path) -> tuple[SeqRecModel, RunInfo]:
    """RUN_DIR -> (SeqRecModel with the best weights, in eval mode, on CPU; RunInfo)."""
    info = read_run_info(run_dir)
    weights = Path(run_dir) / WEIGHTS
    if not weights.is_file():
        raise UserError(f"{run_dir}: {WEIGHTS} is missing (did training finish?)")
    model = SeqRecModel(info.model)
    _load_state(model, load_file(str(weights)), weights)
    return model.eval(), info


def read_checkpoint(path: str | Path) -> dict[str, Any]:
    """A Lightning checkpoint as plain data (weights_only=True: no arbitrary unpickling)."""
    p = Path(path)
    if not p.is_file():
        raise UserError(f"checkpoint {p} does not exist")
    try:
        return torch.load(p, map_location="cpu", weights_only=True)
    except Exception as e:  # torch raises several unrelated types for a bad file
        raise UserError(f"{p}: not a readable checkpoint ({type(e).__name__}: {e})") from e


def load_checkpoint_model(path: str | Path) -> tuple[SeqRecModel, dict[str, Any]]:
    """A Lightning checkpoint of `SeqRecModule` -> (SeqRecModel in eval mode, hyper_parameters)."""
    ckpt = read_checkpoint(path)
    hparams = ckpt.get("hyper_parameters") or {}
    if "model_config" not in hparams or "state_dict" not in ckpt:
        raise UserError(f"{path}: not a recsys training checkpoint (no model_config/state_dict)")
    try:
        config = ModelConfig.from_dict(hparams["model_config"], "model_config")
    except (ValueError, TypeError) as e:
        raise UserError(f"{path}: {e}") from e
    model = SeqRecModel(config)
    state = {
        k.removeprefix("model."): v for k, v in ckpt["state_dict"].items() if k.startswith("model.")
    }
    _load_state(model, state, Path(path))
    return model.eval(), hparams


def _load_state(model: torch.nn.Module, state: dict[str, torch.Tensor], source: Path) -> None:
    result = model.load_state_dict(state, strict=False)
    if result.missing_keys or result.unexpected_keys:
        raise UserError(
            f"{source}: weights do not match the model config "
            f"(missing {result.missing_keys[:5]}, unexpected {result.unexpected_keys[:5]})"
        )
