"""Reading the converter's shards for both pipelines: which files, which rows in which order, decoding.

``resolve_mindrecord`` turns a converter output folder (or the list of its shards) into the shard
files, the manifest and the folder. ``read_rows_in_order`` reads exactly the given rows, in the given
order, with MindSpore's own ``MindDataset`` + ``SubsetSampler``. The per-batch functions of the train
and eval pipelines (``train``, ``eval``) find their batch's block of keys with ``batch_keys``, check
that the rows they were handed are the expected ones (``check_rows``), and decode each row once with a
``RowDecoder``, which names shard, image id and row when a row is bad (or, with ``skip_bad_rows``,
logs it in a ``SkippedRowLog`` and fills its slot with a good row of the batch).
"""
from __future__ import annotations

import logging
import os
import threading
from pathlib import Path

import cv2
import numpy as np

from ..image_io import decode_stored
from ..manifest import Manifest, load_manifest
from ..schema import row_labels

logger = logging.getLogger(__name__)


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


def check_rows(row_index, expected_rows: np.ndarray, manifest: Manifest) -> None:
    """Raise unless the rows MindDataset handed over are the expected global rows, in order (compared
    through their ``row_index`` column: ``Manifest.stored_row_index``, per file since schema 3)."""
    rows = np.asarray([int(np.asarray(r).reshape(())) for r in row_index])
    expected = manifest.stored_row_index(expected_rows)
    if not np.array_equal(rows, expected):
        raise RuntimeError(f"MindDataset returned rows whose row_index is {rows.tolist()} where the schedule "
                           f"expected global rows {np.asarray(expected_rows).tolist()} (row_index "
                           f"{expected.tolist()}): the shard files do not match the manifest")


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


class RowDecoder:
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


def read_rows_in_order(files, rows, num_rows, num_parallel_workers, columns):
    """A MindSpore dataset of the ``columns`` of ``rows`` (row indices), in exactly the given order.

    MindRecord's SubsetSampler refuses more indices than the file set has rows, so a longer list
    (several epochs, or an epoch padded to whole global batches) is cut into pieces of at most
    ``num_rows`` indices, read by one MindDataset each and concatenated in order.
    """
    import mindspore.dataset as ds  # on first read: importing the package (e.g. for --help) must not load MindSpore

    pieces = [ds.MindDataset([str(f) for f in files], columns_list=list(columns),
                             sampler=ds.SubsetSampler([int(r) for r in rows[start:start + num_rows]]),
                             num_parallel_workers=min(2, num_parallel_workers))
              for start in range(0, len(rows), num_rows)]
    records = pieces[0]
    for piece in pieces[1:]:
        records = records + piece
    return records


def stored_image_sizes(manifest: Manifest) -> np.ndarray:
    """int64 (num_images, 2): the stored height and width of every row, in row order (no image decoded)."""
    import mindspore.dataset as ds  # here, not at the top: as in read_rows_in_order

    reader = ds.MindDataset([str(p) for p in manifest.shard_paths], columns_list=["height", "width"],
                            shuffle=False)
    sizes = np.zeros((manifest.num_images, 2), np.int64)
    position = 0
    for position, row in enumerate(reader.create_dict_iterator(output_numpy=True, num_epochs=1)):
        sizes[position] = (int(row["height"]), int(row["width"]))
    if position + 1 != manifest.num_images:
        raise ValueError(f"{manifest.folder}: the shards hold {position + 1} rows, the manifest says "
                         f"{manifest.num_images}; the folder is damaged (re-run tools/coco2mindrecord.py)")
    return sizes


