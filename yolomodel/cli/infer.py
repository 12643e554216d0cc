"""Detect objects in pictures, videos, cameras and streams with a checkpoint or an exported model.

    yolo-infer --pretrained MODEL --source SOURCE [SOURCE ...] --output_dir DIR \\
        [--testing_shape 640] [--conf_thresh 0.25] [--nms_thresh 0.45] [--max_det 300] [--classes N ...] \\
        [--vid_stride 1] [--nosave] [--save_txt [--save_conf]] [--save_crop] [--no-save_json] \\
        [--hide_labels] [--hide_conf] [--line_thickness PX] \\
        [--names FILE | --mindrecord DIR] [--yolov5_version V --num_classes N] [--device_target CPU]
    (or: python tools/infer.py ...; --images is another name for --source)

MODEL is a checkpoint (.ckpt; a YOLOv5 .pt is imported on the fly, nothing in it executed) or a file
yolo-export wrote: NAME.onnx (run by onnxruntime) or NAME.mindir (MindSpore's graph loader), each
with its sidecar NAME.onnx.json / NAME.mindir.json beside it (class names, model size, input side:
no flag repeats them). The pre- and post-processing are the same for the three.

SOURCE is any of:
  photo.jpg            a picture (any format OpenCV decodes)          clip.mp4   a video (.mp4 .avi .mov
  photos/              a folder: its pictures and videos, recursive     .mkv .webm ...: what FFmpeg opens)
  'photos/**/*.jpg'    a glob pattern (quote it)                        0          camera index 0
  list.txt             a text file, one path (or URL) per line          rtsp://... rtmp://... http(s)://...
Each picture is letterboxed into --testing_shape without enlarging small ones (as yolo-eval does), run
through the network, reduced by class-aware NMS and mapped back to its own pixels.

Writes into DIR:
  <name>.jpg / <name>.mp4   drawn pictures / videos (a video at its frame rate / --vid_stride, its size)
  labels/<name>.txt, labels/<name>_<frame>.txt   with --save_txt: "class cx cy w h [conf]" normalised
  crops/<class>/<name>[_<frame>]_<k>.jpg         with --save_crop: the pixels of each detection
  detections.json   {"model", "settings", "class_names", "images": [{"file", "output", "width", "height",
                    "detections": [{"bbox": [x1, y1, x2, y2], "score", "class_index", "class_name",
                    "category_id"}]}], "videos": [{"file", "kind", "output", "fps", "frames": [{"frame",
                    "detections"}], "frames_corrupt", ...}], "failed": [{"file", "reason"}]}
Class names come from --names or --mindrecord (which also gives COCO category ids), else from the
model (checkpoint or sidecar), else "class N". A stream runs until it ends or Ctrl-C; what was
written is kept, the video closed properly.

Pictures that cannot be read and frames that do not decode are named with the reason and skipped.
Exit codes: 0 done; 2 nothing processed, or a user error (message on stderr, no traceback); 3 a
video, camera or stream did not open (named with the backend's reason; the other sources were
processed); 1 anything unexpected; 130 interrupted (outputs so far kept).
"""
from __future__ import annotations

import argparse
import signal
import sys
import time
from pathlib import Path

from tqdm import tqdm

from yolomodel.cli import EXIT_INTERRUPTED, EXIT_OK, EXIT_USER_ERROR, report_user_error
from yolomodel.device import DEVICE_TARGETS, DeviceError, setup_device
from yolomodel.infer import (DISPLAY_CONF_THRESH, DISPLAY_NMS_THRESH, Detector, InferenceError, OutputOptions,
                             Progress, check_class_count, check_detection_settings, class_count_summary,
                             class_names_from, detections_document, prepare_output_dir, run_inference,
                             write_detections_json)
from yolomodel.checkpoint.loading import ModelLoadError
from yolomodel.nms import DEFAULT_MAX_DET
from yolomodel.runtimes import open_runtime
from yolomodel.sidecar import ExportedModelError
from yolomodel.sources import find_sources

