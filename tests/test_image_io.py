"""Decoding and validation of image bytes (yolodata.image_io) on the real files in ../shared/data."""
from __future__ import annotations

import cv2
import numpy as np
import pytest

from yolodata import image_io


def read(path) -> bytes:
    return path.read_bytes()


def cv2_decode(data: bytes, flags=cv2.IMREAD_COLOR) -> np.ndarray:
    return cv2.imdecode(np.frombuffer(data, np.uint8), flags)


@pytest.fixture
def coco_jpeg(coco128_dir) -> bytes:
    return read(coco128_dir / "val2017" / "000000000009.jpg")


def test_decode_stored_accepts_bytes_arrays_and_mindrecord_bytes_arrays(coco_jpeg):
    expected = cv2_decode(coco_jpeg)
    as_bytes_array = np.array([coco_jpeg])  # what MindDataset returns for a bytes field: dtype S, shape (1,)
    assert as_bytes_array.dtype.kind == "S"
    for buf in (coco_jpeg, np.frombuffer(coco_jpeg, np.uint8), as_bytes_array, memoryview(coco_jpeg)):
        image = image_io.decode_stored(buf)
        assert image.dtype == np.uint8 and image.shape == (480, 640, 3)
        assert np.array_equal(image, expected)


def test_decode_stored_reduce_gives_the_dct_scaled_sizes(coco_jpeg):
    for reduce, shape in ((2, (240, 320, 3)), (4, (120, 160, 3)), (8, (60, 80, 3))):
        image = image_io.decode_stored(coco_jpeg, reduce=reduce)
        assert image.shape == shape
        assert np.array_equal(image, cv2_decode(coco_jpeg, getattr(cv2, f"IMREAD_REDUCED_COLOR_{reduce}")))


def test_decode_stored_reduce_applies_exif_orientation_too(quirks_dir):
    data = read(quirks_dir / "mmcv" / "color_exif.jpg")  # stored 400x300, displayed 300x400
    assert image_io.decode_stored(data).shape == (400, 300, 3)
    assert image_io.decode_stored(data, reduce=2).shape == (200, 150, 3)


def test_decode_stored_errors_are_clear(coco_jpeg):
    with pytest.raises(ValueError, match="cannot decode"):
        image_io.decode_stored(b"this is not an image at all")
    with pytest.raises(ValueError, match="empty"):
        image_io.decode_stored(b"")
    with pytest.raises(ValueError, match="reduce must be one of"):
        image_io.decode_stored(coco_jpeg, reduce=3)
    with pytest.raises(ValueError, match="expected encoded image bytes"):
        image_io.decode_stored(np.zeros(10, np.float32))


def test_sniff_format(coco_jpeg, quirks_dir):
    assert image_io.sniff_format(coco_jpeg) == "jpeg"
    assert image_io.sniff_format(read(quirks_dir / "mmcv" / "gray_alpha.png")) == "png"
    assert image_io.sniff_format(b"hello") == "unknown"


def test_truncated_jpeg_is_detected_at_every_cut(coco_jpeg):
    assert image_io.jpeg_is_complete(coco_jpeg)
    for fraction in (0.05, 0.5, 0.9, 0.999):
        cut = coco_jpeg[:int(len(coco_jpeg) * fraction)]
        assert not image_io.jpeg_is_complete(cut)
        with pytest.raises(image_io.ImageProblem, match="truncated JPEG") as caught:
            image_io.check_complete(cut)
        assert caught.value.reason == "truncated"
    # one byte short: only the last byte of the end-of-image marker is missing
    assert not image_io.jpeg_is_complete(coco_jpeg[:-1])


