"""Training and evaluation input pipelines on the converter's MindRecord shards.

How the guarantees are kept although ``MindDataset`` accepts no Python sampler
-------------------------------------------------------------------------------
The whole sample order is computed up front in Python (``yolodata.sampler.rank_schedule``): for the
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

import logging
import os
import threading
from pathlib import Path
from typing import Sequence

import cv2
import numpy as np

from . import eval_batches
from . import sampler as sampler_lib
from .augment import letterbox
from .augment.policy import AugmentConfig, augment_sample
from .checks import resolve_num_workers
from .eval_batches import EvalGeometry
from .image_io import decode_stored
from .manifest import Manifest, load_manifest
from .schema import columns_of, row_labels
from .targets import STRIDES, YOLOV5_ANCHORS, build_targets, check_anchors, check_anchor_t

logger = logging.getLogger(__name__)

SOURCE_COLUMNS = ["image", "height", "width", "image_id", "num_boxes", "boxes", "classes", "iscrowd", "row_index"]
# evaluation reads no labels: fewer columns to deserialise per row (about 0.1 ms of CPU per image);
# the original size and scale map detections back to the source picture (a schema 1 set has none)
EVAL_SOURCE_COLUMNS = ["image", "height", "width", "image_id", "row_index", "orig_height", "orig_width",
                       "stored_scale"]
# columns of a training sample's key: epoch, global position in the epoch order, step, expected row
KEY_EPOCH, KEY_POSITION, KEY_STEP, KEY_ROW = range(4)

TRAIN_COLUMNS = ["image", "image_id", "boxes"] + [
    f"target_{kind}_s{stride}" for stride in STRIDES for kind in ("indices", "values")]
EVAL_COLUMNS = ["image", "image_id", "orig_hw", "scale", "pad"]


def limit_opencv_threads(opencv_threads: int | None) -> None:
    """Let each OpenCV call use at most ``opencv_threads`` threads (process-wide); None: leave it.

    The pipeline already runs ``num_parallel_workers`` threads, one batch each, which keep the cores
    busy; OpenCV's own thread pool on top of that (cvtColor, LUT and resize split each image across
    the cores) only adds hand-over and spinning: 1 thread costs less CPU per training image, the more
    so the more the cores are contended, and the batches are bitwise the same. YOLOv5 likewise turns
    OpenCV's threading off in its loaders. The setting is OpenCV's global one, hence the opt-out.
    """
    if opencv_threads is None:
        return
    if int(opencv_threads) < 1:
        raise ValueError(f"opencv_threads must be at least 1 (or None to leave OpenCV's setting alone), "
                         f"got {opencv_threads}")
    import cv2

    cv2.setNumThreads(int(opencv_threads))


def resolve_mindrecord(mindrecord) -> tuple[list[str], Manifest, Path]:
    """(shard files in row order, manifest, folder) for a converter output folder or a list of shards."""
    if isinstance(mindrecord, (str, os.PathLike)) and Path(mindrecord).is_dir():
        folder = Path(mindrecord)
    elif isinstance(mindrecord, (list, tuple)) and mindrecord:
        folder = Path(mindrecord[0]).parent
    elif isinstance(mindrecord, (str, os.PathLike)) and Path(mindrecord).is_file():
        folder = Path(mindrecord).parent
    else:
        raise ValueError(f"mindrecord must be a folder written by tools/coco2mindrecord.py or a list of "
                         f"its shard files; got {mindrecord!r}")
    manifest = load_manifest(folder)
    files = [str(p) for p in manifest.shard_paths]
    if isinstance(mindrecord, (list, tuple)):
        given = sorted(str(Path(p).resolve()) for p in mindrecord)
        if given != sorted(str(Path(p).resolve()) for p in files):
            raise ValueError(f"the shard list must name every shard of {folder} ({len(files)} files); "
                             f"the sample order is defined over the whole set")
    return files, manifest, folder


def batch_keys(keys: np.ndarray, batch_info, per_batch_size: int) -> np.ndarray:
    """The keys of the batch ``batch_info`` describes: rows [b * B, (b + 1) * B) of ``keys``."""
    batch = int(batch_info.get_batch_num())
    block = keys[batch * per_batch_size:(batch + 1) * per_batch_size]
    if len(block) != per_batch_size:
        raise RuntimeError(f"batch {batch} lies beyond the {len(keys) // per_batch_size} batches this dataset "
                           f"was made for; iterate it once (one epoch of the iterator)")
    return block


def check_rows(row_index, expected_rows: np.ndarray) -> None:
    """Raise unless the rows MindDataset handed over are the expected ones, in order."""
    rows = np.asarray([int(np.asarray(r).reshape(())) for r in row_index])
    if not np.array_equal(rows, expected_rows):
        raise RuntimeError(f"MindDataset returned rows {rows.tolist()} where the schedule expected "
                           f"{expected_rows.tolist()}: the shard files do not match the manifest")


class SkippedRowLog:
    """The messages of the rows skipped with ``skip_bad_rows``, one per row; thread-safe."""

    def __init__(self):
        self._lock = threading.Lock()
        self.messages: list[str] = []

    def add(self, message: str):
        with self._lock:
            self.messages.append(message)

    def __len__(self):
        return len(self.messages)

    def __deepcopy__(self, memo):  # MindSpore may copy the batch function: keep sharing one counter
        return self


# JPEG reduced decoding only while the reduced picture keeps at least this many times the batch's long
# side: there its effect on the resized picture (measured: 0.6-9 gray levels mean absolute difference)
# is no larger than what the resize itself changes (bilinear versus area: 2.6-9.5), and the result is
# closer to the area-averaged picture; nearer the target it is not (1/2 of 1280 for 640: 1.2 against
# 0.06). benchmarks/large_photos.py measures it; README "Camera photos".
REDUCED_DECODE_MARGIN = 2


def reduced_decode_factor(stored_hw, target_long_side: int) -> int:
    """The JPEG decode reduction (1, 2, 4 or 8) for a stored picture resized to ``target_long_side``."""
    reduce = 1
    while reduce < 8 and max(stored_hw) // (reduce * 2) >= REDUCED_DECODE_MARGIN * int(target_long_side):
        reduce *= 2
    return reduce


class _RowDecoder:
    """Decodes the rows of one batch once each, naming shard and image id when a row is bad."""

    def __init__(self, manifest: Manifest, folder: Path, skip_bad_rows: bool, bad_rows: SkippedRowLog):
        self.manifest = manifest
        self.folder = folder
        self.skip_bad_rows = skip_bad_rows
        self.bad_rows = bad_rows

    def describe(self, row_index: int, image_id: int) -> str:
        shard = self.manifest.shard_of_row(int(row_index))
        return f"shard {self.folder / shard}, image_id {int(image_id)} (row {int(row_index)})"

    def decode_one(self, buf, height, width, num_boxes, boxes, classes, iscrowd, row_index, image_id,
                   target_long_side, rgb=False):
        """(BGR image, label array in that image's pixels) or raise ValueError naming the row.

        With ``target_long_side``, JPEGs are decoded at 1/2, 1/4 or 1/8 size (libjpeg's DCT scaling,
        cheaper than a full decode plus resize) when the result still has ``REDUCED_DECODE_MARGIN``
        times that long side or more (``reduced_decode_factor``).
        ``rgb=True`` decodes to RGB instead (same pixels, no extra pass).
        """
        try:
            labels = row_labels(num_boxes, boxes, classes, iscrowd)
            stored_h, stored_w = int(np.asarray(height).reshape(())), int(np.asarray(width).reshape(()))
            reduce = reduced_decode_factor((stored_h, stored_w), target_long_side) if target_long_side else 1
            image = decode_stored(np.asarray(buf), reduce=reduce, rgb=rgb)
            if reduce == 1 and image.shape[:2] != (stored_h, stored_w):
                raise ValueError(f"decoded to {image.shape[1]}x{image.shape[0]} but the row says "
                                 f"{stored_w}x{stored_h}")
            if reduce > 1 and len(labels):
                labels = labels.copy()
                labels[:, [0, 2]] *= image.shape[1] / stored_w
                labels[:, [1, 3]] *= image.shape[0] / stored_h
        except Exception as error:  # noqa: BLE001 - any failure of a row is reported with its identity
            raise ValueError(f"bad row in {self.describe(row_index, image_id)}: {error}") from error
        return image, labels

    def decode_batch(self, columns, target_long_side=None, rgb=False):
        """(images, labels, replaced) of a batch; with skip_bad_rows, a bad row gets a good row's image.

        ``replaced`` lists the positions whose image and labels came from another row: a training batch
        keeps them (they are only extra samples), an eval batch must not score them as that row's image.
        """
        images, labels, failures = [], [], []
        num_rows = len(columns[0])
        for i in range(num_rows):
            try:
                image, lab = self.decode_one(*(col[i] for col in columns), target_long_side, rgb)
            except ValueError as error:
                if not self.skip_bad_rows:
                    raise
                logger.warning("skipping %s", error)
                self.bad_rows.add(str(error))
                image, lab = None, None
                failures.append(i)
            images.append(image)
            labels.append(lab)
        good = [i for i in range(num_rows) if images[i] is not None]
        if not good:
            raise ValueError("every row of a batch failed to decode; first: " + self.bad_rows.messages[-1])
        for i in failures:  # replace with the next good row of the batch (deterministic)
            donor = min(good, key=lambda g: (g - i) % num_rows)
            images[i], labels[i] = images[donor], labels[donor]
        return images, labels, failures


def _drop_crowd(labels: np.ndarray) -> np.ndarray:
    return labels[labels[:, 5] == 0]


class TrainBatchBuilder:
    """The per-batch function of the training pipeline (run in a worker thread)."""

    def __init__(self, *, seed, training_shape, resize_rate, shapes, augment: AugmentConfig,
                 anchors, anchor_t, max_boxes, decoder: _RowDecoder, keys: np.ndarray, per_batch_size: int,
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
        check_rows(row_index, keys[:, KEY_ROW])
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


def _source(files, rows, num_rows, num_parallel_workers, columns=SOURCE_COLUMNS):
    """Rows in exactly the given order.

    MindRecord's SubsetSampler refuses more indices than the file set has rows, so a longer list
    (several epochs, or an epoch padded to whole global batches) is cut into pieces of at most
    ``num_rows`` indices, read by one MindDataset each and concatenated in order.
    """
    import mindspore.dataset as ds

    pieces = [ds.MindDataset(files[0], columns_list=list(columns),
                             sampler=ds.SubsetSampler([int(r) for r in rows[start:start + num_rows]]),
                             num_parallel_workers=min(2, num_parallel_workers))
              for start in range(0, len(rows), num_rows)]
    records = pieces[0]
    for piece in pieces[1:]:
        records = records + piece
    return records


def create_train_dataset(mindrecord, *, per_batch_size: int, training_shape: int = 640, resize_rate: int = 0,
                         num_parallel_workers: int | None = None, rank: int = 0, group_size: int = 1,
                         seed: int = 0, start_epoch: int = 0, start_step: int = 0, num_epochs: int = 1,
                         max_boxes: int = 256, anchors=YOLOV5_ANCHORS, anchor_t: float = 4.0,
                         multiscale_shapes: Sequence[int] | None = None, skip_bad_rows: bool = False,
                         expected_dataset_id: str | None = None, opencv_threads: int | None = 1,
                         augment: AugmentConfig | None = None, reduced_decode: bool = True):
    """A MindSpore dataset of training batches (columns ``TRAIN_COLUMNS``, see README).

    Covers ``num_epochs`` epochs from ``start_epoch`` (the first one from ``start_step``); iterate it
    once. ``augment``: the augmentation settings (None: YOLOv5's defaults; a mapping such as a yaml
    ``augment:`` section becomes one with ``AugmentConfig.from_mapping``).
    ``expected_dataset_id`` (from a checkpoint) makes a resume against changed shards fail.
    ``reduced_decode``: decode a stored JPEG at 1/2, 1/4 or 1/8 size (libjpeg's DCT scaling) when that
    still leaves twice the batch's long side (``reduced_decode_factor``; README, "Camera photos");
    False always decodes at the stored size (for measuring; the batches differ only by resampling).
    ``opencv_threads`` sets OpenCV's process-wide thread count (``limit_opencv_threads``; None
    leaves it alone).
    Attributes set on the returned dataset: ``steps_per_epoch``, ``num_steps``, ``dataset_id``,
    ``manifest``, ``bad_rows`` (rows skipped with ``skip_bad_rows``).
    """
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

    rows, keys = [], []
    for offset in range(int(num_epochs)):
        epoch = int(start_epoch) + offset
        schedule = sampler_lib.rank_schedule(
            num_samples, seed=seed, epoch=epoch, per_batch_size=per_batch_size, rank=rank,
            group_size=group_size, dataset_key=dataset_id, start_step=start_step if offset == 0 else 0)
        # one step number per sample: (S,) -> (S*B,)
        steps = np.repeat(np.asarray(schedule.steps, np.int64), int(per_batch_size))
        rows.append(np.asarray(schedule.rows, np.int64))
        keys.append(np.stack([np.full(len(steps), epoch, np.int64), np.asarray(schedule.positions, np.int64),
                              steps, np.asarray(schedule.rows, np.int64)], axis=1))
    rows = np.concatenate(rows)
    keys = np.concatenate(keys)
    if len(rows) == 0:
        raise ValueError(f"start_step={start_step} leaves no batch in epoch {start_epoch}")

    bad_rows = SkippedRowLog()
    builder = TrainBatchBuilder(
        seed=seed, training_shape=training_shape, resize_rate=resize_rate, shapes=shapes, augment=augment,
        anchors=anchors, anchor_t=anchor_t, max_boxes=max_boxes,
        decoder=_RowDecoder(manifest, folder, skip_bad_rows, bad_rows), keys=keys, per_batch_size=per_batch_size,
        reduced_decode=reduced_decode)
    dataset = _source(files, rows, num_samples, workers)
    dataset = dataset.batch(int(per_batch_size), drop_remainder=True, per_batch_map=builder,
                            input_columns=SOURCE_COLUMNS, output_columns=TRAIN_COLUMNS,
                            num_parallel_workers=workers, python_multiprocessing=False)
    dataset.steps_per_epoch = sampler_lib.steps_per_epoch(num_samples, int(per_batch_size) * int(group_size))
    dataset.num_steps = len(rows) // int(per_batch_size)
    dataset.dataset_id = dataset_id
    dataset.manifest = manifest
    dataset.bad_rows = bad_rows
    return dataset


class EvalBatchBuilder:
    """The per-batch function of the eval pipeline: decode, letterbox into the batch's shape, RGB.

    Each image is scaled so that its long side is ``testing_shape`` (never enlarged unless the geometry
    says ``scaleup``) and centred in its batch's shape (square, or the rect shape of ``eval_batches``).
    Images are decoded straight to RGB (``IMREAD_COLOR_RGB``: the same pixels as BGR decoding, in the
    output's order, without a conversion pass) and letterboxed straight into their slot of the batch
    array: one output buffer per batch, no per-image canvas and no ``np.stack`` copy. MindDataset
    hands the returned arrays on without copying them, so the buffer is new for every batch.
    """

    def __init__(self, testing_shape: int, decoder: _RowDecoder, keys: np.ndarray, per_batch_size: int,
                 geometry: EvalGeometry):
        self.testing_shape = int(testing_shape)
        self.decoder = decoder
        self.keys = np.asarray(keys, np.int64)  # (S * B, 4): row, valid, batch height, batch width
        self.per_batch_size = int(per_batch_size)
        self.geometry = geometry
        self.shrink_interpolation = cv2.INTER_AREA if geometry.interpolation == "yolov5" else cv2.INTER_LINEAR

    def __deepcopy__(self, memo):  # nothing in it changes: copies would only duplicate the keys
        return self

    def __call__(self, image, height, width, image_id, row_index, orig_height, orig_width, stored_scale,
                 batch_info):
        """One batch; ``orig_height``, ``orig_width``, ``stored_scale`` are None for a schema 1 set."""
        keys = batch_keys(self.keys, batch_info, self.per_batch_size)  # (B, 4)
        check_rows(row_index, keys[:, eval_batches.KEY_ROW])
        batch_h, batch_w = int(keys[0, eval_batches.KEY_HEIGHT]), int(keys[0, eval_batches.KEY_WIDTH])
        no_labels = [0] * len(image)  # the decoder's label columns: zero boxes per row (never read)
        columns = (image, height, width, no_labels, no_labels, no_labels, no_labels, row_index, image_id)
        images, _, replaced = self.decoder.decode_batch(columns, rgb=True)
        valid = keys[:, eval_batches.KEY_VALID] == 1
        valid[replaced] = False  # a skipped row carries another row's pixels: never score them as its own
        batch_images = np.empty((len(images), batch_h, batch_w, 3), np.uint8)
        scales = np.empty(len(images), np.float64)
        pads = np.empty((len(images), 2), np.float32)
        for k, img in enumerate(images):
            # the scale-up decision and the letterbox work on the stored picture, as val.py's on the loaded one
            scale = letterbox.long_side_scale(img.shape[:2], self.testing_shape, scaleup=self.geometry.scaleup)
            scales[k], pads[k] = letterbox.letterbox_into(img, batch_images[k], scale=scale,
                                                          shrink_interpolation=self.shrink_interpolation)
        orig_hw, stored_scales = original_geometry(images, replaced, orig_height, orig_width, stored_scale)
        image_ids = np.asarray([int(np.asarray(x).reshape(())) for x in image_id], np.int64)
        image_ids = np.where(valid, image_ids, -1)
        # letterboxed = stored * scale + pad and stored = original * stored_scale: one scale from the original
        scales = (scales * stored_scales).astype(np.float32)
        return batch_images, image_ids, orig_hw, scales, pads


class SchemaOneEvalBatch:
    """The eval batch function for a schema 1 set (no original-size columns: pictures at their size)."""

    def __init__(self, builder: EvalBatchBuilder):
        self.builder = builder

    def __deepcopy__(self, memo):
        return self

    def __call__(self, image, height, width, image_id, row_index, batch_info):
        return self.builder(image, height, width, image_id, row_index, None, None, None, batch_info)


def original_geometry(images, replaced, orig_height, orig_width, stored_scale):
    """(int32 (B, 2) original height and width, float64 (B,) stored pixels per original pixel) of a batch.

    A schema 1 set (no such columns) stored every picture at its original size. A replaced row (skipped
    with skip_bad_rows) keeps its decoded donor's size; it is never scored.
    """
    if orig_height is None:
        return (np.asarray([img.shape[:2] for img in images], np.int32).reshape(-1, 2),
                np.ones(len(images), np.float64))
    orig_hw = np.stack([[int(np.asarray(h).reshape(())) for h in orig_height],
                        [int(np.asarray(w).reshape(())) for w in orig_width]], axis=1).astype(np.int32)
    scales = np.asarray([float(np.asarray(x).reshape(())) for x in stored_scale], np.float64)
    for k in replaced:
        orig_hw[k], scales[k] = images[k].shape[:2], 1.0
    return orig_hw, scales


def stored_image_sizes(manifest: Manifest) -> np.ndarray:
    """int64 (num_images, 2): the stored height and width of every row, in row order (no image decoded)."""
    import mindspore.dataset as ds

    reader = ds.MindDataset(str(manifest.shard_paths[0]), columns_list=["height", "width", "row_index"],
                            shuffle=False)
    sizes = np.zeros((manifest.num_images, 2), np.int64)
    for row in reader.create_dict_iterator(output_numpy=True, num_epochs=1):
        sizes[int(row["row_index"])] = (int(row["height"]), int(row["width"]))
    return sizes


def create_eval_dataset(mindrecord, *, per_batch_size: int, testing_shape: int = 640,
                        geometry: EvalGeometry = EvalGeometry(), num_parallel_workers: int | None = None,
                        rank: int = 0, group_size: int = 1, skip_bad_rows: bool = False,
                        opencv_threads: int | None = 1):
    """A MindSpore dataset of eval batches (columns ``EVAL_COLUMNS``, see README).

    Each image's long side becomes ``testing_shape`` (smaller images are not enlarged unless
    ``geometry.scaleup``); batches are square, or rectangular with ``geometry.rect``
    (``yolodata.eval_batches``). Padding rows have ``image_id`` -1; each image appears exactly once
    across all ranks. With ``skip_bad_rows`` a row that fails to decode is logged and also given
    ``image_id`` -1 (its slot holds another row's pixels), so the image is missing from the results,
    never scored with another image's detections. ``opencv_threads``: as in ``create_train_dataset``.
    Attributes set on the returned dataset: ``num_steps``, ``manifest``, ``dataset_id``, ``bad_rows``
    (rows skipped with ``skip_bad_rows``), ``batch_shapes`` (the distinct (height, width) input shapes
    of this rank's batches).
    """
    if not isinstance(geometry, EvalGeometry):
        raise ValueError(f"geometry must be a yolodata.eval_batches.EvalGeometry, got {geometry!r}")
    workers = resolve_num_workers(num_parallel_workers)
    files, manifest, folder = resolve_mindrecord(mindrecord)
    limit_opencv_threads(opencv_threads)
    num_samples = manifest.num_images
    if geometry.rect:
        sizes = stored_image_sizes(manifest)
    else:
        sizes = np.ones((num_samples, 2), np.int64)  # square batches do not depend on the sizes
    keys = eval_batches.eval_keys(sizes, per_batch_size=per_batch_size, testing_shape=testing_shape, rank=rank,
                                  group_size=group_size, geometry=geometry)
    rows = keys[:, eval_batches.KEY_ROW]
    columns = columns_of(manifest.schema_version, EVAL_SOURCE_COLUMNS)
    bad_rows = SkippedRowLog()
    builder = EvalBatchBuilder(testing_shape, _RowDecoder(manifest, folder, skip_bad_rows, bad_rows),
                               keys=keys, per_batch_size=per_batch_size, geometry=geometry)
    if not manifest.has_original_sizes:
        builder = SchemaOneEvalBatch(builder)
    dataset = _source(files, rows, num_samples, workers, columns)
    dataset = dataset.batch(int(per_batch_size), drop_remainder=True, per_batch_map=builder,
                            input_columns=columns, output_columns=EVAL_COLUMNS,
                            num_parallel_workers=workers, python_multiprocessing=False)
    dataset.num_steps = len(rows) // int(per_batch_size)
    dataset.manifest = manifest
    dataset.dataset_id = manifest.dataset_id
    dataset.bad_rows = bad_rows
    dataset.batch_shapes = sorted({(int(h), int(w)) for h, w in keys[:, [eval_batches.KEY_HEIGHT,
                                                                         eval_batches.KEY_WIDTH]]})
    return dataset
