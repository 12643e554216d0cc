"""The Ray task engine (``yolodata.convert.ray_engine``): results, retries, errors, cancellation.

Ray is an optional extra: without it these tests skip, saying so; in CI (CI=true) a missing Ray
fails instead, since CI installs the extra. Ray starts twice in this module (each start costs
seconds): once inside ``run_tasks_ray`` (the first test), then once for the module's fixture, a Ray
initialised by the "caller" that the other tests share.
"""
from __future__ import annotations

import _thread
import hashlib
import json
import os
import subprocess
import sys
import threading
import time
import zlib
from pathlib import Path

import pytest

from yolodata.convert import convert_coco
from yolodata.convert.engines import EngineError, run_tasks
from yolodata.convert.fault_injection import FailFirstRuns, InjectedFailure
from yolodata.convert.ray_engine import INSTALL_HINT, PROTOBUF_ENV, TaskFailedError, import_ray, run_tasks_ray
from yolodata.convert.unit_convert import FAIL_ONCE_VARIABLE

# under pytest-xdist the whole module runs on one worker, in order: one Ray at a time on the machine
pytestmark = pytest.mark.xdist_group("ray")

PROJECT_ROOT = Path(__file__).resolve().parents[1]
TESTS_DIR = Path(__file__).resolve().parent
PAYLOADS = [f"unit {index} ".encode() * (index + 1) for index in range(12)]
EXPECTED = [zlib.crc32(payload) for payload in PAYLOADS]


def require_ray():
    try:
        return import_ray()
    except EngineError:
        reason = f"Ray is not installed ({INSTALL_HINT})"
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(reason + "; CI must install the ray extra", pytrace=False)
        pytest.skip(reason, allow_module_level=True)


ray = require_ray()


def worker_view(task):
    """What a worker sees: the protobuf setting and the yolodata it imports (plus the task back)."""
    import yolodata
    return task, os.environ.get("PROTOCOL_BUFFERS_PYTHON_IMPLEMENTATION"), yolodata.__file__


class MarkAndSleep:
    """Writes ``started-<task>``, sleeps, then writes ``done-<task>`` into a folder."""

    def __init__(self, folder, seconds):
        self.folder, self.seconds = str(folder), seconds

    def __call__(self, task):
        Path(self.folder, f"started-{task}").touch()
        time.sleep(self.seconds)
        Path(self.folder, f"done-{task}").touch()
        return task


def test_starts_its_own_local_ray_and_shuts_it_down():
    """No Ray running: one is started for the call (workers see the driver's yolodata and the
    protobuf setting) and shut down afterwards; results in task order, on_result once per task."""
    assert not ray.is_initialized()
    seen = {}
    results = run_tasks_ray(worker_view, range(6), num_workers=2, on_result=seen.__setitem__)
    assert not ray.is_initialized()
    import yolodata
    assert results == [(task, PROTOBUF_ENV["PROTOCOL_BUFFERS_PYTHON_IMPLEMENTATION"], yolodata.__file__)
                       for task in range(6)]
    assert seen == dict(enumerate(results))


@pytest.fixture(scope="module")
def caller_ray():
    """A Ray the caller initialised (2 CPUs, no dashboard), shared by the tests below."""
    python_path = os.pathsep.join([str(TESTS_DIR), str(PROJECT_ROOT)])
    context = ray.init(address="local", num_cpus=2, include_dashboard=False, runtime_env={"env_vars": {"PYTHONPATH": python_path}})
    try:
        yield context
    finally:
        ray.shutdown()


def test_results_equal_the_local_engine_and_ray_is_left_running(caller_ray):
    completed = []
    local = run_tasks(zlib.crc32, PAYLOADS, engine="local", num_workers=2)
    results = run_tasks(zlib.crc32, PAYLOADS, engine="ray", num_workers=2,
                        on_result=lambda index, result: completed.append((index, result)))
    assert results == local == EXPECTED
    assert sorted(completed) == list(enumerate(EXPECTED))
    assert ray.is_initialized()


def test_at_most_two_tasks_per_cpu_are_in_flight(caller_ray):
    """The tasks are drawn from the iterable only as earlier ones finish (the driver's memory stays
    bounded for any number of tasks): never more than 2 per CPU (2 CPUs here) drawn but unfinished."""
    drawn, finished, most_in_flight = [0], [0], [0]

    def tasks():
        for payload in PAYLOADS:
            drawn[0] += 1
            most_in_flight[0] = max(most_in_flight[0], drawn[0] - finished[0])
            yield payload

    def on_result(index, result):
        finished[0] += 1

    assert run_tasks_ray(zlib.crc32, tasks(), num_workers=2, on_result=on_result) == EXPECTED
    assert most_in_flight[0] == 4
    view = run_tasks_ray(worker_view, ["probe"], num_workers=2)
    assert view[0][1] == "python"   # set per task on a Ray the caller started


def test_a_memory_request_no_node_can_meet_is_refused(caller_ray):
    with pytest.raises(ValueError, match="more than any node of the Ray cluster offers"):
        run_tasks_ray(zlib.crc32, PAYLOADS, num_workers=2, memory_per_task_bytes=1 << 50)
    assert run_tasks_ray(zlib.crc32, PAYLOADS[:2], num_workers=2, memory_per_task_bytes=1 << 20) == EXPECTED[:2]


