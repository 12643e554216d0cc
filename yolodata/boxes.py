"""Box helpers on the internal label array: float32 (N, 6) = x1, y1, x2, y2, class, iscrowd in pixels.

Conversions happen only at the edges (COCO xywh in here; grid-unit centre and size for the targets
in ``yolodata.pipeline.targets``). ``sanitize_boxes`` is the one place where boxes are filtered (the
converter after clipping to the image, every geometric augmentation after its final cut). Every
function is pure: it returns new arrays and never modifies its inputs.
"""
from __future__ import annotations

import numpy as np


def xywh_to_xyxy(xywh: np.ndarray) -> np.ndarray:
    xywh = np.asarray(xywh, np.float64).reshape(-1, 4)
    out = xywh.copy()
    out[:, 2:] = xywh[:, :2] + xywh[:, 2:]
    return out


def clip_boxes(labels: np.ndarray, width: float, height: float) -> np.ndarray:
    """Copy of ``labels`` with the box columns clipped to [0, width] x [0, height]."""
    out = np.array(labels, np.float32, copy=True)
    out[:, [0, 2]] = np.clip(out[:, [0, 2]], 0, width)
    out[:, [1, 3]] = np.clip(out[:, [1, 3]], 0, height)
    return out


def transform_boxes(labels: np.ndarray, matrix: np.ndarray) -> np.ndarray:
    """Copy of ``labels`` whose boxes went through the 3x3 pixel ``matrix`` (affine or perspective).

    The four corners of each box are transformed, then the axis-aligned hull is taken: the same matrix
    as the pixels, no second formula.
    """
    labels = np.asarray(labels, np.float32)
    out = labels.copy()
    if len(labels) == 0:
        return out
    x1, y1, x2, y2 = (labels[:, i].astype(np.float64) for i in range(4))
    # corners: (N, 4, 3) homogeneous points
    corners = np.stack([np.stack([x1, y1], -1), np.stack([x2, y1], -1),
                        np.stack([x2, y2], -1), np.stack([x1, y2], -1)], axis=1)
    corners = np.concatenate([corners, np.ones(corners.shape[:2] + (1,))], axis=-1)
    mapped = corners @ np.asarray(matrix, np.float64).T
    mapped = mapped[..., :2] / mapped[..., 2:3]
    out[:, 0:2] = mapped.min(axis=1)
    out[:, 2:4] = mapped.max(axis=1)
    return out


def sanitize_boxes(labels: np.ndarray, unclipped: np.ndarray | None = None, *, min_size: float = 2.0,
                   min_area_ratio: float = 0.1, max_aspect_ratio: float = 100.0,
                   eps: float = 1e-16) -> np.ndarray:
    """The one place where boxes are filtered: after clipping, drop the boxes too small or too cut.

    ``labels`` are already clipped to the canvas; ``unclipped`` are the same rows before clipping (same
    length). Keeps rows whose width and height exceed ``min_size`` pixels, that keep more than
    ``min_area_ratio`` of their unclipped area, and whose aspect ratio is below ``max_aspect_ratio``.
    Returns the kept rows (a new array).

    Every geometric augmentation ends with it, at YOLOv5's ``box_candidates`` thresholds (the
    defaults), after ``augment.geometry.transform_clip_boxes``: ``unclipped`` is then the transformed
    box in output pixels (its four corners' hull), i.e. after the affine (for a mosaic, after the box
    was cut to the part of its image shown in its tile, see augment/mosaic.py). The converter calls
    it with ``min_size=0`` and no aspect limit after clipping the stored boxes to their image.
    """
    labels = np.asarray(labels, np.float32)
    w = labels[:, 2] - labels[:, 0]
    h = labels[:, 3] - labels[:, 1]
    keep = (w > min_size) & (h > min_size)
    keep &= np.maximum(w / (h + eps), h / (w + eps)) < max_aspect_ratio
    if unclipped is not None:
        unclipped = np.asarray(unclipped, np.float32)
        uw = unclipped[:, 2] - unclipped[:, 0]
        uh = unclipped[:, 3] - unclipped[:, 1]
        keep &= (w * h) / (uw * uh + eps) > min_area_ratio
    return labels[keep].copy()
