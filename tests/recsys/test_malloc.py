"""recsys.malloc: glibc's mallopt accepts the thresholds (on glibc Linux)."""

from __future__ import annotations

import platform
import sys

import pytest

from recsys.malloc import tune_malloc

glibc = sys.platform.startswith("linux") and platform.libc_ver()[0] == "glibc"


@pytest.mark.skipif(not glibc, reason="glibc only")
def test_thresholds_are_applied_and_repeatable():
    assert tune_malloc()
    assert tune_malloc()  # a second call is harmless
