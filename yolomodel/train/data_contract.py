"""The data contract of a training run (``yolomodel.data_contract``): the folders a run reads, checked on
every rank before the network is built."""
from __future__ import annotations

from yolomodel.data_contract import RankReport, check_data

from . import config as config_lib
from . import data as data_lib


def folders_read(args) -> list[tuple[str, str]]:
    """(flag, folder) of every converted folder a training run with these flags reads."""
    folders = [("--mindrecord", str(args.mindrecord))]
    settings = config_lib.validation_settings(args)
    if settings is not None:
        folders.append(("--val_mindrecord", settings.mindrecord))
    return folders


def check_training_data(args, group, *, local_error: str | None = None, log=print) -> list[RankReport]:
    """``check_data`` on every folder the run reads (``folders_read``)."""
    return check_data(folders_read(args), group, what="the training data", local_error=local_error, log=log)


def resolve_and_check(args, group, *, log=print) -> list[RankReport]:
    """``train.data.resolve_training_data``, then ``check_training_data``. With several ranks a rank whose
    folders cannot even be resolved (e.g. no manifest on this node) still joins the check, carrying its
    error, so that every rank stops with it instead of waiting in a collective."""
    try:
        data_lib.resolve_training_data(args, rank=group.rank, log=log)
        local_error = None
    except ValueError as error:
        if not group.distributed:
            raise
        local_error = str(error)
    return check_training_data(args, group, local_error=local_error, log=log)
