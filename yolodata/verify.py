"""Re-read a converter output with plain ``mindspore.dataset.MindDataset`` and check it.

Checks: the row count of each shard against ``manifest.json``; for every row, ``row_index`` equal to
what its global position gives (``Manifest.stored_row_index``: the position in its file since schema
3, the global position before), image ids unique and increasing, file name and size equal to its record in
``annotations.json`` (schema 2: the original size; the stored size and scale as the manifest's
``max_side`` gives them), boxes, classes and crowd flags equal to those its annotations give after
clipping (mapped through the manifest's categories, scaled to the stored picture; the placeholder row
for a background image), and that the stored bytes decode (``image_io.decode_stored``) to a 3-channel
picture of the stored size;
then the manifest's totals, ``boxes_per_category`` and ``dataset_id``, and that ``annotations.json``
lists exactly the converted images.
"""
from __future__ import annotations

import concurrent.futures
import dataclasses
import json
import time
from pathlib import Path

import numpy as np

from . import image_io
from .checks import resolve_num_workers
from .convert.label_arrays import labels_from_annotations, row_arrays
from .convert.shrink import ShrinkOptions, scale_labels, stored_hw
from .manifest import compute_dataset_id, load_manifest
from .schema import DATASET_ID_VERSION, FIELDS, columns_of

MAX_PROBLEMS = 50
DECODE_BATCH = 32


@dataclasses.dataclass
class VerifyReport:
    output_dir: str
    num_rows: int
    num_decoded: int
    problems: list
    seconds: float

    @property
    def ok(self) -> bool:
        return not self.problems

    def format(self) -> str:
        head = (f"verify {self.output_dir}: {self.num_rows} rows read with MindDataset, {self.num_decoded} "
                f"images decoded, {len(self.problems)} problem(s), {self.seconds:.2f} s")
        lines = [head] + [f"  {p}" for p in self.problems[:MAX_PROBLEMS]]
        if len(self.problems) > MAX_PROBLEMS:
            lines.append(f"  ... and {len(self.problems) - MAX_PROBLEMS} more")
        lines.append("OK" if self.ok else "FAILED")
        return "\n".join(lines)


def _decode_size(buf: np.ndarray) -> tuple:
    """(height, width, channels) of the decoded stored bytes, or the error text."""
    try:
        image = image_io.decode_stored(buf)
    except ValueError as error:
        return (str(error),)
    return image.shape


def _check_decoded(batch: list, pool, problems: list) -> int:
    """Decode the stored images of ``batch`` [(position, image_id, height, width, bytes)] in ``pool``."""
    for (position, image_id, height, width, _), shape in zip(batch, pool.map(_decode_size, [b[4] for b in batch])):
        where = f"row {position} (image_id {image_id})"
        if len(shape) == 1:
            problems.append(f"{where}: the stored image does not decode: {shape[0]}")
        elif tuple(shape) != (height, width, 3):
            problems.append(f"{where}: decodes to {tuple(shape)}, the row says {(height, width, 3)}")
    return len(batch)


def original_size(row: dict) -> tuple[int, int]:
    """(height, width) of the source picture: the orig_* columns, or the stored size (schema 1)."""
    if "orig_height" in row:
        return int(row["orig_height"]), int(row["orig_width"])
    return int(row["height"]), int(row["width"])


def _stored_geometry_problem(row: dict, shrink: ShrinkOptions) -> str | None:
    """Why the row's stored size or scale is not what the manifest's max_side gives (None when it is)."""
    if "stored_scale" not in row:
        return None
    source_hw = original_size(row)
    scale = float(row["stored_scale"])
    if scale != shrink.scale_for(source_hw):
        return f"stored_scale {scale} but --max_side {shrink.max_side} gives {shrink.scale_for(source_hw)}"
    stored_size = (int(row["height"]), int(row["width"]))
    if stored_size != stored_hw(source_hw, scale):
        return f"stored size {stored_size} but {source_hw} scaled by {scale} is {stored_hw(source_hw, scale)}"
    return None


def expected_arrays(row: dict, annotations: list, class_of_category: dict) -> tuple:
    """The row arrays its annotations give: boxes clipped to the original picture, then scaled to the stored one."""
    height, width = original_size(row)
    labels, _, _ = labels_from_annotations(annotations, class_of_category, width, height)
    scale = float(row.get("stored_scale", 1.0))
    return row_arrays(scale_labels(labels, scale, (int(row["height"]), int(row["width"]))))


