"""COCO annotations -> the label arrays stored in the rows (float32 (N, 6): xyxy pixels, class, iscrowd).

COCO boxes are [x, y, w, h] in pixels; they become xyxy, are clipped to the image, and rows of zero
or negative width or height after clipping are dropped (counted). Crowd boxes are kept, flagged.
``verify`` recomputes the rows' arrays with the same functions.
"""
from __future__ import annotations

import numpy as np

from .. import boxes as boxes_lib
from ..schema import NUM_LABEL_COLUMNS, placeholder_arrays

LABEL_CHUNK_IMAGES = 2 ** 20         # images per numpy pass in labels_for_images (owner index exact in float32)


def labels_from_annotations(annotations: list, class_of_category: dict, width: int,
                            height: int) -> tuple[np.ndarray, int, int]:
    """(label array float32 (N, 6), boxes clipped, boxes dropped) for one image's checked annotations."""
    if not annotations:
        return np.zeros((0, NUM_LABEL_COLUMNS), np.float32), 0, 0
    labels = np.empty((len(annotations), NUM_LABEL_COLUMNS), np.float32)
    labels[:, :4] = boxes_lib.xywh_to_xyxy(np.array([a["bbox"] for a in annotations], np.float64))
    labels[:, 4] = [class_of_category[a["category_id"]] for a in annotations]
    labels[:, 5] = [int(a.get("iscrowd", 0)) for a in annotations]
    clipped = boxes_lib.clip_boxes(labels, width, height)
    num_clipped = int(np.any(clipped[:, :4] != labels[:, :4], axis=1).sum())
    kept = boxes_lib.sanitize_boxes(clipped, min_size=0.0, max_aspect_ratio=np.inf)
    return kept, num_clipped, len(clipped) - len(kept)


def _labels_for_chunk(annotation_lists: list, class_of_category: dict, widths: list, heights: list) -> list:
    counts = np.array([len(annotations) for annotations in annotation_lists], np.int64)
    flat = [ann for annotations in annotation_lists for ann in annotations]
    if not flat:
        return [labels_from_annotations([], class_of_category, 0, 0) for _ in annotation_lists]
    owner = np.repeat(np.arange(len(annotation_lists)), counts)
    # one label row per annotation plus its image's position in the chunk: float32 (A, 7)
    labels = np.empty((len(flat), NUM_LABEL_COLUMNS + 1), np.float32)
    labels[:, :4] = boxes_lib.xywh_to_xyxy(np.array([a["bbox"] for a in flat], np.float64))
    labels[:, 4] = [class_of_category[a["category_id"]] for a in flat]
    labels[:, 5] = [int(a.get("iscrowd", 0)) for a in flat]
    labels[:, 6] = owner
    # each row's image size as float64 (A, 1), broadcast against the box columns
    width_of_row = np.asarray(widths, np.float64)[owner][:, None]
    height_of_row = np.asarray(heights, np.float64)[owner][:, None]
    clipped = boxes_lib.clip_boxes(labels, width_of_row, height_of_row)
    changed = np.any(clipped[:, :4] != labels[:, :4], axis=1)
    kept = boxes_lib.sanitize_boxes(clipped, min_size=0.0, max_aspect_ratio=np.inf)
    kept_owner = kept[:, 6].astype(np.int64)
    kept_counts = np.bincount(kept_owner, minlength=len(annotation_lists))
    clipped_counts = np.bincount(owner, weights=changed, minlength=len(annotation_lists)).astype(np.int64)
    pieces = np.split(np.ascontiguousarray(kept[:, :NUM_LABEL_COLUMNS]), np.cumsum(kept_counts)[:-1])
    return [(piece, int(num_clipped), int(count - num_kept))
            for piece, num_clipped, count, num_kept in zip(pieces, clipped_counts, counts, kept_counts)]


def labels_for_images(annotation_lists: list, class_of_category: dict, widths: list, heights: list) -> list:
    """``labels_from_annotations`` for many images in a few numpy passes: the same arrays, bit for bit.

    Returns [(label array float32 (N_i, 6), boxes clipped, boxes dropped)], one per image. Every row is
    computed by the same operations as in the per-image function (clipping and ``sanitize_boxes`` act
    row by row), only on all images' annotations at once.
    """
    out = []
    for start in range(0, len(annotation_lists), LABEL_CHUNK_IMAGES):
        stop = start + LABEL_CHUNK_IMAGES
        out += _labels_for_chunk(annotation_lists[start:stop], class_of_category, widths[start:stop],
                                 heights[start:stop])
    return out


def row_arrays(labels: np.ndarray) -> tuple[int, np.ndarray, np.ndarray, np.ndarray]:
    """(num_boxes, boxes float32 (M, 4), classes int32 (M,), iscrowd int32 (M,)), M = max(num_boxes, 1).

    A background image stores the schema's placeholder row (see yolodata.schema).
    """
    if len(labels) == 0:
        return (0, *placeholder_arrays())
    return (len(labels), np.ascontiguousarray(labels[:, :4], np.float32),
            labels[:, 4].astype(np.int32), labels[:, 5].astype(np.int32))
