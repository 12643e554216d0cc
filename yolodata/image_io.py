"""Decoding and validation of image bytes, shared by the converter and the training pipeline.

The pipeline decodes stored rows with :func:`decode_stored` (``cv2.imdecode`` with ``IMREAD_COLOR``,
which also applies an EXIF orientation). The converter therefore guarantees that the bytes it stores
decode with exactly that call to the picture the json's width and height describe; it checks every
source file with :func:`prepare_source_image` and re-encodes (losslessly, PNG) only when the original
bytes would decode to a different frame, or when ``--max_side`` shrinks the picture
(``yolodata.convert.shrink``, which takes the decoded pixels from ``PreparedImage.pixels``).

Facts about OpenCV 4.11 this module relies on (checked on real files by tests/test_image_io.py):
- ``IMREAD_COLOR`` returns 3-channel BGR for grayscale and CMYK JPEGs, and for gray+alpha, RGBA and
  palette PNGs (the alpha channel is dropped), and it applies EXIF orientation;
  ``IMREAD_COLOR | IMREAD_IGNORE_ORIENTATION`` gives the stored (raw) frame.
- A truncated JPEG may decode with only a libjpeg warning in other builds, so completeness is checked
  here from the file structure (the end-of-image marker), not left to the decoder.
- ``IMREAD_COLOR_RGB`` (new in 4.11; combinable with the ``IMREAD_REDUCED_COLOR_*`` flags) decodes to
  exactly the ``IMREAD_COLOR`` pixels in RGB order (checked on every coco128 picture and every quirk
  picture, full and reduced size): libjpeg-turbo writes RGB directly, so the eval pipeline, which
  ends in RGB, saves a separate BGR -> RGB pass.
"""
from __future__ import annotations

import dataclasses

import cv2
import numpy as np

_REDUCED_FLAGS = {1: cv2.IMREAD_COLOR, 2: cv2.IMREAD_REDUCED_COLOR_2, 4: cv2.IMREAD_REDUCED_COLOR_4,
                  8: cv2.IMREAD_REDUCED_COLOR_8}
# Decode straight to RGB (OpenCV 4.11+; 0 where the flag does not exist).
_RGB_FLAG = getattr(cv2, "IMREAD_COLOR_RGB", 0)

# How the frame of an EXIF-rotated picture is chosen (see prepare_source_image).
EXIF_FRAMES = ("auto", "displayed", "stored")

# Lossless re-encoding keeps the normalised pixels exact; 3 is OpenCV's default compression level.
REENCODE_EXTENSION = ".png"
REENCODE_PARAMS = (cv2.IMWRITE_PNG_COMPRESSION, 3)


def as_byte_array(buf) -> np.ndarray:
    """Encoded image bytes as a flat uint8 array, without a copy where possible.

    Accepts bytes-like objects, uint8 arrays, and the fixed-width bytes arrays (dtype ``S``, shape (1,)
    or ()) that ``MindDataset`` returns for a ``bytes`` field with ``output_numpy=True``.
    """
    if isinstance(buf, (bytes, bytearray, memoryview)):
        return np.frombuffer(buf, np.uint8)
    if isinstance(buf, np.ndarray):
        if buf.dtype == np.uint8:
            return buf.reshape(-1)
        if buf.dtype.kind == "S":
            return np.frombuffer(np.ascontiguousarray(buf), np.uint8)
    raise ValueError(f"expected encoded image bytes (bytes, a uint8 array or a bytes array), got "
                     f"{type(buf).__name__}{' of ' + str(buf.dtype) if isinstance(buf, np.ndarray) else ''}")


def decode_stored(buf, reduce: int = 1, *, rgb: bool = False) -> np.ndarray:
    """Decode stored image bytes to BGR uint8 (H, W, 3), as the converter guarantees they decode.

    ``buf``: bytes, a uint8 array, or the bytes array MindDataset gives for the ``image`` field.
    ``reduce`` 2, 4 or 8 decodes at 1/2, 1/4, 1/8 size (libjpeg DCT scaling for JPEGs; other formats
    are resized by OpenCV). ``rgb=True`` gives the same pixels in RGB order, decoded that way (no
    extra pass). Raises ValueError when the bytes do not decode.
    """
    if reduce not in _REDUCED_FLAGS:
        raise ValueError(f"reduce must be one of {sorted(_REDUCED_FLAGS)}, got {reduce!r}")
    array = as_byte_array(buf)
    if array.size == 0:
        raise ValueError("cannot decode an empty image buffer")
    rgb_flag = _RGB_FLAG if rgb else 0
    image = cv2.imdecode(array, _REDUCED_FLAGS[reduce] | rgb_flag)
    if image is None:
        raise ValueError(f"OpenCV cannot decode these {array.size} bytes as an image")
    if rgb and not rgb_flag:  # an OpenCV older than 4.11: decode BGR, then swap
        image = cv2.cvtColor(image, cv2.COLOR_BGR2RGB)
    return image


