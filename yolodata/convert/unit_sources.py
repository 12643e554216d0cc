"""Sources of work units: which unit each image and annotation record goes to, and what no unit can take.

The routing is shared by every ``UnitSource`` (``units.UnitSource``): an in-memory document
(``DocumentUnits``, what the YOLO txt and VOC readers build) and a COCO json streamed to disk
(``coco_stream.StreamedCocoUnits``). Both give the same units and the same unit documents for the
same document.

- An image record goes to the unit of its ``id`` when that id is usable (an integer that fits
  int64), whatever else is wrong with the record: the unit's own checks (``plan.check_images``)
  report it there, once. Units are contiguous ranges of the distinct usable ids
  (``units.plan_units``), each id sized by its picture's file size under ``image_dir`` (0 for a
  missing file, a record that fails its checks, or a duplicated id: none of those is converted), so
  every record of a duplicated id lands in the same unit.
- An annotation goes to the unit of the image id it names. One that is not an object, or that names
  an image id no image record has, is a routing Problem (the messages of ``plan.plan_conversion``);
  one that names the id of an image record no unit can take (a string id) is left out silently, as
  the whole-document plan skips it with its image.
- An image record without a usable id is a routing Problem (the message of ``plan.check_images``).

A unit document is ``{"images", "annotations", "image_positions", "annotation_positions"}``: the
records (images in id order, duplicates in source order; annotations in source order) and their
indices in the source's lists, which the unit's checks pass on (``check_images(..., positions=)``,
``plan_conversion(..., annotation_positions=)``) so that its messages name the records as the
whole-document plan does.
"""
from __future__ import annotations

import io
from array import array
from pathlib import Path

import numpy as np

from .coco_json import COCO_KEYS, SourceDocument, check_coco_shape
from .plan import annotation_record_problem, image_record_problem, is_id_key, regular_file_size, \
    unknown_image_problem, usable_image_id
from .problems import Problem
from .units import UnitSpec, plan_units, planned_picture_bytes

NO_UNIT = -1
CHUNK_RECORDS = 65_536             # image records per chunk of the index's arrays
INDEX_FILES = ("image_ids.bin", "image_sizes.bin", "image_usable.bin")   # an ImageIndex's spill files


def image_planned_bytes(record, image_dir: str, max_side: int | None = None) -> int:
    """What a usable image record weighs in the unit plan: ``planned_picture_bytes`` of its picture under
    ``image_dir`` (0 when the record fails its checks or the file is not a regular file)."""
    if image_record_problem(record, 0) is not None:
        return 0
    size = regular_file_size(str(Path(image_dir, record["file_name"])))
    return 0 if size is None else planned_picture_bytes(size, record["height"], record["width"], max_side)


