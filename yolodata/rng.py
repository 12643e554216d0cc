"""Keyed randomness: every random decision is a pure function of (seed, epoch, position, purpose).

Never global state, worker identity or timing: a batch is then identical for any number of workers,
and a run resumed mid-epoch continues exactly.
"""
from __future__ import annotations

import zlib

import numpy as np

# Purposes are hashed to stable integers (crc32 is stable across processes, unlike hash()).


def purpose_key(purpose: str) -> int:
    return zlib.crc32(purpose.encode("utf-8"))


def keyed_rng(seed: int, *keys, purpose: str) -> np.random.Generator:
    """A Generator determined only by ``seed``, the integer ``keys`` and ``purpose``."""
    entropy = [int(seed) & 0xFFFFFFFF, int(seed) >> 32 & 0xFFFFFFFF, purpose_key(purpose)]
    entropy += [int(k) & 0xFFFFFFFFFFFFFFFF for k in keys]
    return np.random.Generator(np.random.PCG64(np.random.SeedSequence(entropy)))
