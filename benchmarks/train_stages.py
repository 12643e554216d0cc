"""Where the train pipeline's CPU time goes: a per-stage profile of one converted set, in one run.

    python benchmarks/train_stages.py --mindrecord DIR [--training_shape 640] [--per_batch_size 8] \
        [--num_batches 18] [--json FILE]

Two measurements, back to back in this process and repeated in ``--rounds`` rounds (medians shown):

1. the batch function alone (``TrainBatchBuilder``, the code the pipeline runs per batch) on rows read
   beforehand with ``FileReader``, on one thread, with a CPU timer (``time.thread_time``) around each
   stage function: JPEG decode, label rows, the policy's random decisions, the mosaic (tile placement,
   the 114 fill, the tiles' resize/flip/copy with ``cv2.resize`` and ``cv2.flip`` shown apart, box
   geometry and filtering), the affine warp of non-mosaic samples, mixup, the albumentations extras,
   HSV jitter + RGB, target building; "rest of the batch function" is what none of these covers
   (keys, row checks, the batch array, the image ids);
2. the whole MindSpore pipeline (``create_train_dataset``, the same rows, batch and seed) with 1 and
   with 2 worker threads: process CPU ms per image. Its difference to (1) at 1 worker is what
   MindSpore's engine costs (reading rows, batching, handing the arrays on); measured on this machine
   it is zero or below (the pipeline used no more CPU per image than the batch function alone).

The stage timers wrap the real functions (module attributes replaced for this process only), so the
profile measures the code as it runs; the timers themselves cost about 1 us per call. Figures are
CPU milliseconds per training image; compare them within one run (the machine may be shared).

``--compare_margin M`` profiles the batch function a second time per round with the reduced-decoding
rule's ``REDUCED_DECODE_MARGIN`` set to M in this process (README, "Camera photos"): what the rule costs
or saves, stage by stage, on the same rows in the same run.
"""
from __future__ import annotations

import argparse
import collections
import functools
import json
import sys
import time
from pathlib import Path

import cv2
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from benchmarks.input_throughput import time_batches  # noqa: E402
from yolodata.augment import affine, color, extras, mixup, mosaic, policy  # noqa: E402
from yolodata.augment.policy import AugmentConfig  # noqa: E402
from yolodata.pipeline import create_train_dataset  # noqa: E402
from yolodata.pipeline import rows as rows_lib  # noqa: E402
from yolodata.pipeline import train as train_lib  # noqa: E402
from yolodata.pipeline.targets import YOLOV5_ANCHORS  # noqa: E402
from yolodata.schema import ROW_INDEX_PER_FILE_VERSION  # noqa: E402

# (label, module, attribute): the stage functions timed, in the order they run; indented labels are
# parts of the stage above them (their time is included in it)
STAGES = (
    ("decode (cv2.imdecode)", rows_lib, "decode_stored"),
    ("label rows", rows_lib, "row_labels"),
    ("random decisions (keyed rngs)", policy, "decide_sample"),
    ("mosaic", policy.mosaic, "render_mosaic"),
    ("  tile placement", mosaic, "tile_placements"),
    ("  114 fill", mosaic, "filled_image"),
    ("  tiles: resize, flip, copy", mosaic, "draw_axis_aligned"),
    ("    cv2.resize", cv2, "resize"),
    ("    cv2.flip", cv2, "flip"),
    ("  boxes through the maps, cut", mosaic, "transform_clip_box_groups"),
    ("  boxes filtered", mosaic, "sanitize_boxes"),
    ("affine warp (non-mosaic samples)", policy.affine, "warp"),
    ("mixup blend", policy.mixup, "blend"),
    ("albumentations extras", policy.extras, "apply_extras"),
    ("HSV jitter + RGB", policy.color, "apply_hsv"),
    ("RGB only (no HSV)", policy.color, "bgr_to_rgb"),
    ("targets", train_lib, "build_targets"),
)


class StageTimers:
    """CPU seconds and calls per stage label, while installed (module attributes wrapped)."""

    def __init__(self):
        self.seconds = collections.Counter()
        self.calls = collections.Counter()
        self._saved = []

    def _wrapped(self, label, function):
        @functools.wraps(function)
        def timed(*args, **kwargs):
            start = time.thread_time()
            try:
                return function(*args, **kwargs)
            finally:
                self.seconds[label] += time.thread_time() - start
                self.calls[label] += 1
        return timed

    def __enter__(self):
        for label, module, name in STAGES:
            original = getattr(module, name)
            self._saved.append((module, name, original))
            setattr(module, name, self._wrapped(label, original))
        return self

    def __exit__(self, *exc):
        for module, name, original in reversed(self._saved):
            setattr(module, name, original)
        self._saved.clear()


