"""``--max_side``: store large pictures shrunk to what training reads, and the hint when it would pay.

Camera photos (4032x3024 and larger) cost 20-40 times a COCO picture to decode, and every epoch
decodes every stored picture again, to throw most of its pixels away in the mosaic. With
``max_side`` N the converter decides once: a picture whose long side exceeds N is stored shrunk by
``scale = N / long side`` (``cv2.resize`` with ``fx = fy = scale`` and ``INTER_AREA``, so the stored
pixels sample the original at exactly ``scale``: stored edge coordinates = original * scale, the
convention of ``augment/letterbox.py``; the size is ``round(side * scale)``), re-encoded in its own
kind (a JPEG as a JPEG of ``jpeg_quality``; every other format as a lossless PNG), its boxes
multiplied by ``scale`` and clipped to the stored picture. The row keeps the original size and the
scale (``orig_height``, ``orig_width``, ``stored_scale``), so evaluation maps detections back to the
original pixels of ``annotations.json``, which stays the original ground truth. Pictures whose long
side is at most N are stored exactly as without the option (same bytes).

Without the option, ``shrink_hint`` says once, in the summary, what ``--max_side`` would save when a
large share of the set is much larger than any training size.
"""
from __future__ import annotations

import dataclasses
import math

import cv2
import numpy as np

from ..boxes import clip_boxes
from ..checks import check_int
from ..image_io import ImageProblem

DEFAULT_JPEG_QUALITY = 95        # shrunk JPEGs are re-encoded once: high quality (libjpeg's usual 75 is not)
MIN_MAX_SIDE = 32                # a stored picture smaller than one network stride makes no sense
SUGGESTED_MAX_SIDE = 1280        # covers every YOLOv5 training size up to P6's 1280 without loss
HINT_LONG_SIDE = 2 * SUGGESTED_MAX_SIDE   # "much larger than any training size"
HINT_SHARE = 0.25                # the hint appears when at least this share of the pictures is that large


@dataclasses.dataclass(frozen=True)
class ShrinkOptions:
    """``max_side`` (None: store every picture at its size) and the JPEG quality of shrunk JPEGs."""

    max_side: int | None = None
    jpeg_quality: int = DEFAULT_JPEG_QUALITY

    def __post_init__(self):
        if self.max_side is not None:
            check_int("max_side", self.max_side, minimum=MIN_MAX_SIDE)
        check_int("jpeg_quality", self.jpeg_quality, minimum=1, maximum=100)

    def scale_for(self, hw) -> float:
        """Stored pixels per original pixel for a picture of ``hw``: 1.0 unless its long side exceeds max_side."""
        long_side = max(int(hw[0]), int(hw[1]))
        if self.max_side is None or long_side <= self.max_side:
            return 1.0
        return self.max_side / long_side

    def manifest_options(self) -> dict:
        return {"max_side": self.max_side, "jpeg_quality": self.jpeg_quality}


def stored_hw(source_hw, scale: float) -> tuple[int, int]:
    """(height, width) of a picture of ``source_hw`` stored at ``scale``: what ``cv2.resize`` with
    ``fx = fy = scale`` makes, ``round(side * scale)`` (half to even, as OpenCV's cvRound), at least 1.
    The same rounding as ``augment.letterbox.resized_hw``, here so the converter needs no augment code."""
    return max(1, round(int(source_hw[0]) * scale)), max(1, round(int(source_hw[1]) * scale))


def shrink_picture(pixels: np.ndarray, scale: float, source_format: str, jpeg_quality: int) -> bytes:
    """The encoded bytes of ``pixels`` (BGR uint8) shrunk by ``scale`` < 1 with area interpolation.

    A JPEG source stays a JPEG (``jpeg_quality``); every other source becomes a lossless PNG.
    """
    target_hw = stored_hw(pixels.shape[:2], scale)
    if min(round(side * scale) for side in pixels.shape[:2]) >= 1:
        shrunk = cv2.resize(pixels, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA)
    else:  # a side of an extreme aspect ratio would round to 0 pixels: widened to 1
        shrunk = cv2.resize(pixels, (target_hw[1], target_hw[0]), interpolation=cv2.INTER_AREA)
    if shrunk.shape[:2] != target_hw:  # OpenCV rounds as stored_hw says
        raise ImageProblem("shrink_failed", f"shrinking by {scale} gave {shrunk.shape[:2]}, expected {target_hw}")
    if source_format == "jpeg":
        ok, buf = cv2.imencode(".jpg", shrunk, [cv2.IMWRITE_JPEG_QUALITY, int(jpeg_quality)])
    else:
        ok, buf = cv2.imencode(".png", shrunk, [cv2.IMWRITE_PNG_COMPRESSION, 3])
    if not ok:
        raise ImageProblem("reencode_failed", "OpenCV could not encode the shrunk picture")
    return buf.tobytes()


