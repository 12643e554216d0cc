"""Failure injection for tests and benchmarks of the task engines (never used by a conversion itself).

``FailFirstRuns(function, marker_dir, failing_tasks)`` is a task function that fails on the first
run(s) for the chosen tasks and then behaves exactly like ``function``. Whether a run is "first" is
decided by creating a marker file exclusively in ``marker_dir``, so it holds across processes and
retries: the folder must be one every worker sees (a local temporary folder for a Ray on this
machine, shared storage on a cluster). A failure either raises ``InjectedFailure`` or ends the worker
process abruptly (``os._exit``), the way a crash or an out-of-memory kill would.
"""
from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable
from pathlib import Path

FAILURE_MODES = ("raise", "exit")
CRASH_EXIT_CODE = 71


class InjectedFailure(RuntimeError):
    """The failure ``FailFirstRuns`` raises."""


def claim_marker(path: Path) -> bool:
    """Create ``path`` if it does not exist yet; True for the one caller that created it."""
    try:
        os.close(os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY))
    except FileExistsError:
        return False
    return True


@dataclasses.dataclass(frozen=True)
class FailFirstRuns:
    """``function`` whose first ``failures_per_task`` runs for each task in ``failing_tasks`` fail.

    Tasks are matched by equality; the k-th failing task's markers are ``task{k}-failure{n}``.
    ``mode``: "raise" (``InjectedFailure``) or "exit" (the process ends with ``CRASH_EXIT_CODE``).
    """

    function: Callable
    marker_dir: str
    failing_tasks: tuple
    failures_per_task: int = 1
    mode: str = "raise"

    def __post_init__(self):
        if self.mode not in FAILURE_MODES:
            raise ValueError(f"mode must be one of {FAILURE_MODES}, got {self.mode!r}")
        if not Path(self.marker_dir).is_dir():
            raise ValueError(f"marker_dir {self.marker_dir!r} is not a folder; create it first")

    def __call__(self, task):
        if task in self.failing_tasks:
            position = self.failing_tasks.index(task)
            for attempt in range(self.failures_per_task):
                if claim_marker(Path(self.marker_dir) / f"task{position}-failure{attempt}"):
                    self.fail(task, attempt)
        return self.function(task)

    def fail(self, task, attempt: int) -> None:
        if self.mode == "exit":
            os._exit(CRASH_EXIT_CODE)
        raise InjectedFailure(f"injected failure {attempt + 1} of {self.failures_per_task} for task {task!r}")

    def num_failures(self) -> int:
        """How many failures have been injected so far (markers claimed)."""
        return sum(1 for _ in Path(self.marker_dir).glob("task*-failure*"))
