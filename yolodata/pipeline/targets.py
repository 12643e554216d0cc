"""YOLOv5 target assignment, vectorised over the batch, boxes, anchors and cells, into fixed-shape arrays.

The rule is YOLOv5's ``build_targets`` (utils/loss.py, v5.0/v6), run in the input pipeline instead of the
loss so that the loss only gathers and never matches:

* a box with centre (gx, gy) and size (gw, gh) in grid units of stride s (pixels / s) matches anchor a
  (its size in grid units, anchor pixels / s) when ``max(gw/aw, aw/gw, gh/ah, ah/gh) < anchor_t``;
* each match is written to up to three cells: the centre cell (floor(gx), floor(gy)); the x-neighbour,
  left (floor(gx) - 1) when frac(gx) < 0.5 and gx > 1, else right (floor(gx) + 1) when frac(gx) > 0.5
  and gx < W - 1; the y-neighbour likewise (up / down). Cell indices are clamped into the grid and
  tx, ty = (gx, gy) - the (clamped) cell's top-left corner, so they lie in (-0.5, 1.5) for boxes inside
  the image; tw, th = (gw, gh).

  YOLOv5 writes the right neighbour with gxi = W - gx: frac(gxi) < 0.5 and gxi > 1. That agrees with
  the rule above except when frac(gx) is exactly 0, where YOLOv5's "right" cell floor(gx + 0.5) is the
  centre cell again (a duplicate entry with the same tx); here it is simply not repeated.

Output (B images, N = max_boxes, A = 3 anchors per stride, K = N * A * 3):

* ``boxes``: float32 (B, N, 6) = x1, y1, x2, y2, class, valid in input pixels.
* per stride s: ``target_indices_s{s}`` int32 (B, K), flat index a*H*W + gy*W + gx into the head output
  viewed as (A, H, W); ``target_values_s{s}`` float32 (B, K, 6) = tx, ty, tw, th, class, valid.
  Entry k = (j*A + a)*3 + c for box slot j (the same slot as in ``boxes``), anchor a and cell
  c in (centre, x-neighbour, y-neighbour). Unused entries have index 0 and are all zeros (valid 0).
* ``num_dropped_boxes``: int, boxes beyond ``max_boxes`` in an image (the first ``max_boxes`` are kept,
  in input order); a warning is logged when it is not zero.

Rows that are not objects never enter ``boxes`` or the targets: crowd rows (iscrowd != 0) and rows whose
width or height is not positive (they could match no anchor; ``boxes.sanitize_boxes`` removes them
earlier in the pipeline anyway). They do not count against ``max_boxes``.

Arithmetic is float64 on the float32 inputs (exact for power-of-two strides, so cell boundaries are
decided exactly), and the results are stored as float32.
"""
from __future__ import annotations

import logging
import operator
from typing import Sequence

import numpy as np

from ..schema import NUM_LABEL_COLUMNS

logger = logging.getLogger(__name__)

STRIDES = (8, 16, 32)
# YOLOv5 anchors in input pixels, one row of three (width, height) per stride: float32 (3, 3, 2)
YOLOV5_ANCHORS = np.array([[[10, 13], [16, 30], [33, 23]],
                           [[30, 61], [62, 45], [59, 119]],
                           [[116, 90], [156, 198], [373, 326]]], np.float32)
YOLOV5_ANCHORS.setflags(write=False)
CELLS_PER_MATCH = 3          # centre, x-neighbour, y-neighbour
NUM_TARGET_COLUMNS = 6       # tx, ty, tw, th, class, valid
NUM_BOX_COLUMNS = 6          # x1, y1, x2, y2, class, valid


# --- validation -----------------------------------------------------------------------------------

def check_anchors(anchors, strides) -> np.ndarray:
    """float64 (S, A, 2) anchors, checked: one row of A (width, height) sizes in pixels per stride of
    ``strides`` (S positive integers), every size positive and finite."""
    try:
        anchors = np.asarray(anchors, np.float64)
    except (TypeError, ValueError):
        raise ValueError(f"anchors must be numbers: (width, height) in pixels per anchor and stride, "
                         f"got {anchors!r}") from None
    strides = tuple(strides)
    if anchors.ndim != 3 or anchors.shape[0] != len(strides) or anchors.shape[2] != 2:
        raise ValueError(f"anchors must have shape ({len(strides)}, num_anchors, 2): (width, height) in pixels "
                         f"for each of the strides {strides}, got shape {anchors.shape}")
    if not (np.isfinite(anchors).all() and (anchors > 0).all()):
        raise ValueError("anchors must be positive finite sizes in pixels")
    return anchors


def check_anchor_t(anchor_t) -> float:
    """``anchor_t`` as a float, checked: a box-to-anchor size ratio threshold greater than 1."""
    try:
        threshold = float(anchor_t)
    except (TypeError, ValueError):
        raise ValueError(f"anchor_t must be a number greater than 1, got {anchor_t!r}") from None
    if not threshold > 1.0:
        raise ValueError(f"anchor_t must be greater than 1 (a size ratio threshold; YOLOv5 uses 4.0), got {anchor_t}")
    return threshold