class ImageIndex:
    """What the routing keeps per image record: its usable id, planned bytes and a flag, 17 bytes each.

    ``add`` takes the records in source order; records without a usable id become ``problems`` and
    their ids (strings, out-of-range integers) ``unroutable_ids``, which annotations may name without
    being reported. With ``spill_dir`` the per-record values go to binary files there every
    ``CHUNK_RECORDS`` records instead of staying in memory; ``close`` ends the additions. ``max_side``:
    the conversion's --max_side (pictures it shrinks weigh less, ``planned_picture_bytes``).
    """

    def __init__(self, image_dir, spill_dir: Path | None = None, max_side: int | None = None):
        self.image_dir = str(image_dir)
        self.max_side = max_side
        self.buffers = {"ids": array("q"), "sizes": array("q"), "usable": array("b")}
        self.files = None if spill_dir is None else {
            name: open(Path(spill_dir) / file_name, "w+b") for name, file_name in zip(self.buffers, INDEX_FILES)}
        self.num_records = 0
        self.problems: list[Problem] = []
        self.unroutable_ids: set = set()

    def add(self, record) -> None:
        image_id = usable_image_id(record)
        if image_id is None:
            problem = image_record_problem(record, self.num_records)
            self.problems.append(problem)
            if is_id_key(problem.image_id):
                self.unroutable_ids.add(problem.image_id)
        self.buffers["ids"].append(0 if image_id is None else image_id)
        self.buffers["sizes"].append(0 if image_id is None else image_planned_bytes(record, self.image_dir,
                                                                                     self.max_side))
        self.buffers["usable"].append(image_id is not None)
        self.num_records += 1
        if self.files is not None and len(self.buffers["usable"]) >= CHUNK_RECORDS:
            self._flush()

    def _flush(self) -> None:
        for name, buffer in self.buffers.items():
            buffer.tofile(self.files[name])
            del buffer[:]

    def close(self) -> None:
        if self.files is not None:
            self._flush()
            for file in self.files.values():
                file.flush()

    def release(self) -> None:
        """Close the spill files (their removal is the caller's: they are ``INDEX_FILES`` in spill_dir)."""
        for file in (self.files or {}).values():
            file.close()

    def __len__(self) -> int:
        return self.num_records

    def array(self, name: str, start: int = 0, stop: int | None = None) -> np.ndarray:
        """Records ``start:stop`` of ``name`` ("ids", "sizes", "usable") as a numpy array (a copy)."""
        stop = self.num_records if stop is None else min(stop, self.num_records)
        dtype = np.int8 if name == "usable" else np.int64
        if self.files is None:
            return np.frombuffer(self.buffers[name], dtype)[start:stop].copy()
        file = self.files[name]
        file.seek(start * np.dtype(dtype).itemsize)
        return np.fromfile(file, dtype, max(stop - start, 0))

    def chunks(self):
        """(ids, usable) numpy chunks of ``CHUNK_RECORDS`` records, in source order."""
        for start in range(0, self.num_records, CHUNK_RECORDS):
            stop = start + CHUNK_RECORDS
            yield self.array("ids", start, stop), self.array("usable", start, stop) == 1


class UnitRouter:
    """The unit plan of an ``ImageIndex`` and the unit of any image id: 8 bytes per distinct id kept.

    Planning holds the ids and sizes once more (sorted), about 32 bytes per record at its peak.
    """

    def __init__(self, index: ImageIndex, *, shard_size: int | None, shard_num: int | None):
        ids, sizes, usable = index.array("ids"), index.array("sizes"), index.array("usable") == 1
        if not usable.all():
            ids, sizes = ids[usable], sizes[usable]
        del usable
        order = np.argsort(ids, kind="stable")
        ids = ids[order]
        sizes = sizes[order]
        del order
        first_of_id = np.ones(ids.size, bool)
        np.not_equal(ids[1:], ids[:-1], out=first_of_id[1:])
        only_of_id = first_of_id.copy()
        only_of_id[:-1] &= first_of_id[1:]
        sizes[~only_of_id] = 0          # a duplicated id is not converted: it weighs nothing
        del only_of_id
        self.ids = ids[first_of_id]
        del ids
        self.units: tuple[UnitSpec, ...] = plan_units(self.ids, sizes[first_of_id], shard_size=shard_size,
                                                      shard_num=shard_num)
        self.first_ids = np.array([unit.first_image_id for unit in self.units], np.int64)
        self.unroutable_ids = frozenset(index.unroutable_ids)

    def units_of(self, image_ids) -> np.ndarray:
        """The unit of each image id (``NO_UNIT`` for an id that no usable image record has)."""
        image_ids = np.asarray(image_ids, np.int64)
        if self.ids.size == 0:
            return np.full(image_ids.shape, NO_UNIT, np.int32)
        at = np.minimum(np.searchsorted(self.ids, image_ids), self.ids.size - 1)
        known = self.ids[at] == image_ids
        units = np.searchsorted(self.first_ids, image_ids, side="right") - 1
        return np.where(known, units, NO_UNIT).astype(np.int32)

    def record_units(self, ids: np.ndarray, usable: np.ndarray) -> np.ndarray:
        """The unit of each image record of a chunk of ``ImageIndex.chunks`` (``NO_UNIT`` when unusable)."""
        return np.where(usable, self.units_of(ids), NO_UNIT).astype(np.int32)


def plain_image_id(record) -> int | None:
    """An annotation's ``image_id`` when it is an integer that fits int64 (the ids units hold)."""
    image_id = record.get("image_id")
    return image_id if type(image_id) is int and -(2 ** 63) <= image_id < 2 ** 63 else None


