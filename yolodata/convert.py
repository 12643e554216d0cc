"""COCO instances json + image folder -> MindRecord shards, ``manifest.json`` and ``annotations.json``.

Stages
------
1. Plan: parse and check the json, map category ids to contiguous indices in id order, check every
   image and annotation record, the file names and that the files exist, and build every image's
   label array (boxes clipped to the image, empty ones dropped and counted; one numpy pass for all
   images). Problems are collected per image; a json that is not COCO at all stops here, and with
   ``strict`` so does any problem, before anything is written.
2. Images: threads read and fully decode every image (``image_io.prepare_source_image``: complete,
   decodable, the json's size in the frame the json describes) while the calling thread writes the
   finished rows, in image-id order, to MindRecord (``mindrecord_shards``: shard by shard, a few rows
   per call, so memory stays bounded for any ``shard_num``). Results are consumed in plan order, so
   rows, manifest and shard files are the same for any number of threads.
3. Finish: ``manifest.json`` and ``annotations.json`` (the COCO json of exactly the converted images)
   are written, then the temporary folder beside the output replaces the output by rename. A failure,
   Ctrl-C or a full disk removes the temporary folder and leaves an existing output untouched.

Stages 1 and 2 overlap: the json is read member by member (``json_members``), and the decode threads
start on the images as soon as the ``images`` list is parsed and checked, while the calling thread
still parses the (usually much larger) ``annotations`` list and runs the annotation checks. Images
that the plan leaves out are skipped by the threads from then on and never written; nothing is written
before the plan is complete. During the plan the interpreter's GIL switch interval is shortened so
that the decode threads get the GIL back promptly between json elements (restored afterwards).

Shards: with ``shard_num`` N, the plan's images are split into N contiguous runs of nearly equal
length (run k: plan positions k*E//N .. (k+1)*E//N - 1 of E images) and each run's converted rows
form shard k, so the layout does not depend on which images fail to decode or on timing.
"""
from __future__ import annotations

import bisect
import collections
import contextlib
import dataclasses
import functools
import hashlib
import json
import math
import os
import re
import stat
import sys
import time
from pathlib import Path
from typing import Callable

import numpy as np

from . import boxes as boxes_lib
from . import image_io
from .json_members import NotAnObject, decode_json_bytes, iter_object_members
from .checks import resolve_num_workers
from .fileio import AtomicOutput, write_file_durable
from .manifest import Category, Manifest, ShardEntry, category_count_keys, compute_dataset_id
from .mindrecord_shards import ShardSetWriter
from .ordered_prefetch import OrderedPrefetch
from .schema import ANNOTATIONS_NAME, MANIFEST_NAME, NUM_LABEL_COLUMNS, SCHEMA_VERSION, placeholder_arrays

CONVERTER_VERSION = "1.1.0"

# Problems that are not errors: requested by the user, never stop a --strict run.
NON_ERROR_REASONS = frozenset({"empty_dropped"})

INT64_MIN, INT64_MAX = -(2 ** 63), 2 ** 63 - 1
IMAGES_PER_TASK = 8                  # images a decode thread takes at once
IN_FLIGHT_BYTES = 64 * 2 ** 20       # image file bytes decoded ahead of the writer, at most (plus one task)
GIL_SWITCH_INTERVAL = 1e-4           # seconds, while the plan runs next to the decode threads
LABEL_CHUNK_IMAGES = 2 ** 20         # images per numpy pass in labels_for_images (owner index exact in float32)
MAX_PROBLEMS_IN_MESSAGE = 20
COCO_KEYS = ("images", "annotations", "categories")


class ConversionError(Exception):
    """A user-facing failure: bad arguments, a json that is not COCO, or a --strict stop."""


@dataclasses.dataclass(frozen=True)
class Problem:
    """Why an image (or an annotation that belongs to no image) was not converted."""

    reason: str
    message: str
    image_id: int | None = None
    file_name: str | None = None
    annotation_id: int | None = None
    about: str = "image"          # "image": an image is skipped; "annotation": an annotation of no image

    @property
    def is_error(self) -> bool:
        return self.reason not in NON_ERROR_REASONS

    def describe(self) -> str:
        if self.about == "annotation":
            name = "annotation" if self.annotation_id is None else f"annotation {self.annotation_id}"
            return f"{name} (image_id {self.image_id}): {self.message}"
        name = f" ({self.file_name})" if self.file_name is not None else ""
        return f"image {self.image_id}{name}: {self.message}"

    def manifest_entry(self) -> dict:
        entry = {"image_id": self.image_id, "file_name": self.file_name, "reason": self.reason,
                 "message": self.message}
        if self.annotation_id is not None:
            entry["annotation_id"] = self.annotation_id
        return entry


@dataclasses.dataclass(frozen=True)
class ImageCandidate:
    """An image record of the json that passed the image checks and whose file exists."""

    image_id: int
    file_name: str
    height: int
    width: int
    record: dict                  # the json's image record, copied unchanged into annotations.json
    path: str                     # --image_dir joined with file_name
    size: int                     # file size in bytes (bounds the memory of decoding ahead)


