"""yolodata.checks: the shared argument checks and the one worker-count rule."""
from __future__ import annotations

import os

import numpy as np
import pytest

from yolodata import checks


def test_check_int_accepts_python_and_numpy_integers_only():
    assert checks.check_int("n", 3) == 3 and checks.check_int("n", np.int64(4)) == 4
    for bad in (True, 2.0, "3", None):
        with pytest.raises(ValueError, match="n must be an integer"):
            checks.check_int("n", bad)
    with pytest.raises(ValueError, match="n must be at least 1, got 0"):
        checks.check_int("n", 0, minimum=1)
    with pytest.raises(ValueError, match="n must be at most 5, got 6"):
        checks.check_int("n", 6, maximum=5)


@pytest.mark.parametrize("value, message", [
    (100, r"--testing_shape must be a multiple of 32 \(the network's largest stride\), got 100; try 96 or 128"),
    (0, "--testing_shape must be at least 32, got 0"),
    (640.0, "must be an integer"),
])
def test_check_multiple_of_says_what_to_pass(value, message):
    with pytest.raises(ValueError, match=message):
        checks.check_multiple_of("--testing_shape", value)


def test_check_multiple_of_returns_valid_sizes():
    assert [checks.check_multiple_of("s", v) for v in (32, 640, np.int32(96))] == [32, 640, 96]


def test_one_worker_rule():
    cpus = os.cpu_count() or 1
    assert checks.resolve_num_workers(None) == min(cpus, checks.MAX_DEFAULT_WORKERS)
    assert checks.resolve_num_workers(10 ** 6) == cpus
    assert checks.resolve_num_workers(1) == 1
    with pytest.raises(ValueError, match="num_workers must be at least 1"):
        checks.resolve_num_workers(0, "num_workers")
