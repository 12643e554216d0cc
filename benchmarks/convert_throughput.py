"""Converter throughput against a plain read + cv2.imdecode pass, in one run, for each source format.

    python benchmarks/convert_throughput.py [--num_images 2048] [--num_workers 2] [--shard_num 1]
                                            [--repeats 2] [--formats coco,yolo,voc]

The image set is coco128 repeated: its 128 real JPEGs (``benchmarks.real_data.COCO128``) are symlinked under new
file names (in subfolders) with new image ids, and the json repeats their annotations under new ids,
until --num_images images. Both passes below read exactly these files with the same number of threads:

- plain pass: read every file and ``cv2.imdecode`` it (IMREAD_COLOR), nothing else;
- conversion: ``yolodata.convert.convert_coco`` into a temporary folder, with its full validation
  (every image completely decoded, size checked) and the MindRecord writing;
- the same images and boxes written out (``benchmarks.format_exports``) as YOLO txt (Ultralytics
  layout, six decimals) and as Pascal VOC XML (integer corners, ``ImageSets/Main/train.txt``), each
  converted whole by ``convert_yolo`` / ``convert_voc``: the labels read and every image's size read
  from its header, then the same conversion. Their rate is given next to the COCO json conversion's
  of the same round. The header reads are also timed alone (one thread, page cache warm).

The files are read once before timing (page cache warm for both passes) and MindSpore is imported
before timing (its one-off import is not throughput). Passes alternate (plain, conversion, plain, ...)
and the best of --repeats is reported for each, with their ratio; the ratio of each round (a plain
pass and the conversion after it) is printed too, since other processes on a shared machine slow
single runs down.
"""
from __future__ import annotations

import argparse
import json
import shutil
import statistics
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import cv2
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from benchmarks.real_data import COCO128  # noqa: E402

COCO128_JSON = Path("annotations") / "instances_val2017.json"
COCO128_IMAGES = Path("val2017")


def make_repeated_coco(source: Path, dest: Path, num_images: int) -> tuple[Path, Path]:
    """Build coco128 repeated to ``num_images`` images in ``dest``: (image_dir, annotation file).

    Copy r of source image i is the symlink ``rep{r:03d}/{stem}_r{r}.jpg`` with image id
    ``(r + 1) * 10**7 + original id``; its annotations get fresh ids 1, 2, ... in order.
    """
    if num_images < 1:
        raise ValueError(f"num_images must be at least 1, got {num_images}")
    source, dest = Path(source), Path(dest)
    document = json.loads((source / COCO128_JSON).read_text())
    images = sorted(document["images"], key=lambda record: record["id"])
    annotations_of: dict = {}
    for ann in document["annotations"]:
        annotations_of.setdefault(ann["image_id"], []).append(ann)
    image_dir = dest / "images"
    out_images, out_annotations = [], []
    next_ann_id = 1
    for position in range(num_images):
        repeat, record = divmod(position, len(images))
        record = images[record]
        stem = Path(record["file_name"]).stem
        file_name = f"rep{repeat:03d}/{stem}_r{repeat}.jpg"
        link = image_dir / file_name
        link.parent.mkdir(parents=True, exist_ok=True)
        link.symlink_to((source / COCO128_IMAGES / record["file_name"]).resolve())
        new_id = (repeat + 1) * 10 ** 7 + record["id"]
        out_images.append({**record, "id": new_id, "file_name": file_name})
        for ann in annotations_of.get(record["id"], []):
            out_annotations.append({**ann, "id": next_ann_id, "image_id": new_id})
            next_ann_id += 1
    ann_file = dest / "instances_repeated.json"
    ann_file.write_text(json.dumps({**document, "images": out_images, "annotations": out_annotations}))
    return image_dir, ann_file


def plain_pass(paths: list, num_workers: int) -> float:
    """Seconds to read and cv2.imdecode every file with ``num_workers`` threads."""
    def read_decode(path):
        image = cv2.imdecode(np.fromfile(path, np.uint8), cv2.IMREAD_COLOR)
        if image is None:
            raise RuntimeError(f"cannot decode {path}")
        return image.shape

    started = time.perf_counter()
    with ThreadPoolExecutor(max_workers=num_workers) as pool:
        for _ in pool.map(read_decode, paths, chunksize=8):
            pass
    return time.perf_counter() - started


FORMATS = ("coco", "yolo", "voc")


def header_pass(paths: list) -> float:
    """Seconds to read every image's size from its header (``yolodata.formats.image_size``), one thread."""
    from yolodata.formats.image_size import read_image_size

    started = time.perf_counter()
    for path in paths:
        read_image_size(path)
    return time.perf_counter() - started


def format_converters(formats, image_dir: Path, ann_file: Path, workdir: Path, shard_num: int, workers: int) -> dict:
    """{format: a function converting that format's copy of the set into a folder} (copies written here)."""
    from benchmarks.format_exports import write_voc, write_yolo
    from yolodata.convert import convert_coco, convert_voc, convert_yolo

    options = dict(shard_num=shard_num, num_workers=workers)
    document = json.loads(ann_file.read_text())
    converters = {}
    for name in formats:
        if name == "coco":
            converters[name] = lambda out: convert_coco(image_dir, ann_file, out, **options)
        elif name == "yolo":
            data = write_yolo(document, image_dir, workdir / "yolo", precision=6)
            converters[name] = lambda out, data=data: convert_yolo(data, out, **options)
        elif name == "voc":
            voc_dir = write_voc(document, image_dir, workdir / "voc", integer=True)
            converters[name] = lambda out, voc_dir=voc_dir: convert_voc(voc_dir, out, split="train",
                                                                        names_file=voc_dir / "names.txt", **options)
    return converters


