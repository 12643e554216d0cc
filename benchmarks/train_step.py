"""Speed of the compiled YOLOv5 train step on this device: the images/s the input pipeline must beat.

    python benchmarks/train_step.py --yolov5_version yolov5n --training_shape 320 --per_batch_size 8 \
        [--yolov5_layout v5.0|v6.0] [--steps 10] [--device_target CPU] [--num_classes 80] [--max_boxes 256] [--json FILE]
    python benchmarks/train_step.py --breakdown --yolov5_version yolov5n --training_shape 256 \
        --per_batch_size 16 [--rounds 5] [--steps 3] [--max_boxes 256] [--json FILE]

Builds the same step as tools/train.py (forward, YOLOv5 loss, gradients with the device's default
loss scale, Nesterov momentum with weight decay groups, EMA update) and feeds it random uint8 images
with realistic targets: random boxes (1-12 per image, sizes spread over the anchor range) through the
pipeline's own ``build_targets`` with ``--max_boxes`` slots per image. No data pipeline is involved.

Without ``--breakdown``: the compile time (the first call, which compiles and runs one step) and the
steady-state images/s over ``--steps`` further steps (each step waits for its loss, as the loop does).

With ``--breakdown``: five compiled parts, each compiled and warmed up first, then timed in
``--rounds`` interleaved rounds (every part ``--steps`` times per round, so a change in the machine's
load hits all parts alike), reported as the median over rounds with the range:

* ``forward_ms``: the network's inference forward (BatchNorm on its moving statistics, no gradients);
* ``network_forward_backward_ms``: training forward + backward to every weight, the sum of the head
  outputs standing in for the loss;
* ``loss_forward_backward_ms``: the YOLOv5 loss alone on fixed head outputs, with its gradient to them;
* ``update_ms``: unscale + finiteness check (when the loss scale needs them) + optimizer + EMA;
* ``step_ms``: the whole train step; ``images_per_second`` is per_batch_size / step_ms.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from yolodata.checks import check_multiple_of  # noqa: E402
from yolodata.rng import keyed_rng  # noqa: E402
from yolodata.pipeline.targets import STRIDES, build_targets  # noqa: E402

DEVICES = ("CPU", "GPU", "Ascend")
PARTS = (("forward_ms", "inference forward"),
         ("network_forward_backward_ms", "network forward + backward (sum of outputs as the loss)"),
         ("loss_forward_backward_ms", "loss forward + backward"),
         ("update_ms", "update (unscale + finiteness check if needed, optimizer, EMA)"),
         ("step_ms", "full step"))


def random_labels(rng: np.random.Generator, size: int, num_classes: int) -> np.ndarray:
    """float32 (N, 6) label array of 1-12 random boxes inside a size x size image."""
    count = int(rng.integers(1, 13))
    wh = np.exp(rng.uniform(np.log(8), np.log(0.8 * size), size=(count, 2)))
    centre = rng.uniform(0, size, size=(count, 2))
    x1y1 = np.clip(centre - wh / 2, 0, size - 2)
    x2y2 = np.clip(centre + wh / 2, x1y1 + 2, size)
    classes = rng.integers(0, num_classes, size=(count, 1))
    return np.concatenate([x1y1, x2y2, classes, np.zeros((count, 1))], axis=1).astype(np.float32)


def synthetic_batch(seed: int, batch_size: int, size: int, num_classes: int, max_boxes: int = 256) -> list[np.ndarray]:
    """[images uint8 (B, S, S, 3), ti8, tv8, ti16, tv16, ti32, tv32] as the pipeline delivers them."""
    rng = keyed_rng(seed, batch_size, size, purpose="train-step-benchmark")
    images = rng.integers(0, 256, size=(batch_size, size, size, 3), dtype=np.uint8)
    targets = build_targets([random_labels(rng, size, num_classes) for _ in range(batch_size)], (size, size),
                            max_boxes=max_boxes)
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
    parser.add_argument("--steps", type=int, default=None,
                        help="timed steps after the compile step (default 10); with --breakdown: calls of "
                             "each part per round (default 3)")
    parser.add_argument("--breakdown", action="store_true", help="time the parts of the step, interleaved")
    parser.add_argument("--rounds", type=int, default=5, help="interleaved rounds with --breakdown")
    parser.add_argument("--max_boxes", type=int, default=256, help="target slots per image (the pipeline's max_boxes)")
    parser.add_argument("--device_target", choices=DEVICES, default="CPU")
    parser.add_argument("--num_classes", type=int, default=80)
    parser.add_argument("--json", type=Path, default=None, help="also write the figures to this json file")
    args = parser.parse_args(argv)
    if args.steps is None:
        args.steps = 3 if args.breakdown else 10
    for name in ("steps", "rounds", "per_batch_size", "max_boxes", "num_classes"):
        if getattr(args, name) < 1:
            parser.error(f"--{name} must be at least 1, got {getattr(args, name)}")
    try:
        check_multiple_of("--training_shape", args.training_shape)
    except ValueError as error:
        parser.error(str(error))
    return args


def build_parts(args):
    """(TrainParts, amp_level, loss_scale) of the step tools/train.py builds for this device."""
    from yolomodel.train import builder

    amp_level = builder.step_lib.amp_level_for(args.device_target)
    loss_scale = builder.step_lib.default_loss_scale(amp_level)
    parts = builder.build_train_step(
        yolov5_version=args.yolov5_version, num_classes=args.num_classes, training_shape=args.training_shape,
        momentum=0.9, weight_decay=5e-4, loss_scale=loss_scale, loss_scale_type="static", label_smooth_factor=0.0,
        iou_type="ciou", amp_level=amp_level, seed=0, layout=args.yolov5_layout)
    return parts, amp_level, loss_scale


def run_whole_step(args) -> dict:
    from mindspore import Tensor

    parts, _, loss_scale = build_parts(args)
    batch = [Tensor(column) for column in synthetic_batch(0, args.per_batch_size, args.training_shape,
                                                          args.num_classes, args.max_boxes)]
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
    return {
        "parameters": int(sum(int(np.prod(p.shape)) for p in parts.network.trainable_params())),
        "loss_scale": loss_scale, "compile_seconds": round(compile_seconds, 2),
        "seconds_per_step": round(seconds / args.steps, 4),
        "images_per_second": round(args.per_batch_size * args.steps / seconds, 2),
        "loss_finite": bool(finite.asnumpy()),
    }


def breakdown_callables(args):
    """{json key: zero-argument callable that runs one compiled part and waits for its result}."""
    from mindspore import Tensor, nn, ops

    from yolomodel.network import create_yolov5

    parts, amp_level, loss_scale = build_parts(args)
    columns = synthetic_batch(0, args.per_batch_size, args.training_shape, args.num_classes, args.max_boxes)
    batch = [Tensor(column) for column in columns]
    images, targets = batch[0], batch[1:]
    lr = Tensor(np.float32(1e-8))
    no_stop = Tensor(np.float32(0.0))
    scale = Tensor(np.float32(loss_scale))

    # an inference copy (same seed, same weights) so that no part switches the step's network mode
    from yolomodel.train import builder

    inference_net = builder.step_lib.apply_mixed_precision(
        create_yolov5(args.yolov5_version, args.num_classes, seed=0, layout=args.yolov5_layout), amp_level)
    inference_net.set_train(False)

    class SumOfOutputs(nn.Cell):
        """Stands in for the loss: the sum of every head output, with the loss's four outputs."""

        def construct(self, outputs, *unused_targets):
            total = outputs[0].sum()
            for out in outputs[1:]:
                total = total + out.sum()
            zero = total * 0.0
            return total, zero, zero, zero

    # the step's own forward-backward cell with the trivial loss: the network's share of the step
    network_grad = builder.step_lib.ForwardBackward(parts.network, SumOfOutputs(), parts.optimizer.parameters)

    class LossGrad(nn.Cell):
        """The loss and its gradient with respect to the head outputs."""

        def __init__(self, loss):
            super().__init__(auto_prefix=False)
            self.loss = loss
            self.grad_fn = ops.value_and_grad(self.total, grad_position=(0, 1, 2))

        def total(self, out8, out16, out32, ti8, tv8, ti16, tv16, ti32, tv32):
            return self.loss((out8, out16, out32), ti8, tv8, ti16, tv16, ti32, tv32)[0]

        def construct(self, out8, out16, out32, ti8, tv8, ti16, tv16, ti32, tv32):
            return self.grad_fn(out8, out16, out32, ti8, tv8, ti16, tv16, ti32, tv32)

    loss_grad = LossGrad(parts.loss_fn)
    head_outputs = tuple(Tensor(out.asnumpy().astype(np.float32)) for out in inference_net(images))
    fixed_parts = Tensor(np.array([1.0, 0.1, 0.1, 0.1], np.float32))
    # gradients of the real scaled loss, so that the update sees realistic values
    _, step_grads = parts.train_step.forward_backward(scale, images, *targets)
    apply_gradients = parts.train_step.apply_gradients

    def forward():
        inference_net(images)[-1].asnumpy()

    def network_forward_backward():
        values, _ = network_grad(scale, images, *targets)
        values.asnumpy()

    def loss_forward_backward():
        value, _ = loss_grad(*head_outputs, *targets)
        value.asnumpy()

    def update():
        apply_gradients(step_grads, fixed_parts, lr).asnumpy()

    def step():
        parts.train_step(*batch, lr, no_stop)[0].asnumpy()

    callables = {"forward_ms": forward, "network_forward_backward_ms": network_forward_backward,
                 "loss_forward_backward_ms": loss_forward_backward, "update_ms": update, "step_ms": step}
    valid = {stride: int((column[..., 5] > 0).sum()) for stride, column in zip(STRIDES, columns[2::2])}
    return callables, parts, loss_scale, valid


