"""Stage 4 of a unit-by-unit conversion: the published units -> the output folder, without reading
images again.

In unit order: each unit's MindRecord file and ``.db`` are linked (hard links, a copy where the file
system has none) into the output's temporary folder under their names; ``manifest.json`` is built
from the unit records alone (rows, image ids and box counts for the dataset id, counts, skipped
images); ``annotations.json`` is streamed from the units' parts (or, when nothing of the source was
left out, is a byte copy of the source json, checked against its sha256).
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import shutil
from pathlib import Path

import numpy as np

from ..manifest import Manifest, ShardEntry, category_count_keys, compute_dataset_id
from ..schema import DATASET_ID_VERSION, SCHEMA_VERSION
from .area_check import AreaFindings
from .coco_json import parse_categories
from .output import CONVERTER_VERSION
from .problems import ConversionError, Problem, problem_order, skipped_by_source
from .shrink import ShrinkTally
from .unit_convert import ANNOTATIONS_PART_NAME, IMAGES_PART_NAME, problem_from_record, unit_folder

COPY_BLOCK_BYTES = 1 << 22


@dataclasses.dataclass
class MergedUnits:
    """The unit records summed up (what the manifest and the summary say)."""

    records: list                 # unit records in unit order
    skipped: list                 # Problems: images not converted, sorted
    skipped_annotations: list     # Problems: annotations of no image
    reencoded: list
    shrink: ShrinkTally
    areas: AreaFindings

    @property
    def num_images(self) -> int:
        return sum(r["num_rows"] for r in self.records)

    @property
    def shards(self) -> list:
        return [{"file": r["file"], "num_rows": r["num_rows"], "num_bytes": r["num_bytes"]}
                for r in self.records if r["file"] is not None]

    def everything_converted(self, source) -> bool:
        """Whether every image and annotation of the source was converted (annotations.json = the source)."""
        return (not source.problems and not self.skipped and not self.skipped_annotations
                and all(r["num_rows"] == r["num_source_images"]
                        and r["num_converted_annotations"] == r["num_source_annotations"] for r in self.records))


def _sum_dataclass(cls, entries: list):
    """One ``cls`` whose numeric fields are the sums of ``entries`` (dicts); other fields from the first
    entry that has a value."""
    values = {}
    for field in dataclasses.fields(cls):
        column = [entry[field.name] for entry in entries]
        if field.type in (int, float, "int", "float"):
            values[field.name] = sum(column, 0 if field.type in (int, "int") else 0.0)
        else:
            values[field.name] = next((value for value in column if value is not None), None)
    return cls(**values)


def compact_record(record: dict) -> dict:
    """``record`` with its per-row lists (image ids, box counts) as int64 arrays, changed in place and
    returned: the driver holds every unit's record until the merge, and a Python int per row would make
    its memory grow by about 75 bytes per image (8 with the arrays)."""
    for key in ("image_ids", "boxes_per_row"):
        record[key] = np.asarray(record[key], np.int64)
    return record


def merge_records(source, records: list) -> MergedUnits:
    """Sum up the unit records (in unit order) and the source's own problems."""
    routed = [problem for problem in source.problems]
    skipped = [p for p in routed if p.about == "image"] + skipped_by_source(source.source_problems)
    skipped += [problem_from_record(p) for r in records for p in r["skipped"]]
    skipped_annotations = [problem_from_record(p) for r in records for p in r["skipped_annotations"]]
    skipped_annotations += [p for p in routed if p.about == "annotation"]
    return MergedUnits(records, sorted(skipped, key=problem_order), skipped_annotations,
                       [entry for r in records for entry in r["reencoded"]],
                       _sum_dataclass(ShrinkTally, [r["shrink"] for r in records]),
                       _sum_dataclass(AreaFindings, [r["areas"] for r in records]))