@dataclasses.dataclass(frozen=True)
class ImageEntry:
    """One image of the plan: its record and its checked annotations."""

    image_id: int
    file_name: str
    height: int
    width: int
    record: dict                  # the json's image record, copied unchanged into annotations.json
    annotations: list             # the json's annotation records of this image, checked


@dataclasses.dataclass
class ImageChecks:
    """What the ``images`` list alone decides (before the annotations are read)."""

    candidates: list              # ImageCandidate in image-id order: the images worth decoding
    problems: list                # Problems of bad records and duplicate ids
    missing: dict                 # image id -> Problem, for a valid record whose file does not exist
    records_by_id: dict           # image id -> [records] (more than one for a duplicate id)
    bad_ids: set                  # ids none of whose records is converted
    known_ids: set                # ids an annotation may name without being an unknown_image


@dataclasses.dataclass
class Plan:
    """Everything decided from the json before any row is written."""

    categories: list
    class_of_category: dict       # COCO category id -> contiguous index
    entries: list                 # ImageEntry in image-id order: the images to convert
    labels: list                  # (label array float32 (N, 6), boxes clipped, boxes dropped) per entry
    problems: list                # image-level Problems (skipped images)
    annotation_problems: list     # Problems of annotations that belong to no image of the json
    document: dict                # the parsed json (for annotations.json)
    annotation_bytes: bytes       # the file as read (copied as annotations.json when nothing is left out)
    annotation_sha256: str


@dataclasses.dataclass
class ConversionSummary:
    """What a conversion did; ``format_table()`` is the table the tool prints."""

    output_dir: str
    num_images: int
    num_boxes: int
    num_background: int
    boxes_clipped: int
    boxes_dropped: int
    skipped: list                 # Problems (images not converted)
    skipped_annotations: list     # Problems (annotations naming no image)
    reencoded: list               # {"image_id", "file_name", "note"}
    shards: list                  # {"file", "num_rows"}
    bytes_written: int            # apparent size of the output files
    disk_bytes: int               # space they use (MindRecord reserves header and page space sparsely)
    seconds: float                # the whole call
    convert_seconds: float        # images: first image read (during the json parse) to last row written
    num_workers: int
    dataset_id: str

    @property
    def skipped_by_reason(self) -> dict:
        return dict(sorted(collections.Counter(p.reason for p in self.skipped + self.skipped_annotations).items()))

    @property
    def images_per_second(self) -> float:
        """Images converted per second of the image stage (decode + write)."""
        return self.num_images / self.convert_seconds if self.convert_seconds > 0 else float("inf")

    def format_table(self, max_listed: int = 50) -> str:
        rows = [("output", self.output_dir),
                ("images", f"{self.num_images} ({self.num_background} without boxes)"),
                ("boxes", f"{self.num_boxes} ({self.boxes_clipped} clipped to the image, "
                          f"{self.boxes_dropped} dropped: empty after clipping)")]
        skipped = self.skipped_by_reason
        rows.append(("skipped", ", ".join(f"{reason}: {n}" for reason, n in skipped.items()) or "none"))
        if self.reencoded:
            rows.append(("re-encoded", f"{len(self.reencoded)} (EXIF frame, see manifest.json)"))
        rows.append(("shards", ", ".join(f"{s['file']} ({s['num_rows']} rows)" for s in self.shards)))
        rows.append(("bytes", f"{self.bytes_written:,} ({self.disk_bytes:,} on disk)"))
        rows.append(("time", f"{self.seconds:.2f} s in all; images {self.convert_seconds:.2f} s "
                             f"({self.images_per_second:.0f} images/s, {self.num_workers} decode threads)"))
        width = max(len(key) for key, _ in rows)
        lines = [f"{key.ljust(width)}  {value}" for key, value in rows]
        listed = self.skipped + self.skipped_annotations
        for problem in listed[:max_listed]:
            lines.append(f"  skipped {problem.describe()}")
        if len(listed) > max_listed:
            lines.append(f"  ... and {len(listed) - max_listed} more, listed in {MANIFEST_NAME}")
        return "\n".join(lines)


# ----------------------------------------------------------------------------------------------------
# Stage 1: the json
# ----------------------------------------------------------------------------------------------------

def _is_int(value) -> bool:
    return type(value) is int  # JSON integers only: bool and float are rejected


def read_annotation_file(ann_file: str | os.PathLike) -> tuple[bytes, str]:
    """(file bytes, sha256 hex) of the annotation file; ConversionError when it cannot be read."""
    path = Path(ann_file)
    try:
        data = path.read_bytes()
    except OSError as error:
        raise ConversionError(f"cannot read the annotation file {path}: {error.strerror or error}") from error
    return data, hashlib.sha256(data).hexdigest()


