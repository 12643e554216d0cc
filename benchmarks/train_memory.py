"""Peak memory of ``yolo-train`` and where it goes, plus the bytes its checkpoints leave on disk.

    python benchmarks/train_memory.py [--epochs 3] [--imgsz 320] [--batch 16] [--workers 2] [--keep DIR]

The run of issue 27: yolov5n fine-tuned from the real COCO weights (``yolov5n_v6.1_coco.pt``, imported on
the fly), coco128 converted (the first 100 images train, the other 28 validate), ``--training_shape
320``, ``--per_batch_size 16``, validation after every epoch, 2 pipeline workers, all other flags at their
defaults. ``yolo-train`` runs in a child process; this script samples the child's resident set size
(its threads included) every 20 ms for the peak, and the child logs its own RSS and peak at the loop's
stages (``yolomodel.train.memory``): the growth of the peak between two stages is what the part running
between them added. At the end: every file the run left in ``ckpt_0/`` with its size, the total, and
the total after 30 epochs, which the checkpoint policy makes exact (the file set does not grow with the
epochs when no periodic checkpoints are asked for).
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

import psutil

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


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--imgsz", type=int, default=320)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--keep", default="", help="folder to keep the run in (default: a temporary one)")
    parser.add_argument("extra", nargs="*", help="more yolo-train flags, after --")
    args = parser.parse_args(argv)
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
