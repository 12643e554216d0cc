"""The fast paths of the input pipeline give exactly the pixels of the plain ones (proposed tests).

- decode_stored(rgb=True) is the BGR decode with its channels swapped (full and reduced size,
  grayscale/CMYK/PNG/EXIF quirks);
- letterbox_into writes exactly letterbox()'s pixels into a caller's buffer (also a batch slot),
  overwriting every pixel;
- apply_hsv / bgr_to_rgb with ``out`` write exactly the pixels they return without it;
- the eval pipeline's batches equal the plain per-image recipe (decode BGR, letterbox, BGR -> RGB).
"""
from __future__ import annotations

import cv2
import numpy as np
import pytest

from conftest import write_rectangle_coco
from yolodata import image_io
from yolodata.augment import color, letterbox
from yolodata.convert import convert_coco
from yolodata.pipeline import EVAL_COLUMNS, create_eval_dataset

EMPTY = np.zeros((0, 6), np.float32)


@pytest.fixture
def coco_jpegs(coco128_dir):
    return [path.read_bytes() for path in sorted((coco128_dir / "val2017").glob("*.jpg"))[:6]]


@pytest.mark.parametrize("reduce", [1, 2, 4])
def test_rgb_decode_is_the_bgr_decode_with_channels_swapped(coco_jpegs, quirks_dir, reduce):
    quirks = [p.read_bytes() for p in sorted(quirks_dir.rglob("*")) if p.suffix.lower() in (".jpg", ".png")]
    assert quirks, "the quirk pictures are missing"
    for data in coco_jpegs + quirks:
        bgr = image_io.decode_stored(data, reduce=reduce)
        rgb = image_io.decode_stored(data, reduce=reduce, rgb=True)
        np.testing.assert_array_equal(rgb, bgr[:, :, ::-1])


@pytest.mark.parametrize("dst_hw", [(640, 640), (320, 320), (256, 384), (700, 700)])
@pytest.mark.parametrize("scaleup", [True, False])
def test_letterbox_into_writes_exactly_letterboxes_pixels_everywhere(coco128_dir, dst_hw, scaleup):
    image = cv2.imread(str(sorted((coco128_dir / "val2017").glob("*.jpg"))[1]))
    expected, _, scale, pad = letterbox.letterbox(image, EMPTY, dst_hw, scaleup=scaleup)
    batch = np.full((2, *dst_hw, 3), 7, np.uint8)  # stale values that must all be overwritten
    before = image.copy()
    got_scale, got_pad = letterbox.letterbox_into(image, batch[1], scaleup=scaleup)
    np.testing.assert_array_equal(batch[1], expected)
    assert np.all(batch[0] == 7)  # the neighbouring slot is untouched
    assert (got_scale, got_pad) == (scale, pad)
    np.testing.assert_array_equal(image, before)


def test_letterbox_into_rejects_bad_buffers():
    image = np.zeros((20, 30, 3), np.uint8)
    with pytest.raises(ValueError, match="out must be a uint8"):
        letterbox.letterbox_into(image, np.zeros((32, 32, 3), np.float32))
    with pytest.raises(ValueError, match="overlap"):
        letterbox.letterbox_into(image[:10], image)


@pytest.mark.parametrize("gains", [(1.0, 1.0, 1.0), (1.01, 0.6, 1.3), (0.99, 1.5, 0.7)])
@pytest.mark.parametrize("to_rgb", [False, True])
def test_apply_hsv_into_a_batch_slot_equals_its_returned_image(coco128_dir, gains, to_rgb):
    image = cv2.resize(cv2.imread(str(sorted((coco128_dir / "val2017").glob("*.jpg"))[2])), (160, 128))
    expected = color.apply_hsv(image, gains, to_rgb=to_rgb)
    batch = np.zeros((3, 128, 160, 3), np.uint8)
    returned = color.apply_hsv(image, gains, to_rgb=to_rgb, out=batch[1])
    assert np.shares_memory(returned, batch)
    np.testing.assert_array_equal(batch[1], expected)
    np.testing.assert_array_equal(color.bgr_to_rgb(image, out=batch[2]), image[:, :, ::-1])
    with pytest.raises(ValueError, match="overlap"):
        color.apply_hsv(image, gains, out=image)
    with pytest.raises(ValueError, match="shape"):
        color.apply_hsv(image, gains, out=batch)


def test_eval_batches_equal_the_plain_per_image_recipe(tmp_path):
    image_dir, ann_file = write_rectangle_coco(tmp_path, num_images=7, seed=5, size_range=(180, 480))
    out = tmp_path / "shards"
    convert_coco(image_dir=image_dir, ann_file=ann_file, output_dir=out, shard_num=2, progress=False)
    files = sorted(p for p in image_dir.iterdir())
    dataset = create_eval_dataset(out, per_batch_size=4, testing_shape=256, num_parallel_workers=2)
    seen = 0
    for batch in dataset.create_tuple_iterator(output_numpy=True, num_epochs=1):
        columns = dict(zip(EVAL_COLUMNS, batch))
        for k, image_id in enumerate(columns["image_id"]):
            if image_id < 0:
                continue
            hw = tuple(columns["orig_hw"][k])
            candidates = [cv2.imread(str(f)) for f in files]
            plain = [letterbox.letterbox(im, EMPTY, (256, 256), scaleup=False)[0][:, :, ::-1]
                     for im in candidates if im.shape[:2] == hw]
            assert any(np.array_equal(columns["image"][k], p) for p in plain)
            seen += 1
    assert seen == 7
