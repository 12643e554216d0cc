"""Stage 1, the plan: which images are converted, with which labels, decided before anything is written.

Input: a parsed COCO-style document (``coco_json.SourceDocument``) and the image folder. The
``images`` list alone is checked first (``check_images``: records, duplicate ids, safe file names,
files that exist), so that decoding can start while the annotations are still being parsed; then the
annotations (``plan_conversion``): each must name a known image and category and carry a usable box.
Problems are collected per image: an image with a bad record or a bad annotation is skipped and
named, never half converted. Every planned image's label array is built in one numpy pass
(``label_arrays.labels_for_images``).
"""
from __future__ import annotations

import collections
import dataclasses
import math
import os
import re
import stat
from pathlib import Path

from .coco_json import INT64_MAX, INT64_MIN, SourceDocument, is_json_int, parse_categories
from .label_arrays import labels_for_images
from .problems import Problem, id_as_written, problem_order


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
    """Everything decided from the document before any row is written."""

    categories: list
    class_of_category: dict       # COCO category id -> contiguous index
    entries: list                 # ImageEntry in image-id order: the images to convert
    labels: list                  # (label array float32 (N, 6), boxes clipped, boxes dropped) per entry
    problems: list                # image-level Problems (skipped images)
    annotation_problems: list     # Problems of annotations that belong to no image of the json
    source: SourceDocument        # the document (for annotations.json) and its identity


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


def _image_id_problem(image_id) -> str | None:
    """Why an image record's ``id`` cannot be used (None when it is an integer that fits int64)."""
    if is_json_int(image_id) and INT64_MIN <= image_id <= INT64_MAX:
        return None
    if isinstance(image_id, str):
        hint = f" (write {image_id.strip()} without the quotes)" if image_id.strip().isdecimal() else ""
        return f"id {id_as_written(image_id)} is a string; COCO image ids are JSON integers{hint}"
    return f"id {id_as_written(image_id)} must be an integer that fits int64"


def _image_record_problem(record) -> tuple[str, str] | None:
    """(reason, message) when an image record cannot be used, else None."""
    if not isinstance(record, dict):
        return "bad_image_record", f"the image record is a {type(record).__name__}, expected an object"
    for key in ("id", "file_name", "height", "width"):
        if key not in record:
            return "bad_image_record", f"the image record lacks '{key}'"
    message = _image_id_problem(record["id"])
    if message is not None:
        return "bad_image_record", message
    for key in ("height", "width"):
        if not is_json_int(record[key]) or not 0 < record[key] < 2 ** 31:
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
    if type(ann_id) is not int:  # is_json_int, written out: this runs once per annotation
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


def is_id_key(value) -> bool:
    """Whether ``value`` can name an image in the id sets: an int or a string, as written."""
    return type(value) is int or type(value) is str


def regular_file_size(path: str) -> int | None:
    """The size of ``path`` when it is (a link to) a regular file, else None."""
    try:
        info = os.stat(path)
    except (OSError, ValueError):
        return None
    return info.st_size if stat.S_ISREG(info.st_mode) else None


def usable_image_id(record) -> int | None:
    """The image record's ``id`` when it is an integer that fits int64 (the record may still be bad
    otherwise), else None: what decides which work unit a record goes to."""
    if not isinstance(record, dict):
        return None
    image_id = record.get("id")
    return image_id if _image_id_problem(image_id) is None else None


def image_record_problem(record, position: int) -> Problem | None:
    """The Problem of the image record at ``images[position]`` when it cannot be used, else None."""
    found = _image_record_problem(record)
    if found is None:
        return None
    reason, message = found
    image_id = record.get("id") if isinstance(record, dict) else None
    file_name = record.get("file_name") if isinstance(record, dict) and isinstance(
        record.get("file_name"), str) else None
    return Problem(reason, f"images[{position}]: {message}", image_id, file_name)


def annotation_record_problem(record, position: int) -> Problem:
    """The Problem of ``annotations[position]`` when it is not an object."""
    return Problem("bad_annotation", f"annotations[{position}] is a {type(record).__name__}, expected an object",
                   about="annotation")