def run(num_images: int, num_workers: int, shard_num: int, repeats: int, workdir: Path,
        formats=("coco",)) -> dict:
    from mindspore.mindrecord import FileWriter  # noqa: F401 - import once, outside the timed passes

    from yolodata.checks import resolve_num_workers

    workers = resolve_num_workers(num_workers)
    image_dir, ann_file = make_repeated_coco(COCO128, workdir / "coco", num_images)
    paths = [str(image_dir / record["file_name"]) for record in json.loads(ann_file.read_text())["images"]]
    for path in paths:  # warm the page cache for both passes
        Path(path).read_bytes()
    converters = format_converters(list(dict.fromkeys(("coco", *formats))), image_dir, ann_file, workdir,
                                   shard_num, workers)
    plain_times, header_times, stage_times = [], [], []
    times: dict = {name: [] for name in converters}
    summary = None
    for _ in range(repeats):
        plain_times.append(plain_pass(paths, workers))
        header_times.append(header_pass(paths))
        for name, convert in converters.items():
            out = workdir / "out"
            started = time.perf_counter()
            converted = convert(out)
            times[name].append(time.perf_counter() - started)
            if converted.num_images != num_images:
                raise RuntimeError(f"{name}: converted {converted.num_images} of {num_images} images")
            if name == "coco":
                summary = converted
                stage_times.append(converted.convert_seconds)
            shutil.rmtree(out)
    convert_times = times["coco"]
    plain_rate = num_images / min(plain_times)
    convert_rate = num_images / min(convert_times)
    round_ratios = [plain / convert for plain, convert in zip(plain_times, convert_times)]
    by_format = {name: {"images_per_s": num_images / min(seconds), "seconds": seconds,
                        "round_ratios_to_coco": [coco / other for coco, other in zip(convert_times, seconds)],
                        "median_ratio_to_coco": statistics.median(coco / other
                                                                  for coco, other in zip(convert_times, seconds))}
                 for name, seconds in times.items()}
    return {"num_images": num_images, "num_workers": workers, "shard_num": shard_num, "repeats": repeats,
            "plain_images_per_s": plain_rate, "convert_images_per_s": convert_rate,
            "ratio": convert_rate / plain_rate, "round_ratios": round_ratios,
            "median_round_ratio": statistics.median(round_ratios),
            "image_stage_images_per_s": num_images / min(stage_times),
            "plain_seconds": plain_times, "convert_seconds": convert_times, "image_stage_seconds": stage_times,
            "header_us_per_image": 1e6 * min(header_times) / num_images, "formats": by_format,
            "bytes_written": summary.bytes_written}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--num_images", type=int, default=2048, help="size of the coco128-repeated set")
    parser.add_argument("--num_workers", type=int, default=None, help="threads for both passes "
                        "(default and ceiling: the CPU count)")
    parser.add_argument("--shard_num", type=int, default=1, help="MindRecord shards of the conversion")
    parser.add_argument("--repeats", type=int, default=3, help="alternating runs of each pass; best is reported")
    parser.add_argument("--formats", default=",".join(FORMATS),
                        help=f"source formats to convert, comma-separated (default {','.join(FORMATS)}; coco always)")
    parser.add_argument("--json", type=Path, default=None, help="also write the figures to this file")
    args = parser.parse_args(argv)
    formats = [name.strip() for name in args.formats.split(",") if name.strip()]
    unknown = sorted(set(formats) - set(FORMATS))
    if unknown:
        parser.error(f"--formats: unknown {unknown}; choose from {', '.join(FORMATS)}")
    if not (COCO128 / COCO128_JSON).is_file():
        print(f"error: {COCO128} not found; the benchmark needs coco128 (set YOLO_REAL_DATA to the folder that holds it)", file=sys.stderr)
        return 2
    if args.repeats < 1:
        parser.error("--repeats must be at least 1")
    with tempfile.TemporaryDirectory(prefix="convert_throughput_") as tmp:
        print(f"image set: coco128 repeated to {args.num_images} images (symlinks to the 128 real JPEGs "
              f"under new names and ids)")
        result = run(args.num_images, args.num_workers, args.shard_num, args.repeats, Path(tmp), formats)
    print(f"threads: {result['num_workers']}, shards: {result['shard_num']}, best of {result['repeats']}")
    print(f"plain read + cv2.imdecode : {result['plain_images_per_s']:8.0f} images/s")
    print(f"conversion (convert_coco) : {result['convert_images_per_s']:8.0f} images/s")
    print(f"ratio conversion / plain  : {result['ratio']:8.2f}")
    print(f"ratio of each round       : {', '.join(f'{r:.2f}' for r in result['round_ratios'])} "
          f"(median {result['median_round_ratio']:.2f})")
    print(f"(image stage, first image read to last row written: {result['image_stage_images_per_s']:.0f} "
          f"images/s)")
    print(f"image size from the header: {result['header_us_per_image']:.0f} us per image (one thread)")
    print("source format              images/s   ratio to COCO json (median of rounds; each round)")
    for name, figures in result["formats"].items():
        rounds = ", ".join(f"{r:.2f}" for r in figures["round_ratios_to_coco"])
        print(f"  {name:<24} {figures['images_per_s']:8.0f}   {figures['median_ratio_to_coco']:.2f} ({rounds})")
    if args.json:
        args.json.write_text(json.dumps(result, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