class _BatchInfo:
    """What MindSpore's BatchInfo gives the batch function: the batch number."""

    def __init__(self, number: int):
        self.number = number

    def get_batch_num(self) -> int:
        return self.number


def read_source_rows(folder: str) -> list[dict]:
    """Every stored row's source columns, in row order (FileReader: no dataset engine involved)."""
    from mindspore.mindrecord import FileReader

    files, manifest, _ = rows_lib.resolve_mindrecord(folder)
    # schema 3: each file a set of its own, row_index within it; before: one linked set, row_index global
    sets = [[path] for path in files] if manifest.schema_version >= ROW_INDEX_PER_FILE_VERSION else [files[:1]]
    rows = []
    for paths in sets:
        reader = FileReader(paths[0], columns=train_lib.SOURCE_COLUMNS)
        try:
            rows += sorted(reader.get_next(), key=lambda row: int(row["row_index"]))
        finally:
            reader.close()
    return rows


def profile_batch_function(folder: str, training_shape: int, per_batch_size: int, num_batches: int,
                           num_epochs: int) -> dict:
    """(total, per-stage) CPU ms per image of the batch function on one thread; see the module docstring."""
    files, manifest, path = rows_lib.resolve_mindrecord(folder)
    stored = read_source_rows(folder)
    order, keys = train_lib.train_keys(len(stored), seed=0, start_epoch=0, start_step=0, num_epochs=num_epochs,
                                       per_batch_size=per_batch_size, rank=0, group_size=1,
                                       dataset_id=manifest.dataset_id)
    config = AugmentConfig()
    if config.extras > 0:
        extras.preload()  # as create_train_dataset does
    builder = train_lib.TrainBatchBuilder(
        seed=0, training_shape=training_shape, resize_rate=0, shapes=(training_shape,), augment=config,
        anchors=YOLOV5_ANCHORS, anchor_t=4.0, max_boxes=256,
        decoder=rows_lib.RowDecoder(manifest, path, False, rows_lib.SkippedRowLog()), keys=keys,
        per_batch_size=per_batch_size)

    def columns_of(batch: int):
        batch_rows = [stored[int(r)] for r in order[batch * per_batch_size:(batch + 1) * per_batch_size]]
        return [[np.frombuffer(row[name], np.uint8) if name == "image" else np.asarray(row[name])
                 for row in batch_rows] for name in train_lib.SOURCE_COLUMNS]

    num_batches = min(num_batches, len(order) // per_batch_size - 1)
    builder(*columns_of(0), _BatchInfo(0))  # warm-up (first-call costs of OpenCV and numpy)
    with StageTimers() as timers:
        start = time.thread_time()
        for batch in range(1, num_batches + 1):
            builder(*columns_of(batch), _BatchInfo(batch))
        total = time.thread_time() - start
    num_images = num_batches * per_batch_size
    per_image = {label: 1e3 * timers.seconds[label] / num_images for label, _, _ in STAGES}
    top_level = sum(value for label, value in per_image.items() if not label.startswith(" "))
    per_image["rest of the batch function"] = 1e3 * total / num_images - top_level
    return {"total_ms": 1e3 * total / num_images, "stages_ms": per_image, "num_images": num_images,
            "calls": {label: timers.calls[label] for label, _, _ in STAGES}}


def pipeline_cpu(folder: str, training_shape: int, per_batch_size: int, num_batches: int, num_epochs: int,
                 workers: int) -> tuple[float, float]:
    """(images/s, process CPU ms per image) of the whole MindSpore train pipeline."""
    dataset = create_train_dataset(folder, per_batch_size=per_batch_size, training_shape=training_shape,
                                   num_parallel_workers=workers, seed=0, num_epochs=num_epochs)
    return time_batches(dataset, 1, min(num_batches, dataset.num_steps - 2), per_batch_size)


class decode_margin:  # noqa: N801 - used as a context manager, like a function
    """Temporarily another ``REDUCED_DECODE_MARGIN`` (the reduced-decoding rule) in this process."""

    def __init__(self, margin: int | None):
        self.margin = margin
        self.saved = rows_lib.REDUCED_DECODE_MARGIN

    def __enter__(self):
        if self.margin is not None:
            rows_lib.REDUCED_DECODE_MARGIN = int(self.margin)

    def __exit__(self, *exc):
        rows_lib.REDUCED_DECODE_MARGIN = self.saved


def median_profile(profiles: list) -> dict:
    return {"num_images": profiles[0]["num_images"], "total_ms": float(np.median([p["total_ms"] for p in profiles])),
            "stages_ms": {label: float(np.median([p["stages_ms"][label] for p in profiles]))
                          for label in profiles[0]["stages_ms"]}}


def measure(args, shape) -> dict:
    """Interleaved rounds (a change of the machine's load then hits every measurement alike): medians."""
    runs = {"one": [], "profile": [], "two": [], "compared": []}
    for _ in range(args.rounds):
        runs["one"].append(pipeline_cpu(*shape, workers=1))
        runs["profile"].append(profile_batch_function(*shape))
        if args.compare_margin is not None:
            with decode_margin(args.compare_margin):
                runs["compared"].append(profile_batch_function(*shape))
        runs["two"].append(pipeline_cpu(*shape, workers=2))
    figures = {"mindrecord": args.mindrecord, "training_shape": args.training_shape, "rounds": args.rounds,
               "per_batch_size": args.per_batch_size, "reduced_decode_margin": rows_lib.REDUCED_DECODE_MARGIN,
               **median_profile(runs["profile"])}
    for key, name in (("one", "pipeline_1_worker"), ("two", "pipeline_2_workers")):
        images_per_s, cpu_ms = (float(np.median([r[k] for r in runs[key]])) for k in range(2))
        figures[name] = {"images_per_s": round(images_per_s, 1), "cpu_ms_per_image": round(cpu_ms, 3)}
    if runs["compared"]:
        figures["compared_margin"] = {"reduced_decode_margin": args.compare_margin, **median_profile(runs["compared"])}
    return figures


def print_figures(figures: dict) -> None:
    compared = figures.get("compared_margin")
    print(f"train batch function on {figures['mindrecord']} at {figures['training_shape']}, batch "
          f"{figures['per_batch_size']}, {figures['num_images']} images, one thread: CPU ms per image (median of "
          f"{figures['rounds']} rounds)" + (f"; REDUCED_DECODE_MARGIN {figures['reduced_decode_margin']} (the rule) "
                                            f"and {compared['reduced_decode_margin']}" if compared else ""))
    for label, value in figures["stages_ms"].items():
        if value >= 0.0005 or not label.startswith(" "):
            other = f"{compared['stages_ms'][label]:8.3f}" if compared else ""
            print(f"  {label:<38}{value:8.3f}{other}")
    other = f"{compared['total_ms']:8.3f}" if compared else ""
    print(f"  {'= batch function':<38}{figures['total_ms']:8.3f}{other}")
    one, two = figures["pipeline_1_worker"], figures["pipeline_2_workers"]
    print(f"whole pipeline, 1 worker: {one['cpu_ms_per_image']:.3f} CPU ms/image ({one['images_per_s']:.1f} images/s); "
          f"minus the batch function: {one['cpu_ms_per_image'] - figures['total_ms']:+.3f} ms/image (MindSpore's "
          f"engine: reading rows, batching, hand-over; zero or below means not measurable here)")
    print(f"whole pipeline, 2 workers: {two['cpu_ms_per_image']:.3f} CPU ms/image ({two['images_per_s']:.1f} images/s)")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--mindrecord", required=True, help="a folder written by yolo-coco2mindrecord")
    parser.add_argument("--training_shape", type=int, default=640)
    parser.add_argument("--per_batch_size", type=int, default=8)
    parser.add_argument("--num_batches", type=int, default=18, help="batches timed in each measurement")
    parser.add_argument("--rounds", type=int, default=3, help="rounds of the measurements; medians shown")
    parser.add_argument("--compare_margin", type=int, default=None,
                        help="also profile the batch function with this REDUCED_DECODE_MARGIN (e.g. 1: JPEGs "
                             "reduced down to the batch's size), in the same rounds")
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args(argv)
    if args.rounds < 1:
        parser.error("--rounds must be at least 1")
    if args.compare_margin is not None and args.compare_margin < 1:
        parser.error("--compare_margin must be at least 1")
    cv2.setNumThreads(1)
    _, manifest, _ = rows_lib.resolve_mindrecord(args.mindrecord)
    # enough epochs for the batches asked for, plus the warm-up ones
    num_epochs = max(1, -(-(args.num_batches + 2) * args.per_batch_size // manifest.num_images))
    figures = measure(args, (args.mindrecord, args.training_shape, args.per_batch_size, args.num_batches, num_epochs))
    print_figures(figures)
    if args.json:
        args.json.write_text(json.dumps(figures, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
