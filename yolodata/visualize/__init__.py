"""Pictures of a converted dataset: grids of samples with their boxes, and label statistics.

What users look at before a long run (``yolo-visualize`` / ``tools/visualize.py``, whose main is
``yolodata.cli.visualize``):

* a grid of samples, either as stored (``raw``: decoded from the shards, with their stored boxes), as the
  train pipeline's geometry makes them (``mosaic``: mosaic + affine, no colour jitter or flips), or
  exactly as training sees them (``full``). Every box is outlined in its class colour with its class
  name written; every tile has a caption with the image id (and, for ``raw``, the file name);
* label statistics in the manner of YOLOv5's ``labels.jpg``: instances per class, box width/height
  and centre distributions relative to the image size, boxes per image.

Modules, one concern each:

- ``drawing``: class colours, the near-square grid layout, tiles with outlined and named boxes, grid
  encoding (pure; ``yolomodel.infer`` draws its detections with the same colours);
- ``statistics``: label statistics and their text summary (pure);
- ``figure``: the statistics figure (matplotlib, imported only when a figure is made);
- ``readers``: which samples a grid shows and reading them, or the label rows, from the shards
  (the only module that touches files; MindSpore is imported only when it reads);
- ``metrics_plots``: an evaluation's confusion matrix (OpenCV) and PR / F1 / P / R curves (matplotlib);
- ``batch_pictures``: whole train and eval batches as a grid (``train_batch0.jpg``, ``val_batch0_*.jpg``).

Everything is deterministic: the same arguments give the same bytes. The names below are the
package's interface; importing it loads neither matplotlib nor MindSpore.
"""
from .drawing import (CAPTION_BACKGROUND_RGB, CAPTION_TEXT_RGB, GRID_BACKGROUND_RGB, GRID_IMAGE_SUFFIXES,
                      PALETTE_RGB, TILE_GAP, GridGeometry, Sample, box_caption, box_pixel_extent, caption_height,
                      class_colour, encode_grid, fit_into_tile, fit_text, font_scale, grid_geometry,
                      near_square_layout, outline_thickness, render_grid, render_tile, text_colour_on)
from .batch_pictures import eval_batch_grids, train_batch_grid
from .figure import check_figure_suffix, encode_figure, label_figure
from .metrics_plots import (confidence_curve_figure, confusion_matrix_image, normalised_by_true_class,
                            pr_curve_figure)
from .readers import (STAGES, SampleSpan, batch_boxes_to_labels, dataset_label_statistics, first_rows,
                      pipeline_samples, raw_samples, read_label_rows, read_samples, sample_span, span_note,
                      stage_augment)
from .statistics import LabelStatistics, format_statistics, label_statistics

__all__ = [
    "CAPTION_BACKGROUND_RGB", "CAPTION_TEXT_RGB", "GRID_BACKGROUND_RGB", "GRID_IMAGE_SUFFIXES", "PALETTE_RGB",
    "TILE_GAP", "GridGeometry", "Sample", "box_caption", "box_pixel_extent", "caption_height", "class_colour",
    "encode_grid", "fit_into_tile", "fit_text", "font_scale", "grid_geometry", "near_square_layout",
    "outline_thickness", "render_grid", "render_tile", "text_colour_on",
    "check_figure_suffix", "encode_figure", "label_figure",
    "eval_batch_grids", "train_batch_grid",
    "confidence_curve_figure", "confusion_matrix_image", "normalised_by_true_class", "pr_curve_figure",
    "STAGES", "SampleSpan", "batch_boxes_to_labels", "dataset_label_statistics", "first_rows",
    "pipeline_samples", "raw_samples", "read_label_rows", "read_samples", "sample_span", "span_note",
    "stage_augment",
    "LabelStatistics", "format_statistics", "label_statistics",
]
