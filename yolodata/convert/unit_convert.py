"""One work unit -> its own one-file MindRecord set, its part of annotations.json and its record.

``convert_unit(task)`` runs in any process (engine worker): it loads the unit's sub-document from the
``UnitSource``, plans it with the source's GLOBAL categories (so class indices are the same in every
unit), decodes and checks its images, and writes into ``parts/unit-NNNNN.tmp/``:

- the MindRecord file under its final output name (a ``.db`` index records its data file's base
  name, so the file is never renamed; the folder is),
- ``images.part`` / ``annotations.part``: the converted images' json records and their annotations,
  serialized as annotations.json holds them, comma separated (the merge concatenates them),
- ``unit.json`` last: what the merge needs without reading images again (rows, image ids, box
  counts, skipped images with reasons, counts per category, clipped/dropped boxes, shrink figures,
  file name, size and sha256).

Then the folder is published by rename to ``parts/unit-NNNNN``. A unit is idempotent: a rerun
removes a leftover ``.tmp`` folder and writes the same bytes again. A user error (a ``--strict`` stop)
is returned as ``{"error": message}`` rather than raised, so that engines do not retry it.
"""
from __future__ import annotations

import dataclasses
import errno
import hashlib
import json
import os
import shutil
from pathlib import Path

import numpy as np

from ..fileio import write_file_durable
from ..mindrecord_shards import OneFileWriter, shard_paths
from .area_check import check_areas
from .coco_json import SourceDocument, parse_categories
from .fault_injection import InjectedFailure, claim_marker
from .plan import check_images, plan_conversion
from .problems import ConversionError, Problem, problem_order, reporting_write_errors, strict_stop
from .rows import decode_ahead, write_rows
from .shrink import ShrinkOptions

UNIT_RECORD_NAME = "unit.json"
IMAGES_PART_NAME = "images.part"
ANNOTATIONS_PART_NAME = "annotations.part"
UNIT_RECORD_VERSION = 1
FAIL_ONCE_VARIABLE = "YOLODATA_TEST_FAIL_UNIT_ONCE"   # test hook: "UNIT_INDEX:MARKER_PATH" (see _maybe_fail_once)


@dataclasses.dataclass(frozen=True)
class UnitTask:
    """What a worker needs to convert one unit (picklable)."""

    source: object                # the UnitSource
    index: int                    # the unit's index in ``source.units``
    parts_dir: str                # where the unit's folder is published
    image_dir: str
    run_key: str                  # identity of the run's source and options (resume checks it)
    drop_empty: bool
    strict: bool
    exif_frame: str
    shrink: ShrinkOptions
    decode_threads: int
    file_mode: int | None
    output_dir: str = ""          # the conversion's output folder (messages)
    fail_once: str | None = None  # test hook (FAIL_ONCE_VARIABLE): raise once before publishing this unit


def unit_file_name(index: int, num_units: int) -> str:
    """The output name of unit ``index``'s MindRecord file: data.mindrecord<k>, as a set of that many files."""
    return shard_paths(Path("."), num_units)[index].name


def unit_folder(parts_dir, index: int) -> Path:
    return Path(parts_dir) / f"unit-{index:05d}"


def file_digest(path: Path) -> str:
    """sha256 over a file's data regions and their offsets ("sparse-sha256:<hex>").

    A MindRecord file's apparent size includes the unused rest of its 16 MiB header area and its last
    32 MiB page, which the file system keeps as holes: hashing only the data regions (found with
    SEEK_DATA / SEEK_HOLE; the whole file where those are not supported) identifies the file at a
    fraction of the cost of reading the zeros. Used for the unit records' resume check only.
    """
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for start, stop in _data_regions(handle.fileno()):
            digest.update(f"{start}:{stop};".encode("ascii"))
            handle.seek(start)
            remaining = stop - start
            while remaining > 0:
                block = handle.read(min(remaining, 1 << 22))
                if not block:
                    break
                digest.update(block)
                remaining -= len(block)
    return "sparse-sha256:" + digest.hexdigest()


