"""Run a conversion's tasks as Ray Core tasks, on this machine or on the cluster in ``RAY_ADDRESS``.

``run_tasks_ray(function, tasks, ...)`` calls ``function(task)`` for every task on Ray workers and
returns the results in task order. It is the ``"ray"`` branch of the conversion's task runner: the
task function converts one work unit and is idempotent (a unit is published by rename, so running it
twice gives the same bytes), which is what makes Ray's retries safe.

Where Ray comes from, in this order: a Ray the caller already initialised is used as it is (and left
running); else, with ``RAY_ADDRESS`` set, the driver joins that cluster; else it starts a new local
Ray with ``num_workers`` CPUs (never joining a Ray that ``ray start`` left on this machine: set
``RAY_ADDRESS`` for that). Only what was started here is shut down afterwards.

The workers must import the same ``yolodata`` as the driver, or the output bytes could differ:

- a local Ray shares this machine's files, so its workers get the driver's ``sys.path`` as
  ``PYTHONPATH`` (a script that put the project on ``sys.path`` itself, or a test run, works too);
- on a cluster the driver's ``yolodata`` package is shipped to the workers (Ray ``py_modules``);
  the nodes need ``pip install yolodata[ray]`` for the dependencies (MindSpore, OpenCV, numpy, Ray)
  and shared storage for the images and the output.

``RayEngine`` (what ``engines.open_engine("ray", ...)`` returns) joins or starts Ray when it is made
and sends one warming task per CPU (importing the unit conversion module, MindSpore with it), so that
a new job's worker processes start while the driver still plans the units; ``run`` uses them.

Every worker gets ``PROTOCOL_BUFFERS_PYTHON_IMPLEMENTATION=python``: Ray imports protobuf before the
task function imports MindSpore, which then fails with protobuf's default (upb) backend.
"""
from __future__ import annotations

import logging
import os
import sys
from collections.abc import Callable, Iterable
from pathlib import Path

from ..checks import check_int
from .engines import DEFAULT_MAX_RETRIES, EngineError, warm_up

PROTOBUF_ENV = {"PROTOCOL_BUFFERS_PYTHON_IMPLEMENTATION": "python"}
INSTALL_HINT = "pip install yolodata[ray]"
PACKAGE_DIR = Path(__file__).resolve().parents[1]    # the yolodata package this driver runs
CPUS_PER_TASK = 1
TASKS_IN_FLIGHT_PER_WORKER = 2     # one running, one queued: workers never wait for the driver
MAX_TASK_TEXT = 200                # characters of a task's repr in messages


class TaskFailedError(EngineError):
    """A task failed on every attempt; names the task (its position and repr) and the last error."""

    def __init__(self, index: int, task, num_attempts: int, cause: BaseException):
        self.index, self.task, self.num_attempts, self.cause = index, task, num_attempts, cause
        super().__init__(f"task {index} ({describe_task(task)}) failed on each of its {num_attempts} "
                         f"attempt(s); last error: {type(cause).__name__}: {first_lines(str(cause))}")


def describe_task(task) -> str:
    """The task's repr, shortened for a message."""
    text = repr(task)
    return text if len(text) <= MAX_TASK_TEXT else text[:MAX_TASK_TEXT] + "..."


def first_lines(text: str, num_lines: int = 12) -> str:
    lines = text.strip().splitlines()
    return "\n".join(lines[:num_lines] + (["..."] if len(lines) > num_lines else []))


def import_ray():
    """The ``ray`` module, imported so that MindSpore can still be imported afterwards in this process.

    Ray imports protobuf; MindSpore needs protobuf's pure-Python backend, which it selects through
    ``PROTOCOL_BUFFERS_PYTHON_IMPLEMENTATION`` -- too late once protobuf is loaded. So the variable is
    set first, unless protobuf is loaded already (then whoever loaded it chose).
    """
    if "google.protobuf" not in sys.modules:
        os.environ.update(PROTOBUF_ENV)
    try:
        import ray
    except ImportError as error:
        raise EngineError(f"--engine ray needs the ray package, which is not installed here ({error}): "
                          f"{INSTALL_HINT} (on every node of a cluster), or use --engine local") from error
    return ray


