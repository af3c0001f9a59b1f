"""Lightning DDP on CPU: `recsys train` with `devices: 2, strategy: ddp` (two gloo processes,
Lightning's default subprocess launcher) trains, shards the users between the ranks, and
writes the same run directory and metrics.json format as a single-process run."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml
from dataset_helpers import make_dataset

from recsys.metrics import METRIC_KEYS
from recsys.training.run import train

from .test_train import tiny_config

RECSYS = Path(sys.executable).with_name("recsys")


def _processes_mentioning(text: str) -> set[int]:
    found = set()
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit() and int(entry.name) != os.getpid():
            try:
                if text in (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode():
                    found.add(int(entry.name))
            except OSError:
                continue
    return found


def _global_step(run: Path) -> int:
    ckpt = torch.load(run / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)
    return int(ckpt["global_step"])


@pytest.mark.slow
def test_two_process_ddp_on_cpu_trains_with_the_same_outputs(tmp_path: Path) -> None:
    data = make_dataset(tmp_path / "data", num_users=64, num_items=30)
    ddp_config = tiny_config(
        "sasrec", "dot", epochs=2, accelerator="cpu", devices=2, strategy="ddp"
    )
    config_path = tmp_path / "ddp.yaml"
    config_path.write_text(yaml.safe_dump(ddp_config.to_dict(), sort_keys=False))
    ddp_run = tmp_path / "ddp"
    env = {
        **os.environ,
        "OMP_NUM_THREADS": "1",
        "GLOO_SOCKET_IFNAME": "lo",  # gloo's traffic on loopback (MASTER_ADDR is 127.0.0.1)
    }
    cmd = [str(RECSYS), "train", "--config", str(config_path), "--data", str(data)]
    done = subprocess.run(
        [*cmd, "--out", str(ddp_run), "--no-progress"],
        env=env,
        capture_output=True,
        text=True,
        timeout=180,
    )
    log = done.stdout + done.stderr
    assert done.returncode == 0, log[-4000:]
    assert "distributed_backend=gloo" in log
    assert "GLOBAL_RANK: 0, MEMBER: 1/2" in log and "GLOBAL_RANK: 1, MEMBER: 2/2" in log
    assert not _processes_mentioning(str(ddp_run)), "a DDP rank outlived the command"

    single_run = tmp_path / "single"
    single = train(
        tiny_config("sasrec", "dot", epochs=2, accelerator="cpu", devices=1),
        data,
        single_run,
        progress_bar=False,
    )
    ddp = json.loads((ddp_run / "metrics.json").read_text())
    assert json.loads((single_run / "metrics.json").read_text()) == single

    # The same metrics.json format: the same sections, each with the same metrics in order.
    assert (
        list(ddp) == list(single) == ["valid", "test", "popularity", "popularity_valid", "warnings"]
    )
    for split in ("valid", "test", "popularity", "popularity_valid"):
        assert list(ddp[split]) == list(single[split]) == list(METRIC_KEYS)
        assert all(0.0 <= v <= 1.0 for v in ddp[split].values()), ddp[split]
    assert isinstance(ddp["warnings"], list)
    # Rank 0 evaluates the full splits after training: the baseline is the same.
    assert ddp["popularity"] == single["popularity"]
    assert ddp["popularity_valid"] == single["popularity_valid"]
    # The same run directory, written once (by rank 0).
    for name in ("best.safetensors", "model_config.json", "run_config.yaml", "metrics.json"):
        assert (ddp_run / name).is_file(), name
    assert len(list((ddp_run / "logs").glob("version_*/metrics.csv"))) == 1
    # Two processes really split the work: each rank trains on half of the users per epoch.
    assert _global_step(single_run) == 2 * 4  # 64 users / batch 16, 2 epochs
    assert _global_step(ddp_run) == _global_step(single_run) // 2
