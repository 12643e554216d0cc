"""The converter output folder's ``manifest.json`` as one typed object: ``Manifest``.

The converter builds a ``Manifest`` and writes it (``Manifest.to_json``); every reader (pipelines,
verification, visualization, training, evaluation, inference) gets one from ``load_manifest`` or
``read_manifest``. Nothing else parses ``manifest.json``, so a damaged or half-copied folder fails
here with one clear message naming what is missing, instead of an obscure error later, and the
categories are checked in one place.
"""
from __future__ import annotations

import bisect
import collections
import dataclasses
import hashlib
import json
import os
from pathlib import Path
from typing import Iterable

import numpy as np

from .schema import ANNOTATIONS_NAME, MANIFEST_NAME, READABLE_SCHEMA_VERSIONS, ROW_INDEX_PER_FILE_VERSION, \
    SCHEMA_VERSION

# Keys every manifest has; the other fields default when an older converter did not write them.
REQUIRED_KEYS = (
    "num_images", "num_boxes", "categories", "skipped", "boxes_per_category", "converter_version",
    "schema_version", "annotation_sha256", "shards", "dataset_id",
)
DEFAULT_SOURCE_FORMAT = "coco"
RECONVERT = "re-run tools/coco2mindrecord.py"


class ManifestError(ValueError):
    """The folder is not a complete converter output; the message says what is missing or wrong."""


@dataclasses.dataclass(frozen=True)
class Category:
    """One category: its contiguous training index, its original (COCO) id and its name."""

    index: int
    id: int
    name: str


@dataclasses.dataclass(frozen=True)
class ShardEntry:
    """One shard file of the set (a plain file name in the output folder), its row count and its size in
    bytes (None in manifests written before converter 1.4; readers on other nodes check it)."""

    file: str
    num_rows: int
    num_bytes: int | None = None

    def to_dict(self) -> dict:
        written = {"file": self.file, "num_rows": self.num_rows}
        if self.num_bytes is not None:
            written["num_bytes"] = self.num_bytes
        return written


def category_count_keys(categories: Iterable[Category]) -> list[str]:
    """Keys of ``boxes_per_category`` in index order: the name, or "name (id N)" for a repeated name."""
    categories = list(categories)
    names = collections.Counter(c.name for c in categories)
    return [c.name if names[c.name] == 1 else f"{c.name} (id {c.id})" for c in categories]


def compute_dataset_id(schema_version: int, image_ids: Iterable[int], boxes_per_row: Iterable[int],
                       annotation_sha256: str) -> str:
    """The dataset identity: sha256 hex over the schema version, the image ids in row order, each row's
    box count and the annotation file's sha256. The sampler and resume key on it."""
    ids = np.asarray(image_ids if isinstance(image_ids, np.ndarray) else list(image_ids), dtype="<i8")
    counts = np.asarray(boxes_per_row if isinstance(boxes_per_row, np.ndarray) else list(boxes_per_row), dtype="<i8")
    if ids.shape != counts.shape:
        raise ValueError(f"dataset id needs one box count per image: {ids.size} ids, {counts.size} counts")
    digest = hashlib.sha256()
    digest.update(f"yolodata-dataset;schema={int(schema_version)};annotations={annotation_sha256};"
                  f"rows={ids.size};".encode("ascii"))
    digest.update(ids.tobytes())
    digest.update(counts.tobytes())
    return digest.hexdigest()


