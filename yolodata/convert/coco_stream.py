"""A COCO instances json too large for memory as work units: read once, spilled to disk unit by unit.

``StreamedCocoUnits`` reads the json in one pass (``yolodata.json_stream``: members in any order,
``annotations`` before ``images`` too) and writes every image and annotation record, as its exact
source text, to JSON-lines spills in ``work_dir``: one images file and one annotations file per unit,
which ``load_unit`` reads back in any process. The units are planned as ``DocumentUnits`` plans them,
as soon as the ``images`` list is complete: the image records wait in a raw spill until then, and so
do annotations that come before the images (with their image ids in a binary spill); annotations
that come after them (COCO's own order) go straight to their unit. What stays in memory is about 8
bytes per image id (``unit_sources``), nothing per annotation. The units, the unit documents and the
routing problems are the same as ``DocumentUnits`` gives for the same json; the json's sha256 is
computed while reading.

Why not ijson: its C backend refuses documents ``json.load`` accepts (NaN, 1e400, integers beyond
int64, which the plan reports per record instead), and re-serialising its records costs more than
parsing them. The standard library's scanner parses each element exactly as ``json.load`` does and
hands over its source text, which is spilled unchanged.
"""
from __future__ import annotations

import contextlib
import dataclasses
import functools
import json
import os
from array import array
from pathlib import Path
from typing import Callable

import numpy as np

from ..json_stream import CHUNK_BYTES, JsonStreamError, NotAnObject, StreamedArray, read_object_members
from .coco_json import COCO_KEYS, check_coco_shape
from .plan import annotation_record_problem, unknown_image_problem
from .problems import ConversionError, Problem
from .unit_sources import INDEX_FILES, NO_UNIT, ImageIndex, UnitRouter, plain_image_id, route_odd_annotation

SPILL_ENCODING = {"encoding": "utf-8", "errors": "surrogatepass", "newline": "\n"}
RAW_IMAGES, RAW_ANNOTATIONS, RAW_IMAGE_IDS = "images.jsonl", "annotations.jsonl", "annotation_image_ids.bin"
ROUTE_CHUNK_LINES = 65_536            # annotations routed at a time from the raw spill
DIRECT_CHUNK_LINES = 8_192            # annotations held (as text) before they are routed while reading
FLUSH_CHARS = 16 << 20                # spill text buffered per routing pass before it is appended to the files


def spill_line(text: str) -> str:
    """A record's source text as one line (a newline can only be whitespace between JSON tokens)."""
    if "\n" in text or "\r" in text:
        text = text.replace("\r", " ").replace("\n", " ")
    return text + "\n"


def unit_file(work_dir: Path, index: int, kind: str) -> Path:
    """The spill of unit ``index``'s ``kind`` ("images" or "annotations")."""
    return work_dir / f"unit-{index:05d}.{kind}.jsonl"


class DirectRouting:
    """Annotations routed to the units' spills as they are read (the units are planned already)."""

    def __init__(self, work_dir: Path, router: UnitRouter):
        self.router, self.files = router, UnitFiles(work_dir, "annotations")
        self.positions, self.lines, self.image_ids = [], [], array("q")
        self.problems: list = []        # (position, Problem) of annotations naming no image

    def add(self, position: int, line: str, image_id: int) -> None:
        self.positions.append(position)
        self.lines.append(line)
        self.image_ids.append(image_id)
        if len(self.positions) >= DIRECT_CHUNK_LINES:
            self.flush()

    def flush(self) -> None:
        units = self.router.units_of(np.array(self.image_ids, np.int64)).tolist()
        for position, line, unit in zip(self.positions, self.lines, units):
            if unit != NO_UNIT:
                self.files.add(unit, f"{position}\t{line}")
            else:
                self.problems.append((position, unknown_image_problem(json.loads(line), position)))
        self.positions, self.lines, self.image_ids = [], [], array("q")

    def close(self) -> None:
        self.flush()
        self.files.flush()


