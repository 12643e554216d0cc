"""Figures of an evaluation's per-class results: the confusion matrix and the PR / F1 / P / R curves.

Drawn with matplotlib's object API on an Agg canvas (no pyplot state, safe in any thread), from plain
arrays, so this module knows nothing of how the numbers were computed (``yolomodel.metrics`` does that).

* Curves: one thin line per class with ground truth and the mean over those classes bold; with more
  than ``MAX_CLASS_LINES`` classes only the mean, and the legend says so.
* The confusion matrix is normalised by true class (each column sums to 1; the background column too),
  shows its IoU and confidence thresholds in the title, writes the cell values when the matrix is
  small, and its class names at a font size that fits, or leaves them out with a note when they
  cannot fit (365 classes).
* Without detections the figures are still written, with empty curves and a note saying so.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np

MAX_CLASS_LINES = 20            # above this many classes a curve figure shows only the mean
MAX_ANNOTATED_CELLS = 30        # write the values into the matrix cells up to this many classes
MIN_LABEL_POINTS = 4.0          # a tick label smaller than this is unreadable: leave the labels out
CURVE_FIGSIZE = (6.4, 4.8)
CURVE_FIGSIZE_WITH_LEGEND = (9.6, 4.8)      # room for the per-class legend beside the axes
DPI = 100


def _figure(figsize):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    figure = Figure(figsize=figsize, dpi=DPI)
    FigureCanvasAgg(figure)
    return figure


def _mean_over(curves: np.ndarray, with_truth: np.ndarray) -> np.ndarray:
    rows = np.asarray(curves, np.float64)[np.asarray(with_truth, bool)]
    return rows.mean(axis=0) if len(rows) else np.zeros(np.asarray(curves).shape[1])


def _class_lines(axes, x, curves, class_names, with_truth, values) -> None:
    """Thin per-class lines (classes with ground truth only), labelled with ``values``."""
    for k in np.flatnonzero(with_truth):
        axes.plot(x, curves[k], linewidth=1, label=f"{class_names[k]} {values[k]:.3f}")


def _finish_axes(figure, axes, xlabel, ylabel, *, note: str | None, class_lines: int) -> None:
    """Limits, labels, the note and the legend: beside the axes when it lists classes, inside otherwise.
    Fixed margins (tight_layout would render the figure once more)."""
    axes.set_xlim(0, 1)
    axes.set_ylim(0, 1.01)
    axes.set_xlabel(xlabel)
    axes.set_ylabel(ylabel)
    axes.grid(True, linewidth=0.3)
    if note:
        axes.text(0.5, 0.5, note, transform=axes.transAxes, ha="center", va="center", fontsize=10,
                  bbox=dict(facecolor="white", edgecolor="gray"))
    if class_lines:
        axes.legend(loc="upper left", bbox_to_anchor=(1.02, 1.0), fontsize=7 if class_lines > 6 else 9,
                    frameon=False)
        figure.subplots_adjust(left=0.08, right=0.62, bottom=0.11, top=0.9)
    else:
        axes.legend(loc="lower left", fontsize=9)
        figure.subplots_adjust(left=0.12, right=0.95, bottom=0.11, top=0.9)


def _curve_note(num_detections: int, num_with_truth: int) -> str | None:
    if num_with_truth == 0:
        return "no ground truth in this set"
    return "no detections: every curve is empty" if num_detections == 0 else None


def pr_curve_figure(recall_points: np.ndarray, pr_curves: np.ndarray, ap50: np.ndarray,
                    class_names: Sequence[str], with_truth: np.ndarray, *, num_detections: int):
    """Precision against recall at IoU 0.5 per class (``pr_curves`` (C, R) on ``recall_points``), the mean
    bold; the legend gives each class's AP@0.5 and the mean's."""
    with_truth = np.asarray(with_truth, bool)
    few = with_truth.sum() <= MAX_CLASS_LINES
    figure = _figure(CURVE_FIGSIZE_WITH_LEGEND if few else CURVE_FIGSIZE)
    axes = figure.add_subplot(1, 1, 1)
    if few:
        _class_lines(axes, recall_points, pr_curves, class_names, with_truth, ap50)
    mean_ap = float(np.mean(np.asarray(ap50)[with_truth])) if with_truth.any() else 0.0
    axes.plot(recall_points, _mean_over(np.nan_to_num(pr_curves), with_truth), linewidth=3, color="blue",
              label=f"all classes {mean_ap:.3f} mAP@0.5" + ("" if few else f" ({with_truth.sum()} classes: "
                                                                          f"only the mean drawn)"))
    _finish_axes(figure, axes, "recall", "precision", note=_curve_note(num_detections, int(with_truth.sum())),
                 class_lines=int(few) * int(with_truth.sum()))
    axes.set_title("precision-recall at IoU 0.5")
    return figure


def confidence_curve_figure(confidence_grid: np.ndarray, curves: np.ndarray, class_names: Sequence[str],
                            with_truth: np.ndarray, *, ylabel: str, chosen_confidence: float, num_detections: int):
    """One metric (precision, recall or F1) against the confidence threshold per class, the mean bold; the
    mean's legend entry gives its value at ``chosen_confidence`` (where the table reads P and R), and
    its maximum for F1."""
    with_truth = np.asarray(with_truth, bool)
    grid = np.asarray(confidence_grid, np.float64)
    few = with_truth.sum() <= MAX_CLASS_LINES
    figure = _figure(CURVE_FIGSIZE_WITH_LEGEND if few else CURVE_FIGSIZE)
    axes = figure.add_subplot(1, 1, 1)
    chosen = int(np.argmin(np.abs(grid - chosen_confidence)))
    if few:
        _class_lines(axes, grid, curves, class_names, with_truth, np.asarray(curves)[:, chosen])
    mean = _mean_over(curves, with_truth)
    label = f"all classes {mean[chosen]:.3f} at {grid[chosen]:.3f}"
    if not few:
        label += f" ({with_truth.sum()} classes: only the mean drawn)"
    axes.plot(grid, mean, linewidth=3, color="blue", label=label)
    axes.axvline(grid[chosen], color="gray", linestyle="--", linewidth=0.8)
    _finish_axes(figure, axes, "confidence", ylabel, note=_curve_note(num_detections, int(with_truth.sum())),
                 class_lines=int(few) * int(with_truth.sum()))
    axes.set_title(f"{ylabel} at IoU 0.5 (dashed: the maximum of the mean F1)", fontsize=10)
    return figure


def normalised_by_true_class(matrix: np.ndarray) -> np.ndarray:
    """float64 copy of a [predicted, true] count matrix with each column divided by its sum (0 columns stay 0)."""
    matrix = np.asarray(matrix, np.float64)
    totals = matrix.sum(axis=0, keepdims=True)
    return np.where(totals > 0, matrix / np.where(totals > 0, totals, 1), 0.0)


def label_font_points(num_labels: int, axis_inches: float) -> float:
    """A tick-label font size (points) at which ``num_labels`` labels fit along ``axis_inches``; 0 when
    that would be below ``MIN_LABEL_POINTS`` (the labels are then left out)."""
    size = min(9.0, 0.8 * 72.0 * axis_inches / max(num_labels, 1))
    return size if size >= MIN_LABEL_POINTS else 0.0


def label_inches_for(labels: Sequence[str], points: float) -> float:
    """About how long the longest of ``labels`` is at ``points`` (0 when the labels are left out)."""
    return max(len(name) for name in labels) * 0.6 * points / 72.0 if points else 0.0


def confusion_matrix_figure(matrix: np.ndarray, class_names: Sequence[str], *, iou_thresh: float,
                            conf_thresh: float):
    """The (C + 1, C + 1) [predicted, true] count matrix normalised by true class, background last."""
    counts = np.asarray(matrix)
    size = counts.shape[0]
    normalised = normalised_by_true_class(counts)
    side = float(np.clip(3.0 + 0.14 * size, 6.0, 14.0))
    figure = _figure((side + 1.5, side))
    axes = figure.add_subplot(1, 1, 1)
    image = axes.imshow(normalised, cmap="Blues", vmin=0.0, vmax=1.0, interpolation="nearest")
    figure.colorbar(image, ax=axes, fraction=0.046, pad=0.04)
    labels = list(class_names) + ["background"]
    points = label_font_points(size, side * 0.75)
    title = (f"confusion matrix, normalised by true class (IoU > {iou_thresh:g}, confidence > {conf_thresh:g})")
    axes.set_xticks([])
    axes.set_yticks([])
    if points:
        # plain texts beside the cells: matplotlib's tick objects cost about 5 ms each
        for index, name in enumerate(labels):
            axes.text(index, size - 0.4, name, rotation=90, ha="center", va="top", fontsize=points,
                      transform=axes.transData, clip_on=False)
            axes.text(-0.6, index, name, ha="right", va="center", fontsize=points, clip_on=False)
    else:
        title += f"\n{size - 1} classes: names left out (too many to fit), see confusion_matrix.csv; background last"
    if size - 1 <= MAX_ANNOTATED_CELLS:
        for row, col in zip(*np.nonzero(counts)):
            value = normalised[row, col]
            axes.text(col, row, f"{value:.2f}", ha="center", va="center", fontsize=max(4.0, min(8.0, points)),
                      color="white" if value > 0.5 else "black")
    axes.set_xlabel("true", labelpad=label_inches_for(labels, points) * 72.0 + 8)
    axes.set_ylabel("predicted", labelpad=label_inches_for(labels, points) * 72.0 + 12)
    axes.set_title(title, fontsize=9)
    # fixed margins sized for the longest name (tight_layout would render the figure once more)
    label_inches = label_inches_for(labels, points) + 0.6
    width, height = figure.get_size_inches()
    figure.subplots_adjust(left=min(0.4, label_inches / width), bottom=min(0.4, label_inches / height),
                           right=0.86, top=1.0 - 0.8 / height)
    return figure
