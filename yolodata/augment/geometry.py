"""Geometry shared by the augmentations (affine, letterbox, mosaic): matrices, boxes through them, drawing.

- argument checks every transform applies where its arguments enter (``check_hw``, ``check_matrix``,
  ``check_image``, ``check_labels``);
- matrices: ``translation_matrix``, ``opencv_matrix`` (edge -> OpenCV's centre coordinates),
  ``is_affine``, ``is_axis_aligned``;
- boxes: ``transform_clip_boxes`` / ``transform_clip_box_groups``, the end of every geometric step
  (boxes through the pixels' matrix, cut to the output), after which ``yolodata.boxes.sanitize_boxes``
  (the one place where boxes are filtered) drops the boxes that lost too much;
- pixels: ``filled_image`` (a canvas of one colour), ``warp_pixels`` (``cv2.warpAffine`` /
  ``cv2.warpPerspective``) and ``draw_axis_aligned``, which renders a scale + translation + flip
  matrix with ``cv2.resize`` at a fraction of a warp's cost.

Coordinates
-----------
Every matrix of ``yolodata.augment`` maps *edge* coordinates, the coordinates of the label array: pixel
column ``i`` spans ``[i, i + 1]``, so a box covering columns 0..9 has ``x1 = 0, x2 = 10``. OpenCV's
warps index pixel *centres* instead (pixel ``i`` sits at ``x = i``), so a point at edge coordinate
``x`` has centre coordinate ``x - 0.5``. ``opencv_matrix`` converts by conjugation,
``T(-0.5) @ M @ T(+0.5)``: centre -> edge coordinates, apply ``M``, edge -> centre coordinates.
Without it a horizontal flip ``x -> W - x`` would shift the image by one pixel against its boxes and
a 2x zoom by half a pixel. ``cv2.resize`` already follows the edge convention (its source point for
destination pixel ``d`` is ``(d + 0.5) / scale - 0.5``), so a plain scale matrix describes it exactly.
"""
from __future__ import annotations

import math

import cv2
import numpy as np

from .. import boxes as boxes_lib

BORDER_VALUE = (114, 114, 114)


def check_hw(name: str, hw) -> tuple[int, int]:
    try:
        height, width = (int(v) for v in hw)
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be (height, width), got {hw!r}") from None
    if height < 1 or width < 1 or (height, width) != tuple(float(v) for v in hw):
        raise ValueError(f"{name} must be two positive integers (height, width), got {tuple(hw)}")
    return height, width


def translation_matrix(dx: float, dy: float) -> np.ndarray:
    return np.array([[1, 0, dx], [0, 1, dy], [0, 0, 1]], np.float64)


def opencv_matrix(edge_matrix: np.ndarray) -> np.ndarray:
    """The edge-coordinate ``edge_matrix`` expressed in OpenCV's pixel-centre coordinates (3x3).

    See the module docstring: centre -> edge (+0.5), apply, edge -> centre (-0.5).
    """
    return translation_matrix(-0.5, -0.5) @ np.asarray(edge_matrix, np.float64) @ translation_matrix(0.5, 0.5)


def is_affine(matrix: np.ndarray) -> bool:
    """True when the last row is exactly (0, 0, 1): ``cv2.warpAffine`` suffices."""
    return bool(np.array_equal(np.asarray(matrix)[2], [0.0, 0.0, 1.0]))


def check_matrix(matrix) -> np.ndarray:
    matrix = np.asarray(matrix, np.float64)
    if matrix.shape != (3, 3) or not np.all(np.isfinite(matrix)):
        raise ValueError(f"matrix must be a finite 3x3 array, got shape {matrix.shape}; "
                         f"use random_affine_matrix or letterbox_matrix to make one")
    if abs(np.linalg.det(matrix)) < 1e-12:
        raise ValueError("matrix is singular (it maps the image onto a line or a point); "
                         "use random_affine_matrix or letterbox_matrix to make one")
    return matrix


def check_image(image, name: str = "image") -> np.ndarray:
    image = np.asarray(image)
    if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3 or 0 in image.shape:
        raise ValueError(f"{name} must be a non-empty uint8 HxWx3 BGR image, got dtype {image.dtype} and "
                         f"shape {image.shape}; decode with cv2.IMREAD_COLOR")
    return image


def check_labels(labels, name: str = "labels") -> np.ndarray:
    labels = np.asarray(labels)
    if labels.ndim != 2 or labels.shape[1] != 6:
        raise ValueError(f"{name} must be a float (N, 6) array x1, y1, x2, y2, class, iscrowd, got shape "
                         f"{labels.shape}; use yolodata.schema.row_labels")
    return labels.astype(np.float32, copy=False)


