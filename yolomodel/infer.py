"""Detection where users run it: pictures, videos, cameras and streams in; drawings, labels, crops, json out.

The orchestration of ``yolo-infer``. Its parts live in their own modules: where frames come from in
``yolomodel.sources`` (files, folders, globs, list files, videos, cameras, streams), what runs the
network in ``yolomodel.runtimes`` (checkpoint, ONNX, MINDIR: one callable), what is written in
``yolomodel.outputs`` (drawn images and videos, YOLO label files, crops). This module joins them:

Each picture or video frame is letterboxed into the square ``testing_shape`` exactly as the eval
pipeline does it (``scaleup=False``: smaller images are not enlarged; gray 114 padding, centred),
converted to RGB and run with batch 1; ``yolomodel.nms`` keeps the detections in input pixels;
``to_original_pixels`` maps them back with the exact inverse of the letterbox, ``(xyxy - pad) /
scale``, clipped to the image. ``--classes`` keeps the listed classes after NMS (NMS is class-aware,
so the other classes never suppressed them).

Pictures that cannot be read, videos, cameras and streams that do not open are reported with their
reason and the other sources are still processed. A Ctrl-C ends the run after the frame at hand: the
video being written is closed and kept, and the report says the run was interrupted.

Outputs in ``output_dir``: one drawn JPEG per picture (``output_names``: the path relative to the
folder or pattern it was found by, or its file name, with the suffix ``.jpg``; names that would
collide get the original suffix and then a counter), one drawn ``.mp4`` per video, camera or stream,
the files of ``yolomodel.outputs`` asked for, and ``detections.json`` (``detections_document``). A
video's frame records go to disk as they come (``yolomodel.frame_log``) and are streamed into the json
at the end, so memory does not grow with the length of a video or stream.
"""
from __future__ import annotations

import collections
import contextlib
import dataclasses
import json
import os
import signal
import threading
import time
from pathlib import Path, PurePosixPath
from typing import Iterator, Sequence

import numpy as np

from yolodata import image_io
from yolodata.augment.color import bgr_to_rgb
from yolodata.augment.letterbox import letterbox, to_original_pixels
from yolodata.checks import check_multiple_of
from yolodata.fileio import atomic_path, write_file_atomic
from yolodata.manifest import ManifestError, read_manifest

from .frame_log import FrameLog
from .nms import DEFAULT_MAX_DET, NmsOptions, check_nms_arguments
from .outputs import (IMAGE_OUTPUT_SUFFIX, VIDEO_OUTPUT_SUFFIX, VideoOutput, draw_detections, encode_jpeg,
                      label_name, write_crops, write_small_file, yolo_label_text)
from .sources import Failure, ImageSource, SourceError, VideoSource

DETECTIONS_NAME = "detections.json"
# Boxes drawn for people: confident detections only, and overlapping ones merged harder than for COCO
# scoring (``yolomodel.nms.EVAL_CONF_THRESH``); YOLOv5's detect.py uses the same two values.
DISPLAY_CONF_THRESH = 0.25
DISPLAY_NMS_THRESH = 0.45
BBOX_DECIMALS = 2
SCORE_DECIMALS = 5
STAGES = ("decode", "network", "nms", "drawing")


class InferenceError(ValueError):
    """A mistake in the user's request (names file, manifest, output folder); the message says the fix."""