def sniff_format(data: bytes) -> str:
    """Container format from the file's first bytes: jpeg, png, gif, bmp, webp, tiff or unknown."""
    head = bytes(data[:12])
    if head.startswith(b"\xff\xd8"):
        return "jpeg"
    if head.startswith(b"\x89PNG\r\n\x1a\n"):
        return "png"
    if head[:6] in (b"GIF87a", b"GIF89a"):
        return "gif"
    if head.startswith(b"BM"):
        return "bmp"
    if head.startswith(b"RIFF") and head[8:12] == b"WEBP":
        return "webp"
    if head[:4] in (b"II*\x00", b"MM\x00*"):
        return "tiff"
    return "unknown"


_STANDALONE_MARKERS = frozenset(range(0xD0, 0xD8)) | {0x01, 0xD8}  # RSTn, TEM, SOI: no length field


def jpeg_segments(data: bytes):
    """The markers of a JPEG after its SOI, in file order, as ``(marker, payload_start, length)``.

    ``length`` is the segment's length field (0 for markers without one); ``data[payload_start:
    payload_start + length]`` is the segment, its two length bytes first. Segments with a length field
    are skipped by it (so an EXIF thumbnail's own markers inside APP1 never show); the entropy-coded data
    after SOS is scanned for the next real marker (0xFF followed by neither 0x00 stuffing nor a restart
    marker). The walk ends after EOI, or without a word where the structure breaks or the data ends: a
    caller that did not meet the marker it looks for treats the file as one it cannot follow.
    """
    size = len(data)
    pos = 2
    while pos < size:
        if data[pos] != 0xFF:
            return  # not at a marker: corrupt structure
        while pos < size and data[pos] == 0xFF:  # fill bytes
            pos += 1
        if pos >= size:
            return
        marker = data[pos]
        pos += 1
        if marker == 0xD9:  # end of image
            yield marker, pos, 0
            return
        if marker in _STANDALONE_MARKERS:
            yield marker, pos, 0
            continue
        if pos + 2 > size:
            return
        length = (data[pos] << 8) | data[pos + 1]
        if length < 2 or pos + length > size:
            return
        yield marker, pos, length
        pos += length
        if marker == 0xDA:  # start of scan: skip the entropy-coded data up to the next real marker
            while True:
                pos = data.find(b"\xff", pos)
                if pos < 0 or pos + 1 >= size:
                    return
                following = data[pos + 1]
                if following == 0x00 or 0xD0 <= following <= 0xD7 or following == 0xFF:
                    pos += 1 if following == 0xFF else 2
                    continue
                break


def jpeg_is_complete(data: bytes) -> bool:
    """Whether a JPEG file has its end-of-image marker (a truncated download or copy has not).

    Fast path: the file ends with EOI. Otherwise (trailing bytes after EOI are legal, e.g. camera
    padding) the segment structure is walked.
    """
    if not data.startswith(b"\xff\xd8"):
        return False
    if data.endswith(b"\xff\xd9"):
        return True
    return any(marker == 0xD9 for marker, _, _ in jpeg_segments(data))


def png_is_complete(data: bytes) -> bool:
    """Whether a PNG file ends with its IEND chunk (allowing a little trailing padding)."""
    return data.rfind(b"IEND", max(0, len(data) - 64)) >= 0


class ImageProblem(ValueError):
    """A source image that cannot be converted; ``reason`` is a short code for the summary."""

    def __init__(self, reason: str, message: str):
        super().__init__(message)
        self.reason = reason


@dataclasses.dataclass(frozen=True)
class PreparedImage:
    """A validated source image: the bytes to store and the size they decode to.

    ``encoded`` is None when the original file bytes are stored unchanged; otherwise it holds the
    re-encoded (lossless) bytes and ``note`` says why.
    """

    height: int
    width: int
    encoded: bytes | None = None
    note: str | None = None
    # the decoded BGR picture in the json's frame, kept only when asked for (``keep_pixels``): the
    # converter's --max_side shrinks it without decoding the file a second time
    pixels: np.ndarray | None = dataclasses.field(default=None, compare=False, repr=False)


