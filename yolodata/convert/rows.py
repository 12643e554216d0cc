"""Stage 2: source images -> validated bytes -> MindRecord rows, each run of the plan into its shard.

Threads read and fully decode every planned image (``image_io.prepare_source_image``: complete,
decodable, the json's size in the frame the json describes) ahead of the calling thread, which
writes the finished rows in plan (image-id) order (``mindrecord_shards``: shard by shard, a few rows
per call, so memory stays bounded for any number of shards). Results are consumed in plan order, so
rows and shard files are the same for any number of threads.

The converter writes each work unit's plan into one file (``mindrecord_shards.OneFileWriter``, a
writer with one shard; ``unit_convert``); a unit whose images all fail to decode writes no file.
``write_rows`` also fills a ``ShardSetWriter`` of N shards (the linked layout of converter 1.4 and
earlier, still used by tests): the plan's E images split into N contiguous runs of nearly equal
length (run k: plan positions k*E//N .. (k+1)*E//N - 1), each run's rows forming shard k.
"""
from __future__ import annotations

import bisect
import contextlib
import dataclasses
import functools
import time
from pathlib import Path

import numpy as np

from .. import image_io
from ..mindrecord_shards import ShardSetWriter
from ..ordered_prefetch import OrderedPrefetch
from .label_arrays import row_arrays
from .plan import ImageCandidate, ImageEntry, Plan
from .problems import MAX_PROBLEMS_IN_MESSAGE, ConversionError, ConversionWarning, Problem, \
    reporting_write_errors, strict_stop
from .shrink import ShrinkOptions, ShrinkTally, scale_labels, shrink_picture, stored_hw

IMAGES_PER_TASK = 8                  # images a decode thread takes at once
IN_FLIGHT_BYTES = 64 * 2 ** 20       # image file bytes decoded ahead of the writer, at most (plus one task)
SHARDS_WARNING_KIND = "shards_capped"


def read_source(candidate: ImageCandidate) -> bytes | Problem:
    """The bytes of one source image, or a Problem when the file cannot be read.

    Runs in the thread that hands work to the decode threads (see ordered_prefetch): a file read
    releases and re-takes the GIL several times, which the decode threads should not have to do.
    """
    try:
        with open(candidate.path, "rb") as handle:
            return handle.read()
    except FileNotFoundError:
        return Problem("missing_file", f"file not found: {candidate.path}", candidate.image_id, candidate.file_name)
    except OSError as error:
        return Problem("unreadable_file", f"cannot read {candidate.path}: {error.strerror or error}",
                       candidate.image_id, candidate.file_name)


@dataclasses.dataclass(frozen=True)
class ValidatedImage:
    """A source image ready to be written: the bytes to store, their size, and what --max_side did."""

    stored: bytes                 # the bytes of the row's ``image`` field
    prepared: image_io.PreparedImage   # the source picture's (json) size and any EXIF re-encoding
    stored_hw: tuple              # (height, width) the stored bytes decode to
    scale: float                  # stored pixels per source pixel (1.0: stored at its size)
    source_bytes: int             # size of the source file
    seconds: float                # time the checks (a full decode) and any shrinking took


def validate_source(candidate: ImageCandidate, data: bytes | Problem, exif_frame: str,
                    shrink: ShrinkOptions = ShrinkOptions()):
    """Validate one image fully (runs in a decode thread): complete, decodes, has the json's size;
    shrunk and re-encoded when its long side exceeds ``shrink.max_side``.

    Returns a ValidatedImage, or a Problem when the image cannot be converted.
    """
    if isinstance(data, Problem):
        return data
    started = time.perf_counter()
    source_hw = (candidate.height, candidate.width)
    scale = shrink.scale_for(source_hw)
    try:
        prepared = image_io.prepare_source_image(data, source_hw, exif_frame, keep_pixels=scale < 1.0)
        stored = data if prepared.encoded is None else prepared.encoded
        stored_size = source_hw
        if scale < 1.0:
            stored = shrink_picture(prepared.pixels, scale, image_io.sniff_format(data), shrink.jpeg_quality)
            stored_size = stored_hw(source_hw, scale)
            note = prepared.note and ("shrunk (--max_side) in the stored (un-rotated) frame that the json's "
                                      "size describes")
            prepared = dataclasses.replace(prepared, pixels=None, note=note)  # frees the full-size picture early
    except image_io.ImageProblem as problem:
        return Problem(problem.reason, str(problem), candidate.image_id, candidate.file_name)
    return ValidatedImage(stored, prepared, stored_size, scale, len(data), time.perf_counter() - started)


def decode_ahead(candidates: list, *, exif_frame: str, num_workers: int,
                 shrink: ShrinkOptions = ShrinkOptions()) -> OrderedPrefetch:
    """Validate ``candidates`` in ``num_workers`` threads ahead of the consumer, in order (enter it to start)."""
    validate = functools.partial(validate_source, exif_frame=exif_frame, shrink=shrink)
    return OrderedPrefetch(candidates, validate, num_workers=num_workers, load=read_source,
                           max_weight=IN_FLIGHT_BYTES, weight=lambda candidate: candidate.size,
                           items_per_task=IMAGES_PER_TASK, thread_name="yolodata-decode")


