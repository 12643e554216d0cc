"""The training shards' labels, read once when something before the first step needs them (AutoAnchor,
``--image_weights``), and YOLOv5's per-image sampling weights from them."""
from __future__ import annotations

import logging

import numpy as np

from yolodata.pipeline import sampler
from yolodata.visualize.readers import read_label_rows

logger = logging.getLogger(__name__)


class TrainingLabels:
    """(height, width, label array) per stored image in row order, read from the shards on first use."""

    def __init__(self, mindrecord, num_workers=None):
        self.mindrecord = mindrecord
        self.num_workers = num_workers
        self._rows = None

    def rows(self) -> list:
        if self._rows is None:
            self._rows = [(height, width, labels) for _, height, width, labels in
                          read_label_rows(self.mindrecord, num_workers=self.num_workers)]
        return self._rows


def boxes_per_image_and_class(rows, num_classes: int) -> np.ndarray:
    """int64 (N, C): each image's number of non-crowd boxes of each class (what the pipeline trains on)."""
    counts = np.zeros((len(rows), int(num_classes)), np.int64)
    for index, (_, _, labels) in enumerate(rows):
        classes = labels[labels[:, 5] == 0, 4].astype(np.int64)
        counts[index] = np.bincount(classes, minlength=int(num_classes))[:int(num_classes)]
    return counts


def image_weights_for(labels: TrainingLabels, num_classes: int, log=logger.info) -> np.ndarray:
    """YOLOv5's image weights from the class frequencies of the training boxes (see ``sampler``)."""
    counts = boxes_per_image_and_class(labels.rows(), num_classes)
    weights = sampler.image_weights_from_classes(counts)
    num_unused = int((weights == 0).sum())
    per_class = counts.sum(axis=0)
    log(f"--image_weights: each epoch draws {len(weights)} images with replacement, weighted by their classes' "
        f"inverse frequencies (boxes per class from {int(per_class.min())} to {int(per_class.max())}); class "
        f"frequencies only: YOLOv5's (1 - class mAP)^2 factor is not applied (this trainer's per-class mAP is "
        f"computed on rank 0 and not kept in checkpoints, so the order would depend on the rank count and "
        f"on resuming)" + (f"; {num_unused} images without boxes are never drawn" if num_unused else ""))
    return weights
