"""Per-class numbers of one COCO evaluation: AP, precision and recall, their curves, and the confusion matrix.

``class_metrics(evaluator, category_ids, class_names)`` is the one entry point (``yolo-eval`` and
validation during training call it). It reads a pycocotools ``COCOeval`` that has run ``evaluate()``
and ``accumulate()`` -- the very evaluation whose ``stats`` are the 12 COCO numbers -- so nothing is
matched twice in different ways:

* AP@0.5 and AP@0.5:0.95 of class k are the per-category slices of ``eval['precision']`` (area
  "all", 100 detections per image), averaged over the recall thresholds (and the IoU thresholds).
  pycocotools fills every entry of a category with ground truth and leaves -1 in every entry of one
  without, so the mean over the classes with ground truth equals the printed mAP (up to the rounding
  of a mean of means, about 1e-16).
* Precision, recall and F1 against the confidence come from the same evaluation's per-image matching
  at IoU 0.5 (``evalImgs``: detections matched to a crowd region are ignored, as in the AP). They are
  step functions: at confidence c they count the detections scoring at least c. P and R in the table
  are read at the confidence that maximises the mean F1 over the classes with ground truth (YOLOv5
  reads its P and R at the maximum of the mean F1 as well; it smooths the curve first, this does not).
* The precision-recall curve of a class is pycocotools' interpolated precision at IoU 0.5 on its 101
  recall points: the curve whose mean is that class's AP@0.5.
* The confusion matrix uses YOLOv5's thresholds (detections above confidence 0.25, matched to ground
  truth of any class at IoU above 0.45, each box at most once, highest IoU first). Rows are the
  predicted class, columns the true class; the last row and column are "background": a ground-truth
  box no detection matched counts in the background row, a detection that matched nothing in the
  background column. Crowd regions are not ground truth here: a detection that matches none of the
  other boxes but lies inside a crowd region (intersection over its own area above 0.45) is left out.

A class without ground truth in the set has NaN in its AP, precision and recall (shown as "no ground
truth", never as 0). A set without detections gives zero curves and ``num_detections`` 0.
"""
from __future__ import annotations

import dataclasses
from typing import Sequence

import numpy as np

from .nms import iou_one_to_many

CONFUSION_IOU_THRESH = 0.45      # YOLOv5's ConfusionMatrix defaults
CONFUSION_CONF_THRESH = 0.25
NUM_CONFIDENCE_POINTS = 1000     # the confidence grid of the P/R/F1 curves: linspace(0, 1, 1000), as YOLOv5
AREA_ALL = 0                     # pycocotools' area range index of "all"


@dataclasses.dataclass(frozen=True)
class ClassMetrics:
    """Per-class results of one evaluation (C classes in the dataset's class-index order)."""

    class_names: tuple
    category_ids: np.ndarray          # int64 (C,): the COCO category id of each class index
    num_images: int                   # images of the evaluated set
    images: np.ndarray                # int64 (C,): images holding at least one (non-crowd) box of the class
    instances: np.ndarray             # int64 (C,): non-crowd ground-truth boxes of the class
    ap50: np.ndarray                  # float64 (C,), NaN without ground truth
    ap50_95: np.ndarray
    precision: np.ndarray             # at ``confidence``
    recall: np.ndarray
    confidence: float                 # where P and R are read: the maximum of the mean F1
    confidence_grid: np.ndarray       # float64 (G,)
    precision_curve: np.ndarray       # float64 (C, G) at IoU 0.5 against the confidence; NaN rows without ground truth
    recall_curve: np.ndarray
    f1_curve: np.ndarray
    recall_points: np.ndarray         # float64 (101,): pycocotools' recall thresholds
    pr_curve: np.ndarray              # float64 (C, 101): interpolated precision at IoU 0.5
    confusion: np.ndarray             # int64 (C + 1, C + 1): [predicted, true], last = background
    num_detections: int
    confusion_iou: float = CONFUSION_IOU_THRESH
    confusion_conf: float = CONFUSION_CONF_THRESH

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    @property
    def has_ground_truth(self) -> np.ndarray:
        return self.instances > 0

    @property
    def map50(self) -> float:
        """Mean AP@0.5 over the classes with ground truth (NaN when none has any)."""
        return _mean_or_nan(self.ap50[self.has_ground_truth])

    @property
    def map50_95(self) -> float:
        return _mean_or_nan(self.ap50_95[self.has_ground_truth])

    def worst(self, count: int = 5) -> list[int]:
        """Indices of the ``count`` classes with ground truth that have the lowest AP@0.5:0.95 (ties: lower index)."""
        with_truth = np.flatnonzero(self.has_ground_truth)
        order = np.argsort(self.ap50_95[with_truth], kind="stable")
        return [int(k) for k in with_truth[order[:count]]]


