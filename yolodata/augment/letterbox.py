"""Letterbox: resize keeping the aspect ratio, pad to the target size with gray 114, centred.

Used for the non-mosaic training path (as a matrix composed with the random affine, one warp) and for
evaluation, where the scale is ``long_side_scale``: the image's long side becomes the test size, and
with ``scaleup=False`` (this project's default) images smaller than that are not enlarged. YOLOv5's
val.py does enlarge them (its ``load_image`` resizes every image so that its long side equals the test
size, in v5.0 as in v6.1 and v7.0; its letterbox then only pads); ``scaleup=True`` does the same.

The mapping is ``letterboxed = original * scale + pad`` on both axes (edge coordinates, see
geometry.py), with integer pads so the image starts on a pixel boundary; ``unletterbox_boxes`` is its
exact inverse: ``original = (letterboxed - pad) / scale``.

``letterbox`` (and ``letterbox_into``, which writes into the caller's buffer, e.g. a batch slot)
renders it with ``cv2.resize(fx=scale, fy=scale)`` written straight into a view of the 114 canvas
(faster than a warp): given ``fx``/``fy``, OpenCV samples with exactly that scale (its
source point for pixel ``d`` is ``(d + 0.5) / scale - 0.5``, the edge convention), and makes the image
``round(w * scale)`` pixels wide, so its pixels match the matrix to within the sub-pixel rounding of
that size.
"""
from __future__ import annotations

import cv2
import numpy as np

from ..boxes import clip_boxes, sanitize_boxes
from .geometry import BORDER_VALUE, check_hw, check_image, check_labels, transform_clip_boxes


def letterbox_scale(src_hw, dst_hw, *, scaleup: bool = True) -> float:
    """The largest scale that fits ``src_hw`` into ``dst_hw`` (at most 1 unless ``scaleup``)."""
    src_h, src_w = check_hw("src_hw", src_hw)
    dst_h, dst_w = check_hw("dst_hw", dst_hw)
    scale = min(dst_h / src_h, dst_w / src_w)
    return scale if scaleup else min(scale, 1.0)


def long_side_scale(src_hw, long_side: int, *, scaleup: bool) -> float:
    """The evaluation scale: ``long_side / max(h, w)``, at most 1 unless ``scaleup``."""
    src_h, src_w = check_hw("src_hw", src_hw)
    scale = int(long_side) / max(src_h, src_w)
    return scale if scaleup else min(scale, 1.0)


def resized_hw(src_hw, scale: float) -> tuple[int, int]:
    """Size of ``src_hw`` resized by ``scale``, rounded as ``cv2.resize(fx=scale)`` does (at least 1)."""
    src_h, src_w = src_hw
    # Python's round() and OpenCV's cvRound both round half to even on the same double product.
    return max(1, round(src_h * scale)), max(1, round(src_w * scale))


def letterbox_matrix(src_hw, dst_hw, *, scaleup: bool = True, scale: float | None = None):
    """(float64 (3, 3) matrix, scale, (pad_x, pad_y)) of the letterbox of ``src_hw`` into ``dst_hw``.

    The matrix maps original edge coordinates to letterboxed ones: ``x * scale + pad_x``. The pads are
    integers: the resized image is centred, the odd pixel going to the right/bottom. ``scale`` (for
    example ``long_side_scale``) replaces the largest scale that fits; the resized image must fit.
    """
    if scale is None:
        scale = letterbox_scale(src_hw, dst_hw, scaleup=scaleup)
    dst_h, dst_w = check_hw("dst_hw", dst_hw)
    new_h, new_w = resized_hw(check_hw("src_hw", src_hw), scale)
    if new_h > dst_h or new_w > dst_w:
        raise ValueError(f"scale {scale} makes {tuple(src_hw)} {new_h}x{new_w}, larger than {dst_h}x{dst_w}")
    pad_x, pad_y = (dst_w - new_w) // 2, (dst_h - new_h) // 2
    matrix = np.array([[scale, 0, pad_x], [0, scale, pad_y], [0, 0, 1]], np.float64)
    return matrix, scale, (pad_x, pad_y)


def unletterbox_boxes(xyxy, scale: float, pad) -> np.ndarray:
    """Boxes in letterboxed pixels -> original pixels: ``(xyxy - pad) / scale``, the exact inverse.

    ``xyxy`` is (N, K >= 4); the first four columns are x1, y1, x2, y2 and the rest (score, class...)
    are copied unchanged. Returns a new float32 array of the same shape (no clipping).
    """
    xyxy = np.asarray(xyxy)
    if xyxy.ndim != 2 or xyxy.shape[1] < 4:
        raise ValueError(f"xyxy must be an (N, 4) or wider array of x1, y1, x2, y2 boxes, got shape {xyxy.shape}")
    scale = float(scale)
    if not np.isfinite(scale) or scale <= 0:
        raise ValueError(f"scale must be a positive number (from letterbox_matrix), got {scale}")
    pad_x, pad_y = (float(p) for p in pad)
    out = xyxy.astype(np.float64, copy=True)
    out[:, [0, 2]] = (out[:, [0, 2]] - pad_x) / scale
    out[:, [1, 3]] = (out[:, [1, 3]] - pad_y) / scale
    return out.astype(np.float32)


