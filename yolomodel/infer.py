"""Detection on image files: find the images, letterbox, run the network, NMS, map back, draw, report.

Each image is decoded as OpenCV shows it (``cv2.IMREAD_COLOR``: EXIF orientation applied, grayscale,
CMYK and alpha pictures made 3-channel BGR; ``yolodata.image_io``), letterboxed into the square
``testing_shape`` exactly as the eval pipeline does it (``scaleup=False``: smaller images are not
enlarged; gray 114 padding, centred), converted to RGB and run through ``InferenceNet`` with batch 1.
``yolomodel.nms`` keeps the detections in input pixels; ``to_original_pixels`` maps them back with the
exact inverse of the letterbox, ``(xyxy - pad) / scale``, clipped to the image.

Inputs: files are taken as given (any extension); folders are searched recursively, in sorted order,
for ``IMAGE_SUFFIXES`` (case-insensitive), skipping hidden files and folders (names starting with a
dot). A path that does not exist, a folder without images, an empty, truncated or undecodable file
is reported with its reason and the others are still processed.

Outputs in ``output_dir``: one drawn JPEG per image (``output_names``: the image's path relative to the
folder it was found in, or its file name, with the suffix ``.jpg``; names that would collide get the
original suffix and then a counter) and ``detections.json`` (``detections_document``).
"""
from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path, PurePosixPath
from typing import Callable, Sequence

import cv2
import numpy as np

from yolodata import image_io
from yolodata.augment.letterbox import letterbox, to_original_pixels
from yolodata.augment.color import bgr_to_rgb
from yolodata.checks import check_multiple_of
from yolodata.fileio import write_file_atomic
from yolodata.manifest import ManifestError, read_manifest
from yolodata.visualize import class_colour, text_colour_on

from .nms import DEFAULT_MAX_DET, NmsOptions, check_nms_arguments

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff")
OUTPUT_SUFFIX = ".jpg"
DETECTIONS_NAME = "detections.json"
JPEG_QUALITY = 95
# Boxes drawn for people: confident detections only, and overlapping ones merged harder than for COCO
# scoring (``yolomodel.nms.EVAL_CONF_THRESH``); YOLOv5's detect.py uses the same two values.
DISPLAY_CONF_THRESH = 0.25
DISPLAY_NMS_THRESH = 0.45
BBOX_DECIMALS = 2
SCORE_DECIMALS = 5


class InferenceError(ValueError):
    """A mistake in the user's request (names file, manifest, output folder); the message says the fix."""


@dataclasses.dataclass(frozen=True)
class ImageSource:
    """One image file to process: where it is, and its path relative to the argument it came from."""

    path: Path
    relative: PurePosixPath


@dataclasses.dataclass(frozen=True)
class Failure:
    """An input that could not be processed, with the reason in words."""

    file: str
    reason: str


# ---------------------------------------------------------------------------------------------
# Finding the images
# ---------------------------------------------------------------------------------------------

def is_image_name(name: str) -> bool:
    """Whether a file found in a folder is taken as an image: a known suffix and not hidden."""
    return not name.startswith(".") and os.path.splitext(name)[1].lower() in IMAGE_SUFFIXES


def images_in_folder(folder: Path) -> tuple[list[ImageSource], list[Failure]]:
    """The image files under ``folder`` (recursive, sorted, hidden names skipped) and unreadable subfolders."""
    found, failures = [], []

    def report(error: OSError) -> None:
        failures.append(Failure(str(error.filename or folder), f"cannot list this folder: {error.strerror or error}"))

    for root, dirs, files in os.walk(folder, onerror=report):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        for name in sorted(files):
            if is_image_name(name):
                path = Path(root) / name
                found.append(ImageSource(path, PurePosixPath(path.relative_to(folder).as_posix())))
    return found, failures


def find_images(paths: Sequence) -> tuple[list[ImageSource], list[Failure]]:
    """(images to process in argument order, inputs that cannot be used) for files and folders.

    A file is used as given whatever its suffix; a folder contributes its images recursively. The same
    file reached twice (given twice, or as a file and inside a folder) is processed once.
    """
    sources, failures, seen = [], [], set()
    for given in paths:
        path = Path(given)
        if path.is_dir():
            found, problems = images_in_folder(path)
            failures.extend(problems)
            if not found and not problems:
                failures.append(Failure(str(path), f"no image files ({', '.join(IMAGE_SUFFIXES)}) in this folder "
                                                   f"or its subfolders"))
        elif path.exists():
            found = [ImageSource(path, PurePosixPath(path.name))]
        else:
            failures.append(Failure(str(path), "does not exist"))
            continue
        for source in found:
            key = os.path.realpath(source.path)
            if key not in seen:
                seen.add(key)
                sources.append(source)
    return sources, failures


