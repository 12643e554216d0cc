"""Pictures of a converted dataset: grids of samples with their boxes, and label statistics.

What users look at before a long run (``tools/visualize.py`` is the command line):

* a grid of samples, either as stored (``raw``: decoded from the shards, with their stored boxes), as the
  train pipeline's geometry makes them (``mosaic``: mosaic + affine, no colour jitter or flips), or
  exactly as training sees them (``full``). Every box is outlined in its class colour with its class
  name written; every tile has a caption with the image id (and, for ``raw``, the file name);
* label statistics in the manner of YOLOv5's ``labels.jpg``: instances per class, box width/height
  and centre distributions relative to the image size, boxes per image.

Layout of the module: pure functions first (layout geometry, tile and grid rendering, statistics,
the statistics figure), then the readers that fetch samples and label rows from the shards (the only
code here that touches files). Everything is deterministic: the same arguments give the same bytes.

Drawing conventions (tests rely on them): a box ``x1, y1, x2, y2`` (edge coordinates, see
``augment/affine.py``) maps into a tile by the tile's letterbox ``scale`` and ``pad``, each coordinate
is rounded to the nearest pixel edge (``floor(v + 0.5)``), and the outline is drawn *inward*: its
``t`` pixel wide lines cover columns ``[x1, x1 + t)`` and ``[x2 - t, x2)`` and rows ``[y1, y1 + t)``
and ``[y2 - t, y2)``. Outlines are drawn after all class-name labels, so no label hides an outline.
"""
from __future__ import annotations

import dataclasses
import io
import math
from typing import Iterable, Sequence

import cv2
import numpy as np

from .augment import letterbox as letterbox_lib
from .manifest import Manifest
from .schema import NUM_LABEL_COLUMNS, row_labels