EXIT_SOURCE_UNAVAILABLE = 3
DEFAULT_TESTING_SHAPE = 640


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--pretrained", type=Path, required=True,
                        help="model: .ckpt, YOLOv5 .pt, or a .onnx / .mindir written by yolo-export")
    parser.add_argument("--source", "--images", dest="source", nargs="+", required=True, metavar="SOURCE",
                        help="pictures, folders, glob patterns, list files, videos, camera indices, stream URLs")
    parser.add_argument("--output_dir", type=Path, required=True, help="where the outputs go")
    parser.add_argument("--testing_shape", type=int, default=None,
                        help=f"network input side, a multiple of 32 (default {DEFAULT_TESTING_SHAPE}; an exported "
                             f"model's own)")
    parser.add_argument("--conf_thresh", type=float, default=DISPLAY_CONF_THRESH,
                        help=f"minimum objectness * class score (default {DISPLAY_CONF_THRESH})")
    parser.add_argument("--nms_thresh", type=float, default=DISPLAY_NMS_THRESH,
                        help=f"IoU above which NMS suppresses (default {DISPLAY_NMS_THRESH})")
    parser.add_argument("--max_det", type=int, default=DEFAULT_MAX_DET,
                        help=f"detections kept per picture (default {DEFAULT_MAX_DET})")
    parser.add_argument("--classes", type=int, nargs="+", default=None, metavar="N",
                        help="keep only these class indices")
    parser.add_argument("--vid_stride", type=int, default=1, help="process every Nth video frame (default 1)")
    parser.add_argument("--nosave", action="store_true", help="do not write drawn pictures and videos")
    parser.add_argument("--save_txt", action="store_true", help="YOLO label files: class cx cy w h, normalised")
    parser.add_argument("--save_conf", action="store_true", help="with --save_txt: the score as a sixth column")
    parser.add_argument("--save_crop", action="store_true", help="one picture per detection, under crops/<class>/")
    parser.add_argument("--save_json", action=argparse.BooleanOptionalAction, default=True,
                        help="write detections.json (default yes)")
    parser.add_argument("--hide_labels", action="store_true", help="draw boxes without class names")
    parser.add_argument("--hide_conf", action="store_true", help="draw boxes without scores")
    parser.add_argument("--line_thickness", type=int, default=None, help="box outline in pixels (default: by size)")
    names = parser.add_mutually_exclusive_group()
    names.add_argument("--names", type=Path, default=None, help="text file of class names, one per line")
    names.add_argument("--mindrecord", type=Path, default=None,
                       help="converter output folder whose manifest.json gives class names and category ids")
    parser.add_argument("--yolov5_version", default=None, help="yolov5n/s/m/l/x (default: from the model)")
    parser.add_argument("--num_classes", type=int, default=None, help="class count (default: from the model)")
    parser.add_argument("--device_target", default="CPU", choices=DEVICE_TARGETS)
    return parser


class BarProgress(Progress):
    """The run's progress on a tqdm bar (frames and frames/s); failures written above it."""

    def __init__(self, bar):
        self.bar = bar
        self.endless = False

    def add_total(self, num_frames) -> None:
        if num_frames is None:
            self.endless = True
            self.bar.total = None
        elif not self.endless:
            self.bar.total = (self.bar.total or 0) + num_frames
        self.bar.refresh()

    def update(self, num_frames: int = 1) -> None:
        self.bar.update(num_frames)

    def failure(self, failure) -> None:
        tqdm.write(f"skipped {failure.file}: {failure.reason}", file=sys.stderr)


def check_flags(args) -> None:
    """InferenceError for flag values out of range, before anything slow happens."""
    if args.vid_stride < 1:
        raise InferenceError(f"--vid_stride must be 1 or more (every Nth frame), got {args.vid_stride}")
    if args.line_thickness is not None and args.line_thickness < 1:
        raise InferenceError(f"--line_thickness must be 1 or more pixels, got {args.line_thickness}")
    if args.classes is not None and min(args.classes) < 0:
        raise InferenceError(f"--classes takes class indices 0, 1, ...; got {min(args.classes)}")
    if args.save_conf and not args.save_txt:
        raise InferenceError("--save_conf adds the score to the label files: pass --save_txt too")
    check_detection_settings(args.testing_shape or DEFAULT_TESTING_SHAPE, args.conf_thresh, args.nms_thresh,
                             args.max_det)


def output_options(args) -> OutputOptions:
    return OutputOptions(save_drawn=not args.nosave, save_txt=args.save_txt, save_conf=args.save_conf,
                         save_crop=args.save_crop, save_json=args.save_json,
                         classes=tuple(args.classes) if args.classes else None, hide_labels=args.hide_labels,
                         hide_conf=args.hide_conf, line_thickness=args.line_thickness)


