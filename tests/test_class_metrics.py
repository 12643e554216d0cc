"""Per-class metrics (yolomodel.metrics), the per-class report (yolomodel.class_report), its figures and the
batch pictures.

The AP columns are checked on cocoapi's real val2014 ground truth and its fake bbox results against
pycocotools run independently once per category; the confusion matrix on a hand-made case where every
cell is known.
"""
from __future__ import annotations

import contextlib
import csv
import io
import json

import numpy as np
import pytest
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from conftest import shared_data_path
from yolodata.visualize.batch_pictures import eval_batch_grids, train_batch_grid
from yolodata.visualize.drawing import class_colour
from yolodata.visualize.metrics_plots import (cell_rgb, confusion_matrix_image, label_scale, matrix_cell_pixels,
                                              normalised_by_true_class)
from yolomodel.class_report import (PER_CLASS_CSV, REPORT_FILES, format_class_table, worst_classes_line,
                                    write_class_report)
from yolomodel.coco_eval import score_results
from yolomodel.metrics import class_metrics, confidence_curves, confusion_matrix
from yolomodel.train.run_report import letterboxed_truth

GT_NAME = "instances_val2014_100.json"
FAKE_RESULTS_NAME = "instances_val2014_fakebbox100_results.json"


@pytest.fixture(scope="module")
def cocoapi_metrics():
    cocoapi_dir = shared_data_path("cocoapi_val2014_100")
    scores = score_results(cocoapi_dir / GT_NAME, cocoapi_dir / FAKE_RESULTS_NAME, keep_evaluator=True)
    categories = sorted(scores.evaluator.cocoGt.dataset["categories"], key=lambda c: c["id"])
    metrics = class_metrics(scores.evaluator, [c["id"] for c in categories], [c["name"] for c in categories])
    return cocoapi_dir, scores, metrics


def independent_category_ap(ground_truth, detections, category_id: int) -> tuple[float, float]:
    """(AP@0.5:0.95, AP@0.5) of one category by a fresh pycocotools evaluation restricted to it."""
    with contextlib.redirect_stdout(io.StringIO()):
        evaluator = COCOeval(ground_truth, detections, "bbox")
        evaluator.params.catIds = [category_id]
        evaluator.evaluate()
        evaluator.accumulate()
        evaluator.summarize()
    return float(evaluator.stats[0]), float(evaluator.stats[1])


def test_per_class_ap_equals_pycocotools_per_category_and_the_mean_equals_map(cocoapi_metrics):
    cocoapi_dir, scores, metrics = cocoapi_metrics
    assert metrics.num_classes == 80 and metrics.num_detections == 734
    with_truth = metrics.has_ground_truth
    assert 0 < with_truth.sum() < 80          # the set lacks some categories: both kinds are checked
    with contextlib.redirect_stdout(io.StringIO()):
        ground_truth = COCO(str(cocoapi_dir / GT_NAME))
        detections = ground_truth.loadRes(json.loads((cocoapi_dir / FAKE_RESULTS_NAME).read_text()))
    for k, category_id in enumerate(metrics.category_ids.tolist()):
        ap, ap50 = independent_category_ap(ground_truth, detections, category_id)
        if with_truth[k]:
            assert abs(metrics.ap50_95[k] - ap) < 1e-9 and abs(metrics.ap50[k] - ap50) < 1e-9, k
        else:   # pycocotools has nothing to measure (-1); shown as no ground truth, never as 0
            assert ap == -1 and np.isnan(metrics.ap50_95[k]) and np.isnan(metrics.precision[k])
    assert abs(metrics.map50_95 - scores.map50_95) < 1e-12
    assert abs(metrics.map50 - scores.map50) < 1e-12
    assert metrics.instances.sum() == sum(1 for a in scores.evaluator.cocoGt.anns.values() if not a["iscrowd"])


