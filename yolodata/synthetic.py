"""Synthetic COCO-format detection dataset: coloured shapes on textured backgrounds, exact boxes.

The built-in dataset of ``make demo`` and of tests that need many images. A detector trained from
scratch for minutes on a CPU should learn it, so:

- five classes that differ by SHAPE only (circle, rectangle, triangle, cross, ring); every object gets
  a random flat colour, chosen among a few random candidates as the one farthest from the pixels it
  covers, so it stands out from the background but its colour says nothing about its class;
- objects of 8%-40% of the image's shorter side (log-uniform), 1-8 per image, overlapping, some
  crossing the image border, plus a few background images without objects;
- backgrounds are muted gradients, stripes or smooth blotches with fine noise: textured, but never
  shape-like.

Boxes are exact. Every object is rasterized to a mask (a pixel belongs to it when the pixel's centre
lies inside the ideal shape) and the image pixels are painted from that mask, later objects on top. The box is the extent of the object's VISIBLE pixels: inside the frame and not
covered by a later object (a COCO "edges" box: pixel columns 3..9 give x=3, w=7). Occlusion is bounded
instead of boxed amodally: a new object is placed only where every object, the new one included, keeps
at least ``min_visible_fraction`` (default 60%) of its full pixel area visible; a candidate that
violates this is re-drawn elsewhere (up to ``PLACEMENT_ATTEMPTS`` times, then that object is left out).
So every box covers most of a recognisable shape, and what a box encloses is what the image shows.

Category ids are not contiguous (1, 3, 5, 7, 9) so that a converter's id -> index mapping is exercised.

Randomness: image ``i`` of seed ``s`` comes only from ``keyed_rng(s, i, purpose="synthetic-image")``,
the split and the choice of background images from ``keyed_rng(s, purpose="synthetic-split")``: the
same arguments give the same bytes, for any number of workers (JPEG bytes assume the same OpenCV
build; the json and the lossless pixels depend only on numpy).
"""
from __future__ import annotations

import json
import math
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import cv2
import numpy as np

from .checks import resolve_num_workers
from .rng import keyed_rng

SHAPE_KINDS = ("circle", "rectangle", "triangle", "cross", "ring")
# Odd ids: not contiguous and not starting at 0, like real COCO's 1..90 with gaps.
CATEGORIES = tuple({"id": 2 * index + 1, "name": kind, "supercategory": "shape"}
                   for index, kind in enumerate(SHAPE_KINDS))
CATEGORY_ID = {category["name"]: category["id"] for category in CATEGORIES}

PLACEMENT_ATTEMPTS = 20      # candidates tried per object before it is left out
COLOUR_CANDIDATES = 6        # random colours considered per object; the most distinct one is used
EDGE_OVERHANG = 0.3          # object centres may lie this many object sizes outside the frame
JPEG_QUALITY = 90
MIN_IMAGE_SIDE = 32

TRAIN_JSON = "instances_train.json"
VAL_JSON = "instances_val.json"


# ---------------------------------------------------------------------------------------------
# Geometry of one object
# ---------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class ShapeSpec:
    """One object's geometry in image pixels, pixel-edge convention (see ``shape_mask``).

    ``size`` is the object's nominal extent: circle/ring diameter, rectangle long side, triangle
    circumscribed diameter, cross arm-to-arm length. ``aspect`` is the rectangle's short/long ratio,
    the cross's arm thickness / size, or the ring's inner / outer radius. ``angle`` in radians.
    """

    kind: str
    cx: float
    cy: float
    size: float
    aspect: float
    angle: float
    vertex_jitter: tuple[float, float] = (0.0, 0.0)   # triangle: offsets of vertices 2 and 3 (rad)


def _rotate(points: np.ndarray, angle: float) -> np.ndarray:
    cos_a, sin_a = math.cos(angle), math.sin(angle)
    return points @ np.array([[cos_a, sin_a], [-sin_a, cos_a]])