def print_summary(report, class_names, input_failures, args, seconds: float) -> None:
    failed = len(input_failures) + len(report.failures)
    videos = f", {len(report.videos)} video(s)/stream(s)" if report.videos else ""
    corrupt = sum(video["frames_corrupt"] for video in report.videos)
    print(f"{len(report.images)} picture(s){videos}, {report.num_frames} frame(s) processed in {seconds:.1f} s "
          f"({report.num_frames / max(seconds, 1e-9):.1f} frames/s), {report.num_detections} detection(s)"
          + (f"; {corrupt} corrupt frame(s) skipped" if corrupt else "")
          + (f"; {failed} input(s) could not be used (listed above and in the json)" if failed else "")
          + ("; interrupted" if report.interrupted else "") + "\n"
          f"per class: {class_count_summary(report.class_counts, class_names)}\n"
          f"outputs in {args.output_dir}", flush=True)


def run(args) -> int:
    started = time.perf_counter()
    check_flags(args)
    class_names, category_ids, names_source = class_names_from(names_file=args.names, mindrecord=args.mindrecord)
    sources, input_failures = find_sources(args.source)
    for failure in input_failures:
        print(f"skipped {failure.file}: {failure.reason}", file=sys.stderr)
    if not sources:
        raise InferenceError(f"nothing to process in {' '.join(map(str, args.source))}")
    prepare_output_dir(args.output_dir)

    setup_device(args.device_target)  # graph mode: one compile for the fixed input shape, then fast
    runtime = open_runtime(args.pretrained, version=args.yolov5_version, num_classes=args.num_classes,
                           testing_shape=args.testing_shape)
    if class_names is None and runtime.class_names is not None:
        class_names, names_source = list(runtime.class_names), f"the model {args.pretrained}"
    check_class_count(class_names, runtime.num_classes, names_source)
    testing_shape = args.testing_shape or runtime.testing_shape or DEFAULT_TESTING_SHAPE
    print(f"detecting with {runtime.describe()} at {testing_shape} on {len(sources)} source(s)", flush=True)

    detector = Detector(runtime, testing_shape, conf_thresh=args.conf_thresh, nms_thresh=args.nms_thresh,
                        max_det=args.max_det)
    options = output_options(args)
    num_pictures = sum(source.kind == "image" for source in sources)
    with tqdm(total=num_pictures, unit="frame", file=sys.stderr, disable=None, dynamic_ncols=True) as bar:
        report = run_inference(sources, detector, args.output_dir, options=options, class_names=class_names,
                               category_ids=category_ids, progress=BarProgress(bar), vid_stride=args.vid_stride)
    if options.save_json:
        settings = {"testing_shape": testing_shape, "conf_thresh": args.conf_thresh, "nms_thresh": args.nms_thresh,
                    "max_det": args.max_det, "classes": args.classes, "vid_stride": args.vid_stride}
        write_detections_json(detections_document(report, model=runtime.model_info(), settings=settings,
                                                  class_names=class_names, extra_failures=input_failures),
                              args.output_dir)
    print_summary(report, class_names, input_failures, args, time.perf_counter() - started)
    return exit_code(report)


def exit_code(report) -> int:
    """130 interrupted, 3 a video/camera/stream did not open, 2 nothing processed, else 0."""
    if report.interrupted:
        return EXIT_INTERRUPTED
    if report.unopened:
        print(f"error: {len(report.unopened)} video/camera/stream source(s) could not be opened: "
              + "; ".join(failure.reason for failure in report.unopened), file=sys.stderr)
        return EXIT_SOURCE_UNAVAILABLE
    if report.num_frames == 0:
        print("error: no picture or frame could be read", file=sys.stderr)
        return EXIT_USER_ERROR
    return EXIT_OK


def stop_on_sigterm() -> None:
    """Treat SIGTERM like Ctrl-C: the run stops after the frame at hand and keeps what it wrote.

    Measured with MindSpore 2.8.0: a Ctrl-C (SIGINT) that arrives while a graph runs is answered by its
    runtime with a SIGTERM to the process, which would end it before the video is closed; a service
    manager stopping a stream job sends SIGTERM too.
    """
    signal.signal(signal.SIGTERM, signal.default_int_handler)


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    stop_on_sigterm()
    try:
        return run(args)
    except (InferenceError, ModelLoadError, ExportedModelError, DeviceError) as error:
        return report_user_error(error)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED


if __name__ == "__main__":
    sys.exit(main())
