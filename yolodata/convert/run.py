"""The conversion as a whole: units planned, converted by an engine, merged into the output.

1. A ``UnitSource`` (``convert.units``) splits the source's images, in image-id order, into work
   units sized by planned bytes (``--shard_size``; ``units.planned_picture_bytes``) or into
   ``--shard_num`` units; each unit becomes one MindRecord file of the output.
2. The units are converted by an engine (``convert.engines``: a local process pool or Ray), each into
   its own folder ``.OUTPUT.parts/unit-NNNNN`` published by rename when complete
   (``convert.unit_convert``). The engine is opened before step 1, so that its workers start and
   import the unit conversion (MindSpore with it) while the driver plans; it is closed on every path.
3. The output is merged from the unit records without reading images again (``convert.merge``) in a
   temporary folder beside ``output_dir`` that replaces it by rename when complete
   (``fileio.AtomicOutput``); then the parts folder is removed.

Resume: a run that stops (error, Ctrl-C, a killed process, a lost node) leaves the published units
in the parts folder. The next run with the same source and options converts only the other units;
a run with another source or options starts the parts folder afresh. Unit records carry their file's
size and sha256, checked before a unit is reused. Output bytes never depend on the engine, the worker
count, retries or resumption.
"""
from __future__ import annotations

import hashlib
import json
import os
import shutil
import contextlib
import time
import warnings as warnings_lib
from pathlib import Path
from typing import Callable

from .. import image_io
from ..checks import check_int, resolve_num_workers
from ..fileio import AtomicOutput, default_file_mode, write_file_durable
from ..schema import ANNOTATIONS_NAME, MANIFEST_NAME, SCHEMA_VERSION
from . import units as units_lib
from .coco_json import SourceDocument, check_coco_shape, parse_categories
from .coco_stream import StreamedCocoUnits
from .engines import ENGINES, open_engine
from .merge import build_unit_manifest, compact_record, link_unit_files, merge_records, write_unit_annotations
from .output import CONVERTER_VERSION, ConversionSummary, check_output_target
from .output_lock import exclusive_output
from .problems import ConversionError, reporting_write_errors, strict_stop
from .rows import progress_bar, shards_warning
from .shrink import DEFAULT_JPEG_QUALITY, ShrinkOptions
from .unit_sources import DocumentUnits
from .unit_convert import FAIL_ONCE_VARIABLE, UNIT_RECORD_NAME, UNIT_RECORD_VERSION, UnitTask, compact_record, \
    convert_unit, file_digest, plan_errors, unit_folder

RUN_RECORD_NAME = "run.json"
UNIT_MODULE = convert_unit.__module__    # what the engine's workers import while the driver plans
LAZY_LOAD_WARNING_KIND = "lazy_load_rows"


def parse_shard_size(text) -> int:
    """Bytes from "512M", "1G", "1.5G", "65536" (K, M, G, T: powers of 1024); ValueError otherwise."""
    value = str(text).strip().upper().removesuffix("B").removesuffix("I")
    scale = 1
    for position, suffix in enumerate("KMGT", start=1):
        if value.endswith(suffix):
            value, scale = value[:-1], 1024 ** position
            break
    try:
        number = float(value) if "." in value else int(value)
    except ValueError:
        raise ValueError(f"shard size {text!r} is not a size; write bytes or a number with K, M, G or T "
                         f"(e.g. 512M, 1G)") from None
    size = int(number * scale)
    if size < 1:
        raise ValueError(f"shard size {text!r} must be positive")
    return size


def shard_request(shard_size, shard_num) -> tuple[int | None, int | None]:
    """(shard_size, shard_num) with exactly one set: ``shard_num`` when given, else ``shard_size``
    (default ``units.DEFAULT_SHARD_SIZE``); ValueError when both are given or one is out of range."""
    if shard_size is not None and shard_num is not None:
        raise ValueError("give --shard_size or --shard_num, not both")
    if shard_num is not None:
        return None, check_int("shard_num", shard_num, minimum=1, maximum=units_lib.MAX_FILES_PER_READER)
    if shard_size is None:
        return units_lib.DEFAULT_SHARD_SIZE, None
    size = parse_shard_size(shard_size) if isinstance(shard_size, str) else check_int("shard_size", shard_size,
                                                                                      minimum=1)
    return size, None


