"""Peak memory of a large COCO json's conversion: the driver that reads and routes the json, and one worker
that loads and converts a unit, at 1x and 8x COCO-train's size.

    python benchmarks/convert_memory.py --data_dir /tmp/convert_memory --scales 1 8

The jsons are synthetic (``benchmarks/synthetic_coco_json.py``: COCO-train's 118,287 images and 828,009
boxes per 1x, with COCO's members and polygons; the image records share a pool of 256 tiny JPEGs)
and are written once into ``--data_dir`` (about 280 MB per 1x). Each stage runs in a child process of
its own, which reports its peak resident memory (``ru_maxrss``):

- driver: ``StreamedCocoUnits`` reads the json, plans the units and spills them to disk;
- worker: loads the middle unit (``load_unit``) and converts it with today's converter
  (``convert_document`` into a one-file MindRecord set).

``--end_to_end 1`` also runs the whole conversion at that scale (``convert_coco`` through units on
the local engine, ``--num_workers`` processes): the driver's peak and the largest worker's.

``--shard_size`` is the unit size in picture bytes. The default, 16 MiB, gives units of about 9,700
of these 0.7 KB pictures: the image count a unit of the default 1 GiB holds with COCO's 160 KB
pictures, so that a worker's unit is as large as in a real conversion. The goals (issue 25): driver
RSS(8x)/RSS(1x) <= 1.3, worker RSS(8x)/RSS(1x) <= 1.1, driver peak at 1x under 0.5 GB.
"""
from __future__ import annotations

import argparse
import json
import pickle
import resource
import shutil
import subprocess
import sys
import time
from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parents[1]
if str(PROJECT_ROOT) not in sys.path:
    sys.path.insert(0, str(PROJECT_ROOT))

from benchmarks.synthetic_coco_json import write_synthetic_coco  # noqa: E402

DEFAULT_SHARD_SIZE = 16 << 20
GOALS = {"driver_ratio": 1.3, "worker_ratio": 1.1, "driver_1x_mb": 512}


def peak_rss_mb() -> float:
    """This process's peak resident memory in MiB (Linux reports ru_maxrss in KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def run_driver(ann_file: Path, image_dir: Path, work_dir: Path, shard_size: int) -> dict:
    """The driver stage (in its child process): read, plan and spill; the source pickled for the worker."""
    from yolodata.convert.coco_stream import StreamedCocoUnits

    started = time.perf_counter()
    units = StreamedCocoUnits(ann_file, image_dir, work_dir / "spill", shard_size=shard_size)
    seconds = time.perf_counter() - started
    (work_dir / "units.pickle").write_bytes(pickle.dumps(units))
    return {"seconds": seconds, "num_units": len(units.units), "num_images": units.num_image_records,
            "num_boxes": units.num_annotation_records, "num_problems": len(units.problems),
            "imported_mindspore": "mindspore" in sys.modules, "peak_rss_mb": peak_rss_mb()}


def run_worker(image_dir: Path, work_dir: Path) -> dict:
    """The worker stage (in its child process): load the middle unit and convert it."""
    from yolodata.convert import SourceDocument, convert_document

    units = pickle.loads((work_dir / "units.pickle").read_bytes())
    index = len(units.units) // 2
    started = time.perf_counter()
    unit = units.load_unit(index)
    document = {"images": unit["images"], "annotations": unit["annotations"], "categories": units.categories}
    source = SourceDocument.from_document(document, f"{units.name} unit {index}", source_format="coco")
    summary = convert_document(source, image_dir, work_dir / f"unit-{index}", num_workers=1)
    return {"seconds": time.perf_counter() - started, "unit": index, "unit_images": len(unit["images"]),
            "unit_boxes": len(unit["annotations"]), "rows": summary.num_images, "peak_rss_mb": peak_rss_mb()}


def run_end_to_end(ann_file: Path, image_dir: Path, work_dir: Path, shard_size: int, num_workers: int) -> dict:
    """The whole conversion (in its child process): ``convert_coco`` through units on the local engine.
    The driver's peak is this process's; a worker's is the largest of its finished child processes."""
    from yolodata.convert import convert_coco

    started = time.perf_counter()
    summary = convert_coco(image_dir, ann_file, work_dir / "out", shard_size=shard_size, engine="local",
                           num_workers=num_workers)
    return {"seconds": time.perf_counter() - started, "rows": summary.num_images, "files": len(summary.shards),
            "images_per_second": summary.num_images / (time.perf_counter() - started),
            "peak_rss_mb": peak_rss_mb(),
            "worker_peak_rss_mb": resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024}


def run_baseline(ann_file: Path) -> dict:
    """Today's reading of the json (in its child process): the whole document parsed in memory."""
    from yolodata.convert import read_annotation_file, read_coco_document

    started = time.perf_counter()
    data, _ = read_annotation_file(ann_file)
    document = read_coco_document(data, str(ann_file))
    return {"seconds": time.perf_counter() - started, "num_boxes": len(document["annotations"]),
            "peak_rss_mb": peak_rss_mb()}


