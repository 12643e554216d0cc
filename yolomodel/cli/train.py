"""Train YOLOv5 on MindRecord shards, on one device or many (msrun).

    yolo-train --mindrecord data/shards --yolov5_version yolov5s --per_batch_size 8 \\
        --lr 0.02 --max_epoch 300 --warmup_epochs 20 --lr_scheduler cosine_annealing [--config FILE.yaml]
    yolo-train --data_dir COCO_DIR ...          # converts COCO to MindRecord first
    yolo-train --resume outputs/ckpt_0/last.ckpt --mindrecord data/shards ...    # continue exactly
    yolo-train --weights yolov5s.ckpt --mindrecord data/shards [--freeze 10] ...   # fine-tune (or a YOLOv5 .pt,
                                                                                  # or a run's best_weights.ckpt)
    bash scripts/run_distribute_train.sh 8 --mindrecord data/shards ...   # msrun, --is_distributed 1
    (or: python tools/train.py ...)

Every option of the reference train.py is accepted with its meaning (``--help`` lists them);
``yolomodel/train/config.py`` says how a YAML file and the command line combine. Log lines follow the
reference: ``epoch[0], iter[600], loss:296.308071, fps:44.44 imgs/sec, lr:0.000106...`` plus the loss
parts. Checkpoints go to ``--ckpt_path``/ckpt_<rank>/ (layout in ``yolomodel/train/checkpoint.py``).

Exit status: 0 finished (or profiled), 1 the loss diverged, 2 a configuration error, 128 + signal
number after SIGINT/SIGTERM (a checkpoint was saved first).
"""
from __future__ import annotations

import logging
import signal
import sys
from pathlib import Path

from yolomodel.cli import EXIT_OK, EXIT_USER_ERROR
from yolomodel.device import setup_device
from yolomodel.train import config as config_lib
from yolomodel.train import data_contract, loop

LOG_FORMAT = "%(asctime)s:%(levelname)s:%(message)s"   # the reference's logger format
EXIT_DIVERGED = 1


def setup_logging() -> logging.Logger:
    root = logging.getLogger()
    root.setLevel(logging.INFO)
    if not any(getattr(h, "_yolov5_console", False) for h in root.handlers):
        handler = logging.StreamHandler(sys.stdout)
        handler.setFormatter(logging.Formatter(LOG_FORMAT))
        handler._yolov5_console = True  # noqa: SLF001 - marks our handler so a second call adds none
        root.addHandler(handler)
    return logging.getLogger("yolov5.train")


def add_log_file(folder, rank: int) -> logging.Handler:
    Path(folder).mkdir(parents=True, exist_ok=True)
    handler = logging.FileHandler(Path(folder) / f"log_rank{rank}.txt")
    handler.setFormatter(logging.Formatter(LOG_FORMAT))
    logging.getLogger().addHandler(handler)
    return handler


def main(argv=None, *, batch_hook=None) -> int:
    log = setup_logging()
    try:
        args = config_lib.parse_config(argv, log=log.warning)
    except ValueError as error:
        log.error("%s", error)
        return EXIT_USER_ERROR
    file_handler = None
    try:
        group = setup_device(args.device_target, distributed=bool(args.is_distributed), data_parallel=True,
                             program="tools/train.py")
        if not group.distributed and (args.rank != 0 or args.group_size != 1):
            log.warning("--rank/--group_size are set by the communication group; without --is_distributed 1 "
                        "this is one process: rank 0 of 1")
        args.rank, args.group_size = group.rank, group.group_size
        file_handler = add_log_file(args.ckpt_path, group.rank)
        data_contract.resolve_and_check(args, group, log=log.info)   # every rank, before the network
        summary = loop.train(args, group.rank, group.group_size, batch_hook=batch_hook, log=log.info)
    except ValueError as error:
        log.error("%s", error)
        return EXIT_USER_ERROR
    except loop.TrainingDiverged as error:
        log.error("%s", error)
        return EXIT_DIVERGED
    finally:
        if file_handler is not None:
            logging.getLogger().removeHandler(file_handler)
            file_handler.close()
    if summary.status == "interrupted":
        return 128 + int(summary.signal or signal.SIGTERM)
    return EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