def shape_polygon(spec: ShapeSpec) -> np.ndarray:
    """Vertices float64 (K, 2) in image pixels of a polygon shape (rectangle, triangle, cross)."""
    half = spec.size / 2
    if spec.kind == "rectangle":
        short_half = half * spec.aspect
        local = np.array([[-half, -short_half], [half, -short_half], [half, short_half],
                          [-half, short_half]])
    elif spec.kind == "triangle":
        vertex_angles = spec.angle + np.array([0.0, 2 * math.pi / 3 + spec.vertex_jitter[0],
                                               4 * math.pi / 3 + spec.vertex_jitter[1]])
        local = half * np.stack([np.cos(vertex_angles), np.sin(vertex_angles)], axis=1)
        return local + (spec.cx, spec.cy)
    elif spec.kind == "cross":
        arm = spec.size * spec.aspect / 2   # half thickness of each bar
        # a plus sign traced around its outline: 12 corners
        local = np.array([[-arm, -half], [arm, -half], [arm, -arm], [half, -arm], [half, arm],
                          [arm, arm], [arm, half], [-arm, half], [-arm, arm], [-half, arm],
                          [-half, -arm], [-arm, -arm]])
    else:
        raise ValueError(f"{spec.kind!r} is not a polygon shape")
    return _rotate(local, spec.angle) + (spec.cx, spec.cy)


def shape_mask(spec: ShapeSpec) -> tuple[np.ndarray, int, int]:
    """The object's full pixel mask: (bool (h, w) patch, x0, y0) with the patch's top-left at
    image column x0, row y0 (either may be negative or beyond the image: nothing is clipped here).

    A pixel belongs to the object exactly when its centre lies inside the ideal shape (pixel column i
    spans [i, i+1), centre i + 0.5). This is unbiased: the mask's extent is the shape's extent within
    half a pixel, unlike OpenCV's fill, which also takes pixels whose centre lies up to half a pixel
    outside. Cost: a few vectorised comparisons on a patch around the object.
    """
    reach = 0.75 * spec.size + 2   # > the largest centre-to-vertex distance of every kind
    x0, y0 = math.floor(spec.cx - reach), math.floor(spec.cy - reach)
    side = math.ceil(2 * reach) + 2
    centres = np.arange(side, dtype=np.float64) + 0.5
    # offsets of the pixel centres from the object centre: a row (1, side) and a column (side, 1)
    dx = (centres + (x0 - spec.cx))[None, :]
    dy = (centres + (y0 - spec.cy))[:, None]
    half = spec.size / 2
    if spec.kind in ("circle", "ring"):
        squared = dx * dx + dy * dy   # (side, side)
        mask = squared <= half * half
        if spec.kind == "ring":
            mask &= squared > (half * spec.aspect) ** 2
        return mask, x0, y0
    if spec.kind == "triangle":
        vertices = shape_polygon(spec) - (spec.cx, spec.cy)
        # a point is inside when it lies on the same side of all three edges
        sides = []
        for start, stop in zip(vertices, np.roll(vertices, -1, axis=0)):
            edge_x, edge_y = stop - start
            sides.append(edge_x * (dy - start[1]) - edge_y * (dx - start[0]))
        mask = ((sides[0] >= 0) & (sides[1] >= 0) & (sides[2] >= 0)) | \
               ((sides[0] <= 0) & (sides[1] <= 0) & (sides[2] <= 0))
        return mask, x0, y0
    # rectangle and cross: pixel centres in the shape's own (unrotated) frame, (side, side) each
    cos_a, sin_a = math.cos(spec.angle), math.sin(spec.angle)
    along = np.abs(dx * cos_a + dy * sin_a)
    across = np.abs(dy * cos_a - dx * sin_a)
    if spec.kind == "rectangle":
        return (along <= half) & (across <= half * spec.aspect), x0, y0
    if spec.kind == "cross":
        arm = spec.size * spec.aspect / 2
        return ((along <= half) & (across <= arm)) | ((along <= arm) & (across <= half)), x0, y0
    raise ValueError(f"unknown shape kind {spec.kind!r}; expected one of {SHAPE_KINDS}")


