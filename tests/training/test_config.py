"""Run-config validation: every bad value fails at load time with the field named."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from recsys.errors import UserError
from recsys.models.seqrec import ModelConfig, ModelSpec, NegativesConfig
from recsys.training.config import config_from_dict, load_config
from recsys.training.run import resolve_precision, train

BASE: dict[str, Any] = {
    "name": "t",
    "data": {"path": "somewhere"},
    "model": {
        "encoder": {"type": "hstu", "max_len": 20, "dim": 16, "num_blocks": 1},
        "similarity": {"type": "mol", "p_q": 2, "p_x": 2, "d_p": 8},
    },
    "training": {"epochs": 2, "lr": "1e-3", "negatives": {"kind": "in_batch", "num": 8}},
}


def with_change(path: str, value: Any) -> dict[str, Any]:
    """BASE with the dotted `path` set to `value` (deep copy)."""
    import copy

    raw = copy.deepcopy(BASE)
    node = raw
    *parents, leaf = path.split(".")
    for key in parents:
        node = node.setdefault(key, {})
    node[leaf] = value
    return raw


def test_valid_config_builds() -> None:
    config = config_from_dict(BASE, "cfg.yaml")
    assert config.training.lr == pytest.approx(1e-3)  # YAML's "1e-3" string is a number
    assert config.training.negatives == NegativesConfig("in_batch", 8)
    assert config.max_len == 20
    assert isinstance(config.model, ModelSpec) and config.model.similarity.p_q == 2  # typed
    mc = config.model_config(num_items=77)
    assert isinstance(mc, ModelConfig) and mc.num_items == 77
    assert mc.similarity.p_q == 2
    assert config_from_dict(config.to_dict(), "again") == config  # round trip


@pytest.mark.parametrize(
    ("path", "value", "message"),
    [
        ("training.lrr", 0.1, r"training: unknown key 'lrr'"),
        ("model.similarity.p_q", 0, r"model\.similarity: MoLConfig\.p_q must be an integer >= 1"),
        ("model.encoder.input_dropout", -0.1, r"HSTUConfig\.input_dropout must be in \[0, 1\)"),
        ("model.encoder.colour", 1, r"model\.encoder: unknown key 'colour'"),
        ("model.encoder.type", "lstm", r"model\.encoder\.type: must be one of"),
        ("model.num_items", 5, r"num_items comes from the dataset"),
        ("training.negatives.kind", "hard", r"training\.negatives\.kind: must be one of"),
        ("training.negatives.num", 0, r"NegativesConfig\.num must be an integer >= 1"),
        ("training.precision", "fp8", r"TrainingConfig\.precision must be one of"),
        ("training.lr_schedule", "step", r"TrainingConfig\.lr_schedule must be one of"),
        ("training.warmup_steps", -1, r"TrainingConfig\.warmup_steps must be >= 0"),
        ("training.embedding_lr_scale", 0, r"TrainingConfig\.embedding_lr_scale must be > 0"),
        ("training.early_stopping.metric", "auc", r"EarlyStoppingConfig\.metric must be one of"),
        ("training.batch_size", 2.5, r"training\.batch_size: expected an integer"),
        ("training.betas", [0.9], r"training\.betas: expected 2 values"),
        ("training.devices", "many", r"TrainingConfig\.devices must be an int >= 1 or 'auto'"),
        ("data.train_window", "middle", r"data\.train_window: must be one of"),
        ("data.train_stride", 0, r"DataConfig\.train_stride must be >= 1"),
        ("data.train_stride", 5, r"applies to train_window 'all' only"),
        ("data.synthetic", {"num_users": 0}, r"data\.synthetic: num_users must be >= 1"),
        ("data.synthetic", {"users": 5}, r"data\.synthetic: unknown key 'users'"),
        ("extra", 1, r"unknown top-level key"),
    ],
)
def test_invalid_values_name_the_field(path: str, value: Any, message: str) -> None:
    with pytest.raises(UserError, match=message) as info:
        config_from_dict(with_change(path, value), "cfg.yaml")
    assert str(info.value).startswith("cfg.yaml: ") or "top-level" in str(info.value)


def test_load_config_errors_before_training(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("model:\n  encoder: {type: sasrec, dropout: -0.5}\n  similarity: {type: dot}\n")
    with pytest.raises(UserError, match=r"bad\.yaml: model\.encoder: SASRecConfig\.dropout"):
        load_config(bad)
    (tmp_path / "broken.yaml").write_text("model: [unclosed\n")
    with pytest.raises(UserError, match="not valid YAML"):
        load_config(tmp_path / "broken.yaml")
    with pytest.raises(UserError, match="does not exist"):
        load_config(tmp_path / "absent.yaml")


def test_train_rejects_unbuildable_config_before_reading_data(tmp_path: Path) -> None:
    # A valid config whose dataset does not exist: the data error comes before any fit.
    config = config_from_dict(BASE, "cfg.yaml")
    with pytest.raises(UserError, match="does not exist"):
        train(config, tmp_path / "absent", tmp_path / "run", progress_bar=False)


def test_precision_resolution() -> None:
    assert resolve_precision("32-true", "cpu") == "32-true"
    assert resolve_precision("auto", "cpu") in ("bf16-mixed", "32-true")


def test_train_stride_must_fit_the_encoder_window() -> None:
    raw = with_change("data.train_window", "all")
    raw["data"]["train_stride"] = 20  # max_len 20: at most 19
    with pytest.raises(UserError, match=r"data\.train_stride: must be <= .* = 19, got 20"):
        config_from_dict(raw, "cfg.yaml")
    raw["data"]["train_stride"] = 19
    assert config_from_dict(raw, "cfg.yaml").data.train_stride == 19