def _mean_or_nan(values: np.ndarray) -> float:
    return float(np.mean(values)) if len(values) else float("nan")


# ---------------------------------------------------------------------------------------------
# AP slices and confidence curves from a COCOeval
# ---------------------------------------------------------------------------------------------

def per_category_ap(precision: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(AP@0.5, AP@0.5:0.95) per category, float64 (K,) each, from COCOeval's ``eval['precision']``
    (T, R, K, A, M): area "all", the last (largest) maxDets. NaN for a category without ground truth
    (pycocotools leaves -1 in every entry of it)."""
    precision = np.asarray(precision, np.float64)[:, :, :, AREA_ALL, -1]      # (T, R, K)
    valid = precision > -1
    counts = valid.sum(axis=(0, 1))
    totals = np.where(valid, precision, 0.0).sum(axis=(0, 1))
    ap50_95 = np.where(counts > 0, totals / np.maximum(counts, 1), np.nan)
    valid50 = valid[0]
    ap50 = np.where(valid50.any(axis=0), np.where(valid50, precision[0], 0.0).sum(axis=0)
                    / np.maximum(valid50.sum(axis=0), 1), np.nan)
    return ap50, ap50_95


def matched_scores(evaluator, category_index: int) -> tuple[np.ndarray, np.ndarray, int]:
    """(scores descending, true-positive flags, ground truths counted) of one category at COCOeval's first
    IoU threshold (0.5), area "all", at most ``maxDets[-1]`` detections per image; detections pycocotools
    ignores (matched to crowd regions) are left out."""
    params = evaluator.params
    num_images, num_areas = len(params.imgIds), len(params.areaRng)
    start = category_index * num_areas * num_images + AREA_ALL * num_images
    entries = [entry for entry in evaluator.evalImgs[start:start + num_images] if entry is not None]
    max_det = params.maxDets[-1]
    if not entries:
        return np.zeros(0), np.zeros(0, bool), 0
    scores = np.concatenate([np.asarray(e["dtScores"][:max_det], np.float64) for e in entries])
    matched = np.concatenate([np.asarray(e["dtMatches"][0, :max_det]) > 0 for e in entries])
    ignored = np.concatenate([np.asarray(e["dtIgnore"][0, :max_det], bool) for e in entries])
    num_truth = int(sum(np.count_nonzero(np.asarray(e["gtIgnore"]) == 0) for e in entries))
    order = np.argsort(-scores, kind="mergesort")
    keep = order[~ignored[order]]
    return scores[keep], matched[keep], num_truth


def confidence_curves(scores: np.ndarray, true_positive: np.ndarray, num_truth: int,
                      grid: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(precision, recall, F1) at each confidence of ``grid``, counting the detections scoring at least it.

    ``scores`` descending with their ``true_positive`` flags; precision is 0 where no detection scores
    that high. NaN everywhere when ``num_truth`` is 0.
    """
    grid = np.asarray(grid, np.float64)
    if num_truth == 0:
        nan = np.full(len(grid), np.nan)
        return nan, nan.copy(), nan.copy()
    # detections scoring >= c: scores are descending, so count = number of scores >= c
    kept = np.searchsorted(-np.asarray(scores, np.float64), -grid, side="right")
    true_so_far = np.concatenate([[0], np.cumsum(true_positive)])[kept]
    precision = np.where(kept > 0, true_so_far / np.maximum(kept, 1), 0.0)
    recall = true_so_far / num_truth
    f1 = np.where(precision + recall > 0, 2 * precision * recall / np.maximum(precision + recall, 1e-300), 0.0)
    return precision, recall, f1


# ---------------------------------------------------------------------------------------------
# Confusion matrix
# ---------------------------------------------------------------------------------------------

def box_iou(boxes_a: np.ndarray, boxes_b: np.ndarray) -> np.ndarray:
    """float64 (N, M) IoU of xyxy boxes (NMS's ``iou_one_to_many`` per row)."""
    boxes_a = np.asarray(boxes_a, np.float64).reshape(-1, 4)
    boxes_b = np.asarray(boxes_b, np.float64).reshape(-1, 4)
    return np.stack([iou_one_to_many(box, boxes_b) for box in boxes_a]) if len(boxes_a) else \
        np.zeros((0, len(boxes_b)))


def box_ioa(boxes: np.ndarray, regions: np.ndarray) -> np.ndarray:
    """float64 (N, M): the part of each box's area inside each region (COCO's crowd rule)."""
    a = np.asarray(boxes, np.float64).reshape(-1, 1, 4)
    b = np.asarray(regions, np.float64).reshape(1, -1, 4)
    inter = (np.clip(np.minimum(a[..., 2], b[..., 2]) - np.maximum(a[..., 0], b[..., 0]), 0, None)
             * np.clip(np.minimum(a[..., 3], b[..., 3]) - np.maximum(a[..., 1], b[..., 1]), 0, None))
    area = (a[..., 2] - a[..., 0]) * (a[..., 3] - a[..., 1])
    return np.where(area > 0, inter / np.where(area > 0, area, 1), 0.0)


def greedy_matches(iou: np.ndarray, threshold: float) -> list[tuple[int, int]]:
    """(row, column) pairs with IoU above ``threshold``, highest IoU first, each row and column used once."""
    rows, cols = np.nonzero(iou > threshold)
    order = np.lexsort((cols, rows, -iou[rows, cols]))     # IoU descending; ties by row, then column
    used_rows, used_cols, pairs = set(), set(), []
    for r, c in zip(rows[order].tolist(), cols[order].tolist()):
        if r not in used_rows and c not in used_cols:
            used_rows.add(r)
            used_cols.add(c)
            pairs.append((r, c))
    return pairs


def image_confusion(matrix: np.ndarray, truth: np.ndarray, crowd: np.ndarray, detections: np.ndarray,
                    iou_thresh: float, conf_thresh: float) -> None:
    """Add one image to ``matrix`` (C + 1, C + 1) [predicted, true], in place (the caller's own array).

    ``truth`` (N, 5) class, x1, y1, x2, y2 (non-crowd); ``crowd`` (K, 4) crowd regions; ``detections``
    (M, 6) class, x1, y1, x2, y2, score.
    """
    background = matrix.shape[0] - 1
    detections = detections[detections[:, 5] > conf_thresh]
    pairs = greedy_matches(box_iou(truth[:, 1:5], detections[:, 1:5]), iou_thresh)
    matched_truth = {t for t, _ in pairs}
    matched_detections = {d for _, d in pairs}
    for t, d in pairs:
        matrix[int(detections[d, 0]), int(truth[t, 0])] += 1
    for t in range(len(truth)):
        if t not in matched_truth:
            matrix[background, int(truth[t, 0])] += 1
    in_crowd = (box_ioa(detections[:, 1:5], crowd) > iou_thresh).any(axis=1) if len(crowd) else \
        np.zeros(len(detections), bool)
    for d in range(len(detections)):
        if d not in matched_detections and not in_crowd[d]:
            matrix[int(detections[d, 0]), background] += 1


def confusion_matrix(truth_by_image: dict, detections_by_image: dict, num_classes: int, *,
                     crowd_by_image: dict | None = None, iou_thresh: float = CONFUSION_IOU_THRESH,
                     conf_thresh: float = CONFUSION_CONF_THRESH) -> np.ndarray:
    """int64 (C + 1, C + 1) [predicted, true] counts over every image of either dict (see the module text).

    ``truth_by_image[image]``: (N, 5) class, x1, y1, x2, y2; ``detections_by_image[image]``: (M, 6)
    class, x1, y1, x2, y2, score; ``crowd_by_image[image]``: (K, 4) crowd regions. Inputs are not changed.
    """
    if not (0 <= iou_thresh < 1 and 0 <= conf_thresh < 1):
        raise ValueError(f"the confusion matrix thresholds must be in [0, 1): IoU {iou_thresh}, conf {conf_thresh}")
    matrix = np.zeros((num_classes + 1, num_classes + 1), np.int64)
    crowd_by_image = crowd_by_image or {}
    for image in set(truth_by_image) | set(detections_by_image):
        truth = np.asarray(truth_by_image.get(image, np.zeros((0, 5))), np.float64).reshape(-1, 5)
        detections = np.asarray(detections_by_image.get(image, np.zeros((0, 6))), np.float64).reshape(-1, 6)
        crowd = np.asarray(crowd_by_image.get(image, np.zeros((0, 4))), np.float64).reshape(-1, 4)
        image_confusion(matrix, truth, crowd, detections, iou_thresh, conf_thresh)
    return matrix


def _by_image(annotations, class_of_category: dict, with_score: bool) -> dict:
    """{image id: (N, 5 or 6) class, x1, y1, x2, y2[, score]} of COCO annotations (xywh boxes)."""
    grouped: dict = {}
    for annotation in annotations:
        x, y, w, h = annotation["bbox"]
        row = [class_of_category[annotation["category_id"]], x, y, x + w, y + h]
        if with_score:
            row.append(annotation["score"])
        grouped.setdefault(annotation["image_id"], []).append(row)
    return {image: np.asarray(rows, np.float64) for image, rows in grouped.items()}


def _is_crowd(annotation) -> bool:
    return bool(annotation.get("iscrowd", 0)) or bool(annotation.get("ignore", 0))


def ground_truth_counts(annotations, class_of_category: dict, num_classes: int) -> tuple[np.ndarray, np.ndarray]:
    """(images holding the class, instances of the class), int64 (C,) each, non-crowd boxes only."""
    instances = np.zeros(num_classes, np.int64)
    images_of_class = [set() for _ in range(num_classes)]
    for annotation in annotations:
        if not _is_crowd(annotation):
            k = class_of_category[annotation["category_id"]]
            instances[k] += 1
            images_of_class[k].add(annotation["image_id"])
    return np.asarray([len(s) for s in images_of_class], np.int64), instances


# ---------------------------------------------------------------------------------------------
# Everything for one evaluation
# ---------------------------------------------------------------------------------------------

def class_metrics(evaluator, category_ids: Sequence[int], class_names: Sequence[str]) -> ClassMetrics:
    """Per-class numbers, curves and confusion matrix of a COCOeval that has run ``evaluate`` and
    ``accumulate`` (its ``cocoGt`` holds the ground truth, its ``cocoDt`` the detections).

    ``category_ids[k]`` is the COCO category id of class index k, ``class_names[k]`` its name. ValueError
    when the evaluation's categories are not these ids.
    """
    category_ids = np.asarray(category_ids, np.int64).reshape(-1)
    if len(class_names) != len(category_ids):
        raise ValueError(f"{len(class_names)} class names for {len(category_ids)} category ids")
    evaluated = [int(c) for c in evaluator.params.catIds]
    if sorted(evaluated) != sorted(category_ids.tolist()):
        raise ValueError(f"the evaluation has categories {evaluated[:10]}... but the classes have ids "
                         f"{category_ids.tolist()[:10]}...: the ground truth belongs to another dataset")
    class_of_category = {int(c): k for k, c in enumerate(category_ids.tolist())}
    num_classes = len(category_ids)
    # pycocotools' category order -> class order
    to_class = np.asarray([class_of_category[c] for c in evaluated])
    ap50, ap50_95 = (np.empty(num_classes) for _ in range(2))
    ap50[to_class], ap50_95[to_class] = per_category_ap(evaluator.eval["precision"])
    recall_points = np.asarray(evaluator.params.recThrs, np.float64)
    pr_curve = np.full((num_classes, len(recall_points)), np.nan)
    pr_slice = np.asarray(evaluator.eval["precision"], np.float64)[0, :, :, AREA_ALL, -1].T   # (K, R)
    pr_curve[to_class] = np.where(pr_slice > -1, pr_slice, np.nan)

    grid = np.linspace(0.0, 1.0, NUM_CONFIDENCE_POINTS)
    curves = np.full((3, num_classes, len(grid)), np.nan)
    for index in range(len(evaluated)):
        curves[:, to_class[index]] = confidence_curves(*matched_scores(evaluator, index), grid)
    precision_curve, recall_curve, f1_curve = curves

    ground_truth, detections = evaluator.cocoGt, evaluator.cocoDt
    truth_annotations = list(ground_truth.anns.values())
    images, instances = ground_truth_counts(truth_annotations, class_of_category, num_classes)
    with_truth = instances > 0
    mean_f1 = f1_curve[with_truth].mean(axis=0) if with_truth.any() else np.zeros(len(grid))
    best = int(np.argmax(mean_f1))
    no_truth = ~with_truth
    precision, recall = precision_curve[:, best].copy(), recall_curve[:, best].copy()
    ap50[no_truth] = ap50_95[no_truth] = precision[no_truth] = recall[no_truth] = np.nan
    confusion = confusion_matrix(
        _by_image([a for a in truth_annotations if not _is_crowd(a)], class_of_category, False),
        _by_image(detections.anns.values(), class_of_category, True), num_classes,
        crowd_by_image={image: rows[:, 1:5] for image, rows in
                        _by_image([a for a in truth_annotations if _is_crowd(a)], class_of_category, False).items()})
    return ClassMetrics(
        class_names=tuple(str(n) for n in class_names), category_ids=category_ids,
        num_images=len(evaluator.params.imgIds), images=images, instances=instances, ap50=ap50, ap50_95=ap50_95,
        precision=precision, recall=recall, confidence=float(grid[best]), confidence_grid=grid,
        precision_curve=precision_curve, recall_curve=recall_curve, f1_curve=f1_curve,
        recall_points=recall_points, pr_curve=pr_curve, confusion=confusion, num_detections=len(detections.anns))
