"""The MindSpore device, execution mode and communication group of a process: one setup for every tool.

``setup_device`` selects the backend (``--device_target``), graph mode (one compile for the fixed
input shape, then fast; training, eval and infer use it), and with ``distributed`` joins the group of
processes msrun started: ``mindspore.communication.init()`` picks the backend for the device (HCCL on
Ascend, NCCL on GPU, MCCL on CPU), and rank and group size come from the group. Data-parallel training
adds the auto-parallel context DATA_PARALLEL with the gradient mean, as MindSpore documents it;
distributed evaluation needs only the group (its ranks exchange results with collectives).

On Ascend, msrun's dynamic cluster needs no rank table; a reference-style rank table given as
``RANK_TABLE_FILE`` is left in the environment, where MindSpore's HCCL initialisation reads it.

The backend can be chosen only before the runtime starts (the first kernel or ``communication.init``):
asking again for the current one does nothing, and asking for another one afterwards, or for one this
installation or machine lacks, is a ``DeviceError`` naming the flag.
"""
from __future__ import annotations

import dataclasses
import os

DEVICE_TARGETS = ("CPU", "GPU", "Ascend")
# environment variables a MindSpore launcher (msrun, or a rank table) sets for the processes it starts
LAUNCHER_ENV = ("MS_ROLE", "MS_WORKER_NUM", "RANK_TABLE_FILE", "RANK_SIZE")


class DeviceError(ValueError):
    """A device or launch request this process cannot carry out; the message says what to change."""


@dataclasses.dataclass(frozen=True)
class DeviceGroup:
    """This process's place among the processes of a run."""

    rank: int
    group_size: int
    distributed: bool


SINGLE_PROCESS = DeviceGroup(rank=0, group_size=1, distributed=False)


def launched_by_msrun() -> bool:
    """True when a MindSpore launcher (msrun / rank table) set up this process's environment."""
    return any(os.environ.get(name) for name in LAUNCHER_ENV)


def select_device(device_target: str) -> None:
    """Select the MindSpore backend; DeviceError when it is unknown or this installation or machine lacks it.

    Nothing is done when it is already the current one: ``set_device`` may not be called again once
    kernels have run in the process.
    """
    import mindspore as ms

    if device_target not in DEVICE_TARGETS:
        raise DeviceError(f"--device_target must be one of {', '.join(DEVICE_TARGETS)}, got {device_target!r}")
    if ms.get_context("device_target") == device_target:
        return
    try:
        ms.set_device(device_target)
    except RuntimeError as error:
        lines = str(error).strip().splitlines()
        raise DeviceError(f"cannot use --device_target {device_target} here: "
                          f"{lines[0] if lines else type(error).__name__}") from error


def setup_device(device_target: str, *, distributed: bool = False, data_parallel: bool = False,
                 graph_mode: bool = True, program: str = "the tool") -> DeviceGroup:
    """Select ``device_target``, graph mode, and with ``distributed`` the communication group.

    ``data_parallel``: also set the auto-parallel context for data-parallel training (gradients
    averaged over the ranks); only with ``distributed``. ``graph_mode=False`` leaves the execution
    mode as it is (export traces its graph itself). ``program`` names the command in the message for
    a distributed run that no launcher started.
    """
    import mindspore as ms

    if graph_mode:
        ms.set_context(mode=ms.GRAPH_MODE)
    select_device(device_target)
    if not distributed:
        return SINGLE_PROCESS
    if not launched_by_msrun():
        raise DeviceError(f"--is_distributed 1 needs processes started by msrun, e.g. msrun --worker_num=2 "
                          f"--local_worker_num=2 --master_port=8118 --join=True {program} --is_distributed 1 ... "
                          f"(scripts/run_distribute_train.sh does it for training); for one process pass "
                          f"--is_distributed 0")
    from mindspore.communication import get_group_size, get_rank, init

    init()
    rank, group_size = int(get_rank()), int(get_group_size())
    if data_parallel:
        ms.reset_auto_parallel_context()
        ms.set_auto_parallel_context(parallel_mode=ms.ParallelMode.DATA_PARALLEL, gradients_mean=True,
                                     device_num=group_size)
    return DeviceGroup(rank=rank, group_size=group_size, distributed=True)