@pytest.mark.parametrize("mode", ["raise", "exit"])
def test_a_failure_injected_once_is_retried_with_the_same_results(caller_ray, tmp_path, mode):
    """A task that raises, or whose worker process dies, on its first run is run again."""
    function = FailFirstRuns(zlib.crc32, str(tmp_path), failing_tasks=(PAYLOADS[4],), mode=mode)
    results = run_tasks_ray(function, PAYLOADS, num_workers=2, max_retries=2)
    assert results == EXPECTED
    assert function.num_failures() == 1


def test_a_task_failing_on_every_attempt_is_named(caller_ray, tmp_path):
    function = FailFirstRuns(zlib.crc32, str(tmp_path), failing_tasks=(PAYLOADS[3],), failures_per_task=5)
    with pytest.raises(TaskFailedError) as raised:
        run_tasks_ray(function, PAYLOADS, num_workers=2, max_retries=1)
    error = raised.value
    assert error.index == 3 and error.task == PAYLOADS[3] and isinstance(error.cause, InjectedFailure)
    assert "task 3 (b'unit 3 unit 3" in str(error) and "2 attempt(s)" in str(error)
    assert "InjectedFailure: injected failure 2 of 5" in str(error)
    assert function.num_failures() == 2   # one run and one retry, then no more


def test_ctrl_c_cancels_the_outstanding_tasks(caller_ray, tmp_path):
    """KeyboardInterrupt while waiting: the running tasks are interrupted and the queued ones dropped,
    so none finishes afterwards (the caller's Ray keeps running, so nothing else would stop them)."""
    function = MarkAndSleep(tmp_path, seconds=2.0)

    def interrupt_once_a_task_runs():
        deadline = time.monotonic() + 60
        while not list(tmp_path.glob("started-*")) and time.monotonic() < deadline:
            time.sleep(0.05)
        _thread.interrupt_main()

    threading.Thread(target=interrupt_once_a_task_runs, daemon=True).start()
    with pytest.raises(KeyboardInterrupt):
        run_tasks_ray(function, range(8), num_workers=2)
    time.sleep(2.5)   # longer than a task: anything not cancelled would have finished by now
    assert list(tmp_path.glob("started-*"))
    assert not list(tmp_path.glob("done-*"))


JOIN_SCRIPT = """
import json, sys
from yolodata.convert.unit_convert import FAIL_ONCE_VARIABLE
from yolodata.convert.ray_engine import run_tasks_ray

def where(task):
    import yolodata
    return yolodata.__file__

print(json.dumps(run_tasks_ray(where, range(3))))
"""


def test_joins_the_cluster_in_ray_address_and_ships_the_package(caller_ray, tmp_path):
    """A driver with RAY_ADDRESS set joins that cluster (it starts no Ray of its own) and its workers
    import the yolodata the driver shipped, not an installed copy."""
    env = {**os.environ, "RAY_ADDRESS": caller_ray.address_info["address"], "PYTHONPATH": str(PROJECT_ROOT)}
    done = subprocess.run([sys.executable, "-c", JOIN_SCRIPT], env=env, cwd=tmp_path, capture_output=True,
                          text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    files = json.loads(done.stdout.strip().splitlines()[-1])
    assert len(files) == 3
    assert all("runtime_resources" in file and not file.startswith(str(PROJECT_ROOT)) for file in files), files


def test_arguments_are_checked_before_ray_starts():
    with pytest.raises(ValueError, match="max_retries must be at least 0"):
        run_tasks_ray(zlib.crc32, PAYLOADS, num_workers=2, max_retries=-1)
    with pytest.raises(ValueError, match="num_workers must be at least 1"):
        run_tasks_ray(zlib.crc32, PAYLOADS, num_workers=0)


def folder_digests(folder: Path) -> dict:
    return {path.name: hashlib.sha256(path.read_bytes()).hexdigest() for path in sorted(folder.iterdir())}


def test_a_conversion_on_ray_with_a_failed_unit_has_the_local_bytes(caller_ray, coco128_dir, tmp_path,
                                                                    monkeypatch):
    """coco128 in six units: on Ray, with unit 2 failing once (then retried), every file of the output
    (shards, their .db, manifest.json, annotations.json) has the bytes of the local conversion."""
    image_dir, ann_file = coco128_dir / "val2017", coco128_dir / "annotations" / "instances_val2017.json"
    local = convert_coco(image_dir, ann_file, tmp_path / "local", shard_size="4M", engine="local", num_workers=1)
    marker = tmp_path / "unit-2-failed"
    monkeypatch.setenv(FAIL_ONCE_VARIABLE, f"2:{marker}")
    on_ray = convert_coco(image_dir, ann_file, tmp_path / "ray", shard_size="4M", engine="ray", num_workers=2)
    assert marker.exists()   # the failure did happen
    assert len(local.shards) == len(on_ray.shards) == 6 and on_ray.num_images == 128
    assert folder_digests(tmp_path / "ray") == folder_digests(tmp_path / "local")
