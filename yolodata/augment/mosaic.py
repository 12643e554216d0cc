"""YOLOv5's 4-image mosaic followed by the random affine, rendered without the 2s x 2s canvas.

What it computes (YOLOv5's ``load_mosaic`` followed by ``random_perspective``)
-------------------------------------------------------------------------------
For an output of ``(H, W)`` (square ``s`` x ``s`` in the pipeline) imagine a ``2H x 2W`` canvas
filled with 114 and a centre ``(xc, yc)`` drawn in ``[W/2, 3W/2) x [H/2, 3H/2)`` (``sample_mosaic``).
Each of the four images is resized to fit ``(H, W)`` keeping its aspect ratio (long side ``s`` for a
square output) and placed with a corner at the centre: images[0] (the main image) top-left, then
top-right, bottom-left, bottom-right; whatever falls outside the canvas is cut off
(``tile_placements``). The random affine ``matrix`` (``affine.random_affine_matrix(rng, (H, W),
(2H, 2W))``, YOLOv5's border of -s/2) maps the canvas to the output.

How it renders
--------------
- Axis-aligned affine (scale, translation, flips; the default hyper-parameters, no rotation, shear
  or perspective): no canvas at all. For each tile, resize and placement and affine compose into one
  axis-aligned map; the source pixels that land in the output are cropped (a view),
  ``cv2.resize``-d onto their destination rectangle snapped to whole pixels, flipped if needed, and
  written straight into the output (``geometry.draw_axis_aligned``): about one output image of
  ``cv2.resize`` work, which costs less per output pixel than ``cv2.warpAffine``, instead of YOLOv5's
  canvas + warpAffine. Snapping moves each tile's
  edges by at most half an output pixel; two tiles meeting at the mosaic centre snap their common
  edge to the same pixel (no gap, no overlap), and the boxes use the snapped maps, so pixels and
  boxes agree exactly.
- Rotation, shear or perspective: a canvas is still built, but only the part of it that the output
  sees (the bounding box of the output's preimage, plus one pixel for interpolation), each tile
  resized only where it is visible there (``geometry.draw_axis_aligned`` again, snapped to whole canvas
  pixels; exact when no resize is needed), then one ``cv2.warpAffine``/``cv2.warpPerspective`` into
  the output: YOLOv5's cost and, to 0.1 gray levels on average, its pixels. A warp per tile straight
  into the output (``cv2.BORDER_TRANSPARENT`` into views of the output, which OpenCV 4.11 does write
  in place) was measured slower than the one warp of the canvas: each of its warps costs more per
  destination pixel.

Boxes. Each image's boxes are clipped to the part of the image its tile shows (YOLOv5 clips to the
2s canvas: the same thing for boxes inside their image), then go through the tile's map to the output
(placement, then the affine; the snapped map on the axis-aligned path), all tiles together through
``geometry.transform_clip_box_groups`` (cut to the output; under rotation the box's quadrilateral, not
its hull, is cut) and ``boxes.sanitize_boxes``. "Area kept" compares the box after the final cut with
the same box before it: after the affine and already cut to its tile, like YOLOv5's
``box_candidates``, which compares with the canvas-clipped box scaled by the affine.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..boxes import sanitize_boxes
from .geometry import (BORDER_VALUE, check_hw, check_image, check_labels, check_matrix, draw_axis_aligned,
                       filled_image, is_axis_aligned, transform_clip_box_groups, translation_matrix, warp_pixels)
from .letterbox import letterbox_scale, resized_hw

NUM_TILES = 4
# Tile k's corner at the mosaic centre: (is right of the centre, is below the centre).
TILE_SIDES = ((False, False), (True, False), (False, True), (True, True))


@dataclass(frozen=True)
class MosaicParams:
    """The mosaic's random decision: its centre on the 2H x 2W canvas, in pixels."""

    center_x: int
    center_y: int