def to_original_pixels(detections, scale: float, pad, orig_hw) -> np.ndarray:
    """float32 (M, 6) rows x1, y1, x2, y2, score, class in letterboxed pixels -> new (M, 6) rows in the
    original image's pixels: ``unletterbox_boxes``, then clipped to ``orig_hw`` = (height, width).

    Evaluation and inference both map their detections back with it.
    """
    detections = np.asarray(detections, np.float32).reshape(-1, 6)
    height, width = (float(v) for v in np.asarray(orig_hw).reshape(2))
    return clip_boxes(unletterbox_boxes(detections, scale, pad), width, height)


def _fill(region: np.ndarray, colour) -> None:
    """Fill ``region`` (a view, in place) with one BGR colour; a gray fill is a plain byte fill."""
    colour = np.asarray(colour, np.uint8).reshape(3)
    if colour[0] == colour[1] == colour[2]:
        region.fill(colour[0])
    else:
        region[:] = colour


def letterbox_into(image: np.ndarray, out: np.ndarray, *, scaleup: bool = True, scale: float | None = None,
                   shrink_interpolation: int = cv2.INTER_LINEAR,
                   border_value=BORDER_VALUE) -> tuple[float, tuple[int, int]]:
    """(scale, (pad_x, pad_y)): the pixels of ``letterbox`` written into the caller's ``out``.

    ``out`` is a uint8 (H, W, 3) array (for example one slot of a batch array), overwritten entirely:
    the border is filled with ``border_value`` and the picture resized straight into its place, so no
    canvas is allocated and no pixel is written twice. ``image`` is not modified. The channel order
    is whatever ``image`` has (resizing treats channels alike). ``scale``: as in ``letterbox_matrix``.
    Enlarging is bilinear; shrinking uses ``shrink_interpolation`` (bilinear by default; YOLOv5's val
    loader shrinks with ``cv2.INTER_AREA``).
    """
    image = check_image(image)
    if not (isinstance(out, np.ndarray) and out.dtype == np.uint8 and out.ndim == 3 and out.shape[2] == 3):
        raise ValueError(f"out must be a uint8 (H, W, 3) array to write into, got "
                         f"{getattr(out, 'dtype', type(out).__name__)} {getattr(out, 'shape', '')}")
    if np.shares_memory(image, out):
        raise ValueError("out must not overlap the image being letterboxed")
    dst_h, dst_w = check_hw("out.shape[:2]", out.shape[:2])
    _, scale, (pad_x, pad_y) = letterbox_matrix(image.shape[:2], (dst_h, dst_w), scaleup=scaleup, scale=scale)
    new_h, new_w = resized_hw(image.shape[:2], scale)
    interpolation = shrink_interpolation if scale < 1 else cv2.INTER_LINEAR
    # the border: full-width bands above and below, then the strips left and right of the picture
    _fill(out[:pad_y], border_value)
    _fill(out[pad_y + new_h:], border_value)
    _fill(out[pad_y:pad_y + new_h, :pad_x], border_value)
    _fill(out[pad_y:pad_y + new_h, pad_x + new_w:], border_value)
    view = out[pad_y:pad_y + new_h, pad_x:pad_x + new_w]
    if (new_h, new_w) == image.shape[:2]:
        view[:] = image
    elif (new_h, new_w) == (round(image.shape[0] * scale), round(image.shape[1] * scale)):
        # fx/fy given and no dsize: OpenCV samples with exactly ``scale`` (see the module docstring)
        # and writes into the view in place (it has the size OpenCV computes).
        resized = cv2.resize(image, None, dst=view, fx=scale, fy=scale, interpolation=interpolation)
        if not np.shares_memory(resized, out):  # OpenCV allocated elsewhere after all: copy it in
            view[:] = resized
    else:
        # An extreme aspect ratio rounded a side to 0 pixels; it is widened to 1 (sub-pixel mismatch).
        view[:] = cv2.resize(image, (new_w, new_h), interpolation=interpolation)
    return scale, (pad_x, pad_y)


def letterbox(image: np.ndarray, labels: np.ndarray, dst_hw, *, scaleup: bool = True):
    """(new image, new labels, scale, (pad_x, pad_y)): ``image`` letterboxed into ``dst_hw``.

    Pixels: ``cv2.resize`` (bilinear) into the centre of a 114 canvas, equivalent to warping with
    ``letterbox_matrix`` (``letterbox_into`` renders them). Boxes: through the same matrix, then
    ``boxes.sanitize_boxes`` like every geometric step (boxes inside the image stay inside; boxes of
    2 px or less after resizing are dropped).
    """
    image = check_image(image)
    labels = check_labels(labels)
    dst_h, dst_w = check_hw("dst_hw", dst_hw)
    out = np.empty((dst_h, dst_w, 3), np.uint8)
    scale, (pad_x, pad_y) = letterbox_into(image, out, scaleup=scaleup)
    matrix, _, _ = letterbox_matrix(image.shape[:2], (dst_h, dst_w), scaleup=scaleup)
    new_labels = sanitize_boxes(*transform_clip_boxes(labels, matrix, (dst_h, dst_w)))
    return out, new_labels, scale, (pad_x, pad_y)