def sample_shape(rng: np.random.Generator, kind: str, height: int, width: int,
                 object_size: tuple[float, float]) -> ShapeSpec:
    """A random object of ``kind``: size log-uniform in ``object_size`` x the shorter image side,
    centre anywhere in the frame or up to ``EDGE_OVERHANG`` sizes outside it."""
    low, high = object_size
    size = min(height, width) * math.exp(rng.uniform(math.log(low), math.log(high)))
    overhang = EDGE_OVERHANG * size
    cx = rng.uniform(-overhang, width + overhang)
    cy = rng.uniform(-overhang, height + overhang)
    angle = rng.uniform(0.0, 2 * math.pi)
    jitter = (0.0, 0.0)
    if kind == "rectangle":
        aspect = rng.uniform(0.45, 1.0)
    elif kind == "cross":
        aspect = rng.uniform(0.22, 0.34)
    elif kind == "ring":
        aspect = rng.uniform(0.45, 0.65)
    elif kind == "triangle":
        aspect = 1.0
        jitter = tuple(float(v) for v in rng.uniform(-0.25, 0.25, 2))
    elif kind == "circle":
        aspect = 1.0
    else:
        raise ValueError(f"unknown shape kind {kind!r}; expected one of {SHAPE_KINDS}")
    return ShapeSpec(kind, float(cx), float(cy), float(size), float(aspect), float(angle), jitter)


# ---------------------------------------------------------------------------------------------
# Background
# ---------------------------------------------------------------------------------------------

def render_background(rng: np.random.Generator, height: int, width: int) -> np.ndarray:
    """A muted textured background uint8 (height, width, 3) BGR: gradient, stripes or blotches,
    always with fine noise.

    A smooth scalar field is drawn at half resolution and upsampled, uniform per-pixel noise is added
    at full resolution (all in uint8, cheap), then a two-colour palette maps the field to BGR.
    """
    style = int(rng.integers(3))
    noise_levels = int(rng.choice([8, 16, 32]))   # noise is uniform in 0..noise_levels-1
    small_h, small_w = (height + 1) // 2, (width + 1) // 2
    angle = rng.uniform(0, 2 * math.pi)
    # projection of every (half-resolution) pixel on a random direction, in full-resolution pixels:
    # (small_h, small_w) by broadcasting a row and a column
    along = (np.arange(small_w, dtype=np.float32)[None, :] * np.float32(2 * math.cos(angle))
             + np.arange(small_h, dtype=np.float32)[:, None] * np.float32(2 * math.sin(angle)))
    if style == 0:      # linear gradient
        span = float(along.max() - along.min()) or 1.0
        field = (along - along.min()) / np.float32(span)
    elif style == 1:    # soft stripes, at most half the palette's contrast
        period = rng.uniform(12, 60)
        phase = np.float32(rng.uniform(0, 2 * math.pi))
        field = 0.5 + 0.25 * np.sin(along * np.float32(2 * math.pi / period) + phase)
    else:               # smooth blotches: a coarse random grid upsampled
        grid = rng.random((int(rng.integers(2, 7)), int(rng.integers(2, 7)))).astype(np.float32)
        field = np.clip(cv2.resize(grid, (small_w, small_h), interpolation=cv2.INTER_CUBIC), 0, 1)
    field_u8 = (field * np.float32(255 - noise_levels)).astype(np.uint8)
    field_u8 = cv2.resize(field_u8, (width, height), interpolation=cv2.INTER_LINEAR)
    noise = np.frombuffer(rng.bytes(height * width), np.uint8).reshape(height, width) & (noise_levels - 1)
    field_u8 = cv2.add(field_u8, noise)   # no overflow: field <= 255 - noise_levels

    first = rng.uniform(50, 200, 3)
    second = np.clip(first + rng.uniform(-80, 80, 3), 0, 255)
    weights = np.linspace(0.0, 1.0, 256)[:, None]
    palette = np.round(first + weights * (second - first)).astype(np.uint8)   # (256, 3)
    return cv2.merge([cv2.LUT(field_u8, np.ascontiguousarray(palette[:, channel])) for channel in range(3)])


