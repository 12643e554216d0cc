"""Conversion on Ray against the local engine, on one machine in one run, and their output identity.

    python benchmarks/convert_engines.py [--num_images 3000] [--num_workers 2] [--shard_size 1M]
                                         [--repeats 2] [--image_size 120 160]

The dataset is made here: ``--num_images`` small synthetic images (``yolodata.synthetic``: shapes
with exact boxes, JPEG, ``--image_size`` HEIGHT WIDTH) in one COCO json, converted into units of
``--shard_size`` bytes (several units per worker, so both engines keep every worker busy).

Timed, each as the wall time of one ``convert_coco`` call (units planned, converted, merged), the
files read once beforehand (page cache warm) and MindSpore imported beforehand (a one-off cost):

- ``--engine local`` with ``--num_workers`` processes (a spawn pool started by each conversion);
- ``--engine ray`` on a Ray already running on this machine with ``--num_workers`` CPUs (how a
  cluster is used: started once, joined by every conversion through ``RAY_ADDRESS``; its workers
  stay warm between conversions). Ray's start-up is timed on its own.

Rounds alternate (local, ray, local, ray, ...); the best of ``--repeats`` is reported for each engine
with their ratio (goal: ray >= 0.9x local), and each round's ratio, since other processes on a shared
machine slow single runs down. Also once: ``--engine ray`` with no Ray running (the conversion starts
and stops its own Ray: the start-up included), ``--engine local`` with one worker, and a Ray
conversion in which one unit fails once (the ``FAIL_ONCE_VARIABLE`` test hook) and is retried. The
sha256 of every output file (shards, their .db, manifest.json, annotations.json) must be the same in
all of them.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import mindspore  # noqa: E402,F401  (before Ray: Ray's protobuf would break a later MindSpore import)

from yolodata.convert import convert_coco  # noqa: E402
from yolodata.convert.ray_engine import connect, import_ray  # noqa: E402
from yolodata.convert.unit_convert import FAIL_ONCE_VARIABLE  # noqa: E402
from yolodata.synthetic import make_synthetic_coco  # noqa: E402


def folder_digests(folder: Path) -> dict:
    """{file name: sha256} of every file in the output folder."""
    return {path.name: hashlib.sha256(path.read_bytes()).hexdigest() for path in sorted(folder.iterdir())}


def timed_conversion(dataset, output_dir: Path, **options) -> tuple[float, dict, int]:
    """(seconds, digests, number of units) of one conversion into ``output_dir`` (removed afterwards)."""
    started = time.perf_counter()
    summary = convert_coco(dataset.image_dir, dataset.train_json, output_dir, **options)
    seconds = time.perf_counter() - started
    digests = folder_digests(output_dir)
    shutil.rmtree(output_dir)
    return seconds, digests, len(summary.shards)


def make_dataset(workdir: Path, num_images: int, image_size: tuple[int, int]):
    """The synthetic set, its files read once (page cache warm)."""
    dataset = make_synthetic_coco(workdir / "data", num_images=num_images, image_size=image_size, val_fraction=0.0)
    num_bytes = sum(path.stat().st_size for path in dataset.image_dir.iterdir())
    for path in dataset.image_dir.iterdir():
        path.read_bytes()
    return dataset, num_bytes


def timed_rounds(dataset, workdir: Path, options: dict, repeats: int) -> dict:
    """Alternating local and ray conversions on a Ray started here (its start-up timed alone)."""
    ray = import_ray()
    started = time.perf_counter()
    connect(ray, options["num_workers"])
    ray_start_seconds = time.perf_counter() - started
    seconds = {"local": [], "ray": []}
    digests = {}
    try:
        for _ in range(repeats):
            for engine in ("local", "ray"):
                elapsed, digests[engine], num_units = timed_conversion(dataset, workdir / "out", engine=engine,
                                                                       **options)
                seconds[engine].append(elapsed)
        os.environ[FAIL_ONCE_VARIABLE] = f"1:{workdir / 'unit-1-failed-once'}"
        try:
            _, digests["ray, unit 1 failing once"], _ = timed_conversion(dataset, workdir / "out", engine="ray",
                                                                          **options)
        finally:
            del os.environ[FAIL_ONCE_VARIABLE]
        if not (workdir / "unit-1-failed-once").exists():
            raise RuntimeError("the injected unit failure did not happen")
    finally:
        ray.shutdown()
    return {"seconds": seconds, "digests": digests, "num_units": num_units, "ray_start_seconds": ray_start_seconds}


def run(num_images: int, num_workers: int, shard_size: str, repeats: int, image_size, workdir: Path) -> dict:
    dataset, num_bytes = make_dataset(workdir, num_images, image_size)
    options = {"shard_size": shard_size, "num_workers": num_workers}
    result = timed_rounds(dataset, workdir, options, repeats)
    cold_seconds, result["digests"]["ray, starting its own Ray"], _ = timed_conversion(
        dataset, workdir / "out", engine="ray", **options)
    _, result["digests"]["local, 1 worker"], _ = timed_conversion(dataset, workdir / "out", engine="local",
                                                                  shard_size=shard_size, num_workers=1)
    local, ray = result["seconds"]["local"], result["seconds"]["ray"]
    reference = result["digests"]["local"]
    return {"num_images": num_images, "image_bytes": num_bytes, "num_workers": num_workers,
            "shard_size": shard_size, "num_units": result["num_units"], "repeats": repeats,
            "local_images_per_s": num_images / min(local), "ray_images_per_s": num_images / min(ray),
            "ratio": min(local) / min(ray), "round_ratios": [lo / ra for lo, ra in zip(local, ray)],
            "ray_start_seconds": result["ray_start_seconds"],
            "ray_cold_images_per_s": num_images / cold_seconds, "ray_cold_ratio": min(local) / cold_seconds,
            "seconds": result["seconds"], "num_files": len(reference),
            "identical": {name: digests == reference for name, digests in result["digests"].items()}}


def report(result: dict) -> None:
    print(f"dataset: {result['num_images']} synthetic JPEGs, {result['image_bytes'] / 2**20:.1f} MiB, "
          f"{result['num_units']} units of --shard_size {result['shard_size']}; {result['num_workers']} workers; "
          f"best of {result['repeats']}")
    print(f"--engine local                : {result['local_images_per_s']:8.0f} images/s")
    print(f"--engine ray (Ray running)    : {result['ray_images_per_s']:8.0f} images/s")
    print(f"ratio ray / local             : {result['ratio']:8.2f}   (goal >= 0.9; each round: "
          f"{', '.join(f'{r:.2f}' for r in result['round_ratios'])}, median "
          f"{statistics.median(result['round_ratios']):.2f})")
    print(f"Ray start-up (ray.init)       : {result['ray_start_seconds']:8.1f} s")
    print(f"--engine ray, no Ray running  : {result['ray_cold_images_per_s']:8.0f} images/s "
          f"(ratio {result['ray_cold_ratio']:.2f}: starts and stops its own Ray)")
    print(f"sha256 of all {result['num_files']} output files equal to --engine local ({result['num_workers']} "
          f"workers):")
    for name, same in result["identical"].items():
        print(f"  {name:<28} {'identical' if same else 'DIFFERENT'}")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--num_images", type=int, default=3000, help="synthetic images to make and convert")
    parser.add_argument("--num_workers", type=int, default=2, help="local processes, and the CPUs of the Ray")
    parser.add_argument("--shard_size", default="1M", help="bytes per unit (several units per worker)")
    parser.add_argument("--repeats", type=int, default=2, help="alternating runs of each engine; best is reported")
    parser.add_argument("--image_size", type=int, nargs=2, default=[120, 160], metavar=("HEIGHT", "WIDTH"))
    parser.add_argument("--json", type=Path, default=None, help="also write the figures to this file")
    args = parser.parse_args(argv)
    if args.repeats < 1 or args.num_images < 1 or args.num_workers < 1:
        parser.error("--repeats, --num_images and --num_workers must be at least 1")
    with tempfile.TemporaryDirectory(prefix="convert_engines_") as tmp:
        result = run(args.num_images, args.num_workers, args.shard_size, args.repeats, tuple(args.image_size),
                     Path(tmp))
    report(result)
    if args.json:
        args.json.write_text(json.dumps(result, indent=1))
    return 0 if all(result["identical"].values()) else 1


if __name__ == "__main__":
    sys.exit(main())
