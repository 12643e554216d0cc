"""Batched, class-aware non-maximum suppression on decoded YOLOv5 predictions (numpy).

The rule is YOLOv5's ``non_max_suppression`` (utils/general.py):

1. candidates: ``conf = objectness * class probability``; with ``multi_label`` every (box, class)
   pair with ``conf > conf_thresh`` is a candidate, otherwise each box's best class is, when its
   ``conf > conf_thresh``; boxes go from (cx, cy, w, h) to (x1, y1, x2, y2) in input pixels;
2. at most ``max_nms`` candidates, the highest scores, go on to the suppression;
3. greedy NMS, class-aware: in descending score order a candidate is kept unless a kept candidate of
   the same class overlaps it with IoU > ``nms_thresh``; at most ``max_det`` are kept.

YOLOv5 makes NMS class-aware by shifting each class's boxes by ``class * 4096`` pixels and running
class-agnostic NMS; here the same-class condition is applied directly (the IoU of boxes of different
classes is ignored), which keeps exactly the same boxes without the float32 rounding that the shift
brings to coordinates.

Ties in score are broken by candidate order (box index, then class index), using stable sorts
everywhere, so the result is deterministic. Candidates whose box has a non-finite coordinate are
dropped (a diverged network must not produce NaN boxes in a results file).

Vectorised: the candidates, the top-``max_nms`` selection and the IoU computations are array
operations; the only Python loops are one per image and one per *kept* box (each compares that box
with all remaining candidates of its class at once, and the loop stops at ``max_det`` kept boxes).
"""
from __future__ import annotations

import dataclasses
import heapq

import numpy as np

# COCO mAP evaluation keeps nearly every candidate (score above 0.001) so that the precision-recall curve
# reaches low scores. Boxes drawn for people use stricter values (``yolomodel.infer.DISPLAY_CONF_THRESH``).
EVAL_CONF_THRESH = 0.001
EVAL_NMS_THRESH = 0.65    # the reference's eval default
YOLOV5_VAL_NMS_THRESH = 0.6   # YOLOv5's val.py (with multi_label=True)
DEFAULT_MAX_DET = 300      # detections kept per image (COCO scores at most 100; YOLOv5 keeps 300)
DEFAULT_MAX_NMS = 30000    # candidates, the best scores, that go into the suppression

# Columns of one image's result: float32 (M, 6).
RESULT_COLUMNS = ("x1", "y1", "x2", "y2", "score", "class")


def cxcywh_to_xyxy(cxcywh: np.ndarray) -> np.ndarray:
    """(N, 4) centre/size boxes -> new (N, 4) corner boxes, in the input's float dtype."""
    cxcywh = np.asarray(cxcywh)
    half = cxcywh[:, 2:4] / 2
    return np.concatenate([cxcywh[:, 0:2] - half, cxcywh[:, 0:2] + half], axis=1)


def select_candidates(prediction: np.ndarray, conf_thresh: float, multi_label: bool):
    """(xyxy float32 (K, 4), score float32 (K,), class int64 (K,)) of one image's candidates.

    ``prediction`` is one image's float32 (N, 5 + C) decoded output. The order is box index, then
    class index (the tie-breaking order of the suppression).
    """
    prediction = np.asarray(prediction, np.float32)
    if prediction.ndim != 2 or prediction.shape[1] < 6:
        raise ValueError(f"one image's prediction must be (boxes, 5 + num_classes) with at least one class, "
                         f"got shape {prediction.shape}")
    # scores are float32, and so is the threshold they are compared with (as in YOLOv5's torch code)
    conf_thresh = np.float32(conf_thresh)
    # objectness > thresh is necessary for obj * cls > thresh (cls <= 1): a cheap first filter
    rows = prediction[prediction[:, 4] > conf_thresh]
    rows = rows[np.isfinite(rows[:, :4]).all(axis=1)]
    conf = rows[:, 5:] * rows[:, 4:5]  # (N', C)
    xyxy = cxcywh_to_xyxy(rows[:, :4])
    if multi_label:
        box_index, class_index = np.nonzero(conf > conf_thresh)  # row-major: box, then class
        scores = conf[box_index, class_index]
    else:
        class_index = np.argmax(conf, axis=1)  # the first class on ties
        scores = conf[np.arange(len(conf)), class_index]
        box_index = np.nonzero(scores > conf_thresh)[0]
        class_index, scores = class_index[box_index], scores[box_index]
    return xyxy[box_index], scores.astype(np.float32), class_index.astype(np.int64)


