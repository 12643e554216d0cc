"""The conversion as a whole: plan, images -> rows, output, with the stages overlapped.

The json is read member by member (``json_members``): the decode threads start on the images as soon
as the ``images`` list is parsed and checked, while the calling thread still parses the (usually much
larger) ``annotations`` list and runs the annotation checks. Images that the plan leaves out are
skipped by the threads from then on and never written; nothing is written before the plan is
complete. During the plan the interpreter's GIL switch interval is shortened so that the decode
threads get the GIL back promptly between json elements (restored afterwards).

The output is built in a temporary folder beside ``output_dir`` that replaces it by rename when
complete (``fileio.AtomicOutput``): a failure, Ctrl-C or a full disk leaves an existing output as it
was and no temporary files behind.
"""
from __future__ import annotations

import contextlib
import sys
import time
from pathlib import Path
from typing import Callable

from .. import image_io
from ..checks import check_int, resolve_num_workers
from ..fileio import AtomicOutput, default_file_mode, write_file_durable
from ..mindrecord_shards import ShardSetWriter
from ..schema import ANNOTATIONS_NAME, MANIFEST_NAME
from .area_check import check_areas
from .coco_json import SourceDocument, check_coco_shape, parse_categories, read_annotation_file, \
    read_coco_document
from .output import ConversionSummary, build_manifest, check_output_target, write_annotations
from .plan import check_images, plan_conversion
from .problems import ConversionError, problem_order, reporting_write_errors, skipped_by_source, strict_stop
from .shrink import DEFAULT_JPEG_QUALITY, ShrinkOptions
from .rows import decode_ahead, planned_shard_count, shards_warning, write_rows

GIL_SWITCH_INTERVAL = 1e-4           # seconds, while the plan runs next to the decode threads
MAX_SHARD_NUM = 1000


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
                 max_side: int | None = None, jpeg_quality: int = DEFAULT_JPEG_QUALITY,
                 progress: bool = False, log: Callable[[str], None] | None = None) -> ConversionSummary:
    """Convert a COCO-format dataset (an instances json and its image folder) into ``output_dir``.

    ``shard_num`` MindRecord files are written (fewer when there are fewer images, said in a warning);
    ``drop_empty`` leaves out images without boxes; ``strict`` stops at the first problem instead of
    skipping the image; ``exif_frame`` says which frame the json's sizes describe for EXIF-rotated
    pictures (``image_io.prepare_source_image``). ``max_side``: pictures whose long side exceeds it are
    stored shrunk to that long side, JPEGs re-encoded at ``jpeg_quality`` (``convert.shrink``; None keeps
    every picture's size). ``progress`` shows a tqdm bar (images/s) on stderr;
    ``log`` receives a few one-line status messages. Returns the summary.

    Raises ConversionError for user errors (the message says what to fix) and ValueError for bad
    arguments. Whatever happens, an existing ``output_dir`` is replaced only by a complete result, and
    no temporary file is left behind (except after SIGKILL; the next run removes those leftovers).
    """
    started = time.perf_counter()
    workers = _check_arguments(shard_num, exif_frame, num_workers, image_dir)
    shrink = ShrinkOptions(max_side, jpeg_quality)
    annotation_bytes, annotation_sha256 = read_annotation_file(ann_file)

    def parse(on_images: Callable[[list], None]) -> SourceDocument:
        document = read_coco_document(annotation_bytes, str(ann_file), on_images=on_images)
        return SourceDocument(document, str(ann_file), annotation_bytes, annotation_sha256, "coco",
                              Path(ann_file).name)

    return _convert(parse, str(ann_file), image_dir, output_dir, started=started, shard_num=shard_num,
                    workers=workers, drop_empty=drop_empty, strict=strict, exif_frame=exif_frame, shrink=shrink,
                    progress=progress, log=log)


def convert_document(source: SourceDocument, image_dir, output_dir, *, shard_num: int = 1,
                     num_workers: int | None = None, drop_empty: bool = False, strict: bool = False,
                     exif_frame: str = "auto", max_side: int | None = None,
                     jpeg_quality: int = DEFAULT_JPEG_QUALITY, progress: bool = False,
                     log: Callable[[str], None] | None = None) -> ConversionSummary:
    """``convert_coco`` for a COCO-style document already in memory (a reader of another annotation
    format builds one: ``SourceDocument.from_document``); ``image_dir`` is what its file names are
    relative to. Same options, checks, output and guarantees.

    The reader's problems (``source.problems``) are listed in the summary and in manifest.json
    (``source_problems``; the images they leave out also under ``skipped``); with ``strict`` any of
    them that is an error stops the run here, before an image is read.
    """
    started = time.perf_counter()
    workers = _check_arguments(shard_num, exif_frame, num_workers, image_dir)
    shrink = ShrinkOptions(max_side, jpeg_quality)
    check_coco_shape(source.document, source.name)
    reader_errors = [problem for problem in source.problems if problem.is_error]
    if strict and reader_errors:
        raise strict_stop(reader_errors, f"in {source.name}")
    if not source.document["images"]:
        raise ConversionError(f"no image of {source.name} can be converted ({len(reader_errors)} problem(s)"
                              + "".join(f"\n  {p.describe()}" for p in reader_errors[:20]) + "); nothing was written")

    def parse(on_images: Callable[[list], None]) -> SourceDocument:
        on_images(source.document["images"])
        return source

    return _convert(parse, source.name, image_dir, output_dir, started=started, shard_num=shard_num,
                    workers=workers, drop_empty=drop_empty, strict=strict, exif_frame=exif_frame, shrink=shrink,
                    progress=progress, log=log)