def output_names(relatives: Sequence[PurePosixPath], suffixes: Sequence[str] | None = None) -> list[str]:
    """Collision-free output file names (POSIX relative paths), one per input, in order.

    ``suffixes``: the output suffix of each input (default ``.jpg`` for all; ``.mp4`` for videos).
    ``a/x.png`` -> ``a/x.jpg``; inputs whose names would collide keep their suffix (``x_png.jpg``), and
    any name still taken gets a counter (``x_2.jpg``), in input order.
    """
    relatives = [PurePosixPath(r) for r in relatives]
    suffixes = list(suffixes) if suffixes is not None else [IMAGE_OUTPUT_SUFFIX] * len(relatives)
    plain = [str(r.with_suffix(s)) if r.suffix else str(r) + s for r, s in zip(relatives, suffixes)]
    counts = collections.Counter(plain)
    names, taken = [], set()
    for relative, name, suffix in zip(relatives, plain, suffixes):
        if counts[name] > 1 and relative.suffix:
            name = str(relative.with_name(f"{relative.stem}_{relative.suffix[1:].lower()}{suffix}"))
        candidate, number = name, 1
        while candidate in taken:
            number += 1
            candidate = name[:-len(suffix)] + f"_{number}{suffix}"
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
# The detector
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
    (a ``yolomodel.runtimes`` runtime: checkpoint, ONNX or MINDIR); a parameter so that the geometry can
    be checked without a network.
    """

    def __init__(self, predict, testing_shape: int, *, conf_thresh: float = DISPLAY_CONF_THRESH,
                 nms_thresh: float = DISPLAY_NMS_THRESH, max_det: int = DEFAULT_MAX_DET):
        check_detection_settings(testing_shape, conf_thresh, nms_thresh, max_det)
        self.predict = predict
        self.testing_shape = int(testing_shape)
        self.nms = NmsOptions(conf_thresh=float(conf_thresh), nms_thresh=float(nms_thresh), max_det=int(max_det))

    def __call__(self, image_bgr: np.ndarray, times: "StageTimes | None" = None) -> np.ndarray:
        """float32 (M, 6) x1, y1, x2, y2 (original pixels), score, class; best first.

        ``times``: where the seconds of the network (letterbox included) and of NMS are added.
        """
        times = times if times is not None else StageTimes()
        with times.measure("network"):
            network_input, scale, pad = letterbox_input(image_bgr, self.testing_shape)
            # (S, S, 3) -> (1, S, S, 3)
            predictions = self.predict(network_input[None])
        with times.measure("nms"):
            kept = self.nms.apply(predictions)[0]
            return to_original_pixels(kept, scale, pad, image_bgr.shape[:2])


# ---------------------------------------------------------------------------------------------
# The run over many sources
# ---------------------------------------------------------------------------------------------

class StageTimes:
    """Seconds spent per stage (decode, network, nms, drawing) over a run; ``measure(stage)`` adds to one."""

    def __init__(self):
        self.seconds = {stage: 0.0 for stage in STAGES}

    @contextlib.contextmanager
    def measure(self, stage: str):
        started = time.perf_counter()
        try:
            yield
        finally:
            self.seconds[stage] += time.perf_counter() - started

    def shares(self) -> dict:
        """Each stage's fraction of the measured total."""
        total = sum(self.seconds.values()) or 1.0
        return {stage: seconds / total for stage, seconds in self.seconds.items()}


class InterruptsHeld:
    """Inside the block a Ctrl-C (SIGINT) or SIGTERM is held and raised as KeyboardInterrupt when it ends.

    Used around writing one frame's outputs and recording it, so an interrupted run never keeps a
    video frame without its entry in the json or the other way round. Outside the main thread (where
    Python cannot install handlers) it does nothing.
    """

    SIGNALS = (signal.SIGINT, signal.SIGTERM)

    def __enter__(self):
        self.pending = None
        self.saved = None
        if threading.current_thread() is threading.main_thread():
            self.saved = {number: signal.getsignal(number) for number in self.SIGNALS}
            for number in self.SIGNALS:
                signal.signal(number, self.hold)
        return self

    def hold(self, number, frame) -> None:
        self.pending = number

    def __exit__(self, kind, value, traceback):
        if self.saved is not None:
            for number, handler in self.saved.items():
                # None: a handler installed outside Python (MindSpore's); Python's own takes its place
                signal.signal(number, handler if handler is not None else signal.default_int_handler)
        if self.pending is not None and kind is None:
            raise KeyboardInterrupt
        return False


@dataclasses.dataclass(frozen=True)
class OutputOptions:
    """What to write besides ``detections.json``, and how detections are drawn."""

    save_drawn: bool = True          # drawn pictures and videos
    save_txt: bool = False           # YOLO label files
    save_conf: bool = False          # the score as a sixth column of the label files
    save_crop: bool = False          # one picture per detection, by class
    save_json: bool = True
    classes: tuple | None = None     # class indices kept (None: all)
    hide_labels: bool = False
    hide_conf: bool = False
    line_thickness: int | None = None