def _size(image: np.ndarray) -> tuple[int, int]:
    return int(image.shape[0]), int(image.shape[1])


def _encode_lossless(image: np.ndarray) -> bytes:
    ok, buf = cv2.imencode(REENCODE_EXTENSION, image, list(REENCODE_PARAMS))
    if not ok:
        raise ImageProblem("reencode_failed", "OpenCV could not re-encode the decoded picture as PNG")
    return buf.tobytes()


def check_complete(data: bytes) -> None:
    """Raise ImageProblem for an empty file or a truncated JPEG/PNG."""
    if len(data) == 0:
        raise ImageProblem("empty_file", "the file is empty")
    kind = sniff_format(data)
    if kind == "jpeg" and not jpeg_is_complete(data):
        raise ImageProblem("truncated", f"truncated JPEG: no end-of-image marker in its {len(data)} bytes")
    if kind == "png" and not png_is_complete(data):
        raise ImageProblem("truncated", f"truncated PNG: no IEND chunk at the end of its {len(data)} bytes")


def prepare_source_image(data: bytes, expected_hw: tuple[int, int], exif_frame: str = "auto", *,
                         keep_pixels: bool = False) -> PreparedImage:
    """Validate one source file fully (complete, decodable, right size) and choose the bytes to store.

    ``expected_hw`` is the json's (height, width). The stored bytes must decode with
    :func:`decode_stored` to exactly that size. ``exif_frame`` says which frame the json describes
    when the file carries an EXIF orientation:

    - ``auto``: the displayed frame (EXIF applied, what viewers, labelme and OpenCV show) when it has the
      json's size, else the stored frame when that one has it (then the picture is re-encoded without
      the rotation); a square picture, which fits both, is taken as displayed;
    - ``displayed``: always the displayed frame; ``stored``: always the raw stored frame.

    A picture that fits neither frame is reported (ImageProblem ``size_mismatch``), never guessed at.
    ``keep_pixels``: the result also carries the decoded picture (``PreparedImage.pixels``).
    """
    if exif_frame not in EXIF_FRAMES:
        raise ValueError(f"exif_frame must be one of {EXIF_FRAMES}, got {exif_frame!r}")
    check_complete(data)
    array = np.frombuffer(data, np.uint8)
    expected_hw = (int(expected_hw[0]), int(expected_hw[1]))
    if exif_frame != "stored":
        displayed = cv2.imdecode(array, cv2.IMREAD_COLOR)
        if displayed is None:
            raise ImageProblem("undecodable", f"OpenCV cannot decode the file ({sniff_format(data)}, "
                                              f"{len(data)} bytes)")
        if _size(displayed) == expected_hw:
            return PreparedImage(*expected_hw, pixels=displayed if keep_pixels else None)
        if exif_frame == "displayed":
            raise ImageProblem("size_mismatch", f"decodes to {displayed.shape[1]}x{displayed.shape[0]} "
                                                f"(width x height) but the json says "
                                                f"{expected_hw[1]}x{expected_hw[0]}")
    else:
        displayed = None
    raw = cv2.imdecode(array, cv2.IMREAD_COLOR | cv2.IMREAD_IGNORE_ORIENTATION)
    if raw is None:
        raise ImageProblem("undecodable", f"OpenCV cannot decode the file ({sniff_format(data)}, {len(data)} bytes)")
    if _size(raw) != expected_hw:
        shown = "" if displayed is None else f", {displayed.shape[1]}x{displayed.shape[0]} with EXIF orientation"
        raise ImageProblem("size_mismatch", f"decodes to {raw.shape[1]}x{raw.shape[0]} as stored{shown}; "
                                            f"the json says {expected_hw[1]}x{expected_hw[0]} (width x height), "
                                            f"which fits neither")
    if displayed is None:
        displayed = cv2.imdecode(array, cv2.IMREAD_COLOR)
    if displayed is not None and displayed.shape == raw.shape and np.array_equal(displayed, raw):
        # no orientation to undo: the original bytes decode right
        return PreparedImage(*expected_hw, pixels=raw if keep_pixels else None)
    return PreparedImage(*expected_hw, encoded=_encode_lossless(raw),
                         note="re-encoded as PNG in the stored (un-rotated) frame that the json's size describes",
                         pixels=raw if keep_pixels else None)
