"""The per-class report of an evaluation: the table in the log, ``per_class.csv``, the confusion matrix
(png + csv) and the PR / F1 / P / R curves, written atomically into one folder.

The numbers are ``yolomodel.metrics.ClassMetrics``; the figures are drawn by
``yolodata.visualize.metrics_plots``. ``yolo-eval`` and validation during training both write through
``write_class_report`` and print ``format_class_table``.
"""
from __future__ import annotations

import csv
import io
import math
from pathlib import Path

import numpy as np

from yolodata.fileio import write_file_atomic
from yolodata.visualize.drawing import encode_grid
from yolodata.visualize.figure import encode_figure
from yolodata.visualize.metrics_plots import confidence_curve_figure, confusion_matrix_image, pr_curve_figure

from .metrics import ClassMetrics

PER_CLASS_CSV = "per_class.csv"
CONFUSION_CSV = "confusion_matrix.csv"
CONFUSION_PNG = "confusion_matrix.png"
PR_CURVE_PNG = "PR_curve.png"
F1_CURVE_PNG = "F1_curve.png"
P_CURVE_PNG = "P_curve.png"
R_CURVE_PNG = "R_curve.png"
REPORT_FILES = (PER_CLASS_CSV, CONFUSION_PNG, CONFUSION_CSV, PR_CURVE_PNG, F1_CURVE_PNG, P_CURVE_PNG, R_CURVE_PNG)
PER_CLASS_COLUMNS = ("class_index", "class", "images", "instances", "P", "R", "AP50", "AP50-95", "P_R_confidence")
NO_TRUTH = "no ground truth in this set"
MAX_NAME_WIDTH = 24


def _cell(value: float) -> str:
    return "" if math.isnan(value) else f"{value:.6g}"


def _fit_name(name: str, width: int) -> str:
    return name if len(name) <= width else name[:width - 2] + ".."


def format_class_table(metrics: ClassMetrics, *, per_class: bool = True) -> str:
    """The per-class table: a line saying where P and R are read, a header, the "all" row (means over the
    classes with ground truth), then (``per_class``) one row per class in class-index order."""
    width = min(MAX_NAME_WIDTH, max([len("class")] + [len(n) for n in metrics.class_names]))
    with_truth = metrics.has_ground_truth
    lines = [f"per-class results: P and R at confidence {metrics.confidence:.3f}, the one maximising the mean F1 "
             f"over the {int(with_truth.sum())} classes with ground truth (IoU 0.5); AP from the COCO evaluation "
             f"above"]
    if metrics.num_detections == 0:
        lines.append("no detections: P, R and every AP are 0 and the curves are empty")
    lines.append(f"{'class':<{width}} {'images':>7} {'instances':>9} {'P':>7} {'R':>7} {'AP@0.5':>7} "
                 f"{'AP@0.5:0.95':>11}")

    def row(name, images, instances, p, r, ap50, ap):
        return (f"{_fit_name(name, width):<{width}} {images:>7d} {instances:>9d} {p:>7.3f} {r:>7.3f} {ap50:>7.3f} "
                f"{ap:>11.3f}")

    means = [float(np.mean(v[with_truth])) if with_truth.any() else float("nan")
             for v in (metrics.precision, metrics.recall, metrics.ap50, metrics.ap50_95)]
    lines.append(row("all", metrics.num_images, int(metrics.instances.sum()), *means))
    for k, name in enumerate(metrics.class_names if per_class else ()):
        if with_truth[k]:
            lines.append(row(name, int(metrics.images[k]), int(metrics.instances[k]), metrics.precision[k],
                             metrics.recall[k], metrics.ap50[k], metrics.ap50_95[k]))
        else:
            lines.append(f"{_fit_name(name, width):<{width}} {0:>7d} {0:>9d}   ({NO_TRUTH})")
    return "\n".join(lines)


def worst_classes_line(metrics: ClassMetrics, count: int = 5) -> str:
    """One line naming the ``count`` classes with the lowest AP@0.5:0.95 (classes with ground truth only)."""
    worst = metrics.worst(count)
    if not worst:
        return "lowest AP@0.5:0.95: none (no class has ground truth in this set)"
    named = ", ".join(f"{metrics.class_names[k]} {metrics.ap50_95[k]:.3f}" for k in worst)
    return f"lowest AP@0.5:0.95 ({len(worst)} of {int(metrics.has_ground_truth.sum())} classes): {named}"


def per_class_csv(metrics: ClassMetrics) -> bytes:
    """``per_class.csv``: one row per class in class-index order; P, R and AP empty without ground truth."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(PER_CLASS_COLUMNS)
    for k, name in enumerate(metrics.class_names):
        writer.writerow([k, name, int(metrics.images[k]), int(metrics.instances[k]), _cell(metrics.precision[k]),
                         _cell(metrics.recall[k]), _cell(metrics.ap50[k]), _cell(metrics.ap50_95[k]),
                         f"{metrics.confidence:.6g}"])
    return buffer.getvalue().encode("utf-8")


def confusion_csv(metrics: ClassMetrics) -> bytes:
    """The confusion matrix as counts: a header row of true classes, one row per predicted class, background last."""
    names = list(metrics.class_names) + ["background"]
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow([f"predicted \\ true (IoU > {metrics.confusion_iou:g}, confidence > {metrics.confusion_conf:g})"]
                    + names)
    for name, counts in zip(names, metrics.confusion.tolist()):
        writer.writerow([name] + counts)
    return buffer.getvalue().encode("utf-8")


def curve_figures(metrics: ClassMetrics) -> dict:
    """{file name: matplotlib Figure} of the four curves."""
    with_truth = metrics.has_ground_truth
    common = dict(class_names=metrics.class_names, with_truth=with_truth, chosen_confidence=metrics.confidence,
                  num_detections=metrics.num_detections)
    return {
        PR_CURVE_PNG: pr_curve_figure(metrics.recall_points, metrics.pr_curve, metrics.ap50, metrics.class_names,
                                      with_truth, num_detections=metrics.num_detections),
        F1_CURVE_PNG: confidence_curve_figure(metrics.confidence_grid, metrics.f1_curve, ylabel="F1", **common),
        P_CURVE_PNG: confidence_curve_figure(metrics.confidence_grid, metrics.precision_curve, ylabel="precision",
                                             **common),
        R_CURVE_PNG: confidence_curve_figure(metrics.confidence_grid, metrics.recall_curve, ylabel="recall",
                                             **common),
    }


def write_class_report(metrics: ClassMetrics, folder: str | Path) -> list[Path]:
    """Write ``REPORT_FILES`` into ``folder`` (created if needed), each atomically; their paths."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    matrix = confusion_matrix_image(metrics.confusion, metrics.class_names, iou_thresh=metrics.confusion_iou,
                                    conf_thresh=metrics.confusion_conf)
    written = [write_file_atomic(folder / PER_CLASS_CSV, per_class_csv(metrics)),
               write_file_atomic(folder / CONFUSION_PNG, encode_grid(matrix, ".png")),
               write_file_atomic(folder / CONFUSION_CSV, confusion_csv(metrics))]
    for name, figure in curve_figures(metrics).items():
        written.append(write_file_atomic(folder / name, encode_figure(figure, ".png")))
    return written
