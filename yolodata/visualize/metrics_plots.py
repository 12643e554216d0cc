"""Figures of an evaluation's per-class results: the confusion matrix and the PR / F1 / P / R curves.

The curves are drawn with matplotlib's object API on an Agg canvas (no pyplot state), the confusion
matrix with OpenCV (fast at 80 or 365 classes), from plain arrays: this module knows nothing of how the
numbers were computed (``yolomodel.metrics`` does that).

* Curves: one thin line per class with ground truth and the mean over those classes bold; with more
  than ``MAX_CLASS_LINES`` classes only the mean, and the legend says so.
* The confusion matrix is normalised by true class (each column sums to 1; the background column too),
  shows its IoU and confidence thresholds in the title, writes the cell values when the matrix is
  small, and its class names at a font size that fits the cells, or leaves them out with a note when
  they cannot fit (365 classes).
* Without detections the figures are still written, with empty curves and a note saying so.
"""
from __future__ import annotations

from typing import Sequence

import cv2
import numpy as np

from .drawing import FONT

MAX_CLASS_LINES = 20            # above this many classes a curve figure shows only the mean
MAX_ANNOTATED_CELLS = 30        # write the values into the matrix cells up to this many classes
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


# The confusion matrix is drawn with OpenCV: with 80 classes matplotlib spends about a second on the 162
# class-name texts alone, and the figure is written at every new best epoch of a training run.
WHITE_RGB = np.array((255, 255, 255), np.float64)
EMPTY_CELL_RGB = np.array((247, 251, 255), np.float64)      # the two ends of the colour ramp (blues)
FULL_CELL_RGB = np.array((8, 48, 107), np.float64)
MATRIX_PIXELS = 1100               # about this many pixels along the matrix side
MAX_CELL_PIXELS = 60
MIN_LABEL_SCALE = 0.3              # Hershey font scale below which names are unreadable: left out


def cell_rgb(values: np.ndarray) -> np.ndarray:
    """uint8 (..., 3) colours of normalised values in [0, 1]: light (0) to dark blue (1)."""
    values = np.clip(np.asarray(values, np.float64), 0.0, 1.0)[..., None]
    return np.round(EMPTY_CELL_RGB + (FULL_CELL_RGB - EMPTY_CELL_RGB) * values).astype(np.uint8)


