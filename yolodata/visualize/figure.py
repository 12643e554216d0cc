"""The label statistics figure (as YOLOv5's ``labels.jpg``), drawn with matplotlib's object API (no pyplot
state), and its encoding. matplotlib is imported only when a figure is made."""
from __future__ import annotations

import io
from typing import Sequence

import numpy as np

from .drawing import class_colour
from .statistics import LabelStatistics


def label_figure(stats: LabelStatistics, class_names: Sequence[str]):
    """A matplotlib Figure (Agg canvas, no pyplot state) with four panels as YOLOv5's labels.jpg:
    instances per class, box centres (heat map), box width/height (2-D histogram), boxes per image."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.colors import PowerNorm
    from matplotlib.figure import Figure
    from matplotlib.ticker import MaxNLocator

    figure = Figure(figsize=(10, 9), dpi=100)
    FigureCanvasAgg(figure)
    (bars, centres), (sizes, per_image) = figure.subplots(2, 2)
    num_classes = len(stats.boxes_per_class)
    colours = [tuple(v / 255 for v in class_colour(i)) for i in range(num_classes)]
    bars.bar(np.arange(num_classes), stats.boxes_per_class, color=colours, edgecolor="black", linewidth=0.3)
    bars.set_ylabel("instances")
    bars.set_title("instances per class")
    if num_classes <= 30:
        bars.set_xticks(np.arange(num_classes))
        bars.set_xticklabels(list(class_names), rotation=90 if num_classes > 6 else 0, fontsize=8)
    else:
        bars.set_xlabel("class index")

    # square-root colour scale: a few dense cells would otherwise hide the rest
    histogram_kwargs = dict(bins=50, range=[[0, 1], [0, 1]], cmap="Blues", norm=PowerNorm(gamma=0.5))
    centres.hist2d(stats.relative_centres[:, 0], stats.relative_centres[:, 1], **histogram_kwargs)
    centres.set_xlim(0, 1)
    centres.set_ylim(1, 0)  # image rows grow downwards
    centres.set_xlabel("centre x / image width")
    centres.set_ylabel("centre y / image height")
    centres.set_title("box centres")
    centres.set_aspect("equal")

    sizes.hist2d(stats.relative_sizes[:, 0], stats.relative_sizes[:, 1], **histogram_kwargs)
    sizes.set_xlabel("width / image width")
    sizes.set_ylabel("height / image height")
    sizes.set_title("box sizes")
    sizes.set_aspect("equal")

    most = int(stats.boxes_per_image.max()) if stats.num_images else 0
    per_image.hist(stats.boxes_per_image, bins=np.arange(most + 2) - 0.5, color="#4878a8", edgecolor="white")
    per_image.set_xlabel("boxes in the image")
    per_image.set_ylabel("images")
    per_image.set_title("boxes per image")
    for axis in (bars.yaxis, per_image.xaxis, per_image.yaxis):
        axis.set_major_locator(MaxNLocator(integer=True))

    figure.suptitle(f"{stats.num_images} images, {stats.num_boxes} boxes ({stats.num_crowd_boxes} crowd), "
                    f"{stats.num_background_images} images without boxes")
    figure.tight_layout()
    return figure


def check_figure_suffix(suffix: str) -> str:
    """The matplotlib format for a file name ending in ``suffix``; ValueError listing the choices."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    formats = FigureCanvasAgg.filetypes
    fmt = suffix.lower().lstrip(".")
    if fmt not in formats:
        raise ValueError(f"the statistics figure can be written as {', '.join('.' + f for f in sorted(formats))}; "
                         f"got a file name ending in {suffix!r}")
    return fmt


def encode_figure(figure, suffix: str) -> bytes:
    """``figure`` rendered in the format its file name suffix names (.jpg, .png, .pdf, .svg ...)."""
    fmt = check_figure_suffix(suffix)
    buffer = io.BytesIO()
    # no metadata: the same statistics give the same bytes
    metadata = {"png": {"Software": None}, "pdf": {"CreationDate": None}, "svg": {"Date": None}}.get(fmt)
    figure.savefig(buffer, format=fmt, metadata=metadata)
    return buffer.getvalue()
