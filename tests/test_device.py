"""yolomodel.device: the one device/context setup; requests it cannot carry out are explained."""
from __future__ import annotations

import pytest

from yolomodel import device


def test_an_unknown_device_is_named_with_the_choices():
    with pytest.raises(device.DeviceError, match="--device_target must be one of CPU, GPU, Ascend, got 'TPU'"):
        device.select_device("TPU")


def test_the_current_device_is_kept_and_one_process_is_rank_0_of_1():
    import mindspore as ms

    current = ms.get_context("device_target")
    group = device.setup_device(current, graph_mode=False)
    assert group == device.DeviceGroup(rank=0, group_size=1, distributed=False)
    assert ms.get_context("device_target") == current


def test_distributed_without_a_launcher_says_how_to_start_it(monkeypatch):
    for name in device.LAUNCHER_ENV:
        monkeypatch.delenv(name, raising=False)
    assert not device.launched_by_msrun()
    with pytest.raises(device.DeviceError, match=r"needs processes started by msrun.*tools/eval.py --is_distributed 1"
                                                 r".*pass --is_distributed 0"):
        device.setup_device("CPU", distributed=True, graph_mode=False, program="tools/eval.py")
    monkeypatch.setenv("MS_WORKER_NUM", "2")
    assert device.launched_by_msrun()