class Progress:
    """What the run reports as it goes: frames done, frames to come when a video opens, failures."""

    def add_total(self, num_frames: int | None) -> None:
        """``num_frames`` more frames are expected (None: a stream, no end known)."""

    def update(self, num_frames: int = 1) -> None:
        """``num_frames`` frames were processed."""

    def failure(self, failure: Failure) -> None:
        """A source could not be used (or, for a video, frames could not be decoded)."""


@dataclasses.dataclass
class InferenceReport:
    """The result of ``run_inference``: per-picture and per-video entries, failures, counts, times."""

    images: list
    failures: list
    videos: list = dataclasses.field(default_factory=list)
    unopened: list = dataclasses.field(default_factory=list)   # videos, cameras, streams that did not open
    class_counts: collections.Counter = dataclasses.field(default_factory=collections.Counter)
    num_frames: int = 0
    interrupted: bool = False
    times: StageTimes = dataclasses.field(default_factory=StageTimes)

    @property
    def num_detections(self) -> int:
        return sum(self.class_counts.values())


class FrameWriter:
    """Writes what ``OutputOptions`` asks for, one picture or video frame at a time."""

    def __init__(self, output_dir: Path, options: OutputOptions, class_names=None, category_ids=None):
        self.output_dir = Path(output_dir)
        self.options = options
        self.class_names = class_names
        self.category_ids = category_ids

    def drawn(self, image: np.ndarray, detections: np.ndarray) -> np.ndarray:
        return draw_detections(image, detections, self.class_names, thickness=self.options.line_thickness,
                               hide_labels=self.options.hide_labels, hide_conf=self.options.hide_conf)

    def extras(self, name: str, image: np.ndarray, detections: np.ndarray, frame=None) -> None:
        """Label file and crops of one picture or frame (``frame`` None for a picture)."""
        if self.options.save_txt:
            text = yolo_label_text(detections, image.shape[:2], save_conf=self.options.save_conf)
            write_small_file(self.output_dir / label_name(name, frame), text.encode("ascii"))
        if self.options.save_crop:
            write_crops(self.output_dir, name, image, detections, self.class_names, frame)

    def picture(self, name: str, image: np.ndarray, detections: np.ndarray) -> None:
        try:
            if self.options.save_drawn:
                write_file_atomic(self.output_dir / name, encode_jpeg(self.drawn(image, detections)))
            self.extras(name, image, detections)
        except OSError as error:
            raise InferenceError(f"cannot write into {self.output_dir} for {name}: "
                                 f"{error.strerror or error}") from error

    def records(self, detections: np.ndarray) -> list[dict]:
        return detection_records(detections, self.class_names, self.category_ids)


def keep_classes(detections: np.ndarray, classes) -> np.ndarray:
    """The rows of (M, 6) ``detections`` whose class is in ``classes`` (all when None)."""
    if classes is None:
        return detections
    return detections[np.isin(detections[:, 5].astype(np.int64), np.asarray(classes, np.int64))]


def detect_frame(detector, image: np.ndarray, options: OutputOptions, times: StageTimes) -> np.ndarray:
    """The kept (M, 6) detections of one picture, timed by stage."""
    return keep_classes(detector(image, times), options.classes)


def process_picture(source: ImageSource, name: str, detector, writer: FrameWriter, report: InferenceReport,
                    progress: Progress) -> None:
    """Read, detect, write one picture; a picture that cannot be read becomes a failure."""
    times = report.times
    try:
        with times.measure("decode"):
            image = source.read()
    except image_io.ImageProblem as problem:
        report.failures.append(Failure(str(source.path), str(problem)))
        progress.failure(report.failures[-1])
        progress.update()
        return
    detections = detect_frame(detector, image, writer.options, times)
    with times.measure("drawing"), InterruptsHeld():
        writer.picture(name, image, detections)
        report.class_counts.update(detections[:, 5].astype(np.int64).tolist())
        report.num_frames += 1
        report.images.append({"file": str(source.path), "output": name if writer.options.save_drawn else None,
                              "width": int(image.shape[1]), "height": int(image.shape[0]),
                              "detections": writer.records(detections)})
    progress.update()