class RawSpill:
    """What the reading pass writes and keeps.

    Image records: their text in source order (a raw spill) and the ``ImageIndex``. Annotations: when
    the ``images`` list is complete before they come (COCO's own order), the units are planned then and
    each annotation goes straight to its unit's spill (``DirectRouting``); otherwise their text and
    image ids go to raw spills, routed once the images are known (``finish``).
    """

    def __init__(self, work_dir: Path, image_dir, plan: Callable[[ImageIndex], UnitRouter],
                 max_side: int | None = None):
        self.work_dir, self.plan = work_dir, plan
        self.images = open(work_dir / RAW_IMAGES, "w", **SPILL_ENCODING)
        self.annotations = self.annotation_ids = None       # raw spills, opened when needed
        self.pending_ids = array("q")
        self.index = ImageIndex(image_dir, spill_dir=work_dir, max_side=max_side)
        self.router: UnitRouter | None = None
        self.direct: DirectRouting | None = None
        self.num_annotations = 0
        self.annotation_problems: list = []      # (position, Problem) of annotations no unit takes
        self.odd_annotations: list = []          # (position, {"image_id", "id"}) of non-integer image ids

    def on_member(self, key: str, value) -> None:
        if key == "images" and isinstance(value, StreamedArray) and self.router is None and not self.num_annotations:
            self.index.close()
            self.router = self.plan(self.index)
            self.direct = DirectRouting(self.work_dir, self.router)

    def on_element(self, key: str, text: str, value) -> None:
        if key == "images":
            self.index.add(value)
            self.images.write(spill_line(text))
            return
        position = self.num_annotations
        self.num_annotations += 1
        image_id = plain_image_id(value) if isinstance(value, dict) else None
        if not isinstance(value, dict):
            self.annotation_problems.append((position, annotation_record_problem(value, position)))
        elif image_id is None:
            stub = {"image_id": value.get("image_id"), "id": value.get("id")}
            if self.router is None:
                self.odd_annotations.append((position, stub))
            elif (problem := route_odd_annotation(stub, position, self.router)) is not None:
                self.annotation_problems.append((position, problem))
        if self.direct is not None:
            if image_id is not None:
                self.direct.add(position, spill_line(text), image_id)
            return
        self._spill_raw(spill_line(text), image_id)

    def _spill_raw(self, line: str, image_id: int | None) -> None:
        if self.annotations is None:
            self.annotations = open(self.work_dir / RAW_ANNOTATIONS, "w", **SPILL_ENCODING)
            self.annotation_ids = open(self.work_dir / RAW_IMAGE_IDS, "wb")
        self.annotations.write(line)
        self.pending_ids.append(0 if image_id is None else image_id)
        if len(self.pending_ids) >= ROUTE_CHUNK_LINES:
            self.pending_ids.tofile(self.annotation_ids)
            del self.pending_ids[:]

    def close(self) -> None:
        """End the read (also after a failure): the spill files are complete and closed."""
        if self.annotation_ids is not None:
            self.pending_ids.tofile(self.annotation_ids)
        for file in (self.images, self.annotations, self.annotation_ids):
            if file is not None:
                file.close()
        self.index.close()

    def finish(self) -> UnitRouter:
        """After a complete read: the router, every annotation routed and its problems collected."""
        if self.direct is not None:
            self.direct.close()
            self.annotation_problems += self.direct.problems
            return self.router
        self.router = self.plan(self.index)
        skip = {position for position, _ in self.odd_annotations} | {position for position, _ in
                                                                     self.annotation_problems}
        for position, stub in self.odd_annotations:
            if (problem := route_odd_annotation(stub, position, self.router)) is not None:
                self.annotation_problems.append((position, problem))
        if self.annotations is not None:
            self.annotation_problems += route_annotations_spill(self.work_dir, self.router, skip)
        return self.router