def _data_regions(descriptor: int) -> list:
    """[(start, stop)] of the file's data (the whole file when the system cannot tell holes)."""
    size = os.fstat(descriptor).st_size
    if not hasattr(os, "SEEK_DATA"):
        return [(0, size)]
    regions, position = [], 0
    try:
        while position < size:
            start = os.lseek(descriptor, position, os.SEEK_DATA)
            stop = os.lseek(descriptor, start, os.SEEK_HOLE)
            regions.append((start, stop))
            position = stop
    except OSError as error:
        if error.errno == errno.ENXIO:  # no data after ``position``
            return regions
        return [(0, size)]
    return regions


def problem_record(problem: Problem) -> dict:
    """A Problem as the unit record keeps it (every field, so the summary can describe it again)."""
    return dataclasses.asdict(problem)


def problem_from_record(record: dict) -> Problem:
    return Problem(**record)


def _json_items(records) -> bytes:
    """Records serialized as annotations.json holds them, comma separated."""
    return ",".join(json.dumps(r, ensure_ascii=False, separators=(",", ":")) for r in records).encode("utf-8")


def convert_unit(task: UnitTask) -> dict:
    """Convert unit ``task.index`` and publish it (see the module docstring); returns its record."""
    final = unit_folder(task.parts_dir, task.index)
    temp = final.with_name(final.name + ".tmp")
    shutil.rmtree(temp, ignore_errors=True)
    temp.mkdir(parents=True)
    try:
        record = _write_unit(task, temp)
        _maybe_fail_once(task)
    except ConversionError as error:
        shutil.rmtree(temp, ignore_errors=True)
        return {"index": task.index, "error": str(error)}
    except BaseException:
        shutil.rmtree(temp, ignore_errors=True)
        raise
    shutil.rmtree(final, ignore_errors=True)
    os.rename(temp, final)
    return record


def _maybe_fail_once(task: UnitTask) -> None:
    """The test hook (``FAIL_ONCE_VARIABLE`` in the driver's environment, "UNIT_INDEX:MARKER_PATH"):
    the chosen unit fails after writing, before publishing, while the marker file does not exist, and
    creates it (so a retry, in any process or on any node that shares the path, succeeds). An empty
    marker path ("2:") fails every attempt: a run stopped by a unit that never converts."""
    if not task.fail_once:
        return
    index, _, marker = task.fail_once.partition(":")
    if int(index) != task.index or (marker and not claim_marker(Path(marker))):
        return
    raise InjectedFailure(f"injected failure of unit {task.index} ({FAIL_ONCE_VARIABLE})")


def plan_unit(source, index: int, image_dir, *, drop_empty: bool):
    """(unit document, image checks, plan) of unit ``index``, planned with the source's GLOBAL
    categories (class indices are the same in every unit); no image is read."""
    document = source.load_unit(index)
    categories = parse_categories(source.categories, source.name)
    checks = check_images(document["images"], Path(image_dir), positions=document.get("image_positions"))
    unit_document = SourceDocument(document, source.name, b"", source.annotation_sha256, source.source_format,
                                   source.annotation_file)
    plan = plan_conversion(unit_document, checks, categories, drop_empty=drop_empty,
                           annotation_positions=document.get("annotation_positions"))
    return document, checks, plan


def plan_errors(source, image_dir, *, drop_empty: bool) -> list:
    """Every error a --strict run stops at before reading images: the records no unit can take and the
    plans of all units (images sorted by id, then the annotations'), one unit in memory at a time."""
    routed = [p for p in source.problems if p.is_error]
    image_errors = [p for p in routed if p.about == "image"]
    annotation_errors = [p for p in routed if p.about == "annotation"]
    for index in range(len(source.units)):
        _, _, plan = plan_unit(source, index, image_dir, drop_empty=drop_empty)
        image_errors += [p for p in plan.problems if p.is_error]
        annotation_errors += [p for p in plan.annotation_problems if p.is_error]
    return sorted(image_errors, key=problem_order) + annotation_errors