def test_table_csv_and_figures(cocoapi_metrics, tmp_path):
    _, scores, metrics = cocoapi_metrics
    table = format_class_table(metrics)
    lines = table.splitlines()
    assert f"confidence {metrics.confidence:.3f}" in lines[0]
    all_row = lines[2].split()
    assert all_row[0] == "all" and float(all_row[-1]) == round(scores.map50_95, 3)
    assert float(all_row[-2]) == round(scores.map50, 3)
    no_truth = [metrics.class_names[k] for k in np.flatnonzero(~metrics.has_ground_truth)]
    assert sum("no ground truth" in line for line in lines) == len(no_truth)
    assert len(lines) == 3 + 80       # sorted by class index: one row per class
    worst = worst_classes_line(metrics)
    lowest = metrics.worst(5)
    assert metrics.ap50_95[lowest[-1]] <= np.nanmin(np.delete(metrics.ap50_95, lowest))
    assert all(metrics.class_names[k] in worst for k in lowest)

    written = write_class_report(metrics, tmp_path / "report")
    assert sorted(p.name for p in written) == sorted(REPORT_FILES)
    assert all(p.stat().st_size > 1000 for p in written if p.suffix == ".png")
    rows = list(csv.DictReader((tmp_path / "report" / PER_CLASS_CSV).open()))
    assert [int(r["class_index"]) for r in rows] == list(range(80))
    for k, row in enumerate(rows):
        if metrics.has_ground_truth[k]:
            assert float(row["AP50-95"]) == pytest.approx(metrics.ap50_95[k], abs=1e-6)
        else:
            assert row["AP50-95"] == row["P"] == "" and row["instances"] == "0"
    matrix_rows = list(csv.reader((tmp_path / "report" / "confusion_matrix.csv").open()))
    counts = np.asarray([[int(v) for v in r[1:]] for r in matrix_rows[1:]])
    assert np.array_equal(counts, metrics.confusion) and matrix_rows[-1][0] == "background"
    # every ground-truth box appears once in its true class's column
    assert np.array_equal(counts.sum(axis=0)[:80], metrics.instances)


def test_no_detections_give_empty_curves_and_say_so(cocoapi_dir, tmp_path):
    scores = score_results(cocoapi_dir / GT_NAME, [], keep_evaluator=True)
    categories = sorted(scores.evaluator.cocoGt.dataset["categories"], key=lambda c: c["id"])
    metrics = class_metrics(scores.evaluator, [c["id"] for c in categories], [c["name"] for c in categories])
    assert metrics.num_detections == 0
    with_truth = metrics.has_ground_truth
    assert (metrics.ap50[with_truth] == 0).all() and (metrics.f1_curve[with_truth] == 0).all()
    assert "no detections" in format_class_table(metrics)
    assert len(write_class_report(metrics, tmp_path)) == len(REPORT_FILES)


def test_confidence_curves_count_the_detections_above_each_threshold():
    scores = np.array([0.9, 0.8, 0.3])
    true_positive = np.array([True, False, True])
    precision, recall, f1 = confidence_curves(scores, true_positive, 4, np.array([0.0, 0.3, 0.5, 0.85, 0.95]))
    assert precision.tolist() == [2 / 3, 2 / 3, 0.5, 1.0, 0.0]
    assert recall.tolist() == [0.5, 0.5, 0.25, 0.25, 0.0]
    assert f1[2] == pytest.approx(2 * 0.5 * 0.25 / 0.75) and f1[4] == 0
    assert np.isnan(confidence_curves(scores, true_positive, 0, np.array([0.5]))[0]).all()


def box(x, y, size=10.0):
    return [x, y, x + size, y + size]


def test_confusion_matrix_on_a_hand_made_case():
    # 3 classes; rows predicted, columns true, index 3 = background
    truth = {
        1: np.array([[0, *box(0, 0)], [1, *box(50, 50)], [2, *box(100, 100)]]),
        2: np.array([[2, *box(0, 0)], [2, *box(4, 0)]]),            # two overlapping boxes of class 2
        3: np.array([[1, *box(0, 0)]]),
    }
    detections = {
        1: np.array([[0, *box(0, 0), 0.9],         # correct class 0
                     [2, *box(51, 50), 0.8],        # class 1 seen as 2
                     [1, *box(200, 200), 0.7],      # nothing there: background column of class 1
                     [0, *box(100, 100), 0.2]]),    # below conf 0.25: ignored, so true class 2 is missed
        2: np.array([[2, *box(3, 0), 0.6]]),        # IoU 0.54 with (0,0) and 0.82 with (4,0): takes the latter
        3: np.array([[1, *box(6, 0), 0.9]]),        # IoU 4/16 = 0.25 < 0.45: a miss and a false detection
        4: np.array([[0, *box(0, 0, 20), 0.5],      # image without ground truth, crowd region: ignored
                     [2, *box(40, 40), 0.5]]),      # outside the crowd region: background
    }
    crowd = {4: np.array([box(0, 0, 30)])}
    expected = np.zeros((4, 4), np.int64)
    expected[0, 0] = 1
    expected[2, 1] = 1
    expected[1, 3] = 1 + 1          # image 1 and image 3
    expected[3, 2] = 1 + 1          # image 1's class 2 box, image 2's (0,0) box
    expected[2, 2] = 1
    expected[3, 1] = 1              # image 3's box
    expected[2, 3] = 1              # image 4
    got = confusion_matrix(truth, detections, 3, crowd_by_image=crowd)
    assert np.array_equal(got, expected)
    normalised = normalised_by_true_class(got)
    assert np.allclose(normalised.sum(axis=0), 1.0)
    assert normalised[3, 2] == pytest.approx(2 / 3)