def read_coco_document(data: bytes, source: str, on_images: Callable[[list], None] | None = None) -> dict:
    """The parsed COCO json; ConversionError when it is not a COCO instances json.

    ``on_images(images)`` is called as soon as a top-level ``images`` list has been parsed, before the
    rest of the document (the converter starts decoding there). The ``images`` and ``annotations``
    lists are parsed element by element, so other threads get the GIL in between.
    """
    try:
        text = decode_json_bytes(data)
        document = {}
        for key, value in iter_object_members(text, elementwise=frozenset(COCO_KEYS)):
            if key in COCO_KEYS and key in document:
                raise ConversionError(f"{source} is not a COCO instances json: key '{key}' appears twice")
            document[key] = value
            if key == "images" and isinstance(value, list) and on_images is not None:
                on_images(value)
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise ConversionError(f"{source} is not valid JSON: {error}") from error
    except NotAnObject as error:
        raise ConversionError(f"{source} is not a COCO instances json: the top level is a "
                              f"{type(error.value).__name__}, expected an object") from error
    for key in COCO_KEYS:
        if key not in document:
            raise ConversionError(f"{source} is not a COCO instances json: key '{key}' is missing "
                                  f"(found {sorted(document)})")
        if not isinstance(document[key], list):
            raise ConversionError(f"{source} is not a COCO instances json: '{key}' must be a list, "
                                  f"got {type(document[key]).__name__}")
    return document


def parse_categories(categories: list, source: str = "the json") -> list[Category]:
    """Categories sorted by id with contiguous indices (COCO's 1..90 become 0..79; an id 0 is index 0)."""
    seen = {}
    for position, record in enumerate(categories):
        if not isinstance(record, dict):
            raise ConversionError(f"{source}: categories[{position}] must be an object, got {type(record).__name__}")
        cat_id, name = record.get("id"), record.get("name")
        if not _is_int(cat_id) or not INT64_MIN <= cat_id <= INT64_MAX:
            raise ConversionError(f"{source}: categories[{position}] has id {cat_id!r}; expected an integer")
        if not isinstance(name, str):
            raise ConversionError(f"{source}: category {cat_id} has name {name!r}; expected a string")
        if cat_id in seen:
            raise ConversionError(f"{source}: category id {cat_id} appears twice "
                                  f"({seen[cat_id]!r} and {name!r})")
        seen[cat_id] = name
    if not seen:
        raise ConversionError(f"{source}: 'categories' is empty; a detection dataset needs at least one")
    return [Category(index, cat_id, seen[cat_id]) for index, cat_id in enumerate(sorted(seen))]


_WINDOWS_ABSOLUTE = re.compile(r"^([A-Za-z]:)?[\\/]")


def file_name_problem(file_name) -> str | None:
    """Why ``file_name`` cannot be used under --image_dir (None when it is a safe relative path)."""
    if not isinstance(file_name, str) or not file_name.strip():
        return f"file_name {file_name!r} must be a non-empty string"
    if "\x00" in file_name:
        return "file_name contains a NUL character"
    if _WINDOWS_ABSOLUTE.match(file_name):  # also every POSIX absolute path
        return f"file_name {file_name!r} is absolute; it must be relative to --image_dir"
    if ".." in file_name and ".." in re.split(r"[\\/]", file_name):
        return f"file_name {file_name!r} contains '..' and would escape --image_dir"
    return None


def _image_record_problem(record) -> tuple[str, str] | None:
    """(reason, message) when an image record cannot be used, else None."""
    if not isinstance(record, dict):
        return "bad_image_record", f"the image record is a {type(record).__name__}, expected an object"
    for key in ("id", "file_name", "height", "width"):
        if key not in record:
            return "bad_image_record", f"the image record lacks '{key}'"
    if not _is_int(record["id"]) or not INT64_MIN <= record["id"] <= INT64_MAX:
        return "bad_image_record", f"id {record['id']!r} must be an integer that fits int64"
    for key in ("height", "width"):
        if not _is_int(record[key]) or not 0 < record[key] < 2 ** 31:
            return "bad_image_record", f"{key} {record[key]!r} must be a positive integer"
    message = file_name_problem(record["file_name"])
    if message is not None:
        return ("unsafe_file_name" if isinstance(record["file_name"], str) else "bad_image_record"), message
    return None


_NUMBER_TYPES = frozenset({int, float})  # JSON numbers (bool is excluded: its type is bool)


def _is_four_numbers(value) -> bool:
    """Whether ``value`` is a JSON list of exactly 4 numbers (written out: it runs once per annotation)."""
    return (type(value) is list and len(value) == 4 and type(value[0]) in _NUMBER_TYPES
            and type(value[1]) in _NUMBER_TYPES and type(value[2]) in _NUMBER_TYPES and type(value[3]) in _NUMBER_TYPES)


def _annotation_problem(record: dict, class_of_category: dict) -> tuple[str, str] | None:
    """(reason, message) when an annotation record (whose image_id is known) cannot be used, else None."""
    ann_id, category_id, bbox = record.get("id"), record.get("category_id"), record.get("bbox")
    if type(ann_id) is not int:  # _is_int, written out: this runs once per annotation
        return "bad_annotation", f"id {ann_id!r} must be an integer"
    if type(category_id) is not int:
        return "bad_annotation", f"category_id {category_id!r} must be an integer"
    if category_id not in class_of_category:
        return "unknown_category", f"category_id {category_id} is not in 'categories'"
    if not _is_four_numbers(bbox):
        return "bad_annotation", f"bbox {bbox!r} must be a list of 4 numbers [x, y, width, height]"
    try:
        finite = math.isfinite(sum(bbox))
    except OverflowError:  # an integer too large for a float
        finite = False
    if not finite:
        return "bad_annotation", f"bbox {bbox!r} has a number that is not finite"
    iscrowd = record.get("iscrowd", 0)
    if iscrowd not in (0, 1) or type(iscrowd) is float:
        return "bad_annotation", f"iscrowd {iscrowd!r} must be 0 or 1"
    return None