def _check_inputs(labels_list, input_hw, anchors, strides, anchor_t, max_boxes):
    """Validated (labels arrays, (H, W), anchors float64 (S, A, 2), strides, anchor_t, max_boxes)."""
    if isinstance(labels_list, np.ndarray) and labels_list.ndim != 3:
        raise ValueError("labels_list must be a sequence with one (N, 6) label array per image")
    arrays = []
    for i, labels in enumerate(labels_list):
        labels = np.asarray(labels, np.float32)
        if labels.size == 0:
            labels = labels.reshape(0, NUM_LABEL_COLUMNS)
        if labels.ndim != 2 or labels.shape[1] != NUM_LABEL_COLUMNS:
            raise ValueError(f"labels of image {i} must have shape (N, 6) (x1, y1, x2, y2, class, iscrowd), "
                             f"got {labels.shape}")
        if not np.isfinite(labels).all():
            raise ValueError(f"labels of image {i} contain NaN or infinite values")
        arrays.append(labels)
    strides = tuple(int(s) for s in strides)
    if not strides or min(strides) < 1:
        raise ValueError(f"strides must be positive integers, got {strides}")
    try:
        height, width = (int(v) for v in input_hw)
    except (TypeError, ValueError):
        raise ValueError(f"input_hw must be (height, width), got {input_hw!r}") from None
    for name, size in (("height", height), ("width", width)):
        bad = [s for s in strides if size < s or size % s]
        if bad:
            raise ValueError(f"input {name} {size} must be a positive multiple of every stride {strides} "
                             f"(use a multiple of {max(strides)})")
    anchors = check_anchors(anchors, strides)
    anchor_t = check_anchor_t(anchor_t)
    try:
        boxes_per_image = -1 if isinstance(max_boxes, bool) else operator.index(max_boxes)
    except TypeError:
        boxes_per_image = -1
    if boxes_per_image < 1:
        raise ValueError(f"max_boxes must be a positive integer (boxes kept per image), got {max_boxes!r}")
    return arrays, (height, width), anchors, strides, anchor_t, boxes_per_image


# --- the algorithm in small pure pieces -----------------------------------------------------------

def gather_boxes(arrays: Sequence[np.ndarray], max_boxes: int):
    """The boxes that become targets, for the whole batch at once.

    Returns (image_index int64 (M,), slot int64 (M,), labels float32 (M, 6), num_dropped int): object rows
    (not crowd, positive size) of every image in input order, the first ``max_boxes`` of each image,
    with their image and their slot j within the image.
    """
    batch_size = len(arrays)
    if batch_size == 0:
        return np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros((0, NUM_LABEL_COLUMNS), np.float32), 0
    counts_in = np.array([len(a) for a in arrays], np.int64)
    labels = np.concatenate(arrays, axis=0)
    image_index = np.repeat(np.arange(batch_size, dtype=np.int64), counts_in)
    is_object = ((labels[:, 5] == 0) & (labels[:, 2] > labels[:, 0]) & (labels[:, 3] > labels[:, 1]))
    labels, image_index = labels[is_object], image_index[is_object]
    counts = np.bincount(image_index, minlength=batch_size)
    first_of_image = np.cumsum(counts) - counts
    slot = np.arange(len(labels), dtype=np.int64) - first_of_image[image_index]
    keep = slot < max_boxes
    num_dropped = int(np.maximum(counts - max_boxes, 0).sum())
    return image_index[keep], slot[keep], labels[keep], num_dropped


def match_anchors(grid_wh: np.ndarray, anchor_wh: np.ndarray, anchor_t: float) -> np.ndarray:
    """bool (M, A): box m matches anchor a when max(w/aw, aw/w, h/ah, ah/h) < anchor_t.

    ``grid_wh`` (M, 2) and ``anchor_wh`` (A, 2) in the same units, sizes positive.
    """
    ratio = grid_wh[:, None, :] / anchor_wh[None, :, :]                # (M, A, 2)
    worst = np.maximum(ratio, 1.0 / ratio).max(axis=2)                 # (M, A)
    return worst < anchor_t