# ---------------------------------------------------------------------------------------------
# One image
# ---------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class SyntheticObject:
    """One drawn object: its box is the extent of its visible pixels (xyxy, pixel edges)."""

    category_id: int
    spec: ShapeSpec
    colour: tuple[int, int, int]        # BGR, painted flat
    box_xyxy: tuple[int, int, int, int]
    visible_area: int                   # pixels inside the frame and not covered by later objects
    full_area: int                      # pixels of the whole rasterized shape (unclipped)


@dataclass(frozen=True)
class SyntheticImage:
    image_bgr: np.ndarray               # uint8 (H, W, 3), before JPEG encoding
    objects: tuple[SyntheticObject, ...]
    owner: np.ndarray                   # int16 (H, W): index into objects of the visible pixel, -1 none


@dataclass
class _Placed:
    spec: ShapeSpec
    colour: tuple[int, int, int]
    full_area: int
    visible_area: int
    region: tuple[int, int, int, int]   # x0, y0, x1, y1 of the in-frame part of its patch


def _crop_to_frame(mask, x0, y0, height, width):
    """In-frame part of a mask patch: (bool sub-mask, (ix0, iy0, ix1, iy1)) or None if outside."""
    ix0, iy0 = max(x0, 0), max(y0, 0)
    ix1, iy1 = min(x0 + mask.shape[1], width), min(y0 + mask.shape[0], height)
    if ix1 <= ix0 or iy1 <= iy0:
        return None
    return mask[iy0 - y0:iy1 - y0, ix0 - x0:ix1 - x0], (ix0, iy0, ix1, iy1)


def _most_distinct_colour(rng, covered_pixels: np.ndarray) -> tuple[int, int, int]:
    """Among a few random colours, the one farthest from the mean of the pixels it will cover."""
    candidates = rng.integers(0, 256, (COLOUR_CANDIDATES, 3))
    mean = covered_pixels.reshape(-1, 3).mean(axis=0)
    best = candidates[np.argmax(np.abs(candidates - mean).sum(axis=1))]
    return tuple(int(v) for v in best)


