"""Conversion on Ray against the local engine, on one machine in one run, and their output identity.

    python benchmarks/convert_engines.py [--num_images 1000 3000] [--num_workers 2] [--shard_size 4M]
                                         [--repeats 3] [--image_size 480 640]

The datasets are made here: for each of ``--num_images`` (two sizes by default) that many synthetic
images (``yolodata.synthetic``: shapes with exact boxes, JPEG, ``--image_size`` HEIGHT WIDTH) in one
COCO json, converted into units of ``--shard_size`` bytes (several units per worker, so both engines
keep every worker busy). Both engines open before the units are planned (their workers start and
import the unit conversion while the driver reads the json).

Every conversion runs in a new Python process, as a command-line conversion does, and is timed there
as the wall time of one ``convert_coco`` call (units planned, converted, merged), with MindSpore
imported beforehand (a one-off cost) and the image files read once before any run (page cache warm):

- ``--engine local`` with ``--num_workers`` processes (the spawn pool each conversion starts);
- ``--engine ray`` joining, through ``RAY_ADDRESS``, a Ray with ``--num_workers`` CPUs that this
  script started once on this machine (how a cluster is used: each conversion is a new Ray job with
  new worker processes; joining, shipping the package and starting the workers are timed).
  Ray's own start-up is timed alone.

Rounds alternate (local, ray, local, ray, ... over the sizes); the best of ``--repeats`` is reported for
each engine and size with their ratio (goal: ray >= 0.9x local), and each round's ratio, since other
processes on a shared machine slow single runs down. A fixed cost per run does not grow with the
images, so the ratio depends on the dataset's size: from the best times at the two sizes each engine's
per-run fixed cost (seconds at 0 images) and per-image throughput (images/s beyond it) are printed
apart, with the seconds each run spent outside the engine's run of the units (reading the json,
planning, merging). Also once, at the largest size: ``--engine ray`` with no Ray running (the conversion starts
and stops its own Ray: the start-up included), ``--engine local`` with one worker, and a Ray
conversion in which unit 1 fails once (the ``FAIL_ONCE_VARIABLE`` test hook) and is retried. The
sha256 of every output file (shards, their .db, manifest.json, annotations.json) must be the same in
all of them; the exit status is 1 otherwise.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import statistics
import subprocess
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


def timed_conversion(image_dir: str, ann_file: str, output_dir: str, options: dict) -> dict:
    """One conversion in this process: its seconds, the output's digests and number of units (the
    output removed afterwards). MindSpore is imported already, Ray (for --engine ray) is not."""
    started = time.perf_counter()
    summary = convert_coco(image_dir, ann_file, output_dir, **options)
    seconds = time.perf_counter() - started
    digests = folder_digests(Path(output_dir))
    shutil.rmtree(output_dir)
    return {"seconds": seconds, "outside_units_seconds": seconds - summary.convert_seconds, "digests": digests,
            "num_units": len(summary.shards)}


def conversion_in_new_driver(dataset, output_dir: Path, options: dict, env: dict | None = None) -> dict:
    """``timed_conversion`` in a new Python process, as a command-line conversion runs: a new driver
    (for Ray, a new job with new worker processes) each time."""
    request = json.dumps([str(dataset.image_dir), str(dataset.train_json), str(output_dir), options])
    done = subprocess.run([sys.executable, __file__, "--one_conversion", request], capture_output=True, text=True,
                          env={**os.environ, **(env or {})}, timeout=3600)
    if done.returncode != 0:
        raise RuntimeError(f"conversion {options} failed:\n{done.stderr[-4000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def make_dataset(workdir: Path, num_images: int, image_size: tuple[int, int]):
    """The synthetic set, its files read once (page cache warm)."""
    dataset = make_synthetic_coco(workdir / f"data-{num_images}", num_images=num_images, image_size=image_size, val_fraction=0.0)
    num_bytes = sum(path.stat().st_size for path in dataset.image_dir.iterdir())
    for path in dataset.image_dir.iterdir():
        path.read_bytes()
    return dataset, num_bytes


def timed_rounds(datasets: dict, workdir: Path, options: dict, repeats: int) -> dict:
    """Alternating local and ray conversions of every dataset, each by a new driver; the ray ones join a
    Ray started here (through RAY_ADDRESS), whose start-up is timed alone. Then a ray one of the largest
    set with a unit failing once."""
    ray = import_ray()
    started = time.perf_counter()
    connect(ray, options["num_workers"])
    ray_start_seconds = time.perf_counter() - started
    cluster = {"RAY_ADDRESS": ray.get_runtime_context().gcs_address}
    runs = {(engine, size): [] for size in datasets for engine in ("local", "ray")}
    try:
        for _ in range(repeats):
            for size, dataset in datasets.items():
                runs["local", size].append(conversion_in_new_driver(dataset, workdir / "out",
                                                                    {**options, "engine": "local"}))
                runs["ray", size].append(conversion_in_new_driver(dataset, workdir / "out",
                                                                  {**options, "engine": "ray"}, cluster))
        marker = workdir / "unit-1-failed-once"
        runs["ray, unit 1 failing once", max(datasets)] = [conversion_in_new_driver(
            datasets[max(datasets)], workdir / "out", {**options, "engine": "ray"},
            {**cluster, FAIL_ONCE_VARIABLE: f"1:{marker}"})]
        if not marker.exists():
            raise RuntimeError("the injected unit failure did not happen")
    finally:
        ray.shutdown()
    return {"runs": runs, "ray_start_seconds": ray_start_seconds}


def fixed_and_rate(best_seconds: dict) -> tuple[float, float] | None:
    """(seconds per run at 0 images, images/s beyond them) through the best times of the smallest and
    largest sizes; None with one size."""
    small, large = min(best_seconds), max(best_seconds)
    if small == large or best_seconds[large] <= best_seconds[small]:
        return None
    rate = (large - small) / (best_seconds[large] - best_seconds[small])
    return best_seconds[small] - small / rate, rate


def run(sizes: list[int], num_workers: int, shard_size: str, repeats: int, image_size, workdir: Path) -> dict:
    datasets, image_bytes = {}, {}
    for size in sorted(set(sizes)):
        datasets[size], image_bytes[size] = make_dataset(workdir, size, image_size)
    options = {"shard_size": shard_size, "num_workers": num_workers}
    result = timed_rounds(datasets, workdir, options, repeats)
    runs, largest = result["runs"], max(datasets)
    runs["ray, starting its own Ray", largest] = [conversion_in_new_driver(datasets[largest], workdir / "out",
                                                                           {**options, "engine": "ray"})]
    runs["local, 1 worker", largest] = [conversion_in_new_driver(datasets[largest], workdir / "out",
                                                                 {**options, "engine": "local", "num_workers": 1})]
    best = {engine: {size: min(one["seconds"] for one in runs[engine, size]) for size in datasets}
            for engine in ("local", "ray")}
    per_size = {size: {
        "image_bytes": image_bytes[size], "num_units": runs["local", size][0]["num_units"],
        "local_images_per_s": size / best["local"][size], "ray_images_per_s": size / best["ray"][size],
        "ratio": best["local"][size] / best["ray"][size],
        "round_ratios": [lo["seconds"] / ra["seconds"] for lo, ra in zip(runs["local", size], runs["ray", size])],
        "outside_units_seconds": {engine: min(one["outside_units_seconds"] for one in runs[engine, size])
                                  for engine in ("local", "ray")}} for size in datasets}
    cold = runs["ray, starting its own Ray", largest][0]["seconds"]
    identical = {}
    for (name, size), done in runs.items():
        identical[f"{name}, {size} images"] = all(one["digests"] == runs["local", size][0]["digests"] for one in done)
    return {"sizes": sorted(datasets), "num_workers": num_workers, "shard_size": shard_size, "repeats": repeats,
            "per_size": per_size, "fixed_and_rate": {engine: fixed_and_rate(best[engine]) for engine in best},
            "ray_start_seconds": result["ray_start_seconds"], "ray_cold_images_per_s": largest / cold,
            "ray_cold_ratio": best["local"][largest] / cold,
            "seconds": {f"{name}, {size} images": [one["seconds"] for one in done]
                        for (name, size), done in runs.items()},
            "num_files": {size: len(runs["local", size][0]["digests"]) for size in datasets},
            "identical": identical}


def report(result: dict) -> None:
    print(f"{result['num_workers']} workers, --shard_size {result['shard_size']}, best of {result['repeats']} "
          f"alternating rounds; every conversion a new driver process")
    for size, one in result["per_size"].items():
        print(f"\n{size} synthetic JPEGs, {one['image_bytes'] / 2**20:.1f} MiB, {one['num_units']} units")
        print(f"  --engine local              : {one['local_images_per_s']:8.0f} images/s")
        print(f"  --engine ray (RAY_ADDRESS)  : {one['ray_images_per_s']:8.0f} images/s")
        print(f"  ratio ray / local           : {one['ratio']:8.2f}   (goal >= 0.9; each round: "
              f"{', '.join(f'{r:.2f}' for r in one['round_ratios'])}, median "
              f"{statistics.median(one['round_ratios']):.2f})")
        outside = one["outside_units_seconds"]
        print(f"  outside the units (json, plan, merge): local {outside['local']:.1f} s, ray {outside['ray']:.1f} s")
    print("\nper run, from the best times at the smallest and largest size (seconds = fixed + images / rate):")
    for engine, fit in result["fixed_and_rate"].items():
        print(f"  --engine {engine:<5}: " + ("n/a (one size, or no growth)" if fit is None else
                                          f"fixed {fit[0]:5.1f} s, then {fit[1]:6.0f} images/s"))
    print(f"\nRay start-up (ray.init)       : {result['ray_start_seconds']:8.1f} s")
    print(f"--engine ray, no Ray running  : {result['ray_cold_images_per_s']:8.0f} images/s at {max(result['sizes'])} "
          f"images (ratio {result['ray_cold_ratio']:.2f}: starts and stops its own Ray)")
    print("sha256 of all output files equal to --engine local (same size, "
          f"{result['num_workers']} workers):")
    for name, same in result["identical"].items():
        print(f"  {name:<42} {'identical' if same else 'DIFFERENT'}")


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["--one_conversion"]:   # the new driver of conversion_in_new_driver
        print(json.dumps(timed_conversion(*json.loads(argv[1]))))
        return 0
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--num_images", type=int, nargs="+", default=[1000, 3000],
                        help="dataset sizes (synthetic images) to make and convert")
    parser.add_argument("--num_workers", type=int, default=2, help="local processes, and the CPUs of the Ray")
    parser.add_argument("--shard_size", default="4M", help="bytes per unit (several units per worker)")
    parser.add_argument("--repeats", type=int, default=3, help="alternating runs of each engine; best is reported")
    parser.add_argument("--image_size", type=int, nargs=2, default=[480, 640], metavar=("HEIGHT", "WIDTH"))
    parser.add_argument("--json", type=Path, default=None, help="also write the figures to this file")
    args = parser.parse_args(argv)
    if args.repeats < 1 or min(args.num_images) < 1 or args.num_workers < 1:
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