STAGES = ("raw", "mosaic", "full")

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
    for extent, label in zip(extents, labels):
        _paint_label(canvas, extent, box_caption(label[4], bool(label[5]), class_names), class_colour(label[4]),
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


# --- label statistics -------------------------------------------------------------------------------

@dataclasses.dataclass(frozen=True)
class LabelStatistics:
    """Counts and box geometry of every stored box (crowd boxes included, as the manifest counts them).

    ``relative_centres`` / ``relative_sizes``: float64 (N, 2) box centre and width/height divided by the
    stored image's width and height; ``box_classes`` int64 (N,) in the same order.
    """

    num_images: int
    num_crowd_boxes: int
    boxes_per_class: np.ndarray
    boxes_per_image: np.ndarray
    box_classes: np.ndarray
    relative_centres: np.ndarray
    relative_sizes: np.ndarray

    @property
    def num_boxes(self) -> int:
        return int(self.boxes_per_image.sum())

    @property
    def num_background_images(self) -> int:
        return int((self.boxes_per_image == 0).sum())

    def counts_by_key(self, keys: Sequence[str]) -> dict:
        """{key: boxes of class i} for the keys of the classes in index order (see ``category_keys``)."""
        if len(keys) != len(self.boxes_per_class):
            raise ValueError(f"expected {len(self.boxes_per_class)} keys (one per class), got {len(keys)}")
        return {key: int(count) for key, count in zip(keys, self.boxes_per_class)}


def label_statistics(rows: Iterable, num_classes: int) -> LabelStatistics:
    """Statistics of ``rows``: (image_id, height, width, label array (N, 6)) per stored image.

    Raises ValueError naming the image when a class index is outside [0, num_classes) or an image size
    is not positive.
    """
    if int(num_classes) != num_classes or num_classes < 1:
        raise ValueError(f"num_classes must be a positive integer, got {num_classes!r}")
    per_image, classes, centres, sizes = [], [], [], []
    crowd = 0
    for image_id, height, width, labels in rows:
        labels = np.asarray(labels, np.float64).reshape(-1, NUM_LABEL_COLUMNS)
        height, width = int(height), int(width)
        if height < 1 or width < 1:
            raise ValueError(f"image_id {image_id}: stored size {width}x{height} is not positive")
        row_classes = labels[:, 4].astype(np.int64)
        bad = row_classes[(row_classes < 0) | (row_classes >= num_classes)]
        if bad.size:
            raise ValueError(f"image_id {image_id}: class index {int(bad[0])} is outside 0..{num_classes - 1} "
                             f"(the manifest's categories)")
        image_wh = np.array([width, height], np.float64)
        per_image.append(len(labels))
        classes.append(row_classes)
        centres.append((labels[:, 0:2] + labels[:, 2:4]) / 2 / image_wh)
        sizes.append((labels[:, 2:4] - labels[:, 0:2]) / image_wh)
        crowd += int((labels[:, 5] != 0).sum())
    box_classes = np.concatenate(classes) if classes else np.zeros(0, np.int64)
    return LabelStatistics(
        num_images=len(per_image), num_crowd_boxes=crowd,
        boxes_per_class=np.bincount(box_classes, minlength=int(num_classes)).astype(np.int64),
        boxes_per_image=np.asarray(per_image, np.int64), box_classes=box_classes,
        relative_centres=np.concatenate(centres) if centres else np.zeros((0, 2)),
        relative_sizes=np.concatenate(sizes) if sizes else np.zeros((0, 2)))


def format_statistics(stats: LabelStatistics, keys: Sequence[str]) -> str:
    """A short text summary: images, boxes, per-class counts (classes without boxes listed together)."""
    mean = stats.num_boxes / stats.num_images if stats.num_images else 0.0
    most = int(stats.boxes_per_image.max()) if stats.num_images else 0
    lines = [f"images: {stats.num_images} ({stats.num_background_images} without boxes)",
             f"boxes: {stats.num_boxes} ({stats.num_crowd_boxes} crowd), {mean:.2f} per image, "
             f"at most {most} in one image",
             "boxes per class:"]
    counts = stats.counts_by_key(keys)
    width = max((len(k) for k in keys), default=0)
    lines += [f"  {key:<{width}}  {count}" for key, count in counts.items() if count]
    empty = [key for key, count in counts.items() if not count]
    if empty:
        lines.append(f"  {len(empty)} class(es) without boxes: {', '.join(empty)}")
    return "\n".join(lines)


def label_figure(stats: LabelStatistics, class_names: Sequence[str]):
    """A matplotlib Figure (Agg canvas, no pyplot state) with four panels as YOLOv5's labels.jpg:
    instances per class, box centres (heat map), box width/height (2-D histogram), boxes per image."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.colors import PowerNorm
    from matplotlib.figure import Figure
    from matplotlib.ticker import MaxNLocator

    figure = Figure(figsize=(10, 9), dpi=100)
    FigureCanvasAgg(figure)
    (bars, centres), (sizes, per_image) = figure.subplots(2, 2)
    num_classes = len(stats.boxes_per_class)
    colours = [tuple(v / 255 for v in class_colour(i)) for i in range(num_classes)]
    bars.bar(np.arange(num_classes), stats.boxes_per_class, color=colours, edgecolor="black", linewidth=0.3)
    bars.set_ylabel("instances")
    bars.set_title("instances per class")
    if num_classes <= 30:
        bars.set_xticks(np.arange(num_classes))
        bars.set_xticklabels(list(class_names), rotation=90 if num_classes > 6 else 0, fontsize=8)
    else:
        bars.set_xlabel("class index")

    # square-root colour scale: a few dense cells would otherwise hide the rest
    histogram_kwargs = dict(bins=50, range=[[0, 1], [0, 1]], cmap="Blues", norm=PowerNorm(gamma=0.5))
    centres.hist2d(stats.relative_centres[:, 0], stats.relative_centres[:, 1], **histogram_kwargs)
    centres.set_xlim(0, 1)
    centres.set_ylim(1, 0)  # image rows grow downwards
    centres.set_xlabel("centre x / image width")
    centres.set_ylabel("centre y / image height")
    centres.set_title("box centres")
    centres.set_aspect("equal")

    sizes.hist2d(stats.relative_sizes[:, 0], stats.relative_sizes[:, 1], **histogram_kwargs)
    sizes.set_xlabel("width / image width")
    sizes.set_ylabel("height / image height")
    sizes.set_title("box sizes")
    sizes.set_aspect("equal")

    most = int(stats.boxes_per_image.max()) if stats.num_images else 0
    per_image.hist(stats.boxes_per_image, bins=np.arange(most + 2) - 0.5, color="#4878a8", edgecolor="white")
    per_image.set_xlabel("boxes in the image")
    per_image.set_ylabel("images")
    per_image.set_title("boxes per image")
    for axis in (bars.yaxis, per_image.xaxis, per_image.yaxis):
        axis.set_major_locator(MaxNLocator(integer=True))

    figure.suptitle(f"{stats.num_images} images, {stats.num_boxes} boxes ({stats.num_crowd_boxes} crowd), "
                    f"{stats.num_background_images} images without boxes")
    figure.tight_layout()
    return figure


def check_figure_suffix(suffix: str) -> str:
    """The matplotlib format for a file name ending in ``suffix``; ValueError listing the choices."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    formats = FigureCanvasAgg.filetypes
    fmt = suffix.lower().lstrip(".")
    if fmt not in formats:
        raise ValueError(f"the statistics figure can be written as {', '.join('.' + f for f in sorted(formats))}; "
                         f"got a file name ending in {suffix!r}")
    return fmt


def encode_figure(figure, suffix: str) -> bytes:
    """``figure`` rendered in the format its file name suffix names (.jpg, .png, .pdf, .svg ...)."""
    fmt = check_figure_suffix(suffix)
    buffer = io.BytesIO()
    # no metadata: the same statistics give the same bytes
    metadata = {"png": {"Software": None}, "pdf": {"CreationDate": None}, "svg": {"Date": None}}.get(fmt)
    figure.savefig(buffer, format=fmt, metadata=metadata)
    return buffer.getvalue()


# --- files ------------------------------------------------------------------------------------------

# --- reading from the shards ------------------------------------------------------------------------

def _scalar(value):
    """A Python value from MindDataset's numpy output (0-d/1-element arrays, bytes of strings)."""
    value = np.asarray(value)
    value = value.reshape(-1)[0] if value.size == 1 else value
    if isinstance(value, np.ndarray):
        return value
    value = value.item() if hasattr(value, "item") else value
    return value.decode("utf-8") if isinstance(value, bytes) else value


def read_label_rows(folder, *, num_workers: int | None = None):
    """Yield (image_id, height, width, label array) for every stored row, in row order.

    Reads only the small columns (no image bytes) with MindDataset; ``schema.row_labels`` honours
    ``num_boxes`` so the placeholder of a background row is never counted.
    """
    import mindspore.dataset as ds

    from .checks import resolve_num_workers
    from .manifest import load_manifest

    files = load_manifest(folder).shard_paths
    dataset = ds.MindDataset(str(files[0]), shuffle=False, num_parallel_workers=resolve_num_workers(num_workers),
                             columns_list=["image_id", "height", "width", "num_boxes", "boxes", "classes",
                                           "iscrowd"])
    for row in dataset.create_dict_iterator(output_numpy=True, num_epochs=1):
        yield (int(_scalar(row["image_id"])), int(_scalar(row["height"])), int(_scalar(row["width"])),
               row_labels(row["num_boxes"], row["boxes"], row["classes"], row["iscrowd"]))


def dataset_label_statistics(folder, *, num_workers: int | None = None) -> tuple[LabelStatistics, Manifest]:
    """(statistics of every stored box of a converter output folder, its manifest)."""
    from .manifest import load_manifest

    manifest = load_manifest(folder)
    stats = label_statistics(read_label_rows(folder, num_workers=num_workers), manifest.num_classes)
    if stats.num_images != manifest.num_images:
        raise ValueError(f"{folder}: the shards hold {stats.num_images} rows but the manifest says "
                         f"{manifest.num_images}; the folder is damaged (re-run tools/coco2mindrecord.py)")
    return stats, manifest


def stage_augment(stage: str, augment: dict | None = None) -> dict:
    """Augmentation options for a pipeline stage: ``full`` keeps them; ``mosaic`` keeps the geometry
    (mosaic, affine) and turns off the colour jitter, flips and pixel extras."""
    augment = dict(augment or {})
    if stage == "mosaic":
        augment.update(hsv_h=0.0, hsv_s=0.0, hsv_v=0.0, fliplr=0.0, flipud=0.0, extras=0.0)
    elif stage != "full":
        raise ValueError(f"stage must be 'mosaic' or 'full' for the train pipeline, got {stage!r}")
    return augment


def first_rows(num_images: int, *, num: int, seed: int, dataset_id: str) -> np.ndarray:
    """int64 (num,): the rows at the first ``num`` positions of epoch 0's sample order for ``seed``
    (wrapping around as the pipeline pads): the images the train pipeline starts from."""
    from .sampler import epoch_order

    order = epoch_order(int(num_images), seed=seed, epoch=0, dataset_key=dataset_id)
    return order[np.arange(int(num)) % len(order)]


def raw_samples(folder, *, num: int, seed: int = 0) -> list[Sample]:
    """The stored images and boxes of the rows the train pipeline visits first (epoch 0, ``seed``),
    captioned with image id and file name."""
    import mindspore.dataset as ds

    from .image_io import decode_stored
    from .pipeline import resolve_mindrecord

    _check_num(num)
    files, manifest, _ = resolve_mindrecord(folder)
    rows = first_rows(manifest.num_images, num=num, seed=seed, dataset_id=manifest.dataset_id)
    unique_rows = list(dict.fromkeys(int(r) for r in rows))
    dataset = ds.MindDataset(files[0], sampler=ds.SubsetSampler(unique_rows),
                             columns_list=["image", "image_id", "file_name", "num_boxes", "boxes", "classes",
                                           "iscrowd", "row_index"])
    by_row = {}
    for row in dataset.create_dict_iterator(output_numpy=True, num_epochs=1):
        image = cv2.cvtColor(decode_stored(row["image"]), cv2.COLOR_BGR2RGB)
        labels = row_labels(row["num_boxes"], row["boxes"], row["classes"], row["iscrowd"])
        caption = f"id {int(_scalar(row['image_id']))}  {_scalar(row['file_name'])}"
        by_row[int(_scalar(row["row_index"]))] = Sample(image, labels, caption)
    missing = [r for r in unique_rows if r not in by_row]
    if missing:
        raise ValueError(f"{folder}: rows {missing[:5]} could not be read; the folder is damaged")
    return [by_row[int(r)] for r in rows]


def pipeline_samples(folder, *, num: int, stage: str = "full", seed: int = 0, training_shape: int = 640,
                     per_batch_size: int | None = None, resize_rate: int = 0, num_workers: int | None = None,
                     augment: dict | None = None) -> list[Sample]:
    """The first ``num`` samples of epoch 0 of the train pipeline for ``seed`` (batches of
    ``per_batch_size``, default ``num``), with the labels of the batch's ``boxes`` column.

    ``stage="full"``: exactly what training with these settings sees. ``stage="mosaic"``: the same
    geometry without colour jitter, flips and pixel extras (``stage_augment``).
    """
    from .augment.policy import AugmentConfig
    from .pipeline import TRAIN_COLUMNS, create_train_dataset, resolve_mindrecord
    from .sampler import steps_per_epoch

    _check_num(num)
    options = stage_augment(stage, augment)
    batch = int(num if per_batch_size is None else per_batch_size)
    if batch < 1:
        raise ValueError(f"per_batch_size must be at least 1, got {per_batch_size}")
    _, manifest, _ = resolve_mindrecord(folder)
    steps_needed = -(-int(num) // batch)
    # more samples than one epoch holds: continue into the next epochs, as training would
    epochs = -(-steps_needed // steps_per_epoch(manifest.num_images, batch))
    dataset = create_train_dataset(folder, per_batch_size=batch, training_shape=training_shape,
                                   resize_rate=resize_rate, num_parallel_workers=num_workers, seed=seed,
                                   num_epochs=epochs, augment=AugmentConfig.from_mapping(options))
    samples = []
    for columns in dataset.take(steps_needed).create_tuple_iterator(output_numpy=True, num_epochs=1):
        named = dict(zip(TRAIN_COLUMNS, columns))
        for image, image_id, boxes in zip(named["image"], named["image_id"], named["boxes"]):
            samples.append(Sample(image, batch_boxes_to_labels(boxes), f"id {int(image_id)}"))
    return samples[:int(num)]


def batch_boxes_to_labels(boxes: np.ndarray) -> np.ndarray:
    """float32 (n, 6) label array (iscrowd 0) from one image's ``boxes`` batch column (max_boxes, 6):
    x1, y1, x2, y2, class, valid -> the valid rows."""
    boxes = np.asarray(boxes, np.float32)
    valid = boxes[boxes[:, 5] > 0]
    labels = valid.copy()
    labels[:, 5] = 0
    return labels


def read_samples(folder, *, stage: str, num: int, seed: int = 0, **pipeline_options) -> list[Sample]:
    """Samples for a grid: ``raw_samples`` for ``stage="raw"``, else ``pipeline_samples``."""
    if stage not in STAGES:
        raise ValueError(f"stage must be one of {', '.join(STAGES)}, got {stage!r}")
    if stage == "raw":
        return raw_samples(folder, num=num, seed=seed)
    return pipeline_samples(folder, num=num, stage=stage, seed=seed, **pipeline_options)


def _check_num(num) -> None:
    if int(num) != num or num < 1:
        raise ValueError(f"--num must be a positive number of samples, got {num!r}")