def scale_labels(labels: np.ndarray, scale: float, stored_hw) -> np.ndarray:
    """A new label array with the boxes in stored pixels: ``x * scale``, clipped to ``stored_hw``.

    Clipping only trims the part of an edge box beyond the rounded stored size (under half a stored
    pixel); no box is dropped, so a row keeps the boxes (and the count) of its annotations.
    """
    if scale == 1.0 or len(labels) == 0:
        return labels
    scaled = np.array(labels, np.float32, copy=True)
    scaled[:, :4] = (np.asarray(labels[:, :4], np.float64) * scale).astype(np.float32)
    return clip_boxes(scaled, float(stored_hw[1]), float(stored_hw[0]))


@dataclasses.dataclass
class ShrinkTally:
    """What --max_side did, or what it would do (the hint): counted over the written rows."""

    num_shrunk: int = 0
    source_bytes: int = 0            # of the shrunk pictures, as read
    stored_bytes: int = 0            # of the shrunk pictures, as stored
    num_large: int = 0               # pictures with a long side of HINT_LONG_SIDE or more
    large_bytes: int = 0             # their file bytes
    large_pixels: int = 0            # their pixels
    large_seconds: float = 0.0       # the converter's decode time of them (one thread each)

    def add(self, source_hw, source_bytes: int, stored_bytes: int, shrunk: bool, seconds: float) -> None:
        if shrunk:
            self.num_shrunk += 1
            self.source_bytes += int(source_bytes)
            self.stored_bytes += int(stored_bytes)
        if max(source_hw) >= HINT_LONG_SIDE:
            self.num_large += 1
            self.large_bytes += int(source_bytes)
            self.large_pixels += int(source_hw[0]) * int(source_hw[1])
            self.large_seconds += float(seconds)

    @property
    def bytes_saved(self) -> int:
        return self.source_bytes - self.stored_bytes

    def manifest_entry(self) -> dict:
        return {"num_images": self.num_shrunk, "source_bytes": self.source_bytes,
                "stored_bytes": self.stored_bytes}


def describe_shrunk(tally: ShrinkTally, max_side: int) -> str:
    """The summary line of a conversion with --max_side."""
    if not tally.num_shrunk:
        return f"none (no picture has a long side above {max_side} px)"
    return (f"{tally.num_shrunk} picture(s) to a long side of {max_side} px: {tally.source_bytes:,} -> "
            f"{tally.stored_bytes:,} bytes ({tally.bytes_saved:,} saved, "
            f"{tally.source_bytes / max(1, tally.stored_bytes):.1f}x smaller)")


def shrink_hint(tally: ShrinkTally, num_images: int) -> str | None:
    """What ``--max_side 1280`` would save, when at least HINT_SHARE of the pictures have a long side of
    HINT_LONG_SIDE or more (None otherwise).

    Estimates: stored bytes and decode time shrink about with the pixel count (a JPEG's size and its
    decode time are close to proportional to its pixels at the same quality); the decode time is the
    converter's own (one full decode per picture and epoch, as training without the option does).
    """
    if num_images == 0 or tally.num_large < HINT_SHARE * num_images:
        return None
    mean_pixels = tally.large_pixels / tally.num_large
    long_side_ratio = SUGGESTED_MAX_SIDE / math.sqrt(mean_pixels * 4 / 3)  # 4:3 pictures of that many pixels
    area_ratio = min(1.0, long_side_ratio ** 2)
    return (f"{tally.num_large} of {num_images} pictures have a long side of {HINT_LONG_SIDE} px or more, far "
            f"above any training size; --max_side {SUGGESTED_MAX_SIDE} would store them in about "
            f"{tally.large_bytes * area_ratio / 2 ** 20:,.0f} MiB instead of {tally.large_bytes / 2 ** 20:,.0f} MiB "
            f"and cut their decoding from about {tally.large_seconds:.1f} s to "
            f"{tally.large_seconds * area_ratio:.1f} s of CPU per epoch")
