"""Sample grids: class colours, the near-square tile layout, tiles with outlined and named boxes, encoding.

Pure functions of their arguments (no file access): the same samples give the same bytes.

Drawing conventions (tests rely on them): a box ``x1, y1, x2, y2`` (edge coordinates, see
``augment/geometry.py``) maps into a tile by the tile's letterbox ``scale`` and ``pad``, each coordinate
is rounded to the nearest pixel edge (``floor(v + 0.5)``), and the outline is drawn *inward*: its
``t`` pixel wide lines cover columns ``[x1, x1 + t)`` and ``[x2 - t, x2)`` and rows ``[y1, y1 + t)``
and ``[y2 - t, y2)``. Outlines are drawn after all class-name labels, so no label hides an outline.
"""
from __future__ import annotations

import dataclasses
import math
from typing import Sequence

import cv2
import numpy as np

from ..augment import letterbox as letterbox_lib
from ..schema import NUM_LABEL_COLUMNS

# 20 well-separated colours (RGB), after Sasha Trubetskoy's "List of 20 Simple, Distinct Colors".
# None is a pure primary or a gray, so outlines stand apart from flat test shapes and padding.
PALETTE_RGB = (
    (230, 25, 75), (60, 180, 75), (255, 225, 25), (0, 130, 200), (245, 130, 48),
    (145, 30, 180), (70, 240, 240), (240, 50, 230), (210, 245, 60), (250, 190, 212),
    (0, 128, 128), (220, 190, 255), (170, 110, 40), (255, 250, 200), (128, 0, 0),
    (170, 255, 195), (128, 128, 0), (255, 215, 180), (0, 0, 128), (128, 128, 255),
)

GRID_BACKGROUND_RGB = (255, 255, 255)   # gaps between tiles and empty grid cells
CAPTION_BACKGROUND_RGB = (32, 32, 32)
CAPTION_TEXT_RGB = (255, 255, 255)
TILE_GAP = 4                             # pixels between neighbouring tiles
FONT = cv2.FONT_HERSHEY_SIMPLEX
GRID_IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp")
JPEG_QUALITY = 95


# --- colours and sizes ------------------------------------------------------------------------------

def class_colour(class_index: int) -> tuple[int, int, int]:
    """RGB outline colour of a class (the palette repeats after 20 classes)."""
    return PALETTE_RGB[int(class_index) % len(PALETTE_RGB)]


def text_colour_on(background_rgb) -> tuple[int, int, int]:
    """Black on light backgrounds, white on dark ones (perceived luminance, ITU-R BT.601 weights)."""
    red, green, blue = background_rgb
    return (0, 0, 0) if 0.299 * red + 0.587 * green + 0.114 * blue > 150 else (255, 255, 255)