def video_entry(source: VideoSource, reader, name: str, stride: int, frames: FrameLog | None) -> dict:
    """The json entry of one video; ``frames`` (last, when the json is saved) logs its frame records on disk."""
    entry = {"file": source.name, "kind": source.kind, "output": name, "fps": reader.fps,
             "width": reader.width, "height": reader.height, "frames_in_file": reader.num_frames,
             "vid_stride": stride, "frames_processed": 0, "frames_corrupt": 0, "interrupted": False}
    if frames is not None:
        entry["frames"] = frames
    return entry


def process_video(source: VideoSource, name: str, detector, writer: FrameWriter, report: InferenceReport,
                  progress: Progress, stride: int) -> None:
    """Every ``stride``-th frame of a video, camera or stream: detect, draw into the output video, extras.

    The output video is closed (and keeps its frames) however the loop ends, Ctrl-C included; the
    KeyboardInterrupt is passed on after the entry is recorded.
    """
    times = report.times
    try:
        reader = source.open()
    except SourceError as error:
        report.unopened.append(Failure(source.name, str(error)))
        report.failures.append(report.unopened[-1])
        progress.failure(report.failures[-1])
        return
    frames = FrameLog(writer.output_dir, name) if writer.options.save_json else None
    entry = video_entry(source, reader, name, stride, frames)
    report.videos.append(entry)
    progress.add_total(None if reader.num_frames is None else -(-reader.num_frames // stride))
    video = VideoOutput(writer.output_dir / name, reader.fps / stride) if writer.options.save_drawn else None
    decoded = reader.frames(stride)
    try:
        while True:
            with times.measure("decode"):
                item = next(decoded, None)
            if item is None:
                break
            index, image = item
            detections = detect_frame(detector, image, writer.options, times)
            with times.measure("drawing"), InterruptsHeld():  # the frame's outputs and its record go together
                if video is not None:
                    video.write(writer.drawn(image, detections))
                writer.extras(name, image, detections, frame=index)
                report.class_counts.update(detections[:, 5].astype(np.int64).tolist())
                report.num_frames += 1
                entry["frames_processed"] += 1
                if frames is not None:
                    frames.append({"frame": index, "detections": writer.records(detections)})
            progress.update()
    except KeyboardInterrupt:
        entry["interrupted"] = True
        raise
    except OSError as error:
        raise InferenceError(f"cannot write into {writer.output_dir} for {name}: {error.strerror or error}") from error
    finally:
        reader.close()
        if frames is not None:
            frames.close()
        entry["frames_corrupt"] = reader.num_corrupt
        written = video.close() if video is not None else None
        entry["output"] = name if written is not None else None
        if reader.num_corrupt:
            progress.failure(Failure(source.name, f"{reader.num_corrupt} frame(s) could not be decoded and were "
                                                  f"skipped; the other frames were processed"))


def source_output_names(sources: Sequence) -> list[str]:
    """The output name of every source: ``.jpg`` for pictures, ``.mp4`` for videos, cameras and streams."""
    return output_names([source.relative for source in sources],
                        [IMAGE_OUTPUT_SUFFIX if isinstance(source, ImageSource) else VIDEO_OUTPUT_SUFFIX
                         for source in sources])


def run_inference(sources: Sequence, detector, output_dir, *, options: OutputOptions = OutputOptions(),
                  class_names=None, category_ids=None, progress: Progress = Progress(),
                  vid_stride: int = 1) -> InferenceReport:
    """Detect in every source (``yolomodel.sources``) and write what ``options`` asks into ``output_dir``.

    Pictures that cannot be read and videos that do not open are reported (``progress.failure``) and
    skipped. A Ctrl-C stops the run after the current frame; the report then has ``interrupted``.
    """
    output_dir = Path(output_dir)
    names = source_output_names(sources)
    check_outputs_spare_inputs(sources, names, output_dir)
    writer = FrameWriter(output_dir, options, class_names, category_ids)
    report = InferenceReport(images=[], failures=[])
    try:
        for source, name in zip(sources, names):
            if isinstance(source, ImageSource):
                process_picture(source, name, detector, writer, report, progress)
            else:
                process_video(source, name, detector, writer, report, progress, int(vid_stride))
    except KeyboardInterrupt:
        report.interrupted = True
    return report


def check_outputs_spare_inputs(sources: Sequence, names: Sequence[str], output_dir: Path) -> None:
    """InferenceError when writing a drawn picture or video would overwrite one of the input files."""
    inputs = {os.path.realpath(source.path) for source in sources if isinstance(source, ImageSource)}
    inputs |= {os.path.realpath(source.target) for source in sources
               if isinstance(source, VideoSource) and source.kind == "video"}
    for name in names:
        target = os.path.realpath(output_dir / name)
        if target in inputs:
            raise InferenceError(f"writing {output_dir / name} would overwrite the input {target}; "
                                 f"choose another --output_dir")


def prepare_output_dir(output_dir) -> None:
    """Create ``output_dir`` (and its parents); InferenceError when it is a file or cannot be created."""
    output_dir = Path(output_dir)
    if output_dir.exists() and not output_dir.is_dir():
        raise InferenceError(f"--output_dir {output_dir} is a file; name a folder")
    try:
        output_dir.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise InferenceError(f"cannot create --output_dir {output_dir}: {error.strerror or error}") from error


def class_count_summary(counts, class_names=None) -> str:
    """``person 12, car 3`` most frequent first (``class 7`` when a name is unknown); ``none`` when empty."""
    def name(index):
        return class_names[index] if class_names and 0 <= index < len(class_names) else f"class {index}"

    parts = [f"{name(index)} {count}" for index, count in sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))]
    return ", ".join(parts) if parts else "none"