def top_k_stable(scores: np.ndarray, k: int) -> np.ndarray:
    """Indices of the ``k`` highest ``scores`` in descending order, ties in index order.

    Equal to ``np.argsort(-scores, kind="stable")[:k]`` without sorting everything when k is small
    next to the number of scores.
    """
    scores = np.asarray(scores)
    if k >= len(scores):
        return np.argsort(-scores, kind="stable")
    if k <= 0:
        return np.zeros(0, np.int64)
    kth_largest = np.partition(scores, len(scores) - k)[len(scores) - k]
    above = np.nonzero(scores > kth_largest)[0]
    at_kth = np.nonzero(scores == kth_largest)[0][: k - len(above)]  # ties at the boundary: index order
    chosen = np.sort(np.concatenate([above, at_kth]))
    return chosen[np.argsort(-scores[chosen], kind="stable")]


def iou_one_to_many(box: np.ndarray, boxes: np.ndarray) -> np.ndarray:
    """IoU (float64) of one xyxy ``box`` with each row of ``boxes`` (M, 4); 0 where the union is 0."""
    box = np.asarray(box, np.float64)
    boxes = np.asarray(boxes, np.float64)
    inter_w = np.clip(np.minimum(box[2], boxes[:, 2]) - np.maximum(box[0], boxes[:, 0]), 0, None)
    inter_h = np.clip(np.minimum(box[3], boxes[:, 3]) - np.maximum(box[1], boxes[:, 1]), 0, None)
    inter = inter_w * inter_h
    area = (box[2] - box[0]) * (box[3] - box[1])
    areas = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
    union = area + areas - inter
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(union > 0, inter / union, 0.0)


def greedy_nms(xyxy: np.ndarray, scores: np.ndarray, classes: np.ndarray, iou_thresh: float,
               max_keep: int) -> np.ndarray:
    """Indices (int64, descending score) kept by greedy class-aware NMS, at most ``max_keep``.

    A box is suppressed by an earlier kept box of the same class with IoU > ``iou_thresh``.
    Suppression never crosses classes, so each class keeps a list of its still-alive candidates in
    score order; the next kept box is the best head among those lists (a heap). Each pass of the loop
    keeps one box and compares it with every remaining candidate of its class at once, so the loop
    runs once per kept box, not once per candidate; it stops at ``max_keep`` kept boxes.
    """
    order = np.argsort(-np.asarray(scores), kind="stable")  # rank -> candidate index
    xyxy = np.asarray(xyxy, np.float64)[order]
    classes = np.asarray(classes)[order]
    # ranks grouped by class, each group in rank (score) order
    by_class = np.argsort(classes, kind="stable")
    group_starts = np.flatnonzero(np.r_[True, classes[by_class][1:] != classes[by_class][:-1]])
    alive = np.split(by_class, group_starts[1:]) if len(by_class) else []
    heads = [(int(ranks[0]), group) for group, ranks in enumerate(alive)]
    heapq.heapify(heads)
    kept = []
    while heads and len(kept) < max_keep:
        best, group = heapq.heappop(heads)
        kept.append(best)
        rest = alive[group][1:]
        alive[group] = rest[~(iou_one_to_many(xyxy[best], xyxy[rest]) > iou_thresh)]
        if len(alive[group]):
            heapq.heappush(heads, (int(alive[group][0]), group))
    return order[np.asarray(kept, np.int64)]


