"""Stage 3: what a conversion leaves besides the shards (``manifest.json``, ``annotations.json``) and
what it reports (``ConversionSummary``, the table the tool prints)."""
from __future__ import annotations

import collections
import dataclasses
import json
from pathlib import Path

import numpy as np

from ..fileio import write_file_durable
from ..manifest import Manifest, ShardEntry, category_count_keys, compute_dataset_id
from ..schema import DATASET_ID_VERSION, MANIFEST_NAME, SCHEMA_VERSION
from .plan import Plan
from .problems import ConversionError
from .shrink import ShrinkTally, describe_shrunk, shrink_hint

CONVERTER_VERSION = "1.6.0"   # 1.3: schema 2 (original size and scale columns), --max_side; 1.4: shard num_bytes;
# 1.5: work units (one independently written file each, --shard_size, engines, resume), schema 3;
# 1.6: with --max_side, units planned by the bytes shrunk pictures will take


def check_output_target(target: Path) -> None:
    """ConversionError unless ``target`` may be replaced by a conversion: absent, empty, or an earlier output."""
    if target.exists() and not target.is_dir():
        raise ConversionError(f"--output_dir {target} exists and is not a folder")
    if target.is_dir() and any(target.iterdir()) and not (target / MANIFEST_NAME).is_file():
        raise ConversionError(f"--output_dir {target} is a non-empty folder that is not a converter output "
                              f"(no {MANIFEST_NAME}); choose a new or empty folder")


def annotations_document(document: dict, entries: list) -> dict:
    """The COCO json of exactly the converted images (original records and ids, all categories)."""
    out = {key: value for key, value in document.items() if key not in ("images", "annotations")}
    out["images"] = [entry.record for entry in entries]
    out["annotations"] = [ann for entry in entries for ann in entry.annotations]
    return out


def write_annotations(path: Path, plan: Plan, converted: list) -> None:
    """annotations.json: the source file itself when every image and annotation of it was converted,
    else the document re-written with exactly the converted images and their annotations."""
    document = plan.source.document
    everything = (len(converted) == len(document["images"])
                  and sum(len(e.annotations) for e in converted) == len(document["annotations"]))
    if everything:
        write_file_durable(path, plan.source.raw_bytes)
    else:
        text = json.dumps(annotations_document(document, converted), ensure_ascii=False, separators=(",", ":"))
        write_file_durable(path, text.encode("utf-8"))


def boxes_per_category(categories: list, label_arrays: list) -> dict:
    """{category key: number of stored boxes} (keys from ``category_count_keys``)."""
    counts = np.zeros(len(categories), np.int64)
    for labels in label_arrays:
        if len(labels):
            counts += np.bincount(labels[:, 4].astype(np.int64), minlength=len(categories))
    return {key: int(count) for key, count in zip(category_count_keys(categories), counts)}


def build_manifest(plan: Plan, converted: list, skipped: list, reencoded: list, shards: list,
                   options: dict, warnings: list, shrunk: dict | None = None) -> Manifest:
    """The manifest of the converted rows (``Manifest.to_json`` is what manifest.json holds)."""
    boxes_per_row = [len(image.labels) for image in converted]
    source = plan.source
    return Manifest(
        converter_version=CONVERTER_VERSION,
        schema_version=SCHEMA_VERSION,
        source_format=source.source_format,
        num_images=len(converted),
        num_boxes=int(sum(boxes_per_row)),
        num_background_images=int(sum(1 for n in boxes_per_row if n == 0)),
        num_crowd_boxes=int(sum(int(image.labels[:, 5].sum()) for image in converted)),
        categories=tuple(plan.categories),
        boxes_per_category=boxes_per_category(plan.categories, [image.labels for image in converted]),
        boxes_clipped=int(sum(image.boxes_clipped for image in converted)),
        boxes_dropped={"empty_after_clipping": int(sum(image.boxes_dropped for image in converted))},
        skipped=tuple(p.manifest_entry() for p in skipped),
        skipped_annotations=tuple(p.manifest_entry() for p in plan.annotation_problems),
        reencoded=tuple(reencoded),
        warnings=tuple(w.manifest_entry() for w in warnings),
        source=dict(source.details or {}),
        source_problems=tuple(p.manifest_entry() for p in source.problems),
        annotation_file=source.annotation_file,
        annotation_sha256=source.sha256,
        options=dict(options),
        shrunk=dict(shrunk or {}),
        shards=tuple(ShardEntry(s["file"], s["num_rows"], s.get("num_bytes")) for s in shards),
        dataset_id=compute_dataset_id(DATASET_ID_VERSION, [image.entry.image_id for image in converted],
                                      boxes_per_row, source.sha256),
    )