@dataclasses.dataclass(frozen=True)
class Manifest:
    """What a converter output folder holds (the keys of ``manifest.json``, typed).

    ``folder`` is where it was read from (None for a manifest the converter has not written yet).
    Rows are stored in image-id order, split into the shards in ``shards`` order.
    """

    num_images: int
    num_boxes: int
    categories: tuple[Category, ...]
    shards: tuple[ShardEntry, ...]
    dataset_id: str
    annotation_sha256: str
    converter_version: str
    schema_version: int = SCHEMA_VERSION
    source_format: str = DEFAULT_SOURCE_FORMAT
    num_background_images: int = 0
    num_crowd_boxes: int = 0
    boxes_per_category: dict = dataclasses.field(default_factory=dict)
    boxes_clipped: int = 0
    boxes_dropped: dict = dataclasses.field(default_factory=dict)
    skipped: tuple = ()                  # {image_id, file_name, reason, message}: images not converted
    skipped_annotations: tuple = ()      # {image_id, annotation_id, reason, message}: annotations of no image
    reencoded: tuple = ()                # {image_id, file_name, note}
    warnings: tuple = ()                 # {kind, count, message}: converted as given, but worth knowing
    source: dict = dataclasses.field(default_factory=dict)   # YOLO txt / VOC: layout, files, split, class order
    source_problems: tuple = ()          # YOLO txt / VOC: {file, line, reason, message[, image_id, file_name]}
    annotation_file: str | None = None
    options: dict = dataclasses.field(default_factory=dict)   # incl. max_side, jpeg_quality (converter 1.3)
    shrunk: dict = dataclasses.field(default_factory=dict)    # --max_side: {num_images, source_bytes, stored_bytes}
    folder: Path | None = dataclasses.field(default=None, compare=False)

    # ------------------------------------------------------------------ derived views
    @property
    def num_classes(self) -> int:
        return len(self.categories)

    @property
    def has_original_sizes(self) -> bool:
        """Whether the rows carry ``orig_height``, ``orig_width`` and ``stored_scale`` (schema 2 and later);
        a version 1 set stores every picture at its original size."""
        return self.schema_version >= 2

    @property
    def max_side(self) -> int | None:
        """The converter's --max_side (None: every picture stored at its size)."""
        return self.options.get("max_side")

    @property
    def class_names(self) -> list[str]:
        """Category names in class-index order."""
        return [c.name for c in self.categories]

    @property
    def category_ids(self) -> np.ndarray:
        """int64 (num_classes,): the original category id of each class index."""
        return np.asarray([c.id for c in self.categories], np.int64)

    @property
    def category_keys(self) -> list[str]:
        """The keys of ``boxes_per_category`` in class-index order (``category_count_keys``)."""
        return category_count_keys(self.categories)

    def _in_folder(self, name: str) -> Path:
        if self.folder is None:
            raise ValueError("this manifest was not read from a folder")
        return self.folder / name

    @property
    def shard_paths(self) -> list[Path]:
        """Paths of the shard files in row order (the first one opens the whole set)."""
        return [self._in_folder(entry.file) for entry in self.shards]

    @property
    def annotations_path(self) -> Path:
        """The COCO json of exactly the converted images, beside the shards."""
        return self._in_folder(ANNOTATIONS_NAME)

    def shard_row_starts(self) -> list[int]:
        """Global row index of the first row of each shard (cumulative ``num_rows``)."""
        starts, total = [], 0
        for entry in self.shards:
            starts.append(total)
            total += entry.num_rows
        return starts

    def stored_row_index(self, global_rows) -> np.ndarray:
        """The ``row_index`` column value of each global row (int64 array): its position within its file
        (schema 3, files written independently), or the global row itself (schema 1 and 2, a linked set).

        A global row is the position in ``MindDataset(dataset_files=self.shard_paths)``, files in
        manifest order: the same for one file or many, old layout or new."""
        rows = np.asarray(global_rows, np.int64)
        if self.schema_version < ROW_INDEX_PER_FILE_VERSION:
            return rows
        starts = np.asarray(self.shard_row_starts(), np.int64)
        shard = np.searchsorted(starts, rows, side="right") - 1
        return rows - starts[np.maximum(shard, 0)]

    def shard_of_row(self, row_index: int) -> str:
        """File name of the shard holding global row ``row_index``."""
        row_index = int(row_index)
        if not 0 <= row_index < self.num_images:
            raise ValueError(f"row_index {row_index} is outside 0..{self.num_images - 1}")
        # the last shard whose first row is <= row_index (skipping empty shards that start at the same row)
        position = bisect.bisect_right(self.shard_row_starts(), row_index) - 1
        return self.shards[position].file

    # ------------------------------------------------------------------ writing
    def to_dict(self) -> dict:
        """The ``manifest.json`` content (key order as written since converter 1.0)."""
        written = {
            "converter_version": self.converter_version,
            "schema_version": self.schema_version,
            "source_format": self.source_format,
            "num_images": self.num_images,
            "num_boxes": self.num_boxes,
            "num_background_images": self.num_background_images,
            "num_crowd_boxes": self.num_crowd_boxes,
            "categories": [dataclasses.asdict(c) for c in self.categories],
            "boxes_per_category": dict(self.boxes_per_category),
            "boxes_clipped": self.boxes_clipped,
            "boxes_dropped": dict(self.boxes_dropped),
            "skipped": [dict(entry) for entry in self.skipped],
            "skipped_annotations": [dict(entry) for entry in self.skipped_annotations],
            "reencoded": [dict(entry) for entry in self.reencoded],
            "warnings": [dict(entry) for entry in self.warnings],
            "annotation_file": self.annotation_file,
            "annotation_sha256": self.annotation_sha256,
            "options": dict(self.options),
            "shrunk": dict(self.shrunk),
            "shards": [entry.to_dict() for entry in self.shards],
            "dataset_id": self.dataset_id,
        }
        if self.source or self.source_problems:  # a source other than a COCO json (yolodata.formats)
            written["source"] = dict(self.source)
            written["source_problems"] = [dict(entry) for entry in self.source_problems]
        return written

    def to_json(self) -> bytes:
        return json.dumps(self.to_dict(), indent=1, ensure_ascii=False).encode("utf-8")