def _check_arguments(shard_num, exif_frame, num_workers, image_dir) -> int:
    """The number of decode threads, after checking the arguments (ValueError, or ConversionError for
    a missing image folder)."""
    check_int("shard_num", shard_num, minimum=1, maximum=MAX_SHARD_NUM)
    if exif_frame not in image_io.EXIF_FRAMES:
        raise ValueError(f"exif_frame must be one of {image_io.EXIF_FRAMES}, got {exif_frame!r}")
    workers = resolve_num_workers(num_workers, "num_workers")
    if not Path(image_dir).is_dir():
        raise ConversionError(f"--image_dir {image_dir} is not a folder")
    return workers


def _convert(parse: Callable, source_name: str, image_dir, output_dir, *, started: float, shard_num: int,
             workers: int, drop_empty: bool, strict: bool, exif_frame: str, shrink: ShrinkOptions,
             progress: bool, log) -> ConversionSummary:
    """The conversion (arguments checked); ``parse(on_images)`` returns the SourceDocument, calling
    ``on_images`` with the ``images`` list as soon as it has it."""
    image_dir, output_dir = Path(image_dir), Path(output_dir)
    log = log or (lambda message: None)
    file_mode = default_file_mode()  # read before any thread starts: reading it briefly changes the umask

    with contextlib.ExitStack() as stack:
        decoding: dict = {}

        def start_decoding(images: list) -> None:
            """Check the images list and start validating its images in threads (stage 2 begins)."""
            checks = check_images(images, image_dir)
            prefetch = decode_ahead(checks.candidates, exif_frame=exif_frame, num_workers=workers,
                                    shrink=shrink)
            decoding.update(checks=checks, prefetch=stack.enter_context(prefetch), started=time.perf_counter())

        with _prompt_gil_handoff():
            source = parse(start_decoding)
            categories = parse_categories(source.document["categories"], source_name)
            plan = plan_conversion(source, decoding["checks"], categories, drop_empty=drop_empty)
        planned = {entry.image_id for entry in plan.entries}
        prefetch = decoding["prefetch"]
        prefetch.drop({c.image_id for c in decoding["checks"].candidates} - planned, key=lambda c: c.image_id)
        log(f"{source_name}: {len(plan.entries)} images to convert, {len(plan.problems)} skipped by the json "
            f"checks, {len(plan.categories)} categories")
        errors = [p for p in plan.problems + plan.annotation_problems if p.is_error]
        if strict and errors:
            raise strict_stop(errors, "in the annotation file or image paths")
        if not plan.entries:
            raise ConversionError(f"no image of {source_name} can be converted ({len(plan.problems)} skipped, "
                                  f"e.g. {plan.problems[0].describe() if plan.problems else 'none listed'}); "
                                  f"nothing was written")

        atomic = AtomicOutput(output_dir, check_output_target)
        with atomic as temp:
            writer = ShardSetWriter(temp, planned_shard_count(len(plan.entries), shard_num),
                                    skip_empty_shards=True, file_mode=file_mode)
            try:
                written = write_rows(plan, prefetch, writer, strict=strict, progress=progress,
                                     output_dir=output_dir)
                with reporting_write_errors(output_dir):
                    shards = writer.close()
                convert_seconds = time.perf_counter() - decoding["started"]
                skipped = sorted(plan.problems + written.skipped + skipped_by_source(source.problems),
                                 key=problem_order)
                converted_annotations = [ann for image in written.converted for ann in image.entry.annotations]
                warnings = [warning for warning in (check_areas(converted_annotations).warning(),
                                                    shards_warning(shard_num, len(plan.entries), len(shards)))
                            if warning is not None]
                for warning in warnings:
                    log(f"warning: {warning.message}")
                options = {"drop_empty": bool(drop_empty), "exif_frame": exif_frame, "shard_num": shard_num,
                           **shrink.manifest_options()}
                manifest = build_manifest(plan, written.converted, skipped, written.reencoded, shards, options,
                                          warnings, shrunk=written.shrink.manifest_entry())
                with reporting_write_errors(output_dir):
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
        dataset_id=manifest.dataset_id, warnings=warnings, source_format=source.source_format,
        source_problems=list(source.problems), max_side=shrink.max_side, shrink=written.shrink)