def _quad_extent_in_rectangle(quads: np.ndarray, width: float, height: float) -> np.ndarray:
    """(N, 4) x1, y1, x2, y2 extent of each convex quadrilateral (N, 4, 2) cut to [0, W] x [0, H].

    The cut polygon's vertices are among: quad vertices inside the rectangle, rectangle corners
    inside the quad, and crossings of quad edges with the rectangle's sides; all such points lie in the
    cut polygon, so their min/max is its extent. A quad that misses the rectangle gets (0, 0, 0, 0).
    """
    eps = 1e-6
    following = np.roll(quads, -1, axis=1)  # (N, 4, 2): end point of each edge
    candidates, valid = [quads], [(quads[..., 0] >= -eps) & (quads[..., 0] <= width + eps)
                                  & (quads[..., 1] >= -eps) & (quads[..., 1] <= height + eps)]
    # rectangle corners inside the quad: on the same side of all four edges (either orientation)
    corners = np.array([[0, 0], [width, 0], [width, height], [0, height]], np.float64)
    edge = following - quads                                               # (N, 4, 2)
    to_corner = corners[None, None, :, :] - quads[:, :, None, :]          # (N, 4 edges, 4 corners, 2)
    cross = edge[:, :, None, 0] * to_corner[..., 1] - edge[:, :, None, 1] * to_corner[..., 0]
    area2 = np.abs((quads[..., 0] * following[..., 1] - following[..., 0] * quads[..., 1]).sum(axis=1))
    inside = (np.all(cross >= -eps, axis=1) | np.all(cross <= eps, axis=1)) & (area2[:, None] > eps)
    candidates.append(np.broadcast_to(corners, quads.shape))
    valid.append(inside)
    # crossings of each edge with the lines x = 0, x = W (axis 0) and y = 0, y = H (axis 1)
    with np.errstate(divide="ignore", invalid="ignore"):
        for axis, limit, other_limit in ((0, width, height), (1, height, width)):
            for value in (0.0, limit):
                t = (value - quads[..., axis]) / edge[..., axis]
                other = quads[..., 1 - axis] + t * edge[..., 1 - axis]
                point = np.empty_like(quads)
                point[..., axis] = value
                point[..., 1 - axis] = other
                candidates.append(point)
                valid.append((t >= 0) & (t <= 1) & (other >= -eps) & (other <= other_limit + eps))
    points = np.concatenate(candidates, axis=1)  # (N, 24, 2)
    ok = np.concatenate(valid, axis=1)[..., None]
    lo = np.where(ok, points, np.inf).min(axis=1)
    hi = np.where(ok, points, -np.inf).max(axis=1)
    extent = np.concatenate([lo, hi], axis=1)
    extent[~np.isfinite(extent).all(axis=1)] = 0.0
    return np.clip(extent, 0, [width, height, width, height])


def transform_clip_boxes(labels: np.ndarray, matrix: np.ndarray, out_hw):
    """(clipped, unclipped) label arrays: boxes through ``matrix``, then cut to the output.

    ``unclipped`` is ``boxes.transform_boxes`` (the four corners through the same matrix as the
    pixels, then their min/max). ``clipped`` is the extent of the transformed box that lies inside the
    output: for an axis-aligned matrix simply ``boxes.clip_boxes(unclipped)``; under rotation, shear
    or perspective the transformed box is a quadrilateral, and clipping its axis-aligned hull instead
    would keep hull corners that the box never reaches (a box cut by the border would grow along the
    border, and a box just outside a corner would survive with no pixel of its own in the image).
    A box without area in the source gets an empty clipped box.
    """
    return transform_clip_box_groups([(labels, matrix)], out_hw)


def _box_quads(labels: np.ndarray, matrix: np.ndarray) -> np.ndarray:
    """(N, 4, 2) corners of each box through ``matrix``, in polygon order."""
    matrix = np.asarray(matrix, np.float64)
    # corners: (N, 4, 2) = (x1, y1), (x2, y1), (x2, y2), (x1, y2)
    corners = labels[:, [0, 1, 2, 1, 2, 3, 0, 3]].astype(np.float64).reshape(-1, 4, 2)
    mapped = corners @ matrix[:2, :2].T + matrix[:2, 2]
    return mapped / (corners @ matrix[2, :2] + matrix[2, 2])[..., None]


