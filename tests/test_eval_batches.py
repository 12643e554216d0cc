"""Evaluation batches: square or YOLOv5's rectangular ones, every image once across ranks."""
from __future__ import annotations

import math

import numpy as np
import pytest

from yolodata.pipeline import eval_batches
from yolodata.pipeline.eval_batches import EvalGeometry, eval_keys, rect_batch_shape


def yolov5_batch_shape(aspect_ratios, img_size, stride=32, pad=0.5):
    """YOLOv5's val loader, written out from its description: [h, w] relative shape, then scaled."""
    mini, maxi = min(aspect_ratios), max(aspect_ratios)
    shape = [1, 1]
    if maxi < 1:
        shape = [maxi, 1]
    elif mini > 1:
        shape = [1, 1 / mini]
    return tuple(int(math.ceil(v * img_size / stride + pad)) * stride for v in shape)


def random_sizes(count, seed):
    rng = np.random.default_rng(seed)
    return np.stack([rng.integers(100, 1200, count), rng.integers(100, 1200, count)], axis=1)


@pytest.mark.parametrize("ratios", [[0.75], [0.5, 0.75, 0.6], [1.3, 2.0], [0.8, 1.2], [1.0], [0.1], [9.0]])
def test_rect_shape_is_yolov5s(ratios):
    assert rect_batch_shape(ratios, 640) == yolov5_batch_shape(ratios, 640)
    assert rect_batch_shape([0.75], 640) == (512, 672)


@pytest.mark.parametrize("group_size", [1, 2, 3])
@pytest.mark.parametrize("geometry", [EvalGeometry(), EvalGeometry(rect=True)], ids=["square", "rect"])
def test_every_image_once_and_the_same_number_of_batches_on_every_rank(group_size, geometry):
    sizes = random_sizes(37, seed=group_size)
    keys = [eval_keys(sizes, per_batch_size=5, testing_shape=320, rank=r, group_size=group_size, geometry=geometry)
            for r in range(group_size)]
    assert len({len(k) for k in keys}) == 1 and len(keys[0]) % 5 == 0
    valid_rows = np.concatenate([k[k[:, eval_batches.KEY_VALID] == 1, eval_batches.KEY_ROW] for k in keys])
    assert sorted(valid_rows.tolist()) == list(range(37))
    for rank_keys in keys:
        # one shape per batch
        batches = rank_keys.reshape(-1, 5, 4)
        assert (batches[:, :, 2:] == batches[:, :1, 2:]).all()


def test_rect_batches_group_similar_shapes_and_hold_their_images():
    sizes = random_sizes(64, seed=7)
    keys = eval_keys(sizes, per_batch_size=8, testing_shape=640, geometry=EvalGeometry(rect=True))
    ratios = sizes[:, 0] / sizes[:, 1]
    ordered = ratios[keys[:, eval_batches.KEY_ROW]]
    assert (np.diff(ordered) >= 0).all()  # sorted by aspect ratio
    allowed = set(range(32, 640 + 64, 32))
    for row, _, height, width in keys:
        assert height in allowed and width in allowed
        scale = 640 / max(sizes[row])
        assert sizes[row, 0] * scale <= height and sizes[row, 1] * scale <= width
    distinct = {(int(h), int(w)) for h, w in keys[:, 2:]}
    assert len(distinct) <= 2 * (640 // 32 + 1)


def test_square_batches_keep_row_order():
    keys = eval_keys(random_sizes(10, 0), per_batch_size=4, testing_shape=256)
    assert keys[:10, 0].tolist() == list(range(10)) and (keys[:, 2:] == 256).all()
    assert keys[10:, eval_batches.KEY_VALID].tolist() == [0, 0]


def test_bad_settings_are_explained():
    with pytest.raises(ValueError, match="interpolation"):
        EvalGeometry(interpolation="cubic")
    with pytest.raises(ValueError, match="testing_shape must be a multiple of 32"):
        eval_keys([[10, 10]], per_batch_size=1, testing_shape=100)
    with pytest.raises(ValueError, match="rank must be at most 1"):
        eval_keys([[10, 10]], per_batch_size=1, testing_shape=64, rank=2, group_size=2)