@dataclass(frozen=True)
class TilePlacement:
    """Where one image goes on the canvas (``tile_placements``), exactly YOLOv5's placement.

    ``matrix``: float64 (3, 3) source -> canvas edge coordinates (resize, then move to the corner).
    ``visible``: the tile's rectangle on the canvas that shows this image, (x1, y1, x2, y2) integers.
    ``source_visible``: the same rectangle in source edge coordinates (the part of the image shown).
    """

    matrix: np.ndarray
    visible: tuple[int, int, int, int]
    source_visible: tuple[float, float, float, float]


def sample_mosaic(rng: np.random.Generator, out_hw) -> MosaicParams:
    """The mosaic centre, uniform in ``[W/2, 3W/2) x [H/2, 3H/2)`` of the 2H x 2W canvas (YOLOv5)."""
    out_h, out_w = check_hw("out_hw", out_hw)
    center_x, center_y = rng.uniform(0.5, 1.5, 2) * (out_w, out_h)
    return MosaicParams(center_x=int(center_x), center_y=int(center_y))


def tile_placements(image_hws, params: MosaicParams, out_hw) -> list[TilePlacement | None]:
    """Placement of the four images (``None`` for an image that shows nowhere on the canvas)."""
    out_h, out_w = check_hw("out_hw", out_hw)
    canvas_w, canvas_h = 2 * out_w, 2 * out_h
    center_x, center_y = int(params.center_x), int(params.center_y)
    if not (0 <= center_x <= canvas_w and 0 <= center_y <= canvas_h):
        raise ValueError(f"mosaic centre ({center_x}, {center_y}) lies outside the {canvas_w}x{canvas_h} "
                         f"canvas of out_hw={out_hw}; make it with sample_mosaic(rng, out_hw)")
    placements = []
    for (right, below), src_hw in zip(TILE_SIDES, image_hws):
        src_h, src_w = src_hw
        # resized to fit the output (long side s for a square output), as YOLOv5's load_image
        tile_h, tile_w = resized_hw(src_hw, letterbox_scale(src_hw, (out_h, out_w)))
        origin_x = center_x if right else center_x - tile_w
        origin_y = center_y if below else center_y - tile_h
        x1, x2 = max(origin_x, 0), min(origin_x + tile_w, canvas_w)
        y1, y2 = max(origin_y, 0), min(origin_y + tile_h, canvas_h)
        if x2 <= x1 or y2 <= y1:
            placements.append(None)
            continue
        matrix = np.array([[tile_w / src_w, 0, origin_x], [0, tile_h / src_h, origin_y], [0, 0, 1]], np.float64)
        # integer products first: a side at the image edge maps back to exactly 0 or the image size
        source_visible = ((x1 - origin_x) * src_w / tile_w, (y1 - origin_y) * src_h / tile_h,
                          (x2 - origin_x) * src_w / tile_w, (y2 - origin_y) * src_h / tile_h)
        placements.append(TilePlacement(matrix=matrix, visible=(x1, y1, x2, y2), source_visible=source_visible))
    return placements


def _clip_to_rectangle(labels: np.ndarray, rectangle) -> np.ndarray:
    x1, y1, x2, y2 = rectangle
    out = labels.copy()
    out[:, [0, 2]] = np.clip(out[:, [0, 2]], x1, x2)
    out[:, [1, 3]] = np.clip(out[:, [1, 3]], y1, y2)
    return out


def _tile_boxes(labels: np.ndarray, placement: TilePlacement, source_to_output: np.ndarray):
    """(labels, matrix) of a tile: its boxes cut to the part of its image that shows, and their map."""
    return _clip_to_rectangle(labels, placement.source_visible), source_to_output