def _plan_unit(task: UnitTask):
    """The unit's plan; ConversionError on a --strict problem (the driver checked the plans before, so
    this only happens when the files changed in between)."""
    document, checks, plan = plan_unit(task.source, task.index, task.image_dir, drop_empty=task.drop_empty)
    errors = [p for p in plan.problems + plan.annotation_problems if p.is_error]
    if task.strict and errors:
        raise strict_stop(errors, "in the annotation file or image paths")
    return document, checks, plan


def _write_unit(task: UnitTask, temp: Path) -> dict:
    """Plan, decode and write the unit into ``temp``; returns the record (written last)."""
    document, checks, plan = _plan_unit(task)
    planned = {entry.image_id for entry in plan.entries}
    candidates = [c for c in checks.candidates if c.image_id in planned]
    name = unit_file_name(task.index, len(task.source.units))
    writer = OneFileWriter(temp / name, file_mode=task.file_mode)
    try:
        with decode_ahead(candidates, exif_frame=task.exif_frame, num_workers=task.decode_threads,
                          shrink=task.shrink) as prefetch:
            written = write_rows(plan, prefetch, writer, strict=task.strict, progress=False,
                                 output_dir=task.output_dir, require_rows=False)
        with reporting_write_errors(task.output_dir):
            shard = writer.close()
    except BaseException:
        writer.discard()
        raise
    converted = [image.entry for image in written.converted]
    write_file_durable(temp / IMAGES_PART_NAME, _json_items(entry.record for entry in converted))
    write_file_durable(temp / ANNOTATIONS_PART_NAME,
                       _json_items(ann for entry in converted for ann in entry.annotations))
    record = unit_record(task, document, plan, written, shard, temp)
    write_file_durable(temp / UNIT_RECORD_NAME, json.dumps(record, ensure_ascii=False).encode("utf-8"))
    return compact_record(record)


def compact_record(record: dict) -> dict:
    """The record with its per-row lists as int64 arrays (8 bytes per row, not a Python int each): what
    the driver keeps of every unit until the merge."""
    return {**record, "image_ids": np.asarray(record["image_ids"], np.int64),
            "boxes_per_row": np.asarray(record["boxes_per_row"], np.int64)}


def unit_record(task: UnitTask, document: dict, plan, written, shard: dict | None, temp: Path) -> dict:
    """What the merge needs from the unit, without reading its images again (json-serializable)."""
    labels = [image.labels for image in written.converted]
    counts = [0] * len(plan.categories)
    for array in labels:
        for value in array[:, 4].astype(int).tolist():
            counts[value] += 1
    areas = check_areas([ann for image in written.converted for ann in image.entry.annotations])
    spec = task.source.units[task.index]
    return {
        "version": UNIT_RECORD_VERSION, "run_key": task.run_key, "index": task.index,
        "first_image_id": spec.first_image_id, "last_image_id": spec.last_image_id,
        "file": None if shard is None else shard["file"],
        "num_rows": len(written.converted),
        "num_bytes": 0 if shard is None else shard["num_bytes"],
        "stored_bytes": 0 if shard is None else shard["stored_bytes"],
        "digest": None if shard is None else file_digest(temp / shard["file"]),
        "db_digest": None if shard is None else file_digest(temp / (shard["file"] + ".db")),
        "image_ids": [image.entry.image_id for image in written.converted],
        "boxes_per_row": [len(array) for array in labels],
        "num_crowd_boxes": int(sum(int(array[:, 5].sum()) for array in labels)),
        "boxes_per_class": counts,
        "boxes_clipped": int(sum(image.boxes_clipped for image in written.converted)),
        "boxes_dropped": int(sum(image.boxes_dropped for image in written.converted)),
        "skipped": [problem_record(p) for p in plan.problems + written.skipped],
        "skipped_annotations": [problem_record(p) for p in plan.annotation_problems],
        "reencoded": list(written.reencoded),
        "shrink": dataclasses.asdict(written.shrink),
        "areas": dataclasses.asdict(areas),
        "num_source_images": len(document["images"]),
        "num_source_annotations": len(document["annotations"]),
        "num_converted_annotations": int(sum(len(image.entry.annotations) for image in written.converted)),
    }