def outline_thickness(tile_size: int) -> int:
    """Outline width in pixels: 1 up to 399 px tiles, then one more per 200 px."""
    return max(1, int(tile_size) // 200)


def font_scale(tile_size: int) -> float:
    """Hershey font scale for class names and captions (about 9 px high text at a 320 px tile)."""
    return max(0.3, int(tile_size) / 900)


def caption_height(tile_size: int) -> int:
    """Height of the caption band above each tile's image: the text height plus a margin."""
    (_, text_h), baseline = cv2.getTextSize("Ag", FONT, font_scale(tile_size), 1)
    return text_h + baseline + 6


# --- layout -----------------------------------------------------------------------------------------

def near_square_layout(num_tiles: int) -> tuple[int, int]:
    """(rows, cols) of the most nearly square grid with room for ``num_tiles``: cols = ceil(sqrt(n))."""
    if int(num_tiles) != num_tiles or num_tiles < 1:
        raise ValueError(f"the number of tiles must be a positive integer, got {num_tiles!r}")
    cols = math.ceil(math.sqrt(num_tiles))
    return math.ceil(num_tiles / cols), cols


@dataclasses.dataclass(frozen=True)
class GridGeometry:
    """Where each tile of a grid is: tiles of (caption_height + tile_size) x tile_size, row-major,
    separated by ``gap`` pixels. Tile ``i`` has its caption band on top and its square image below."""

    num_tiles: int
    rows: int
    cols: int
    tile_size: int
    caption_height: int
    gap: int

    @property
    def tile_hw(self) -> tuple[int, int]:
        return self.caption_height + self.tile_size, self.tile_size

    @property
    def grid_hw(self) -> tuple[int, int]:
        tile_h, tile_w = self.tile_hw
        return self.rows * tile_h + (self.rows - 1) * self.gap, self.cols * tile_w + (self.cols - 1) * self.gap

    def tile_origin(self, index: int) -> tuple[int, int]:
        """(x, y) of the top-left pixel of tile ``index`` (its caption band)."""
        if not 0 <= int(index) < self.num_tiles:
            raise ValueError(f"tile index must be in [0, {self.num_tiles}), got {index}")
        tile_h, tile_w = self.tile_hw
        row, col = divmod(int(index), self.cols)
        return col * (tile_w + self.gap), row * (tile_h + self.gap)

    def image_origin(self, index: int) -> tuple[int, int]:
        """(x, y) of the top-left pixel of tile ``index``'s square image area."""
        x, y = self.tile_origin(index)
        return x, y + self.caption_height


def grid_geometry(num_tiles: int, tile_size: int, *, gap: int = TILE_GAP) -> GridGeometry:
    """The geometry of a near-square grid of ``num_tiles`` tiles of ``tile_size`` pixels."""
    if int(tile_size) != tile_size or tile_size < 32:
        raise ValueError(f"tile_size must be an integer of at least 32 pixels, got {tile_size!r}")
    rows, cols = near_square_layout(num_tiles)
    return GridGeometry(int(num_tiles), rows, cols, int(tile_size), caption_height(tile_size), int(gap))


# --- boxes in a tile --------------------------------------------------------------------------------

def fit_into_tile(image_hw, tile_size: int) -> tuple[float, tuple[int, int]]:
    """(scale, (pad_x, pad_y)) that letterboxes an image of ``image_hw`` into a square tile."""
    _, scale, pad = letterbox_lib.letterbox_matrix(tuple(image_hw), (tile_size, tile_size), scaleup=True)
    return scale, pad


def box_pixel_extent(labels: np.ndarray, scale: float, pad, tile_size: int) -> np.ndarray:
    """int64 (N, 4): the pixel edges [x1, x2) x [y1, y2) each box covers in a tile.

    Box edges map by ``v * scale + pad``, are rounded to the nearest pixel edge and clipped to the
    tile; every box keeps at least one pixel so that even tiny boxes stay visible.
    """
    labels = np.asarray(labels, np.float64).reshape(-1, NUM_LABEL_COLUMNS)
    pad_x, pad_y = pad
    mapped = labels[:, :4] * float(scale) + np.array([pad_x, pad_y, pad_x, pad_y], np.float64)
    edges = np.floor(mapped + 0.5).astype(np.int64)
    size = int(tile_size)
    edges[:, [0, 1]] = np.clip(edges[:, [0, 1]], 0, size - 1)
    edges[:, [2, 3]] = np.clip(np.maximum(edges[:, [2, 3]], edges[:, [0, 1]] + 1), 1, size)
    return edges


def box_caption(class_index: int, iscrowd: bool, class_names: Sequence[str]) -> str:
    """The text written on a box: its class name (``class N`` when the name is unknown)."""
    index = int(class_index)
    name = class_names[index] if 0 <= index < len(class_names) else f"class {index}"
    return f"{name} (crowd)" if iscrowd else name


def _paint_outline(canvas: np.ndarray, extent, colour, thickness: int) -> None:
    """Outline ``extent`` inward with ``thickness`` pixel lines (modifies ``canvas``, a private copy)."""
    x1, y1, x2, y2 = (int(v) for v in extent)
    tx, ty = min(thickness, x2 - x1), min(thickness, y2 - y1)
    canvas[y1:y2, x1:x1 + tx] = colour
    canvas[y1:y2, x2 - tx:x2] = colour
    canvas[y1:y1 + ty, x1:x2] = colour
    canvas[y2 - ty:y2, x1:x2] = colour


def _paint_label(canvas: np.ndarray, extent, text: str, colour, scale: float) -> None:
    """Write ``text`` on a box-coloured plate above the box's top-left corner (inside the box when
    there is no room above); modifies ``canvas``, a private copy."""
    height, width = canvas.shape[:2]
    (text_w, text_h), baseline = cv2.getTextSize(text, FONT, scale, 1)
    plate_w, plate_h = min(text_w + 4, width), text_h + baseline + 4
    x1, y1 = int(extent[0]), int(extent[1])
    left = min(x1, width - plate_w)
    top = y1 - plate_h if y1 - plate_h >= 0 else min(y1, height - plate_h)
    canvas[top:top + plate_h, left:left + plate_w] = colour
    cv2.putText(canvas, text, (left + 2, top + 2 + text_h), FONT, scale, text_colour_on(colour), 1, cv2.LINE_AA)


def fit_text(text: str, max_width: int, scale: float) -> str:
    """``text`` shortened with a trailing ".." until it is at most ``max_width`` pixels wide."""
    if cv2.getTextSize(text, FONT, scale, 1)[0][0] <= max_width:
        return text
    for keep in range(len(text) - 1, 0, -1):
        candidate = text[:keep] + ".."
        if cv2.getTextSize(candidate, FONT, scale, 1)[0][0] <= max_width:
            return candidate
    return ""


@dataclasses.dataclass(frozen=True)
class Sample:
    """One picture to show: RGB uint8 (H, W, 3), its label array float32 (N, 6) in its pixels, a caption."""

    image: np.ndarray
    labels: np.ndarray
    caption: str
    scores: np.ndarray | None = None    # float (N,): detection scores, written after the class names


def _check_sample(sample: Sample) -> tuple[np.ndarray, np.ndarray]:
    image = np.asarray(sample.image)
    if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3 or 0 in image.shape[:2]:
        raise ValueError(f"a sample image must be uint8 (H, W, 3) RGB, got {image.dtype} {image.shape}")
    labels = np.asarray(sample.labels, np.float32)
    if labels.ndim != 2 or labels.shape[1] != NUM_LABEL_COLUMNS:
        raise ValueError(f"sample labels must be (N, {NUM_LABEL_COLUMNS}) x1, y1, x2, y2, class, iscrowd; "
                         f"got shape {labels.shape}")
    return image, labels


def render_tile(sample: Sample, class_names: Sequence[str], tile_size: int) -> np.ndarray:
    """uint8 (caption_height + tile_size, tile_size, 3) RGB: caption band over the letterboxed sample
    with every box outlined in its class colour and labelled with its class name."""
    image, labels = _check_sample(sample)
    size = int(tile_size)
    # letterbox returns a new array: the canvas drawn on below
    canvas, _, scale, pad = letterbox_lib.letterbox(image, np.zeros((0, NUM_LABEL_COLUMNS), np.float32),
                                                    (size, size), scaleup=True)
    extents = box_pixel_extent(labels, scale, pad, size)
    text_scale = font_scale(size)
    scores = [None] * len(labels) if sample.scores is None else np.asarray(sample.scores, np.float64).reshape(-1)
    for extent, label, score in zip(extents, labels, scores):
        text = box_caption(label[4], bool(label[5]), class_names)
        _paint_label(canvas, extent, text if score is None else f"{text} {score:.2f}", class_colour(label[4]),
                     text_scale)
    thickness = outline_thickness(size)
    for extent, label in zip(extents, labels):
        _paint_outline(canvas, extent, class_colour(label[4]), thickness)
    band_h = caption_height(size)
    tile = np.empty((band_h + size, size, 3), np.uint8)
    tile[:band_h] = CAPTION_BACKGROUND_RGB
    caption = fit_text(sample.caption, size - 6, text_scale)
    (_, text_h), _ = cv2.getTextSize("Ag", FONT, text_scale, 1)
    cv2.putText(tile, caption, (3, 3 + text_h), FONT, text_scale, CAPTION_TEXT_RGB, 1, cv2.LINE_AA)
    tile[band_h:] = canvas
    return tile


def render_grid(samples: Sequence[Sample], class_names: Sequence[str], *, tile_size: int = 320,
                gap: int = TILE_GAP) -> tuple[np.ndarray, GridGeometry]:
    """(uint8 RGB grid image, its geometry): one tile per sample in a near-square row-major grid."""
    geometry = grid_geometry(len(samples), tile_size, gap=gap)
    grid = np.empty(geometry.grid_hw + (3,), np.uint8)
    grid[:] = GRID_BACKGROUND_RGB
    tile_h, tile_w = geometry.tile_hw
    for index, sample in enumerate(samples):
        x, y = geometry.tile_origin(index)
        grid[y:y + tile_h, x:x + tile_w] = render_tile(sample, class_names, tile_size)
    return grid, geometry


def encode_grid(grid_rgb: np.ndarray, suffix: str) -> bytes:
    """The grid encoded for a file name ending in ``suffix`` (.jpg, .jpeg, .png or .bmp)."""
    suffix = suffix.lower()
    if suffix not in GRID_IMAGE_SUFFIXES:
        raise ValueError(f"the grid is written as one of {', '.join(GRID_IMAGE_SUFFIXES)}; got a file name "
                         f"ending in {suffix!r}")
    params = [cv2.IMWRITE_JPEG_QUALITY, JPEG_QUALITY] if suffix in (".jpg", ".jpeg") else []
    ok, encoded = cv2.imencode(suffix, cv2.cvtColor(grid_rgb, cv2.COLOR_RGB2BGR), params)
    if not ok:
        raise ValueError(f"OpenCV could not encode the grid as {suffix}")
    return encoded.tobytes()
