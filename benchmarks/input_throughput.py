"""Input-pipeline throughput: train and eval pipelines against a decode-only reference, in one run.

    python benchmarks/input_throughput.py --mindrecord DIR --training_shape 640 --per_batch_size 16 \
        --num_parallel_workers 2 [--json FILE]

Without --mindrecord, the 2048-image set is built first in a temporary folder by repeating
coco128 (``benchmarks.real_data.COCO128``) under new file names and ids (the JPEG bytes stay real) and converting it.

The decode-only reference decodes one stored image per sample (cv2.imdecode) with the same number of
threads, on image bytes read through MindDataset beforehand: it is the floor any pipeline pays.

The machine may be shared, so the three figures are measured in ``--rounds`` rounds, each in a fresh
process timing the train pipeline, then the decode-only reference, then the eval pipeline, back to
back (each pipeline stopped after its batches, so that nothing runs in the background of the next
measurement). The figures reported are the medians over the rounds, and each ratio is the median of
the per-round ratios: a ratio compares measurements seconds apart, under the same load. Peak RSS is
the largest of the rounds, sampled while the pipelines run. CPU time per image (all threads of the
process) is printed too: it moves much less with the machine's load than the wall-clock figures.
"""
from __future__ import annotations

import argparse
import gc
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from yolodata.checks import resolve_num_workers  # noqa: E402
from yolodata.pipeline.eval_batches import EvalGeometry  # noqa: E402
from yolodata.pipeline import create_eval_dataset, create_train_dataset  # noqa: E402


# the eval pipelines measured: square batches (the default) and YOLOv5 val.py's rectangular ones
EVAL_GEOMETRIES = {"eval": EvalGeometry(), "eval_rect": EvalGeometry(rect=True)}


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


def cpu_seconds() -> float:
    """CPU time (user + system) used so far by every thread of this process."""
    times = os.times()
    return times.user + times.system


def time_batches(dataset, warmup_batches: int, max_batches: int, per_batch_size: int) -> tuple[float, float]:
    """(images per second, process CPU ms per image) over the batches after ``warmup_batches`` (the
    first ones fill the queues). The pipeline is stopped afterwards, so that it does not keep working
    in the background of the next measurement."""
    iterator = dataset.create_tuple_iterator(output_numpy=True, num_epochs=1)
    count, start, start_cpu = 0, None, None
    try:
        for index, _ in enumerate(iterator):
            if index == warmup_batches:
                start, start_cpu = time.perf_counter(), cpu_seconds()
            elif index > warmup_batches:
                count += per_batch_size
            if index + 1 >= warmup_batches + 1 + max_batches:
                break
        elapsed = time.perf_counter() - start if start is not None else 0.0
        cpu = cpu_seconds() - start_cpu if start_cpu is not None else 0.0
    finally:
        iterator.stop()
    if start is None or count == 0:
        raise SystemExit("not enough batches to time: lower --warmup_batches or use a larger dataset")
    return count / elapsed, 1e3 * cpu / count


def read_image_bytes(mindrecord: str, num_images: int) -> tuple[bytearray, list]:
    """The stored bytes of the first ``num_images`` rows, read through MindDataset: (one block
    holding them all, a zero-copy uint8 view of each). One block, so that freeing it gives the memory
    straight back and the eval pipeline's RSS measured afterwards does not include it."""
    import mindspore.dataset as ds

    from yolodata.pipeline import resolve_mindrecord

    files, _, _ = resolve_mindrecord(mindrecord)
    reader = ds.MindDataset([str(f) for f in files], columns_list=["image"], shuffle=False, num_samples=num_images)
    block, spans = bytearray(), []
    for row in reader.create_tuple_iterator(output_numpy=True, num_epochs=1):
        data = row[0].tobytes()
        spans.append((len(block), len(data)))
        block += data
    flat = np.frombuffer(block, np.uint8)
    return block, [flat[start:start + size] for start, size in spans]


def decode_only(buffers: list, workers: int) -> tuple[float, float]:
    """cv2.imdecode of one stored image per sample on ``workers`` threads: (images per second,
    process CPU ms per image)."""
    import cv2

    def decode(buf):
        return cv2.imdecode(buf, cv2.IMREAD_COLOR).shape

    with ThreadPoolExecutor(workers) as pool:
        list(pool.map(decode, buffers[: min(32, len(buffers))]))  # warm-up
        start, start_cpu = time.perf_counter(), cpu_seconds()
        list(pool.map(decode, buffers))
        elapsed, cpu = time.perf_counter() - start, cpu_seconds() - start_cpu
    return len(buffers) / elapsed, 1e3 * cpu / len(buffers)


