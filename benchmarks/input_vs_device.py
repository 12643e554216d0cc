"""Will these CPUs keep the devices fed? Train-pipeline images/s per worker count against device fps.

    python benchmarks/input_vs_device.py --mindrecord DIR --yolov5_version yolov5s --training_shape 640 \
        --per_batch_size 16 [--max_workers N] [--device_fps F] [--output_dir DIR]

In one run:
- the train pipeline's images/s for 1, 2, ... ``--max_workers`` workers (default: all cores);
- the device's train-step images/s: ``--device_fps F`` for hardware that is not here (the reference
  README's 8 Ascend 910 train at about 450 images/s in all, about 56 per device), otherwise measured
  with ``benchmarks/train_step.py`` on the device at hand (CPU here, Ascend when present);
- the headroom (input over device) per worker count, the fewest workers that keep one device fed, and
  the cores per device a host needs (device fps over the images/s one worker delivers, rounded up).
Output: a table on the terminal, ``input_vs_device.md`` (Markdown table) and ``input_vs_device.png``
(images/s against workers, the device fps as a line) in ``--output_dir``, and ``input_vs_device.json``.

Without ``--mindrecord`` a synthetic dataset is generated and converted in a temporary folder.
"""
from __future__ import annotations

import argparse
import io
import json
import math
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from yolodata.fileio import write_file_atomic  # noqa: E402


def pipeline_images_per_s(mindrecord, *, workers, training_shape, per_batch_size, max_batches, warmup_batches,
                          seed=0):
    """Train-pipeline images/s with ``workers`` threads, over the batches after the warm-up ones."""
    from yolodata.pipeline import create_train_dataset

    dataset = create_train_dataset(mindrecord, per_batch_size=per_batch_size, training_shape=training_shape,
                                   num_parallel_workers=workers, seed=seed,
                                   num_epochs=max(1, math.ceil((max_batches + warmup_batches + 1) * per_batch_size
                                                               / max(1, _num_images(mindrecord)))))
    timed = min(max_batches, dataset.num_steps - warmup_batches - 1)
    if timed < 1:
        raise ValueError(f"{mindrecord} is too small to time {warmup_batches} warm-up batches and one more "
                         f"of {per_batch_size}: use a larger dataset or a smaller --per_batch_size")
    count, start = 0, None
    for index, _ in enumerate(dataset.create_tuple_iterator(output_numpy=True, num_epochs=1)):
        if index == warmup_batches:
            start = time.perf_counter()
        elif index > warmup_batches:
            count += per_batch_size
        if index >= warmup_batches + timed:
            break
    return count / (time.perf_counter() - start)


def _num_images(mindrecord) -> int:
    from yolodata.pipeline import resolve_mindrecord

    return resolve_mindrecord(mindrecord)[1].num_images


def measure_device_fps(version, training_shape, per_batch_size, device_target, steps, layout="v5.0") -> float:
    """The compiled train step's images/s, from benchmarks/train_step.py in a separate process."""
    with tempfile.TemporaryDirectory(prefix="train_step_") as tmp:
        out = Path(tmp) / "step.json"
        command = [sys.executable, str(ROOT / "benchmarks" / "train_step.py"), "--yolov5_version", version,
                   "--yolov5_layout", layout,
                   "--training_shape", str(training_shape), "--per_batch_size", str(per_batch_size),
                   "--device_target", device_target, "--steps", str(steps), "--json", str(out)]
        print("measuring the device:", " ".join(command[1:]), flush=True)
        result = subprocess.run(command, cwd=ROOT)
        if result.returncode != 0 or not out.exists():
            raise SystemExit(f"benchmarks/train_step.py failed (exit {result.returncode}); "
                             "pass --device_fps F to give the device's images/s instead")
        return float(json.loads(out.read_text())["images_per_second"])


def summarise(input_by_workers: dict, device_fps: float) -> dict:
    """Headroom per worker count, fewest workers that keep one device fed, cores a host needs per device."""
    rows = [{"workers": w, "input_images_per_s": round(ips, 1), "headroom": round(ips / device_fps, 2)}
            for w, ips in sorted(input_by_workers.items())]
    fed = [row["workers"] for row in rows if row["input_images_per_s"] >= device_fps]
    per_worker = input_by_workers[min(input_by_workers)] / min(input_by_workers)
    return {
        "rows": rows,
        "device_images_per_s": round(device_fps, 1),
        "fewest_workers_to_feed_one_device": fed[0] if fed else None,
        "cores_per_device": math.ceil(device_fps / per_worker) if per_worker > 0 else None,
    }


def markdown_table(summary: dict, title: str) -> str:
    lines = [f"### {title}", "", "| workers | input images/s | device images/s | headroom (input / device) |",
             "| ---: | ---: | ---: | ---: |"]
    for row in summary["rows"]:
        lines.append(f"| {row['workers']} | {row['input_images_per_s']:.1f} | "
                     f"{summary['device_images_per_s']:.1f} | {row['headroom']:.2f} |")
    fewest = summary["fewest_workers_to_feed_one_device"]
    lines += ["", f"Fewest workers that keep one device fed: {fewest if fewest else 'none of those measured'}. "
              f"Cores per device a host needs: {summary['cores_per_device']}."]
    return "\n".join(lines) + "\n"