def read_coco_stream(ann_file: Path, spill: RawSpill, *, chunk_bytes: int, progress: bool) -> tuple[list, str]:
    """Read the json into ``spill``; (its members besides the streamed lists, sha256 hex).
    ConversionError when the file cannot be read, is not JSON, or is not a COCO instances json."""
    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(total=ann_file.stat().st_size, unit="B", unit_scale=True, desc=f"reading {ann_file.name}",
                   dynamic_ncols=True, leave=False)
    try:
        with open(ann_file, "rb") as file:
            members, buffer = read_object_members(file, frozenset({"images", "annotations"}), spill.on_element,
                                                  chunk_bytes=chunk_bytes, on_read=bar.update if bar else None,
                                                  on_member=spill.on_member)
    except OSError as error:
        raise ConversionError(f"cannot read the annotation file {ann_file}: {error.strerror or error}") from error
    except (UnicodeDecodeError, JsonStreamError) as error:
        raise ConversionError(f"{ann_file} is not valid JSON: {error}") from error
    except NotAnObject as error:
        raise ConversionError(f"{ann_file} is not a COCO instances json: {error}") from error
    finally:
        spill.close()
        if bar is not None:
            bar.close()
    check_members(members, str(ann_file))
    return members, buffer.sha256.hexdigest()


def check_members(members: list, source: str) -> None:
    """ConversionError unless the top-level members have COCO's shape (``check_coco_shape``'s messages)."""
    seen = set()
    for key, _ in members:
        if key in COCO_KEYS and key in seen:
            raise ConversionError(f"{source} is not a COCO instances json: key '{key}' appears twice")
        seen.add(key)
    check_coco_shape({key: [] if isinstance(value, StreamedArray) else value for key, value in members}, source)


class UnitFiles:
    """Appends lines to the per-unit spills, buffered (a few files open at a time, whatever the unit count)."""

    def __init__(self, work_dir: Path, kind: str):
        self.work_dir, self.kind = work_dir, kind
        self.buffered: dict[int, list] = {}
        self.num_chars = 0

    def add(self, unit: int, line: str) -> None:
        self.buffered.setdefault(unit, []).append(line)
        self.num_chars += len(line)
        if self.num_chars >= FLUSH_CHARS:
            self.flush()

    def flush(self) -> None:
        for unit, lines in sorted(self.buffered.items()):
            with open(unit_file(self.work_dir, unit, self.kind), "a", **SPILL_ENCODING) as out:
                out.writelines(lines)
        self.buffered, self.num_chars = {}, 0


def route_images(work_dir: Path, index: ImageIndex, router: UnitRouter) -> None:
    """Split the raw images spill into the units' images spills (lines ``position<TAB>record``)."""
    files, position = UnitFiles(work_dir, "images"), 0
    with open(work_dir / RAW_IMAGES, **SPILL_ENCODING) as lines:
        for ids, usable in index.chunks():
            for unit, line in zip(router.record_units(ids, usable).tolist(), lines):
                if unit != NO_UNIT:
                    files.add(unit, f"{position}\t{line}")
                position += 1
    files.flush()


def route_annotations_spill(work_dir: Path, router: UnitRouter, odd_positions: set) -> list:
    """Split the raw annotations spill into the units' annotations spills, except the annotations at
    ``odd_positions``; the (position, Problem) of each annotation with an integer image id that no image
    record has."""
    files, problems, position = UnitFiles(work_dir, "annotations"), [], 0
    with open(work_dir / RAW_ANNOTATIONS, **SPILL_ENCODING) as lines, open(work_dir / RAW_IMAGE_IDS, "rb") as ids:
        while True:
            image_ids = np.fromfile(ids, np.int64, ROUTE_CHUNK_LINES)
            if image_ids.size == 0:
                break
            for unit, line in zip(router.units_of(image_ids).tolist(), lines):
                if position in odd_positions:
                    pass  # not an object, or no integer image id: routed by route_odd_annotation
                elif unit != NO_UNIT:
                    files.add(unit, f"{position}\t{line}")
                else:
                    problems.append((position, unknown_image_problem(json.loads(line), position)))
                position += 1
    files.flush()
    return problems


def read_unit_file(path: Path) -> list:
    """[(position, record)] of a unit spill (empty when the unit has no such records)."""
    if not path.is_file():
        return []
    with open(path, **SPILL_ENCODING) as lines:
        return [(int(position), json.loads(text)) for position, text in (line.split("\t", 1) for line in lines)]


@dataclasses.dataclass(frozen=True)
class Spilled:
    """What ``spill_units`` leaves besides the unit spills."""

    units: tuple                  # UnitSpec in index order
    problems: tuple               # routing Problems: images' then annotations', each in source order
    num_image_records: int
    num_annotation_records: int