def measure_round(args, mindrecord: str, workers: int, testing_shape: int, round_index: int) -> dict:
    """One round in this process: train pipeline, decode-only reference, eval pipeline, back to back.

    Peak RSS is sampled while the pipelines run (the reference's image bytes are not counted).
    """
    with PeakRss() as train_rss:
        train = create_train_dataset(mindrecord, per_batch_size=args.per_batch_size,
                                     training_shape=args.training_shape, resize_rate=args.resize_rate,
                                     num_parallel_workers=workers, seed=0, start_epoch=round_index)
        batches = min(args.max_batches, train.num_steps - args.warmup_batches - 1)
        train_ips, train_cpu = time_batches(train, args.warmup_batches, batches, args.per_batch_size)
        num_images = min(train.manifest.num_images, args.max_batches * args.per_batch_size)
        del train
    block, buffers = read_image_bytes(mindrecord, num_images)
    decode_ips, decode_cpu = decode_only(buffers, workers)
    del block, buffers
    gc.collect()
    figures = {"train_images_per_s": round(train_ips, 1), "decode_images_per_s": round(decode_ips, 1),
               "train_over_decode": round(train_ips / decode_ips, 3), "train_cpu_ms_per_image": round(train_cpu, 2),
               "decode_cpu_ms_per_image": round(decode_cpu, 2)}
    peak_mb = train_rss.peak_mb
    for name, geometry in EVAL_GEOMETRIES.items():
        with PeakRss() as eval_rss:
            evaluation = create_eval_dataset(mindrecord, per_batch_size=args.per_batch_size,
                                             testing_shape=testing_shape, num_parallel_workers=workers,
                                             geometry=geometry)
            batches = min(args.max_batches, evaluation.num_steps - args.warmup_batches - 1)
            eval_ips, eval_cpu = time_batches(evaluation, args.warmup_batches, batches, args.per_batch_size)
        peak_mb = max(peak_mb, eval_rss.peak_mb)
        figures.update({f"{name}_images_per_s": round(eval_ips, 1), f"{name}_over_decode": round(eval_ips / decode_ips, 3),
                        f"{name}_cpu_ms_per_image": round(eval_cpu, 2)})
    figures["peak_rss_mb"] = round(peak_mb, 1)
    return figures


def run_round_in_child(argv_without_rounds: list, mindrecord: str, round_index: int) -> dict:
    """``measure_round`` in a fresh Python process, so that no round inherits another's threads,
    memory or caches; its figures come back through a json file."""
    with tempfile.TemporaryDirectory(prefix="input_throughput_round_") as tmp:
        out = Path(tmp) / "round.json"
        command = [sys.executable, str(Path(__file__).resolve()), *argv_without_rounds, "--mindrecord", mindrecord,
                   "--rounds", "1", "--round_index", str(round_index), "--json", str(out), "--quiet"]
        subprocess.run(command, check=True)
        return json.loads(out.read_text())["rounds"][0]


def build_repeated_coco128(num_images: int, workdir: Path) -> Path:
    """Convert coco128 repeated to ``num_images`` images into ``workdir``; returns the shard folder."""
    from benchmarks.convert_throughput import make_repeated_coco
    from benchmarks.real_data import COCO128 as source
    from yolodata.convert import convert_coco

    if not source.exists():
        raise SystemExit(f"{source} not found: pass --mindrecord DIR instead")
    image_dir, ann_file = make_repeated_coco(source, workdir / "coco", num_images)
    out = workdir / "mindrecord"
    convert_coco(image_dir=image_dir, ann_file=ann_file, output_dir=out, shard_num=4, progress=False)
    return out


