"""Camera-size photos: what ``--max_side`` saves in conversion, storage, training input and memory, and
that evaluation still scores the same, in one run.

    python benchmarks/large_photos.py [--workdir /tmp/large_photos] [--num_images 48] [--rounds 2] \
        [--pretrained yolov5n.ckpt --testing_shape 320] [--skip_pipelines] [--json FILE]

The large-photo set is made from coco128 once and kept in ``--workdir`` (reused by later runs): every
picture enlarged by 4032 / 640 = 6.3 (bicubic; a 640x480 picture becomes 4032x3024, 12 MP, others keep
their aspect ratio) and encoded as JPEG quality 92 (about 1.5-2 MB each, as phone photos), its
ground truth the original boxes times the same factors (``area`` times their product).

Measured, each pipeline in a fresh process (its own peak RSS; all of them in turn, ``--rounds`` times,
medians shown), on the first ``--num_images`` pictures:
- conversion of the photos as they are, with ``--max_side 1280`` and with ``--max_side 640`` (images/s
  of the image stage, on-disk size of the output);
- the train pipeline at 640 (mosaic, affine, HSV; batch 8, 2 threads; 8 epochs of the pictures, 3 with
  full decoding; the first batch not timed) on each of the three sets, and on
  the originals once more with JPEG reduced decoding off (every photo decoded at 12 MP, as YOLOv5's
  loader does); decode-only of the originals at full size as the floor reference; and the pixel work
  YOLOv5's loader does per training image on the originals (mosaic on, no ``--cache``: 4 full decodes
  and resizes, canvas, warp, HSV, flip), written here from its documented steps;
- what JPEG reduced decoding changes (``IMREAD_REDUCED_COLOR_2/4/8``, which the train pipeline uses
  when the reduced picture keeps twice the batch's long side): mean absolute difference of a picture
  resized to the training size from the reduced decode versus from the full decode, next to what the
  resize itself changes (bilinear versus area resizing of the same full decode).

With ``--pretrained`` (a checkpoint of 80 COCO classes, e.g. yolov5n imported with
``yolo-import-yolov5``), the 12 COCO numbers at ``--testing_shape`` of coco128 as it is and of all 128
photos converted with ``--max_side 640`` (the default JPEG quality 95, and 100), with two more sets that
tell apart where a difference comes from: the photos shrunk back to coco128's sizes and stored
losslessly (the benchmark's input pixels in coco128's frame: no re-encoding, no mapping back), and
coco128 re-encoded once as JPEG q95 without any resize (what one re-encoding alone moves). The photos'
detections are mapped back to 4032-pixel coordinates and scored against the enlarged ground truth,
with COCO's small/medium/large area limits multiplied by 6.3^2 so that the same objects fall in each
range (pycocotools otherwise takes a 20x20 object enlarged to 126x126 as "large").

Three baselines for the train pipeline, all printed: the originals stored as they are, read by this
pipeline (which decodes them at 1/2 size, ``IMREAD_REDUCED_COLOR_2``: its own shortcut); the originals
decoded at full size by this pipeline (one decode per image: mosaic partners come from the batch); and
the work of the loader users have (YOLOv5's ``load_mosaic``, which decodes 4 photos per image).
"""
from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import shutil
import subprocess
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

from benchmarks.input_throughput import PeakRss, cpu_seconds, time_batches  # noqa: E402
from benchmarks.real_data import COCO128  # noqa: E402
from yolodata.augment.color import apply_hsv, sample_hsv  # noqa: E402
from yolodata.convert import convert_coco  # noqa: E402
from yolodata.manifest import load_manifest  # noqa: E402
from yolodata.pipeline import create_train_dataset  # noqa: E402
from yolodata.pipeline.rows import reduced_decode_factor  # noqa: E402
from yolomodel.device import setup_device  # noqa: E402
from yolomodel.evaluation import evaluate, load_model_for_dataset  # noqa: E402

