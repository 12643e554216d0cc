"""The time AutoAnchor adds before the first training step, on coco128 and on a 118k-image label set.

    python benchmarks/autoanchor_time.py [--training_shape 640] [--num_images 118287] [--generations 1000]

* coco128: its shards are converted into a temporary folder, then timed as training runs it: reading
  every label row from the shards (``train.labels.TrainingLabels``), the box sizes, and the BPR check
  (COCO's anchors fit coco128: no recomputation).
* 118k images (COCO train2017's count): box sizes synthesized (AutoAnchor needs only widths and heights):
  7.3 boxes per image as COCO train2017 has, widths and heights log-normal around COCO's spread. Timed:
  the check alone (BPR > 0.98, as on COCO) and the full recomputation (k-means + ``--generations``
  generations of evolution) that a badly fitting dataset of that size triggers, forced here by checking
  anchors 8x too large.
Times are wall-clock on a shared machine: compare them within one run.
"""
from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from benchmarks.real_data import COCO128  # noqa: E402
from yolodata import anchors as anchors_lib  # noqa: E402
from yolodata.convert import convert_coco  # noqa: E402
from yolodata.pipeline.targets import YOLOV5_ANCHORS  # noqa: E402
from yolomodel.train.labels import TrainingLabels  # noqa: E402

COCO_BOXES_PER_IMAGE = 7.3      # 860,001 boxes / 118,287 images in instances_train2017.json


def synthetic_boxes(num_images: int, training_shape: int, seed: int = 0) -> anchors_lib.BoxSizes:
    """Box sizes of ``num_images`` images: Poisson(7.3) boxes each, log-normal widths and heights."""
    rng = np.random.default_rng(seed)
    per_image = rng.poisson(COCO_BOXES_PER_IMAGE, num_images)
    num_boxes = int(per_image.sum())
    scale = training_shape / 640.0
    widths = np.exp(rng.normal(np.log(60), 1.0, num_boxes)) * scale
    heights = widths * np.exp(rng.normal(0.0, 0.5, num_boxes))
    sizes = np.clip(np.stack([widths, heights], axis=1), 1, training_shape).astype(np.float32)
    return anchors_lib.BoxSizes(sizes, np.repeat(np.arange(num_images), per_image), num_images)


def timed(function):
    started = time.perf_counter()
    result = function()
    return result, time.perf_counter() - started


def coco128_figures(training_shape: int) -> None:
    with tempfile.TemporaryDirectory() as folder:
        shards = Path(folder) / "coco128"
        convert_coco(COCO128 / "val2017", COCO128 / "annotations" / "instances_val2017.json", shards)
        rows, read_s = timed(lambda: TrainingLabels(shards).rows())
        boxes, sizes_s = timed(lambda: anchors_lib.box_sizes(rows, training_shape))
        result, check_s = timed(lambda: anchors_lib.check_anchors(boxes, YOLOV5_ANCHORS, anchor_t=4.0,
                                                                  training_shape=training_shape))
    print(f"coco128: {len(rows)} images, {len(boxes.sizes)} boxes: read labels {read_s:.3f} s, sizes "
          f"{sizes_s:.4f} s, check {check_s:.4f} s (BPR {result.before.bpr:.4f}, anchors kept: "
          f"{not result.changed}); AutoAnchor adds {read_s + sizes_s + check_s:.2f} s")


def large_set_figures(num_images: int, training_shape: int, generations: int) -> None:
    boxes, make_s = timed(lambda: synthetic_boxes(num_images, training_shape))
    quiet = lambda _: None  # noqa: E731
    kept, check_s = timed(lambda: anchors_lib.check_anchors(boxes, YOLOV5_ANCHORS, anchor_t=4.0,
                                                            training_shape=training_shape, log=quiet))
    print(f"{num_images} images, {len(boxes.sizes)} boxes (synthesized in {make_s:.2f} s): check with COCO's "
          f"anchors {check_s:.2f} s (BPR {kept.before.bpr:.4f}, kept: {not kept.changed})")
    too_large = YOLOV5_ANCHORS * 8
    recomputed, full_s = timed(lambda: anchors_lib.check_anchors(
        boxes, too_large, anchor_t=4.0, training_shape=training_shape, generations=generations, log=quiet))
    print(f"{num_images} images: check + k-means + {generations} generations of evolution {full_s:.1f} s "
          f"(BPR {recomputed.before.bpr:.4f} -> {recomputed.after.bpr:.4f}); ratio to the check alone "
          f"{full_s / check_s:.0f}x")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--training_shape", type=int, default=640)
    parser.add_argument("--num_images", type=int, default=118287)
    parser.add_argument("--generations", type=int, default=anchors_lib.DEFAULT_GENERATIONS)
    args = parser.parse_args(argv)
    coco128_figures(args.training_shape)
    large_set_figures(args.num_images, args.training_shape, args.generations)
    return 0


if __name__ == "__main__":
    sys.exit(main())