def shard_starts(num_entries: int, shard_num: int) -> list[int]:
    """Plan position of the first image of each shard: shard k takes positions k*E//N .. (k+1)*E//N - 1."""
    return [k * num_entries // shard_num for k in range(shard_num)]


def shard_of_position(starts: list[int], position: int) -> int:
    """The shard of plan position ``position`` (the last shard starting at or before it)."""
    return bisect.bisect_right(starts, position) - 1


def planned_shard_count(num_entries: int, shard_num: int) -> int:
    """The shards the plan's runs fill: ``shard_num``, but never more than the images (no empty run)."""
    return max(1, min(shard_num, num_entries))


def shards_warning(requested: int, num_entries: int, num_written: int) -> ConversionWarning | None:
    """The warning when fewer shard files than ``requested`` were written (None when all were)."""
    if num_written >= requested:
        return None
    planned = planned_shard_count(num_entries, requested)
    reasons = []
    if planned < requested:
        reasons.append(f"only {num_entries} image(s) were left to convert")
    if num_written < planned:
        reasons.append(f"every image of {planned - num_written} planned shard(s) failed to read or decode "
                       f"(see skipped)")
    return ConversionWarning(SHARDS_WARNING_KIND, requested - num_written,
                             f"shard_num {requested} asked for more shards than could be filled: wrote "
                             f"{num_written} shard file(s), since a shard never stays empty ("
                             + "; ".join(reasons) + ")")


class _NoBar:
    """Stands in for tqdm when progress is off."""

    def update(self, n=1):
        pass

    def set_postfix(self, **kwargs):
        pass


@contextlib.contextmanager
def progress_bar(enabled: bool, total: int):
    """A tqdm bar on stderr counting images (a silent stand-in when ``enabled`` is false)."""
    if not enabled:
        yield _NoBar()
        return
    from tqdm import tqdm

    with tqdm(total=total, unit="img", desc="converting", dynamic_ncols=True, smoothing=0.1) as bar:
        yield bar


@dataclasses.dataclass(frozen=True)
class ConvertedImage:
    """What is kept of a written row: its json entry and its stored labels."""

    entry: ImageEntry
    labels: np.ndarray
    boxes_clipped: int
    boxes_dropped: int


@dataclasses.dataclass
class WrittenRows:
    converted: list               # ConvertedImage in row order
    skipped: list                 # Problems found while reading the images
    reencoded: list               # {"image_id", "file_name", "note"}
    shrink: ShrinkTally = dataclasses.field(default_factory=ShrinkTally)


def row_fields(entry: ImageEntry, image: ValidatedImage, labels: np.ndarray, row_index: int) -> dict:
    """The MindRecord row of one converted image; ``labels`` in the json's (original) pixels."""
    num_boxes, boxes, classes, iscrowd = row_arrays(scale_labels(labels, image.scale, image.stored_hw))
    return {"image": image.stored, "image_id": entry.image_id, "file_name": entry.file_name,
            "height": int(image.stored_hw[0]), "width": int(image.stored_hw[1]),
            "orig_height": image.prepared.height, "orig_width": image.prepared.width,
            "stored_scale": float(image.scale), "num_boxes": num_boxes, "boxes": boxes, "classes": classes,
            "iscrowd": iscrowd, "row_index": row_index}


def write_rows(plan: Plan, validated, writer, *, strict: bool, progress: bool, output_dir: Path,
               require_rows: bool = True) -> WrittenRows:
    """Write the rows of the validated images, in plan order, each run of the plan into its shard.

    ``validated`` yields (ImageCandidate, validate_source result) for exactly the plan's entries, in
    plan order; ``writer.shard_num`` runs split the plan (a ``ShardSetWriter``, or a
    ``mindrecord_shards.OneFileWriter`` for a work unit). Raises ConversionError on a --strict problem
    or, with ``require_rows``, when no image could be converted. ``row_index`` is the row's position
    among the rows this call writes.
    """
    written = WrittenRows([], [], [])
    position_of = {entry.image_id: position for position, entry in enumerate(plan.entries)}
    starts = shard_starts(len(plan.entries), writer.shard_num)
    with progress_bar(progress, len(plan.entries)) as bar:
        for candidate, result in validated:
            position = position_of[candidate.image_id]
            entry = plan.entries[position]
            if isinstance(result, Problem):
                if strict and result.is_error:
                    raise strict_stop([result], "while reading images")
                written.skipped.append(result)
                bar.set_postfix(skipped=len(written.skipped), refresh=False)
            else:
                labels, boxes_clipped, boxes_dropped = plan.labels[position]
                fields = row_fields(entry, result, labels, len(written.converted))
                with reporting_write_errors(output_dir):
                    writer.add(fields, shard_of_position(starts, position))
                written.converted.append(ConvertedImage(entry, labels, boxes_clipped, boxes_dropped))
                written.shrink.add((entry.height, entry.width), result.source_bytes, len(result.stored),
                                   result.scale < 1.0, result.seconds)
                if result.prepared.note:
                    written.reencoded.append({"image_id": entry.image_id, "file_name": entry.file_name,
                                              "note": result.prepared.note})
            bar.update(1)
    if require_rows and not written.converted:
        raise ConversionError(f"none of the {len(plan.entries)} images could be converted; nothing was written:"
                              + "".join(f"\n  {p.describe()}" for p in written.skipped[:MAX_PROBLEMS_IN_MESSAGE]))
    return written
