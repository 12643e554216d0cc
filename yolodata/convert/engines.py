"""Where the work units run: ``open_engine(...)`` started early, ``.run(function, tasks)`` later; or
``run_tasks(function, tasks, engine=...)`` for both at once.

A conversion opens its engine before it plans the units (reading the json, spilling) and runs the
units on it afterwards: the engine's fixed start-up cost (processes started, Ray joined, and the
module of ``warm_module`` -- the unit conversion, MindSpore with it -- imported in every worker)
overlaps the planning instead of following it. An engine is a context manager, closed on every path
(results, errors, Ctrl-C); warming only imports modules, so it never changes a result.

``function`` is a module-level (picklable) callable taking one picklable task and returning a
picklable result. It must be idempotent: after a failure it may run again on the same task (a unit
conversion writes under a temporary name and publishes by rename, so a rerun starts clean).

Engines:
- ``"local"`` (default, no dependency beyond the standard library): a process pool of
  ``num_workers`` processes started with the ``spawn`` method (MindSpore is imported in the parent,
  and a forked copy of its threads is unsafe). One worker, or one task, runs in the calling process.
- ``"ray"``: Ray Core tasks (``convert.ray_engine.run_tasks_ray``; ``pip install yolodata[ray]``),
  on the local machine or the cluster in ``RAY_ADDRESS``.

``on_result(index, result)`` runs in the calling process in completion order (progress, checks; an
exception it raises stops the run). Results are returned in task order, so the caller's output never
depends on timing. A task that raises is retried up to ``max_retries`` times, then its error stops
the run.
"""
from __future__ import annotations

import concurrent.futures
import importlib
import multiprocessing
from typing import Callable, Sequence

from ..checks import check_int

ENGINES = ("local", "ray")
DEFAULT_MAX_RETRIES = 2


class EngineError(RuntimeError):
    """The engine cannot run (not installed, unknown name) or a task kept failing."""


def warm_up(module_name: str | None) -> None:
    """What a worker runs before its first task: import ``module_name`` (None: nothing), so that the
    task finds it loaded. Never raises: a module that cannot be imported fails the task itself, with
    the task's own error and retries."""
    if module_name:
        try:
            importlib.import_module(module_name)
        except Exception:  # noqa: BLE001 - reported by the first task that needs the module
            pass


def open_engine(engine: str = "local", num_workers: int | None = 1, *, warm_module: str | None = None,
                max_retries: int = DEFAULT_MAX_RETRIES, memory_per_task_bytes: int | None = None):
    """A started engine (``LocalEngine`` or ``ray_engine.RayEngine``) with ``num_workers`` workers,
    warming them with ``warm_module`` in the background; use it as a context manager. ``num_workers``
    None: one local worker, or as many Ray tasks at once as the cluster has CPUs.
    ``memory_per_task_bytes`` is the memory a task asks for (Ray's scheduler; ignored locally)."""
    if num_workers is not None:
        check_int("num_workers", num_workers, minimum=1)
    check_int("max_retries", max_retries, minimum=0)
    if engine == "ray":
        try:
            from . import ray_engine
        except ImportError as error:
            raise EngineError(f"--engine ray needs Ray and yolodata.convert.ray_engine ({error}); install it with "
                              f"`pip install yolodata[ray]`, or use --engine local") from error
        return ray_engine.RayEngine(num_workers, warm_module=warm_module, max_retries=max_retries,
                                    memory_per_task_bytes=memory_per_task_bytes)
    if engine != "local":
        raise ValueError(f"engine must be one of {ENGINES}, got {engine!r}")
    return LocalEngine(num_workers or 1, warm_module=warm_module, max_retries=max_retries)


def run_tasks(function: Callable, tasks: Sequence, *, engine: str = "local", num_workers: int | None = 1,
              on_result: Callable[[int, object], None] | None = None,
              max_retries: int = DEFAULT_MAX_RETRIES, memory_per_task_bytes: int | None = None) -> list:
    """``[function(task) for task in tasks]`` on ``engine`` with ``num_workers`` workers (see the module
    docstring and ``open_engine``), the engine opened and closed around the run."""
    with open_engine(engine, num_workers, max_retries=max_retries,
                     memory_per_task_bytes=memory_per_task_bytes) as started:
        return started.run(function, tasks, on_result=on_result)