def build_unit_manifest(source, merged: MergedUnits, options: dict, warnings: list) -> Manifest:
    """The manifest of the converted rows, from the unit records alone."""
    records = merged.records
    categories = parse_categories(source.categories, source.name)
    boxes_per_row = np.concatenate([np.asarray(r["boxes_per_row"], np.int64) for r in records])
    image_ids = np.concatenate([np.asarray(r["image_ids"], np.int64) for r in records])
    per_class = [sum(r["boxes_per_class"][k] for r in records) for k in range(len(categories))]
    return Manifest(
        converter_version=CONVERTER_VERSION, schema_version=SCHEMA_VERSION, source_format=source.source_format,
        num_images=merged.num_images, num_boxes=int(boxes_per_row.sum()),
        num_background_images=int((boxes_per_row == 0).sum()),
        num_crowd_boxes=sum(r["num_crowd_boxes"] for r in records), categories=tuple(categories),
        boxes_per_category=dict(zip(category_count_keys(categories), per_class)),
        boxes_clipped=sum(r["boxes_clipped"] for r in records),
        boxes_dropped={"empty_after_clipping": sum(r["boxes_dropped"] for r in records)},
        skipped=tuple(p.manifest_entry() for p in merged.skipped),
        skipped_annotations=tuple(p.manifest_entry() for p in merged.skipped_annotations),
        reencoded=tuple(merged.reencoded), warnings=tuple(w.manifest_entry() for w in warnings),
        source=dict(source.details or {}),
        source_problems=tuple(p.manifest_entry() for p in source.source_problems),
        annotation_file=source.annotation_file, annotation_sha256=source.annotation_sha256,
        options=dict(options), shrunk=merged.shrink.manifest_entry(),
        shards=tuple(ShardEntry(s["file"], s["num_rows"], s["num_bytes"]) for s in merged.shards),
        dataset_id=compute_dataset_id(DATASET_ID_VERSION, image_ids, boxes_per_row, source.annotation_sha256))


def link_unit_files(parts_dir, records: list, target: Path) -> None:
    """Each unit's MindRecord file and .db into ``target`` under the same names (hard link, else copy)."""
    for record in records:
        if record["file"] is None:
            continue
        folder = unit_folder(parts_dir, record["index"])
        for name in (record["file"], record["file"] + ".db"):
            try:
                os.link(folder / name, target / name)
            except OSError:
                shutil.copy2(folder / name, target / name)


def _copy_part(handle, path: Path, first: bool) -> bool:
    if path.stat().st_size == 0:
        return first
    if not first:
        handle.write(b",")
    with open(path, "rb") as part:
        shutil.copyfileobj(part, handle, COPY_BLOCK_BYTES)
    return False


def write_unit_annotations(path: Path, source, merged: MergedUnits, parts_dir) -> None:
    """annotations.json: a byte copy of the source json when nothing was left out (and the source is a
    json file), else streamed from the units' parts (other members, categories, images, annotations)."""
    if merged.everything_converted(source):
        _copy_checked(source, path)
        return
    parts = {"images": IMAGES_PART_NAME, "annotations": ANNOTATIONS_PART_NAME}
    members = [key for key in source.member_order if key not in parts] + list(parts)
    with open(path, "wb") as handle:
        handle.write(b"{")
        for position, key in enumerate(members):
            handle.write((b"," if position else b"") + json.dumps(key, ensure_ascii=False).encode("utf-8") + b":")
            if key in parts:
                handle.write(b"[")
                first = True
                for record in merged.records:
                    first = _copy_part(handle, unit_folder(parts_dir, record["index"]) / parts[key], first)
                handle.write(b"]")
            else:
                value = source.categories if key == "categories" else source.other_members[key]
                handle.write(json.dumps(value, ensure_ascii=False, separators=(",", ":")).encode("utf-8"))
        handle.write(b"}")
        handle.flush()
        os.fsync(handle.fileno())


def _copy_checked(source, target: Path) -> None:
    """Copy the source document's bytes, checking that they are still those that were converted."""
    digest = hashlib.sha256()
    with source.open_source() as src, open(target, "wb") as dst:
        for block in iter(lambda: src.read(COPY_BLOCK_BYTES), b""):
            digest.update(block)
            dst.write(block)
        dst.flush()
        os.fsync(dst.fileno())
    if digest.hexdigest() != source.annotation_sha256:
        raise ConversionError(f"{source.name} changed during the conversion (sha256 {digest.hexdigest()}, "
                              f"converted {source.annotation_sha256}); run the conversion again")