def labels_from_annotations(annotations: list, class_of_category: dict, width: int,
                            height: int) -> tuple[np.ndarray, int, int]:
    """(label array float32 (N, 6), boxes clipped, boxes dropped) for one image's checked annotations.

    COCO boxes are [x, y, w, h] in pixels; they become xyxy, are clipped to the image, and rows of zero
    or negative width or height after clipping are dropped (counted). Crowd boxes are kept, flagged.
    """
    if not annotations:
        return np.zeros((0, NUM_LABEL_COLUMNS), np.float32), 0, 0
    labels = np.empty((len(annotations), NUM_LABEL_COLUMNS), np.float32)
    labels[:, :4] = boxes_lib.xywh_to_xyxy(np.array([a["bbox"] for a in annotations], np.float64))
    labels[:, 4] = [class_of_category[a["category_id"]] for a in annotations]
    labels[:, 5] = [int(a.get("iscrowd", 0)) for a in annotations]
    clipped = boxes_lib.clip_boxes(labels, width, height)
    num_clipped = int(np.any(clipped[:, :4] != labels[:, :4], axis=1).sum())
    kept = boxes_lib.sanitize_boxes(clipped, min_size=0.0, max_aspect_ratio=np.inf)
    return kept, num_clipped, len(clipped) - len(kept)


def _labels_for_chunk(annotation_lists: list, class_of_category: dict, widths: list, heights: list) -> list:
    counts = np.array([len(annotations) for annotations in annotation_lists], np.int64)
    flat = [ann for annotations in annotation_lists for ann in annotations]
    if not flat:
        return [labels_from_annotations([], class_of_category, 0, 0) for _ in annotation_lists]
    owner = np.repeat(np.arange(len(annotation_lists)), counts)
    # one label row per annotation plus its image's position in the chunk: float32 (A, 7)
    labels = np.empty((len(flat), NUM_LABEL_COLUMNS + 1), np.float32)
    labels[:, :4] = boxes_lib.xywh_to_xyxy(np.array([a["bbox"] for a in flat], np.float64))
    labels[:, 4] = [class_of_category[a["category_id"]] for a in flat]
    labels[:, 5] = [int(a.get("iscrowd", 0)) for a in flat]
    labels[:, 6] = owner
    # each row's image size as float64 (A, 1), broadcast against the box columns
    width_of_row = np.asarray(widths, np.float64)[owner][:, None]
    height_of_row = np.asarray(heights, np.float64)[owner][:, None]
    clipped = boxes_lib.clip_boxes(labels, width_of_row, height_of_row)
    changed = np.any(clipped[:, :4] != labels[:, :4], axis=1)
    kept = boxes_lib.sanitize_boxes(clipped, min_size=0.0, max_aspect_ratio=np.inf)
    kept_owner = kept[:, 6].astype(np.int64)
    kept_counts = np.bincount(kept_owner, minlength=len(annotation_lists))
    clipped_counts = np.bincount(owner, weights=changed, minlength=len(annotation_lists)).astype(np.int64)
    pieces = np.split(np.ascontiguousarray(kept[:, :NUM_LABEL_COLUMNS]), np.cumsum(kept_counts)[:-1])
    return [(piece, int(num_clipped), int(count - num_kept))
            for piece, num_clipped, count, num_kept in zip(pieces, clipped_counts, counts, kept_counts)]


def labels_for_images(annotation_lists: list, class_of_category: dict, widths: list, heights: list) -> list:
    """``labels_from_annotations`` for many images in a few numpy passes: the same arrays, bit for bit.

    Returns [(label array float32 (N_i, 6), boxes clipped, boxes dropped)], one per image. Every row is
    computed by the same operations as in the per-image function (clipping and ``sanitize_boxes`` act
    row by row), only on all images' annotations at once.
    """
    out = []
    for start in range(0, len(annotation_lists), LABEL_CHUNK_IMAGES):
        stop = start + LABEL_CHUNK_IMAGES
        out += _labels_for_chunk(annotation_lists[start:stop], class_of_category, widths[start:stop],
                                 heights[start:stop])
    return out


def _problem_order(problem: Problem):
    return (problem.image_id is None, problem.image_id if problem.image_id is not None else 0,
            problem.file_name or "", problem.annotation_id if problem.annotation_id is not None else 0)


def _regular_file_size(path: str) -> int | None:
    """The size of ``path`` when it is (a link to) a regular file, else None."""
    try:
        info = os.stat(path)
    except (OSError, ValueError):
        return None
    return info.st_size if stat.S_ISREG(info.st_mode) else None


