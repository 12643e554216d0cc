"""Resident memory of the training process at the loop's stages, for the memory benchmark.

``note(stage)`` logs (at DEBUG, logger ``yolomodel.train.memory``) the process's resident set size now
and its peak so far (``getrusage``'s ``ru_maxrss``: pipeline threads included, they share the process).
``benchmarks/train_memory.py`` turns these lines into the per-part breakdown: the growth of the peak
between two stages is what the part running between them added.
"""
from __future__ import annotations

import ctypes
import ctypes.util
import logging
import resource

logger = logging.getLogger(__name__)
PREFIX = "memory after "


def rss_mb() -> float:
    """The resident set size now, in MB (from /proc; 0 where it is not available)."""
    try:
        with open("/proc/self/statm") as statm:
            pages = int(statm.read().split()[1])
    except (OSError, ValueError, IndexError):
        return 0.0
    return pages * resource.getpagesize() / 1e6


def peak_rss_mb() -> float:
    """The largest resident set size of this process so far, in MB (Linux reports KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 / 1e6


def return_freed_memory() -> None:
    """Give the heap memory freed so far back to the system (glibc's ``malloc_trim``; nothing elsewhere).

    Compiling the train step frees most of what it allocated, but the C allocator keeps the freed pages
    resident, and the graph's own memory then comes on top of them: trimmed, they are reused.
    """
    name = ctypes.util.find_library("c")
    try:
        libc = ctypes.CDLL(name) if name else None
        trim = getattr(libc, "malloc_trim", None)
    except OSError:
        trim = None
    if trim is not None:
        trim(0)


def enabled() -> bool:
    """Whether the stages are logged (the benchmark turns DEBUG on for this logger)."""
    return logger.isEnabledFor(logging.DEBUG)


def note(stage: str) -> None:
    """Log ``memory after <stage>: rss X MB, peak Y MB`` when DEBUG is on for this logger."""
    if logger.isEnabledFor(logging.DEBUG):
        logger.debug("%s%s: rss %.0f MB, peak %.0f MB", PREFIX, stage, rss_mb(), peak_rss_mb())
