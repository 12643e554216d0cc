"""Detections -> COCO results json (original image and category ids) -> pycocotools bbox scores.

The eval pipeline letterboxes every image into the network's input (``yolodata.augment.letterbox``,
no upscaling); the kept boxes of ``yolomodel.nms`` are in those input pixels. Here they go back to the
original image's pixels with the batch's ``scale`` and ``pad`` (original = (letterboxed - pad) /
scale, the exact inverse of the letterbox), are clipped to the original image, and become COCO result
entries ``{image_id, category_id, bbox: [x, y, w, h], score}`` with the original COCO ids (class index
-> category id from the manifest's ``categories``). Padding rows of the last batch (image_id -1) are
skipped.

Scoring uses pycocotools' COCOeval ("bbox") against the ground-truth json (the converter's
``annotations.json`` beside the shards) and returns its 12 summary numbers with the 12 standard
summary lines. pycocotools' own chatter is captured, not printed. Cases pycocotools handles badly are
handled here first: no detections at all (its ``loadRes`` fails on an empty list; the scores are
computed with an empty result set instead), a file that is not a results json, results naming images
or categories the ground truth does not have, a missing or unreadable ground-truth file, and a ground
truth whose ids are not integers (some exporters write image ids as strings, ``"2299"``: the message
names them as written, since the results would otherwise be blamed for not matching them).
"""
from __future__ import annotations

import contextlib
import io
import json
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np

from yolodata.augment.letterbox import to_original_pixels
from yolodata.fileio import write_file_atomic

BBOX_DECIMALS = 3    # 0.001 px: far below any annotation's precision, keeps the json small
SCORE_DECIMALS = 5

# The 12 COCO summary numbers in COCOeval.summarize's order: (AP or AR, IoU, area, maxDets).
SUMMARY_ROWS = (
    ("AP", "0.50:0.95", "all", 100), ("AP", "0.50", "all", 100), ("AP", "0.75", "all", 100),
    ("AP", "0.50:0.95", "small", 100), ("AP", "0.50:0.95", "medium", 100), ("AP", "0.50:0.95", "large", 100),
    ("AR", "0.50:0.95", "all", 1), ("AR", "0.50:0.95", "all", 10), ("AR", "0.50:0.95", "all", 100),
    ("AR", "0.50:0.95", "small", 100), ("AR", "0.50:0.95", "medium", 100), ("AR", "0.50:0.95", "large", 100),
)
RESULT_KEYS = ("image_id", "category_id", "bbox", "score")


class CocoEvalError(ValueError):
    """A ground-truth or results file that cannot be scored; the message names the file and the fix."""


@dataclass(frozen=True)
class CocoScores:
    """The 12 COCOeval summary numbers (-1 where the ground truth has nothing to measure) and the 12
    standard lines printing them."""

    stats: np.ndarray
    text: str
    # the COCOeval that gave ``stats`` (``score_detections(..., keep_evaluator=True)``): per-class numbers
    # (``yolomodel.metrics.class_metrics``) are read from it, so they come from the same evaluation
    evaluator: object = field(default=None, compare=False, repr=False)

    @property
    def map50_95(self) -> float:
        return float(self.stats[0])

    @property
    def map50(self) -> float:
        return float(self.stats[1])


def format_summary(stats: Sequence[float]) -> str:
    """The 12 summary lines of ``stats`` as cocoapi printed them in its reference output (and as the
    reference README shows them): "Average Precision (AP)" / "Average Recall    (AR)". Current
    pycocotools releases pad the title one space wider; the numbers are the same."""
    stats = [float(v) for v in stats]
    if len(stats) != len(SUMMARY_ROWS):
        raise ValueError(f"expected the {len(SUMMARY_ROWS)} COCO summary numbers, got {len(stats)}")
    lines = []
    for (kind, iou, area, max_dets), value in zip(SUMMARY_ROWS, stats):
        title = "Average Precision" if kind == "AP" else "Average Recall"
        lines.append(f" {title:<17} ({kind}) @[ IoU={iou:<9} | area={area:>6s} | maxDets={max_dets:>3d} ] "
                     f"= {value:0.3f}")
    return "\n".join(lines)