def render_synthetic_image(seed: int, index: int, *, image_size=(480, 640), num_objects=None,
                           objects_per_image=(1, 8), object_size=(0.08, 0.4),
                           min_visible_fraction=0.6) -> SyntheticImage:
    """Image ``index`` of ``seed``: background, objects and their exact boxes (see module docstring).

    ``num_objects`` = 0 makes a background image; None draws the count from ``objects_per_image``.
    Objects whose placement keeps failing the visibility rule are left out, so an image may hold
    fewer objects than drawn (rarely zero).
    """
    rng = keyed_rng(seed, index, purpose="synthetic-image")
    height, width = _sample_image_size(rng, image_size)
    canvas = render_background(rng, height, width)
    count = int(rng.integers(objects_per_image[0], objects_per_image[1] + 1))
    if num_objects is not None:
        count = int(num_objects)
    owner = np.full((height, width), -1, np.int16)
    placed: list[_Placed] = []
    for _ in range(count):
        kind = SHAPE_KINDS[int(rng.integers(len(SHAPE_KINDS)))]
        for _attempt in range(PLACEMENT_ATTEMPTS):
            spec = sample_shape(rng, kind, height, width, object_size)
            mask, x0, y0 = shape_mask(spec)
            full_area = int(np.count_nonzero(mask))
            cropped = _crop_to_frame(mask, x0, y0, height, width)
            if full_area == 0 or cropped is None:
                continue
            local_mask, (ix0, iy0, ix1, iy1) = cropped
            in_frame = int(np.count_nonzero(local_mask))
            if in_frame < min_visible_fraction * full_area:
                continue
            covered_owner = owner[iy0:iy1, ix0:ix1][local_mask]
            covered = np.bincount(covered_owner[covered_owner >= 0], minlength=len(placed))
            if any(other.visible_area - int(covered[j]) < min_visible_fraction * other.full_area
                   for j, other in enumerate(placed)):
                continue
            for j, other in enumerate(placed):
                other.visible_area -= int(covered[j])
            colour = _most_distinct_colour(rng, canvas[iy0:iy1, ix0:ix1][local_mask])
            owner[iy0:iy1, ix0:ix1][local_mask] = len(placed)
            canvas[iy0:iy1, ix0:ix1][local_mask] = colour
            placed.append(_Placed(spec, colour, full_area, in_frame, (ix0, iy0, ix1, iy1)))
            break

    objects = []
    for j, item in enumerate(placed):
        if item.visible_area == 0:
            continue  # covered completely (only possible with min_visible_fraction=0)
        ix0, iy0, ix1, iy1 = item.region
        rows, cols = np.nonzero(owner[iy0:iy1, ix0:ix1] == j)
        box = (ix0 + int(cols.min()), iy0 + int(rows.min()), ix0 + int(cols.max()) + 1,
               iy0 + int(rows.max()) + 1)
        objects.append(SyntheticObject(CATEGORY_ID[item.spec.kind], item.spec, item.colour, box,
                                       item.visible_area, item.full_area))
    if len(objects) < len(placed):
        # renumber the owner map to positions in ``objects``; lookup[k + 1] is for placed index k
        kept = [j for j, item in enumerate(placed) if item.visible_area > 0]
        lookup = np.full(len(placed) + 1, -1, np.int16)
        lookup[np.array(kept) + 1] = np.arange(len(kept))
        owner = lookup[owner + 1]
    return SyntheticImage(canvas, tuple(objects), owner)


def _sample_image_size(rng, image_size) -> tuple[int, int]:
    (h_low, h_high), (w_low, w_high) = _size_ranges(image_size)
    height = int(rng.integers(h_low, h_high + 1))
    width = int(rng.integers(w_low, w_high + 1))
    return height, width


def _size_ranges(image_size) -> tuple[tuple[int, int], tuple[int, int]]:
    """((h_min, h_max), (w_min, w_max)) from (h, w) or ((h_min, h_max), (w_min, w_max))."""
    message = (f"image_size must be (height, width) or ((min_height, max_height), (min_width, "
               f"max_width)) with sides >= {MIN_IMAGE_SIDE}, got {image_size!r}")
    try:
        if len(image_size) != 2:
            raise ValueError(message)
        ranges = []
        for side in image_size:
            low, high = (side, side) if np.isscalar(side) else tuple(side)
            if int(low) != low or int(high) != high:
                raise ValueError(message)
            ranges.append((int(low), int(high)))
    except (TypeError, ValueError) as error:   # not a pair, or not numbers
        raise ValueError(message) from error
    if any(low < MIN_IMAGE_SIDE or high < low for low, high in ranges):
        raise ValueError(message)
    return ranges[0], ranges[1]


# ---------------------------------------------------------------------------------------------
# The dataset
# ---------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class SyntheticCoco:
    """Where a generated dataset lives, and what it holds."""

    output_dir: Path
    image_dir: Path          # the JPEGs of both splits; json file_name values are relative to it
    train_json: Path
    val_json: Path
    num_train: int
    num_val: int
    num_background: int      # images without objects (both splits): the background images, plus any
                             # image whose every object placement failed (practically never)
    boxes_per_category: dict  # category name -> number of boxes (both splits)


