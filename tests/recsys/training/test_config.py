"""Run-config validation: every bad value fails at load time with the field named."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from recsys.errors import UserError
from recsys.models.seqrec import ModelConfig, ModelSpec, NegativesConfig
from recsys.similarity.dot import DotConfig
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
        ("training.batching", "sorted", r"TrainingConfig\.batching must be one of"),
        ("training.warmup_steps", -1, r"TrainingConfig\.warmup_steps must be >= 0"),
        ("training.embedding_lr_scale", 0, r"TrainingConfig\.embedding_lr_scale must be > 0"),
        ("training.early_stopping.metric", "auc", r"EarlyStoppingConfig\.metric must be one of"),
        ("training.batch_size", 2.5, r"training\.batch_size: expected an integer"),
        ("training.betas", [0.9], r"training\.betas: expected 2 values"),
        ("training.devices", "many", r"TrainingConfig\.devices must be an int >= 1 or 'auto'"),
        ("training.num_nodes", 0, r"TrainingConfig\.num_nodes must be an integer >= 1"),
        ("data.train_window", "middle", r"data\.train_window: must be one of"),
        ("data.train_stride", 0, r"DataConfig\.train_stride must be >= 1"),
        ("data.train_stride", 5, r"applies to train_window 'all' only"),
        ("data.synthetic", 5, r"data\.synthetic: expected"),  # fields: app.train checks them
        ("extra", 1, r"unknown top-level key"),
        ("training.dot_warmup_epochs", -1, r"TrainingConfig\.dot_warmup_epochs must be >= 0"),
        ("training.dot_warmup_epochs", 2, r"training\.dot_warmup_epochs: needs a residual MoL"),
        ("model.similarity.residual", "yes", r"model\.similarity\.residual: expected"),
        ("training.dot_aux_weight", -0.5, r"TrainingConfig\.dot_aux_weight must be >= 0"),
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


def _write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


BASE_YAML = """
data: {path: data/x, train_window: all}
model:
  encoder: {type: sasrec, max_len: 20, dim: 16, num_heads: 2}
  similarity: {type: mol, p_q: 2, p_x: 2, d_p: 8}
training: {epochs: 3, betas: [0.8, 0.9], negatives: {kind: shared, num: 8}}
"""


def test_extends_deep_merges_the_base_under_the_file(tmp_path: Path) -> None:
    _write(tmp_path / "base" / "root.yaml", "name: root\n" + BASE_YAML)
    # relative to the including file; chains; the file wins; lists are replaced
    _write(tmp_path / "base" / "mid.yaml", "extends: root.yaml\ntraining: {epochs: 5}\n")
    child = _write(
        tmp_path / "child.yaml",
        "extends: base/mid.yaml\n"
        "model: {encoder: {dim: 32}, similarity: {d_p: 4}}\n"
        "training: {betas: [0.5, 0.6], negatives: {num: 4}}\n",
    )
    config = load_config(child)
    assert config.name == "child"  # a base's name is not inherited
    assert config.data.path == "data/x" and config.data.train_window == "all"
    assert config.model.encoder.dim == 32 and config.model.encoder.num_heads == 2
    assert config.model.similarity.d_p == 4 and config.model.similarity.p_q == 2
    assert config.training.epochs == 5 and config.training.betas == (0.5, 0.6)
    assert config.training.negatives == NegativesConfig("shared", 4)
    assert "extends" not in config.to_dict()  # run_config.yaml holds the merged config
    assert config_from_dict(config.to_dict(), "again") == config


def test_extends_another_type_replaces_the_mapping(tmp_path: Path) -> None:
    _write(tmp_path / "base.yaml", BASE_YAML)
    child = _write(
        tmp_path / "dot.yaml",
        "extends: base.yaml\nmodel: {similarity: {type: dot, tau: 0.1}}\ndata: {path: null}\n",
    )
    config = load_config(child)
    assert config.model.similarity == DotConfig(tau=0.1)  # not merged with MoL's fields
    assert config.data.path is None  # null replaces too


def test_extends_errors_name_the_files(tmp_path: Path) -> None:
    a = _write(tmp_path / "a.yaml", "extends: sub/b.yaml\n")
    _write(tmp_path / "sub" / "b.yaml", "extends: ../a.yaml\n")
    with pytest.raises(UserError, match=r"`extends` cycle: .*a\.yaml -> .*b\.yaml -> .*a\.yaml"):
        load_config(a)
    _write(tmp_path / "self.yaml", "extends: self.yaml\n")
    with pytest.raises(UserError, match=r"cycle"):
        load_config(tmp_path / "self.yaml")
    _write(tmp_path / "gone.yaml", "extends: nowhere.yaml\n")
    with pytest.raises(UserError, match=r"gone\.yaml: extends: .*nowhere\.yaml does not exist"):
        load_config(tmp_path / "gone.yaml")
    _write(tmp_path / "list.yaml", "extends: [a.yaml]\n")
    with pytest.raises(UserError, match=r"list\.yaml: extends: expected a file name"):
        load_config(tmp_path / "list.yaml")
    # a bad value inherited from a base: the message names the file and its base
    _write(tmp_path / "bad-base.yaml", BASE_YAML.replace("p_q: 2", "p_q: 0"))
    child = _write(tmp_path / "child.yaml", "extends: bad-base.yaml\n")
    with pytest.raises(
        UserError, match=r"child\.yaml \(extends .*bad-base\.yaml\): model\.similarity: MoLConfig"
    ):
        load_config(child)


def test_residual_mol_needs_components_of_the_model_dim() -> None:
    raw = with_change("model.similarity.residual", True)
    raw["model"]["similarity"]["user_id_components"] = 0
    with pytest.raises(UserError, match=r"residual: needs d_p = model\.encoder\.dim \(16\)"):
        config_from_dict(raw, "cfg.yaml")
    raw["model"]["similarity"]["d_p"] = 16
    raw["training"]["dot_warmup_epochs"] = 1
    config = config_from_dict(raw, "cfg.yaml")
    assert config.model.similarity.residual and config.training.dot_warmup_epochs == 1


def test_dot_aux_weight_needs_a_mol_similarity() -> None:
    raw = with_change("training.dot_aux_weight", 0.5)
    assert config_from_dict(raw, "cfg.yaml").training.dot_aux_weight == 0.5
    raw["model"]["similarity"] = {"type": "dot"}
    with pytest.raises(UserError, match=r"cfg\.yaml: training\.dot_aux_weight: needs a MoL"):
        config_from_dict(raw, "cfg.yaml")