def child(stage: str, *args: str) -> dict:
    """Run ``stage`` of this script in a new process; its printed result."""
    done = subprocess.run([sys.executable, __file__, "--stage", stage, *args], check=True, capture_output=True,
                          text=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


def ensure_json(data_dir: Path, scale: float) -> Path:
    ann_file = data_dir / f"coco_train_x{scale:g}.json"
    if not ann_file.is_file():
        print(f"writing {ann_file} ...", flush=True)
        partial = ann_file.with_suffix(".partial")
        write_synthetic_coco(partial, data_dir / "pictures", scale=scale)
        partial.rename(ann_file)
    return ann_file


def measure(data_dir: Path, scales: list, shard_size: int, baseline: bool, end_to_end: list = (),
            num_workers: int = 2) -> dict:
    """{scale: {"driver": ..., "worker": ..., ["baseline": ...]}} measured one child process per stage."""
    results = {}
    for scale in scales:
        ann_file = ensure_json(data_dir, scale)
        work_dir = data_dir / f"work_x{scale:g}"
        shutil.rmtree(work_dir, ignore_errors=True)
        work_dir.mkdir()
        image_dir = str(data_dir / "pictures")
        results[scale] = {"json_mb": ann_file.stat().st_size / 2 ** 20,
                          "driver": child("driver", str(ann_file), image_dir, str(work_dir), str(shard_size)),
                          "worker": child("worker", image_dir, str(work_dir))}
        if baseline and scale == scales[0]:
            results[scale]["baseline"] = child("baseline", str(ann_file))
        if scale in end_to_end:
            results[scale]["end_to_end"] = child("end_to_end", str(ann_file), image_dir, str(work_dir),
                                                 str(shard_size), str(num_workers))
        shutil.rmtree(work_dir, ignore_errors=True)
        print(f"x{scale:g}: {json.dumps(results[scale])}", flush=True)
    return results


def report(results: dict) -> None:
    scales = list(results)
    print("\n| scale | json MB | images | boxes | units | driver s | driver peak MB | worker unit images/boxes "
          "| worker peak MB |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- | --- |")
    for scale, found in results.items():
        driver, worker = found["driver"], found["worker"]
        print(f"| {scale:g}x | {found['json_mb']:.0f} | {driver['num_images']:,} | {driver['num_boxes']:,} | "
              f"{driver['num_units']} | {driver['seconds']:.1f} | {driver['peak_rss_mb']:.0f} | "
              f"{worker['unit_images']:,}/{worker['unit_boxes']:,} | {worker['peak_rss_mb']:.0f} |")
    first = results[scales[0]]
    if "baseline" in first:
        print(f"\ntoday's in-memory read of the {scales[0]:g}x json alone: {first['baseline']['peak_rss_mb']:.0f} MB "
              f"peak, {first['baseline']['seconds']:.1f} s")
    if len(scales) > 1:
        last = results[scales[-1]]
        driver_ratio = last["driver"]["peak_rss_mb"] / first["driver"]["peak_rss_mb"]
        worker_ratio = last["worker"]["peak_rss_mb"] / first["worker"]["peak_rss_mb"]
        print(f"driver RSS({scales[-1]:g}x)/RSS({scales[0]:g}x) = {driver_ratio:.2f} "
              f"(goal <= {GOALS['driver_ratio']}); worker RSS({scales[-1]:g}x)/RSS({scales[0]:g}x) = "
              f"{worker_ratio:.2f} (goal <= {GOALS['worker_ratio']})")
    print(f"driver peak at {scales[0]:g}x: {first['driver']['peak_rss_mb']:.0f} MB "
          f"(goal < {GOALS['driver_1x_mb']} MB); driver imported MindSpore: "
          f"{first['driver']['imported_mindspore']}")
    for scale, found in results.items():
        if "end_to_end" in found:
            run = found["end_to_end"]
            print(f"whole conversion at {scale:g}x (convert_coco, local engine): {run['rows']:,} rows in "
                  f"{run['files']} files, {run['seconds']:.0f} s ({run['images_per_second']:.0f} images/s); "
                  f"driver peak {run['peak_rss_mb']:.0f} MB, largest worker peak {run['worker_peak_rss_mb']:.0f} MB")


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data_dir", type=Path, default=Path("/tmp/convert_memory"))
    parser.add_argument("--scales", type=float, nargs="+", default=[1, 8])
    parser.add_argument("--shard_size", type=int, default=DEFAULT_SHARD_SIZE)
    parser.add_argument("--no_baseline", action="store_true", help="skip today's in-memory read at the first scale")
    parser.add_argument("--end_to_end", type=float, nargs="*", default=[],
                        help="scales at which to also run the whole conversion (convert_coco, local engine)")
    parser.add_argument("--num_workers", type=int, default=2, help="workers of the whole conversion")
    parser.add_argument("--stage", choices=("driver", "worker", "baseline", "end_to_end"), help=argparse.SUPPRESS)
    parser.add_argument("stage_args", nargs="*", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.stage == "driver":
        ann_file, image_dir, work_dir, shard_size = args.stage_args
        print(json.dumps(run_driver(Path(ann_file), Path(image_dir), Path(work_dir), int(shard_size))))
    elif args.stage == "worker":
        print(json.dumps(run_worker(Path(args.stage_args[0]), Path(args.stage_args[1]))))
    elif args.stage == "baseline":
        print(json.dumps(run_baseline(Path(args.stage_args[0]))))
    elif args.stage == "end_to_end":
        ann_file, image_dir, work_dir, shard_size, num_workers = args.stage_args
        print(json.dumps(run_end_to_end(Path(ann_file), Path(image_dir), Path(work_dir), int(shard_size),
                                        int(num_workers))))
    else:
        args.data_dir.mkdir(parents=True, exist_ok=True)
        report(measure(args.data_dir, args.scales, args.shard_size, not args.no_baseline, args.end_to_end,
                       args.num_workers))


if __name__ == "__main__":
    main()
