"""Task functions for the engine tests (module level, so that spawned worker processes and Ray workers
can import them by name)."""
from __future__ import annotations

import os
import sys
from pathlib import Path


def square_failing_once(task):
    """``(value ** 2, pid)``; when ``marker`` is given and does not exist yet, create it and fail (a task
    that fails on its first try)."""
    value, marker = task
    if marker is not None and not os.path.exists(marker):
        Path(marker).write_text("failed once\n")
        raise RuntimeError(f"first attempt at {value} fails")
    return value * value, os.getpid()


def always_fails(task):
    raise RuntimeError(f"task {task} always fails")


def module_loaded(name):
    """``(whether module ``name`` was imported in this process before this task, pid)``."""
    return name in sys.modules, os.getpid()
