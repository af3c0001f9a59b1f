"""Provenance stamped beside every benchmark figure: command, commit, machine and date."""

from __future__ import annotations

import datetime as dt
import os
import platform
import subprocess
import sys
from pathlib import Path
from typing import Any

from recsys.cpu import cpuinfo
from recsys.malloc import malloc_settings

REPO_ROOT = Path(__file__).resolve().parent.parent


def repo_relative(path: Path) -> str:
    """`path` as a result file records it: relative to the repository when inside it, else
    absolute."""
    path = path.resolve()
    return str(path.relative_to(REPO_ROOT)) if path.is_relative_to(REPO_ROOT) else str(path)


def git_commit() -> str:
    """The current commit (with `-dirty` when the tree has uncommitted changes), or 'unknown'."""
    try:
        sha = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=REPO_ROOT, capture_output=True, text=True, check=True
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=REPO_ROOT,
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    return sha + ("-dirty" if dirty else "")


def machine() -> dict[str, Any]:
    """A short description of the machine the figures were measured on."""
    info: dict[str, Any] = {
        "platform": platform.platform(),
        "processor": platform.processor() or platform.machine(),
        "cpu_count": os.cpu_count(),
    }
    info.update(_cpu_features())
    if os.environ.get("GLIBC_TUNABLES"):  # e.g. the huge-page heap of recsys.malloc
        info["glibc_tunables"] = os.environ["GLIBC_TUNABLES"]
    info["malloc"] = malloc_settings() or "glibc default"
    try:
        import torch

        info["torch"] = torch.__version__
        info["torch_threads"] = torch.get_num_threads()
        if torch.cuda.is_available():
            info["gpu"] = torch.cuda.get_device_name(0)
    except ImportError:
        pass
    return info


def _cpu_features() -> dict[str, Any]:
    """The CPU's model name and its bf16 matmul units (Linux; empty elsewhere). The bf16
    peak, and so every FLOP floor, depends on AMX being there, not only AVX-512 BF16."""
    model, flags = cpuinfo()
    units = [f for f in ("avx512_bf16", "amx_bf16") if f in flags]
    return {"cpu_model": model, "bf16_units": units} if model or flags else {}


def command_line(prefix: str, argv: list[str] | None) -> str:
    """The command a benchmark ran as: `prefix` and its arguments (argv, or this process's
    when argv is None; an empty list means no arguments, not "look at sys.argv")."""
    return " ".join([prefix, *(sys.argv[1:] if argv is None else argv)])


def provenance(command: str | None = None) -> dict[str, Any]:
    """Everything needed to say where a number came from."""
    return {
        "command": command if command is not None else " ".join(sys.argv),
        "commit": git_commit(),
        "machine": machine(),
        "python": sys.version.split()[0],
        "date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
    }