def check_images(images: list, image_dir: Path) -> ImageChecks:
    """Check the ``images`` list alone: records, duplicate ids, and that the files exist."""
    problems: list[Problem] = []
    records_by_id: dict[int, list] = collections.defaultdict(list)
    for position, record in enumerate(images):
        found = _image_record_problem(record)
        if found is not None:
            reason, message = found
            image_id = record.get("id") if isinstance(record, dict) and _is_int(record.get("id")) else None
            file_name = record.get("file_name") if isinstance(record, dict) and isinstance(
                record.get("file_name"), str) else None
            problems.append(Problem(reason, f"images[{position}]: {message}", image_id, file_name))
            continue
        records_by_id[record["id"]].append(record)
    bad_ids = set()
    for image_id, records in records_by_id.items():
        if len(records) > 1:
            names = [r["file_name"] for r in records]
            for record in records:
                problems.append(Problem("duplicate_image_id", f"image id {image_id} is used by {len(records)} "
                                        f"images {names}; none of them is converted", image_id,
                                        record["file_name"]))
            bad_ids.add(image_id)
    # an image record that failed its checks but has an id: its annotations are not "unknown image"
    known_ids = set(records_by_id) | {p.image_id for p in problems if p.image_id is not None}
    candidates, missing = [], {}
    root = str(image_dir)
    for image_id in sorted(records_by_id):
        if image_id in bad_ids:
            continue
        record = records_by_id[image_id][0]
        path = os.path.join(root, record["file_name"])  # os.path: pathlib costs ~10 us per image here
        size = _regular_file_size(path)
        if size is None:
            missing[image_id] = Problem("missing_file", f"file not found: {path}", image_id, record["file_name"])
            continue
        candidates.append(ImageCandidate(image_id, record["file_name"], record["height"], record["width"],
                                         record, path, size))
    return ImageChecks(candidates, problems, missing, dict(records_by_id), bad_ids, known_ids)


def plan_conversion(document: dict, checks: ImageChecks, categories: list, *, drop_empty: bool,
                    annotation_bytes: bytes, annotation_sha256: str) -> Plan:
    """Stage 1 after the images: check the annotations, decide the images to convert and their labels."""
    class_of_category = {c.id: c.index for c in categories}
    records_by_id, bad_ids = checks.records_by_id, checks.bad_ids
    annotations_by_image: dict[int, list] = collections.defaultdict(list)
    annotation_problems: list[Problem] = []
    image_failure: dict[int, Problem] = {}
    for position, record in enumerate(document["annotations"]):
        if not isinstance(record, dict):
            annotation_problems.append(Problem("bad_annotation", f"annotations[{position}] is a "
                                               f"{type(record).__name__}, expected an object",
                                               about="annotation"))
            continue
        image_id, ann_id = record.get("image_id"), record.get("id")
        if type(image_id) is not int or image_id not in checks.known_ids:
            annotation_problems.append(Problem(
                "unknown_image", f"annotations[{position}] names image_id {image_id!r}, which is not in "
                                 f"'images'", image_id if _is_int(image_id) else None,
                annotation_id=ann_id if _is_int(ann_id) else None, about="annotation"))
            continue
        if image_id not in records_by_id or image_id in bad_ids:
            continue  # its image is skipped already
        found = _annotation_problem(record, class_of_category)
        if found is not None and image_id not in image_failure:
            reason, message = found
            image_failure[image_id] = Problem(reason, f"annotation {ann_id!r} (annotations[{position}]): {message}",
                                              image_id, records_by_id[image_id][0]["file_name"],
                                              annotation_id=ann_id if _is_int(ann_id) else None)
        annotations_by_image[image_id].append(record)
    problems = list(checks.problems) + list(image_failure.values())
    entries = []
    for image_id in sorted(records_by_id):
        if image_id in bad_ids or image_id in image_failure:
            continue
        if image_id in checks.missing:
            problems.append(checks.missing[image_id])
            continue
        record = records_by_id[image_id][0]
        entries.append(ImageEntry(image_id, record["file_name"], record["height"], record["width"], record,
                                  annotations_by_image.get(image_id, [])))
    labels = labels_for_images([e.annotations for e in entries], class_of_category, [e.width for e in entries],
                               [e.height for e in entries])
    if drop_empty:
        empty = {e.image_id for e, (kept, _, _) in zip(entries, labels) if len(kept) == 0}
        problems += [Problem("empty_dropped", "no boxes (dropped with --drop_empty)", e.image_id, e.file_name)
                     for e in entries if e.image_id in empty]
        labels = [item for e, item in zip(entries, labels) if e.image_id not in empty]
        entries = [e for e in entries if e.image_id not in empty]
    problems.sort(key=_problem_order)
    return Plan(categories, class_of_category, entries, labels, problems, annotation_problems, document,
                annotation_bytes, annotation_sha256)


# ----------------------------------------------------------------------------------------------------
# Stage 2: images -> rows
# ----------------------------------------------------------------------------------------------------

