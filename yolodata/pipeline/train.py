"""The training input pipeline: ``create_train_dataset`` on the converter's MindRecord shards.

How the guarantees are kept although ``MindDataset`` accepts no Python sampler
-------------------------------------------------------------------------------
The whole sample order is computed up front in Python (``sampler.rank_schedule``): for the
requested epochs it lists, in order, the MindRecord rows this rank reads, and for each the key
(epoch, global position, step, expected row). The rows go to ``MindDataset`` through the built-in
``ds.SubsetSampler`` (which yields exactly the given indices in the given order, repeats allowed).
The batch function holds the keys and finds its batch's block of them by the batch number that
MindSpore's ``BatchInfo`` carries (the batch's position in the epoch's stream, whichever worker runs
it), and checks that the rows it was handed are the block's expected rows (``row_index``), so each
row meets its key no matter how many workers read or decode. (The keys used to travel in a
``NumpySlicesDataset`` zipped beside the rows: a Python-fed source and a zip, CPU for every row.)
Every random decision of a sample (the augmentation policy, ``yolodata.augment.policy``) is then
drawn from ``keyed_rng(seed, epoch, position, purpose=...)``, never from worker or thread state, so a
batch is bitwise identical for any
``num_parallel_workers``, and starting at (start_epoch, start_step) yields exactly the batches an
uninterrupted run would have produced there.

All work of a batch happens in one ``per_batch_map`` call run in a thread (cv2 releases the GIL, and
threads avoid copying every row through shared memory): each image of the batch is decoded once, and
the policy draws mosaic partners from the images of the same per-rank batch, so a mosaic costs one
decode instead of four. The batch's input shape (multi-scale) is decided by (seed, epoch, step) and is the
same on every rank.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np

from ..augment import extras
from ..augment.policy import AugmentConfig, augment_sample
from ..checks import resolve_num_workers
from . import sampler as sampler_lib
from .rows import (RowDecoder, SkippedRowLog, batch_keys, check_rows, limit_opencv_threads, read_rows_in_order,
                   resolve_mindrecord)
from .targets import STRIDES, YOLOV5_ANCHORS, build_targets, check_anchors, check_anchor_t

SOURCE_COLUMNS = ["image", "height", "width", "image_id", "num_boxes", "boxes", "classes", "iscrowd", "row_index"]
# columns of a training sample's key: epoch, global position in the epoch order, step, expected row
KEY_EPOCH, KEY_POSITION, KEY_STEP, KEY_ROW = range(4)

TRAIN_COLUMNS = ["image", "image_id", "boxes"] + [
    f"target_{kind}_s{stride}" for stride in STRIDES for kind in ("indices", "values")]


def _drop_crowd(labels: np.ndarray) -> np.ndarray:
    return labels[labels[:, 5] == 0]


class TrainBatchBuilder:
    """The per-batch function of the training pipeline (run in a worker thread)."""

    def __init__(self, *, seed, training_shape, resize_rate, shapes, augment: AugmentConfig,
                 anchors, anchor_t, max_boxes, decoder: RowDecoder, keys: np.ndarray, per_batch_size: int,
                 reduced_decode: bool = True):
        self.reduced_decode = bool(reduced_decode)
        self.keys = np.asarray(keys, np.int64)  # (S * B, 4): epoch, position, step, row of every sample
        self.per_batch_size = int(per_batch_size)
        self.seed = int(seed)
        self.training_shape = int(training_shape)
        self.resize_rate = int(resize_rate)
        self.shapes = tuple(shapes)
        self.augment = augment
        self.anchors = np.asarray(anchors, np.float32)
        self.anchor_t = float(anchor_t)
        self.max_boxes = int(max_boxes)
        self.decoder = decoder

    def batch_shape(self, epoch: int, step: int) -> int:
        return sampler_lib.batch_shape(seed=self.seed, epoch=epoch, step=step, resize_rate=self.resize_rate,
                                       shapes=self.shapes, training_shape=self.training_shape)

    def __deepcopy__(self, memo):  # nothing in it changes: copies would only duplicate the keys
        return self

    def __call__(self, image, height, width, image_id, num_boxes, boxes, classes, iscrowd, row_index, batch_info):
        keys = batch_keys(self.keys, batch_info, self.per_batch_size)  # (B, 4)
        check_rows(row_index, keys[:, KEY_ROW], self.decoder.manifest)
        row_index = keys[:, KEY_ROW]  # checked: from here on the global rows (messages name shard and row)
        epoch, step = int(keys[0, KEY_EPOCH]), int(keys[0, KEY_STEP])
        size = self.batch_shape(epoch, step)
        columns = (image, height, width, num_boxes, boxes, classes, iscrowd, row_index, image_id)
        target_long_side = size if self.reduced_decode else None
        images, labels, _ = self.decoder.decode_batch(columns, target_long_side=target_long_side)
        labels = [_drop_crowd(lab) for lab in labels]
        # The last pixel step (HSV, or BGR -> RGB) writes each sample straight into its slot of the
        # batch: no per-sample output image and no np.stack copy. MindDataset hands the returned
        # arrays on without copying them, so the batch array is new for every batch.
        batch_images = np.empty((len(images), size, size, 3), np.uint8)
        sample_labels = [augment_sample(self.augment, images, labels, seed=self.seed, epoch=epoch,
                                        position=int(keys[i, KEY_POSITION]), index=i, out=batch_images[i])
                         for i in range(len(images))]
        targets = build_targets(sample_labels, (size, size), anchors=self.anchors,
                                strides=STRIDES, anchor_t=self.anchor_t, max_boxes=self.max_boxes)
        image_ids = np.asarray([int(np.asarray(x).reshape(())) for x in image_id], np.int64)
        outputs = [batch_images, image_ids, targets["boxes"]]
        for stride in STRIDES:
            outputs += [targets[f"target_indices_s{stride}"], targets[f"target_values_s{stride}"]]
        return tuple(outputs)


def train_keys(num_samples: int, *, seed: int, start_epoch: int, start_step: int, num_epochs: int,
               per_batch_size: int, rank: int, group_size: int, dataset_id: str,
               image_weights=None) -> tuple[np.ndarray, np.ndarray]:
    """(rows, keys) of this rank's samples over ``num_epochs`` epochs from (start_epoch, start_step).

    ``rows`` (int64, (N,)): the MindRecord rows in reading order; ``keys`` (int64, (N, 4)): each
    sample's epoch, global position in the epoch order, step and expected row (``KEY_*`` columns).
    """
    rows, keys = [], []
    for offset in range(int(num_epochs)):
        epoch = int(start_epoch) + offset
        schedule = sampler_lib.rank_schedule(
            num_samples, seed=seed, epoch=epoch, per_batch_size=per_batch_size, rank=rank,
            group_size=group_size, dataset_key=dataset_id, start_step=start_step if offset == 0 else 0,
            image_weights=image_weights)
        # one step number per sample: (S,) -> (S*B,)
        steps = np.repeat(np.asarray(schedule.steps, np.int64), int(per_batch_size))
        rows.append(np.asarray(schedule.rows, np.int64))
        keys.append(np.stack([np.full(len(steps), epoch, np.int64), np.asarray(schedule.positions, np.int64),
                              steps, np.asarray(schedule.rows, np.int64)], axis=1))
    return np.concatenate(rows), np.concatenate(keys)


def _check_train_arguments(augment, *, anchors, anchor_t, per_batch_size, num_epochs, max_boxes,
                           resize_rate) -> AugmentConfig:
    """The augmentation settings to use (None: YOLOv5's defaults); raise ValueError for a bad argument."""
    if augment is None:
        augment = AugmentConfig()
    elif not isinstance(augment, AugmentConfig):
        raise ValueError(f"augment must be an AugmentConfig (or None for YOLOv5's defaults), got {augment!r}; "
                         f"make one from a mapping of options with AugmentConfig.from_mapping")
    check_anchors(anchors, STRIDES)
    check_anchor_t(anchor_t)
    if int(per_batch_size) < 1:
        raise ValueError(f"per_batch_size must be at least 1, got {per_batch_size}")
    if int(num_epochs) < 1:
        raise ValueError(f"num_epochs must be at least 1, got {num_epochs}")
    if int(max_boxes) < 1:
        raise ValueError(f"max_boxes must be at least 1, got {max_boxes}")
    if int(resize_rate) < 0:
        raise ValueError(f"resize_rate must be 0 (fixed shape) or a positive number of batches, got {resize_rate}")
    return augment


def create_train_dataset(mindrecord, *, per_batch_size: int, training_shape: int = 640, resize_rate: int = 0,
                         num_parallel_workers: int | None = None, rank: int = 0, group_size: int = 1,
                         seed: int = 0, start_epoch: int = 0, start_step: int = 0, num_epochs: int = 1,
                         max_boxes: int = 256, anchors=YOLOV5_ANCHORS, anchor_t: float = 4.0,
                         multiscale_shapes: Sequence[int] | None = None, skip_bad_rows: bool = False,
                         expected_dataset_id: str | None = None, opencv_threads: int | None = 1,
                         augment: AugmentConfig | None = None, reduced_decode: bool = True, image_weights=None):
    """A MindSpore dataset of training batches (columns ``TRAIN_COLUMNS``, see README).

    Covers ``num_epochs`` epochs from ``start_epoch`` (the first one from ``start_step``); iterate it
    once. ``augment``: the augmentation settings (None: YOLOv5's defaults; a mapping such as a yaml
    ``augment:`` section becomes one with ``AugmentConfig.from_mapping``).
    ``expected_dataset_id`` (from a checkpoint) makes a resume against changed shards fail.
    ``image_weights``: one sampling weight per stored image (row order) for YOLOv5's weighted sampling
    (``sampler.image_weights_from_classes``), or None for the plain shuffled order.
    ``reduced_decode``: decode a stored JPEG at 1/2, 1/4 or 1/8 size (libjpeg's DCT scaling) when that
    still leaves twice the batch's long side (``rows.reduced_decode_factor``; README, "Camera photos");
    False always decodes at the stored size (for measuring; the batches differ only by resampling).
    ``opencv_threads`` sets OpenCV's process-wide thread count (``limit_opencv_threads``; None
    leaves it alone). When ``augment.extras`` can apply, albumentations is imported here
    (``augment.extras.preload``), not in the first batch that draws an extra.
    Attributes set on the returned dataset: ``steps_per_epoch``, ``num_steps``, ``dataset_id``,
    ``manifest``, ``bad_rows`` (rows skipped with ``skip_bad_rows``).
    """
    augment = _check_train_arguments(augment, anchors=anchors, anchor_t=anchor_t, per_batch_size=per_batch_size,
                                     num_epochs=num_epochs, max_boxes=max_boxes, resize_rate=resize_rate)
    workers = resolve_num_workers(num_parallel_workers)
    files, manifest, folder = resolve_mindrecord(mindrecord)
    limit_opencv_threads(opencv_threads)
    dataset_id = manifest.dataset_id
    if expected_dataset_id is not None:
        sampler_lib.check_resume(expected_dataset_id, dataset_id)
    num_samples = manifest.num_images
    if num_samples < 1:
        raise ValueError(f"{folder} holds no images")
    shapes = tuple(multiscale_shapes) if multiscale_shapes else sampler_lib.multiscale_shapes(training_shape)
    if resize_rate == 0:
        sampler_lib.multiscale_shapes(training_shape)  # validates training_shape

    rows, keys = train_keys(num_samples, seed=seed, start_epoch=start_epoch, start_step=start_step,
                            num_epochs=num_epochs, per_batch_size=per_batch_size, rank=rank, group_size=group_size,
                            dataset_id=dataset_id, image_weights=image_weights)
    if len(rows) == 0:
        raise ValueError(f"start_step={start_step} leaves no batch in epoch {start_epoch}")

    if augment.extras > 0:
        extras.preload()  # here, not in the first batch that draws an extra (extras.preload)
    bad_rows = SkippedRowLog()
    builder = TrainBatchBuilder(
        seed=seed, training_shape=training_shape, resize_rate=resize_rate, shapes=shapes, augment=augment,
        anchors=anchors, anchor_t=anchor_t, max_boxes=max_boxes,
        decoder=RowDecoder(manifest, folder, skip_bad_rows, bad_rows), keys=keys, per_batch_size=per_batch_size,
        reduced_decode=reduced_decode)
    dataset = read_rows_in_order(files, rows, num_samples, workers, SOURCE_COLUMNS)
    dataset = dataset.batch(int(per_batch_size), drop_remainder=True, per_batch_map=builder,
                            input_columns=SOURCE_COLUMNS, output_columns=TRAIN_COLUMNS,
                            num_parallel_workers=workers, python_multiprocessing=False)
    dataset.steps_per_epoch = sampler_lib.steps_per_epoch(num_samples, int(per_batch_size) * int(group_size))
    dataset.num_steps = len(rows) // int(per_batch_size)
    dataset.dataset_id = dataset_id
    dataset.manifest = manifest
    dataset.bad_rows = bad_rows
    return dataset

