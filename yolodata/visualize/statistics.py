"""Label statistics of a dataset: instances per class, boxes per image, box centres and sizes relative
to the image (what YOLOv5's ``labels.jpg`` shows), and their short text summary. Pure functions."""
from __future__ import annotations

import dataclasses
from typing import Iterable, Sequence

import numpy as np

from ..schema import NUM_LABEL_COLUMNS


@dataclasses.dataclass(frozen=True)
class LabelStatistics:
    """Counts and box geometry of every stored box (crowd boxes included, as the manifest counts them).

    ``relative_centres`` / ``relative_sizes``: float64 (N, 2) box centre and width/height divided by the
    stored image's width and height; ``box_classes`` int64 (N,) in the same order.
    """

    num_images: int
    num_crowd_boxes: int
    boxes_per_class: np.ndarray
    boxes_per_image: np.ndarray
    box_classes: np.ndarray
    relative_centres: np.ndarray
    relative_sizes: np.ndarray

    @property
    def num_boxes(self) -> int:
        return int(self.boxes_per_image.sum())

    @property
    def num_background_images(self) -> int:
        return int((self.boxes_per_image == 0).sum())

    def counts_by_key(self, keys: Sequence[str]) -> dict:
        """{key: boxes of class i} for the keys of the classes in index order (see ``category_keys``)."""
        if len(keys) != len(self.boxes_per_class):
            raise ValueError(f"expected {len(self.boxes_per_class)} keys (one per class), got {len(keys)}")
        return {key: int(count) for key, count in zip(keys, self.boxes_per_class)}


def label_statistics(rows: Iterable, num_classes: int) -> LabelStatistics:
    """Statistics of ``rows``: (image_id, height, width, label array (N, 6)) per stored image.

    Raises ValueError naming the image when a class index is outside [0, num_classes) or an image size
    is not positive.
    """
    if int(num_classes) != num_classes or num_classes < 1:
        raise ValueError(f"num_classes must be a positive integer, got {num_classes!r}")
    per_image, classes, centres, sizes = [], [], [], []
    crowd = 0
    for image_id, height, width, labels in rows:
        labels = np.asarray(labels, np.float64).reshape(-1, NUM_LABEL_COLUMNS)
        height, width = int(height), int(width)
        if height < 1 or width < 1:
            raise ValueError(f"image_id {image_id}: stored size {width}x{height} is not positive")
        row_classes = labels[:, 4].astype(np.int64)
        bad = row_classes[(row_classes < 0) | (row_classes >= num_classes)]
        if bad.size:
            raise ValueError(f"image_id {image_id}: class index {int(bad[0])} is outside 0..{num_classes - 1} "
                             f"(the manifest's categories)")
        image_wh = np.array([width, height], np.float64)
        per_image.append(len(labels))
        classes.append(row_classes)
        centres.append((labels[:, 0:2] + labels[:, 2:4]) / 2 / image_wh)
        sizes.append((labels[:, 2:4] - labels[:, 0:2]) / image_wh)
        crowd += int((labels[:, 5] != 0).sum())
    box_classes = np.concatenate(classes) if classes else np.zeros(0, np.int64)
    return LabelStatistics(
        num_images=len(per_image), num_crowd_boxes=crowd,
        boxes_per_class=np.bincount(box_classes, minlength=int(num_classes)).astype(np.int64),
        boxes_per_image=np.asarray(per_image, np.int64), box_classes=box_classes,
        relative_centres=np.concatenate(centres) if centres else np.zeros((0, 2)),
        relative_sizes=np.concatenate(sizes) if sizes else np.zeros((0, 2)))


def format_statistics(stats: LabelStatistics, keys: Sequence[str]) -> str:
    """A short text summary: images, boxes, per-class counts (classes without boxes listed together)."""
    mean = stats.num_boxes / stats.num_images if stats.num_images else 0.0
    most = int(stats.boxes_per_image.max()) if stats.num_images else 0
    lines = [f"images: {stats.num_images} ({stats.num_background_images} without boxes)",
             f"boxes: {stats.num_boxes} ({stats.num_crowd_boxes} crowd), {mean:.2f} per image, "
             f"at most {most} in one image",
             "boxes per class:"]
    counts = stats.counts_by_key(keys)
    width = max((len(k) for k in keys), default=0)
    lines += [f"  {key:<{width}}  {count}" for key, count in counts.items() if count]
    empty = [key for key, count in counts.items() if not count]
    if empty:
        lines.append(f"  {len(empty)} class(es) without boxes: {', '.join(empty)}")
    return "\n".join(lines)