def child_argv(args) -> list:
    """The options a round's child process needs (everything but the mindrecord, rounds and json)."""
    argv = ["--training_shape", str(args.training_shape), "--per_batch_size", str(args.per_batch_size),
            "--max_batches", str(args.max_batches), "--warmup_batches", str(args.warmup_batches),
            "--resize_rate", str(args.resize_rate)]
    if args.testing_shape:
        argv += ["--testing_shape", str(args.testing_shape)]
    if args.num_parallel_workers is not None:
        argv += ["--num_parallel_workers", str(args.num_parallel_workers)]
    return argv


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
    parser.add_argument("--rounds", type=int, default=3,
                        help="rounds of train, decode-only, eval measurements, each in a fresh process; "
                             "medians are reported (1: measure in this process)")
    parser.add_argument("--round_index", type=int, default=0, help=argparse.SUPPRESS)
    parser.add_argument("--quiet", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--json", help="write the figures to this file")
    args = parser.parse_args(argv)
    if args.rounds < 1:
        parser.error("--rounds must be at least 1")

    workers = resolve_num_workers(args.num_parallel_workers)
    testing_shape = args.testing_shape or args.training_shape
    with tempfile.TemporaryDirectory(prefix="input_throughput_") as tmp:
        mindrecord = args.mindrecord
        if mindrecord is None:
            print(f"building {args.num_images} images from coco128 repeated under new ids ...")
            mindrecord = str(build_repeated_coco128(args.num_images, Path(tmp)))
        rounds = []
        for round_index in range(args.rounds):
            if args.rounds == 1:
                rounds.append(measure_round(args, mindrecord, workers, testing_shape, args.round_index))
            else:
                rounds.append(run_round_in_child(child_argv(args), mindrecord, round_index))
                r = rounds[-1]
                print(f"round {round_index + 1}: train {r['train_images_per_s']:.1f}, eval "
                      f"{r['eval_images_per_s']:.1f}, eval rect {r['eval_rect_images_per_s']:.1f}, decode-only "
                      f"{r['decode_images_per_s']:.1f} images/s; train/decode {r['train_over_decode']:.3f}, "
                      f"eval/decode {r['eval_over_decode']:.3f}, eval rect/decode {r['eval_rect_over_decode']:.3f}; "
                      f"CPU ms/image train {r['train_cpu_ms_per_image']:.2f}, eval {r['eval_cpu_ms_per_image']:.2f}, "
                      f"eval rect {r['eval_rect_cpu_ms_per_image']:.2f}, decode {r['decode_cpu_ms_per_image']:.2f}; "
                      f"peak RSS {r['peak_rss_mb']:.0f} MB", flush=True)

    def median(key):
        return float(np.median([r[key] for r in rounds]))

    pipelines = ("train", *EVAL_GEOMETRIES)
    images_per_s = {name: median(f"{name}_images_per_s") for name in (*pipelines, "decode")}
    ratios = {name: median(f"{name}_over_decode") for name in pipelines}
    cpu_ms = {name: median(f"{name}_cpu_ms_per_image") for name in (*pipelines, "decode")}
    peak_rss = max(r["peak_rss_mb"] for r in rounds)
    figures = {
        **{f"{name}_images_per_s": round(value, 1) for name, value in images_per_s.items()},
        **{f"{name}_over_decode": round(value, 3) for name, value in ratios.items()},
        "peak_rss_mb": round(peak_rss, 1),
        "cpu_ms_per_image": {name: round(value, 2) for name, value in cpu_ms.items()},
        "rounds": rounds,
        "num_parallel_workers": workers,
        "per_batch_size": args.per_batch_size,
        "training_shape": args.training_shape,
        "testing_shape": testing_shape,
        "cpu_count": os.cpu_count(),
    }
    if not args.quiet:
        label = f"median of {args.rounds} rounds" if args.rounds > 1 else "one round"
        print(f"{'pipeline':<12}{'images/s':>10}{'vs decode':>11}   ({label})")
        for name in pipelines:
            print(f"{name.replace('_', ' '):<12}{images_per_s[name]:>10.1f}{ratios[name]:>11.3f}")
        print(f"{'decode-only':<12}{images_per_s['decode']:>10.1f}{1.0:>11.3f}")
        print(f"peak RSS {peak_rss:.0f} MB (largest of the rounds); {workers} workers, batch {args.per_batch_size}, "
              f"train {args.training_shape}, eval {testing_shape}")
        # On a shared machine the wall-clock ratios move with the other processes' load; CPU time per
        # image (all threads of this process) moves much less and shows where a change helped.
        print("CPU ms per image (median): " + ", ".join(f"{name.replace('_', ' ')} {value:.2f}"
                                                        for name, value in cpu_ms.items()))
    if args.json:
        Path(args.json).write_text(json.dumps(figures, indent=2) + "\n")
        if not args.quiet:
            print(f"wrote {args.json}")
    return figures


if __name__ == "__main__":
    main()