def test_bytes_after_the_end_marker_are_allowed(coco_jpeg, quirks_dir):
    """Cameras append data after EOI; the structure walk must still find the real end-of-image marker."""
    assert image_io.jpeg_is_complete(coco_jpeg + b"\x00" * 37 + b"trailing camera data")
    # EXIF files carry their own segments; the walk skips them by length
    for name in ("hopper_orientation_6.jpg", "pil_sample_cmyk.jpg"):
        data = read(quirks_dir / "pillow" / name)
        assert image_io.jpeg_is_complete(data + b"padding")
        assert not image_io.jpeg_is_complete(data[: len(data) // 2] + b"padding")


def test_truncated_png_is_detected(quirks_dir):
    data = read(quirks_dir / "mmcv" / "gray_alpha.png")
    assert image_io.png_is_complete(data)
    with pytest.raises(image_io.ImageProblem, match="truncated PNG"):
        image_io.check_complete(data[: len(data) - 100])


@pytest.mark.parametrize("relative, raw_hw", [
    ("pillow/hopper_gray.jpg", (128, 128)),
    ("mmcv/grayscale.jpg", (300, 400)),
    ("mmcv/grayscale_dim3.jpg", (300, 400)),
    ("pillow/pil_sample_cmyk.jpg", (100, 100)),
    ("mmcv/gray_alpha.png", (400, 500)),
])
def test_unusual_colour_formats_keep_their_bytes_and_decode_to_three_channels(quirks_dir, relative, raw_hw):
    data = read(quirks_dir / relative)
    prepared = image_io.prepare_source_image(data, raw_hw)
    assert prepared.encoded is None  # OpenCV decodes them right: the original bytes are stored
    image = image_io.decode_stored(data)
    assert image.shape == raw_hw + (3,)


def test_cmyk_decodes_to_the_same_picture_as_its_rgb_twin(quirks_dir):
    cmyk = image_io.decode_stored(read(quirks_dir / "pillow" / "pil_sample_cmyk.jpg")).astype(np.int16)
    rgb = image_io.decode_stored(read(quirks_dir / "pillow" / "pil_sample_rgb.jpg")).astype(np.int16)
    assert np.abs(cmyk - rgb).mean() < 8  # two lossy encodings of one picture, not inverted colours


@pytest.mark.parametrize("orientation", range(2, 9))
def test_exif_orientation_square_images_are_taken_in_the_displayed_frame(quirks_dir, orientation):
    data = read(quirks_dir / "pillow" / f"hopper_orientation_{orientation}.jpg")
    prepared = image_io.prepare_source_image(data, (128, 128))
    assert prepared.encoded is None
    # the stored bytes decode (with decode_stored) to the displayed picture, which differs from the raw one
    displayed = image_io.decode_stored(data)
    raw = cv2_decode(data, cv2.IMREAD_COLOR | cv2.IMREAD_IGNORE_ORIENTATION)
    assert not np.array_equal(displayed, raw)
    # the displayed picture matches the upright reference up to JPEG noise
    upright = image_io.decode_stored(read(quirks_dir / "pillow" / "hopper.jpg")).astype(np.int16)
    assert np.abs(displayed.astype(np.int16) - upright).mean() < 12


def test_exif_rotated_image_whose_json_describes_the_displayed_frame_keeps_its_bytes(quirks_dir):
    data = read(quirks_dir / "mmcv" / "color_exif.jpg")
    prepared = image_io.prepare_source_image(data, (400, 300))  # (height, width) as displayed
    assert prepared.encoded is None and (prepared.height, prepared.width) == (400, 300)


def test_exif_rotated_image_whose_json_describes_the_stored_frame_is_reencoded_unrotated(quirks_dir):
    data = read(quirks_dir / "mmcv" / "color_exif.jpg")
    prepared = image_io.prepare_source_image(data, (300, 400))  # the raw, un-rotated frame
    assert prepared.encoded is not None and "stored" in prepared.note
    stored = image_io.decode_stored(prepared.encoded)
    raw = cv2_decode(data, cv2.IMREAD_COLOR | cv2.IMREAD_IGNORE_ORIENTATION)
    assert stored.shape == (300, 400, 3)
    assert np.array_equal(stored, raw)  # lossless: exactly the raw pixels


def test_exif_frame_options_force_one_frame(quirks_dir):
    data = read(quirks_dir / "pillow" / "hopper_orientation_6.jpg")
    stored = image_io.prepare_source_image(data, (128, 128), exif_frame="stored")
    assert stored.encoded is not None
    assert np.array_equal(image_io.decode_stored(stored.encoded),
                          cv2_decode(data, cv2.IMREAD_COLOR | cv2.IMREAD_IGNORE_ORIENTATION))
    rect = read(quirks_dir / "mmcv" / "color_exif.jpg")
    with pytest.raises(image_io.ImageProblem, match="json says 400x300"):
        image_io.prepare_source_image(rect, (300, 400), exif_frame="displayed")
    with pytest.raises(ValueError, match="exif_frame must be one of"):
        image_io.prepare_source_image(rect, (300, 400), exif_frame="sideways")
    # no orientation to undo: "stored" keeps the original bytes
    plain = read(quirks_dir / "mmcv" / "color.jpg")
    assert image_io.prepare_source_image(plain, (300, 400), exif_frame="stored").encoded is None


def test_image_fitting_neither_frame_is_reported_not_guessed(quirks_dir):
    data = read(quirks_dir / "mmcv" / "color_exif.jpg")
    with pytest.raises(image_io.ImageProblem) as caught:
        image_io.prepare_source_image(data, (480, 640))  # (height, width)
    assert caught.value.reason == "size_mismatch"
    message = str(caught.value)
    assert "400x300 as stored" in message and "300x400 with EXIF orientation" in message
    assert "480x640" not in message and "640x480" in message  # json size given as width x height


def test_undecodable_bytes_are_reported(coco_jpeg):
    garbage = b"\xff\xd8" + bytes(range(256)) * 4 + b"\xff\xd9"  # JPEG markers around garbage
    with pytest.raises(image_io.ImageProblem) as caught:
        image_io.prepare_source_image(garbage, (10, 10))
    assert caught.value.reason == "undecodable"
    with pytest.raises(image_io.ImageProblem) as caught:
        image_io.prepare_source_image(b"", (10, 10))
    assert caught.value.reason == "empty_file"


def test_palette_png_with_transparency_decodes_to_its_three_channel_picture(quirks_dir, tmp_path):
    """A palette PNG (with a transparent palette entry) made from a real photo with Pillow."""
    from PIL import Image

    photo = Image.open(quirks_dir / "pillow" / "hopper.jpg").convert("RGB")
    palette = photo.convert("P", palette=Image.Palette.ADAPTIVE, colors=64)
    path = tmp_path / "palette.png"
    palette.save(path, transparency=0)
    data = path.read_bytes()
    assert Image.open(path).mode == "P"
    prepared = image_io.prepare_source_image(data, (128, 128))
    assert prepared.encoded is None
    image = image_io.decode_stored(data)
    assert image.shape == (128, 128, 3)
    expected_bgr = np.asarray(palette.convert("RGB"))[:, :, ::-1]
    assert np.array_equal(image, expected_bgr)  # lossless: exactly the palette colours


@pytest.mark.parametrize("params", [
    [cv2.IMWRITE_JPEG_PROGRESSIVE, 1],
    [cv2.IMWRITE_JPEG_RST_INTERVAL, 4],
], ids=["progressive", "restart_markers"])
def test_completeness_walk_handles_progressive_and_restart_jpegs(coco_jpeg, params):
    """Re-encodings of a real photo; trailing bytes force the segment walk instead of the fast path."""
    ok, buf = cv2.imencode(".jpg", cv2_decode(coco_jpeg), params)
    data = buf.tobytes()
    assert image_io.jpeg_is_complete(data + b"\x00trailer")
    for fraction in (0.3, 0.7, 0.98):
        assert not image_io.jpeg_is_complete(data[: int(len(data) * fraction)] + b"\x00trailer")


@pytest.mark.parametrize("params", [[], [cv2.IMWRITE_JPEG_PROGRESSIVE, 1]], ids=["baseline", "progressive"])
def test_jpeg_segments_tile_the_file_up_to_its_end_marker(coco_jpeg, params):
    """The one JPEG walker (completeness check and header reader both use it): segments before each
    scan follow each other byte for byte, the frame header gives the decoded size, EOI ends the file."""
    if params:
        data = cv2.imencode(".jpg", cv2_decode(coco_jpeg), params)[1].tobytes()
    else:
        data = coco_jpeg
    segments = list(image_io.jpeg_segments(data + b"\x00trailer"))
    markers = [marker for marker, _, _ in segments]
    assert markers[-1] == 0xD9 and segments[-1][1] == len(data)
    num_scans = markers.count(0xDA)
    assert num_scans > 1 if params else num_scans == 1  # a progressive JPEG has several scans
    for (marker, start, length), (_, next_start, _) in zip(segments, segments[1:]):
        if marker != 0xDA:  # after a scan's header come its entropy-coded bytes
            assert next_start == start + length + 2
    frame = [(start, length) for marker, start, length in segments if marker in (0xC0, 0xC2)]
    assert len(frame) == 1
    start, _ = frame[0]
    height, width = int.from_bytes(data[start + 3:start + 5], "big"), int.from_bytes(data[start + 5:start + 7], "big")
    assert (height, width) == cv2_decode(data).shape[:2]
    assert not any(marker == 0xD9 for marker, _, _ in image_io.jpeg_segments(data[: len(data) // 2]))