def matrix_cell_pixels(size: int) -> int:
    """Side of one cell in pixels for a (size x size) matrix."""
    return int(np.clip(MATRIX_PIXELS // max(size, 1), 2, MAX_CELL_PIXELS))


def label_scale(cell_pixels: int) -> float:
    """Font scale at which a name fits in a cell's height; 0 when that is below ``MIN_LABEL_SCALE`` (left out)."""
    scale = min(0.5, (cell_pixels - 3) / 24.0)
    return scale if scale >= MIN_LABEL_SCALE else 0.0


def _text(canvas, text, origin, scale, colour=(0, 0, 0)) -> None:
    cv2.putText(canvas, text, (int(origin[0]), int(origin[1])), FONT, scale, colour, 1, cv2.LINE_AA)


def _label_block(names: Sequence[str], cell: int, scale: float) -> np.ndarray:
    """uint8 RGB (len(names) * cell, width): one right-aligned name per cell row (white background)."""
    widths = [cv2.getTextSize(name, FONT, scale, 1)[0][0] for name in names]
    block = np.full((len(names) * cell, max(widths) + 6, 3), 255, np.uint8)
    (_, text_h), _ = cv2.getTextSize("Ag", FONT, scale, 1)
    for row, (name, width) in enumerate(zip(names, widths)):
        _text(block, name, (block.shape[1] - 4 - width, row * cell + (cell + text_h) // 2), scale)
    return block


def _paste(canvas, image, x, y) -> None:
    canvas[y:y + image.shape[0], x:x + image.shape[1]] = image


def confusion_matrix_image(matrix: np.ndarray, class_names: Sequence[str], *, iou_thresh: float,
                           conf_thresh: float) -> np.ndarray:
    """uint8 RGB picture of the (C + 1, C + 1) [predicted, true] count matrix normalised by true class,
    background last: names beside the rows and under the columns when they fit (a note otherwise), the
    values in the cells up to ``MAX_ANNOTATED_CELLS`` classes, the thresholds and a colour scale."""
    counts = np.asarray(matrix)
    size = counts.shape[0]
    normalised = normalised_by_true_class(counts)
    cell = matrix_cell_pixels(size)
    scale = label_scale(cell)
    side = size * cell
    cells = np.repeat(np.repeat(cell_rgb(normalised), cell, axis=0), cell, axis=1)
    names = list(class_names) + ["background"]
    rows_block = _label_block(names, cell, scale) if scale else np.full((side, 8, 3), 255, np.uint8)
    columns_block = np.rot90(rows_block, k=1)            # names read upwards, ending at the matrix
    title = [f"confusion matrix normalised by true class (each column sums to 1), background last",
             f"IoU > {iou_thresh:g}, confidence > {conf_thresh:g}; rows: predicted, columns: true"]
    if not scale:
        title.append(f"{size - 1} classes: names left out (too many to fit); see confusion_matrix.csv")
    top, left = 14 + 20 * len(title), 30 + rows_block.shape[1]
    title_width = max(cv2.getTextSize(text, FONT, 0.5, 1)[0][0] for text in title) + 20
    canvas = np.full((top + side + columns_block.shape[0] + 34, max(left + side + 90, title_width), 3), 255,
                     np.uint8)
    _paste(canvas, cells, left, top)
    cv2.rectangle(canvas, (left - 1, top - 1), (left + side, top + side), (0, 0, 0), 1)
    _paste(canvas, rows_block, left - rows_block.shape[1] - 2, top)
    _paste(canvas, columns_block, left, top + side + 2)
    for line, text in enumerate(title):
        _text(canvas, text, (10, 22 + 20 * line), 0.5)
    _text(canvas, "true", (left + side // 2 - 15, canvas.shape[0] - 10), 0.5)
    predicted = np.full((24, 90, 3), 255, np.uint8)
    _text(predicted, "predicted", (2, 17), 0.5)
    _paste(canvas, np.rot90(predicted, k=1), 4, top + max(0, side // 2 - 45))
    _annotate_cells(canvas, counts, normalised, cell, left, top)
    _colour_scale(canvas, left + side + 14, top, side)
    return canvas


def _annotate_cells(canvas, counts, normalised, cell, left, top) -> None:
    """Write the normalised values into the non-empty cells of small matrices (in place)."""
    if counts.shape[0] - 1 > MAX_ANNOTATED_CELLS:
        return
    scale = min(0.45, cell / 75.0)
    for row, col in zip(*np.nonzero(counts)):
        value = normalised[row, col]
        text = f"{value:.2f}"
        (width, height), _ = cv2.getTextSize(text, FONT, scale, 1)
        _text(canvas, text, (left + col * cell + (cell - width) // 2, top + row * cell + (cell + height) // 2),
              scale, (255, 255, 255) if value > 0.5 else (0, 0, 0))


def _colour_scale(canvas, x, top, height) -> None:
    """A vertical colour ramp from 1 (top) to 0 (bottom) with its end values (in place)."""
    ramp = cell_rgb(np.linspace(1.0, 0.0, height))[:, None, :]
    canvas[top:top + height, x:x + 16] = np.repeat(ramp, 16, axis=1)
    cv2.rectangle(canvas, (x - 1, top - 1), (x + 16, top + height), (0, 0, 0), 1)
    for value, y in ((1.0, top + 10), (0.5, top + height // 2 + 4), (0.0, top + height)):
        _text(canvas, f"{value:g}", (x + 20, y), 0.4)