UPSCALE = 4032 / 640            # coco128's 640x480 pictures become 4032x3024
PHOTO_QUALITY = 92
TRAINING_SHAPE = 640
PER_BATCH_SIZE = 8
SETS = {"originals": None, "max_side_1280": 1280, "max_side_640": 640}
# (stored set, training size, reduction) of the reduced-decoding comparison: the reduced picture at
# 3.15x, 2x, 2x, 1.57x, 1x, 1x the target's long side
REDUCED_CASES = (("originals", 640, 2), ("max_side_1280", 320, 2), ("max_side_640", 160, 2),
                 ("originals", 640, 4), ("max_side_1280", 640, 2), ("max_side_640", 320, 2))


# ------------------------------------------------------------------------------------ the photo set

def _enlarge_one(source: Path, target: Path) -> tuple[int, int]:
    """Write ``source`` enlarged by UPSCALE as a JPEG of PHOTO_QUALITY; returns its new (height, width)."""
    picture = cv2.imread(str(source), cv2.IMREAD_COLOR)
    size = (round(picture.shape[1] * UPSCALE), round(picture.shape[0] * UPSCALE))
    if not target.is_file():
        large = cv2.resize(picture, size, interpolation=cv2.INTER_CUBIC)
        ok, buf = cv2.imencode(".jpg", large, [cv2.IMWRITE_JPEG_QUALITY, PHOTO_QUALITY])
        partial = target.with_suffix(".part")
        partial.write_bytes(buf.tobytes())
        partial.replace(target)
    return size[1], size[0]


def enlarged_document(document: dict, sizes: dict) -> dict:
    """The coco128 json for the enlarged pictures: sizes, boxes times each axis' factor, area times both."""
    out = {key: value for key, value in document.items() if key not in ("images", "annotations")}
    factors = {}
    out["images"] = []
    for record in document["images"]:
        height, width = sizes[record["id"]]
        factors[record["id"]] = (width / record["width"], height / record["height"])
        out["images"].append({**record, "height": height, "width": width})
    out["annotations"] = []
    for ann in document["annotations"]:
        fx, fy = factors[ann["image_id"]]
        x, y, w, h = ann["bbox"]
        out["annotations"].append({key: value for key, value in ann.items() if key != "segmentation"}
                                  | {"bbox": [x * fx, y * fy, w * fx, h * fy], "area": ann["area"] * fx * fy})
    return out


def build_photo_set(workdir: Path) -> tuple[Path, Path]:
    """(image folder, annotation json) of all 128 enlarged coco128 pictures, made once in ``workdir``."""
    image_dir, ann_file = workdir / "images", workdir / "instances_photos.json"
    if ann_file.is_file():
        return image_dir, ann_file
    image_dir.mkdir(parents=True, exist_ok=True)
    document = json.loads((COCO128 / "annotations" / "instances_val2017.json").read_text())
    records = document["images"]
    print(f"making {len(records)} photos of 4032 px from coco128 in {workdir} (once) ...", flush=True)
    with ThreadPoolExecutor(os.cpu_count()) as pool:
        hws = list(pool.map(lambda r: _enlarge_one(COCO128 / "val2017" / r["file_name"], image_dir / r["file_name"]),
                            records))
    sizes = {record["id"]: hw for record, hw in zip(records, hws)}
    partial = ann_file.with_suffix(".part")
    partial.write_text(json.dumps(enlarged_document(document, sizes)))
    partial.replace(ann_file)
    return image_dir, ann_file


def subset_json(ann_file: Path, num_images: int, target: Path) -> Path:
    """A json of the first ``num_images`` pictures of ``ann_file`` (by id) and their annotations."""
    document = json.loads(ann_file.read_text())
    keep = sorted(record["id"] for record in document["images"])[:num_images]
    kept = set(keep)
    document["images"] = [r for r in document["images"] if r["id"] in kept]
    document["annotations"] = [a for a in document["annotations"] if a["image_id"] in kept]
    target.write_text(json.dumps(document))
    return target


def folder_disk_bytes(folder: Path) -> int:
    return sum(p.stat().st_blocks * 512 for p in folder.iterdir() if p.is_file())


def image_bytes(image_dir: Path, ann_file: Path) -> int:
    document = json.loads(ann_file.read_text())
    return sum((image_dir / r["file_name"]).stat().st_size for r in document["images"])