def split_and_backgrounds(num_images: int, seed: int, val_fraction: float,
                          background_fraction: float) -> tuple[np.ndarray, np.ndarray]:
    """(is_val bool (N,), is_background bool (N,)) for images 0..N-1.

    round(N * val_fraction) validation images, but at least one in each split when N >= 2 and the
    fraction is strictly between 0 and 1; round(N * background_fraction) background images, spread
    over both splits at random.
    """
    rng = keyed_rng(seed, purpose="synthetic-split")
    num_val = int(round(num_images * val_fraction))
    if num_images >= 2 and 0 < val_fraction < 1:
        num_val = min(max(num_val, 1), num_images - 1)
    is_val = np.zeros(num_images, bool)
    is_val[rng.permutation(num_images)[:num_val]] = True
    is_background = np.zeros(num_images, bool)
    is_background[rng.permutation(num_images)[:int(round(num_images * background_fraction))]] = True
    return is_val, is_background


def _validate(num_images, val_fraction, background_fraction, objects_per_image, object_size,
              min_visible_fraction, jpeg_quality):
    if int(num_images) != num_images or num_images < 1:
        raise ValueError(f"num_images must be a positive integer, got {num_images!r}")
    for name, value in (("val_fraction", val_fraction), ("background_fraction", background_fraction),
                        ("min_visible_fraction", min_visible_fraction)):
        if not 0.0 <= float(value) <= 1.0:
            raise ValueError(f"{name} must be in [0, 1], got {value!r}")
    low, high = objects_per_image
    if int(low) != low or int(high) != high or not 0 <= low <= high:
        raise ValueError(f"objects_per_image must be (min, max) integers with 0 <= min <= max, "
                         f"got {objects_per_image!r}")
    low, high = object_size
    if not 0.0 < low <= high <= 1.0:
        raise ValueError(f"object_size must be (min, max) fractions of the shorter image side with "
                         f"0 < min <= max <= 1, got {object_size!r}")
    if not 1 <= int(jpeg_quality) <= 100:
        raise ValueError(f"jpeg_quality must be in 1..100, got {jpeg_quality!r}")


def make_synthetic_coco(output_dir, *, num_images: int, seed: int = 0, image_size=(480, 640),
                        val_fraction: float = 0.2, background_fraction: float = 0.05,
                        objects_per_image=(1, 8), object_size=(0.08, 0.4),
                        min_visible_fraction: float = 0.6, jpeg_quality: int = JPEG_QUALITY,
                        num_workers: int | None = None, overwrite: bool = False,
                        progress: Callable[[int], None] | None = None) -> SyntheticCoco:
    """Write a synthetic COCO instances dataset under ``output_dir`` and return where it is.

    Layout: ``images/000001.jpg ...`` (image id i+1 for image index i, both splits in one folder) and
    ``annotations/instances_train.json`` / ``instances_val.json`` (COCO "instances": info, licenses,
    images, annotations with bbox xywh in pixel edges, area = visible pixel count, iscrowd 0, no
    segmentation; categories with ids 1, 3, 5, 7, 9). Annotation ids are unique across both files.

    ``image_size`` is (height, width) or ((min_h, max_h), (min_w, max_w)) for sizes drawn per image.
    ``num_workers`` threads render and encode (``checks.resolve_num_workers``); the output is the
    same for any number. ``progress(n)`` is called with the number of images just finished.
    An existing non-empty ``output_dir`` is refused unless ``overwrite`` (files of the same name are
    then replaced; other files are left alone).
    """
    _validate(num_images, val_fraction, background_fraction, objects_per_image, object_size,
              min_visible_fraction, jpeg_quality)
    _size_ranges(image_size)
    output_dir = Path(output_dir)
    image_dir, annotation_dir = _prepare_output_dir(output_dir, overwrite)
    num_images = int(num_images)
    is_val, is_background = split_and_backgrounds(num_images, seed, val_fraction, background_fraction)
    workers = resolve_num_workers(num_workers, "num_workers")

    def produce(index: int):
        return _write_synthetic_image(
            image_dir, seed, index, jpeg_quality, image_size=image_size,
            num_objects=0 if is_background[index] else None, objects_per_image=objects_per_image,
            object_size=object_size, min_visible_fraction=min_visible_fraction)

    splits = {False: _empty_coco(), True: _empty_coco()}
    boxes_per_category = {category["name"]: 0 for category in CATEGORIES}
    name_of = {category["id"]: category["name"] for category in CATEGORIES}
    num_annotations = 0
    images_without_objects = 0
    with ThreadPoolExecutor(max_workers=workers) as pool:
        # map keeps index order, so ids and json order never depend on thread timing
        for index, (file_name, height, width, objects) in enumerate(pool.map(produce, range(num_images))):
            image, annotations = _coco_entries(index, file_name, height, width, objects, num_annotations)
            coco = splits[bool(is_val[index])]
            coco["images"].append(image)
            coco["annotations"].extend(annotations)
            num_annotations += len(annotations)
            images_without_objects += not objects
            for obj in objects:
                boxes_per_category[name_of[obj.category_id]] += 1
            if progress is not None:
                progress(1)

    train_json, val_json = annotation_dir / TRAIN_JSON, annotation_dir / VAL_JSON
    for path, coco in ((train_json, splits[False]), (val_json, splits[True])):
        path.write_text(json.dumps(coco, separators=(",", ":")))
    return SyntheticCoco(output_dir, image_dir, train_json, val_json,
                         num_train=int((~is_val).sum()), num_val=int(is_val.sum()),
                         num_background=images_without_objects, boxes_per_category=boxes_per_category)


