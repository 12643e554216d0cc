"""Where the work units run: ``run_tasks(function, tasks, engine=...)``.

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
import multiprocessing
from typing import Callable, Sequence

from ..checks import check_int

ENGINES = ("local", "ray")
DEFAULT_MAX_RETRIES = 2


class EngineError(RuntimeError):
    """The engine cannot run (not installed, unknown name) or a task kept failing."""


def run_tasks(function: Callable, tasks: Sequence, *, engine: str = "local", num_workers: int | None = 1,
              on_result: Callable[[int, object], None] | None = None,
              max_retries: int = DEFAULT_MAX_RETRIES, memory_per_task_bytes: int | None = None) -> list:
    """``[function(task) for task in tasks]`` on ``engine`` with ``num_workers`` workers (see the module
    docstring); ``memory_per_task_bytes`` is the memory a task asks for (Ray's scheduler; ignored locally).
    ``num_workers`` None: one local worker, or as many Ray tasks at once as the cluster has CPUs."""
    if num_workers is not None:
        check_int("num_workers", num_workers, minimum=1)
    check_int("max_retries", max_retries, minimum=0)
    on_result = on_result or (lambda index, result: None)
    tasks = list(tasks)
    if engine == "ray":
        return _run_ray(function, tasks, num_workers=num_workers, on_result=on_result, max_retries=max_retries,
                        memory_per_task_bytes=memory_per_task_bytes)
    if engine != "local":
        raise ValueError(f"engine must be one of {ENGINES}, got {engine!r}")
    if num_workers is None or num_workers == 1 or len(tasks) <= 1:
        return _run_inline(function, tasks, on_result, max_retries)
    return _run_pool(function, tasks, min(num_workers, len(tasks)), on_result, max_retries)


def _run_ray(function, tasks, **options) -> list:
    """Dispatch to ``ray_engine.run_tasks_ray`` with a clear error when Ray or the module is missing."""
    try:
        from . import ray_engine
    except ImportError as error:
        raise EngineError(f"--engine ray needs Ray and yolodata.convert.ray_engine ({error}); install it with "
                          f"`pip install yolodata[ray]`, or use --engine local") from error
    return ray_engine.run_tasks_ray(function, tasks, **options)


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


def _run_pool(function, tasks, num_workers, on_result, max_retries) -> list:
    """The tasks on a spawn process pool; failed tasks resubmitted; a broken pool is started again."""
    results: dict = {}
    attempts = [0] * len(tasks)
    context = multiprocessing.get_context("spawn")
    while len(results) < len(tasks):
        executor = concurrent.futures.ProcessPoolExecutor(max_workers=num_workers, mp_context=context)
        try:
            pending = {executor.submit(function, tasks[i]): i for i in range(len(tasks)) if i not in results}
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
                    break  # start a new pool for the tasks without a result
        finally:
            executor.shutdown(wait=True, cancel_futures=True)
    return [results[index] for index in range(len(tasks))]