def _compare_row(row: dict, position: int, stored_index: int, record: dict | None, expected: tuple,
                 problems: list) -> None:
    """Append problems of one row against its annotations.json record and expected arrays;
    ``stored_index`` is the row_index global row ``position`` must hold (``Manifest.stored_row_index``)."""
    image_id = int(row["image_id"])
    where = f"row {position} (image_id {image_id})"
    if int(row["row_index"]) != stored_index:
        problems.append(f"{where}: row_index is {int(row['row_index'])}, expected {stored_index} for its position")
    if record is None:
        problems.append(f"{where}: annotations.json has no image with this id")
        return
    file_name = row["file_name"]
    file_name = file_name.item() if isinstance(file_name, np.ndarray) else file_name
    file_name = file_name.decode() if isinstance(file_name, bytes) else str(file_name)
    if file_name != record["file_name"]:
        problems.append(f"{where}: file_name {file_name!r} but annotations.json says {record['file_name']!r}")
    height, width = original_size(row)
    if (height, width) != (record["height"], record["width"]):
        problems.append(f"{where}: size {width}x{height} but annotations.json says "
                        f"{record['width']}x{record['height']}")
    num_boxes = int(row["num_boxes"])
    want_num, want_boxes, want_classes, want_crowd = expected
    if num_boxes != want_num:
        problems.append(f"{where}: num_boxes {num_boxes}, the annotations give {want_num}")
        return
    got = (np.asarray(row["boxes"]).reshape(-1, 4), np.asarray(row["classes"]).reshape(-1),
           np.asarray(row["iscrowd"]).reshape(-1))
    for name, value, want in zip(("boxes", "classes", "iscrowd"), got, (want_boxes, want_classes, want_crowd)):
        if value.shape != want.shape or not np.array_equal(value, want):
            problems.append(f"{where}: {name} {value.tolist()} differ from the annotations' {want.tolist()}")


def verify_output(output_dir, *, decode: bool = True, num_workers: int | None = None) -> VerifyReport:
    """Read every shard of ``output_dir`` with plain MindDataset and check it (see the module docstring).

    Raises ManifestError when the folder is incomplete; every other finding is a report problem.
    """
    import mindspore.dataset as ds

    started = time.perf_counter()
    folder = Path(output_dir)
    manifest = load_manifest(folder)
    files = manifest.shard_paths
    problems: list[str] = []
    workers = resolve_num_workers(num_workers, "num_workers")

    document = json.loads(manifest.annotations_path.read_text(encoding="utf-8"))
    records = {record["id"]: record for record in document.get("images", [])}
    categories = manifest.categories
    class_of_category = {c.id: c.index for c in categories}
    annotations_by_image: dict = {}
    for ann in document.get("annotations", []):
        annotations_by_image.setdefault(ann["image_id"], []).append(ann)
    if len(records) != manifest.num_images:
        problems.append(f"annotations.json lists {len(records)} images, the manifest {manifest.num_images}")

    for path, entry in zip(files, manifest.shards):
        size = ds.MindDataset([str(path)]).get_dataset_size()
        if size != entry.num_rows:
            problems.append(f"{path.name}: {size} rows, the manifest says {entry.num_rows}")

    stored_indices = manifest.stored_row_index(np.arange(manifest.num_images))
    dataset = ds.MindDataset([str(p) for p in files], columns_list=columns_of(manifest.schema_version, FIELDS),
                             shuffle=False, num_parallel_workers=workers)
    shrink = ShrinkOptions(manifest.max_side)
    image_ids, boxes_per_row, class_counts = [], [], np.zeros(len(categories), np.int64)
    num_decoded = position = 0
    with concurrent.futures.ThreadPoolExecutor(max_workers=workers) as pool:
        batch = []
        for row in dataset.create_dict_iterator(output_numpy=True, num_epochs=1):
            image_id = int(row["image_id"])
            expected = expected_arrays(row, annotations_by_image.get(image_id, []), class_of_category)
            stored_index = int(stored_indices[position]) if position < len(stored_indices) else -1
            _compare_row(row, position, stored_index, records.get(image_id), expected, problems)
            geometry_problem = _stored_geometry_problem(row, shrink)
            if geometry_problem is not None:
                problems.append(f"row {position} (image_id {image_id}): {geometry_problem}")
            image_ids.append(image_id)
            num_boxes = int(row["num_boxes"])
            boxes_per_row.append(num_boxes)
            classes = np.asarray(row["classes"]).reshape(-1)[:num_boxes]
            class_counts += np.bincount(classes[(classes >= 0) & (classes < len(categories))],
                                        minlength=len(categories))
            if decode:
                batch.append((position, image_id, int(row["height"]), int(row["width"]), row["image"]))
                if len(batch) >= DECODE_BATCH:
                    num_decoded += _check_decoded(batch, pool, problems)
                    batch = []
            position += 1
        num_decoded += _check_decoded(batch, pool, problems)

    if position != manifest.num_images:
        problems.append(f"MindDataset read {position} rows, the manifest says num_images {manifest.num_images}")
    if sum(boxes_per_row) != manifest.num_boxes:
        problems.append(f"the rows hold {sum(boxes_per_row)} boxes, the manifest says {manifest.num_boxes}")
    if len(set(image_ids)) != len(image_ids) or image_ids != sorted(image_ids):
        problems.append("image ids are not unique and increasing in row order")
    extra = sorted(set(records) - set(image_ids))
    if extra:
        problems.append(f"annotations.json lists {len(extra)} image(s) that are not rows, e.g. {extra[:5]}")
    counted = {key: int(count) for key, count in zip(manifest.category_keys, class_counts)}
    if counted != manifest.boxes_per_category:
        problems.append(f"boxes per category of the rows {counted} differ from the manifest's "
                        f"{manifest.boxes_per_category}")
    dataset_id = compute_dataset_id(DATASET_ID_VERSION, image_ids, boxes_per_row, manifest.annotation_sha256)
    if dataset_id != manifest.dataset_id:
        problems.append("dataset_id recomputed from the rows differs from the manifest's")
    return VerifyReport(str(folder), position, num_decoded, problems, time.perf_counter() - started)
