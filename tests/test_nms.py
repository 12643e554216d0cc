"""yolomodel.nms against a plain, obviously-correct reference implementation of YOLOv5's NMS."""
from __future__ import annotations

import numpy as np
import pytest

from yolodata.rng import keyed_rng
from yolomodel.nms import non_max_suppression, nms_image, top_k_stable


# ---------------------------------------------------------------------------------------------
# The reference: one candidate at a time, Python scalars, no vectorisation.
# ---------------------------------------------------------------------------------------------

def reference_iou(a, b) -> float:
    inter_w = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    inter_h = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = inter_w * inter_h
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


def reference_nms(prediction, *, conf_thresh=0.001, nms_thresh=0.65, max_det=300, max_nms=30000,
                  multi_label=False):
    """Rows (x1, y1, x2, y2, score, class) kept by YOLOv5's rule, written the slow, plain way."""
    candidates = []  # (box as Python floats, score, class), in box-then-class order
    conf_thresh = np.float32(conf_thresh)  # float32 scores are compared with a float32 threshold
    for row in np.asarray(prediction, np.float32):
        cx, cy, w, h, objectness = row[:5]
        if not all(np.isfinite(v) for v in (cx, cy, w, h)):
            continue
        # float32 arithmetic, as the network's output is float32
        box = [float(cx - w / 2), float(cy - h / 2), float(cx + w / 2), float(cy + h / 2)]
        confs = [row[5 + c] * objectness for c in range(len(row) - 5)]
        if multi_label:
            for c, conf in enumerate(confs):
                if conf > conf_thresh:
                    candidates.append((box, float(conf), c))
        else:
            best = 0
            for c in range(1, len(confs)):
                if confs[c] > confs[best]:
                    best = c
            if confs[best] > conf_thresh:
                candidates.append((box, float(confs[best]), best))
    candidates.sort(key=lambda cand: -cand[1])  # stable: ties keep candidate order
    candidates = candidates[:max_nms]
    kept = []
    for box, score, cls in candidates:
        if len(kept) == max_det:
            break
        if all(not (k_cls == cls and reference_iou(k_box, box) > nms_thresh) for k_box, _, k_cls in kept):
            kept.append((box, score, cls))
    return np.asarray([box + [score, cls] for box, score, cls in kept], np.float32).reshape(-1, 6)


# ---------------------------------------------------------------------------------------------
# Random predictions with many overlaps and many tied scores.
# ---------------------------------------------------------------------------------------------

def random_predictions(case: int, *, batch=3, num_boxes=120, num_classes=3, size=160):
    rng = keyed_rng(0, case, purpose="test-nms")
    # boxes cluster around a few centres so that many overlap
    centres = rng.uniform(0, size, size=(4, 2))
    which = rng.integers(0, len(centres), size=(batch, num_boxes))
    xy = centres[which] + rng.normal(0, size / 20, size=(batch, num_boxes, 2))
    wh = rng.uniform(size / 16, size / 4, size=(batch, num_boxes, 2))
    # quantised probabilities: ties in score are common
    objectness = rng.choice([0.0005, 0.25, 0.5, 0.75, 1.0], size=(batch, num_boxes, 1))
    class_probs = rng.integers(0, 11, size=(batch, num_boxes, num_classes)) / 10
    return np.concatenate([xy, wh, objectness, class_probs], axis=2).astype(np.float32)


SETTINGS = [
    dict(),
    dict(multi_label=True),
    dict(nms_thresh=0.3, multi_label=True),
    dict(nms_thresh=0.0),
    dict(nms_thresh=1.0),
    dict(conf_thresh=0.3, nms_thresh=0.5),
    dict(max_det=7, multi_label=True),
    dict(max_nms=25, multi_label=True),
    dict(max_nms=40, max_det=10, nms_thresh=0.45),
]


@pytest.mark.parametrize("settings", SETTINGS, ids=[str(s) for s in SETTINGS])
def test_same_kept_boxes_as_reference_on_random_sets(settings):
    compared = 0
    for case in range(12):
        predictions = random_predictions(case, num_classes=1 + case % 4)
        results = non_max_suppression(predictions, **settings)
        assert len(results) == len(predictions)
        for prediction, result in zip(predictions, results):
            expected = reference_nms(prediction, **settings)
            assert result.dtype == np.float32 and result.shape == expected.shape
            np.testing.assert_array_equal(result, expected)
            compared += len(expected)
    assert compared > 100  # the sets really exercised the suppression


def test_scores_sorted_descending_and_limits_hold():
    predictions = random_predictions(99, batch=2, num_boxes=400, num_classes=5)
    for result in non_max_suppression(predictions, max_det=50, multi_label=True):
        assert len(result) == 50
        assert np.all(np.diff(result[:, 4]) <= 0)
        assert np.all(result[:, 4] > 0.001)
        assert set(np.unique(result[:, 5])) <= set(range(5))


def _row(cx, cy, w, h, obj, *class_probs):
    return [cx, cy, w, h, obj, *class_probs]