def _prepare_output_dir(output_dir: Path, overwrite: bool) -> tuple[Path, Path]:
    """(images folder, annotations folder) of ``output_dir``, created; a non-empty folder needs ``overwrite``."""
    if output_dir.exists() and any(output_dir.iterdir()) and not overwrite:
        raise ValueError(f"{output_dir} is not empty; choose a new folder or pass overwrite=True "
                         f"(--overwrite) to replace the generated files in it")
    image_dir = output_dir / "images"
    annotation_dir = output_dir / "annotations"
    image_dir.mkdir(parents=True, exist_ok=True)
    annotation_dir.mkdir(parents=True, exist_ok=True)
    return image_dir, annotation_dir


def _write_synthetic_image(image_dir: Path, seed: int, index: int, jpeg_quality: int, **render_options):
    """Render image ``index`` (``render_synthetic_image``) and write it as JPEG; (file name, height, width, objects)."""
    rendered = render_synthetic_image(seed, index, **render_options)
    ok, encoded = cv2.imencode(".jpg", rendered.image_bgr, [cv2.IMWRITE_JPEG_QUALITY, int(jpeg_quality)])
    if not ok:
        raise RuntimeError(f"OpenCV could not encode synthetic image {index} as JPEG")
    file_name = f"{index + 1:06d}.jpg"
    (image_dir / file_name).write_bytes(encoded.tobytes())
    height, width = rendered.image_bgr.shape[:2]
    return file_name, height, width, rendered.objects


def _coco_entries(index: int, file_name: str, height: int, width: int, objects,
                  num_annotations_before: int) -> tuple[dict, list[dict]]:
    """The COCO image entry of image ``index`` (id index + 1) and its annotations, numbered on from
    ``num_annotations_before`` (ids unique across both splits)."""
    image = {"id": index + 1, "file_name": file_name, "height": height, "width": width, "license": 0}
    annotations = []
    for number, obj in enumerate(objects, start=num_annotations_before + 1):
        x1, y1, x2, y2 = obj.box_xyxy
        annotations.append({"id": number, "image_id": index + 1, "category_id": obj.category_id,
                            "bbox": [float(x1), float(y1), float(x2 - x1), float(y2 - y1)],
                            "area": float(obj.visible_area), "iscrowd": 0})
    return image, annotations


def _empty_coco() -> dict:
    return {
        "info": {"description": "yolodata synthetic shapes (yolodata.synthetic)", "version": "1.0"},
        "licenses": [{"id": 0, "name": "generated, no rights reserved", "url": ""}],
        "images": [],
        "annotations": [],
        "categories": [dict(category) for category in CATEGORIES],
    }