# ------------------------------------------------------------------------------------ conversion

def convert_sets(image_dir: Path, ann_file: Path, workdir: Path) -> dict:
    """Convert the photos three ways (SETS); {name: {folder, images_per_s, seconds, disk_bytes, shrunk}}."""
    figures = {}
    for name, max_side in SETS.items():
        out = workdir / f"mr_{name}"
        summary = convert_coco(image_dir, ann_file, out, max_side=max_side)
        figures[name] = {"folder": str(out), "images_per_s": round(summary.images_per_second, 2),
                         "seconds": round(summary.convert_seconds, 2), "disk_bytes": folder_disk_bytes(out),
                         "shrunk": summary.shrink.num_shrunk}
        print(f"converted {name}: {summary.num_images} images at {summary.images_per_second:.1f} images/s, "
              f"{figures[name]['disk_bytes'] / 2 ** 20:.1f} MiB on disk", flush=True)
    return figures


# ------------------------------------------------------------------------------------ pipelines (child process)

def measure_train(folder: str, reduced_decode: bool, epochs: int) -> dict:
    """Train pipeline images/s, CPU ms per image and peak RSS on ``folder`` (run in a fresh process)."""
    with PeakRss() as rss:
        dataset = create_train_dataset(folder, per_batch_size=PER_BATCH_SIZE, training_shape=TRAINING_SHAPE,
                                       num_parallel_workers=2, seed=0, num_epochs=epochs,
                                       reduced_decode=reduced_decode)
        images_per_s, cpu_ms = time_batches(dataset, 1, dataset.num_steps - 2, PER_BATCH_SIZE)
    return {"images_per_s": round(images_per_s, 2), "cpu_ms_per_image": round(cpu_ms, 1),
            "peak_rss_mb": round(rss.peak_mb, 1)}


def stored_buffers(folder: str) -> list:
    """The encoded picture of every row of the MindRecord set in ``folder``, in row order."""
    import mindspore.dataset as ds

    manifest = load_manifest(folder)
    reader = ds.MindDataset([str(p) for p in manifest.shard_paths], columns_list=["image"], shuffle=False)
    return [np.frombuffer(row[0].tobytes(), np.uint8)
            for row in reader.create_tuple_iterator(output_numpy=True, num_epochs=1)]


def measure_decode(folder: str) -> dict:
    """Full-size cv2.imdecode of every stored picture on 2 threads (the floor of any loader of these files)."""
    buffers = stored_buffers(folder)
    with PeakRss() as rss, ThreadPoolExecutor(2) as pool:
        start, start_cpu = time.perf_counter(), cpu_seconds()
        list(pool.map(lambda b: cv2.imdecode(b, cv2.IMREAD_COLOR).shape, buffers))
        elapsed, cpu = time.perf_counter() - start, cpu_seconds() - start_cpu
    return {"images_per_s": round(len(buffers) / elapsed, 2), "cpu_ms_per_image": round(1e3 * cpu / len(buffers), 1),
            "peak_rss_mb": round(rss.peak_mb, 1)}


YOLOV5_MOSAIC_TILES = 4      # YOLOv5's load_mosaic loads the sample and 3 random others, each decoded


def _yolov5_tile(buffer: np.ndarray, size: int) -> np.ndarray:
    """YOLOv5's ``load_image`` without a cache: full decode, long side resized to ``size`` (bilinear, as
    with augmentation on)."""
    picture = cv2.imdecode(buffer, cv2.IMREAD_COLOR)
    ratio = size / max(picture.shape[:2])
    return cv2.resize(picture, (int(np.ceil(picture.shape[1] * ratio)), int(np.ceil(picture.shape[0] * ratio))),
                      interpolation=cv2.INTER_LINEAR)