def row_arrays(labels: np.ndarray) -> tuple[int, np.ndarray, np.ndarray, np.ndarray]:
    """(num_boxes, boxes float32 (M, 4), classes int32 (M,), iscrowd int32 (M,)), M = max(num_boxes, 1).

    A background image stores the schema's placeholder row (see yolodata.schema).
    """
    if len(labels) == 0:
        return (0, *placeholder_arrays())
    return (len(labels), np.ascontiguousarray(labels[:, :4], np.float32),
            labels[:, 4].astype(np.int32), labels[:, 5].astype(np.int32))


def read_source(candidate: ImageCandidate) -> bytes | Problem:
    """The bytes of one source image, or a Problem when the file cannot be read.

    Runs in the thread that hands work to the decode threads (see ordered_prefetch): a file read
    releases and re-takes the GIL several times, which the decode threads should not have to do.
    """
    try:
        with open(candidate.path, "rb") as handle:
            return handle.read()
    except FileNotFoundError:
        return Problem("missing_file", f"file not found: {candidate.path}", candidate.image_id, candidate.file_name)
    except OSError as error:
        return Problem("unreadable_file", f"cannot read {candidate.path}: {error.strerror or error}",
                       candidate.image_id, candidate.file_name)


def validate_source(candidate: ImageCandidate, data: bytes | Problem, exif_frame: str):
    """Validate one image fully (runs in a decode thread): complete, decodes, has the json's size.

    Returns (bytes to store, image_io.PreparedImage), or a Problem when the image cannot be converted.
    """
    if isinstance(data, Problem):
        return data
    try:
        prepared = image_io.prepare_source_image(data, (candidate.height, candidate.width), exif_frame)
    except image_io.ImageProblem as problem:
        return Problem(problem.reason, str(problem), candidate.image_id, candidate.file_name)
    return (data if prepared.encoded is None else prepared.encoded), prepared