def test_large_class_counts_stay_readable():
    assert label_scale(matrix_cell_pixels(81)) > 0        # 80 classes: names at a size that fits the cells
    assert label_scale(matrix_cell_pixels(366)) == 0      # 365 classes: left out (with a note)
    names = [f"class {k}" for k in range(365)]
    counts = np.zeros((366, 366), np.int64)
    counts[np.arange(366), np.arange(366)] = 3
    image = confusion_matrix_image(counts, names, iou_thresh=0.45, conf_thresh=0.25)
    assert image.dtype == np.uint8 and max(image.shape[:2]) < 1500
    # a perfect diagonal: the darkest colour on the diagonal, the lightest elsewhere
    cell = matrix_cell_pixels(366)
    assert (cell_rgb(1.0) == cell_rgb(np.ones(1))[0]).all()
    assert ((image == cell_rgb(1.0)).all(axis=2).sum() >= 366 * cell * cell)


def test_confusion_matrix_picture_of_a_small_matrix_shows_names_and_values():
    counts = np.array([[3, 0, 1], [1, 2, 0], [0, 2, 0]])
    image = confusion_matrix_image(counts, ["a cat with a long name", "dog"], iou_thresh=0.45, conf_thresh=0.25)
    blank = confusion_matrix_image(counts, ["", ""], iou_thresh=0.45, conf_thresh=0.25)
    assert image.shape[0] > blank.shape[0]     # room made for the names under the columns
    # column "true cat" = (3, 1, 0) / 4: its first cell has the colour of 0.75
    assert (image == cell_rgb(0.75)).all(axis=2).sum() > matrix_cell_pixels(3) ** 2 // 2


def test_batch_pictures_draw_the_boxes_and_skip_padding():
    images = np.full((3, 128, 128, 3), 114, np.uint8)
    boxes = np.zeros((3, 4, 6), np.float32)
    boxes[0, 0] = (10, 20, 60, 90, 2, 1)
    boxes[1, 0] = (0, 0, 5, 5, 1, 0)                # not valid: not drawn
    grid = train_batch_grid(images, boxes, np.array([7, 8, 9]), ["a", "b", "c"])
    assert (grid == class_colour(2)).all(axis=2).sum() > 100
    assert not (grid == class_colour(1)).all(axis=2).any()
    truth = [np.array([[10, 20, 60, 90, 0, 0]], np.float32), np.zeros((0, 6), np.float32), np.zeros((0, 6))]
    detections = [np.array([[10, 20, 60, 90, 0.9, 1], [0, 0, 9, 9, 0.1, 2]], np.float32)] * 3
    labels_grid, pred_grid = eval_batch_grids(images, np.array([5, 6, -1]), truth, detections, ["a", "b", "c"])
    assert labels_grid.shape == pred_grid.shape and labels_grid.shape[1] < 2 * 128 + 10   # two tiles, no padding
    assert (labels_grid == class_colour(0)).all(axis=2).any() and not (labels_grid == class_colour(1)).all(axis=2).any()
    assert (pred_grid == class_colour(1)).all(axis=2).any() and not (pred_grid == class_colour(2)).all(axis=2).any()


def test_ground_truth_moves_into_letterboxed_pixels(cocoapi_dir):
    with contextlib.redirect_stdout(io.StringIO()):
        ground_truth = COCO(str(cocoapi_dir / GT_NAME))
    image_id = next(i for i, anns in ground_truth.imgToAnns.items() if anns)
    annotation = ground_truth.imgToAnns[image_id][0]
    class_of_category = {c: k for k, c in enumerate(sorted(ground_truth.getCatIds()))}
    labels = letterboxed_truth(ground_truth, image_id, 0.5, (3.0, 7.0), class_of_category)
    x, y, w, h = annotation["bbox"]
    assert labels[0, :4] == pytest.approx([x * 0.5 + 3, y * 0.5 + 7, (x + w) * 0.5 + 3, (y + h) * 0.5 + 7], abs=1e-3)
    assert labels[0, 4] == class_of_category[annotation["category_id"]]