def local_runtime_env() -> dict:
    """Workers of a Ray started here: this driver's import path and the protobuf setting.

    The interpreter's own entries (standard library, site-packages) are left out: the workers run
    the same interpreter and have them already.
    """
    own = tuple(str(Path(prefix).resolve()) for prefix in {sys.prefix, sys.base_prefix})
    paths = [str(Path(entry or os.getcwd()).resolve()) for entry in sys.path]
    paths = [path for path in paths if os.path.exists(path) and not path.startswith(own)]
    paths = list(dict.fromkeys(paths))
    return {"env_vars": {**PROTOBUF_ENV, "PYTHONPATH": os.pathsep.join(paths)}}


def cluster_runtime_env() -> dict:
    """Workers on a cluster: the driver's yolodata package shipped to them, and the protobuf setting."""
    return {"env_vars": dict(PROTOBUF_ENV), "py_modules": [str(PACKAGE_DIR)]}


def connect(ray, num_workers: int | None) -> bool:
    """Use the Ray the caller initialised, join ``RAY_ADDRESS`` or start a local Ray; True when
    this call initialised Ray (and so must shut it down)."""
    if ray.is_initialized():
        return False
    address = os.environ.get("RAY_ADDRESS")
    if address:
        ray.init(address=address, runtime_env=cluster_runtime_env(), logging_level=logging.WARNING)
    else:
        # "local": always a new instance, never one that someone else started with `ray start`
        ray.init(address="local", num_cpus=num_workers or os.cpu_count() or 1, include_dashboard=False,
                 runtime_env=local_runtime_env(), logging_level=logging.WARNING)
    return True


def call_task(function: Callable, task):
    """What a Ray worker runs: ``function(task)`` (any callable, not only a plain function)."""
    return function(task)


def job_sets_protobuf(ray) -> bool:
    """Whether the workers of this Ray job get the protobuf setting already (then tasks need no env of
    their own, which would make Ray start a second set of workers)."""
    env_vars = (ray.get_runtime_context().runtime_env or {}).get("env_vars") or {}
    return all(env_vars.get(name) == value for name, value in PROTOBUF_ENV.items())


def task_options(*, max_retries: int, memory_per_task_bytes: int | None, set_env: bool) -> dict:
    """Ray options of every task: resources, retries (exceptions too: tasks are idempotent), env."""
    options = {"num_cpus": CPUS_PER_TASK, "max_retries": max_retries, "retry_exceptions": True}
    if memory_per_task_bytes is not None:
        options["memory"] = memory_per_task_bytes
    if set_env:   # a Ray the caller started without the protobuf setting in its job env
        options["runtime_env"] = {"env_vars": dict(PROTOBUF_ENV)}
    return options


def run_tasks_ray(function: Callable, tasks: Iterable, *, num_workers: int | None = None,
                  on_result: Callable[[int, object], None] | None = None, max_retries: int = DEFAULT_MAX_RETRIES,
                  memory_per_task_bytes: int | None = None) -> list:
    """``[function(task) for task in tasks]`` computed by Ray Core tasks, in task order: a ``RayEngine``
    opened, run once and closed (see it for the arguments)."""
    with RayEngine(num_workers, max_retries=max_retries, memory_per_task_bytes=memory_per_task_bytes) as engine:
        return engine.run(function, tasks, on_result=on_result)