def candidate_cells(grid_xy: np.ndarray, grid_hw: tuple[int, int]):
    """The centre cell and the two nearest neighbour cells of each box centre.

    ``grid_xy`` float64 (M, 2) centres in grid units. Returns (cells int64 (M, 3, 2) as (x, y) clamped
    into the grid, usable bool (M, 3)) for c in (centre, x-neighbour, y-neighbour).
    """
    grid_h, grid_w = grid_hw
    limits = np.array([grid_w, grid_h], np.float64)                    # (2,) in x, y order
    corner = np.floor(grid_xy)
    frac = grid_xy - corner
    towards_start = (frac < 0.5) & (grid_xy > 1.0)                     # left / up
    towards_end = ~towards_start & (frac > 0.5) & (grid_xy < limits - 1.0)   # right / down
    step = towards_end.astype(np.int64) - towards_start.astype(np.int64)     # (M, 2): -1, 0 or +1
    cells = np.repeat(corner.astype(np.int64)[:, None, :], CELLS_PER_MATCH, axis=1)  # (M, 3, 2)
    cells[:, 1, 0] += step[:, 0]
    cells[:, 2, 1] += step[:, 1]
    usable = np.stack([np.ones(len(grid_xy), bool), step[:, 0] != 0, step[:, 1] != 0], axis=1)
    np.clip(cells[..., 0], 0, grid_w - 1, out=cells[..., 0])
    np.clip(cells[..., 1], 0, grid_h - 1, out=cells[..., 1])
    return cells, usable


def assign_stride(image_index, slot, labels, *, batch_size: int, max_boxes: int, input_hw,
                  stride: int, anchors_px: np.ndarray, anchor_t: float):
    """(indices int32 (B, K), values float32 (B, K, 6)) for one stride; see the module docstring."""
    grid_hw = (input_hw[0] // stride, input_hw[1] // stride)
    num_anchors = len(anchors_px)
    xyxy = labels[:, :4].astype(np.float64)
    grid_xy = (xyxy[:, :2] + xyxy[:, 2:]) * 0.5 / stride               # (M, 2)
    grid_wh = (xyxy[:, 2:] - xyxy[:, :2]) / stride                     # (M, 2)
    matched = match_anchors(grid_wh, anchors_px / stride, anchor_t)    # (M, A)
    cells, usable = candidate_cells(grid_xy, grid_hw)                  # (M, 3, 2), (M, 3)
    valid = matched[:, :, None] & usable[:, None, :]                   # (M, A, 3)

    anchor_offset = np.arange(num_anchors, dtype=np.int64)[None, :, None] * (grid_hw[0] * grid_hw[1])
    flat = anchor_offset + (cells[:, None, :, 1] * grid_hw[1] + cells[:, None, :, 0])  # (M, A, 3)
    values = np.zeros(valid.shape + (NUM_TARGET_COLUMNS,), np.float64)  # (M, A, 3, 6)
    values[..., 0:2] = (grid_xy[:, None, :] - cells)[:, None, :, :]
    values[..., 2:4] = grid_wh[:, None, None, :]
    values[..., 4] = labels[:, None, None, 4]
    values[..., 5] = 1.0
    values[~valid] = 0.0

    indices_out = np.zeros((batch_size, max_boxes, num_anchors, CELLS_PER_MATCH), np.int32)
    values_out = np.zeros((batch_size, max_boxes, num_anchors, CELLS_PER_MATCH, NUM_TARGET_COLUMNS),
                          np.float32)
    indices_out[image_index, slot] = np.where(valid, flat, 0)
    values_out[image_index, slot] = values
    num_entries = max_boxes * num_anchors * CELLS_PER_MATCH
    # (B, N, A, 3) -> (B, K) with k = (j*A + a)*3 + c
    return (indices_out.reshape(batch_size, num_entries),
            values_out.reshape(batch_size, num_entries, NUM_TARGET_COLUMNS))


def build_targets(labels_list, input_hw, *, anchors=YOLOV5_ANCHORS, strides=STRIDES, anchor_t: float = 4.0,
                  max_boxes: int = 256) -> dict:
    """YOLOv5 targets for one batch as fixed-shape arrays (see the module docstring for the layout).

    ``labels_list``: one float32 (N, 6) label array (x1, y1, x2, y2, class, iscrowd; input pixels) per
    image; ``input_hw``: the batch's (height, width), a multiple of every stride. Inputs are not modified.
    """
    arrays, input_hw, anchors, strides, anchor_t, max_boxes = _check_inputs(
        labels_list, input_hw, anchors, strides, anchor_t, max_boxes)
    batch_size = len(arrays)
    image_index, slot, labels, num_dropped = gather_boxes(arrays, max_boxes)
    if num_dropped:
        logger.warning("%d box(es) dropped: an image held more than max_boxes=%d boxes (the first %d are "
                       "kept); raise max_boxes to keep them", num_dropped, max_boxes, max_boxes)

    boxes = np.zeros((batch_size, max_boxes, NUM_BOX_COLUMNS), np.float32)
    boxes[image_index, slot, :5] = labels[:, :5]
    boxes[image_index, slot, 5] = 1.0
    result = {"boxes": boxes, "num_dropped_boxes": num_dropped}
    for stride, anchors_px in zip(strides, anchors):
        indices, values = assign_stride(image_index, slot, labels, batch_size=batch_size, max_boxes=max_boxes,
                                        input_hw=input_hw, stride=stride, anchors_px=anchors_px,
                                        anchor_t=anchor_t)
        result[f"target_indices_s{stride}"] = indices
        result[f"target_values_s{stride}"] = values
    return result