@dataclasses.dataclass
class ConversionSummary:
    """What a conversion did; ``format_table()`` is the table the tool prints."""

    output_dir: str
    num_images: int
    num_boxes: int
    num_background: int
    boxes_clipped: int
    boxes_dropped: int
    skipped: list                 # Problems (images not converted)
    skipped_annotations: list     # Problems (annotations naming no image)
    reencoded: list               # {"image_id", "file_name", "note"}
    shards: list                  # {"file", "num_rows"}
    bytes_written: int            # apparent size of the output files
    disk_bytes: int               # space they use (MindRecord reserves header and page space sparsely)
    seconds: float                # the whole call
    convert_seconds: float        # images: first image read (during the json parse) to last row written
    num_workers: int
    dataset_id: str
    warnings: list = dataclasses.field(default_factory=list)   # ConversionWarnings, one per kind
    source_format: str = "coco"
    source_problems: list = dataclasses.field(default_factory=list)  # a reader's (yolodata.formats.SourceProblem)
    max_side: int | None = None   # the --max_side of the run
    shrink: ShrinkTally = dataclasses.field(default_factory=ShrinkTally)

    @property
    def shrink_line(self) -> tuple[str, str] | None:
        """("shrunk", what --max_side did), or ("hint", what it would save), or None."""
        if self.max_side is not None:
            return "shrunk", describe_shrunk(self.shrink, self.max_side)
        hint = shrink_hint(self.shrink, self.num_images)
        return None if hint is None else ("hint", hint)

    @property
    def skipped_by_reason(self) -> dict:
        return dict(sorted(collections.Counter(p.reason for p in self.skipped + self.skipped_annotations).items()))

    @property
    def images_per_second(self) -> float:
        """Images converted per second of the image stage (decode + write)."""
        return self.num_images / self.convert_seconds if self.convert_seconds > 0 else float("inf")

    def format_table(self, max_listed: int = 50) -> str:
        rows = [("output", self.output_dir + ("" if self.source_format == "coco" else f" (from {self.source_format})")),
                ("images", f"{self.num_images} ({self.num_background} without boxes)"),
                ("boxes", f"{self.num_boxes} ({self.boxes_clipped} clipped to the image, "
                          f"{self.boxes_dropped} dropped: empty after clipping)")]
        skipped = self.skipped_by_reason
        rows.append(("skipped", ", ".join(f"{reason}: {n}" for reason, n in skipped.items()) or "none"))
        if self.reencoded:
            rows.append(("re-encoded", f"{len(self.reencoded)} (EXIF frame, see manifest.json)"))
        if self.shrink_line is not None:
            rows.append(self.shrink_line)
        rows.append(("shards", ", ".join(f"{s['file']} ({s['num_rows']} rows)" for s in self.shards)))
        rows.append(("bytes", f"{self.bytes_written:,} ({self.disk_bytes:,} on disk)"))
        rows.append(("time", f"{self.seconds:.2f} s in all; images {self.convert_seconds:.2f} s "
                             f"({self.images_per_second:.0f} images/s, {self.num_workers} worker(s))"))
        rows += [("warning", warning.message) for warning in self.warnings]
        # a reader's problems that skip no image (an image it skips is listed under skipped)
        noted = [p for p in self.source_problems if not (p.is_error and p.image is not None)]
        if self.source_problems:
            counts = collections.Counter(p.reason for p in self.source_problems)
            rows.append(("source", f"{len(self.source_problems)} problem(s) in the {self.source_format} files: "
                                   + ", ".join(f"{reason}: {n}" for reason, n in sorted(counts.items()))))
        width = max(len(key) for key, _ in rows)
        lines = [f"{key.ljust(width)}  {value}" for key, value in rows]
        listed = self.skipped + self.skipped_annotations
        for problem in listed[:max_listed]:
            lines.append(f"  skipped {problem.describe()}")
        if len(listed) > max_listed:
            lines.append(f"  ... and {len(listed) - max_listed} more, listed in {MANIFEST_NAME}")
        for problem in noted[:max_listed]:
            lines.append(f"  {'problem' if problem.is_error else 'fixed'} ({problem.reason}) {problem.describe()}")
        if len(noted) > max_listed:
            lines.append(f"  ... and {len(noted) - max_listed} more, listed in {MANIFEST_NAME} (source_problems)")
        return "\n".join(lines)
