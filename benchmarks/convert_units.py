"""The unit-by-unit conversion: same bytes whatever the engine, workers, retries or resumption; shard
sizes against --shard_size; images/s per engine, all in one run.

    python benchmarks/convert_units.py [--num_images 600] [--shard_size 256K] [--image_size 240x320]
                                       [--engines local,ray] [--keep DIR]

On a synthetic COCO dataset (``yolodata.synthetic``, generated once into a temporary folder):

1. reference: ``--engine local --num_workers 1``;
2. ``local`` with 2 workers; ``local`` with 2 workers and one unit failing once (the test hook
   ``YOLODATA_TEST_FAIL_UNIT_ONCE``: the unit writes its file, fails before publishing, and is
   retried); ``ray`` with 2 workers and one injected failure (when Ray is installed and
   ``convert.ray_engine`` exists);
3. an interrupted run (a unit that always fails stops it) resumed by a plain run: how many units the
   second run converted, against the units the first one had not published;
4. for every output: sha256 of every file (shards, .db, manifest.json, annotations.json) compared
   with the reference; the largest shard's stored bytes (its pages' used bytes: the apparent size adds
   the sparse reserve of a MindRecord file) against --shard_size plus the largest row.

Images/s is each run's conversion stage (the summary's ``images_per_second``); runs are on the same
machine in the same process, so their ratios are comparable; absolute figures drift on a shared CPU.
"""
from __future__ import annotations

import argparse
import hashlib
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import mindspore  # noqa: E402,F401  (imported before Ray: see the README's Ray notes)

from yolodata import mindrecord_shards  # noqa: E402
from yolodata.convert import convert_coco, engines, run as run_lib, unit_convert  # noqa: E402
from yolodata.convert.units import ROW_OVERHEAD_BYTES  # noqa: E402
from yolodata.manifest import load_manifest  # noqa: E402
from yolodata.synthetic import make_synthetic_coco  # noqa: E402


def digests(folder: Path) -> dict:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.iterdir())}


def shard_figures(folder: Path) -> tuple[int, int, int]:
    """(files, largest stored bytes of a file, largest row: picture + ROW_OVERHEAD_BYTES)."""
    import mindspore.dataset as ds

    manifest = load_manifest(folder)
    largest_file = largest_row = 0
    for path in manifest.shard_paths:
        largest_file = max(largest_file, mindrecord_shards.stored_bytes(mindrecord_shards.read_header(path)[0]))
        for row in ds.MindDataset([str(path)], columns_list=["image"], shuffle=False).create_dict_iterator(
                output_numpy=True, num_epochs=1):
            largest_row = max(largest_row, row["image"].nbytes + ROW_OVERHEAD_BYTES)
    return len(manifest.shards), largest_file, largest_row


def convert(data, out: Path, *, fail: str | None = None, **options):
    """One conversion (with the failure hook set to ``fail``); returns (summary, seconds)."""
    if fail is None:
        os.environ.pop(unit_convert.FAIL_ONCE_VARIABLE, None)
    else:
        os.environ[unit_convert.FAIL_ONCE_VARIABLE] = fail
    try:
        started = time.perf_counter()
        summary = convert_coco(data.image_dir, data.train_json, out, **options)
        return summary, time.perf_counter() - started
    finally:
        os.environ.pop(unit_convert.FAIL_ONCE_VARIABLE, None)


def ray_available() -> bool:
    try:
        import ray  # noqa: F401
        from yolodata.convert import ray_engine  # noqa: F401
    except ImportError:
        return False
    return True


def resume_figures(data, work: Path, shard_size: int, reference: dict) -> str:
    """Interrupt a run at its middle unit, resume it; what the second run converted and whether it matches."""
    out = work / "resumed"
    num_units = len(load_manifest(work / "reference").shards)
    middle = num_units // 2
    try:
        convert(data, out, fail=f"{middle}:", shard_size=shard_size, num_workers=1)
    except engines.EngineError:
        pass
    published = sorted(p.name for p in run_lib.parts_dir_of(out).glob("unit-?????"))
    converted = []
    original = run_lib.convert_unit

    def counting(task):
        converted.append(task.index)
        return original(task)

    run_lib.convert_unit = counting
    try:
        convert(data, out, shard_size=shard_size, num_workers=1)
    finally:
        run_lib.convert_unit = original
    same = digests(out) == reference
    return (f"resume: first run stopped at unit {middle} of {num_units} with {len(published)} unit(s) published; "
            f"the resumed run converted {len(converted)} unit(s) {converted[:3]}...; same bytes as the "
            f"reference: {same}")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--num_images", type=int, default=600)
    parser.add_argument("--shard_size", type=run_lib.parse_shard_size, default=run_lib.parse_shard_size("256K"))
    parser.add_argument("--image_size", default="240x320", help="HxW of the synthetic pictures")
    parser.add_argument("--engines", default="local,ray")
    parser.add_argument("--keep", type=Path, default=None, help="work folder to keep (default: a temporary one)")
    args = parser.parse_args(argv)
    height, width = (int(v) for v in args.image_size.split("x"))
    work = args.keep or Path(tempfile.mkdtemp(prefix="convert_units_"))
    try:
        data = make_synthetic_coco(work / "data", num_images=args.num_images, image_size=(height, width),
                                   val_fraction=0.0, overwrite=True)
        print(f"data: {args.num_images} synthetic images {width}x{height}, --shard_size {args.shard_size:,}")
        runs = [("reference: local, 1 worker", {"engine": "local", "num_workers": 1}, None),
                ("local, 2 workers", {"engine": "local", "num_workers": 2}, None),
                ("local, 2 workers, unit 1 fails once", {"engine": "local", "num_workers": 2}, "1:{marker}")]
        if "ray" in args.engines.split(","):
            if ray_available():
                runs += [("ray, 2 workers", {"engine": "ray", "num_workers": 2}, None),
                         ("ray, 2 workers, unit 1 fails once", {"engine": "ray", "num_workers": 2}, "1:{marker}")]
            else:
                print("ray: not installed or convert.ray_engine missing; skipped")
        reference = None
        for position, (name, options, fail) in enumerate(runs):
            out = work / ("reference" if position == 0 else f"run{position}")
            marker = work / f"failed-once-{position}"
            summary, seconds = convert(data, out, fail=fail and fail.format(marker=marker),
                                       shard_size=args.shard_size, **options)
            found = digests(out)
            reference = reference or found
            files, largest_file, largest_row = shard_figures(out)
            print(f"{name:38s} {summary.images_per_second:7.1f} images/s ({seconds:5.1f} s in all)  {files} files, "
                  f"largest {largest_file:,} B <= shard_size + largest row {args.shard_size + largest_row:,}: "
                  f"{largest_file <= args.shard_size + largest_row}; failure injected: {marker.exists()}; "
                  f"same sha256 of all {len(found)} files as the reference: {found == reference}")
        print(resume_figures(data, work, args.shard_size, reference))
    finally:
        if args.keep is None:
            shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
