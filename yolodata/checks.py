"""Argument checks shared by the library and the tools, each written once.

Each raises ValueError with a message that names the argument and says what to pass instead; the
tools print that message and exit with status 2.
"""
from __future__ import annotations

import operator
import os

import numpy as np

INPUT_MULTIPLE = 32        # the largest YOLOv5 stride: input heights and widths must be multiples of it
MAX_DEFAULT_WORKERS = 8    # more threads rarely pay for one pipeline or converter, whatever the core count


def check_int(name: str, value, *, minimum: int | None = None, maximum: int | None = None) -> int:
    """``value`` as a Python int when it is an integer (Python or numpy, not a bool) within the bounds."""
    if isinstance(value, (bool, np.bool_)):
        raise ValueError(f"{name} must be an integer, got the boolean {value!r}")
    try:
        number = operator.index(value)
    except TypeError:
        raise ValueError(f"{name} must be an integer, got {value!r} of type {type(value).__name__}") from None
    if minimum is not None and number < minimum:
        raise ValueError(f"{name} must be at least {minimum}, got {number}")
    if maximum is not None and number > maximum:
        raise ValueError(f"{name} must be at most {maximum}, got {number}")
    return number


def check_multiple_of(name: str, value, multiple: int = INPUT_MULTIPLE) -> int:
    """``value`` as an int when it is a positive multiple of ``multiple`` (an input size: 32)."""
    number = check_int(name, value, minimum=multiple)
    if number % multiple:
        lower, upper = number // multiple * multiple, -(-number // multiple) * multiple
        raise ValueError(f"{name} must be a multiple of {multiple} (the network's largest stride), got {value!r}; "
                         f"try {lower} or {upper}")
    return number


def cpu_count() -> int:
    return os.cpu_count() or 1


def resolve_num_workers(requested, name: str = "num_parallel_workers") -> int:
    """The number of worker threads to use: the one rule for pipelines, converter and verification.

    None means the CPU count, up to ``MAX_DEFAULT_WORKERS``; a requested number must be at least 1 and
    is lowered to the CPU count (MindSpore refuses more workers than CPUs, and more threads than cores
    only add switching).
    """
    cpus = cpu_count()
    if requested is None:
        return min(cpus, MAX_DEFAULT_WORKERS)
    return min(check_int(name, requested, minimum=1), cpus)