def _yolov5_sample(buffers: list, index: int, size: int) -> np.ndarray:
    """The pixel work of one YOLOv5 training sample on files with no RAM cache: 4 decodes and resizes,
    the 2x-size mosaic canvas, one affine warp to ``size``, HSV, left-right flip, HWC BGR -> CHW RGB.
    Written here from YOLOv5's documented steps (no torch); labels are left out (their cost is small)."""
    rng = np.random.default_rng(index)
    picks = [index, *rng.integers(0, len(buffers), YOLOV5_MOSAIC_TILES - 1)]
    canvas = np.full((2 * size, 2 * size, 3), 114, np.uint8)
    centre_y, centre_x = (int(v) for v in rng.uniform(size / 2, 3 * size / 2, 2))
    for quadrant, pick in enumerate(picks):
        tile = _yolov5_tile(buffers[pick], size)
        height, width = tile.shape[:2]
        # the tile's corner at the centre: top-left, top-right, bottom-left, bottom-right quadrants
        y0 = centre_y - height if quadrant < 2 else centre_y
        x0 = centre_x - width if quadrant % 2 == 0 else centre_x
        cy0, cx0 = max(y0, 0), max(x0, 0)
        cy1, cx1 = min(y0 + height, 2 * size), min(x0 + width, 2 * size)
        canvas[cy0:cy1, cx0:cx1] = tile[cy0 - y0:cy1 - y0, cx0 - x0:cx1 - x0]
    scale = rng.uniform(0.5, 1.5)
    shift = rng.uniform(-0.1, 0.1, 2) * size
    matrix = np.array([[scale, 0, (1 - scale) * size + shift[0] - size / 2],
                       [0, scale, (1 - scale) * size + shift[1] - size / 2]], np.float64)
    warped = cv2.warpAffine(canvas, matrix, (size, size), borderValue=(114, 114, 114))
    coloured = apply_hsv(warped, sample_hsv(rng))
    if rng.random() < 0.5:
        coloured = coloured[:, ::-1]
    return np.ascontiguousarray(coloured.transpose(2, 0, 1)[::-1])


def measure_yolov5_loader(folder: str) -> dict:
    """Images/s, CPU ms per image and peak RSS of ``_yolov5_sample`` over every stored picture on 2 threads:
    the work the loader users have (YOLOv5's, mosaic on, no ``--cache``) does per image on these photos."""
    buffers = stored_buffers(folder)
    with PeakRss() as rss, ThreadPoolExecutor(2) as pool:
        start, start_cpu = time.perf_counter(), cpu_seconds()
        list(pool.map(lambda index: _yolov5_sample(buffers, index, TRAINING_SHAPE).shape, range(len(buffers))))
        elapsed, cpu = time.perf_counter() - start, cpu_seconds() - start_cpu
    return {"images_per_s": round(len(buffers) / elapsed, 2), "cpu_ms_per_image": round(1e3 * cpu / len(buffers), 1),
            "peak_rss_mb": round(rss.peak_mb, 1)}


def in_child(kind: str, folder: str, reduced_decode: bool = True, epochs: int = 8) -> dict:
    """``measure_train`` or ``measure_decode`` in a fresh Python process (own threads, memory, peak RSS)."""
    with tempfile.TemporaryDirectory(prefix="large_photos_") as tmp:
        out = Path(tmp) / "figures.json"
        command = [sys.executable, str(Path(__file__).resolve()), "--child", kind, "--child_folder", folder,
                   "--child_epochs", str(epochs), "--json", str(out)] + ([] if reduced_decode else ["--full_decode"])
        subprocess.run(command, check=True, env={**os.environ, "PYTHONPATH": str(ROOT)})
        return json.loads(out.read_text())


def median_figures(measurements: list) -> dict:
    """Per key, the median over rounds of ``in_child`` figures (one dict per round)."""
    return {key: round(float(np.median([m[key] for m in measurements])), 2) for key in measurements[0]}


def measure_pipelines(folders: dict, rounds: int) -> tuple[dict, dict]:
    """(train figures per set, decode-only figures of the originals): medians of ``rounds`` rounds, each
    round measuring every pipeline once in turn, so that a change of the machine's load between
    measurements falls on all of them alike."""
    runs = {name: [] for name in (*folders, "originals_full_decode", "yolov5_loader", "decode")}
    for _ in range(rounds):
        for name, folder in folders.items():
            runs[name].append(in_child("train", folder))
        runs["originals_full_decode"].append(in_child("train", folders["originals"], reduced_decode=False, epochs=3))
        runs["yolov5_loader"].append(in_child("yolov5_loader", folders["originals"]))
        runs["decode"].append(in_child("decode", folders["originals"]))
    decode = median_figures(runs.pop("decode"))
    return {name: median_figures(measurements) for name, measurements in runs.items()}, decode


