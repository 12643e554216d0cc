"""Where the training shards come from: ``--mindrecord`` as given, or a COCO ``--data_dir`` converted first.

COCO folder layout (as the reference's): ``data_dir/train2017/*.jpg`` with
``data_dir/annotations/instances_train2017.json`` (and optionally ``val2017`` /
``instances_val2017.json``). The shards go to ``--mindrecord`` when given, else to
``data_dir/mindrecord/train2017`` (``.../val2017``); existing shards built from the same annotation
file (same sha256) are reused. With several ranks, rank 0 converts and the others wait for the
manifest to appear (conversion writes it last, atomically).
"""
from __future__ import annotations

import hashlib
import logging
import time
from pathlib import Path

from yolodata.convert import convert_coco
from yolodata.manifest import has_manifest, read_manifest

logger = logging.getLogger(__name__)

SPLITS = {"train": ("train2017", "instances_train2017.json"), "val": ("val2017", "instances_val2017.json")}
LARGE_ANNOTATION_BYTES = 50 * 1024 * 1024   # above this (COCO-sized), write 8 shards instead of 1
WAIT_POLL_SECONDS = 2.0


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def has_shards(folder) -> bool:
    return has_manifest(folder)


def coco_split_paths(data_dir, split: str) -> tuple[Path, Path]:
    """(image folder, annotation json) of ``split`` in a COCO folder; ValueError if absent."""
    image_folder, ann_name = SPLITS[split]
    data_dir = Path(data_dir)
    image_dir, ann_file = data_dir / image_folder, data_dir / "annotations" / ann_name
    if not image_dir.is_dir() or not ann_file.is_file():
        raise ValueError(f"--data_dir {data_dir} must hold {image_folder}/ and annotations/{ann_name} (the COCO "
                         f"layout); found image folder: {image_dir.is_dir()}, annotation file: {ann_file.is_file()}. "
                         f"For another layout convert with tools/coco2mindrecord.py and pass --mindrecord")
    return image_dir, ann_file


def _wait_for_manifest(folder: Path, rank: int, log) -> None:
    waited = 0.0
    while not has_shards(folder):
        time.sleep(WAIT_POLL_SECONDS)
        waited += WAIT_POLL_SECONDS
        if waited % 60 < WAIT_POLL_SECONDS:
            log(f"rank {rank}: waiting for rank 0 to finish converting into {folder} ({waited:.0f} s)")


def convert_split(data_dir, split: str, output_dir, *, rank: int = 0, log=logger.info) -> Path:
    """Shards of ``split`` of a COCO folder in ``output_dir``: reused if built from the same json, else converted."""
    image_dir, ann_file = coco_split_paths(data_dir, split)
    output_dir = Path(output_dir)
    if has_shards(output_dir):
        manifest = read_manifest(output_dir)
        if manifest.annotation_sha256 == _sha256(ann_file):
            log(f"using the MindRecord shards already converted from {ann_file} in {output_dir}")
            return output_dir
        if rank == 0:
            raise ValueError(f"{output_dir} holds shards converted from another annotation file than {ann_file}; "
                             f"remove it or pass another --mindrecord folder to convert into")
    if rank != 0:
        _wait_for_manifest(output_dir, rank, log)
        return output_dir
    shard_num = 8 if ann_file.stat().st_size > LARGE_ANNOTATION_BYTES else 1
    log(f"converting {ann_file} ({image_dir}) to MindRecord in {output_dir} ...")
    summary = convert_coco(image_dir, ann_file, output_dir, shard_num=shard_num, progress=True, log=log)
    log(f"wrote {summary.num_images} images ({summary.num_boxes} boxes, {len(summary.skipped)} images skipped) "
        f"as {len(summary.shards)} MindRecord shard(s) in {output_dir}; next time pass --mindrecord {output_dir}")
    return output_dir


def resolve_training_data(args, *, rank: int = 0, log=logger.info) -> None:
    """Fill ``args.mindrecord`` (and ``args.val_mindrecord`` when a val split exists) from ``args.data_dir``."""
    if args.mindrecord and has_shards(args.mindrecord):
        if args.data_dir:
            log(f"--mindrecord {args.mindrecord} already holds shards: training on them, not converting --data_dir")
    elif args.data_dir:
        target = args.mindrecord or str(Path(args.data_dir) / "mindrecord" / SPLITS["train"][0])
        args.mindrecord = str(convert_split(args.data_dir, "train", target, rank=rank, log=log))
        if not args.val_mindrecord and (Path(args.data_dir) / SPLITS["val"][0]).is_dir() and \
                (Path(args.data_dir) / "annotations" / SPLITS["val"][1]).is_file():
            target = Path(args.data_dir) / "mindrecord" / SPLITS["val"][0]
            args.val_mindrecord = str(convert_split(args.data_dir, "val", target, rank=rank, log=log))
    else:
        raise ValueError(f"--mindrecord {args.mindrecord} holds no shards (no manifest.json); convert a dataset with "
                         f"tools/coco2mindrecord.py or pass --data_dir with a COCO folder")
    if args.val_mindrecord and not has_shards(args.val_mindrecord):
        raise ValueError(f"--val_mindrecord {args.val_mindrecord} holds no shards (no manifest.json)")