# ---------------------------------------------------------------------------------------------
# Detections -> results entries
# ---------------------------------------------------------------------------------------------

def image_results(detections: np.ndarray, image_id: int, category_ids: np.ndarray) -> list[dict]:
    """COCO results entries of one image from its (M, 6) detections in ORIGINAL pixels."""
    detections = np.asarray(detections, np.float32).reshape(-1, 6)
    classes = detections[:, 5].astype(np.int64)
    if len(classes) and (classes.min() < 0 or classes.max() >= len(category_ids)):
        raise ValueError(f"a detection has class index {int(classes.max())} but the dataset has "
                         f"{len(category_ids)} categories: the network and the dataset disagree on "
                         f"the class count")
    xywh = np.empty((len(detections), 4), np.float64)
    xywh[:, 0:2] = detections[:, 0:2]
    xywh[:, 2:4] = detections[:, 2:4].astype(np.float64) - detections[:, 0:2]
    xywh = np.round(xywh, BBOX_DECIMALS).tolist()
    scores = np.round(detections[:, 4].astype(np.float64), SCORE_DECIMALS).tolist()
    category = category_ids[classes].tolist()
    image_id = int(image_id)
    return [{"image_id": image_id, "category_id": category[k], "bbox": xywh[k], "score": scores[k]}
            for k in range(len(detections))]


def batch_results(detections: Sequence[np.ndarray], image_id, orig_hw, scale, pad,
                  category_ids: np.ndarray) -> list[dict]:
    """COCO results entries of one eval batch.

    ``detections``: per image float32 (M, 6) in letterboxed input pixels (``non_max_suppression``);
    the other arguments are the eval batch's columns (``image_id`` (B,), ``orig_hw`` (B, 2), ``scale``
    (B,), ``pad`` (B, 2)). Rows with image_id -1 (padding of the last batch) are skipped.
    """
    image_id = np.asarray(image_id).reshape(-1)
    orig_hw = np.asarray(orig_hw).reshape(-1, 2)
    scale = np.asarray(scale).reshape(-1)
    pad = np.asarray(pad).reshape(-1, 2)
    if not len(detections) == len(image_id) == len(orig_hw) == len(scale) == len(pad):
        raise ValueError(f"one detection array per image needed: {len(detections)} detection arrays for "
                         f"{len(image_id)} image ids, {len(orig_hw)} sizes, {len(scale)} scales, {len(pad)} pads")
    results = []
    for k in range(len(image_id)):
        if image_id[k] == -1:
            continue
        original = to_original_pixels(detections[k], scale[k], pad[k], orig_hw[k])
        results.extend(image_results(original, image_id[k], category_ids))
    return results


def write_results_json(results: list, path: str | os.PathLike) -> Path:
    """Write ``results`` as JSON to ``path`` atomically (a temporary file beside it, then a rename)."""
    return write_file_atomic(path, json.dumps(results, separators=(",", ":")).encode("utf-8"))


# ---------------------------------------------------------------------------------------------
# Reading and checking the two files
# ---------------------------------------------------------------------------------------------

def _read_json(path: Path, what: str):
    if not path.is_file():
        raise CocoEvalError(f"{what} {path} does not exist" if not path.exists() else f"{what} {path} is not a file")
    try:
        with open(path, encoding="utf-8") as handle:
            return json.load(handle)
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise CocoEvalError(f"{what} {path} cannot be read as JSON: {error}") from error