def plot(summary: dict, title: str, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    workers = [row["workers"] for row in summary["rows"]]
    fig, ax = plt.subplots(figsize=(6, 4), dpi=100)
    ax.plot(workers, [row["input_images_per_s"] for row in summary["rows"]], "o-", label="train pipeline")
    ax.axhline(summary["device_images_per_s"], color="tab:red", linestyle="--", label="device train step")
    ax.set_xlabel("pipeline workers")
    ax.set_ylabel("images/s")
    ax.set_xticks(workers)
    ax.set_ylim(bottom=0)
    ax.set_title(title, fontsize=9)
    ax.legend()
    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png")
    plt.close(fig)
    write_file_atomic(path, buffer.getvalue())


def _write_text(path: Path, text: str) -> None:
    write_file_atomic(path, text.encode("utf-8"))


def build_synthetic(workdir: Path, num_images: int) -> Path:
    from yolodata.convert import convert_coco
    from yolodata.synthetic import make_synthetic_coco

    synthetic = make_synthetic_coco(workdir / "synthetic", num_images=num_images, seed=0, val_fraction=0.0)
    out = workdir / "mindrecord"
    convert_coco(synthetic.image_dir, synthetic.train_json, out, shard_num=2, progress=False)
    return out


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--mindrecord", help="folder written by tools/coco2mindrecord.py (default: synthetic)")
    parser.add_argument("--yolov5_version", default="yolov5s")
    parser.add_argument("--yolov5_layout", default="v5.0", help="network layout of the measured train step")
    parser.add_argument("--training_shape", type=int, default=640)
    parser.add_argument("--per_batch_size", type=int, default=16)
    parser.add_argument("--max_workers", type=int, default=None, help="default: all cores")
    parser.add_argument("--device_fps", type=float, default=None,
                        help="train images/s of one device that is not here (e.g. 56 for an Ascend 910)")
    parser.add_argument("--device_target", default="CPU", choices=["CPU", "Ascend", "GPU"])
    parser.add_argument("--device_steps", type=int, default=5, help="timed train steps when measuring")
    parser.add_argument("--max_batches", type=int, default=30, help="timed batches per worker count")
    parser.add_argument("--warmup_batches", type=int, default=3)
    parser.add_argument("--output_dir", default="benchmark_output")
    args = parser.parse_args(argv)

    cpus = os.cpu_count() or 1
    max_workers = cpus if args.max_workers is None else args.max_workers
    if not 1 <= max_workers <= cpus:
        parser.error(f"--max_workers must be between 1 and the CPU count {cpus}, got {max_workers}")
    if args.device_fps is not None and args.device_fps <= 0:
        parser.error("--device_fps must be a positive number of images per second")
    output_dir = Path(args.output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)

    with tempfile.TemporaryDirectory(prefix="input_vs_device_") as tmp:
        mindrecord = args.mindrecord
        if mindrecord is None:
            print("no --mindrecord: generating and converting a synthetic dataset of 256 images ...", flush=True)
            mindrecord = str(build_synthetic(Path(tmp), 256))
        input_by_workers = {}
        for workers in range(1, max_workers + 1):
            input_by_workers[workers] = pipeline_images_per_s(
                mindrecord, workers=workers, training_shape=args.training_shape,
                per_batch_size=args.per_batch_size, max_batches=args.max_batches,
                warmup_batches=args.warmup_batches)
            print(f"  {workers} worker(s): {input_by_workers[workers]:.1f} images/s", flush=True)

    if args.device_fps is not None:
        device_fps, device_source = args.device_fps, "given with --device_fps"
    else:
        device_fps = measure_device_fps(args.yolov5_version, args.training_shape, args.per_batch_size,
                                        args.device_target, args.device_steps, args.yolov5_layout)
        device_source = f"measured: {args.yolov5_version} train step on {args.device_target}"
    summary = summarise(input_by_workers, device_fps)
    title = (f"{args.yolov5_version} {args.training_shape}x{args.training_shape}, batch {args.per_batch_size}; "
             f"device {device_fps:.1f} images/s ({device_source})")

    print(f"\n{'workers':>8}{'input img/s':>13}{'device img/s':>14}{'headroom':>10}")
    for row in summary["rows"]:
        print(f"{row['workers']:>8}{row['input_images_per_s']:>13.1f}{summary['device_images_per_s']:>14.1f}"
              f"{row['headroom']:>10.2f}")
    fewest = summary["fewest_workers_to_feed_one_device"]
    print(f"fewest workers that keep one device fed: {fewest if fewest else 'none of those measured'}")
    print(f"cores per device a host needs: {summary['cores_per_device']}")

    _write_text(output_dir / "input_vs_device.md", markdown_table(summary, title))
    plot(summary, title, output_dir / "input_vs_device.png")
    _write_text(output_dir / "input_vs_device.json",
                json.dumps(dict(summary, title=title, device_source=device_source), indent=2) + "\n")
    print(f"wrote {output_dir / 'input_vs_device.md'}, {output_dir / 'input_vs_device.png'}, "
          f"{output_dir / 'input_vs_device.json'}")
    return summary


if __name__ == "__main__":
    main()
