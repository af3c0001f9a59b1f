"""recsys.malloc: glibc's mallopt accepts the thresholds (on glibc Linux)."""

from __future__ import annotations

import os
import platform
import sys

import pytest

from recsys.malloc import malloc_settings, tune_malloc
from recsys.provenance import machine

glibc = sys.platform.startswith("linux") and platform.libc_ver()[0] == "glibc"


@pytest.mark.skipif(not glibc, reason="glibc only")
def test_thresholds_are_applied_and_repeatable():
    assert tune_malloc(mmap_threshold=16 << 20, trim_threshold=128 << 20)
    assert tune_malloc()  # a second call is harmless
    # what was applied last is what a result's provenance records
    applied = {"mmap_threshold": 32 << 20, "trim_threshold": 256 << 20}
    assert malloc_settings() == applied
    assert machine()["malloc"] == applied


def test_hugepage_tunable_is_added_once_and_respects_the_user():
    from recsys.malloc import HUGEPAGE_TUNABLE, OPT_IN_ENV, hugepage_tunables

    if not glibc:
        assert hugepage_tunables({OPT_IN_ENV: "1"}) is None
        return
    on = {OPT_IN_ENV: "1"}
    assert hugepage_tunables(on) == HUGEPAGE_TUNABLE
    other = "glibc.malloc.arena_max=2"
    assert hugepage_tunables({**on, "GLIBC_TUNABLES": other}) == f"{other}:{HUGEPAGE_TUNABLE}"
    user = {**on, "GLIBC_TUNABLES": "glibc.malloc.hugetlb=0"}
    assert hugepage_tunables(user) is None  # the user's own value is kept
    assert hugepage_tunables({}) is None  # opt-in
    assert hugepage_tunables({OPT_IN_ENV: "0"}) is None


@pytest.mark.skipif(not glibc, reason="glibc only")
def test_reexec_runs_the_same_command_once_with_the_tunable():
    import subprocess

    code = (
        "import os, sys; from recsys.malloc import reexec_with_hugepages; "
        "print('start', flush=True); reexec_with_hugepages(); "
        "print(os.environ['GLIBC_TUNABLES'], sys.argv[1:])"
    )
    env = {k: v for k, v in os.environ.items() if k != "GLIBC_TUNABLES"}
    env["RECSYS_HUGEPAGES"] = "1"
    out = subprocess.run(
        [sys.executable, "-c", code, "x", "--y"],
        env=env,
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    ).stdout.split("\n")
    assert out[:3] == ["start", "start", "glibc.malloc.hugetlb=1 ['x', '--y']"]