def output_names(relatives: Sequence[PurePosixPath]) -> list[str]:
    """Collision-free output file names (POSIX relative paths ending in .jpg), one per input, in order.

    ``a/x.png`` -> ``a/x.jpg``; inputs whose names would collide keep their suffix (``x_png.jpg``), and
    any name still taken gets a counter (``x_2.jpg``), in input order.
    """
    relatives = [PurePosixPath(r) for r in relatives]
    plain = [str(r.with_suffix(OUTPUT_SUFFIX)) if r.suffix else str(r) + OUTPUT_SUFFIX for r in relatives]
    counts = {}
    for name in plain:
        counts[name] = counts.get(name, 0) + 1
    names, taken = [], set()
    for relative, name in zip(relatives, plain):
        if counts[name] > 1 and relative.suffix:
            name = str(relative.with_name(f"{relative.stem}_{relative.suffix[1:].lower()}{OUTPUT_SUFFIX}"))
        candidate, number = name, 1
        while candidate in taken:
            number += 1
            candidate = name[:-len(OUTPUT_SUFFIX)] + f"_{number}{OUTPUT_SUFFIX}"
        taken.add(candidate)
        names.append(candidate)
    return names


# ---------------------------------------------------------------------------------------------
# Class names
# ---------------------------------------------------------------------------------------------

def read_names_file(path) -> list[str]:
    """Class names from a text file, one per line in class-index order (blank lines ignored)."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as error:
        raise InferenceError(f"--names {path} cannot be read: {error}") from error
    names = [line.strip() for line in text.splitlines() if line.strip()]
    if not names:
        raise InferenceError(f"--names {path} holds no class names; write one name per line")
    return names


def class_names_from(*, names_file=None, mindrecord=None) -> tuple[list | None, list | None, str | None]:
    """(class names, category ids, where they came from) of ``--names`` or ``--mindrecord``; Nones when neither.

    A names file gives names only; a converter output folder gives both, from its manifest.
    """
    if names_file is not None:
        return read_names_file(names_file), None, f"--names {names_file}"
    if mindrecord is not None:
        try:
            manifest = read_manifest(mindrecord)
        except ManifestError as error:
            raise InferenceError(f"--mindrecord: {error}") from error
        return manifest.class_names, manifest.category_ids.tolist(), f"--mindrecord {mindrecord}"
    return None, None, None


def check_class_count(class_names, num_classes: int, source: str) -> None:
    """InferenceError when ``source`` names another number of classes than the network has."""
    if class_names is not None and len(class_names) != int(num_classes):
        raise InferenceError(f"{source} names {len(class_names)} classes but the network has {num_classes}; "
                             f"give the names of the classes the checkpoint was trained on")


# ---------------------------------------------------------------------------------------------
# One image: read, prepare, map back
# ---------------------------------------------------------------------------------------------

def read_image(path) -> np.ndarray:
    """BGR uint8 (H, W, 3) of an image file; ``image_io.ImageProblem`` with the reason otherwise.

    Empty files and truncated JPEG/PNG files are refused (OpenCV would decode a truncated JPEG into a
    partly gray picture without complaint).
    """
    try:
        data = Path(path).read_bytes()
    except OSError as error:
        raise image_io.ImageProblem("unreadable", f"cannot read the file: {error.strerror or error}") from error
    image_io.check_complete(data)
    try:
        return image_io.decode_stored(data)
    except ValueError as error:
        raise image_io.ImageProblem("undecodable", f"not an image OpenCV can decode ({image_io.sniff_format(data)} "
                                                   f"format, {len(data)} bytes)") from error


def letterbox_input(image_bgr: np.ndarray, testing_shape: int) -> tuple[np.ndarray, float, tuple[int, int]]:
    """(RGB uint8 (S, S, 3) network input, scale, (pad_x, pad_y)) as the eval pipeline makes it."""
    boxed, _, scale, pad = letterbox(image_bgr, np.zeros((0, 6), np.float32), (int(testing_shape),) * 2,
                                     scaleup=False)
    return bgr_to_rgb(boxed), scale, pad


def detection_records(detections: np.ndarray, class_names=None, category_ids=None) -> list[dict]:
    """JSON entries of one image's (M, 6) detections in original pixels, in their (score) order.

    Each: ``bbox`` [x1, y1, x2, y2] (pixel edges), ``score``, ``class_index``, ``class_name`` and
    ``category_id`` (None when unknown).
    """
    detections = np.asarray(detections, np.float32).reshape(-1, 6)
    boxes = np.round(detections[:, :4].astype(np.float64), BBOX_DECIMALS).tolist()
    scores = np.round(detections[:, 4].astype(np.float64), SCORE_DECIMALS).tolist()
    def lookup(table, index):
        return table[index] if table is not None and 0 <= index < len(table) else None

    records = []
    for box, score, class_index in zip(boxes, scores, detections[:, 5].astype(np.int64).tolist()):
        category_id = lookup(category_ids, class_index)
        records.append({"bbox": box, "score": score, "class_index": class_index,
                        "class_name": lookup(class_names, class_index),
                        "category_id": int(category_id) if category_id is not None else None})
    return records


# ---------------------------------------------------------------------------------------------
# Drawing
# ---------------------------------------------------------------------------------------------

def line_thickness(image_hw) -> int:
    """Outline width in pixels for an image: YOLOv5's round(0.002 * mean side) + 1."""
    return int(round(0.002 * (image_hw[0] + image_hw[1]) / 2)) + 1