def shard_starts(num_entries: int, shard_num: int) -> list[int]:
    """Plan position of the first image of each shard: shard k takes positions k*E//N .. (k+1)*E//N - 1."""
    return [k * num_entries // shard_num for k in range(shard_num)]


def shard_of_position(starts: list[int], position: int) -> int:
    """The shard of plan position ``position`` (the last shard starting at or before it)."""
    return bisect.bisect_right(starts, position) - 1


# ----------------------------------------------------------------------------------------------------
# Stage 3: output files, atomically
# ----------------------------------------------------------------------------------------------------

def check_output_target(target: Path) -> None:
    """ConversionError unless ``target`` may be replaced by a conversion: absent, empty, or an earlier output."""
    if target.exists() and not target.is_dir():
        raise ConversionError(f"--output_dir {target} exists and is not a folder")
    if target.is_dir() and any(target.iterdir()) and not (target / MANIFEST_NAME).is_file():
        raise ConversionError(f"--output_dir {target} is a non-empty folder that is not a converter output "
                              f"(no {MANIFEST_NAME}); choose a new or empty folder")


def annotations_document(document: dict, entries: list) -> dict:
    """The COCO json of exactly the converted images (original records and ids, all categories)."""
    out = {key: value for key, value in document.items() if key not in ("images", "annotations")}
    out["images"] = [entry.record for entry in entries]
    out["annotations"] = [ann for entry in entries for ann in entry.annotations]
    return out


def write_annotations(path: Path, plan: Plan, converted: list) -> None:
    """annotations.json: the input file itself when every image and annotation of it was converted,
    else the json re-written with exactly the converted images and their annotations."""
    everything = (len(converted) == len(plan.document["images"])
                  and sum(len(e.annotations) for e in converted) == len(plan.document["annotations"]))
    if everything:
        write_file_durable(path, plan.annotation_bytes)
    else:
        text = json.dumps(annotations_document(plan.document, converted), ensure_ascii=False,
                          separators=(",", ":"))
        write_file_durable(path, text.encode("utf-8"))


def boxes_per_category(categories: list, label_arrays: list) -> dict:
    """{category key: number of stored boxes} (keys from ``category_count_keys``)."""
    counts = np.zeros(len(categories), np.int64)
    for labels in label_arrays:
        if len(labels):
            counts += np.bincount(labels[:, 4].astype(np.int64), minlength=len(categories))
    return {key: int(count) for key, count in zip(category_count_keys(categories), counts)}


def _strict_stop(problems: list, stage: str) -> ConversionError:
    lines = [p.describe() for p in problems[:MAX_PROBLEMS_IN_MESSAGE]]
    more = len(problems) - len(lines)
    tail = f"\n  ... and {more} more" if more > 0 else ""
    return ConversionError(f"--strict: {len(problems)} problem(s) {stage}; nothing was written:\n  "
                           + "\n  ".join(lines) + tail)


class _NoBar:
    """Stands in for tqdm when progress is off."""

    def update(self, n=1):
        pass

    def set_postfix(self, **kwargs):
        pass


@contextlib.contextmanager
def _progress_bar(enabled: bool, total: int):
    if not enabled:
        yield _NoBar()
        return
    from tqdm import tqdm

    with tqdm(total=total, unit="img", desc="converting", dynamic_ncols=True, smoothing=0.1) as bar:
        yield bar


@contextlib.contextmanager
def _writing(output_dir: Path):
    """Report a failure to write the output (full disk, MindRecord error) as a ConversionError."""
    try:
        yield
    except (ConversionError, KeyboardInterrupt):
        raise
    except Exception as error:  # MindRecord raises RuntimeError and its own exception types
        raise ConversionError(f"writing the output failed ({type(error).__name__}: {error}); "
                              f"{output_dir} was left as it was") from error


@dataclasses.dataclass(frozen=True)
class ConvertedImage:
    """What is kept of a written row: its json entry and its stored labels."""

    entry: ImageEntry
    labels: np.ndarray
    boxes_clipped: int
    boxes_dropped: int


def build_manifest(plan: Plan, converted: list, skipped: list, reencoded: list, shards: list,
                   options: dict, ann_file) -> Manifest:
    """The manifest of the converted rows (``Manifest.to_json`` is what manifest.json holds)."""
    boxes_per_row = [len(image.labels) for image in converted]
    return Manifest(
        converter_version=CONVERTER_VERSION,
        schema_version=SCHEMA_VERSION,
        num_images=len(converted),
        num_boxes=int(sum(boxes_per_row)),
        num_background_images=int(sum(1 for n in boxes_per_row if n == 0)),
        num_crowd_boxes=int(sum(int(image.labels[:, 5].sum()) for image in converted)),
        categories=tuple(plan.categories),
        boxes_per_category=boxes_per_category(plan.categories, [image.labels for image in converted]),
        boxes_clipped=int(sum(image.boxes_clipped for image in converted)),
        boxes_dropped={"empty_after_clipping": int(sum(image.boxes_dropped for image in converted))},
        skipped=tuple(p.manifest_entry() for p in skipped),
        skipped_annotations=tuple(p.manifest_entry() for p in plan.annotation_problems),
        reencoded=tuple(reencoded),
        annotation_file=Path(ann_file).name,
        annotation_sha256=plan.annotation_sha256,
        options=dict(options),
        shards=tuple(ShardEntry(s["file"], s["num_rows"]) for s in shards),
        dataset_id=compute_dataset_id(SCHEMA_VERSION, [image.entry.image_id for image in converted],
                                      boxes_per_row, plan.annotation_sha256),
    )


@dataclasses.dataclass
class WrittenRows:
    converted: list               # ConvertedImage in row order
    skipped: list                 # Problems found while reading the images
    reencoded: list               # {"image_id", "file_name", "note"}


def write_rows(plan: Plan, validated, writer: ShardSetWriter, *, strict: bool, progress: bool,
               output_dir: Path) -> WrittenRows:
    """Stage 2: write the rows of the validated images, in plan order, each run of the plan into its shard.

    ``validated`` yields (ImageCandidate, validate_source result) for exactly the plan's entries, in
    plan order. Raises ConversionError on a --strict problem or when no image could be converted.
    """
    written = WrittenRows([], [], [])
    position_of = {entry.image_id: position for position, entry in enumerate(plan.entries)}
    starts = shard_starts(len(plan.entries), writer.shard_num)
    with _progress_bar(progress, len(plan.entries)) as bar:
        for candidate, result in validated:
            position = position_of[candidate.image_id]
            entry = plan.entries[position]
            if isinstance(result, Problem):
                if strict and result.is_error:
                    raise _strict_stop([result], "while reading images")
                written.skipped.append(result)
                bar.set_postfix(skipped=len(written.skipped), refresh=False)
            else:
                stored, prepared = result
                labels, boxes_clipped, boxes_dropped = plan.labels[position]
                num_boxes, boxes, classes, iscrowd = row_arrays(labels)
                fields = {"image": stored, "image_id": entry.image_id, "file_name": entry.file_name,
                          "height": prepared.height, "width": prepared.width, "num_boxes": num_boxes,
                          "boxes": boxes, "classes": classes, "iscrowd": iscrowd,
                          "row_index": len(written.converted)}
                with _writing(output_dir):
                    writer.add(fields, shard_of_position(starts, position))
                written.converted.append(ConvertedImage(entry, labels, boxes_clipped, boxes_dropped))
                if prepared.note:
                    written.reencoded.append({"image_id": entry.image_id, "file_name": entry.file_name,
                                              "note": prepared.note})
            bar.update(1)
    if not written.converted:
        raise ConversionError(f"none of the {len(plan.entries)} images could be converted; nothing was written:"
                              + "".join(f"\n  {p.describe()}" for p in written.skipped[:MAX_PROBLEMS_IN_MESSAGE]))
    return written


@contextlib.contextmanager
def _prompt_gil_handoff(interval: float | None = None):
    """Shorten the interpreter's GIL switch interval for the duration (process-wide; restored after).

    While the calling thread runs long Python loops (json elements, annotation checks), a decode
    thread returning from OpenCV waits for the GIL until the running thread is asked to drop it, by
    default after 5 ms; each image needs the GIL a few times, so the decode threads would mostly wait.
    """
    previous = sys.getswitchinterval()
    sys.setswitchinterval(min(previous, GIL_SWITCH_INTERVAL if interval is None else interval))
    try:
        yield
    finally:
        sys.setswitchinterval(previous)


def convert_coco(image_dir, ann_file, output_dir, *, shard_num: int = 1, num_workers: int | None = None,
                 drop_empty: bool = False, strict: bool = False, exif_frame: str = "auto",
                 progress: bool = False, log: Callable[[str], None] | None = None) -> ConversionSummary:
    """Convert a COCO-format dataset into ``output_dir``; returns the summary.

    ``progress`` shows a tqdm bar (images/s) on stderr; ``log`` receives a few one-line status messages.

    Raises ConversionError for user errors (the message says what to fix) and ValueError for bad
    arguments. Whatever happens, an existing ``output_dir`` is replaced only by a complete result, and
    no temporary file is left behind (except after SIGKILL; the next run removes those leftovers).
    """
    started = time.perf_counter()
    image_dir, output_dir = Path(image_dir), Path(output_dir)
    if not _is_int(shard_num) or not 1 <= shard_num <= 1000:
        raise ValueError(f"shard_num must be an integer in 1..1000, got {shard_num!r}")
    if exif_frame not in image_io.EXIF_FRAMES:
        raise ValueError(f"exif_frame must be one of {image_io.EXIF_FRAMES}, got {exif_frame!r}")
    workers = resolve_num_workers(num_workers, "num_workers")
    if not image_dir.is_dir():
        raise ConversionError(f"--image_dir {image_dir} is not a folder")
    log = log or (lambda message: None)
    annotation_bytes, annotation_sha256 = read_annotation_file(ann_file)

    with contextlib.ExitStack() as stack:
        decoding: dict = {}

        def start_decoding(images: list) -> None:
            """Check the images list and start validating its images in threads (stage 2 begins)."""
            checks = check_images(images, image_dir)
            validate = functools.partial(validate_source, exif_frame=exif_frame)
            prefetch = OrderedPrefetch(checks.candidates, validate, num_workers=workers, load=read_source,
                                       max_weight=IN_FLIGHT_BYTES, weight=lambda candidate: candidate.size,
                                       items_per_task=IMAGES_PER_TASK, thread_name="yolodata-decode")
            decoding.update(checks=checks, prefetch=stack.enter_context(prefetch), started=time.perf_counter())

        with _prompt_gil_handoff():
            document = read_coco_document(annotation_bytes, str(ann_file), on_images=start_decoding)
            categories = parse_categories(document["categories"], str(ann_file))
            plan = plan_conversion(document, decoding["checks"], categories, drop_empty=drop_empty,
                                   annotation_bytes=annotation_bytes, annotation_sha256=annotation_sha256)
        planned = {entry.image_id for entry in plan.entries}
        prefetch = decoding["prefetch"]
        prefetch.drop({c.image_id for c in decoding["checks"].candidates} - planned, key=lambda c: c.image_id)
        log(f"{ann_file}: {len(plan.entries)} images to convert, {len(plan.problems)} skipped by the json checks, "
            f"{len(plan.categories)} categories")
        errors = [p for p in plan.problems + plan.annotation_problems if p.is_error]
        if strict and errors:
            raise _strict_stop(errors, "in the annotation file or image paths")
        if not plan.entries:
            raise ConversionError(f"no image of {ann_file} can be converted ({len(plan.problems)} skipped, "
                                  f"e.g. {plan.problems[0].describe() if plan.problems else 'none listed'}); "
                                  f"nothing was written")

        atomic = AtomicOutput(output_dir, check_output_target)
        with atomic as temp:
            writer = ShardSetWriter(temp, shard_num)
            try:
                written = write_rows(plan, prefetch, writer, strict=strict, progress=progress,
                                     output_dir=output_dir)
                with _writing(output_dir):
                    shards = writer.close()
                convert_seconds = time.perf_counter() - decoding["started"]
                skipped = sorted(plan.problems + written.skipped, key=_problem_order)
                options = {"drop_empty": bool(drop_empty), "exif_frame": exif_frame, "shard_num": shard_num}
                manifest = build_manifest(plan, written.converted, skipped, written.reencoded, shards, options,
                                          ann_file)
                with _writing(output_dir):
                    write_annotations(temp / ANNOTATIONS_NAME, plan, [image.entry for image in written.converted])
                    write_file_durable(temp / MANIFEST_NAME, manifest.to_json())
                    stats = [p.stat() for p in temp.iterdir() if p.is_file()]
                    atomic.commit()
                log(f"wrote {output_dir}")
            except BaseException:
                writer.discard()
                raise
    return ConversionSummary(
        output_dir=str(output_dir), num_images=manifest.num_images, num_boxes=manifest.num_boxes,
        num_background=manifest.num_background_images, boxes_clipped=manifest.boxes_clipped,
        boxes_dropped=manifest.boxes_dropped["empty_after_clipping"], skipped=skipped,
        skipped_annotations=plan.annotation_problems, reencoded=written.reencoded, shards=shards,
        bytes_written=sum(st.st_size for st in stats),
        disk_bytes=sum(getattr(st, "st_blocks", 0) * 512 or st.st_size for st in stats),
        seconds=time.perf_counter() - started, convert_seconds=convert_seconds, num_workers=workers,
        dataset_id=manifest.dataset_id)