def unknown_image_problem(record: dict, position: int) -> Problem:
    """The Problem of ``annotations[position]`` naming an image id that no image record has."""
    image_id = record.get("image_id")
    return Problem("unknown_image", f"annotations[{position}] names image_id {id_as_written(image_id)}, which is "
                                    f"not in 'images'", image_id, annotation_id=record.get("id"), about="annotation")


def check_images(images: list, image_dir: Path, positions=None) -> ImageChecks:
    """Check the ``images`` list alone: records, duplicate ids, and that the files exist.

    ``positions``: each record's index in the source's ``images`` list, for the messages (default:
    its index in ``images``; a work unit passes the positions its records had in the whole document).
    """
    problems: list[Problem] = []
    records_by_id: dict[int, list] = collections.defaultdict(list)
    for position, record in zip(range(len(images)) if positions is None else positions, images):
        problem = image_record_problem(record, int(position))
        if problem is not None:
            problems.append(problem)
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
    # an image record that failed its checks but has an id (also a string one): its annotations are
    # skipped with it, not reported as naming an unknown image
    known_ids = set(records_by_id) | {p.image_id for p in problems if is_id_key(p.image_id)}
    candidates, missing = [], {}
    root = str(image_dir)
    for image_id in sorted(records_by_id):
        if image_id in bad_ids:
            continue
        record = records_by_id[image_id][0]
        path = os.path.join(root, record["file_name"])  # os.path: pathlib is slower, and this runs per image
        size = regular_file_size(path)
        if size is None:
            missing[image_id] = Problem("missing_file", f"file not found: {path}", image_id, record["file_name"])
            continue
        candidates.append(ImageCandidate(image_id, record["file_name"], record["height"], record["width"],
                                         record, path, size))
    return ImageChecks(candidates, problems, missing, dict(records_by_id), bad_ids, known_ids)


def plan_conversion(source: SourceDocument, checks: ImageChecks, categories: list, *, drop_empty: bool,
                    annotation_positions=None) -> Plan:
    """Stage 1 after the images: check the annotations, decide the images to convert and their labels.

    ``annotation_positions``: each annotation's index in the source's list, for the messages (as
    ``check_images``' ``positions``).
    """
    class_of_category = {c.id: c.index for c in categories}
    records_by_id, bad_ids = checks.records_by_id, checks.bad_ids
    annotations_by_image: dict[int, list] = collections.defaultdict(list)
    annotation_problems: list[Problem] = []
    image_failure: dict[int, Problem] = {}
    annotations = source.document["annotations"]
    for position, record in zip(range(len(annotations)) if annotation_positions is None else annotation_positions,
                                annotations):
        if not isinstance(record, dict):
            annotation_problems.append(annotation_record_problem(record, position))
            continue
        image_id, ann_id = record.get("image_id"), record.get("id")
        if not is_id_key(image_id) or image_id not in checks.known_ids:
            annotation_problems.append(unknown_image_problem(record, position))
            continue
        if image_id not in records_by_id or image_id in bad_ids:
            continue  # its image is skipped already
        found = _annotation_problem(record, class_of_category)
        if found is not None and image_id not in image_failure:
            reason, message = found
            image_failure[image_id] = Problem(reason, f"annotation {ann_id!r} (annotations[{position}]): {message}",
                                              image_id, records_by_id[image_id][0]["file_name"],
                                              annotation_id=ann_id)
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
    problems.sort(key=problem_order)
    return Plan(categories, class_of_category, entries, labels, problems, annotation_problems, source)


def plan_source(source: SourceDocument, image_dir, *, drop_empty: bool = False) -> Plan:
    """The whole plan of a document at once (the converter itself interleaves these steps with decoding)."""
    categories = parse_categories(source.document["categories"], source.name)
    checks = check_images(source.document["images"], Path(image_dir))
    return plan_conversion(source, checks, categories, drop_empty=drop_empty)