CHILD_MEASURES = {"decode": measure_decode, "yolov5_loader": measure_yolov5_loader}


# ------------------------------------------------------------------------------------ reduced decoding

REDUCED_FLAGS = {2: cv2.IMREAD_REDUCED_COLOR_2, 4: cv2.IMREAD_REDUCED_COLOR_4, 8: cv2.IMREAD_REDUCED_COLOR_8}


def mean_abs(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.abs(a.astype(np.int16) - b.astype(np.int16)).mean())


def reduced_decode_effect(folder: str, target: int, reduce: int, num_images: int = 8) -> dict:
    """What decoding at 1/``reduce`` changes in pictures resized to long side ``target`` (bilinear, as
    the pipeline resizes), next to what the resize itself changes: mean absolute differences (gray
    levels) of reduced + bilinear vs full + bilinear, of full + bilinear vs full + area (the properly
    averaged picture), and of reduced + bilinear vs full + area."""
    import mindspore.dataset as ds

    manifest = load_manifest(folder)
    reader = ds.MindDataset([str(p) for p in manifest.shard_paths], columns_list=["image"], shuffle=False,
                            num_samples=num_images)
    by_reduction, by_resize, to_area, used = [], [], [], set()
    for (buf,) in reader.create_tuple_iterator(output_numpy=True, num_epochs=1):
        data = np.frombuffer(buf.tobytes(), np.uint8)
        full = cv2.imdecode(data, cv2.IMREAD_COLOR)
        used.add(reduced_decode_factor(full.shape[:2], target) >= reduce)
        scale = target / max(full.shape[:2])
        size = (round(full.shape[1] * scale), round(full.shape[0] * scale))
        linear = cv2.resize(full, size, interpolation=cv2.INTER_LINEAR)
        area = cv2.resize(full, size, interpolation=cv2.INTER_AREA)
        from_reduced = cv2.resize(cv2.imdecode(data, REDUCED_FLAGS[reduce]), size, interpolation=cv2.INTER_LINEAR)
        by_reduction.append(mean_abs(from_reduced, linear))
        by_resize.append(mean_abs(linear, area))
        to_area.append(mean_abs(from_reduced, area))
    return {"target": target, "reduce": reduce, "used_by_pipeline": sorted(used) == [True],
            "reduced_vs_full": round(float(np.mean(by_reduction)), 2),
            "linear_vs_area": round(float(np.mean(by_resize)), 2), "reduced_vs_area": round(float(np.mean(to_area)), 2)}


# ------------------------------------------------------------------------------------ evaluation

def scores_with_area_factor(ann_file: Path, results_file: Path, area_factor: float,
                            image_ids: list | None = None) -> np.ndarray:
    """pycocotools' 12 bbox numbers with COCO's area limits multiplied by ``area_factor`` (on ``image_ids``
    only, when given)."""
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    with contextlib.redirect_stdout(io.StringIO()):
        ground_truth = COCO(str(ann_file))
        detections = ground_truth.loadRes(str(results_file))
        evaluator = COCOeval(ground_truth, detections, "bbox")
        evaluator.params.areaRng = [[low * area_factor, high * area_factor] for low, high in evaluator.params.areaRng]
        if image_ids is not None:
            evaluator.params.imgIds = list(image_ids)
        evaluator.evaluate()
        evaluator.accumulate()
        evaluator.summarize()
    return np.asarray(evaluator.stats, np.float64)