# ---------------------------------------------------------------------- reading

def _is_int(value) -> bool:
    return type(value) is int  # JSON integers only: bool and float are rejected


def parse_categories(entries, where) -> tuple[Category, ...]:
    """The manifest's ``categories`` as Category objects in index order; ManifestError when malformed.

    Each entry needs an integer ``index`` and ``id`` and a string ``name``; the indices must be
    0..N-1 and the ids distinct.
    """
    if not isinstance(entries, list) or not entries:
        raise ManifestError(f"{where}: 'categories' must be a non-empty list of {{index, id, name}}; {RECONVERT}")
    by_index = {}
    for entry in entries:
        if not (isinstance(entry, dict) and _is_int(entry.get("index")) and _is_int(entry.get("id"))
                and isinstance(entry.get("name"), str)):
            raise ManifestError(f"{where}: bad category entry {entry!r}; expected {{'index': int, 'id': int, "
                                f"'name': str}}")
        if entry["index"] in by_index:
            raise ManifestError(f"{where}: category index {entry['index']} appears twice")
        by_index[entry["index"]] = Category(entry["index"], entry["id"], entry["name"])
    if sorted(by_index) != list(range(len(entries))):
        raise ManifestError(f"{where}: category indices must be 0..{len(entries) - 1}, got {sorted(by_index)}")
    categories = tuple(by_index[index] for index in range(len(entries)))
    ids = [c.id for c in categories]
    if len(set(ids)) != len(ids):
        raise ManifestError(f"{where}: category ids must be distinct, got {ids}")
    return categories


def _parse_shards(entries, where) -> tuple[ShardEntry, ...]:
    if not isinstance(entries, list) or not entries:
        raise ManifestError(f"{where}: 'shards' must be a non-empty list of {{file, num_rows}}")
    shards = []
    for entry in entries:
        if not (isinstance(entry, dict) and isinstance(entry.get("file"), str)
                and _is_int(entry.get("num_rows")) and entry["num_rows"] >= 0):
            raise ManifestError(f"{where}: bad shard entry {entry!r}; expected {{'file': str, 'num_rows': int}}")
        if os.path.basename(entry["file"]) != entry["file"]:
            raise ManifestError(f"{where}: shard file {entry['file']!r} must be a plain file name")
        num_bytes = entry.get("num_bytes")
        if num_bytes is not None and not (_is_int(num_bytes) and num_bytes > 0):
            raise ManifestError(f"{where}: shard {entry['file']!r} has num_bytes {num_bytes!r}; expected a "
                                f"positive integer")
        shards.append(ShardEntry(entry["file"], entry["num_rows"], num_bytes))
    return tuple(shards)


