"""The size of an image file from its header, in the frame OpenCV decodes it to.

YOLO labels are normalised and VOC's ``<size>`` is only a claim, so the readers of ``yolodata.formats``
need every image's true size before the converter decodes it. Decoding each image twice would double
the converter's cost; reading the header costs one small read per file (measured in
``benchmarks/convert_throughput.py``).

- JPEG: the frame size from the SOF segment, the EXIF orientation from the first APP1 ``Exif``
  segment; orientations 5..8 swap width and height when displayed (``cv2.IMREAD_COLOR`` applies the
  orientation, ``IMREAD_IGNORE_ORIENTATION`` gives the stored frame).
- PNG: the IHDR chunk; a PNG with an ``eXIf`` chunk is decoded instead (whether a decoder rotates it
  is a detail this module does not guess at).
- Anything else (BMP, TIFF, WebP, ...), or a header this module cannot follow: decoded with OpenCV
  (both frames), which is exact and only slower.

Checked against ``cv2.imdecode`` on every picture of the real-data folder's coco128, image_quirks and
labelme_voc3 (tests/test_formats_image_size.py).
"""
from __future__ import annotations

import dataclasses

import cv2
import numpy as np

from ..image_io import ImageProblem, jpeg_segments

HEAD_BYTES = 64 * 1024           # first read; a header beyond it (big EXIF thumbnails) reads the whole file
_SOF_MARKERS = frozenset(range(0xC0, 0xD0)) - {0xC4, 0xC8, 0xCC}  # start-of-frame; not DHT, JPG, DAC
_ORIENTATION_TAG = 0x0112
_SWAPPING_ORIENTATIONS = frozenset({5, 6, 7, 8})


class ImageSizeError(ImageProblem):
    """The file is missing, unreadable or not an image; ``reason`` is a short code (as ImageProblem's)."""


@dataclasses.dataclass(frozen=True)
class ImageSize:
    """(height, width) of the stored picture and of the displayed one (EXIF orientation applied)."""

    stored_hw: tuple
    displayed_hw: tuple

    def frame(self, exif_frame: str) -> tuple:
        """(height, width) of the frame that ``exif_frame`` ("auto", "displayed", "stored") names.

        "auto" is the displayed frame: what viewers, labelling tools and OpenCV show.
        """
        return self.stored_hw if exif_frame == "stored" else self.displayed_hw


def _exif_orientation(segment: bytes) -> int:
    """The orientation tag of an APP1 payload that starts with ``Exif\\0\\0`` (1 when absent or odd)."""
    tiff = segment[6:]
    if len(tiff) < 8 or tiff[:2] not in (b"II", b"MM"):
        return 1
    order = "little" if tiff[:2] == b"II" else "big"
    first_ifd = int.from_bytes(tiff[4:8], order)
    if first_ifd + 2 > len(tiff):
        return 1
    count = int.from_bytes(tiff[first_ifd:first_ifd + 2], order)
    for entry in range(count):
        start = first_ifd + 2 + 12 * entry
        if start + 12 > len(tiff):
            return 1
        if int.from_bytes(tiff[start:start + 2], order) == _ORIENTATION_TAG:
            value = int.from_bytes(tiff[start + 8:start + 10], order)
            return value if 1 <= value <= 8 else 1
    return 1


def jpeg_header_size(data: bytes) -> tuple[tuple, int] | None:
    """((height, width) of the frame, EXIF orientation) from a JPEG's segments; None when the
    segments before the frame header are not all in ``data`` or do not follow the format."""
    if not data.startswith(b"\xff\xd8"):
        return None
    orientation = None
    for marker, pos, length in jpeg_segments(data):
        if marker in (0xD9, 0xDA):  # end of image or start of scan before any frame header
            return None
        if marker in _SOF_MARKERS:
            if length < 7:
                return None
            height = (data[pos + 3] << 8) | data[pos + 4]
            width = (data[pos + 5] << 8) | data[pos + 6]
            if height == 0 or width == 0:  # DNL-defined height: rare; let the decoder say
                return None
            return (height, width), (orientation or 1)
        if marker == 0xE1 and orientation is None and data[pos + 2:pos + 8] == b"Exif\x00\x00":
            orientation = _exif_orientation(data[pos + 2:pos + length])
    return None


def png_header_size(data: bytes) -> tuple | None:
    """(height, width) from a PNG's IHDR, or None when it is not a plain PNG header or the file has
    an ``eXIf`` chunk before its image data."""
    if not data.startswith(b"\x89PNG\r\n\x1a\n") or len(data) < 24 or data[12:16] != b"IHDR":
        return None
    width, height = int.from_bytes(data[16:20], "big"), int.from_bytes(data[20:24], "big")
    if width == 0 or height == 0:
        return None
    pos = 8
    while pos + 8 <= len(data):
        length = int.from_bytes(data[pos:pos + 4], "big")
        kind = data[pos + 4:pos + 8]
        if kind == b"eXIf":
            return None
        if kind in (b"IDAT", b"IEND"):
            return height, width
        pos += 12 + length
    return None  # the chunks before IDAT are longer than the bytes read: decode instead


def _decoded_size(path: str, data: bytes) -> ImageSize:
    array = np.frombuffer(data, np.uint8)
    displayed = cv2.imdecode(array, cv2.IMREAD_COLOR)
    if displayed is None:
        raise ImageSizeError("undecodable", f"OpenCV cannot decode {path} ({len(data)} bytes)")
    stored = cv2.imdecode(array, cv2.IMREAD_COLOR | cv2.IMREAD_IGNORE_ORIENTATION)
    stored_hw = displayed.shape[:2] if stored is None else stored.shape[:2]
    return ImageSize(tuple(int(v) for v in stored_hw), tuple(int(v) for v in displayed.shape[:2]))


def read_image_size(path: str) -> ImageSize:
    """The stored and displayed size of the image file at ``path``; ImageSizeError when it cannot be read
    or decoded. Reads the first HEAD_BYTES; the whole file only when the header lies beyond them or the
    format needs a decode."""
    try:
        with open(path, "rb") as handle:
            head = handle.read(HEAD_BYTES)
            if not head:
                raise ImageSizeError("empty_file", f"{path} is empty")
            jpeg = jpeg_header_size(head)
            if jpeg is not None:
                hw, orientation = jpeg
                return ImageSize(hw, hw[::-1] if orientation in _SWAPPING_ORIENTATIONS else hw)
            png = png_header_size(head)
            if png is not None:
                return ImageSize(png, png)
            data = head + handle.read()
    except FileNotFoundError:
        raise ImageSizeError("missing_file", f"file not found: {path}") from None
    except IsADirectoryError:
        raise ImageSizeError("missing_file", f"{path} is a folder, not an image file") from None
    except OSError as error:
        raise ImageSizeError("unreadable_file", f"cannot read {path}: {error.strerror or error}") from error
    if len(data) > len(head):
        jpeg = jpeg_header_size(data)
        if jpeg is not None:
            hw, orientation = jpeg
            return ImageSize(hw, hw[::-1] if orientation in _SWAPPING_ORIENTATIONS else hw)
    return _decoded_size(path, data)