def spill_units(work_dir: Path, image_dir, read: Callable[[RawSpill], object], *, shard_size: int | None,
                shard_num: int | None, max_side: int | None = None) -> tuple[object, Spilled]:
    """(``read(spill)``'s result, Spilled): ``read`` fills a RawSpill (and closes it), whose records are
    then routed into the units' spills in ``work_dir``; nothing else of the spill is left there. Any
    spill of an earlier run is removed first, and everything after a failure."""
    prepare_work_dir(work_dir)
    spill = RawSpill(work_dir, image_dir, functools.partial(UnitRouter, shard_size=shard_size, shard_num=shard_num),
                     max_side=max_side)
    try:
        result = read(spill)
        router = spill.finish()
        route_images(work_dir, spill.index, router)
    except BaseException:
        prepare_work_dir(work_dir)  # no half-routed spill left behind
        raise
    finally:
        spill.index.release()
    for name in (RAW_IMAGES, RAW_ANNOTATIONS, RAW_IMAGE_IDS, *INDEX_FILES):
        (work_dir / name).unlink(missing_ok=True)
    annotation_problems = sorted(spill.annotation_problems, key=lambda item: item[0])
    problems = tuple(spill.index.problems) + tuple(problem for _, problem in annotation_problems)
    return result, Spilled(router.units, problems, len(spill.index), spill.num_annotations)


def load_spilled_unit(work_dir: Path, index: int) -> dict:
    """The document of unit ``index`` from its spills (images in id order, duplicates in source order)."""
    images = sorted(read_unit_file(unit_file(work_dir, index, "images")), key=lambda item: (item[1]["id"], item[0]))
    annotations = read_unit_file(unit_file(work_dir, index, "annotations"))
    return {"images": [record for _, record in images], "annotations": [record for _, record in annotations],
            "image_positions": [position for position, _ in images],
            "annotation_positions": [position for position, _ in annotations]}


class StreamedCocoUnits:
    """A COCO json read once and spilled to ``work_dir`` unit by unit (see the module docstring).

    Attributes as ``units.UnitSource`` (``details`` None). Picklable and small: ``load_unit`` reads the
    unit's spills from ``work_dir``, which must stay in place (and be shared storage for workers on
    other machines) until the conversion is done; the caller removes it. Any spill of an earlier run
    in ``work_dir`` is replaced.
    """

    def __init__(self, ann_file, image_dir, work_dir, *, shard_size: int | None = None,
                 shard_num: int | None = None, max_side: int | None = None, chunk_bytes: int = CHUNK_BYTES,
                 progress: bool = False):
        self.ann_path, self.work_dir = Path(ann_file), Path(work_dir)

        def read(spill: RawSpill):
            return read_coco_stream(self.ann_path, spill, chunk_bytes=chunk_bytes, progress=progress)

        (members, self.annotation_sha256), spilled = spill_units(self.work_dir, image_dir, read, shard_size=shard_size,
                                                                 shard_num=shard_num, max_side=max_side)
        self.name, self.source_format, self.annotation_file = str(ann_file), "coco", self.ann_path.name
        self.categories = dict(members)["categories"]
        self.other_members = {key: value for key, value in members if key not in COCO_KEYS}
        self.member_order = tuple(key for key, _ in members)
        self.details, self.source_problems = None, ()
        self.problems, self.units = spilled.problems, spilled.units
        self.num_image_records, self.num_annotation_records = spilled.num_image_records, spilled.num_annotation_records

    def load_unit(self, index: int) -> dict:
        """The document of unit ``index`` (as ``DocumentUnits.load_unit``)."""
        return load_spilled_unit(self.work_dir, index)

    def open_source(self):
        """The json file's bytes."""
        return open(self.ann_path, "rb")


def prepare_work_dir(work_dir: Path) -> None:
    """Create ``work_dir``; remove the spills an earlier run may have left in it."""
    work_dir.mkdir(parents=True, exist_ok=True)
    for path in work_dir.iterdir():
        if path.name in (RAW_IMAGES, RAW_ANNOTATIONS, RAW_IMAGE_IDS, *INDEX_FILES) or (
                path.name.startswith("unit-") and path.name.endswith(".jsonl")):
            with contextlib.suppress(FileNotFoundError):
                os.unlink(path)