def load_ground_truth(ann_file: str | os.PathLike):
    """pycocotools ``COCO`` of a COCO instances json, with clear errors for a missing or bad file.

    Annotations without ``area`` get their box area and those without ``iscrowd`` get 0 (COCOeval
    needs both; custom exports sometimes omit them). The file itself is not changed.
    """
    from pycocotools.coco import COCO

    path = Path(ann_file)
    document = _read_json(path, "ground-truth file")
    if not isinstance(document, dict) or not all(isinstance(document.get(k), list)
                                                 for k in ("images", "annotations", "categories")):
        raise CocoEvalError(f"ground-truth file {path} is not a COCO instances json: it needs 'images', "
                            f"'annotations' and 'categories' lists")
    if not document["images"]:
        raise CocoEvalError(f"ground-truth file {path} lists no images")
    check_ground_truth_ids(document, path)
    annotations = []
    for index, annotation in enumerate(document["annotations"]):
        bbox = annotation.get("bbox") if isinstance(annotation, dict) else None
        if not (isinstance(bbox, list) and len(bbox) == 4):
            raise CocoEvalError(f"ground-truth file {path}: annotation #{index} has no [x, y, w, h] bbox")
        annotation = dict(annotation)
        annotation.setdefault("area", float(bbox[2]) * float(bbox[3]))
        annotation.setdefault("iscrowd", 0)
        annotations.append(annotation)
    ground_truth = COCO()
    ground_truth.dataset = dict(document, annotations=annotations)
    with contextlib.redirect_stdout(io.StringIO()):
        ground_truth.createIndex()
    return ground_truth


