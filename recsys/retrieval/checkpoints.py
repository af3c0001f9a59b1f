"""What `recsys export` reads: a trained model from a run directory, a weights file or a
Lightning checkpoint, plus the dataset directory and metrics the run recorded.

Accepted forms (`recsys.training.rundir` describes the run directory):
- RUN_DIR: best.safetensors + model_config.json (+ metrics.json);
- a .safetensors file with model_config.json beside it;
- a Lightning .ckpt (read with torch.load(weights_only=True), never unpickled); the run's
  model_config.json / metrics.json are looked up in its folder and the folder above
  (RUN_DIR/checkpoints/*.ckpt).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from safetensors import SafetensorError
from safetensors.torch import load_file

from recsys.errors import UserError
from recsys.models.seqrec import SeqRecModel
from recsys.training.rundir import (
    METRICS,
    MODEL_CONFIG,
    load_checkpoint_model,
    load_model,
    read_run_info,
)


@dataclass(frozen=True)
class CheckpointSource:
    """A trained model (eval mode, CPU), its dataset directory (None if unrecorded) and the
    metrics of its run (None if absent)."""

    model: SeqRecModel
    data_dir: Path | None
    metrics: dict[str, Any] | None


def read_checkpoint_source(checkpoint: str | Path) -> CheckpointSource:
    """Load the model behind `checkpoint` (any accepted form) with what its run recorded."""
    path = Path(checkpoint)
    if path.is_dir():
        model, info = load_model(path)
        return CheckpointSource(model, Path(info.data_dir), _read_metrics(path))
    if not path.is_file():
        raise UserError(f"checkpoint {path} does not exist")
    if path.suffix == ".safetensors":
        return _from_safetensors(path)
    if path.suffix == ".ckpt":
        return _from_lightning(path)
    raise UserError(
        f"checkpoint {path}: expected a run directory, a .safetensors file or a Lightning .ckpt"
    )


def _from_safetensors(path: Path) -> CheckpointSource:
    run_dir = path.parent
    if not (run_dir / MODEL_CONFIG).is_file():
        raise UserError(f"{path}: no {MODEL_CONFIG} beside it (expected {run_dir / MODEL_CONFIG})")
    info = read_run_info(run_dir)
    model = SeqRecModel(info.model)
    try:
        state = load_file(str(path))
    except (SafetensorError, OSError) as e:
        raise UserError(f"{path}: not a readable safetensors file ({e})") from e
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as e:
        raise UserError(f"{path}: weights do not match {run_dir / MODEL_CONFIG}: {e}") from e
    return CheckpointSource(model.eval(), Path(info.data_dir), _read_metrics(run_dir))


def _from_lightning(path: Path) -> CheckpointSource:
    model, _ = load_checkpoint_model(path)
    for run_dir in (path.parent, path.parent.parent):
        if (run_dir / MODEL_CONFIG).is_file():
            info = read_run_info(run_dir)
            return CheckpointSource(model, Path(info.data_dir), _read_metrics(run_dir))
    return CheckpointSource(model, None, None)


def _read_metrics(run_dir: Path) -> dict[str, Any] | None:
    path = run_dir / METRICS
    if not path.is_file():
        return None
    try:
        value = json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise UserError(f"{path}: not valid JSON ({e})") from e
    return value if isinstance(value, dict) else None