def caption_of(class_index: int, score: float, class_names) -> str:
    """``name 0.87`` (``class 3 0.87`` when the name is unknown)."""
    index = int(class_index)
    name = class_names[index] if class_names and 0 <= index < len(class_names) else f"class {index}"
    return f"{name} {score:.2f}"


def draw_detections(image_bgr: np.ndarray, detections: np.ndarray, class_names=None) -> np.ndarray:
    """A new BGR image with every (M, 6) detection (original pixels) outlined in its class colour and
    captioned with class name and score; the best detections are drawn last, on top."""
    canvas = np.array(image_bgr, copy=True)
    height, width = canvas.shape[:2]
    thickness = line_thickness((height, width))
    font_scale = max(thickness / 3, 0.35)
    text_thickness = max(thickness - 1, 1)
    for x1, y1, x2, y2, score, class_index in np.asarray(detections, np.float32).reshape(-1, 6)[::-1]:
        colour_rgb = class_colour(int(class_index))
        colour_bgr = tuple(int(c) for c in colour_rgb[::-1])
        top_left = (int(round(float(x1))), int(round(float(y1))))
        bottom_right = (int(round(float(x2))), int(round(float(y2))))
        cv2.rectangle(canvas, top_left, bottom_right, colour_bgr, thickness, cv2.LINE_AA)
        text = caption_of(class_index, float(score), class_names)
        (text_w, text_h), baseline = cv2.getTextSize(text, cv2.FONT_HERSHEY_SIMPLEX, font_scale, text_thickness)
        plate_h = text_h + baseline + 2
        left = min(max(top_left[0], 0), max(width - text_w - 2, 0))
        # the caption plate sits above the box; inside it when the box touches the top edge
        top = top_left[1] - plate_h
        if top < 0:
            top = min(max(top_left[1], 0), max(height - plate_h, 0))
        cv2.rectangle(canvas, (left, top), (left + text_w + 2, top + plate_h), colour_bgr, -1)
        text_bgr = tuple(int(c) for c in text_colour_on(colour_rgb)[::-1])
        cv2.putText(canvas, text, (left + 1, top + text_h + 1), cv2.FONT_HERSHEY_SIMPLEX, font_scale, text_bgr,
                    text_thickness, cv2.LINE_AA)
    return canvas


# ---------------------------------------------------------------------------------------------
# The detector and the run over many images
# ---------------------------------------------------------------------------------------------

def check_detection_settings(testing_shape, conf_thresh, nms_thresh, max_det) -> None:
    """InferenceError naming the setting to fix when one is out of range."""
    try:
        check_multiple_of("--testing_shape", testing_shape)
    except ValueError as error:
        raise InferenceError(str(error)) from None
    try:
        check_nms_arguments(conf_thresh, nms_thresh, max_det, 1)
    except ValueError as error:
        raise InferenceError(f"--{error}") from error


class Detector:
    """Image in, detections in its own pixels out: letterbox, ``predict``, NMS, map back.

    ``predict`` takes uint8 (1, S, S, 3) RGB and returns decoded float32 (1, N, 5 + C) predictions
    (``yolomodel.checkpoint.loading.network_predictor``); a parameter so that the geometry can be checked without a
    network.
    """

    def __init__(self, predict, testing_shape: int, *, conf_thresh: float = DISPLAY_CONF_THRESH,
                 nms_thresh: float = DISPLAY_NMS_THRESH, max_det: int = DEFAULT_MAX_DET):
        check_detection_settings(testing_shape, conf_thresh, nms_thresh, max_det)
        self.predict = predict
        self.testing_shape = int(testing_shape)
        self.nms = NmsOptions(conf_thresh=float(conf_thresh), nms_thresh=float(nms_thresh), max_det=int(max_det))

    def __call__(self, image_bgr: np.ndarray) -> np.ndarray:
        """float32 (M, 6) x1, y1, x2, y2 (original pixels), score, class; best first."""
        network_input, scale, pad = letterbox_input(image_bgr, self.testing_shape)
        # (S, S, 3) -> (1, S, S, 3)
        predictions = self.predict(network_input[None])
        kept = self.nms.apply(predictions)[0]
        return to_original_pixels(kept, scale, pad, image_bgr.shape[:2])