def check_nms_arguments(conf_thresh, nms_thresh, max_det, max_nms) -> None:
    """ValueError naming the argument to fix when one is out of range."""
    if not 0.0 <= float(conf_thresh) < 1.0:
        raise ValueError(f"conf_thresh must be within [0, 1), got {conf_thresh}")
    if not 0.0 <= float(nms_thresh) <= 1.0:
        raise ValueError(f"nms_thresh (an IoU) must be within [0, 1], got {nms_thresh}")
    if int(max_det) < 1:
        raise ValueError(f"max_det must be at least 1, got {max_det}")
    if int(max_nms) < 1:
        raise ValueError(f"max_nms must be at least 1, got {max_nms}")


@dataclasses.dataclass(frozen=True)
class NmsOptions:
    """The settings of ``non_max_suppression``, checked when made; the defaults are COCO evaluation's."""

    conf_thresh: float = EVAL_CONF_THRESH
    nms_thresh: float = EVAL_NMS_THRESH
    max_det: int = DEFAULT_MAX_DET
    multi_label: bool = False
    max_nms: int = DEFAULT_MAX_NMS

    def __post_init__(self):
        check_nms_arguments(self.conf_thresh, self.nms_thresh, self.max_det, self.max_nms)

    def apply(self, predictions: np.ndarray) -> list[np.ndarray]:
        """``non_max_suppression`` of a (B, N, 5 + C) batch with these settings."""
        return non_max_suppression(predictions, **dataclasses.asdict(self))


def nms_image(prediction: np.ndarray, *, conf_thresh: float = EVAL_CONF_THRESH,
              nms_thresh: float = EVAL_NMS_THRESH, max_det: int = DEFAULT_MAX_DET,
              max_nms: int = DEFAULT_MAX_NMS, multi_label: bool = False) -> np.ndarray:
    """float32 (M, 6) x1, y1, x2, y2, score, class of one image's (N, 5 + C) prediction, score desc."""
    xyxy, scores, classes = select_candidates(prediction, float(conf_thresh), bool(multi_label))
    top = top_k_stable(scores, int(max_nms))
    xyxy, scores, classes = xyxy[top], scores[top], classes[top]
    keep = greedy_nms(xyxy, scores, classes, float(nms_thresh), int(max_det))
    out = np.empty((len(keep), 6), np.float32)
    out[:, 0:4] = xyxy[keep]
    out[:, 4] = scores[keep]
    out[:, 5] = classes[keep]
    return out


def non_max_suppression(predictions: np.ndarray, *, conf_thresh: float = EVAL_CONF_THRESH,
                        nms_thresh: float = EVAL_NMS_THRESH, max_det: int = DEFAULT_MAX_DET,
                        max_nms: int = DEFAULT_MAX_NMS, multi_label: bool = False) -> list[np.ndarray]:
    """YOLOv5 NMS of a batch of decoded predictions.

    ``predictions``: float32 (B, N, 5 + C) = cx, cy, w, h (input pixels), objectness probability,
    class probabilities (``InferenceNet``'s output). Returns B arrays float32 (M_b, 6) = x1, y1, x2, y2
    (input pixels), score, class index, sorted by score descending, M_b <= max_det.
    """
    predictions = np.asarray(predictions)
    if predictions.ndim != 3 or predictions.shape[2] < 6:
        raise ValueError(f"predictions must be (batch, boxes, 5 + num_classes) with at least one class, "
                         f"got shape {predictions.shape}")
    check_nms_arguments(conf_thresh, nms_thresh, max_det, max_nms)
    return [nms_image(image_prediction, conf_thresh=conf_thresh, nms_thresh=nms_thresh, max_det=max_det,
                      max_nms=max_nms, multi_label=multi_label)
            for image_prediction in predictions]