def check_unit_plan(source, shard_size: int | None) -> list[str]:
    """Refuse a plan of more files than one reader opens; the warnings a plan deserves (as text)."""
    units = source.units
    num_images = sum(unit.num_images for unit in units)
    if len(units) > units_lib.MAX_FILES_PER_READER:
        total = sum(unit.planned_bytes for unit in units)
        least = -(-(total + units_lib.ROW_OVERHEAD_BYTES * num_images) // units_lib.MAX_FILES_PER_READER)
        raise ConversionError(f"{source.name}: the plan has {len(units)} files ({num_images} images, {total:,} "
                              f"bytes at --shard_size {shard_size:,}), but MindDataset reads at most "
                              f"{units_lib.MAX_FILES_PER_READER} files; use --shard_size {least:,} or more")
    if num_images > units_lib.LAZY_LOAD_ROWS:
        return [f"{num_images:,} images in one set: above {units_lib.LAZY_LOAD_ROWS:,} rows MindDataset loads "
                f"its index lazily (slower start and random access); consider converting splits separately"]
    return []


def parts_dir_of(output_dir: Path) -> Path:
    """Where the units of a conversion into ``output_dir`` are published until the merge (beside it)."""
    return output_dir.parent / f".{output_dir.name}.parts"


def run_key(source, image_dir: Path, options: dict) -> str:
    """The identity of what a unit's content depends on: source, images, options, plan, code versions."""
    identity = {"converter": CONVERTER_VERSION, "schema": SCHEMA_VERSION, "record": UNIT_RECORD_VERSION,
                "source": [source.name, source.source_format, source.annotation_file, source.annotation_sha256],
                "categories": source.categories, "image_dir": os.path.abspath(image_dir), "options": options,
                "units": [[u.first_image_id, u.last_image_id, u.num_images, u.planned_bytes] for u in source.units]}
    text = json.dumps(identity, sort_keys=True, ensure_ascii=False, default=str)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def prepare_parts(parts_dir: Path, key: str) -> None:
    """Keep the parts folder of an interrupted run with the same key (minus unfinished ``.tmp``
    folders); start it afresh otherwise."""
    record = parts_dir / RUN_RECORD_NAME
    try:
        same = json.loads(record.read_text())["run_key"] == key
    except (OSError, ValueError, KeyError, TypeError):
        same = False
    if not same:
        shutil.rmtree(parts_dir, ignore_errors=True)
        parts_dir.mkdir(parents=True)
        write_file_durable(record, json.dumps({"run_key": key}).encode("utf-8"))
        return
    for leftover in parts_dir.glob("unit-*.tmp"):
        shutil.rmtree(leftover, ignore_errors=True)


def published_record(parts_dir: Path, index: int, key: str) -> dict | None:
    """The record of unit ``index`` when it was published by a run with this key and its files are intact."""
    folder = unit_folder(parts_dir, index)
    try:
        record = json.loads((folder / UNIT_RECORD_NAME).read_text(encoding="utf-8"))
        if record.get("run_key") != key or record.get("index") != index:
            return None
        if record["file"] is not None:
            path = folder / record["file"]
            if (path.stat().st_size != record["num_bytes"] or file_digest(path) != record["digest"]
                    or file_digest(Path(f"{path}.db")) != record["db_digest"]):
                return None
    except (OSError, ValueError, KeyError, TypeError):
        return None
    return compact_record(record)


def _check_common(exif_frame: str, image_dir, engine) -> None:
    """The arguments every entry point takes (``engine``: a name, or an engine already opened)."""
    if exif_frame not in image_io.EXIF_FRAMES:
        raise ValueError(f"exif_frame must be one of {image_io.EXIF_FRAMES}, got {exif_frame!r}")
    if isinstance(engine, str) and engine not in ENGINES:
        raise ValueError(f"engine must be one of {ENGINES}, got {engine!r}")
    if not Path(image_dir).is_dir():
        raise ConversionError(f"--image_dir {image_dir} is not a folder")


def _engine_workers(engine: str, num_workers: int | None) -> int | None:
    """Local: processes, at most the CPU count (default: it). Ray: concurrent tasks as asked (default
    None: as many as the Ray cluster has CPUs), since the cluster's CPUs are not this machine's."""
    if engine == "local":
        return resolve_num_workers(num_workers, "num_workers")
    return None if num_workers is None else check_int("num_workers", num_workers, minimum=1)


def _check_source_problems(source, strict: bool, image_dir: Path, drop_empty: bool) -> None:
    """Problems found before any image is read: the categories; a reader's errors and records no unit
    can take; with --strict, every problem of the plans of all units too (records, file names, files
    that exist): all listed at once, before anything is written."""
    parse_categories(source.categories, source.name)
    reader_errors = [p for p in source.source_problems if p.is_error]
    if strict and reader_errors:
        raise strict_stop(reader_errors, f"in {source.name}")
    if not source.units:
        errors = [p for p in source.problems if p.is_error] + reader_errors
        raise ConversionError(f"no image of {source.name} can be converted ({len(errors)} skipped, e.g. "
                              f"{errors[0].describe() if errors else 'none listed'}); nothing was written")
    if strict:
        errors = plan_errors(source, image_dir, drop_empty=drop_empty)
        if errors:
            raise strict_stop(errors, "in the annotation file or image paths")


def _unit_tasks(source, pending: list, parts_dir: Path, image_dir: Path, key: str, *, num_workers: int,
                drop_empty: bool, strict: bool, exif_frame: str, shrink: ShrinkOptions) -> list:
    """One UnitTask per pending unit; decode threads split the workers when there are fewer units."""
    decode_threads = 1 if num_workers is None else max(1, num_workers // max(1, min(num_workers, len(pending))))
    file_mode = default_file_mode()
    fail_once = os.environ.get(FAIL_ONCE_VARIABLE) or None
    output_dir = parts_dir.parent / parts_dir.name[1:-len(".parts")]
    return [UnitTask(source, index, str(parts_dir), str(image_dir), key, drop_empty, strict, exif_frame, shrink,
                     decode_threads, file_mode, output_dir=str(output_dir), fail_once=fail_once)
            for index in pending]


def _run_units(tasks: list, source, *, engine, progress: bool) -> list:
    """Convert the tasks' units on the engine, one progress bar over their images; a unit's user error
    (a --strict stop) stops the run."""
    total = sum(source.units[task.index].num_images for task in tasks)
    with progress_bar(progress, total) as bar:
        def on_result(position: int, record: dict) -> None:
            if "error" in record:
                raise ConversionError(record["error"])
            compact_record(record)  # in place: the engine keeps this object among its results
            bar.update(source.units[record["index"]].num_images)
            bar.set_postfix(units=f"{position + 1}", refresh=False)

        return engine.run(convert_unit, tasks, on_result=on_result)


def opened_engine(engine, num_workers: int | None):
    """``engine`` itself when it is an engine opened by the caller (left open), else a context that
    opens ``open_engine(engine, ...)`` warmed with the unit conversion and closes it."""
    if not isinstance(engine, str):
        return contextlib.nullcontext(engine)
    return open_engine(engine, _engine_workers(engine, num_workers), warm_module=UNIT_MODULE)


def convert_units(source, image_dir, output_dir, *, shard_size: int | None, shard_num: int | None,
                  engine="local", num_workers: int | None = None, drop_empty: bool = False,
                  strict: bool = False, exif_frame: str = "auto", shrink: ShrinkOptions = ShrinkOptions(),
                  progress: bool = False, log: Callable[[str], None] | None = None,
                  started: float | None = None) -> ConversionSummary:
    """Convert a ``UnitSource`` (units already planned with ``shard_size`` / ``shard_num``) into
    ``output_dir`` (see the module docstring). Returns the summary. ``engine``: a name of ``ENGINES``
    (opened here, after the planning) or an engine the caller opened before planning (``opened_engine``
    with the same ``num_workers``; left open).

    Raises ConversionError for user errors: nothing of ``output_dir`` changed, and the parts folder is
    removed (a user error needs other input or options, which start afresh anyway). Any other failure
    (an interrupt, a worker that died, a task that kept failing) keeps the published units there for
    the next run.
    """
    started = time.perf_counter() if started is None else started
    image_dir, output_dir = Path(image_dir), Path(output_dir)
    log = log or (lambda message: None)
    _check_common(exif_frame, image_dir, engine)
    workers = _engine_workers(engine, num_workers) if isinstance(engine, str) else engine.num_workers
    options = {"drop_empty": bool(drop_empty), "exif_frame": exif_frame, "shard_num": shard_num,
               "shard_size": shard_size, **shrink.manifest_options()}
    parts_dir = parts_dir_of(output_dir)
    atomic = AtomicOutput(output_dir, check_output_target)
    with exclusive_output(output_dir), opened_engine(engine, num_workers) as task_engine, atomic as temp:
        try:
            _check_source_problems(source, strict, image_dir, drop_empty)
            for message in check_unit_plan(source, shard_size):
                warnings_lib.warn(message, stacklevel=2)
                log(f"warning: {message}")
            key = run_key(source, image_dir, options)
            prepare_parts(parts_dir, key)
            records, convert_seconds = _convert_pending(source, parts_dir, image_dir, key, workers=workers,
                                                        engine=task_engine, drop_empty=drop_empty, strict=strict,
                                                        exif_frame=exif_frame, shrink=shrink, progress=progress,
                                                        log=log)
            summary = _merge_output(source, records, parts_dir, output_dir, temp, atomic, options=options,
                                    shard_num=shard_num, log=log)
        except ConversionError:
            shutil.rmtree(parts_dir, ignore_errors=True)
            raise
        shutil.rmtree(parts_dir, ignore_errors=True)
    summary.seconds, summary.convert_seconds, summary.num_workers = time.perf_counter() - started, \
        convert_seconds, workers or 0
    return summary


def _convert_pending(source, parts_dir: Path, image_dir: Path, key: str, *, workers: int, engine,
                     drop_empty: bool, strict: bool, exif_frame: str, shrink: ShrinkOptions, progress: bool,
                     log) -> tuple[list, float]:
    """(the records of every unit in unit order, seconds spent converting): units published by an
    earlier run with the same key are reused, the others converted on the engine."""
    records = {i: compact_record(r) for i in range(len(source.units))
               if (r := published_record(parts_dir, i, key)) is not None}
    pending = [index for index in range(len(source.units)) if index not in records]
    log(f"{source.name}: {len(source.units)} unit(s), {len(records)} already converted by an earlier run")
    converting = time.perf_counter()
    tasks = _unit_tasks(source, pending, parts_dir, image_dir, key, num_workers=workers, drop_empty=drop_empty,
                        strict=strict, exif_frame=exif_frame, shrink=shrink)
    for record in _run_units(tasks, source, engine=engine, progress=progress):
        records[record["index"]] = record
    return [records[i] for i in range(len(source.units))], time.perf_counter() - converting


def _merge_output(source, records: list, parts_dir: Path, output_dir: Path, temp: Path, atomic: AtomicOutput, *,
                  options: dict, shard_num: int | None, log) -> ConversionSummary:
    """The output from the unit records into ``temp``, committed; the summary (times filled by the caller)."""
    merged = merge_records(source, records)
    if not merged.num_images:
        raise ConversionError(f"none of the images of {source.name} could be converted; nothing was written:"
                              + "".join(f"\n  {p.describe()}" for p in merged.skipped[:20]))
    num_source_images = sum(unit.num_images for unit in source.units)
    warnings = [w for w in (merged.areas.warning(),
                            shard_num and shards_warning(shard_num, num_source_images, len(merged.shards)))
                if w]
    for warning in warnings:
        log(f"warning: {warning.message}")
    manifest = build_unit_manifest(source, merged, options, warnings)
    with reporting_write_errors(output_dir):
        link_unit_files(parts_dir, records, temp)
        write_unit_annotations(temp / ANNOTATIONS_NAME, source, merged, parts_dir)
        write_file_durable(temp / MANIFEST_NAME, manifest.to_json())
        stats = [p.stat() for p in temp.iterdir() if p.is_file()]
        atomic.commit()
    log(f"wrote {output_dir}")
    return ConversionSummary(
        output_dir=str(output_dir), num_images=manifest.num_images, num_boxes=manifest.num_boxes,
        num_background=manifest.num_background_images, boxes_clipped=manifest.boxes_clipped,
        boxes_dropped=manifest.boxes_dropped["empty_after_clipping"], skipped=merged.skipped,
        skipped_annotations=merged.skipped_annotations, reencoded=merged.reencoded, shards=merged.shards,
        bytes_written=sum(st.st_size for st in stats),
        disk_bytes=sum(getattr(st, "st_blocks", 0) * 512 or st.st_size for st in stats), seconds=0.0,
        convert_seconds=0.0, num_workers=0, dataset_id=manifest.dataset_id, warnings=warnings,
        source_format=source.source_format, source_problems=list(source.source_problems),
        max_side=options.get("max_side"), shrink=merged.shrink)


def spill_dir_of(output_dir: Path) -> Path:
    """Where a COCO json is spilled unit by unit during a conversion into ``output_dir`` (beside it, so
    that workers on other machines find it wherever they find the output; removed at the end)."""
    return output_dir.parent / f".{output_dir.name}.spill"


def convert_coco(image_dir, ann_file, output_dir, *, shard_size: int | str | None = None,
                 shard_num: int | None = None, engine: str = "local", num_workers: int | None = None,
                 drop_empty: bool = False, strict: bool = False, exif_frame: str = "auto",
                 max_side: int | None = None, jpeg_quality: int = DEFAULT_JPEG_QUALITY,
                 progress: bool = False, log: Callable[[str], None] | None = None) -> ConversionSummary:
    """Convert a COCO-format dataset (an instances json and its image folder) into ``output_dir``.

    Files: one MindRecord file per work unit of about ``shard_size`` bytes of stored images (default
    ``units.DEFAULT_SHARD_SIZE``; "512M", "1G" or bytes), or ``shard_num`` files of nearly equal bytes
    (one of the two). ``engine`` ("local": a process pool; "ray") runs the units on ``num_workers``
    workers; the output is the same for any engine and worker count, and a rerun after an
    interruption converts only the units not yet published. ``drop_empty`` leaves out images without
    boxes; ``strict`` stops at the first problem instead of skipping the image; ``exif_frame`` says
    which frame the json's sizes describe for EXIF-rotated pictures (``image_io.prepare_source_image``).
    ``max_side``: pictures whose long side exceeds it are stored shrunk to that long side, JPEGs
    re-encoded at ``jpeg_quality`` (``convert.shrink``). ``progress`` shows a tqdm bar (images/s) on
    stderr; ``log`` receives a few one-line status messages. Returns the summary.

    Raises ConversionError for user errors (the message says what to fix) and ValueError for bad
    arguments. An existing ``output_dir`` is replaced only by a complete result.
    """
    started = time.perf_counter()
    shard_size, shard_num = shard_request(shard_size, shard_num)
    shrink = ShrinkOptions(max_side, jpeg_quality)
    _check_common(exif_frame, image_dir, engine)
    output_dir = Path(output_dir)
    check_output_target(output_dir)
    spill_dir = spill_dir_of(output_dir)
    with exclusive_output(output_dir):
        try:
            with opened_engine(engine, num_workers) as task_engine:   # its workers start while the json is read
                source = StreamedCocoUnits(ann_file, image_dir, spill_dir, shard_size=shard_size,
                                           shard_num=shard_num, max_side=shrink.max_side, progress=progress)
                return convert_units(source, image_dir, output_dir, shard_size=shard_size, shard_num=shard_num,
                                     engine=task_engine, num_workers=num_workers, drop_empty=drop_empty,
                                     strict=strict, exif_frame=exif_frame, shrink=shrink, progress=progress,
                                     log=log, started=started)
        finally:
            shutil.rmtree(spill_dir, ignore_errors=True)


def convert_document(source: SourceDocument, image_dir, output_dir, *, shard_size: int | str | None = None,
                     shard_num: int | None = None, engine: str = "local", num_workers: int | None = None,
                     drop_empty: bool = False, strict: bool = False, exif_frame: str = "auto",
                     max_side: int | None = None, jpeg_quality: int = DEFAULT_JPEG_QUALITY, progress: bool = False,
                     log: Callable[[str], None] | None = None) -> ConversionSummary:
    """``convert_coco`` for a COCO-style document already in memory (a reader of another annotation
    format builds one: ``SourceDocument.from_document``); ``image_dir`` is what its file names are
    relative to. Same options, checks, output and guarantees.

    The reader's problems (``source.problems``) are listed in the summary and in manifest.json
    (``source_problems``; the images they leave out also under ``skipped``); with ``strict`` any of
    them that is an error stops the run here, before an image is read.
    """
    started = time.perf_counter()
    shard_size, shard_num = shard_request(shard_size, shard_num)
    shrink = ShrinkOptions(max_side, jpeg_quality)
    _check_common(exif_frame, image_dir, engine)
    check_coco_shape(source.document, source.name)
    with opened_engine(engine, num_workers) as task_engine:   # its workers start while the units are planned
        units = DocumentUnits(source, image_dir, shard_size=shard_size, shard_num=shard_num, max_side=shrink.max_side)
        return convert_units(units, image_dir, output_dir, shard_size=shard_size, shard_num=shard_num,
                             engine=task_engine, num_workers=num_workers, drop_empty=drop_empty, strict=strict,
                             exif_frame=exif_frame, shrink=shrink, progress=progress, log=log, started=started)
