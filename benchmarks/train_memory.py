"""Peak memory of ``yolo-train`` and where it goes, plus the bytes its checkpoints leave on disk.

    python benchmarks/train_memory.py [--epochs 3] [--imgsz 320] [--batch 16] [--workers 2] [--keep DIR]
    python benchmarks/train_memory.py --compare_silu [--imgsz 320] [--batch 16] [--rounds 10]

The run of issue 27: yolov5n fine-tuned from the real COCO weights (``yolov5n_v6.1_coco.pt``, imported on
the fly), coco128 converted (the first 100 images train, the other 28 validate), ``--training_shape
320``, ``--per_batch_size 16``, validation after every epoch, 2 pipeline workers, all other flags at their
defaults. ``yolo-train`` runs in a child process; this script samples the child's resident set size
(its threads included) every 20 ms for the peak, and the child logs its own RSS and peak at the loop's
stages (``yolomodel.train.memory``): the growth of the peak between two stages is what the part running
between them added. At the end: every file the run left in ``ckpt_0/`` with its size, the total, and
the total after 30 epochs, which the checkpoint policy makes exact (the file set does not grow with the
epochs when no periodic checkpoints are asked for).

``--compare_silu``: the cost of recomputing SiLU in the backward pass (``yolomodel.layers.silu``)
instead of storing it, measured in one process: the same yolov5n step (same initial weights, the
same synthetic batches) built once with SiLU stored (``x * sigmoid(x)`` differentiated as written)
and once as the network builds it, both compiled, then run in alternating order for ``--rounds``
rounds; prints whether every parameter (weights, BatchNorm statistics, momentum, EMA) is bitwise equal
after each of the first 3 steps, and the median step time of each with their ratio.
"""
from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
import psutil
from mindspore import ops

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from benchmarks.real_data import REAL_DATA  # noqa: E402
from yolodata.convert import convert_coco  # noqa: E402

COCO128 = REAL_DATA / "coco128"
WEIGHTS = REAL_DATA / "yolov5_pt" / "yolov5n_v6.1_coco.pt"
NUM_TRAIN_IMAGES = 100
CHILD = """
import logging, sys
handler = logging.StreamHandler(sys.stdout)
handler.setFormatter(logging.Formatter("MEMORY %(message)s"))
memory_logger = logging.getLogger("yolomodel.train.memory")
memory_logger.addHandler(handler); memory_logger.setLevel(logging.DEBUG); memory_logger.propagate = False
from yolomodel.cli import train
sys.exit(train.main(sys.argv[1:]))
"""
STAGE = re.compile(r"MEMORY memory after (.*): rss (\d+) MB, peak (\d+) MB")


def split_coco128(folder: Path) -> tuple[Path, Path]:
    """coco128 as two shard folders: the first ``NUM_TRAIN_IMAGES`` images train, the rest validate."""
    document = json.loads((COCO128 / "annotations" / "instances_val2017.json").read_text())
    images = sorted(document["images"], key=lambda image: image["id"])
    outputs = []
    for name, part in (("train", images[:NUM_TRAIN_IMAGES]), ("val", images[NUM_TRAIN_IMAGES:])):
        ids = {image["id"] for image in part}
        subset = dict(document, images=part, annotations=[a for a in document["annotations"] if a["image_id"] in ids])
        ann_file = folder / f"{name}.json"
        ann_file.write_text(json.dumps(subset))
        convert_coco(COCO128 / "val2017", ann_file, folder / name, shard_num=1)
        outputs.append(folder / name)
    return outputs[0], outputs[1]


class PeakSampler(threading.Thread):
    """Samples the RSS of a process and its children until stopped; keeps the peak."""

    def __init__(self, pid: int, interval: float = 0.02):
        super().__init__(daemon=True)
        self.process = psutil.Process(pid)
        self.interval = interval
        self.peak = 0
        self.running = True

    def run(self):
        while self.running:
            try:
                total = self.process.memory_info().rss
                total += sum(child.memory_info().rss for child in self.process.children(recursive=True))
            except psutil.Error:
                break
            self.peak = max(self.peak, total)
            time.sleep(self.interval)


def run_training(train_dir: Path, val_dir: Path, run_dir: Path, args) -> tuple[int, float, list, float]:
    argv = ["--mindrecord", str(train_dir), "--val_mindrecord", str(val_dir), "--weights", str(WEIGHTS),
            "--training_shape", str(args.imgsz), "--per_batch_size", str(args.batch),
            "--num_parallel_workers", str(args.workers), "--max_epoch", str(args.epochs),
            "--warmup_epochs", "1", "--t_max", str(args.epochs), "--lr", "0.01", "--log_interval", "100",
            "--ckpt_path", str(run_dir)] + args.extra
    started = time.perf_counter()
    child = subprocess.Popen([sys.executable, "-c", CHILD] + argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                             text=True, env=dict(os.environ, PYTHONPATH=str(ROOT)))
    sampler = PeakSampler(child.pid)
    sampler.start()
    stages, lines = [], []
    for line in child.stdout:
        lines.append(line)
        match = STAGE.search(line)
        if match:
            stages.append((match.group(1), int(match.group(2)), int(match.group(3))))
    code = child.wait()
    sampler.running = False
    sampler.join()
    if code != 0:
        sys.stdout.write("".join(lines[-40:]))
    return code, sampler.peak / 1e6, stages, time.perf_counter() - started