def run_breakdown(args) -> dict:
    callables, parts, loss_scale, valid = breakdown_callables(args)
    compile_seconds = {}
    for key, run in callables.items():
        started = time.perf_counter()
        run()                                   # compile
        compile_seconds[key] = round(time.perf_counter() - started, 2)
        run()                                   # warm up
    per_round = {key: [] for key in callables}
    cpu_per_round = {key: [] for key in callables}
    for round_number in range(args.rounds):
        for key, run in callables.items():
            started, cpu_started = time.perf_counter(), time.process_time()
            for _ in range(args.steps):
                run()
            per_round[key].append(1000.0 * (time.perf_counter() - started) / args.steps)
            cpu_per_round[key].append(1000.0 * (time.process_time() - cpu_started) / args.steps)
        print(f"round {round_number + 1}/{args.rounds}: "
              + ", ".join(f"{key} {per_round[key][-1]:.1f}" for key in callables), flush=True)
    result = {key: round(statistics.median(values), 2) for key, values in per_round.items()}
    result.update({
        "ranges_ms": {key: [round(min(values), 2), round(max(values), 2)] for key, values in per_round.items()},
        "rounds_ms": {key: [round(v, 2) for v in values] for key, values in per_round.items()},
        # CPU seconds of this process (all its threads) per call: less sensitive than wall time to other
        # processes on the machine, though not free of them
        "cpu_ms": {key: round(statistics.median(values), 2) for key, values in cpu_per_round.items()},
        "compile_seconds": compile_seconds,
        "images_per_second": round(args.per_batch_size * 1000.0 / result["step_ms"], 2),
        "step_over_network_forward_backward": round(result["step_ms"] / result["network_forward_backward_ms"], 3),
        "valid_targets_per_stride": valid, "loss_scale": loss_scale,
        "parameters": int(sum(int(np.prod(p.shape)) for p in parts.network.trainable_params())),
        "rounds": args.rounds, "calls_per_round": args.steps,
    })
    return result