def lossless_round_trip_set(image_dir: Path, workdir: Path) -> tuple[Path, Path]:
    """Each photo shrunk back to its coco128 size (area) and stored losslessly (PNG, under coco128's file
    names), with coco128's own json: the photos' pixels in coco128's frame with no re-encoding at all,
    so that what the benchmark's input (enlarged, JPEG q92 at 12 MP) changes is told apart from what
    the conversion (shrink, JPEG re-encoding) and the mapping back change."""
    out = workdir / "round_trip_lossless"
    ann_file = COCO128 / "annotations" / "instances_val2017.json"
    if out.is_dir():
        return out, ann_file
    partial = workdir / "round_trip_lossless.part"
    shutil.rmtree(partial, ignore_errors=True)
    partial.mkdir()
    for record in json.loads(ann_file.read_text())["images"]:
        photo = cv2.imread(str(image_dir / record["file_name"]), cv2.IMREAD_COLOR)
        back = cv2.resize(photo, (record["width"], record["height"]), interpolation=cv2.INTER_AREA)
        ok, buf = cv2.imencode(".png", back)
        (partial / record["file_name"]).write_bytes(buf.tobytes())
    partial.replace(out)
    return out, ann_file


def reencoded_coco128_set(workdir: Path, quality: int) -> Path:
    """coco128's pictures decoded and encoded once more as JPEG ``quality``, same size, same names: what
    one re-encoding alone (no resize) changes."""
    out = workdir / f"coco128_q{quality}"
    if out.is_dir():
        return out
    partial = workdir / f"coco128_q{quality}.part"
    shutil.rmtree(partial, ignore_errors=True)
    partial.mkdir()
    for source in sorted((COCO128 / "val2017").iterdir()):
        picture = cv2.imread(str(source), cv2.IMREAD_COLOR)
        ok, buf = cv2.imencode(".jpg", picture, [cv2.IMWRITE_JPEG_QUALITY, quality])
        (partial / source.name).write_bytes(buf.tobytes())
    partial.replace(out)
    return out


# the evaluated sets: (description, scored in 4032-pixel coordinates)
EVAL_SETS = {
    "coco128": ("coco128 as it is", False),
    "photos_max_side_640": ("photos, --max_side 640 (JPEG q95, the default)", True),
    "photos_max_side_640_q100": ("photos, --max_side 640 --jpeg_quality 100", True),
    "round_trip_lossless": ("photos shrunk to coco128's sizes, lossless PNG", False),
    "coco128_q95": ("coco128 re-encoded once, JPEG q95, no resize", False),
}


def compare_evaluation(checkpoint: Path, image_dir: Path, ann_file: Path, workdir: Path, testing_shape: int) -> dict:
    """The 12 numbers of each of ``EVAL_SETS`` and the largest difference of each to coco128's.

    The photos are converted with --max_side 640 and scored in 4032-pixel coordinates (their
    detections mapped back); the round trip (``lossless_round_trip_set``) and the re-encoded coco128
    (``reencoded_coco128_set``) are scored in coco128's frame against coco128's json.
    """
    coco_json = COCO128 / "annotations" / "instances_val2017.json"
    trip_dir, _ = lossless_round_trip_set(image_dir, workdir)
    folders = {name: workdir / f"eval_{name}" for name in EVAL_SETS}
    convert_coco(COCO128 / "val2017", coco_json, folders["coco128"])
    convert_coco(image_dir, ann_file, folders["photos_max_side_640"], max_side=640)
    convert_coco(image_dir, ann_file, folders["photos_max_side_640_q100"], max_side=640, jpeg_quality=100)
    convert_coco(trip_dir, coco_json, folders["round_trip_lossless"])
    convert_coco(reencoded_coco128_set(workdir, 95), coco_json, folders["coco128_q95"])
    setup_device("CPU", distributed=False)
    loaded = load_model_for_dataset(checkpoint, 80)
    same_geometry = same_geometry_ids(coco_json)
    figures = {"numbers": {}, "max_difference_to_coco128": {}, "same_geometry_images": len(same_geometry),
               "numbers_same_geometry": {}, "max_difference_same_geometry": {}}
    for name, folder in folders.items():
        results = workdir / f"results_{name}.json"
        report = evaluate(loaded.network, folder, testing_shape=testing_shape, per_batch_size=16, results_file=results,
                          show_progress=False)
        area_factor = UPSCALE ** 2 if EVAL_SETS[name][1] else 1.0
        stats = scores_with_area_factor(folder / "annotations.json", results, area_factor)
        if area_factor == 1.0:  # the same scoring as yolo-eval's
            assert np.allclose(stats, report.scores.stats)
        figures["numbers"][name] = [round(float(v), 4) for v in stats]
        subset = scores_with_area_factor(folder / "annotations.json", results, area_factor, same_geometry)
        figures["numbers_same_geometry"][name] = [round(float(v), 4) for v in subset]
        print(f"evaluated {name}", flush=True)
    for key, differences in (("numbers", "max_difference_to_coco128"),
                             ("numbers_same_geometry", "max_difference_same_geometry")):
        reference = np.asarray(figures[key]["coco128"])
        for name, numbers in figures[key].items():
            figures[differences][name] = round(float(np.max(np.abs(np.asarray(numbers) - reference))), 4)
    return figures


