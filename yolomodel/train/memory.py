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


M_ARENA_MAX = -8            # glibc's mallopt parameter number (malloc.h)
TRAINING_MALLOC_ARENAS = 2


def _libc():
    name = ctypes.util.find_library("c")
    try:
        return ctypes.CDLL(name) if name else None
    except OSError:
        return None


def limit_malloc_arenas(num_arenas: int = TRAINING_MALLOC_ARENAS) -> bool:
    """Let glibc's allocator keep at most ``num_arenas`` heaps (``mallopt(M_ARENA_MAX)``; nothing elsewhere).

    By default glibc gives threads that allocate at the same time their own heap, up to 8 per core, and
    each heap keeps its freed memory resident on its own. Training's threads (the graph compiler, the
    runtime's actors, the input pipeline's workers) would otherwise spread over many heaps: for the run
    of ``benchmarks/train_memory.py`` two heaps lower the peak by about 80 MB (mostly at compiling and
    validation), the effect of ``MALLOC_ARENA_MAX=2`` set from inside the process. Heaps already made stay.
    Returns whether the allocator took the setting.
    """
    libc = _libc()
    mallopt = getattr(libc, "mallopt", None)
    return bool(mallopt(M_ARENA_MAX, int(num_arenas))) if mallopt is not None else False


def return_freed_memory() -> None:
    """Give the heap memory freed so far back to the system (glibc's ``malloc_trim``; nothing elsewhere).

    Compiling the train step frees most of what it allocated, but the C allocator keeps the freed pages
    resident, and the graph's own memory then comes on top of them: trimmed, they are reused.
    """
    trim = getattr(_libc(), "malloc_trim", None)
    if trim is not None:
        trim(0)


def enabled() -> bool:
    """Whether the stages are logged (the benchmark turns DEBUG on for this logger)."""
    return logger.isEnabledFor(logging.DEBUG)


def note(stage: str) -> None:
    """Log ``memory after <stage>: rss X MB, peak Y MB`` when DEBUG is on for this logger."""
    if logger.isEnabledFor(logging.DEBUG):
        logger.debug("%s%s: rss %.0f MB, peak %.0f MB", PREFIX, stage, rss_mb(), peak_rss_mb())
