"""glibc malloc settings for processes that run many small-batch model calls.

A recommendation batch allocates and frees the same few MiB-sized tensors (gathered item
components, the MoL gate's hidden layer) call after call. With glibc's default, dynamic
thresholds, many of those blocks are returned to the operating system when freed and
page-faulted back in on the next call, which can cost more than the batch's arithmetic
(benchmarks/results/recommend-ml-1m-cpu.json, "malloc_default" against "malloc_tuned").

`tune_malloc()` fixes both thresholds (which also turns the dynamic adjustment off):
blocks below 32 MiB come from the heap and freed memory is kept up to 256 MiB. The
serving replicas, the batch job's actors and the `recsys` commands call it at start-up;
under `recsys bench` each benchmark decides (bench_retrieval tunes, bench_recommend
measures both).
It changes only glibc's allocator, on Linux; elsewhere it does nothing.
"""

from __future__ import annotations

import ctypes
import sys

# mallopt parameters (glibc malloc.h).
_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3
MMAP_THRESHOLD = 32 * 1024**2
TRIM_THRESHOLD = 256 * 1024**2


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
    return bool(mallopt(_M_MMAP_THRESHOLD, mmap_threshold)) and bool(
        mallopt(_M_TRIM_THRESHOLD, trim_threshold)
    )
