"""MindSpore context and the communication group for one training process.

Standalone: graph mode on the device. Distributed (``--is_distributed 1``, processes started by msrun):
``mindspore.communication.init()`` picks the backend for the device (HCCL on Ascend, NCCL on GPU, MCCL on
CPU); rank and group size come from the group, and the auto-parallel context is DATA_PARALLEL with the
gradient mean, as MindSpore documents for data-parallel training. On Ascend, msrun's dynamic cluster
needs no rank table; a reference-style rank table given as ``RANK_TABLE_FILE`` is left in the
environment, where MindSpore's HCCL initialisation reads it.
"""
from __future__ import annotations

import dataclasses
import logging
import os

logger = logging.getLogger(__name__)

LAUNCHER_ENV = ("MS_ROLE", "MS_WORKER_NUM", "RANK_TABLE_FILE", "RANK_SIZE")


@dataclasses.dataclass(frozen=True)
class DeviceGroup:
    rank: int
    group_size: int
    distributed: bool


def launched_by_msrun() -> bool:
    """True when a MindSpore launcher (msrun / rank table) set up this process's environment."""
    return any(os.environ.get(name) for name in LAUNCHER_ENV)


def init_context(device_target: str, is_distributed: bool) -> DeviceGroup:
    """Set graph mode on ``device_target``; with ``is_distributed``, join the group. Returns rank info."""
    import mindspore as ms

    ms.set_context(mode=ms.GRAPH_MODE)
    if ms.get_context("device_target") != device_target:
        # only possible before the runtime starts (the first kernel or communication.init)
        ms.set_device(device_target)
    if not is_distributed:
        return DeviceGroup(rank=0, group_size=1, distributed=False)
    if not launched_by_msrun():
        raise ValueError("--is_distributed 1 needs processes started by msrun (see scripts/run_distribute_train.sh), "
                         "e.g. msrun --worker_num=2 --local_worker_num=2 --master_port=8118 --join=True "
                         "tools/train.py --is_distributed 1 ...; for one process pass --is_distributed 0")
    from mindspore.communication import get_group_size, get_rank, init

    init()
    rank, group_size = int(get_rank()), int(get_group_size())
    ms.reset_auto_parallel_context()
    ms.set_auto_parallel_context(parallel_mode=ms.ParallelMode.DATA_PARALLEL, gradients_mean=True,
                                 device_num=group_size)
    return DeviceGroup(rank=rank, group_size=group_size, distributed=True)
