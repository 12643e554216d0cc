"""Work units: the image ids split into contiguous ranges sized by planned bytes, one output file each.

A conversion larger than memory is done unit by unit: each unit is a small COCO-style document (its
images, in image-id order, and their annotations) that a worker converts into its own one-file
MindRecord set. The plan decides the units once, from the image ids and the bytes each picture is
expected to take in the output (``planned_picture_bytes``: its file size, less for a picture --max_side
shrinks), so that the same source and options give the same units whatever engine, worker count or
retries run them.

``UnitSource`` is what a conversion reads units from: an in-memory document split into units, or a
streamed COCO json spilled to disk unit by unit. Both give the same units for the same document.
"""
from __future__ import annotations

import dataclasses
from typing import Protocol

import numpy as np

from ..checks import check_int

MAX_FILES_PER_READER = 4096          # MindSpore's MindDataset reads at most this many files
LAZY_LOAD_ROWS = 5_000_000           # above this many rows per set MindSpore's reader switches to lazy load
DEFAULT_SHARD_SIZE = 1 << 30         # bytes of stored rows per file, about 1 GiB
_BOUNDARY_CHUNK = 65_536             # sizes converted to Python ints at a time while cutting units
# Bytes a row adds in its file besides its picture: measured 270-390 on coco128 (about 200 fixed for the
# scalar columns, file name and blob lengths, plus 24 per box); 1024 covers an average of ~34 boxes per
# image (COCO has 7). Every file stays within shard_size plus its largest row while the rows' average
# stays under it (tests/test_convert_units.py, benchmarks/convert_units.py).
ROW_OVERHEAD_BYTES = 1024


@dataclasses.dataclass(frozen=True)
class UnitSpec:
    """One work unit: images ``first_image_id..last_image_id`` (inclusive) of the plan, in id order."""

    index: int
    first_image_id: int
    last_image_id: int
    num_images: int
    planned_bytes: int            # the images' planned_picture_bytes summed


class UnitSource(Protocol):
    """Units to convert, loadable one at a time in any process (instances must be picklable)."""

    name: str                     # the source's name in messages (the annotation file's path)
    source_format: str            # "coco", "yolo", "voc"
    annotation_file: str | None   # the annotation file's base name (None for a document built in memory)
    annotation_sha256: str        # identity of the annotations (the json's bytes, or the reader's digest)
    categories: list              # the source's category records as given
    other_members: dict           # top-level members besides images/annotations/categories (info, licenses)
    member_order: tuple           # the document's top-level keys in order (annotations.json keeps it)
    details: dict | None          # manifest.json's ``source`` (a YOLO txt / VOC reader fills it)
    problems: tuple               # Problems of records no unit can take (no usable image id, unknown image),
                                  # images' then annotations', each in source order
    source_problems: tuple        # a YOLO txt / VOC reader's problems (SourceDocument.problems)
    units: tuple                  # UnitSpec in index order

    def load_unit(self, index: int) -> dict:
        """The COCO-style document of unit ``index``: {"images": [...], "annotations": [...],
        "image_positions": [...], "annotation_positions": [...]} (records as the source gives them,
        images in image-id order, and each record's index in the source's list, for the messages of
        ``plan.check_images(..., positions=)`` and ``plan.plan_conversion(..., annotation_positions=)``)."""

    def open_source(self):
        """A binary file object of the source document's bytes (annotations.json copies them when
        every image and annotation is converted)."""


def planned_picture_bytes(file_bytes: int, height: int, width: int, max_side: int | None) -> int:
    """The bytes a picture is planned to take in the output: its file's, or for a picture ``max_side``
    shrinks (long side L > max_side) the file's times max_side / L.

    Linear in the side rather than in the area, because JPEG bytes fall more slowly than the pixel
    count (a smaller picture keeps more detail per pixel): on the benchmark's 12 MP photos shrinking
    the side 3.15x and 6.3x made the files 3.7x and 10.3x smaller (pixels: 9.9x and 39.7x). So the
    estimate errs towards files smaller than ``shard_size``, seldom larger.
    """
    long_side = max(int(height), int(width))
    if max_side is None or long_side <= max_side:
        return int(file_bytes)
    return int(file_bytes) * int(max_side) // long_side


def unit_boundaries(planned_bytes: np.ndarray, *, shard_size: int | None, shard_num: int | None) -> list[int]:
    """Start positions of the units over images sorted by id, whose planned sizes are ``planned_bytes``.

    With ``shard_size`` a unit takes images while its bytes (plus ``ROW_OVERHEAD_BYTES`` per row) stay
    within it (a unit always takes at least one image); with ``shard_num`` the bytes are split into that
    many nearly equal parts, each of at least one image (fewer parts when there are fewer images).
    """
    if (shard_size is None) == (shard_num is None):
        raise ValueError("give exactly one of shard_size and shard_num")
    sizes = np.asarray(planned_bytes, dtype=np.int64) + ROW_OVERHEAD_BYTES
    if sizes.size == 0:
        return []
    if shard_num is not None:
        check_int("shard_num", shard_num, minimum=1)
        num_parts = min(shard_num, sizes.size)
        ends = np.cumsum(sizes)
        targets = ends[-1] * np.arange(1, num_parts) / num_parts
        cuts = np.searchsorted(ends, targets, side="left") + 1
        # exactly num_parts non-empty units: cut k (1-based) strictly after cut k-1 and leaving an image
        # for each later unit (a large picture would otherwise swallow the cut of a neighbour)
        ranks = np.arange(1, num_parts)
        slack = np.clip(np.maximum.accumulate(np.maximum(cuts - ranks, 0)), 0, sizes.size - num_parts)
        return [0, *[int(cut) for cut in slack + ranks]]
    check_int("shard_size", shard_size, minimum=1)
    starts, filled = [0], 0
    for chunk_start in range(0, sizes.size, _BOUNDARY_CHUNK):  # in chunks: no Python int per image at once
        for offset, size in enumerate(sizes[chunk_start:chunk_start + _BOUNDARY_CHUNK].tolist()):
            if filled and filled + size > shard_size:
                starts.append(chunk_start + offset)
                filled = 0
            filled += size
    return starts


def plan_units(image_ids: np.ndarray, planned_bytes: np.ndarray, *, shard_size: int | None = None,
               shard_num: int | None = None) -> tuple[UnitSpec, ...]:
    """The units for images ``image_ids`` (any order) with planned sizes ``planned_bytes``."""
    image_ids = np.asarray(image_ids, dtype=np.int64)
    planned_bytes = np.asarray(planned_bytes, dtype=np.int64)
    if image_ids.shape != planned_bytes.shape:
        raise ValueError(f"one size per image id: {image_ids.size} ids, {planned_bytes.size} sizes")
    ids, sizes = image_ids, planned_bytes
    if ids.size > 1 and not bool((ids[1:] >= ids[:-1]).all()):  # already in id order: no copies (large plans)
        order = np.argsort(ids, kind="stable")
        ids, sizes = ids[order], sizes[order]
    starts = unit_boundaries(sizes, shard_size=shard_size, shard_num=shard_num)
    ends = starts[1:] + [ids.size]
    return tuple(UnitSpec(index, int(ids[start]), int(ids[end - 1]), end - start, int(sizes[start:end].sum()))
                 for index, (start, end) in enumerate(zip(starts, ends)))
