"""Image sizes from file headers (yolodata.formats.image_size) equal what OpenCV decodes."""
from __future__ import annotations

import struct
import zlib
from pathlib import Path

import cv2
import numpy as np
import pytest

from yolodata.formats.image_size import HEAD_BYTES, ImageSizeError, jpeg_header_size, read_image_size


def decoded_sizes(path: Path) -> tuple:
    data = np.fromfile(str(path), np.uint8)
    displayed = cv2.imdecode(data, cv2.IMREAD_COLOR)
    stored = cv2.imdecode(data, cv2.IMREAD_COLOR | cv2.IMREAD_IGNORE_ORIENTATION)
    return stored.shape[:2], displayed.shape[:2]


def test_header_sizes_equal_decoded_sizes_on_every_real_picture(coco128_dir, quirks_dir, labelme_dir):
    paths = sorted((coco128_dir / "val2017").glob("*.jpg")) + sorted(
        p for p in quirks_dir.rglob("*") if p.suffix in (".jpg", ".png")) + sorted(labelme_dir.rglob("*.jpg"))
    assert len(paths) > 140
    rotated = 0
    for path in paths:
        size = read_image_size(str(path))
        assert (size.stored_hw, size.displayed_hw) == decoded_sizes(path), path
        rotated += size.stored_hw != size.displayed_hw
    assert rotated == 2  # color_exif and orientation_rectangle (the hopper pictures are square)
    for orientation in range(2, 9):
        data = (quirks_dir / "pillow" / f"hopper_orientation_{orientation}.jpg").read_bytes()
        assert jpeg_header_size(data) == ((128, 128), orientation)


def png_chunk(kind: bytes, payload: bytes) -> bytes:
    return struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", zlib.crc32(kind + payload))


def test_a_png_with_exif_is_decoded_instead_of_guessed(tmp_path):
    ok, encoded = cv2.imencode(".png", np.zeros((20, 30, 3), np.uint8))
    data = encoded.tobytes()
    exif = b"MM\x00\x2a\x00\x00\x00\x08\x00\x01" + b"\x01\x12\x00\x03\x00\x00\x00\x01\x00\x06\x00\x00" + b"\x00" * 4
    with_exif = data[:33] + png_chunk(b"eXIf", exif) + data[33:]  # after IHDR (8 + 25 bytes)
    path = tmp_path / "rotated.png"
    path.write_bytes(with_exif)
    size = read_image_size(str(path))
    assert (size.stored_hw, size.displayed_hw) == decoded_sizes(path)
    plain = tmp_path / "plain.png"
    plain.write_bytes(data)
    assert read_image_size(str(plain)).displayed_hw == (20, 30)


def test_a_jpeg_whose_header_lies_beyond_the_first_read(tmp_path):
    ok, encoded = cv2.imencode(".jpg", np.full((40, 70, 3), 128, np.uint8))
    data = encoded.tobytes()
    padding = b"".join(b"\xff\xe2" + struct.pack(">H", 60002) + bytes(60000) for _ in range(2))
    path = tmp_path / "big_header.jpg"
    path.write_bytes(data[:2] + padding + data[2:])
    assert len(padding) > HEAD_BYTES and jpeg_header_size(path.read_bytes()[:HEAD_BYTES]) is None
    size = read_image_size(str(path))
    assert size.displayed_hw == size.stored_hw == (40, 70) == decoded_sizes(path)[1]


def test_other_formats_are_decoded(tmp_path):
    path = tmp_path / "a.bmp"
    cv2.imwrite(str(path), np.zeros((11, 13, 3), np.uint8))
    assert read_image_size(str(path)).displayed_hw == (11, 13)


@pytest.mark.parametrize("content, reason", [(None, "missing_file"), (b"", "empty_file"),
                                             (b"GIF? no, garbage" * 10, "undecodable"),
                                             (b"\xff\xd8\xff\xe0\x00\x10JFIF", "undecodable")])
def test_unreadable_files_are_named(tmp_path, content, reason):
    path = tmp_path / "x.jpg"
    if content is not None:
        path.write_bytes(content)
    with pytest.raises(ImageSizeError) as caught:
        read_image_size(str(path))
    assert caught.value.reason == reason and str(path) in str(caught.value)