def route_odd_annotation(record, position: int, router: UnitRouter) -> Problem | None:
    """The routing Problem of an annotation that is not an object or has no plain ``image_id``
    (None when it names an image record no unit takes: it is left out with that image)."""
    if not isinstance(record, dict):
        return annotation_record_problem(record, position)
    image_id = record.get("image_id")
    if is_id_key(image_id) and image_id in router.unroutable_ids:
        return None
    return unknown_image_problem(record, position)


def route_annotations(annotations: list, router: UnitRouter) -> tuple[np.ndarray, list]:
    """(unit of each annotation, ``NO_UNIT`` for those no unit takes; their Problems in source order)."""
    plain = [plain_image_id(record) if isinstance(record, dict) else None for record in annotations]
    is_plain = np.array([image_id is not None for image_id in plain], bool)
    units = np.full(len(annotations), NO_UNIT, np.int32)
    units[is_plain] = router.units_of([image_id for image_id in plain if image_id is not None])
    problems = []
    for position in np.flatnonzero(units == NO_UNIT).tolist():
        record = annotations[position]
        problem = unknown_image_problem(record, position) if is_plain[position] else \
            route_odd_annotation(record, position, router)
        if problem is not None:
            problems.append(problem)
    return units, problems


def positions_per_unit(record_units: np.ndarray, num_units: int, sort_ids: np.ndarray | None = None) -> list:
    """Per unit, the positions of its records in source order (or ordered by ``sort_ids``, stable)."""
    order = np.arange(record_units.size) if sort_ids is None else np.lexsort((np.arange(record_units.size),
                                                                               sort_ids))
    order = order[record_units[order] != NO_UNIT]
    grouped = order[np.argsort(record_units[order], kind="stable")]
    bounds = np.searchsorted(record_units[grouped], np.arange(num_units + 1))
    return [grouped[bounds[unit]:bounds[unit + 1]] for unit in range(num_units)]


class DocumentUnits:
    """A COCO-style document in memory (a ``SourceDocument``, or a plain dict) split into work units.

    Picklable (it holds the document: each process that loads a unit gets a copy). Attributes as
    ``units.UnitSource``; ``details`` is the source's manifest entry (a reader of another format fills
    it); ``member_order`` the document's top-level keys in order (``annotations.json`` keeps it).
    """

    def __init__(self, source: SourceDocument | dict, image_dir, *, shard_size: int | None = None,
                 shard_num: int | None = None, max_side: int | None = None):
        if not isinstance(source, SourceDocument):
            source = SourceDocument.from_document(source, "the document", source_format="coco")
        document = source.document
        check_coco_shape(document, source.name)
        index = ImageIndex(image_dir, max_side=max_side)
        for record in document["images"]:
            index.add(record)
        index.close()
        router = UnitRouter(index, shard_size=shard_size, shard_num=shard_num)
        annotation_units, annotation_problems = route_annotations(document["annotations"], router)
        self.name, self.source_format = source.name, source.source_format
        self.annotation_file, self.annotation_sha256 = source.annotation_file, source.sha256
        self.categories = document["categories"]
        self.other_members = {key: value for key, value in document.items() if key not in COCO_KEYS}
        self.member_order = tuple(document)
        self.details = source.details
        self.problems = tuple(index.problems) + tuple(annotation_problems)
        self.source_problems = tuple(source.problems)
        self.units = router.units
        self._source = source
        record_units = np.concatenate([router.record_units(ids, usable) for ids, usable in index.chunks()] or
                                      [np.zeros(0, np.int32)])
        self._image_positions = positions_per_unit(record_units, len(self.units), sort_ids=index.array("ids"))
        self._annotation_positions = positions_per_unit(annotation_units, len(self.units))

    def load_unit(self, index: int) -> dict:
        """The document of unit ``index`` (see the module docstring)."""
        document = self._source.document
        image_positions = self._image_positions[index].tolist()
        annotation_positions = self._annotation_positions[index].tolist()
        return {"images": [document["images"][p] for p in image_positions],
                "annotations": [document["annotations"][p] for p in annotation_positions],
                "image_positions": image_positions, "annotation_positions": annotation_positions}

    def open_source(self) -> io.BufferedIOBase:
        """The source document's bytes (``annotations.json`` is a copy of them when nothing is left out)."""
        return io.BytesIO(self._source.raw_bytes)