def manifest_from_dict(document, where, folder: Path | None = None) -> Manifest:
    """A Manifest from the parsed json; ManifestError naming ``where`` and the first problem."""
    if not isinstance(document, dict):
        raise ManifestError(f"{where} is not a JSON object")
    missing = [key for key in REQUIRED_KEYS if key not in document]
    if missing:
        raise ManifestError(f"{where} lacks key(s) {missing}; {RECONVERT}")
    if document["schema_version"] not in READABLE_SCHEMA_VERSIONS or not _is_int(document["schema_version"]):
        raise ManifestError(f"{where} has schema_version {document['schema_version']!r} but this code reads "
                            f"versions {list(READABLE_SCHEMA_VERSIONS)}; {RECONVERT}")
    for key in ("num_images", "num_boxes"):
        if not _is_int(document[key]) or document[key] < 0:
            raise ManifestError(f"{where}: {key} must be a non-negative integer, got {document[key]!r}")
    for key in ("dataset_id", "annotation_sha256"):
        if not isinstance(document[key], str):
            raise ManifestError(f"{where}: {key} must be a string, got {document[key]!r}")
    categories = parse_categories(document["categories"], where)
    shards = _parse_shards(document["shards"], where)
    total = sum(entry.num_rows for entry in shards)
    if total != document["num_images"]:
        raise ManifestError(f"{where}: shards hold {total} rows but num_images is {document['num_images']}")
    return Manifest(
        num_images=document["num_images"], num_boxes=document["num_boxes"], categories=categories,
        shards=shards, dataset_id=document["dataset_id"], annotation_sha256=document["annotation_sha256"],
        converter_version=str(document["converter_version"]), schema_version=document["schema_version"],
        source_format=str(document.get("source_format", DEFAULT_SOURCE_FORMAT)),
        num_background_images=int(document.get("num_background_images", 0)),
        num_crowd_boxes=int(document.get("num_crowd_boxes", 0)),
        boxes_per_category=dict(document["boxes_per_category"]),
        boxes_clipped=int(document.get("boxes_clipped", 0)),
        boxes_dropped=dict(document.get("boxes_dropped", {})),
        skipped=tuple(document["skipped"]), skipped_annotations=tuple(document.get("skipped_annotations", ())),
        reencoded=tuple(document.get("reencoded", ())), warnings=tuple(document.get("warnings", ())),
        source=dict(document.get("source") or {}), source_problems=tuple(document.get("source_problems", ())),
        annotation_file=document.get("annotation_file"),
        options=dict(document.get("options", {})), shrunk=dict(document.get("shrunk") or {}), folder=folder)


def read_manifest(output_dir: str | os.PathLike) -> Manifest:
    """The manifest of ``output_dir`` with its keys checked (the files it names are not checked)."""
    folder = Path(output_dir)
    if not folder.is_dir():
        raise ManifestError(f"{folder} is not a folder; pass the --output_dir of tools/coco2mindrecord.py")
    path = folder / MANIFEST_NAME
    if not path.is_file():
        raise ManifestError(f"{path} is missing: {folder} is not a converter output folder "
                            f"(run tools/coco2mindrecord.py)")
    try:
        document = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise ManifestError(f"{path} cannot be read as JSON: {error}") from error
    return manifest_from_dict(document, path, folder)


def load_manifest(output_dir: str | os.PathLike) -> Manifest:
    """The manifest of a converter output folder, after checking that every file it names exists.

    Raises ManifestError (a ValueError) naming the first missing or inconsistent piece: the folder,
    ``manifest.json``, a key, ``annotations.json``, a shard file or its ``.db`` index.
    """
    manifest = read_manifest(output_dir)
    folder = manifest.folder
    missing = [name for entry in manifest.shards for name in (entry.file, entry.file + ".db")
               if not (folder / name).is_file()]
    if not (folder / ANNOTATIONS_NAME).is_file():
        missing.append(ANNOTATIONS_NAME)
    if missing:
        raise ManifestError(f"{folder} is incomplete: missing {missing} named by its {MANIFEST_NAME}")
    return manifest


def has_manifest(folder) -> bool:
    """Whether ``folder`` looks like a converter output (it holds a ``manifest.json``); not validated."""
    return bool(folder) and (Path(folder) / MANIFEST_NAME).is_file()
