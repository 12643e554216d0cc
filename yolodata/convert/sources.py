"""YOLO txt and Pascal VOC datasets through the converter: a reader of ``yolodata.formats`` makes the
COCO-style records, spilled to disk unit by unit (``reader_stream``), which ``run.convert_units`` checks
and writes exactly as a COCO json's.

The reader's problems travel with the document (``SourceDocument.problems``): listed in the summary
and in manifest.json (``source_problems``, each with its file and line), and with ``strict`` any error
among them stops the run before an image is read. manifest.json also records the source
(``source_format``, ``source``: layout, files, split, class order, counts).
"""
from __future__ import annotations

import shutil
import time
from pathlib import Path
from typing import Callable

from ..formats import FormatError, read_voc_dataset, read_yolo_dataset
from ..formats.common import DocumentBuilder, SourceDataset
from .coco_json import SourceDocument
from .output import ConversionSummary, check_output_target
from .problems import ConversionError
from .reader_stream import StreamedReaderUnits
from .output_lock import exclusive_output
from .run import convert_units, opened_engine, shard_request, spill_dir_of
from .shrink import DEFAULT_JPEG_QUALITY, ShrinkOptions
from .unit_sources import DocumentUnits


def _read_dataset(read: Callable[[], SourceDataset], name: str, annotation_file: str,
                  log) -> tuple[SourceDocument, Path]:
    """(the dataset's SourceDocument, its image root); ConversionError when it cannot be read at all."""
    log = log or (lambda message: None)
    started = time.perf_counter()
    try:
        dataset = read()
    except FormatError as error:
        raise ConversionError(str(error)) from error
    log(f"{name}: read {len(dataset.document['images'])} images, {len(dataset.document['annotations'])} boxes, "
        f"{len(dataset.problems)} problem(s) in {time.perf_counter() - started:.2f} s")
    source = SourceDocument.from_document(dataset.document, name, source_format=dataset.source_format,
                                          annotation_file=annotation_file, details=dataset.source,
                                          problems=dataset.problems)
    return source, dataset.image_root


def _convert_dataset(read: Callable[[Callable], SourceDataset], name: str, annotation_file: str, output_dir, *,
                     log, shard_size, shard_num, max_side, jpeg_quality, **options) -> ConversionSummary:
    """Read the dataset with ``read(builder_factory)`` into work units spilled beside ``output_dir``
    (``reader_stream``: the records never all in memory), convert them (``run.convert_units``), and
    remove the spill."""
    started = time.perf_counter()
    shard_size, shard_num = shard_request(shard_size, shard_num)
    shrink = ShrinkOptions(max_side, jpeg_quality)
    output_dir = Path(output_dir)
    check_output_target(output_dir)
    spill_dir = spill_dir_of(output_dir)
    engine, num_workers = options.pop("engine", "local"), options.pop("num_workers", None)
    with exclusive_output(output_dir):
        try:
            with opened_engine(engine, num_workers) as task_engine:   # its workers start while the dataset is read
                units = StreamedReaderUnits(read, name, annotation_file, spill_dir, shard_size=shard_size,
                                            shard_num=shard_num, max_side=shrink.max_side)
                (log or (lambda message: None))(
                    f"{name}: read {units.num_image_records} images, {units.num_annotation_records} boxes, "
                    f"{len(units.source_problems)} problem(s) in {time.perf_counter() - started:.2f} s")
                return convert_units(units, units.image_root, output_dir, shard_size=shard_size,
                                     shard_num=shard_num, engine=task_engine, num_workers=num_workers,
                                     shrink=shrink, log=log, started=started, **options)
        finally:
            shutil.rmtree(spill_dir, ignore_errors=True)


def yolo_units(data_file, *, split: str = "train", shard_size: int | None = None, shard_num: int | None = None,
               exif_frame: str = "auto", progress: bool = False, log: Callable[[str], None] | None = None,
               work_dir=None) -> tuple[DocumentUnits | StreamedReaderUnits, Path]:
    """(the work units of a YOLO txt dataset's ``split``, the folder its image file names are relative to).

    Without ``work_dir`` the reader builds the whole COCO-style document in memory (a few hundred bytes
    per box) and the units are planned from it as for a COCO json; with ``work_dir`` its records are
    spilled there instead (``reader_stream.StreamedReaderUnits``: same units, unit documents and
    identity, a few bytes per image in memory; the caller removes ``work_dir`` when done).
    """
    name = f"YOLO dataset {data_file} (split {split})"
    if work_dir is not None:
        units = StreamedReaderUnits(
            lambda builder_factory: read_yolo_dataset(data_file, split, exif_frame=exif_frame, progress=progress,
                                                      builder_factory=builder_factory),
            name, Path(data_file).name, work_dir, shard_size=shard_size, shard_num=shard_num)
        (log or (lambda message: None))(f"{name}: read {units.num_image_records} images, "
                                        f"{units.num_annotation_records} boxes, "
                                        f"{len(units.source_problems)} problem(s)")
        return units, units.image_root
    source, image_root = _read_dataset(
        lambda: read_yolo_dataset(data_file, split, exif_frame=exif_frame, progress=progress),
        name, Path(data_file).name, log)
    return DocumentUnits(source, image_root, shard_size=shard_size, shard_num=shard_num), image_root


