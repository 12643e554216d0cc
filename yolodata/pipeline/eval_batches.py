"""Which rows an evaluation batch holds and the shape each batch is letterboxed into.

Square (the default): every batch is ``testing_shape`` x ``testing_shape``, rows in row order. One
input shape, so one compiled graph, and the same input an exported model takes.

Rectangular (``rect``, YOLOv5's val.py): the images are ordered by aspect ratio h / w, cut into
batches of ``per_batch_size``, and each batch gets the smallest shape that holds its images at the
test size plus ``pad`` stride: with r = (h / w of the batch's widest image when all are wider than
tall, 1 / (h / w) of its tallest when all are taller than wide, else square), the batch is
``ceil(S * r / stride + pad) * stride`` on the short axis and ``ceil(S / stride + pad) * stride`` on the
long one (YOLOv5's ``LoadImagesAndLabels`` with ``rect=True``). Each side is one of the
``S / stride + 1`` multiples of the stride up to ``ceil(S / stride + pad) * stride``, so at most
``2 * (S / stride + 1)`` shapes (and graph compilations) exist whatever the dataset.

Ranks: every image is read by exactly one rank, and every rank runs the same number of batches
(collective operations need that): square batches are cut from a contiguous block of rows per rank;
rect batches are dealt as contiguous blocks of whole batches. Padding rows repeat a real row of the
rank and are marked invalid; a padding batch takes the shape of the rank's last batch.
"""
from __future__ import annotations

import dataclasses
import math

import numpy as np

from ..checks import INPUT_MULTIPLE, check_int, check_multiple_of

INTERPOLATIONS = ("linear", "yolov5")   # yolov5: cv2.INTER_AREA when shrinking, as val.py's load_image
# columns of an eval sample's key
KEY_ROW, KEY_VALID, KEY_HEIGHT, KEY_WIDTH = range(4)


@dataclasses.dataclass(frozen=True)
class EvalGeometry:
    """How evaluation turns images into network input.

    ``rect``: rectangular batches (above); ``scaleup``: enlarge images smaller than the test size so
    their long side equals it (YOLOv5's val.py does; this project's default does not); ``interpolation``:
    "linear" (bilinear always) or "yolov5" (``cv2.INTER_AREA`` when shrinking, bilinear when
    enlarging); ``pad``: the stride fraction added to rect shapes (val.py's 0.5).
    """

    rect: bool = False
    scaleup: bool = False
    interpolation: str = "linear"
    pad: float = 0.5

    def __post_init__(self):
        if self.interpolation not in INTERPOLATIONS:
            raise ValueError(f"interpolation must be one of {INTERPOLATIONS}, got {self.interpolation!r}")
        if not (isinstance(self.pad, (int, float)) and 0.0 <= float(self.pad) <= 1.0):
            raise ValueError(f"pad must be a stride fraction in [0, 1], got {self.pad!r}")

    @classmethod
    def yolov5_val(cls) -> "EvalGeometry":
        """The geometry of YOLOv5's val.py: rect batches, pad 0.5, small images enlarged, area shrinking."""
        return cls(rect=True, scaleup=True, interpolation="yolov5", pad=0.5)

    def describe(self) -> str:
        shape = "rect batches" if self.rect else "square"
        return f"{shape}, {'enlarging' if self.scaleup else 'not enlarging'} small images, {self.interpolation} resize"


def rect_batch_shape(aspect_ratios, testing_shape: int, *, pad: float = 0.5,
                     stride: int = INPUT_MULTIPLE) -> tuple[int, int]:
    """(height, width) of a rect batch whose images have ``aspect_ratios`` (h / w), as YOLOv5's val loader."""
    ratios = np.asarray(aspect_ratios, np.float64)
    smallest, largest = float(ratios.min()), float(ratios.max())
    relative_h, relative_w = 1.0, 1.0
    if largest < 1:
        relative_h = largest
    elif smallest > 1:
        relative_w = 1.0 / smallest
    return (int(math.ceil(relative_h * testing_shape / stride + pad)) * stride,
            int(math.ceil(relative_w * testing_shape / stride + pad)) * stride)


def _pad_block(rows: np.ndarray, valid: np.ndarray, count: int, filler: int) -> tuple[np.ndarray, np.ndarray]:
    missing = count - len(rows)
    return (np.concatenate([rows, np.full(missing, filler, np.int64)]),
            np.concatenate([valid, np.zeros(missing, np.int64)]))


def eval_keys(image_hws, *, per_batch_size: int, testing_shape: int, rank: int = 0, group_size: int = 1,
              geometry: EvalGeometry = EvalGeometry()) -> np.ndarray:
    """int64 (num_batches * B, 4): row, valid, batch height, batch width of every sample of ``rank``.

    ``image_hws``: int (N, 2) height, width of every row, in row order.
    """
    per_batch_size = check_int("per_batch_size", per_batch_size, minimum=1)
    testing_shape = check_multiple_of("testing_shape", testing_shape)
    group_size = check_int("group_size", group_size, minimum=1)
    rank = check_int("rank", rank, minimum=0, maximum=group_size - 1)
    hws = np.asarray(image_hws, np.int64).reshape(-1, 2)
    num_images = len(hws)
    if num_images < 1:
        raise ValueError("there are no images to evaluate")
    if not geometry.rect:
        per_rank = -(-num_images // group_size)
        num_batches = max(1, -(-per_rank // per_batch_size))
        start = min(num_images, rank * per_rank)
        rows = np.arange(start, min(num_images, start + per_rank), dtype=np.int64)
        filler = int(rows[0]) if len(rows) else 0
        rows, valid = _pad_block(rows, np.ones(len(rows), np.int64), num_batches * per_batch_size, filler)
        shapes = np.full((len(rows), 2), testing_shape, np.int64)
        return np.concatenate([rows[:, None], valid[:, None], shapes], axis=1)

    order = np.argsort(hws[:, 0] / hws[:, 1], kind="stable")
    num_global = -(-num_images // per_batch_size)
    batches_per_rank = max(1, -(-num_global // group_size))
    blocks = []
    for batch in range(rank * batches_per_rank, min(num_global, (rank + 1) * batches_per_rank)):
        rows = order[batch * per_batch_size:(batch + 1) * per_batch_size].astype(np.int64)
        height, width = rect_batch_shape(hws[rows, 0] / hws[rows, 1], testing_shape, pad=geometry.pad)
        rows, valid = _pad_block(rows, np.ones(len(rows), np.int64), per_batch_size, int(rows[0]))
        blocks.append(np.stack([rows, valid, np.full(per_batch_size, height), np.full(per_batch_size, width)], 1))
    while len(blocks) < batches_per_rank:  # a rank with fewer real batches runs padding batches
        last = blocks[-1] if blocks else np.array([[int(order[0]), 0, testing_shape, testing_shape]])
        padding = np.repeat(last[:1], per_batch_size, axis=0)
        padding[:, KEY_VALID] = 0
        blocks.append(padding)
    return np.concatenate(blocks).astype(np.int64)