def encode_jpeg(image_bgr: np.ndarray) -> bytes:
    ok, buffer = cv2.imencode(OUTPUT_SUFFIX, image_bgr, [cv2.IMWRITE_JPEG_QUALITY, JPEG_QUALITY])
    if not ok:
        raise RuntimeError("OpenCV could not encode the drawn image as JPEG")
    return buffer.tobytes()


def prepare_output_dir(output_dir) -> None:
    """Create ``output_dir`` (and its parents); InferenceError when it is a file or cannot be created."""
    output_dir = Path(output_dir)
    if output_dir.exists() and not output_dir.is_dir():
        raise InferenceError(f"--output_dir {output_dir} is a file; name a folder")
    try:
        output_dir.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise InferenceError(f"cannot create --output_dir {output_dir}: {error.strerror or error}") from error


def check_outputs_spare_inputs(sources: Sequence[ImageSource], names: Sequence[str], output_dir: Path) -> None:
    """InferenceError when writing a drawn image would overwrite one of the input images."""
    inputs = {os.path.realpath(source.path) for source in sources}
    for source, name in zip(sources, names):
        target = os.path.realpath(output_dir / name)
        if target in inputs:
            raise InferenceError(f"writing {output_dir / name} would overwrite the input image {target}; "
                                 f"choose another --output_dir")


@dataclasses.dataclass
class InferenceReport:
    """The result of ``run_inference``: one entry per processed image, and the failures."""

    images: list
    failures: list

    @property
    def num_detections(self) -> int:
        return sum(len(entry["detections"]) for entry in self.images)


def run_inference(sources: Sequence[ImageSource], detector: Detector, output_dir, *, class_names=None,
                  category_ids=None, on_failure: Callable[[Failure], None] = lambda failure: None,
                  progress: Callable[[], None] = lambda: None) -> InferenceReport:
    """Detect, draw and write every image of ``sources`` into ``output_dir``; unreadable ones are reported.

    Returns the per-image entries of ``detections.json`` (file, output, width, height, detections) and the
    images that could not be read. ``on_failure`` is called as each failure happens, ``progress`` after
    each image.
    """
    output_dir = Path(output_dir)
    names = output_names([source.relative for source in sources])
    check_outputs_spare_inputs(sources, names, output_dir)
    images, failures = [], []
    for source, name in zip(sources, names):
        try:
            image = read_image(source.path)
        except image_io.ImageProblem as problem:
            failures.append(Failure(str(source.path), str(problem)))
            on_failure(failures[-1])
            progress()
            continue
        detections = detector(image)
        try:
            write_file_atomic(output_dir / name, encode_jpeg(draw_detections(image, detections, class_names)))
        except OSError as error:
            raise InferenceError(f"cannot write {output_dir / name}: {error.strerror or error}") from error
        images.append({"file": str(source.path), "output": name, "width": int(image.shape[1]),
                       "height": int(image.shape[0]),
                       "detections": detection_records(detections, class_names, category_ids)})
        progress()
    return InferenceReport(images, failures)


def detections_document(report: InferenceReport, *, model: dict, settings: dict, class_names=None,
                        extra_failures: Sequence[Failure] = ()) -> dict:
    """The ``detections.json`` content: model and settings, class names, ``images`` and ``failed``."""
    return {
        "model": dict(model),
        "settings": dict(settings),
        "class_names": list(class_names) if class_names is not None else None,
        "images": report.images,
        "failed": [dataclasses.asdict(failure) for failure in list(extra_failures) + list(report.failures)],
    }


def format_document(document: dict) -> str:
    """JSON text of ``document`` for people and programs: one top-level key per line, and each entry of
    a list value (one image, one failure) on a line of its own."""
    parts = []
    for key, value in document.items():
        if isinstance(value, list) and value and all(isinstance(item, dict) for item in value):
            items = ",\n  ".join(json.dumps(item, ensure_ascii=False) for item in value)
            parts.append(f" {json.dumps(key)}: [\n  {items}\n ]")
        else:
            parts.append(f" {json.dumps(key)}: {json.dumps(value, ensure_ascii=False)}")
    return "{\n" + ",\n".join(parts) + "\n}\n"


def write_detections_json(document: dict, output_dir) -> Path:
    """Write ``document`` as ``output_dir/detections.json`` atomically; returns the path."""
    path = Path(output_dir) / DETECTIONS_NAME
    write_file_atomic(path, format_document(document).encode("utf-8"))
    return path
