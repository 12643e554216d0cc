"""AutoAnchor (yolodata.anchors): YOLOv5's best possible recall on real boxes, new anchors for boxes the
default anchors cannot match, and the same anchors for the same data and seed."""
from __future__ import annotations

import json

import numpy as np
import pytest

from yolodata import anchors as anchors_lib
from yolodata.pipeline.targets import YOLOV5_ANCHORS


def coco_rows(coco128_dir):
    """(height, width, labels xyxy class iscrowd) per image of coco128's json, in image-id order."""
    document = json.loads((coco128_dir / "annotations" / "instances_val2017.json").read_text())
    boxes_of = {}
    for annotation in document["annotations"]:
        x, y, w, h = annotation["bbox"]
        boxes_of.setdefault(annotation["image_id"], []).append([x, y, x + w, y + h, 0, annotation["iscrowd"]])
    rows = []
    for image in sorted(document["images"], key=lambda item: item["id"]):
        labels = np.asarray(boxes_of.get(image["id"], []), np.float32).reshape(-1, 6)
        rows.append((image["height"], image["width"], labels))
    return document, rows


def yolov5_bpr_by_hand(document, training_shape, anchors, anchor_t):
    """BPR and AAT the way YOLOv5's formula reads, box by box in Python floats: each box's w, h scaled
    by training_shape / the image's long side; a box counts when some anchor has
    min(w/aw, aw/w, h/ah, ah/h) > 1/anchor_t."""
    size_of = {image["id"]: (image["width"], image["height"]) for image in document["images"]}
    flat = [(float(w), float(h)) for w, h in np.asarray(anchors, np.float64).reshape(-1, 2)]
    recalled, above = 0, 0
    boxes = [a for a in document["annotations"] if not a["iscrowd"]]
    for annotation in boxes:
        width, height = size_of[annotation["image_id"]]
        gain = training_shape / max(width, height)
        w, h = annotation["bbox"][2] * gain, annotation["bbox"][3] * gain
        metrics = [min(w / aw, aw / w, h / ah, ah / h) for aw, ah in flat]
        recalled += any(m > 1 / anchor_t for m in metrics)
        above += sum(m > 1 / anchor_t for m in metrics)
    return recalled / len(boxes), above / len(boxes)


@pytest.mark.parametrize("training_shape, anchor_t", [(640, 4.0), (320, 4.0), (640, 2.9)])
def test_bpr_equals_yolov5_formula_on_coco128(coco128_dir, training_shape, anchor_t):
    document, rows = coco_rows(coco128_dir)
    boxes = anchors_lib.box_sizes(rows, training_shape)
    fit = anchors_lib.anchor_fit(boxes.sizes, YOLOV5_ANCHORS, anchor_t)
    bpr, aat = yolov5_bpr_by_hand(document, training_shape, YOLOV5_ANCHORS, anchor_t)
    # float32 sizes against float64 ones: a box exactly at the threshold could flip; none of coco128's does,
    # so the counts agree exactly (one box is 1/num_boxes of BPR)
    assert fit.bpr == pytest.approx(bpr, abs=1e-9)
    assert fit.aat == pytest.approx(aat, abs=1e-6)
    assert len(boxes.sizes) == sum(1 for a in document["annotations"] if not a["iscrowd"])


def test_coco_anchors_fit_coco128_and_are_kept(coco128_dir):
    _, rows = coco_rows(coco128_dir)
    messages = []
    result = anchors_lib.check_anchors(anchors_lib.box_sizes(rows, 640), YOLOV5_ANCHORS, anchor_t=4.0,
                                       training_shape=640, seed=0, log=messages.append)
    assert not result.changed and np.array_equal(result.anchors, YOLOV5_ANCHORS)
    assert result.before.bpr > 0.98
    assert "Best Possible Recall (BPR)" in messages[0] and "good fit" in messages[0]


def thin_box_rows(seed, num_images=60):
    """Images of long thin boxes (aspect 8..14, either way), which COCO's anchors (aspect <= 2) cannot
    reach at anchor_t 4 when the box is long."""
    rng = np.random.default_rng(seed)
    rows = []
    for _ in range(num_images):
        num = int(rng.integers(1, 6))
        lengths = rng.uniform(150, 600, num)
        aspects = rng.uniform(8, 14, num)
        widths, heights = lengths, lengths / aspects
        swap = rng.random(num) < 0.5
        widths, heights = np.where(swap, heights, widths), np.where(swap, widths, heights)
        labels = np.zeros((num, 6), np.float32)
        labels[:, 2], labels[:, 3] = widths, heights
        rows.append((640, 640, labels))
    return rows


def test_long_thin_boxes_get_new_anchors_with_higher_recall():
    boxes = anchors_lib.box_sizes(thin_box_rows(1), 640)
    messages = []
    result = anchors_lib.check_anchors(boxes, YOLOV5_ANCHORS, anchor_t=4.0, training_shape=640, seed=3,
                                       generations=300, log=messages.append)
    assert result.before.bpr < 0.98
    assert result.changed and result.after.bpr > result.before.bpr
    assert result.after.bpr > 0.95
    # the anchors in effect are sorted small to large (the stride order) and measured independently
    areas = result.anchors.reshape(-1, 2).prod(axis=1)
    assert np.all(np.diff(areas) >= 0)
    sizes = anchors_lib.augmented_sizes(boxes, 3)
    assert anchors_lib.anchor_fit(sizes, result.anchors, 4.0).bpr == result.after.bpr
    assert any("poor fit" in m for m in messages) and any("new anchors" in m for m in messages)


def test_same_data_and_seed_give_the_same_anchors_and_another_seed_may_not():
    boxes = anchors_lib.box_sizes(thin_box_rows(2), 640)
    runs = [anchors_lib.check_anchors(boxes, YOLOV5_ANCHORS, anchor_t=4.0, training_shape=640, seed=seed,
                                      generations=100, log=lambda _: None) for seed in (5, 5, 6)]
    assert np.array_equal(runs[0].anchors, runs[1].anchors)
    assert not np.array_equal(runs[0].anchors, runs[2].anchors)


def test_kmeans_finds_well_separated_clusters():
    rng = np.random.default_rng(0)
    centres = np.array([[1.0, 1.0], [5.0, 1.0], [1.0, 6.0]])
    points = np.concatenate([c + rng.normal(0, 0.1, (200, 2)) for c in centres])
    found = anchors_lib.kmeans(points, 3, np.random.default_rng(1), restarts=5)
    found = found[np.lexsort((found[:, 1], found[:, 0]))]
    expected = centres[np.lexsort((centres[:, 1], centres[:, 0]))]
    # each centre is the mean of 200 points of sigma 0.1: within 5 standard errors (0.1 / sqrt(200) * 5)
    assert np.abs(found - expected).max() < 0.04


def test_no_boxes_keeps_the_anchors():
    result = anchors_lib.check_anchors(anchors_lib.box_sizes([(100, 100, np.zeros((0, 6)))], 640), YOLOV5_ANCHORS,
                                       anchor_t=4.0, training_shape=640, log=lambda _: None)
    assert not result.changed and "no boxes" in result.reason


def test_crowd_boxes_are_left_out_and_images_scaled_by_their_long_side():
    labels = np.array([[0, 0, 100, 50, 0, 0], [0, 0, 30, 30, 1, 1]], np.float32)
    boxes = anchors_lib.box_sizes([(200, 400, labels)], 640)
    assert boxes.sizes.tolist() == [[160.0, 80.0]]
