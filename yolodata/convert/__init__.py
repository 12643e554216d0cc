"""COCO-format annotations + image folder -> MindRecord shards, ``manifest.json`` and ``annotations.json``.

Stages, one module each:

1. ``coco_json``: the annotation document (a COCO instances json read member by member, or a
   COCO-style document built in memory by a reader of another format: ``SourceDocument``).
2. ``plan``: check every image and annotation record, the file names and that the files exist; map
   category ids to contiguous indices in id order; build every image's label array
   (``label_arrays``: boxes clipped to the image, empty ones dropped and counted). Problems are
   collected per image (``problems``); a document that is not COCO at all stops here, and with
   ``strict`` so does any problem, before anything is written.
3. ``rows``: threads read and fully decode every planned image of a work unit while the calling
   thread writes its rows, in image-id order, into the unit's own file (``yolodata.mindrecord_shards``).
4. ``output`` / ``merge``: ``manifest.json`` (with the warnings of ``area_check`` and the shard count)
   and ``annotations.json`` (the COCO json of exactly the converted images), built from the unit
   records; then the finished folder replaces the output by rename.

Work units (``units``): the image ids split into contiguous ranges sized by planned bytes (file
sizes; less for pictures --max_side shrinks), each converted on its own (``unit_convert``) by an
engine (``engines``: a local process pool, or Ray via ``ray_engine``) and published by rename, so an interrupted run resumes. ``run`` ties them together
(``convert_coco``, ``convert_document``, ``convert_units``); ``sources`` feeds it YOLO txt and Pascal
VOC datasets through the readers of ``yolodata.formats`` (``convert_yolo``, ``convert_voc``).
"""
from .area_check import AreaFindings, check_areas
from .coco_json import COCO_KEYS, SourceDocument, check_coco_shape, parse_categories, read_annotation_file, \
    read_coco_document
from .label_arrays import labels_for_images, labels_from_annotations, row_arrays
from .output import CONVERTER_VERSION, ConversionSummary, annotations_document, build_manifest, check_output_target
from .plan import ImageCandidate, ImageChecks, ImageEntry, Plan, check_images, file_name_problem, plan_conversion, \
    plan_source
from .problems import ConversionError, ConversionWarning, Problem
from .rows import ConvertedImage, planned_shard_count, shard_of_position, shard_starts
from .run import convert_coco, convert_document, convert_units, parse_shard_size
from .sources import convert_voc, convert_yolo

__all__ = [
    "AreaFindings", "check_areas",
    "COCO_KEYS", "SourceDocument", "check_coco_shape", "parse_categories", "read_annotation_file",
    "read_coco_document",
    "labels_for_images", "labels_from_annotations", "row_arrays",
    "CONVERTER_VERSION", "ConversionSummary", "annotations_document", "build_manifest", "check_output_target",
    "ImageCandidate", "ImageChecks", "ImageEntry", "Plan", "check_images", "file_name_problem", "plan_conversion",
    "plan_source",
    "ConversionError", "ConversionWarning", "Problem",
    "ConvertedImage", "planned_shard_count", "shard_of_position", "shard_starts",
    "convert_coco", "convert_document", "convert_units", "convert_voc", "convert_yolo", "parse_shard_size",
]