def detections_document(report: InferenceReport, *, model: dict, settings: dict, class_names=None,
                        extra_failures: Sequence[Failure] = ()) -> dict:
    """The ``detections.json`` content: model and settings, class names, ``images``, ``videos``, ``failed``."""
    document = {
        "model": dict(model),
        "settings": dict(settings),
        "class_names": list(class_names) if class_names is not None else None,
        "images": report.images,
        "failed": [dataclasses.asdict(failure) for failure in list(extra_failures) + list(report.failures)],
    }
    if report.videos:
        document["videos"] = report.videos
    if report.interrupted:
        document["interrupted"] = True
    return document


def document_chunks(document: dict) -> Iterator[str]:
    """JSON text of ``document``, piece by piece, for people and programs: one top-level key per line,
    each entry of a list value (one image, one video, one failure) on a line of its own, and a video's
    frames one a line, copied from its ``FrameLog`` so that a long video is never whole in memory."""
    yield "{\n"
    for number, (key, value) in enumerate(document.items()):
        yield ",\n" if number else ""
        if isinstance(value, list) and value and all(isinstance(item, dict) for item in value):
            yield f" {json.dumps(key)}: [\n"
            for position, item in enumerate(value):
                yield ",\n" if position else ""
                yield from entry_chunks(item)
            yield "\n ]"
        else:
            yield f" {json.dumps(key)}: {json.dumps(value, ensure_ascii=False)}"
    yield "\n}\n"


def entry_chunks(entry: dict) -> Iterator[str]:
    """One list entry's JSON text; a video's ``frames`` (its last key) streamed from the log, a frame a line."""
    frames = entry.get("frames")
    if not isinstance(frames, FrameLog):
        yield "  " + json.dumps(entry, ensure_ascii=False)
        return
    head = json.dumps({key: value for key, value in entry.items() if key != "frames"}, ensure_ascii=False)
    yield f'  {head[:-1]}, "frames": ['
    for position, line in enumerate(frames.lines()):
        yield ("," if position else "") + "\n   " + line
    yield "\n  ]}"


def write_detections_json(document: dict, output_dir) -> Path:
    """Write ``document`` as ``output_dir/detections.json`` atomically, streamed; returns the path.

    The videos' frame logs are copied in (one frame at a time: memory does not grow with the video)
    and, once the json is in place, removed: their records now live in the json. When writing fails
    the logs stay, so nothing is lost.
    """
    path = Path(output_dir) / DETECTIONS_NAME
    with atomic_path(path) as temporary, open(temporary, "x", encoding="utf-8") as stream:
        for chunk in document_chunks(document):
            stream.write(chunk)
        stream.flush()
        os.fsync(stream.fileno())
    for entry in document.get("videos", ()):
        if isinstance(entry.get("frames"), FrameLog):
            entry["frames"].discard()
    return path