def same_geometry_ids(coco_json: Path) -> list:
    """Ids of the coco128 pictures with a 640 px long side: their photo, stored with --max_side 640, has
    coco128's size again. The others (long side 448-612) are stored larger than in coco128 (area-shrunk
    from the enlargement, where coco128's eval enlarges the small original bilinearly), so their pixels
    differ by more than a re-encoding."""
    return sorted(record["id"] for record in json.loads(coco_json.read_text())["images"]
                  if max(record["width"], record["height"]) == 640)


# ------------------------------------------------------------------------------------ main

def child_main(args) -> int:
    if args.child == "train":
        figures = measure_train(args.child_folder, not args.full_decode, args.child_epochs)
    else:
        figures = CHILD_MEASURES[args.child](args.child_folder)
    Path(args.json).write_text(json.dumps(figures))
    return 0


def print_figures(figures: dict) -> None:
    convert, train = figures["convert"], figures["train"]
    source = figures["source_bytes"]
    print(f"\n{figures['num_images']} photos of 4032 px (JPEG q{PHOTO_QUALITY}), {source / 2 ** 20:.1f} MiB as files")
    print(f"{'stored set':<26}{'convert img/s':>14}{'on disk MiB':>12}{'smaller':>9}{'train img/s':>13}"
          f"{'vs originals':>13}{'vs full decode':>15}{'CPU ms/img':>11}{'peak RSS MB':>12}")
    base = train["originals"]["images_per_s"]
    full = train["originals_full_decode"]["images_per_s"]
    rows = [(name, convert[name], train[name]) for name in SETS]
    rows.append(("originals, full decode", convert["originals"], train["originals_full_decode"]))
    rows.append(("YOLOv5 loader's work", convert["originals"], train["yolov5_loader"]))
    for name, conv, tr in rows:
        print(f"{name:<26}{conv['images_per_s']:>14.1f}{conv['disk_bytes'] / 2 ** 20:>12.1f}"
              f"{convert['originals']['disk_bytes'] / conv['disk_bytes']:>8.1f}x{tr['images_per_s']:>13.1f}"
              f"{tr['images_per_s'] / base:>12.1f}x{tr['images_per_s'] / full:>14.1f}x{tr['cpu_ms_per_image']:>11.1f}"
              f"{tr['peak_rss_mb']:>12.0f}")
    decode = figures["decode_originals"]
    print(f"{'decode-only of originals':<26}{'':>14}{'':>12}{'':>9}{decode['images_per_s']:>13.1f}"
          f"{decode['images_per_s'] / base:>12.1f}x{decode['images_per_s'] / full:>14.1f}x"
          f"{decode['cpu_ms_per_image']:>11.1f}{decode['peak_rss_mb']:>12.0f}")
    fastest = train["max_side_640"]
    print(f"--max_side 640: {fastest['images_per_s'] / base:.1f}x the images/s of the originals stored as they are "
          f"(this pipeline decodes them at 1/2 size; CPU per image "
          f"{train['originals']['cpu_ms_per_image'] / fastest['cpu_ms_per_image']:.1f}x less), "
          f"{fastest['images_per_s'] / full:.1f}x the originals decoded at full size, once per image, "
          f"(CPU {train['originals_full_decode']['cpu_ms_per_image'] / fastest['cpu_ms_per_image']:.1f}x less), "
          f"{fastest['images_per_s'] / train['yolov5_loader']['images_per_s']:.1f}x the work YOLOv5's loader does per image "
          f"(4 full decodes per mosaic); "
          f"{convert['originals']['disk_bytes'] / convert['max_side_640']['disk_bytes']:.1f}x smaller on disk")
    print("JPEG reduced decoding, mean absolute difference in gray levels of the picture resized to the target:")
    print(f"  {'stored set':<15}{'target':>7}{'decode':>7}{'pipeline':>9}{'reduced vs full':>17}"
          f"{'bilinear vs area':>18}{'reduced vs area':>17}")
    for effect in figures["reduced_decode"]:
        print(f"  {effect['set']:<15}{effect['target']:>7}{'1/' + str(effect['reduce']):>7}"
              f"{'uses' if effect['used_by_pipeline'] else 'not':>9}{effect['reduced_vs_full']:>17.2f}"
              f"{effect['linear_vs_area']:>18.2f}{effect['reduced_vs_area']:>17.2f}")
    sys.stdout.flush()