def test_decoding_and_class_aware_suppression_by_hand():
    prediction = np.asarray([
        _row(50, 50, 20, 10, 0.9, 0.9, 0.1),    # A: class 0, score 0.81
        _row(51, 50, 20, 10, 0.8, 0.9, 0.1),    # B: class 0, IoU(A) ~ 0.9 -> suppressed
        _row(50, 50, 20, 10, 0.8, 0.1, 0.9),    # C: same box as A, class 1 -> kept (class-aware)
        _row(150, 50, 20, 10, 0.5, 0.5, 0.0),   # D: far away -> kept
    ], np.float32)
    result = nms_image(prediction, nms_thresh=0.5)
    expected = np.asarray([[40, 45, 60, 55, 0.81, 0], [40, 45, 60, 55, 0.72, 1],
                           [140, 45, 160, 55, 0.25, 0]], np.float32)
    np.testing.assert_allclose(result, expected, rtol=1e-6)


def test_greedy_chain_is_respected():
    # A suppresses B; B would suppress C, but B is gone, and A and C do not overlap enough: C stays.
    prediction = np.asarray([
        _row(10, 10, 20, 20, 1.0, 0.9),   # A  x 0..20
        _row(18, 10, 20, 20, 1.0, 0.8),   # B  x 8..28   IoU(A,B) = 12/28 = 0.43
        _row(26, 10, 20, 20, 1.0, 0.7),   # C  x 16..36  IoU(A,C) = 4/36, IoU(B,C) = 0.43
    ], np.float32)
    result = nms_image(prediction, nms_thresh=0.4)
    np.testing.assert_allclose(result[:, 4], [0.9, 0.7], rtol=1e-6)


def test_iou_equal_to_threshold_is_not_suppressed():
    prediction = np.asarray([_row(5, 5, 10, 10, 1.0, 0.9),
                             _row(5, 2.5, 10, 5, 1.0, 0.8)], np.float32)  # IoU exactly 0.5
    assert len(nms_image(prediction, nms_thresh=0.5)) == 2
    assert len(nms_image(prediction, nms_thresh=0.49)) == 1


def test_ties_keep_the_first_candidate():
    same = _row(30, 30, 10, 10, 0.5, 0.5)
    prediction = np.asarray([same, same, same], np.float32)
    result = nms_image(prediction)
    assert result.shape == (1, 6)
    # with max_nms=1 and tied scores the first candidate is the one that stays
    prediction = np.asarray([_row(30, 30, 10, 10, 0.5, 0.5), _row(90, 90, 10, 10, 0.5, 0.5)], np.float32)
    result = nms_image(prediction, max_nms=1)
    np.testing.assert_array_equal(result[:, :2], [[25, 25]])


def test_multi_label_keeps_every_class_above_threshold():
    prediction = np.asarray([_row(30, 30, 10, 10, 1.0, 0.6, 0.5, 0.0005)], np.float32)
    assert nms_image(prediction, multi_label=True)[:, 5].tolist() == [0, 1]
    assert nms_image(prediction, multi_label=False)[:, 5].tolist() == [0]


def test_conf_is_objectness_times_class_and_strictly_above_threshold():
    prediction = np.asarray([_row(30, 30, 10, 10, 0.5, 0.5),      # 0.25: not > 0.25
                             _row(90, 90, 10, 10, 0.5, 0.52)], np.float32)
    result = nms_image(prediction, conf_thresh=0.25)
    assert result.shape == (1, 6)
    np.testing.assert_allclose(result[0, 4], 0.26, rtol=1e-6)


def test_no_candidates_gives_empty_float32_arrays():
    predictions = np.zeros((2, 50, 5 + 4), np.float32)
    predictions[..., 2:4] = 10
    results = non_max_suppression(predictions)
    assert [r.shape for r in results] == [(0, 6), (0, 6)]
    assert all(r.dtype == np.float32 for r in results)
    assert non_max_suppression(np.zeros((0, 10, 6), np.float32)) == []
    assert non_max_suppression(np.zeros((1, 0, 6), np.float32))[0].shape == (0, 6)


def test_one_class_and_non_finite_boxes():
    prediction = np.asarray([_row(np.nan, 30, 10, 10, 1.0, 1.0),
                             _row(30, 30, np.inf, 10, 1.0, 1.0),
                             _row(60, 60, 10, 10, 0.9, 1.0)], np.float32)
    result = nms_image(prediction)
    assert result.shape == (1, 6) and np.isfinite(result).all()


def test_inputs_are_not_modified():
    predictions = random_predictions(5)
    before = predictions.copy()
    non_max_suppression(predictions, multi_label=True, max_nms=30)
    np.testing.assert_array_equal(predictions, before)


def test_top_k_stable_matches_a_full_stable_sort():
    for case in range(20):
        scores = keyed_rng(1, case, purpose="test-topk").integers(0, 8, size=200).astype(np.float32)
        for k in (1, 5, 37, 199, 200, 500):
            np.testing.assert_array_equal(top_k_stable(scores, k), np.argsort(-scores, kind="stable")[:k])


@pytest.mark.parametrize("kwargs, words", [
    (dict(conf_thresh=1.5), "conf_thresh"),
    (dict(nms_thresh=-0.1), "nms_thresh"),
    (dict(max_det=0), "max_det"),
    (dict(max_nms=0), "max_nms"),
])
def test_bad_arguments_are_explained(kwargs, words):
    with pytest.raises(ValueError, match=words):
        non_max_suppression(np.zeros((1, 4, 7), np.float32), **kwargs)


def test_bad_prediction_shape_is_explained():
    with pytest.raises(ValueError, match="5 \\+ num_classes"):
        non_max_suppression(np.zeros((1, 4, 5), np.float32))
    with pytest.raises(ValueError, match="5 \\+ num_classes"):
        non_max_suppression(np.zeros((4, 7), np.float32))