def print_breakdown(peak_mb: float, stages: list) -> None:
    print(f"peak RSS of yolo-train (sampled every 20 ms): {peak_mb:.0f} MB")
    print(f"{'after':<58} {'rss MB':>7} {'peak MB':>8} {'peak grew':>10}")
    previous = 0
    for stage, rss, peak in stages:
        print(f"{stage:<58} {rss:>7} {peak:>8} {peak - previous:>+10}")
        previous = peak


def print_disk(run_dir: Path, epochs: int) -> None:
    files = sorted(p for p in (run_dir / "ckpt_0").iterdir() if p.is_file())
    total = sum(p.stat().st_size for p in files)
    print(f"files in {run_dir / 'ckpt_0'} after {epochs} epochs:")
    for path in files:
        print(f"  {path.name:<24} {path.stat().st_size / 1e6:8.2f} MB")
    periodic = [p for p in files if re.fullmatch(r"\d+-\d+_\d+\.ckpt", p.name)]
    print(f"total {total / 1e6:.2f} MB in {len(files)} files ({len(periodic)} periodic)")
    if not periodic:
        print(f"after 30 epochs with these flags: the same {len(files)} files, {total / 1e6:.2f} MB "
              f"(no periodic checkpoints without --ckpt_interval / --save_period)")


def stored_silu(x):
    """SiLU differentiated as written (the gradient keeps x and sigmoid(x) from the forward pass)."""
    return x * ops.sigmoid(x)


def compare_silu(imgsz: int, batch: int, rounds: int) -> int:
    """The step with SiLU stored against the step with SiLU recomputed, in this process (see the docstring)."""
    import mindspore as ms

    from benchmarks.train_step import synthetic_batch
    from yolomodel import layers
    from yolomodel.device import setup_device
    from yolomodel.train import builder

    setup_device("CPU")
    batches = [[ms.Tensor(c) for c in synthetic_batch(seed, batch, imgsz, 80)] for seed in range(3)]
    extra = [ms.Tensor(np.float32(0.01)), ms.Tensor(np.float32(0.0))]

    def compiled_step():
        parts = builder.build_train_step(
            yolov5_version="yolov5n", num_classes=80, training_shape=imgsz, momentum=0.937, weight_decay=5e-4,
            loss_scale=1.0, loss_scale_type="static", label_smooth_factor=0.0, iou_type="ciou", layout="v6.0")
        parts.train_step.compile(*batches[0], *extra)
        return parts.train_step

    recomputed = layers.silu
    layers.silu = stored_silu     # as differentiated before: both factors stored
    try:
        steps = {"stored": compiled_step()}
    finally:
        layers.silu = recomputed
    steps["recomputed"] = compiled_step()
    seconds = {name: [] for name in steps}
    for round_index in range(rounds):
        names = list(steps) if round_index % 2 == 0 else list(steps)[::-1]
        for name in names:
            started = time.perf_counter()
            [output.asnumpy() for output in steps[name](*batches[round_index % 3], *extra)]
            seconds[name].append(time.perf_counter() - started)
        if round_index < 3:
            values = [{p.name: p.asnumpy() for p in steps[name].get_parameters()} for name in steps]
            differing = [n for n in values[0] if not np.array_equal(values[0][n], values[1][n])]
            print(f"after step {round_index + 1}: {len(values[0]) - len(differing)} of {len(values[0])} parameters "
                  f"bitwise equal" + (f" (differing: {differing[:5]})" if differing else ""))
    stored, recomputed_s = (float(np.median(seconds[name][1:])) for name in ("stored", "recomputed"))
    print(f"yolov5n, {imgsz} px, batch {batch}, {rounds} alternating rounds (the first left out): median step "
          f"{stored:.3f} s with SiLU stored, {recomputed_s:.3f} s recomputed, ratio {recomputed_s / stored:.3f}")
    return 0


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--imgsz", type=int, default=320)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--keep", default="", help="folder to keep the run in (default: a temporary one)")
    parser.add_argument("--compare_silu", action="store_true",
                        help="instead: SiLU stored against recomputed in one process (equality and step time)")
    parser.add_argument("--rounds", type=int, default=10, help="--compare_silu: alternating rounds")
    parser.add_argument("extra", nargs="*", help="more yolo-train flags, after --")
    args = parser.parse_args(argv)
    if args.compare_silu:
        return compare_silu(args.imgsz, args.batch, args.rounds)
    with tempfile.TemporaryDirectory() as temporary:
        folder = Path(args.keep or temporary)
        folder.mkdir(parents=True, exist_ok=True)
        train_dir, val_dir = split_coco128(folder)
        code, peak_mb, stages, seconds = run_training(train_dir, val_dir, folder / "run", args)
        if code != 0:
            print(f"yolo-train failed with exit code {code}")
            return 1
        print(f"yolov5n, {args.imgsz} px, batch {args.batch}, {args.workers} workers, {args.epochs} epochs "
              f"of {NUM_TRAIN_IMAGES} coco128 images, validation on 28 after each: {seconds:.0f} s")
        print_breakdown(peak_mb, stages)
        print_disk(folder / "run", args.epochs)
    return 0


if __name__ == "__main__":
    sys.exit(main())