def print_evaluation(evaluation: dict, testing_shape: int) -> None:
    for key, differences, which in (
            ("numbers", "max_difference_to_coco128", "all 128 pictures"),
            ("numbers_same_geometry", "max_difference_same_geometry",
             f"the {evaluation['same_geometry_images']} pictures stored at coco128's own size")):
        print(f"evaluation at {testing_shape}, {which}: the 12 COCO numbers, and the largest difference to coco128's")
        for name, (description, _) in EVAL_SETS.items():
            numbers = " ".join(f"{v:.4f}" for v in evaluation[key][name])
            print(f"  {description:<50} {numbers}   {evaluation[differences][name]:.4f}")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--workdir", type=Path, default=Path(tempfile.gettempdir()) / "large_photos",
                        help="where the photos are made once and the converted sets written")
    parser.add_argument("--num_images", type=int, default=48, help="photos for the conversion and pipeline figures")
    parser.add_argument("--pretrained", type=Path, default=None, help="80-class checkpoint for the evaluation check")
    parser.add_argument("--testing_shape", type=int, default=320)
    parser.add_argument("--rounds", type=int, default=2, help="rounds of the pipeline measurements; medians shown")
    parser.add_argument("--skip_pipelines", action="store_true",
                        help="only the conversions and (with --pretrained) the evaluation")
    parser.add_argument("--json", type=Path, default=None)
    parser.add_argument("--child", choices=("train", *CHILD_MEASURES), help=argparse.SUPPRESS)
    parser.add_argument("--child_folder", help=argparse.SUPPRESS)
    parser.add_argument("--child_epochs", type=int, default=8, help=argparse.SUPPRESS)
    parser.add_argument("--full_decode", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        return child_main(args)
    if not COCO128.is_dir():
        raise SystemExit(f"{COCO128} not found (set YOLO_REAL_DATA)")
    if args.rounds < 1:
        parser.error("--rounds must be at least 1")
    cv2.setNumThreads(1)
    image_dir, all_photos = build_photo_set(args.workdir)
    ann_file = subset_json(all_photos, args.num_images, args.workdir / f"photos_{args.num_images}.json")
    figures = {"num_images": args.num_images, "source_bytes": image_bytes(image_dir, ann_file),
               "testing_shape": args.testing_shape, "convert": convert_sets(image_dir, ann_file, args.workdir)}
    folders = {name: entry["folder"] for name, entry in figures["convert"].items()}
    if not args.skip_pipelines:
        figures["train"], figures["decode_originals"] = measure_pipelines(folders, args.rounds)
        figures["reduced_decode"] = [dict(reduced_decode_effect(folders[name], target, reduce), set=name)
                                     for name, target, reduce in REDUCED_CASES]
        print_figures(figures)
    if args.pretrained is not None:
        figures["evaluation"] = compare_evaluation(args.pretrained, image_dir, all_photos, args.workdir,
                                                   args.testing_shape)
        print_evaluation(figures["evaluation"], args.testing_shape)
    if args.json:
        args.json.write_text(json.dumps(figures, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
