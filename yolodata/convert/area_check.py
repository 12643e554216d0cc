"""Ground-truth ``area`` values that contradict their boxes, counted for one warning.

COCO evaluation sorts ground-truth objects into small, medium and large by the annotation's ``area``
(the pixel area of its segmentation, which never exceeds its box), not by its box. Some exporters
write something else: sahi's sliced exports give every object the whole image's area (so every
object is "large" and APs/APm read -1), others write 0 or leave the key out (pycocotools' evaluation
then fails). The rows use the boxes and are not affected; ``annotations.json`` keeps the json as
given, so the converter counts these annotations and warns once.
"""
from __future__ import annotations

import dataclasses
import math

import numpy as np

from .problems import ConversionWarning, id_as_written

# A mask's pixel count may exceed w*h of its (tight, fractional) box a little through rasterisation.
AREA_SLACK_RATIO = 0.01
AREA_SLACK_PIXELS = 1.0
WARNING_KIND = "area_contradicts_box"


@dataclasses.dataclass(frozen=True)
class AreaFindings:
    """Counts of annotations whose ``area`` contradicts their box, and one of them as an example."""

    num_checked: int
    num_larger: int           # area larger than the box's width x height (beyond the slack)
    num_not_positive: int     # area zero or negative for a box that is not empty
    num_missing: int          # no area, or not a finite number
    example: str | None = None

    @property
    def count(self) -> int:
        return self.num_larger + self.num_not_positive + self.num_missing

    def warning(self) -> ConversionWarning | None:
        """The warning the summary and manifest.json give (None when every area fits its box)."""
        if not self.count:
            return None
        parts = [f"{n} {what}" for n, what in ((self.num_larger, "larger than the box's width x height"),
                                                (self.num_not_positive, "zero or negative"),
                                                (self.num_missing, "missing or not a number")) if n]
        fails = ", and pycocotools' evaluation fails where it is missing" if self.num_missing else ""
        message = (f"{self.count} of {self.num_checked} annotations have an 'area' that contradicts their box "
                   f"({', '.join(parts)}; e.g. {self.example}): COCO evaluation sorts objects into small, medium "
                   f"and large by 'area', so APs/APm/APl against annotations.json will be wrong{fails}; the rows "
                   f"use the boxes and are not affected")
        return ConversionWarning(WARNING_KIND, self.count, message)


def _number_or_nan(value) -> float:
    if type(value) not in (int, float):  # JSON numbers only (bool, str and None are not areas)
        return math.nan
    try:
        return float(value)
    except OverflowError:
        return math.nan


def area_values(annotations: list) -> np.ndarray:
    """float64 (A,): each annotation's ``area``, NaN where it is missing or not a finite number."""
    try:
        areas = np.fromiter((value if type(value := ann.get("area")) is float or type(value) is int else math.nan
                             for ann in annotations), np.float64, len(annotations))
    except OverflowError:  # an integer beyond float range
        areas = np.array([_number_or_nan(ann.get("area")) for ann in annotations], np.float64)
    areas[~np.isfinite(areas)] = np.nan
    return areas


def box_areas(annotations: list) -> np.ndarray:
    """float64 (A,): width x height of each checked annotation's bbox (0 for an empty box)."""
    def area(bbox) -> float:
        width, height = float(bbox[2]), float(bbox[3])
        return width * height if width > 0 and height > 0 else 0.0

    try:
        return np.fromiter((bbox[2] * bbox[3] if bbox[2] > 0 and bbox[3] > 0 else 0.0
                            for bbox in (ann["bbox"] for ann in annotations)), np.float64, len(annotations))
    except OverflowError:  # integers whose product is beyond float range
        return np.array([area(ann["bbox"]) for ann in annotations], np.float64)


def check_areas(annotations: list) -> AreaFindings:
    """Count the checked annotations (bbox: 4 finite numbers) whose ``area`` contradicts the bbox."""
    if not annotations:
        return AreaFindings(0, 0, 0, 0)
    areas, boxes = area_values(annotations), box_areas(annotations)
    missing = np.isnan(areas)
    with np.errstate(invalid="ignore"):
        larger = areas > boxes * (1.0 + AREA_SLACK_RATIO) + AREA_SLACK_PIXELS
        not_positive = (areas <= 0) & (boxes > 0)
    bad = missing | larger | not_positive
    example = None
    if bad.any():
        ann = annotations[int(np.argmax(bad))]
        area = f"area {id_as_written(ann['area'])}" if "area" in ann else "no area"
        example = (f"annotation {id_as_written(ann.get('id'))} of image {id_as_written(ann.get('image_id'))}: "
                   f"{area} for a {float(ann['bbox'][2]):g} x {float(ann['bbox'][3]):g} box")
    return AreaFindings(len(annotations), int(larger.sum()), int(not_positive.sum()), int(missing.sum()), example)