def _is_integer(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


ID_RULE = "COCO ids are integers, and a results file's image_id and category_id must equal them"


def _non_integer_ids(records: list, field: str) -> list[tuple[int, object]]:
    """(index, value as written) of the records whose ``field`` is not an integer."""
    return [(index, record.get(field) if isinstance(record, dict) else None)
            for index, record in enumerate(records)
            if not (isinstance(record, dict) and _is_integer(record.get(field)))]


def _id_fix(values) -> str:
    """What to do about non-integer ids; digit strings get the concrete fix."""
    example = next((v for v in values if isinstance(v, str) and v.strip().isdigit()), None)
    if example is not None:
        return f"write the ids as JSON numbers ({int(example)}, not {json.dumps(example)})"
    return "give every image, annotation and category an integer id"


def check_ground_truth_ids(document: dict, path) -> None:
    """CocoEvalError naming, as written, the ids of a ground-truth document that are not integers.

    A ground truth with string ids (``"2299"``) would make every result look foreign: the message
    names the ground truth's ids, not the results.
    """
    images = document["images"]
    bad = _non_integer_ids(images, "id")
    if bad:
        shown = ", ".join(f"image {json.dumps(value)} ({images[index].get('file_name', 'no file_name')})"
                          if isinstance(images[index], dict) else f"images[{index}] (not an object)"
                          for index, value in bad[:3])
        raise CocoEvalError(f"ground-truth file {path}: {len(bad)} of its {len(images)} images have an id that is "
                            f"not an integer (first: {shown}); {ID_RULE}: {_id_fix([v for _, v in bad])}")
    for key, kind, field in (("categories", "category", "id"), ("annotations", "annotation", "image_id"),
                             ("annotations", "annotation", "category_id")):
        bad = _non_integer_ids(document[key], field)
        if bad:
            index, value = bad[0]
            first = (f"{kind} #{index} has {field} {json.dumps(value)}" if isinstance(document[key][index], dict)
                     else f"{kind} #{index} is not an object")
            raise CocoEvalError(f"ground-truth file {path}: {len(bad)} of its {len(document[key])} {key} have a "
                                f"{field} that is not an integer (first: {first}); {ID_RULE}: "
                                f"{_id_fix([v for _, v in bad])}")


def _is_number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def entry_problem(entry) -> str | None:
    """What is wrong with one results entry, or None when it is a valid bbox result."""
    if not isinstance(entry, dict):
        return f"is a {type(entry).__name__}, not an object"
    missing = [key for key in RESULT_KEYS if key not in entry]
    if missing:
        return f"lacks {missing}"
    if not _is_integer(entry["image_id"]):
        return f"has image_id {entry['image_id']!r} (must be an integer)"
    if not _is_integer(entry["category_id"]):
        return f"has category_id {entry['category_id']!r} (must be an integer)"
    bbox = entry["bbox"]
    if not (isinstance(bbox, list) and len(bbox) == 4 and all(_is_number(v) for v in bbox)):
        return f"has bbox {bbox!r} (must be [x, y, width, height], four finite numbers)"
    if bbox[2] < 0 or bbox[3] < 0:
        return f"has bbox {bbox!r} with a negative width or height (bbox is [x, y, width, height])"
    if not _is_number(entry["score"]):
        return f"has score {entry['score']!r} (must be a finite number)"
    return None


def check_results(results, ground_truth, source: str) -> list:
    """``results`` (parsed JSON) if it is a valid bbox results list for ``ground_truth``, else CocoEvalError.

    ``source`` names where the results came from, for the messages.
    """
    if isinstance(results, dict):
        hint = (" (it looks like a ground-truth instances json)" if "annotations" in results
                else "")
        raise CocoEvalError(f"{source} is not a COCO results json: it holds a JSON object{hint}; a results "
                            f"file is a JSON list of {{image_id, category_id, bbox, score}} objects")
    if not isinstance(results, list):
        raise CocoEvalError(f"{source} is not a COCO results json: it holds a JSON {type(results).__name__}, "
                            f"not a list of {{image_id, category_id, bbox, score}} objects")
    for index, entry in enumerate(results):
        problem = entry_problem(entry)
        if problem:
            raise CocoEvalError(f"{source} is not a COCO bbox results json: entry #{index} {problem}")
    unknown_images = sorted({entry["image_id"] for entry in results} - set(ground_truth.getImgIds()))
    if unknown_images:
        raise CocoEvalError(f"{source} names {len(unknown_images)} image id(s) that the ground truth does not "
                            f"have (first: {unknown_images[:5]}): the results belong to another dataset")
    unknown_categories = sorted({entry["category_id"] for entry in results} - set(ground_truth.getCatIds()))
    if unknown_categories:
        raise CocoEvalError(f"{source} names category id(s) {unknown_categories[:10]} that the ground truth "
                            f"does not have: the results use another category numbering")
    return results


def load_results_file(results_file: str | os.PathLike, ground_truth) -> list:
    """The checked entries of a COCO results json file (see ``check_results``)."""
    path = Path(results_file)
    return check_results(_read_json(path, "results file"), ground_truth, f"results file {path}")


# ---------------------------------------------------------------------------------------------
# Scoring
# ---------------------------------------------------------------------------------------------

def _empty_results(ground_truth):
    """A pycocotools result set with no detections (``loadRes`` cannot build one)."""
    from pycocotools.coco import COCO

    empty = COCO()
    empty.dataset = {"images": list(ground_truth.dataset["images"]),
                     "categories": list(ground_truth.dataset["categories"]), "annotations": []}
    empty.createIndex()
    return empty


def score_detections(ground_truth, results: list, *, keep_evaluator: bool = False) -> CocoScores:
    """COCOeval bbox scores of checked ``results`` entries against a pycocotools ``COCO``; with
    ``keep_evaluator`` the scores carry the COCOeval itself (for the per-class numbers)."""
    from pycocotools.cocoeval import COCOeval

    with contextlib.redirect_stdout(io.StringIO()):
        # loadRes adds keys to the entries it gets: give it copies
        detections = (ground_truth.loadRes([dict(entry) for entry in results]) if results
                      else _empty_results(ground_truth))
        evaluator = COCOeval(ground_truth, detections, "bbox")
        evaluator.evaluate()
        evaluator.accumulate()
        evaluator.summarize()
    stats = np.asarray(evaluator.stats, np.float64)
    return CocoScores(stats=stats, text=format_summary(stats), evaluator=evaluator if keep_evaluator else None)


def score_results(ann_file: str | os.PathLike, results: str | os.PathLike | Iterable[dict], *,
                  keep_evaluator: bool = False) -> CocoScores:
    """Score ``results`` (a results json path, or a list of entries) against the ground truth ``ann_file``."""
    ground_truth = load_ground_truth(ann_file)
    if isinstance(results, (str, os.PathLike)):
        entries = load_results_file(results, ground_truth)
    else:
        entries = check_results(list(results), ground_truth, "the detections")
    return score_detections(ground_truth, entries, keep_evaluator=keep_evaluator)
