"""Detect objects in image files with a YOLOv5 checkpoint; draw them and write a json of the boxes.

    yolo-infer --pretrained CKPT --images PATH [PATH ...] --output_dir DIR \\
        [--testing_shape 640] [--conf_thresh 0.25] [--nms_thresh 0.45] [--max_det 300] \\
        [--names FILE | --mindrecord DIR] [--yolov5_version V --num_classes N] [--device_target CPU]
    (or: python tools/infer.py ...)

PATH is an image file (any format OpenCV decodes) or a folder, searched recursively for .jpg, .jpeg,
.png, .bmp, .webp, .tif and .tiff files (hidden files and folders skipped). Each image is letterboxed
into --testing_shape without enlarging small images (as yolo-eval does), run through the network
(EMA weights when the checkpoint has them), reduced by class-aware NMS and mapped back to its own
pixels (EXIF orientation applied, as image viewers show it).

Writes into DIR:
  <name>.jpg        the image with each detection outlined in its class colour, with class and score
                    (<name> is the path below the folder argument, or the file name; clashing names
                    get the original suffix and then a counter)
  detections.json   {"model", "settings", "class_names", "images": [{"file", "output", "width", "height",
                    "detections": [{"bbox": [x1, y1, x2, y2] original pixels, "score", "class_index",
                    "class_name", "category_id"}]}], "failed": [{"file", "reason"}]}
Class names come from --names (a text file, one name per line in class order) or from --mindrecord
(the converter's manifest.json, which also gives the COCO category ids); otherwise from the checkpoint
(training and yolo-import-yolov5 record them), else "class N". CKPT may also be a PyTorch YOLOv5 .pt,
imported on the fly (see yolo-import-yolov5; nothing in the file is executed).

Images that cannot be read (missing, empty, truncated, not an image) are named with the reason and
skipped. Exit codes: 0 at least one image processed; 2 none processed, or a user error (message on
stderr, no traceback); 1 anything unexpected; 130 interrupted.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from tqdm import tqdm

from yolomodel.checkpoint.loading import ModelLoadError, load_inference_net, network_predictor
from yolomodel.cli import EXIT_INTERRUPTED, EXIT_OK, EXIT_USER_ERROR, report_user_error
from yolomodel.device import DEVICE_TARGETS, DeviceError, setup_device
from yolomodel.infer import (DISPLAY_CONF_THRESH, DISPLAY_NMS_THRESH, Detector, InferenceError, check_class_count,
                             check_detection_settings, class_names_from, detections_document, find_images,
                             prepare_output_dir, run_inference, write_detections_json)
from yolomodel.nms import DEFAULT_MAX_DET


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--pretrained", type=Path, required=True,
                        help="checkpoint to detect with (.ckpt, or a YOLOv5 .pt imported on the fly)")
    parser.add_argument("--images", nargs="+", required=True, metavar="PATH", help="image files and/or folders")
    parser.add_argument("--output_dir", type=Path, required=True, help="where the drawn images and json go")
    parser.add_argument("--testing_shape", type=int, default=640, help="network input side, a multiple of 32")
    parser.add_argument("--conf_thresh", type=float, default=DISPLAY_CONF_THRESH,
                        help=f"minimum objectness * class score (default {DISPLAY_CONF_THRESH})")
    parser.add_argument("--nms_thresh", type=float, default=DISPLAY_NMS_THRESH,
                        help=f"IoU above which NMS suppresses (default {DISPLAY_NMS_THRESH})")
    parser.add_argument("--max_det", type=int, default=DEFAULT_MAX_DET,
                        help=f"detections kept per image (default {DEFAULT_MAX_DET})")
    names = parser.add_mutually_exclusive_group()
    names.add_argument("--names", type=Path, default=None, help="text file of class names, one per line")
    names.add_argument("--mindrecord", type=Path, default=None,
                       help="converter output folder whose manifest.json gives class names and category ids")
    parser.add_argument("--yolov5_version", default=None, help="yolov5n/s/m/l/x (default: from the checkpoint)")
    parser.add_argument("--num_classes", type=int, default=None, help="class count (default: from the checkpoint)")
    parser.add_argument("--device_target", default="CPU", choices=DEVICE_TARGETS)
    return parser


def report_failure(failure) -> None:
    tqdm.write(f"skipped {failure.file}: {failure.reason}", file=sys.stderr)


def run(args) -> int:
    started = time.perf_counter()
    class_names, category_ids, names_source = class_names_from(names_file=args.names, mindrecord=args.mindrecord)
    detector_options = dict(conf_thresh=args.conf_thresh, nms_thresh=args.nms_thresh, max_det=args.max_det)
    check_detection_settings(args.testing_shape, **detector_options)  # before the slow part
    sources, input_failures = find_images(args.images)
    for failure in input_failures:
        report_failure(failure)
    if not sources:
        raise InferenceError(f"no image to process in {' '.join(map(str, args.images))}")
    prepare_output_dir(args.output_dir)

    setup_device(args.device_target)  # graph mode: one compile for the fixed input shape, then fast
    loaded = load_inference_net(args.pretrained, version=args.yolov5_version, num_classes=args.num_classes)
    if class_names is None and loaded.class_names is not None:
        class_names, names_source = list(loaded.class_names), f"the checkpoint {args.pretrained}"
    check_class_count(class_names, loaded.num_classes, names_source)
    print(f"detecting with {loaded.describe()} at {args.testing_shape} on {len(sources)} image(s)", flush=True)

    detector = Detector(network_predictor(loaded.network), args.testing_shape, **detector_options)
    with tqdm(total=len(sources), unit="img", file=sys.stderr, disable=None if len(sources) > 1 else True) as bar:
        report = run_inference(sources, detector, args.output_dir, class_names=class_names,
                               category_ids=category_ids, on_failure=report_failure, progress=bar.update)
    model = {"checkpoint": str(args.pretrained), "yolov5_version": loaded.version, "yolov5_layout": loaded.layout,
             "num_classes": loaded.num_classes, "weights": loaded.weights}
    settings = {"testing_shape": args.testing_shape, **detector_options}
    json_path = write_detections_json(detections_document(report, model=model, settings=settings,
                                                          class_names=class_names,
                                                          extra_failures=input_failures), args.output_dir)
    seconds = time.perf_counter() - started
    failed = len(input_failures) + len(report.failures)
    print(f"{len(report.images)} image(s) processed, {report.num_detections} detection(s); {failed} input(s) "
          f"could not be read{' (listed above and in the json)' if failed else ''}.\n"
          f"drawn images and {json_path.name} in {args.output_dir} ({seconds:.1f} s)", flush=True)
    if not report.images:
        print("error: none of the images could be read", file=sys.stderr)
        return EXIT_USER_ERROR
    return EXIT_OK


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return run(args)
    except (InferenceError, ModelLoadError, DeviceError) as error:
        return report_user_error(error)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED


if __name__ == "__main__":
    sys.exit(main())
