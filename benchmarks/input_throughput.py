"""Input-pipeline throughput: train and eval pipelines against a decode-only reference, in one run.

    python benchmarks/input_throughput.py --mindrecord DIR --training_shape 640 --per_batch_size 16 \
        --num_parallel_workers 2 [--json FILE]

Without --mindrecord, the 2048-image set is built first in a temporary folder by repeating
../shared/data/coco128 under new file names and ids (the JPEG bytes stay real) and converting it.

The decode-only reference decodes one stored image per sample (cv2.imdecode) with the same number of
threads, reading the same rows through MindDataset: it is the floor any pipeline pays.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from yolodata.pipeline import create_eval_dataset, create_train_dataset, default_num_workers  # noqa: E402


class PeakRss:
    """Samples this process's resident memory every 50 ms; ``peak_mb`` is the largest seen."""

    def __init__(self):
        self.peak_mb = 0.0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _current_mb(self) -> float:
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 1024
        return 0.0

    def _run(self):
        while not self._stop.is_set():
            self.peak_mb = max(self.peak_mb, self._current_mb())
            time.sleep(0.05)

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()
        self.peak_mb = max(self.peak_mb, self._current_mb())


def time_batches(dataset, warmup_batches: int, max_batches: int, per_batch_size: int) -> float:
    """Images per second over the batches after ``warmup_batches`` (the first ones fill the queues)."""
    iterator = dataset.create_tuple_iterator(output_numpy=True, num_epochs=1)
    count, start = 0, None
    for index, _ in enumerate(iterator):
        if index == warmup_batches:
            start = time.perf_counter()
        elif index > warmup_batches:
            count += per_batch_size
        if index + 1 >= warmup_batches + 1 + max_batches:
            break
    if start is None or count == 0:
        raise SystemExit("not enough batches to time: lower --warmup_batches or use a larger dataset")
    return count / (time.perf_counter() - start)


def decode_only(mindrecord: str, num_images: int, workers: int) -> float:
    """cv2.imdecode of one stored image per sample on ``workers`` threads (bytes read beforehand)."""
    import cv2
    import mindspore.dataset as ds

    from yolodata.pipeline import resolve_mindrecord

    files, _, _ = resolve_mindrecord(mindrecord)
    reader = ds.MindDataset(files[0], columns_list=["image"], shuffle=False, num_samples=num_images)
    buffers = [np.frombuffer(row[0].tobytes(), np.uint8)
               for row in reader.create_tuple_iterator(output_numpy=True, num_epochs=1)]

    def decode(buf):
        return cv2.imdecode(buf, cv2.IMREAD_COLOR).shape

    with ThreadPoolExecutor(workers) as pool:
        list(pool.map(decode, buffers[: min(32, len(buffers))]))  # warm-up
        start = time.perf_counter()
        list(pool.map(decode, buffers))
        return len(buffers) / (time.perf_counter() - start)


def build_repeated_coco128(num_images: int, workdir: Path) -> Path:
    """Convert coco128 repeated to ``num_images`` images into ``workdir``; returns the shard folder."""
    from benchmarks.convert_throughput import make_repeated_coco
    from yolodata.convert import convert_coco

    source = ROOT.parent / "shared" / "data" / "coco128"
    if not source.exists():
        raise SystemExit(f"{source} not found: pass --mindrecord DIR instead")
    image_dir, ann_file = make_repeated_coco(source, workdir / "coco", num_images)
    out = workdir / "mindrecord"
    convert_coco(image_dir=image_dir, ann_file=ann_file, output_dir=out, shard_num=4, progress=False)
    return out


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--mindrecord", help="folder written by tools/coco2mindrecord.py")
    parser.add_argument("--num_images", type=int, default=2048,
                        help="size of the coco128-repeated set built when --mindrecord is not given")
    parser.add_argument("--training_shape", type=int, default=640)
    parser.add_argument("--testing_shape", type=int, default=None, help="default: --training_shape")
    parser.add_argument("--per_batch_size", type=int, default=16)
    parser.add_argument("--num_parallel_workers", type=int, default=None, help="default: all cores")
    parser.add_argument("--max_batches", type=int, default=100, help="batches timed per pipeline")
    parser.add_argument("--warmup_batches", type=int, default=4)
    parser.add_argument("--resize_rate", type=int, default=0)
    parser.add_argument("--json", help="write the figures to this file")
    args = parser.parse_args(argv)

    workers = default_num_workers(args.num_parallel_workers)
    testing_shape = args.testing_shape or args.training_shape
    with tempfile.TemporaryDirectory(prefix="input_throughput_") as tmp:
        mindrecord = args.mindrecord
        if mindrecord is None:
            print(f"building {args.num_images} images from ../shared/data/coco128 repeated under new ids ...")
            mindrecord = str(build_repeated_coco128(args.num_images, Path(tmp)))
        with PeakRss() as rss:
            train = create_train_dataset(mindrecord, per_batch_size=args.per_batch_size,
                                         training_shape=args.training_shape, resize_rate=args.resize_rate,
                                         num_parallel_workers=workers, seed=0)
            batches = min(args.max_batches, train.num_steps - args.warmup_batches - 1)
            train_ips = time_batches(train, args.warmup_batches, batches, args.per_batch_size)
            evaluation = create_eval_dataset(mindrecord, per_batch_size=args.per_batch_size,
                                             testing_shape=testing_shape, num_parallel_workers=workers)
            batches = min(args.max_batches, evaluation.num_steps - args.warmup_batches - 1)
            eval_ips = time_batches(evaluation, args.warmup_batches, batches, args.per_batch_size)
        decode_ips = decode_only(mindrecord, min(train.manifest["num_images"],
                                                 args.max_batches * args.per_batch_size), workers)

    figures = {
        "train_images_per_s": round(train_ips, 1),
        "eval_images_per_s": round(eval_ips, 1),
        "decode_images_per_s": round(decode_ips, 1),
        "train_over_decode": round(train_ips / decode_ips, 3),
        "eval_over_decode": round(eval_ips / decode_ips, 3),
        "peak_rss_mb": round(rss.peak_mb, 1),
        "num_parallel_workers": workers,
        "per_batch_size": args.per_batch_size,
        "training_shape": args.training_shape,
        "testing_shape": testing_shape,
        "cpu_count": os.cpu_count(),
    }
    print(f"{'pipeline':<12}{'images/s':>10}{'vs decode':>11}")
    print(f"{'train':<12}{train_ips:>10.1f}{train_ips / decode_ips:>11.3f}")
    print(f"{'eval':<12}{eval_ips:>10.1f}{eval_ips / decode_ips:>11.3f}")
    print(f"{'decode-only':<12}{decode_ips:>10.1f}{1.0:>11.3f}")
    print(f"peak RSS {rss.peak_mb:.0f} MB; {workers} workers, batch {args.per_batch_size}, "
          f"train {args.training_shape}, eval {testing_shape}")
    if args.json:
        Path(args.json).write_text(json.dumps(figures, indent=2) + "\n")
        print(f"wrote {args.json}")
    return figures


if __name__ == "__main__":
    main()