def transform_clip_box_groups(groups, out_hw):
    """``transform_clip_boxes`` for several (labels, matrix) pairs (a mosaic's tiles), concatenated.

    One pass over the quadrilaterals of all groups: only boxes whose hull straddles the output border
    need them (inside, the hull is exact; wholly outside, the clipped hull is already empty).
    """
    out_h, out_w = out_hw
    sources, unclipped_parts, quads, rows = [], [], [], []
    offset = 0
    for labels, matrix in groups:
        labels = np.asarray(labels, np.float32)
        unclipped = boxes_lib.transform_boxes(labels, matrix)
        sources.append(labels)
        unclipped_parts.append(unclipped)
        if len(labels) and not is_axis_aligned(matrix):
            crosses = ((unclipped[:, 0] < 0) | (unclipped[:, 1] < 0) | (unclipped[:, 2] > out_w)
                       | (unclipped[:, 3] > out_h))
            overlaps = ((unclipped[:, 0] < out_w) & (unclipped[:, 2] > 0) & (unclipped[:, 1] < out_h)
                        & (unclipped[:, 3] > 0))
            straddling = np.nonzero(crosses & overlaps)[0]
            if len(straddling):
                quads.append(_box_quads(labels[straddling], matrix))
                rows.append(offset + straddling)
        offset += len(labels)
    if not groups:
        return np.zeros((0, 6), np.float32), np.zeros((0, 6), np.float32)
    unclipped = np.concatenate(unclipped_parts)
    clipped = boxes_lib.clip_boxes(unclipped, out_w, out_h)
    if quads:
        clipped[np.concatenate(rows), :4] = _quad_extent_in_rectangle(np.concatenate(quads), float(out_w),
                                                                     float(out_h))
    return _keep_empty_boxes_empty(clipped, np.concatenate(sources)), unclipped


def _keep_empty_boxes_empty(clipped: np.ndarray, source: np.ndarray) -> np.ndarray:
    """Zero the rows whose source box has no area (e.g. a mosaic box cut away by the canvas edge).

    A rotation would otherwise turn a zero-width box into a hull several pixels wide that passes
    every filter (YOLOv5 keeps such boxes: its area ratio divides by the zero area plus eps).
    """
    empty = (source[:, 2] <= source[:, 0]) | (source[:, 3] <= source[:, 1])
    if empty.any():
        clipped = clipped.copy()
        clipped[empty, :4] = 0.0
    return clipped


def filled_image(hw, value=BORDER_VALUE) -> np.ndarray:
    """New uint8 (H, W, 3) image of one BGR colour.

    Not ``np.full(shape, (b, g, r))``: numpy broadcasts a 3-value fill one pixel at a time, far slower
    than a scalar fill or a whole-row broadcast.
    """
    height, width = hw
    colour = np.asarray(value, np.uint8).reshape(3)
    if colour[0] == colour[1] == colour[2]:
        return np.full((height, width, 3), colour[0], np.uint8)
    out = np.empty((height, width, 3), np.uint8)
    # rows of (W * 3) bytes: broadcast one whole row at a time
    out.reshape(height, width * 3)[:] = np.tile(colour, width)
    return out


def is_axis_aligned(matrix: np.ndarray) -> bool:
    """True for scale + translation (+ flips) only: no rotation, shear or perspective."""
    matrix = np.asarray(matrix)
    return is_affine(matrix) and matrix[0, 1] == 0 and matrix[1, 0] == 0 and matrix[0, 0] != 0 \
        and matrix[1, 1] != 0


def _snap(value: float) -> int:
    """Nearest integer. The tiny bias moves the rounding tie away from exact halves, so that two
    computations of one seam (two mosaic tiles, different float rounding) snap to the same pixel."""
    return math.floor(value + 0.5 + 1e-7)


def _axis_plan(allowed_lo: float, allowed_hi: float, scale: float, offset: float, out_size: int,
               src_size: int):
    """One axis of ``draw_axis_aligned``: (crop_lo, crop_hi, dst_lo, dst_hi) or None.

    The crop is the whole source pixels of ``[allowed_lo, allowed_hi]`` that land in the output under
    ``x -> scale * x + offset``; the destination is where its ends land, snapped to whole pixels
    (``dst_hi < dst_lo`` when ``scale`` is negative: a flip).
    """
    eps = 1e-9  # bounds that are whole pixels must not round outward
    ends = sorted(((0 - offset) / scale, (out_size - offset) / scale))
    lo, hi = max(allowed_lo, ends[0], 0.0), min(allowed_hi, ends[1], float(src_size))
    if hi <= lo:
        return None
    crop_lo = max(0, math.floor(lo + eps))
    crop_hi = min(src_size, max(math.ceil(hi - eps), crop_lo + 1))
    dst_lo, dst_hi = _snap(scale * crop_lo + offset), _snap(scale * crop_hi + offset)
    if dst_lo == dst_hi:
        return None
    return crop_lo, crop_hi, dst_lo, dst_hi