class LocalEngine:
    """A spawn process pool of ``num_workers`` processes; with ``warm_module`` they are all started
    when the engine is made, each importing the module first (the pool's initializer). One worker, or
    one task, runs in the calling process instead (no start-up cost)."""

    def __init__(self, num_workers: int, *, warm_module: str | None = None,
                 max_retries: int = DEFAULT_MAX_RETRIES):
        self.num_workers, self.max_retries, self.warm_module = num_workers, max_retries, warm_module
        self._executor = None
        if num_workers > 1:
            self._executor = self._new_executor()
            for _ in range(num_workers if warm_module else 0):   # no idle process: each submission starts one
                self._executor.submit(warm_up, None)

    def _new_executor(self):
        context = multiprocessing.get_context("spawn")
        return concurrent.futures.ProcessPoolExecutor(max_workers=self.num_workers, mp_context=context,
                                                      initializer=warm_up, initargs=(self.warm_module,))

    def run(self, function: Callable, tasks: Sequence,
            on_result: Callable[[int, object], None] | None = None) -> list:
        """``[function(task) for task in tasks]`` in task order; ``on_result`` in completion order."""
        on_result = on_result or (lambda index, result: None)
        tasks = list(tasks)
        if self._executor is None or len(tasks) <= 1:
            return _run_inline(function, tasks, on_result, self.max_retries)
        return self._run_pool(function, tasks, on_result)

    def close(self) -> None:
        """Stop the pool (tasks not started are cancelled); idempotent."""
        executor, self._executor = self._executor, None
        if executor is not None:
            executor.shutdown(wait=True, cancel_futures=True)

    def __enter__(self):
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()

    def _run_pool(self, function, tasks, on_result) -> list:
        """The tasks on the pool; failed tasks resubmitted; a broken pool is replaced by a new one."""
        results: dict = {}
        attempts = [0] * len(tasks)
        while len(results) < len(tasks):
            if self._executor is None:
                self._executor = self._new_executor()
            try:
                pending = {self._executor.submit(function, tasks[i]): i for i in range(len(tasks))
                           if i not in results}
            except concurrent.futures.process.BrokenProcessPool:   # a worker died while warming up
                pending = None
            if pending is None or _collect(self._executor, pending, tasks, function, results, attempts, on_result,
                                           self.max_retries):
                self._executor.shutdown(wait=True, cancel_futures=True)
                self._executor = None     # broken: a new pool for the tasks without a result
        return [results[index] for index in range(len(tasks))]


def _failed(index: int, attempts: int, error: BaseException) -> EngineError:
    return EngineError(f"task {index} failed {attempts} time(s); last error: {type(error).__name__}: {error}")


def _run_inline(function, tasks, on_result, max_retries) -> list:
    """The tasks one after the other in this process (one worker: no process start-up cost)."""
    results = []
    for index, task in enumerate(tasks):
        for attempt in range(max_retries + 1):
            try:
                result = function(task)
                break
            except Exception as error:  # noqa: BLE001 - retried, then reported with the task's index
                if attempt == max_retries:
                    raise _failed(index, attempt + 1, error) from error
        on_result(index, result)
        results.append(result)
    return results


def _collect(executor, pending: dict, tasks, function, results: dict, attempts: list, on_result,
             max_retries: int) -> bool:
    """Wait for the pending futures, resubmitting failed tasks; True when the pool broke (a worker died)."""
    while pending:
        done, _ = concurrent.futures.wait(pending, return_when=concurrent.futures.FIRST_COMPLETED)
        broken = False
        for future in done:
            index = pending.pop(future)
            try:
                result = future.result()
            except concurrent.futures.process.BrokenProcessPool as error:
                attempts[index] += 1
                if attempts[index] > max_retries:
                    raise _failed(index, attempts[index], error) from error
                broken = True
                continue
            except Exception as error:  # noqa: BLE001 - retried, then reported
                attempts[index] += 1
                if attempts[index] > max_retries:
                    raise _failed(index, attempts[index], error) from error
                pending[executor.submit(function, tasks[index])] = index
                continue
            results[index] = result
            on_result(index, result)
        if broken:
            return True
    return False
