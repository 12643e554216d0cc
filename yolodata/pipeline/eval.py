"""The evaluation input pipeline: ``create_eval_dataset`` on the converter's MindRecord shards.

Which rows each batch holds and the shape it is letterboxed into are decided up front in Python
(``eval_batches.eval_keys``: square batches, or YOLOv5's rect batches); the rows are read in that
order (``rows.read_rows_in_order``) and one ``per_batch_map`` call in a thread decodes each image once
and letterboxes it into its slot of the batch (``EvalBatchBuilder``). Every image appears exactly once
across all ranks; padding rows, and rows skipped with ``skip_bad_rows``, have ``image_id`` -1.
"""
from __future__ import annotations

import cv2
import numpy as np

from ..augment import letterbox
from ..checks import resolve_num_workers
from ..schema import columns_of
from . import eval_batches
from .eval_batches import EvalGeometry
from .rows import (RowDecoder, SkippedRowLog, batch_keys, check_rows, limit_opencv_threads, read_rows_in_order,
                   resolve_mindrecord, stored_image_sizes)

# evaluation reads no labels: fewer columns to deserialise per row (about 0.1 ms of CPU per image);
# the original size and scale map detections back to the source picture (a schema 1 set has none)
EVAL_SOURCE_COLUMNS = ["image", "height", "width", "image_id", "row_index", "orig_height", "orig_width",
                       "stored_scale"]
EVAL_COLUMNS = ["image", "image_id", "orig_hw", "scale", "pad"]


class EvalBatchBuilder:
    """The per-batch function of the eval pipeline: decode, letterbox into the batch's shape, RGB.

    Each image is scaled so that its long side is ``testing_shape`` (never enlarged unless the geometry
    says ``scaleup``) and centred in its batch's shape (square, or the rect shape of ``eval_batches``).
    Images are decoded straight to RGB (``IMREAD_COLOR_RGB``: the same pixels as BGR decoding, in the
    output's order, without a conversion pass) and letterboxed straight into their slot of the batch
    array: one output buffer per batch, no per-image canvas and no ``np.stack`` copy. MindDataset
    hands the returned arrays on without copying them, so the buffer is new for every batch.
    """

    def __init__(self, testing_shape: int, decoder: RowDecoder, keys: np.ndarray, per_batch_size: int,
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
        check_rows(row_index, keys[:, eval_batches.KEY_ROW], self.decoder.manifest)
        row_index = keys[:, eval_batches.KEY_ROW]  # checked: from here on the global rows
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


def create_eval_dataset(mindrecord, *, per_batch_size: int, testing_shape: int = 640,
                        geometry: EvalGeometry = EvalGeometry(), num_parallel_workers: int | None = None,
                        rank: int = 0, group_size: int = 1, skip_bad_rows: bool = False,
                        opencv_threads: int | None = 1):
    """A MindSpore dataset of eval batches (columns ``EVAL_COLUMNS``, see README).

    Each image's long side becomes ``testing_shape`` (smaller images are not enlarged unless
    ``geometry.scaleup``); batches are square, or rectangular with ``geometry.rect``
    (``yolodata.pipeline.eval_batches``). Padding rows have ``image_id`` -1; each image appears exactly once
    across all ranks. With ``skip_bad_rows`` a row that fails to decode is logged and also given
    ``image_id`` -1 (its slot holds another row's pixels), so the image is missing from the results,
    never scored with another image's detections. ``opencv_threads``: as in ``create_train_dataset``.
    Attributes set on the returned dataset: ``num_steps``, ``manifest``, ``dataset_id``, ``bad_rows``
    (rows skipped with ``skip_bad_rows``), ``batch_shapes`` (the distinct (height, width) input shapes
    of this rank's batches).
    """
    if not isinstance(geometry, EvalGeometry):
        raise ValueError(f"geometry must be a yolodata.pipeline.eval_batches.EvalGeometry, got {geometry!r}")
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
    builder = EvalBatchBuilder(testing_shape, RowDecoder(manifest, folder, skip_bad_rows, bad_rows),
                               keys=keys, per_batch_size=per_batch_size, geometry=geometry)
    if not manifest.has_original_sizes:
        builder = SchemaOneEvalBatch(builder)
    dataset = read_rows_in_order(files, rows, num_samples, workers, columns)
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