def breakdown_table(result: dict) -> str:
    lines = ["| part | ms per step (median) | range over rounds | share of the step | CPU ms (median) |",
             "| --- | --- | --- | --- | --- |"]
    for key, label in PARTS:
        low, high = result["ranges_ms"][key]
        lines.append(f"| {label} | {result[key]:.1f} | {low:.1f}-{high:.1f} | "
                     f"{100.0 * result[key] / result['step_ms']:.0f}% | {result['cpu_ms'][key]:.1f} |")
    return "\n".join(lines)


def main(argv=None) -> dict:
    args = parse_args(argv)
    from yolomodel.device import setup_device

    setup_device(args.device_target)
    result = {
        "yolov5_version": args.yolov5_version, "yolov5_layout": args.yolov5_layout,
        "training_shape": args.training_shape,
        "per_batch_size": args.per_batch_size, "device_target": args.device_target,
        "num_classes": args.num_classes, "max_boxes": args.max_boxes, "steps": args.steps,
        "cpu_count": os.cpu_count(),
    }
    load_before = os.getloadavg()[0] if hasattr(os, "getloadavg") else None
    if args.breakdown:
        result.update(run_breakdown(args))
        print(f"{args.yolov5_version} {args.training_shape}x{args.training_shape} batch {args.per_batch_size} "
              f"max_boxes {args.max_boxes} on {args.device_target}, loss scale {result['loss_scale']:g}, "
              f"{args.rounds} interleaved rounds of {args.steps} calls per part:")
        print(breakdown_table(result))
        print(f"step / network forward+backward = {result['step_over_network_forward_backward']:.2f}; "
              f"{result['images_per_second']:.2f} images/s")
    else:
        result.update(run_whole_step(args))
        print(f"{args.yolov5_version} ({args.yolov5_layout}) {args.training_shape}x{args.training_shape} batch {args.per_batch_size} on "
              f"{args.device_target}: compile + first step {result['compile_seconds']:.1f} s, then "
              f"{result['seconds_per_step']:.3f} s/step = {result['images_per_second']:.2f} images/s "
              f"({args.steps} steps)")
    load_after = os.getloadavg()[0] if hasattr(os, "getloadavg") else None
    result["load_average_1min"] = [load_before, load_after]
    print(f"load average (1 min) before / after: {load_before} / {load_after}")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(result, indent=1) + "\n")
    return result


if __name__ == "__main__":
    main()
