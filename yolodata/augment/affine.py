"""YOLOv5's random affine/perspective transform with the flips folded into the same matrix.

Sampling and applying are separate. ``sample_affine`` turns a Generator into an ``AffineParams``
(plain numbers, picklable); ``affine_matrix`` turns those into one 3x3 matrix; ``warp`` applies a
matrix to pixels and boxes together. ``random_affine_matrix`` is the two first steps in one call.
The checks, the box and pixel machinery ``warp`` uses and the coordinate convention of every matrix
(edge coordinates) are shared with letterbox.py and mosaic.py and live in ``geometry``.

The matrix is YOLOv5's ``random_perspective`` (``M = T @ S @ R @ P @ C``: move the source centre to
the origin, perspective, rotation and scale, shear, translation to the output), followed by the
flips YOLOv5 applies afterwards in ``__getitem__`` (a flip of the output is ``x -> out_w - x``). Since
the flips are part of the matrix, boxes and pixels can never disagree about them.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from ..boxes import sanitize_boxes
from .geometry import (BORDER_VALUE, check_hw, check_image, check_labels, check_matrix, draw_axis_aligned,
                       filled_image, is_axis_aligned, transform_clip_boxes, warp_pixels)


@dataclass(frozen=True)
class AffineParams:
    """One random decision of ``sample_affine``; ``affine_matrix`` turns it into a matrix.

    Angles are in degrees (rotation counter-clockwise on screen, as ``cv2.getRotationMatrix2D``);
    ``translate_x``/``translate_y`` are fractions of the output size where the source centre lands
    (0.5 = output centre).
    """

    perspective_x: float = 0.0
    perspective_y: float = 0.0
    angle: float = 0.0
    scale: float = 1.0
    shear_x: float = 0.0
    shear_y: float = 0.0
    translate_x: float = 0.5
    translate_y: float = 0.5
    flip_lr: bool = False
    flip_ud: bool = False


def _check_non_negative(name: str, value: float) -> float:
    value = float(value)
    if not math.isfinite(value) or value < 0:
        raise ValueError(f"{name} must be a finite number >= 0, got {value}")
    return value


def _check_fraction(name: str, value: float, *, upper_open: bool = False) -> float:
    value = _check_non_negative(name, value)
    if value > 1 or (upper_open and value == 1):
        interval = "[0, 1)" if upper_open else "[0, 1]"
        raise ValueError(f"{name} must be within {interval}, got {value}")
    return value


def sample_affine(rng: np.random.Generator, *, degrees: float = 0.0, translate: float = 0.1,
                  scale: float = 0.5, shear: float = 0.0, perspective: float = 0.0, flip_lr: float = 0.0,
                  flip_ud: float = 0.0) -> AffineParams:
    """Draw one affine decision with YOLOv5's distributions (defaults: hyp.scratch-low, no flips).

    ``degrees``, ``shear`` (degrees) and ``perspective`` are half-widths of uniform ranges around 0;
    the scale is uniform in ``[1 - scale, 1 + scale]``; the source centre lands at a uniform fraction
    ``[0.5 - translate, 0.5 + translate]`` of the output; ``flip_lr``/``flip_ud`` are probabilities.
    The same ten numbers are always drawn, whatever the settings, so the Generator's later draws do
    not depend on them.
    """
    degrees = _check_non_negative("degrees", degrees)
    shear = _check_non_negative("shear", shear)
    if shear >= 90:
        raise ValueError(f"shear must be below 90 degrees, got {shear}")
    perspective = _check_non_negative("perspective", perspective)
    translate = _check_fraction("translate", translate)
    scale = _check_fraction("scale", scale, upper_open=True)
    flip_lr = _check_fraction("flip_lr", flip_lr)
    flip_ud = _check_fraction("flip_ud", flip_ud)
    # YOLOv5's order: perspective, rotation+scale, shear, translation; then the flips.
    persp = rng.uniform(-perspective, perspective, 2)
    angle = rng.uniform(-degrees, degrees)
    zoom = rng.uniform(1 - scale, 1 + scale)
    shears = rng.uniform(-shear, shear, 2)
    shift = rng.uniform(0.5 - translate, 0.5 + translate, 2)
    flips = rng.random(2)
    return AffineParams(perspective_x=float(persp[0]), perspective_y=float(persp[1]), angle=float(angle),
                        scale=float(zoom), shear_x=float(shears[0]), shear_y=float(shears[1]),
                        translate_x=float(shift[0]), translate_y=float(shift[1]),
                        flip_lr=bool(flips[0] < flip_lr), flip_ud=bool(flips[1] < flip_ud))


def affine_matrix(params: AffineParams, out_hw, src_hw) -> np.ndarray:
    """float64 (3, 3) matrix mapping source edge coordinates to output edge coordinates."""
    out_h, out_w = check_hw("out_hw", out_hw)
    src_h, src_w = check_hw("src_hw", src_hw)
    centre = np.array([[1, 0, -src_w / 2], [0, 1, -src_h / 2], [0, 0, 1]], np.float64)
    perspective = np.eye(3)
    perspective[2, 0] = params.perspective_x
    perspective[2, 1] = params.perspective_y
    radians = math.radians(params.angle)
    cos, sin = params.scale * math.cos(radians), params.scale * math.sin(radians)
    # cv2.getRotationMatrix2D(centre=(0, 0), angle, scale): counter-clockwise on screen (y down)
    rotation = np.array([[cos, sin, 0], [-sin, cos, 0], [0, 0, 1]], np.float64)
    shear = np.array([[1, math.tan(math.radians(params.shear_x)), 0],
                      [math.tan(math.radians(params.shear_y)), 1, 0], [0, 0, 1]], np.float64)
    translation = np.array([[1, 0, params.translate_x * out_w], [0, 1, params.translate_y * out_h],
                            [0, 0, 1]], np.float64)
    flip = np.eye(3)
    if params.flip_lr:
        flip[0] = (-1, 0, out_w)
    if params.flip_ud:
        flip[1] = (0, -1, out_h)
    return flip @ translation @ shear @ rotation @ perspective @ centre


def random_affine_matrix(rng: np.random.Generator, out_hw, src_hw, *, degrees: float = 0.0,
                         translate: float = 0.1, scale: float = 0.5, shear: float = 0.0,
                         perspective: float = 0.0, flip_lr: float = 0.0, flip_ud: float = 0.0) -> np.ndarray:
    """float64 (3, 3): ``affine_matrix(sample_affine(rng, ...), out_hw, src_hw)``.

    Maps the source (``src_hw``, e.g. the 2s x 2s mosaic canvas) to the output (``out_hw``); the
    flips are decided from ``rng`` too.
    """
    params = sample_affine(rng, degrees=degrees, translate=translate, scale=scale, shear=shear,
                           perspective=perspective, flip_lr=flip_lr, flip_ud=flip_ud)
    return affine_matrix(params, out_hw, src_hw)


def warp(image: np.ndarray, labels: np.ndarray, matrix: np.ndarray, out_hw,
         border_value=BORDER_VALUE) -> tuple[np.ndarray, np.ndarray]:
    """(new image, new labels): pixels and boxes through the same edge-coordinate ``matrix``.

    Pixels go through ``cv2.warpAffine`` (``cv2.warpPerspective`` when the matrix has a perspective
    row), bilinear, with ``border_value`` outside the source. An axis-aligned matrix (scale,
    translation, flips: the default hyper-parameters) is rendered by ``draw_axis_aligned`` instead,
    which snaps the image's destination rectangle to whole pixels; the boxes then use that snapped
    matrix. Boxes go through ``transform_clip_boxes`` (``boxes.transform_boxes``: four corners, then
    their hull; then the part inside the output), then ``boxes.sanitize_boxes``.
    """
    image = check_image(image)
    labels = check_labels(labels)
    matrix = check_matrix(matrix)
    out_hw = check_hw("out_hw", out_hw)
    if is_axis_aligned(matrix):
        # The default hyper-parameters (no rotation, shear or perspective): resize + flip, cheaper than a warp.
        pixels = filled_image(out_hw, border_value)
        snapped = draw_axis_aligned(pixels, image, matrix)
        box_matrix = matrix if snapped is None else snapped
    else:
        pixels = warp_pixels(image, matrix, out_hw, border_value)
        box_matrix = matrix
    return pixels, sanitize_boxes(*transform_clip_boxes(labels, box_matrix, out_hw))
