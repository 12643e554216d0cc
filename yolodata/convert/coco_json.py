"""The annotation document: reading a COCO instances json, its shape, its categories.

``SourceDocument`` is what the plan stage needs from a source besides the image folder: a parsed
COCO-style document (``images``, ``annotations``, ``categories``) plus where it came from. A COCO
json file gives one through ``read_annotation_file`` and ``read_coco_document`` (which hands the
``images`` list over as soon as it is parsed, so that decoding starts early); a reader of another
format (YOLO txt, VOC xml) builds the document in memory and wraps it with
``SourceDocument.from_document``.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import os
from pathlib import Path
from typing import Callable

from ..json_members import NotAnObject, decode_json_bytes, iter_object_members
from ..manifest import Category
from .problems import ConversionError

COCO_KEYS = ("images", "annotations", "categories")
INT64_MIN, INT64_MAX = -(2 ** 63), 2 ** 63 - 1


def is_json_int(value) -> bool:
    """Whether ``value`` is a JSON integer (bool and float are not)."""
    return type(value) is int


@dataclasses.dataclass(frozen=True)
class SourceDocument:
    """A parsed COCO-style document and what the output records about its source.

    ``raw_bytes`` is the document as a file: ``annotations.json`` is a copy of it when every image and
    annotation is converted. ``sha256`` (of ``raw_bytes``) enters the dataset id. ``name`` is how
    messages name the source (a file path, or for example "YOLO labels in DIR").
    """

    document: dict
    name: str
    raw_bytes: bytes
    sha256: str
    source_format: str = "coco"
    annotation_file: str | None = None     # manifest.json's annotation_file (a file name)
    details: dict | None = None            # manifest.json's ``source`` (a reader of another format fills it)
    problems: tuple = ()                   # what that reader found (yolodata.formats.SourceProblem)

    @classmethod
    def from_document(cls, document: dict, name: str, *, source_format: str, annotation_file: str | None = None,
                      details: dict | None = None, problems=()) -> "SourceDocument":
        """Wrap a document built in memory; raises ConversionError unless it has COCO's shape.

        ``problems`` are the reader's: each has ``reason``, ``message``, ``is_error``, ``image`` and
        ``image_id`` (the image it leaves out, or None), ``describe()`` and ``manifest_entry()``.
        """
        check_coco_shape(document, name)
        data = json.dumps(document, ensure_ascii=False, separators=(",", ":")).encode("utf-8")
        return cls(document, name, data, hashlib.sha256(data).hexdigest(), source_format, annotation_file,
                   details, tuple(problems))


def read_annotation_file(ann_file: str | os.PathLike) -> tuple[bytes, str]:
    """(file bytes, sha256 hex) of the annotation file; ConversionError when it cannot be read."""
    path = Path(ann_file)
    try:
        data = path.read_bytes()
    except OSError as error:
        raise ConversionError(f"cannot read the annotation file {path}: {error.strerror or error}") from error
    return data, hashlib.sha256(data).hexdigest()


def check_coco_shape(document, source: str) -> None:
    """ConversionError unless ``document`` is an object whose ``images``, ``annotations`` and
    ``categories`` are lists (the records themselves are checked by the plan)."""
    if not isinstance(document, dict):
        raise ConversionError(f"{source} is not a COCO instances json: the top level is a "
                              f"{type(document).__name__}, expected an object")
    for key in COCO_KEYS:
        if key not in document:
            raise ConversionError(f"{source} is not a COCO instances json: key '{key}' is missing "
                                  f"(found {sorted(document)})")
        if not isinstance(document[key], list):
            raise ConversionError(f"{source} is not a COCO instances json: '{key}' must be a list, "
                                  f"got {type(document[key]).__name__}")


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
    check_coco_shape(document, source)
    return document


def parse_categories(categories: list, source: str = "the json") -> list[Category]:
    """Categories sorted by id with contiguous indices (COCO's 1..90 become 0..79; an id 0 is index 0)."""
    seen = {}
    for position, record in enumerate(categories):
        if not isinstance(record, dict):
            raise ConversionError(f"{source}: categories[{position}] must be an object, got {type(record).__name__}")
        cat_id, name = record.get("id"), record.get("name")
        if not is_json_int(cat_id) or not INT64_MIN <= cat_id <= INT64_MAX:
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