def draw_axis_aligned(out: np.ndarray, image: np.ndarray, matrix: np.ndarray, allowed=None):
    """Draw ``image`` through the axis-aligned ``matrix`` into ``out`` (in place) with ``cv2.resize``.

    ``cv2.resize`` costs less than ``cv2.warpAffine`` per output pixel, but it can
    only map whole pixels onto whole pixels. So the source pixels that land in ``out`` (within
    ``allowed``, (x1, y1, x2, y2) in source edge coordinates, default the whole image) are cropped to
    whole pixels, their destination rectangle is snapped to whole output pixels (each edge moves by at
    most half a pixel), the crop is resized onto it (and flipped when the matrix flips), and the part
    inside ``out`` is written. Returns the snapped source -> output matrix, which the caller must use
    for the boxes; ``None`` when nothing lands in ``out``.
    """
    matrix = np.asarray(matrix, np.float64)
    src_h, src_w = image.shape[:2]
    out_h, out_w = out.shape[:2]
    x1, y1, x2, y2 = allowed if allowed is not None else (0.0, 0.0, float(src_w), float(src_h))
    plan_x = _axis_plan(x1, x2, matrix[0, 0], matrix[0, 2], out_w, src_w)
    plan_y = _axis_plan(y1, y2, matrix[1, 1], matrix[1, 2], out_h, src_h)
    if plan_x is None or plan_y is None:
        return None
    crop_x1, crop_x2, dst_x1, dst_x2 = plan_x
    crop_y1, crop_y2, dst_y1, dst_y2 = plan_y
    scale_x = (dst_x2 - dst_x1) / (crop_x2 - crop_x1)
    scale_y = (dst_y2 - dst_y1) / (crop_y2 - crop_y1)
    snapped = np.array([[scale_x, 0, dst_x1 - scale_x * crop_x1], [0, scale_y, dst_y1 - scale_y * crop_y1],
                        [0, 0, 1]], np.float64)
    # Resize onto the whole snapped rectangle (a few pixels may stick out of ``out``; dropped below).
    size_x, size_y = abs(dst_x2 - dst_x1), abs(dst_y2 - dst_y1)
    crop = image[crop_y1:crop_y2, crop_x1:crop_x2]
    if (size_y, size_x) == crop.shape[:2]:
        resized = crop
    else:
        # dsize given: OpenCV scales by exactly size / crop size, in edge coordinates (module docstring)
        resized = cv2.resize(crop, (size_x, size_y), interpolation=cv2.INTER_LINEAR)
    flip_x, flip_y = dst_x2 < dst_x1, dst_y2 < dst_y1
    left, top = min(dst_x1, dst_x2), min(dst_y1, dst_y2)
    vis_x1, vis_x2 = max(left, 0), min(left + size_x, out_w)
    vis_y1, vis_y2 = max(top, 0), min(top + size_y, out_h)
    if vis_x2 <= vis_x1 or vis_y2 <= vis_y1:
        return None
    # Rectangle of the (flipped) resized image that is visible; in unflipped ``resized`` a flipped
    # range [a, b) of an axis of size n is [n - b, n - a).
    ax1, ax2 = vis_x1 - left, vis_x2 - left
    ay1, ay2 = vis_y1 - top, vis_y2 - top
    if flip_x:
        ax1, ax2 = size_x - ax2, size_x - ax1
    if flip_y:
        ay1, ay2 = size_y - ay2, size_y - ay1
    source = resized[ay1:ay2, ax1:ax2]
    target = out[vis_y1:vis_y2, vis_x1:vis_x2]
    if flip_x or flip_y:
        code = -1 if (flip_x and flip_y) else (1 if flip_x else 0)
        result = cv2.flip(source, code, dst=target)
        if not np.shares_memory(result, out):  # OpenCV allocated a new buffer: copy it in
            target[:] = result
    else:
        target[:] = source
    return snapped


def warp_pixels(image: np.ndarray, matrix: np.ndarray, out_hw, border_value=BORDER_VALUE) -> np.ndarray:
    """New uint8 image: ``image`` through the edge-coordinate ``matrix`` (bilinear, constant border)."""
    out_h, out_w = out_hw
    cv_matrix = opencv_matrix(matrix)
    border = tuple(int(v) for v in border_value)
    if is_affine(matrix):
        return cv2.warpAffine(image, cv_matrix[:2], (out_w, out_h), flags=cv2.INTER_LINEAR,
                              borderMode=cv2.BORDER_CONSTANT, borderValue=border)
    return cv2.warpPerspective(image, cv_matrix, (out_w, out_h), flags=cv2.INTER_LINEAR,
                               borderMode=cv2.BORDER_CONSTANT, borderValue=border)