class RayEngine:
    """Ray Core tasks on the Ray in use (see the module docstring), connected when made.

    ``num_workers``: the CPUs of a local Ray started here (None: this machine's); a cluster or the
    caller's Ray has its own. The driver keeps at most twice as many tasks in flight as the Ray in use
    has CPUs (all busy, none waiting for the driver), so that very many tasks need little driver memory.
    Each task asks Ray for one CPU and ``memory_per_task_bytes`` of memory (None: no memory request)
    and is retried up to ``max_retries`` times, whether it raised or its worker process died. A task
    that fails on every attempt raises ``TaskFailedError`` naming it; then, and on Ctrl-C, the tasks
    still outstanding are cancelled. ``warm_module``: imported by one task per CPU sent at once (the
    job's worker processes start and load it while the caller does other work). ``close`` shuts down
    a Ray started here.
    """

    def __init__(self, num_workers: int | None = None, *, warm_module: str | None = None,
                 max_retries: int = DEFAULT_MAX_RETRIES, memory_per_task_bytes: int | None = None):
        if num_workers is not None:
            check_int("num_workers", num_workers, minimum=1)
        check_int("max_retries", max_retries, minimum=0)
        if memory_per_task_bytes is not None:
            check_int("memory_per_task_bytes", memory_per_task_bytes, minimum=1)
        self.num_workers, self.max_retries = num_workers, max_retries
        self.ray = import_ray()
        self._started_here = connect(self.ray, num_workers)
        self._warming: list = []
        try:
            self._options = task_options(max_retries=max_retries, memory_per_task_bytes=memory_per_task_bytes,
                                         set_env=not (self._started_here or job_sets_protobuf(self.ray)))
            check_fits_a_node(self.ray, memory_per_task_bytes)
            if warm_module:   # same options (so the same worker processes), no retries: nothing depends on it
                warm = self.ray.remote(warm_up).options(**{**self._options, "max_retries": 0,
                                                           "retry_exceptions": False})
                self._warming = [warm.remote(warm_module) for _ in range(ray_cpu_count(self.ray))]
        except BaseException:
            self.close()
            raise

    def run(self, function: Callable, tasks: Iterable,
            on_result: Callable[[int, object], None] | None = None) -> list:
        """``[function(task) for task in tasks]`` in task order; ``on_result`` in completion order."""
        ray = self.ray
        remote_call = ray.remote(call_task).options(**self._options)
        num_in_flight = TASKS_IN_FLIGHT_PER_WORKER * ray_cpu_count(ray)
        return run_windowed(ray, remote_call, ray.put(function), tasks, num_in_flight=num_in_flight,
                            on_result=on_result, num_attempts=self.max_retries + 1)

    def close(self) -> None:
        """Shut down a Ray started here. Idempotent. Warming tasks are not cancelled (interrupting an
        import could leave a worker of the caller's Ray half-initialised); they end on their own."""
        self._warming = []
        if self._started_here:
            self._started_here = False
            self.ray.shutdown()

    def __enter__(self):
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()


def check_fits_a_node(ray, memory_per_task_bytes: int | None) -> None:
    """Refuse tasks no node can take (Ray would wait for such a node forever)."""
    nodes = [node["Resources"] for node in ray.nodes() if node.get("Alive")]
    most_cpus = max((node.get("CPU", 0) for node in nodes), default=0)
    most_memory = max((node.get("memory", 0) for node in nodes), default=0)
    if most_cpus < CPUS_PER_TASK:
        raise ValueError(f"no node of the Ray cluster has a CPU for a task ({len(nodes)} node(s) alive)")
    if memory_per_task_bytes is not None and memory_per_task_bytes > most_memory:
        raise ValueError(f"memory_per_task_bytes {memory_per_task_bytes:,} is more than any node of the Ray "
                         f"cluster offers (at most {int(most_memory):,} bytes); ask for less")


def ray_cpu_count(ray) -> int:
    return max(1, int(ray.cluster_resources().get("CPU", 1)))


def run_windowed(ray, remote_call, function_ref, tasks: Iterable, *, num_in_flight: int,
                 on_result, num_attempts: int) -> list:
    """Submit tasks keeping at most ``num_in_flight`` unfinished; collect results as they finish."""
    pending: dict = {}      # ObjectRef -> (index, task)
    results: dict = {}
    numbered = enumerate(tasks)
    exhausted = False
    try:
        while True:
            while not exhausted and len(pending) < num_in_flight:
                index, task = next(numbered, (None, None))
                if index is None:
                    exhausted = True
                else:
                    pending[remote_call.remote(function_ref, task)] = (index, task)
            if not pending:
                return [results[index] for index in range(len(results))]
            (ref,), _ = ray.wait(list(pending), num_returns=1)
            index, task = pending.pop(ref)
            results[index] = fetch_result(ray, ref, index, task, num_attempts)
            if on_result is not None:
                on_result(index, results[index])
    except BaseException:
        cancel_all(ray, pending)
        raise


def fetch_result(ray, ref, index: int, task, num_attempts: int):
    """The task's result, or ``TaskFailedError`` naming it once Ray has given up on it."""
    try:
        return ray.get(ref)
    except ray.exceptions.RayTaskError as error:       # the function raised, on every attempt
        raise TaskFailedError(index, task, num_attempts, error.cause) from error
    except ray.exceptions.RayError as error:           # its worker died (crash, out of memory, node lost)
        raise TaskFailedError(index, task, num_attempts, error) from error


def cancel_all(ray, refs) -> None:
    """Cancel unfinished tasks (no retries follow); a running one gets KeyboardInterrupt."""
    for ref in list(refs):
        try:
            ray.cancel(ref)
        except Exception:   # already finished or its worker gone: nothing left to stop
            pass