def _canvas_region(matrix: np.ndarray, canvas_hw, out_hw):
    """Integer (x1, y1, x2, y2) of the canvas that the output sees through ``matrix`` (+1 px margin)."""
    canvas_h, canvas_w = canvas_hw
    out_h, out_w = out_hw
    # output corners: (4, 3) homogeneous points, mapped back to the canvas
    corners = np.array([[0, 0, 1], [out_w, 0, 1], [out_w, out_h, 1], [0, out_h, 1]], np.float64)
    back = corners @ np.linalg.inv(matrix).T
    if np.any(back[:, 2] <= 1e-6):  # the preimage crosses the perspective horizon: no finite bound
        return 0, 0, canvas_w, canvas_h
    points = back[:, :2] / back[:, 2:]
    lo = np.floor(points.min(axis=0)) - 1
    hi = np.ceil(points.max(axis=0)) + 1
    return (int(np.clip(lo[0], 0, canvas_w)), int(np.clip(lo[1], 0, canvas_h)),
            int(np.clip(hi[0], 0, canvas_w)), int(np.clip(hi[1], 0, canvas_h)))


def _render_direct(images, labels, placements, matrix, out_hw):
    """Axis-aligned ``matrix``: every tile resized straight into the output (module docstring)."""
    out = filled_image(out_hw, BORDER_VALUE)
    box_groups = []
    for image, lab, placement in zip(images, labels, placements):
        if placement is None:
            continue
        exact = matrix @ placement.matrix  # source -> output
        snapped = draw_axis_aligned(out, image, exact, placement.source_visible)
        box_groups.append(_tile_boxes(lab, placement, exact if snapped is None else snapped))
    return out, box_groups


def _render_through_canvas(images, labels, placements, matrix, out_hw):
    """Rotation, shear or perspective: the visible part of the canvas, then one warp."""
    out_h, out_w = out_hw
    region_x1, region_y1, region_x2, region_y2 = _canvas_region(matrix, (2 * out_h, 2 * out_w), out_hw)
    box_groups = []
    if region_x2 <= region_x1 or region_y2 <= region_y1:  # the output sees no canvas at all
        for lab, placement in zip(labels, placements):
            if placement is not None:
                box_groups.append(_tile_boxes(lab, placement, matrix @ placement.matrix))
        return filled_image(out_hw, BORDER_VALUE), box_groups
    region = filled_image((region_y2 - region_y1, region_x2 - region_x1), BORDER_VALUE)
    canvas_to_region = translation_matrix(-region_x1, -region_y1)
    region_to_canvas = translation_matrix(region_x1, region_y1)
    for image, lab, placement in zip(images, labels, placements):
        if placement is None:
            continue
        snapped = draw_axis_aligned(region, image, canvas_to_region @ placement.matrix, placement.source_visible)
        to_canvas = placement.matrix if snapped is None else region_to_canvas @ snapped
        box_groups.append(_tile_boxes(lab, placement, matrix @ to_canvas))
    out = warp_pixels(region, matrix @ region_to_canvas, out_hw, BORDER_VALUE)
    return out, box_groups


def render_mosaic(images, labels, params: MosaicParams, matrix, out_hw) -> tuple[np.ndarray, np.ndarray]:
    """(new uint8 image of ``out_hw``, new labels): the mosaic of four images through ``matrix``.

    ``images``: four uint8 HxWx3 BGR images of any size (images[0] is the main image); ``labels``:
    their (N_k, 6) label arrays in their own pixels; ``params`` from ``sample_mosaic``; ``matrix`` the
    3x3 affine/perspective from the 2H x 2W canvas to the output. Inputs are not modified.
    """
    if len(images) != NUM_TILES or len(labels) != NUM_TILES:
        raise ValueError(f"a mosaic takes exactly {NUM_TILES} images and {NUM_TILES} label arrays, got "
                         f"{len(images)} and {len(labels)}; repeat images when fewer are available")
    images = [check_image(image, f"images[{k}]") for k, image in enumerate(images)]
    labels = [check_labels(lab, f"labels[{k}]") for k, lab in enumerate(labels)]
    matrix = check_matrix(matrix)
    out_hw = check_hw("out_hw", out_hw)
    placements = tile_placements([image.shape[:2] for image in images], params, out_hw)
    render = _render_direct if is_axis_aligned(matrix) else _render_through_canvas
    out, box_groups = render(images, labels, placements, matrix, out_hw)
    return out, sanitize_boxes(*transform_clip_box_groups(box_groups, out_hw))
