"""What Linux's /proc/cpuinfo says of this CPU: its model name and flags (empty elsewhere)."""

from __future__ import annotations

import functools
from pathlib import Path


@functools.cache
def cpuinfo() -> tuple[str, frozenset[str]]:
    """(model name, flags) of the first CPU listed; ("", frozenset()) when unreadable."""
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return "", frozenset()
    model, flags = "", frozenset[str]()
    for line in text.splitlines():
        key, _, value = line.partition(":")
        if key.strip() == "model name" and not model:
            model = value.strip()
        elif key.strip() == "flags" and not flags:
            flags = frozenset(value.split())
    return model, flags