def voc_units(voc_dir, *, split: str | None = None, names_file=None, difficult: str = "ignore",
              shard_size: int | None = None, shard_num: int | None = None, exif_frame: str = "auto",
              progress: bool = False, log: Callable[[str], None] | None = None,
              work_dir=None) -> tuple[DocumentUnits | StreamedReaderUnits, Path]:
    """(the work units of a Pascal VOC folder, its image root); as ``yolo_units`` (``work_dir``: the
    reader's records spilled there), options as ``convert_voc``."""

    def read(builder_factory=DocumentBuilder):
        return read_voc_dataset(voc_dir, split, names_file=names_file, difficult=difficult, exif_frame=exif_frame,
                                progress=progress, builder_factory=builder_factory)

    if work_dir is not None:
        units = StreamedReaderUnits(read, _voc_name(voc_dir, split), _voc_annotation_file(split), work_dir,
                                    shard_size=shard_size, shard_num=shard_num)
        return units, units.image_root
    source, image_root = _read_dataset(read, _voc_name(voc_dir, split), _voc_annotation_file(split), log)
    return DocumentUnits(source, image_root, shard_size=shard_size, shard_num=shard_num), image_root


def _voc_name(voc_dir, split: str | None) -> str:
    return f"VOC dataset {voc_dir} ({'every XML' if split is None else 'split ' + split})"


def _voc_annotation_file(split: str | None) -> str:
    return "Annotations" if split is None else f"{split}.txt"


def convert_yolo(data_file, output_dir, *, split: str = "train", shard_size: int | str | None = None,
                 shard_num: int | None = None, engine: str = "local", num_workers: int | None = None,
                 drop_empty: bool = False, strict: bool = False, exif_frame: str = "auto",
                 max_side: int | None = None, jpeg_quality: int = DEFAULT_JPEG_QUALITY, progress: bool = False,
                 log: Callable[[str], None] | None = None) -> ConversionSummary:
    """Convert the ``split`` of a YOLO txt dataset (Ultralytics ``data.yaml`` or Darknet ``obj.data``;
    ``yolodata.formats.yolo_txt``) into ``output_dir``. Options, output and guarantees as ``convert_coco``;
    ``exif_frame`` also says which frame of an EXIF-rotated picture the normalised labels refer to."""
    return _convert_dataset(lambda builder_factory: read_yolo_dataset(data_file, split, exif_frame=exif_frame,
                                                                      progress=progress,
                                                                      builder_factory=builder_factory),
                            f"YOLO dataset {data_file} (split {split})", Path(data_file).name, output_dir, log=log,
                            shard_size=shard_size, shard_num=shard_num, engine=engine, num_workers=num_workers,
                            drop_empty=drop_empty, strict=strict,
                            exif_frame=exif_frame, max_side=max_side, jpeg_quality=jpeg_quality, progress=progress)


def convert_voc(voc_dir, output_dir, *, split: str | None = None, names_file=None, difficult: str = "ignore",
                shard_size: int | str | None = None, shard_num: int | None = None, engine: str = "local",
                num_workers: int | None = None, drop_empty: bool = False, strict: bool = False,
                exif_frame: str = "auto", max_side: int | None = None, jpeg_quality: int = DEFAULT_JPEG_QUALITY,
                progress: bool = False, log: Callable[[str], None] | None = None) -> ConversionSummary:
    """Convert a Pascal VOC folder (every XML of Annotations/, or the ids of ImageSets/Main/<split>.txt;
    ``yolodata.formats.voc``) into ``output_dir``. ``names_file`` fixes the class order (default: sorted
    names); ``difficult`` is "ignore" (crowd-like ignored boxes), "keep" or "drop". Options, output and
    guarantees as ``convert_coco``."""
    annotation_file, name = _voc_annotation_file(split), _voc_name(voc_dir, split)
    return _convert_dataset(lambda builder_factory: read_voc_dataset(voc_dir, split, names_file=names_file,
                                                                     difficult=difficult, exif_frame=exif_frame,
                                                                     progress=progress,
                                                                     builder_factory=builder_factory),
                            name, annotation_file, output_dir, log=log, shard_size=shard_size, shard_num=shard_num,
                            engine=engine, num_workers=num_workers,
                            drop_empty=drop_empty, strict=strict, exif_frame=exif_frame, max_side=max_side,
                            jpeg_quality=jpeg_quality, progress=progress)
