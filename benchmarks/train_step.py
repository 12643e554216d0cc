"""Speed of the compiled YOLOv5 train step on this device: the images/s the input pipeline must beat.

    python benchmarks/train_step.py --yolov5_version yolov5n --training_shape 320 --per_batch_size 8 \
        [--yolov5_layout v5.0|v6.0] [--steps 10] [--device_target CPU] [--num_classes 80] [--json FILE]

Builds the same step as tools/train.py (forward, YOLOv5 loss, gradients with the static loss scale,
Nesterov momentum with weight decay groups, EMA update) and feeds it random uint8 images with realistic
targets: random boxes (1-12 per image, sizes spread over the anchor range) through the pipeline's own
``yolodata.targets.build_targets``. Reports the compile time (the first call, which compiles and runs
one step) and the steady-state images/s over ``--steps`` further steps (each step waits for its loss, as
the training loop does). No data pipeline is involved.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from yolodata.checks import check_multiple_of  # noqa: E402
from yolodata.rng import keyed_rng  # noqa: E402
from yolodata.targets import STRIDES, build_targets  # noqa: E402

DEVICES = ("CPU", "GPU", "Ascend")


def random_labels(rng: np.random.Generator, size: int, num_classes: int) -> np.ndarray:
    """float32 (N, 6) label array of 1-12 random boxes inside a size x size image."""
    count = int(rng.integers(1, 13))
    wh = np.exp(rng.uniform(np.log(8), np.log(0.8 * size), size=(count, 2)))
    centre = rng.uniform(0, size, size=(count, 2))
    x1y1 = np.clip(centre - wh / 2, 0, size - 2)
    x2y2 = np.clip(centre + wh / 2, x1y1 + 2, size)
    classes = rng.integers(0, num_classes, size=(count, 1))
    return np.concatenate([x1y1, x2y2, classes, np.zeros((count, 1))], axis=1).astype(np.float32)


def synthetic_batch(seed: int, batch_size: int, size: int, num_classes: int) -> list[np.ndarray]:
    """[images uint8 (B, S, S, 3), ti8, tv8, ti16, tv16, ti32, tv32] as the pipeline delivers them."""
    rng = keyed_rng(seed, batch_size, size, purpose="train-step-benchmark")
    images = rng.integers(0, 256, size=(batch_size, size, size, 3), dtype=np.uint8)
    targets = build_targets([random_labels(rng, size, num_classes) for _ in range(batch_size)], (size, size))
    columns = [images]
    for stride in STRIDES:
        columns += [targets[f"target_indices_s{stride}"], targets[f"target_values_s{stride}"]]
    return columns


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--yolov5_version", default="yolov5s")
    parser.add_argument("--yolov5_layout", default="v5.0", help="network layout: v5.0 or v6.0")
    parser.add_argument("--training_shape", type=int, default=640)
    parser.add_argument("--per_batch_size", type=int, default=8)
    parser.add_argument("--steps", type=int, default=10, help="timed steps after the compile step")
    parser.add_argument("--device_target", choices=DEVICES, default="CPU")
    parser.add_argument("--num_classes", type=int, default=80)
    parser.add_argument("--json", type=Path, default=None, help="also write the figures to this json file")
    args = parser.parse_args(argv)
    if args.steps < 1:
        parser.error("--steps must be at least 1")
    if args.per_batch_size < 1:
        parser.error("--per_batch_size must be at least 1")
    try:
        check_multiple_of("--training_shape", args.training_shape)
    except ValueError as error:
        parser.error(str(error))
    return args


def main(argv=None) -> dict:
    args = parse_args(argv)
    import mindspore as ms
    from mindspore import Tensor

    from yolomodel.device import setup_device
    from yolomodel.train import builder

    setup_device(args.device_target)
    parts = builder.build_train_step(
        yolov5_version=args.yolov5_version, num_classes=args.num_classes, training_shape=args.training_shape,
        momentum=0.9, weight_decay=5e-4, loss_scale=64.0, loss_scale_type="static", label_smooth_factor=0.0,
        iou_type="ciou", amp_level=builder.step_lib.amp_level_for(args.device_target), seed=0,
        layout=args.yolov5_layout)
    batch = [Tensor(column) for column in synthetic_batch(0, args.per_batch_size, args.training_shape,
                                                          args.num_classes)]
    lr = Tensor(np.float32(1e-4))
    no_stop = Tensor(np.float32(0.0))

    started = time.perf_counter()
    losses, _, _, _ = parts.train_step(*batch, lr, no_stop)
    losses.asnumpy()
    compile_seconds = time.perf_counter() - started

    started = time.perf_counter()
    for _ in range(args.steps):
        losses, finite, _, _ = parts.train_step(*batch, lr, no_stop)
        losses.asnumpy()
    seconds = time.perf_counter() - started
    result = {
        "yolov5_version": args.yolov5_version, "yolov5_layout": parts.network.layout,
        "training_shape": args.training_shape,
        "per_batch_size": args.per_batch_size, "device_target": args.device_target,
        "num_classes": args.num_classes, "steps": args.steps,
        "parameters": int(sum(int(np.prod(p.shape)) for p in parts.network.trainable_params())),
        "compile_seconds": round(compile_seconds, 2),
        "seconds_per_step": round(seconds / args.steps, 4),
        "images_per_second": round(args.per_batch_size * args.steps / seconds, 2),
        "loss_finite": bool(finite.asnumpy()), "cpu_count": os.cpu_count(),
    }
    print(f"{args.yolov5_version} ({parts.network.layout}) {args.training_shape}x{args.training_shape} batch {args.per_batch_size} on "
          f"{args.device_target}: compile + first step {result['compile_seconds']:.1f} s, then "
          f"{result['seconds_per_step']:.3f} s/step = {result['images_per_second']:.2f} images/s "
          f"({args.steps} steps)")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(result, indent=1) + "\n")
    return result


if __name__ == "__main__":
    main()
