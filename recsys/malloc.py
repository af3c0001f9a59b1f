"""glibc malloc settings for processes that run many small-batch model calls.

A recommendation batch allocates and frees the same few MiB-sized tensors (gathered item
components, the MoL gate's hidden layer) call after call. With glibc's default, dynamic
thresholds, many of those blocks are returned to the operating system when freed and
page-faulted back in on the next call, which can cost more than the batch's arithmetic
(benchmarks/results/recommend-ml-1m-cpu.json, "malloc_default" against "malloc_tuned").

`tune_malloc()` fixes both thresholds (which also turns the dynamic adjustment off):
blocks below 32 MiB come from the heap and freed memory is kept up to 256 MiB. The
serving replicas, the batch job's actors and the `recsys` commands call it at start-up;
under `recsys bench` each benchmark decides (bench_retrieval, bench_accuracy and
bench_train_step tune, bench_recommend and bench_train_step --malloc default measure the
default). `malloc_settings()` says what was applied, for the provenance of a result.
It changes only glibc's allocator, on Linux; elsewhere it does nothing.

The training benchmarks tune it as well, so that they time what `recsys train` runs (a
process that only allocates and frees one MoL chunk after another, as a micro-benchmark
does, gains much from it; a whole training step, whose other tensors keep the heap in use,
did not in a scratch A/B).

Training allocates and frees far larger tensors every step (the encoder's attention maps,
the MoL query MLP's activations, the chunks of the sampled softmax), and on a 4 KiB-page
heap the kernel time of faulting them in, and the TLB misses of reading them, are a sizeable
share of a CPU step. glibc (2.35+) can back its heap and its mmap'd blocks with transparent
huge pages (the `glibc.malloc.hugetlb=1` tunable), but it reads tunables only when a
process starts, so `reexec_with_hugepages()` re-executes the current command once with
the tunable in its environment. `recsys train` and `recsys bench accuracy` do so when
RECSYS_HUGEPAGES=1 is set. It is opt-in: an earlier recorded A/B of the training step
against the default heap showed no gain (git history of train-step-cpu.json).
"""

from __future__ import annotations

import ctypes
import os
import platform
import sys
from collections.abc import Mapping

# mallopt parameters (glibc malloc.h).
_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3
MMAP_THRESHOLD = 32 * 1024**2
TRIM_THRESHOLD = 256 * 1024**2
HUGEPAGE_TUNABLE = "glibc.malloc.hugetlb=1"
OPT_IN_ENV = "RECSYS_HUGEPAGES"
_REEXEC_MARKER = "RECSYS_HUGEPAGE_REEXEC"  # set in the re-executed process: never loop
_applied: dict[str, int] | None = None  # what tune_malloc set in this process


def tune_malloc(mmap_threshold: int = MMAP_THRESHOLD, trim_threshold: int = TRIM_THRESHOLD) -> bool:
    """Set glibc's mmap and trim thresholds for this process; True when both were applied
    (False off Linux or without glibc). Safe to call more than once."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        mallopt = ctypes.CDLL("libc.so.6").mallopt
    except (OSError, AttributeError):  # not glibc (e.g. musl)
        return False
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    mallopt.restype = ctypes.c_int
    ok = bool(mallopt(_M_MMAP_THRESHOLD, mmap_threshold)) and bool(
        mallopt(_M_TRIM_THRESHOLD, trim_threshold)
    )
    if ok:
        global _applied
        _applied = {"mmap_threshold": mmap_threshold, "trim_threshold": trim_threshold}
    return ok


def malloc_settings() -> dict[str, int] | None:
    """The thresholds `tune_malloc` set in this process, or None (glibc's defaults)."""
    return None if _applied is None else dict(_applied)


def hugepage_tunables(environ: Mapping[str, str]) -> str | None:
    """The GLIBC_TUNABLES value that adds glibc's huge-page heap to `environ`'s, or None
    when there is nothing to add (not asked for, already set, re-executed once, or not glibc)."""
    if not sys.platform.startswith("linux") or platform.libc_ver()[0] != "glibc":
        return None
    if environ.get(OPT_IN_ENV, "") in ("", "0") or environ.get(_REEXEC_MARKER):
        return None
    current = environ.get("GLIBC_TUNABLES", "")
    if any(t.startswith("glibc.malloc.hugetlb=") for t in current.split(":")):
        return None  # the user chose a value; keep it
    return f"{current}:{HUGEPAGE_TUNABLE}" if current else HUGEPAGE_TUNABLE


def reexec_with_hugepages() -> None:
    """Re-execute this process's command line with glibc's huge-page heap turned on.

    Returns (doing nothing) when `hugepage_tunables` has nothing to add; otherwise does not
    return. Call it before any work: the process image is replaced.
    """
    value = hugepage_tunables(os.environ)
    if value is None:
        return
    env = dict(os.environ, GLIBC_TUNABLES=value, **{_REEXEC_MARKER: "1"})
    sys.stdout.flush()
    sys.stderr.flush()
    os.execve(sys.executable, [sys.executable, *sys.orig_argv[1:]], env)
