"""Pictures of whole batches as a training step or an evaluation sees them (YOLOv5's ``train_batch0.jpg``,
``val_batch0_labels.jpg`` and ``val_batch0_pred.jpg``): a grid of the batch's images with their boxes
outlined in class colours and named, built on ``drawing.render_grid``.

The images are drawn as they are in the batch (letterboxed, augmented), so what a picture shows is
what the network was given. At most ``MAX_BATCH_IMAGES`` images; padding rows (image id -1) are left out.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np

from .drawing import Sample, render_grid
from .readers import batch_boxes_to_labels

MAX_BATCH_IMAGES = 16
PRED_CONF_THRESH = 0.25          # predictions drawn in val_batch*_pred.jpg (YOLOv5 draws those above 0.25)


def batch_tile_size(image_hw) -> int:
    """Tile size for a batch of images of ``image_hw``: their own size, between 128 and 320 pixels."""
    return int(np.clip(max(int(v) for v in image_hw), 128, 320))


def _grid(samples: list, class_names: Sequence[str], image_hw) -> np.ndarray:
    if not samples:
        raise ValueError("the batch has no real images to draw (every row is padding)")
    grid, _ = render_grid(samples, class_names, tile_size=batch_tile_size(image_hw))
    return grid


def train_batch_grid(images: np.ndarray, boxes: np.ndarray, image_ids: np.ndarray,
                     class_names: Sequence[str]) -> np.ndarray:
    """uint8 RGB grid of a train batch: ``images`` uint8 (B, H, W, 3) RGB, ``boxes`` (B, max_boxes, 6)
    x1, y1, x2, y2, class, valid (the pipeline's ``boxes`` column), ``image_ids`` (B,)."""
    images = np.asarray(images)
    samples = [Sample(images[k], batch_boxes_to_labels(boxes[k]), f"image {int(image_ids[k])}")
               for k in range(min(len(images), MAX_BATCH_IMAGES))]
    return _grid(samples, class_names, images.shape[1:3])


def eval_batch_grids(images: np.ndarray, image_ids: np.ndarray, truth: Sequence[np.ndarray],
                     detections: Sequence[np.ndarray], class_names: Sequence[str], *,
                     conf_thresh: float = PRED_CONF_THRESH) -> tuple[np.ndarray, np.ndarray]:
    """(labels grid, predictions grid) of an eval batch, both uint8 RGB.

    ``images`` uint8 (B, S, S, 3) RGB letterboxed; ``truth[k]``: float32 (N, 6) label array x1, y1, x2,
    y2, class, iscrowd in the letterboxed pixels; ``detections[k]``: (M, 6) x1, y1, x2, y2, score, class
    (NMS output) in the same pixels, drawn with their scores when above ``conf_thresh``.
    """
    images = np.asarray(images)
    real = [k for k in range(len(images)) if int(image_ids[k]) >= 0][:MAX_BATCH_IMAGES]
    labelled, predicted = [], []
    for k in real:
        caption = f"image {int(image_ids[k])}"
        labelled.append(Sample(images[k], np.asarray(truth[k], np.float32).reshape(-1, 6), caption))
        kept = np.asarray(detections[k], np.float32).reshape(-1, 6)
        kept = kept[kept[:, 4] > conf_thresh]
        as_labels = np.zeros((len(kept), 6), np.float32)
        as_labels[:, :4] = kept[:, :4]
        as_labels[:, 4] = kept[:, 5]
        predicted.append(Sample(images[k], as_labels, caption + f" (scores > {conf_thresh:g})", scores=kept[:, 4]))
    return _grid(labelled, class_names, images.shape[1:3]), _grid(predicted, class_names, images.shape[1:3])
