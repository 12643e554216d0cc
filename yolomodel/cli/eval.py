"""COCO mAP evaluation of a YOLOv5 checkpoint on converted MindRecord shards, or of a results file.

Evaluate a checkpoint (runs the network):

    yolo-eval --mindrecord VAL_DIR --pretrained CKPT --testing_shape 640 \\
        [--per_batch_size 16] [--conf_thresh 0.001] [--nms_thresh 0.65] [--max_det 300] [--multi_label]
        [--rect] [--scaleup] [--interpolation linear|yolov5] [--yolov5_val]
        [--results_file PATH] [--device_target CPU] [--is_distributed 0|1]
        [--yolov5_version yolov5s] [--num_classes N]
    (or: python tools/eval.py ...)

VAL_DIR is a folder written by yolo-coco2mindrecord. Every image is letterboxed into testing_shape (no
upscaling; square batches by default, YOLOv5 val.py's rectangular batches with --rect, small images
enlarged with --scaleup, all of val.py's settings with --yolov5_val), run through the network (the EMA weights when the checkpoint has ``ema.*`` parameters),
decoded, reduced by class-aware NMS, mapped back to original image pixels and written as a COCO
results json (original image and category ids) to --results_file (default outputs/eval/results.json);
that file is then scored with pycocotools against VAL_DIR/annotations.json (or --ann_file). The model
size, layout and class count are those the checkpoint records (training and yolo-import-yolov5 write
them); for a plain weights file --yolov5_version names the size, and the class count defaults to the
dataset's. CKPT may also be a PyTorch YOLOv5 .pt, imported on the fly (nothing in it is executed).

Score an existing results file (no model):

    yolo-eval --ann_file GT.json --results_file DETS.json

Both print the 12 COCO summary lines, then the time taken, then the per-class table (images, instances,
P and R at the confidence maximising the mean F1, AP@0.5 and AP@0.5:0.95 from the same COCO evaluation)
and the five classes with the lowest AP. Evaluating a checkpoint also writes per_class.csv,
confusion_matrix.png/.csv and PR_curve.png, F1_curve.png, P_curve.png, R_curve.png beside the results
file (or into --output_dir); scoring a results file writes them only with --output_dir.

Distributed (--is_distributed 1, started with msrun): each rank evaluates a contiguous block of the
images; the detections of all ranks are collected on rank 0 with collectives (no shared file system
needed), so every image is counted exactly once. Rank 0 writes the results file, scores and prints;
the other ranks print a line and exit 0. Before the network is loaded every rank checks its copy of
--mindrecord (files, sizes, headers, indexes; yolomodel/data_contract.py) and the ranks compare
dataset id and manifest: a rank with a damaged or different copy stops every rank with exit status 2
and a message naming node, rank and file. Example:

    msrun --worker_num=2 --local_worker_num=2 --master_port=8118 --join=True \\
        tools/eval.py --mindrecord VAL_DIR --pretrained CKPT --is_distributed 1

Exit codes: 0 done; 2 a user error (message on stderr, no traceback); 1 anything unexpected.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from yolodata.checks import check_int, check_multiple_of
from yolodata.pipeline.eval_batches import INTERPOLATIONS
from yolodata.manifest import load_manifest
from yolomodel.class_report import format_class_table, worst_classes_line, write_class_report
from yolomodel.cli import EXIT_OK, report_user_error
from yolomodel.coco_eval import load_ground_truth, score_results
from yolomodel.data_contract import check_data
from yolomodel.device import DEVICE_TARGETS, setup_device
from yolomodel.evaluation import describe_settings, eval_settings, evaluate, load_model_for_dataset
from yolomodel.metrics import class_metrics
from yolomodel.nms import DEFAULT_MAX_DET, EVAL_CONF_THRESH, EVAL_NMS_THRESH, YOLOV5_VAL_NMS_THRESH

RESULT_HEADER = "=============coco eval result========="
DEFAULT_RESULTS_FILE = Path("outputs") / "eval" / "results.json"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--mindrecord", "--data_dir", dest="mindrecord", type=Path, default=None,
                        help="converted val folder (yolo-coco2mindrecord output)")
    parser.add_argument("--pretrained", type=Path, default=None,
                        help="checkpoint of the YOLOv5 network (.ckpt, or a YOLOv5 .pt imported on the fly)")
    parser.add_argument("--ann_file", type=Path, default=None,
                        help="ground-truth COCO json (default with --mindrecord: VAL_DIR/annotations.json)")
    parser.add_argument("--results_file", type=Path, default=None,
                        help=f"results json: written with --mindrecord (default {DEFAULT_RESULTS_FILE}), "
                             f"read and scored without it")
    parser.add_argument("--output_dir", type=Path, default=None,
                        help="folder for per_class.csv, the confusion matrix and the curves (default with "
                             "--mindrecord: the results file's folder; without it: not written)")
    parser.add_argument("--testing_shape", type=int, default=640, help="square input size, multiple of 32")
    parser.add_argument("--per_batch_size", type=int, default=16, help="images per batch (per rank)")
    parser.add_argument("--conf_thresh", type=float, default=EVAL_CONF_THRESH,
                        help="minimum objectness * class score")
    parser.add_argument("--nms_thresh", type=float, default=None,
                        help=f"IoU above which NMS suppresses (default {EVAL_NMS_THRESH}; "
                             f"{YOLOV5_VAL_NMS_THRESH} with --yolov5_val)")
    parser.add_argument("--max_det", type=int, default=DEFAULT_MAX_DET, help="detections kept per image")
    parser.add_argument("--multi_label", action="store_true",
                        help="every class above conf_thresh is a candidate (default: each box's best class)")
    geometry = parser.add_argument_group("input geometry (default: square batches, small images not enlarged)")
    geometry.add_argument("--rect", action="store_true",
                          help="rectangular batches: images ordered by aspect ratio, each batch letterboxed to the "
                               "smallest multiple-of-32 shape that holds its images (YOLOv5's val.py)")
    geometry.add_argument("--scaleup", action="store_true",
                          help="enlarge images smaller than --testing_shape so their long side equals it "
                               "(YOLOv5's val.py does)")
    geometry.add_argument("--interpolation", choices=INTERPOLATIONS, default=None,
                          help="linear (default): bilinear resizing; yolov5: area averaging when shrinking, as "
                               "YOLOv5's val loader")
    geometry.add_argument("--yolov5_val", action="store_true",
                          help="YOLOv5 val.py's settings in one flag: --rect --scaleup --interpolation yolov5 "
                               f"--multi_label --nms_thresh {YOLOV5_VAL_NMS_THRESH} (flags given explicitly win)")
    parser.add_argument("--device_target", default="CPU", choices=DEVICE_TARGETS)
    parser.add_argument("--is_distributed", type=int, default=0, choices=(0, 1),
                        help="1: split the images over the ranks of an msrun launch")
    parser.add_argument("--yolov5_version", default=None,
                        help="yolov5n/s/m/l/x (default: the one the checkpoint records; needed for a plain weights file)")
    parser.add_argument("--num_classes", type=int, default=None,
                        help="classes of the checkpoint (default: the dataset's category count)")
    parser.add_argument("--num_parallel_workers", type=int, default=None,
                        help="pipeline threads (default and ceiling: the CPU count)")
    return parser


def print_scores(scores, started: float) -> None:
    print(RESULT_HEADER)
    print(scores.text)
    seconds = time.perf_counter() - started
    print(f"testing cost time {seconds / 3600:.2f}h ({seconds:.1f} s)", flush=True)


def print_class_report(scores, category_ids, class_names, output_dir: Path | None) -> None:
    """The per-class table and worst-classes line of ``scores`` (kept with their COCOeval); the report files
    written into ``output_dir`` when given."""
    metrics = class_metrics(scores.evaluator, category_ids, class_names)
    print(format_class_table(metrics))
    print(worst_classes_line(metrics), flush=True)
    if output_dir is not None:
        written = write_class_report(metrics, output_dir)
        print(f"per-class report written to {output_dir}: {', '.join(path.name for path in written)}", flush=True)


def run_results_file(args, started: float) -> int:
    scores = score_results(args.ann_file, args.results_file, keep_evaluator=True)
    print_scores(scores, started)
    categories = sorted(scores.evaluator.cocoGt.dataset["categories"], key=lambda category: category["id"])
    print_class_report(scores, [c["id"] for c in categories], [str(c.get("name", c["id"])) for c in categories],
                       args.output_dir)
    return EXIT_OK


def check_model_args(args):
    """(geometry, NMS options) of the flags; ValueError naming the flag to fix (before anything slow)."""
    if args.pretrained is None:
        raise ValueError("--mindrecord needs --pretrained CKPT (the checkpoint to evaluate)")
    check_multiple_of("--testing_shape", args.testing_shape)
    check_int("--per_batch_size", args.per_batch_size, minimum=1)
    if args.num_classes is not None:
        check_int("--num_classes", args.num_classes, minimum=1)
    return eval_settings(rect=args.rect, scaleup=args.scaleup, interpolation=args.interpolation,
                         multi_label=args.multi_label, nms_thresh=args.nms_thresh, conf_thresh=args.conf_thresh,
                         max_det=args.max_det, yolov5_val=args.yolov5_val)


def load_eval_data(args, group):
    """(manifest, ground truth) of --mindrecord, read before the long run (a missing annotations.json,
    shard or manifest is named). With several ranks every rank first checks the folder and agrees on it
    with the others (``data_contract.check_data``); a rank that cannot even read it joins the check
    carrying its error, so that every rank stops with the same message instead of waiting in a collective."""
    if not group.distributed:
        manifest = load_manifest(args.mindrecord)
        return manifest, load_ground_truth(args.ann_file or manifest.annotations_path)
    manifest = ground_truth = local_error = None
    try:
        manifest = load_manifest(args.mindrecord)
        ground_truth = load_ground_truth(args.ann_file or manifest.annotations_path)
    except (ValueError, OSError) as error:
        local_error = f"--mindrecord {args.mindrecord}: {error}"
    check_data([("--mindrecord", str(args.mindrecord))], group, what="the evaluation data",
               local_error=local_error, log=print if group.rank == 0 else (lambda message: None))
    return manifest, ground_truth


def run_model(args, started: float) -> int:
    geometry, nms = check_model_args(args)
    results_file = args.results_file or DEFAULT_RESULTS_FILE
    group = setup_device(args.device_target, distributed=bool(args.is_distributed), program="tools/eval.py")
    manifest, ground_truth = load_eval_data(args, group)
    loaded = load_model_for_dataset(args.pretrained, manifest.num_classes, version=args.yolov5_version,
                                    num_classes=args.num_classes)
    if group.rank == 0 and loaded.class_names is not None and list(loaded.class_names) != manifest.class_names:
        print(f"note: the checkpoint's class names ({', '.join(loaded.class_names[:5])}...) differ from the "
              f"dataset's ({', '.join(manifest.class_names[:5])}...); classes are matched by index", file=sys.stderr,
              flush=True)
    if group.rank == 0:
        print(f"evaluating {loaded.describe()} on {args.mindrecord} ({manifest.num_images} images, "
              f"{group.group_size} rank(s)) at {args.testing_shape}: {describe_settings(geometry, nms)}", flush=True)
    report = evaluate(loaded.network, args.mindrecord, testing_shape=args.testing_shape,
                      per_batch_size=args.per_batch_size, nms=nms, geometry=geometry, rank=group.rank,
                      group_size=group.group_size,
                      results_file=results_file, ground_truth=ground_truth,
                      num_parallel_workers=args.num_parallel_workers, keep_evaluator=True)
    if report.scores is None:
        print(f"rank {group.rank}: detections sent to rank 0", flush=True)
        return EXIT_OK
    print(f"{report.num_detections} detections written to {report.results_file}", flush=True)
    print_scores(report.scores, started)
    print_class_report(report.scores, manifest.category_ids, manifest.class_names,
                       args.output_dir or Path(results_file).parent)
    return EXIT_OK


def main(argv=None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    started = time.perf_counter()
    try:
        if args.mindrecord is not None:
            return run_model(args, started)
        if args.pretrained is not None:
            parser.error("--pretrained needs --mindrecord VAL_DIR (the images to run the network on)")
        if args.ann_file is None or args.results_file is None:
            parser.error("give --mindrecord VAL_DIR --pretrained CKPT to evaluate a checkpoint, or "
                         "--ann_file GT.json --results_file DETS.json to score a results file")
        return run_results_file(args, started)
    except ValueError as error:  # ModelLoadError, CocoEvalError, ManifestError, DeviceError, argument checks
        return report_user_error(error)
    except OSError as error:  # e.g. the results file's folder is not writable, the disk is full
        return report_user_error(error)


if __name__ == "__main__":
    sys.exit(main())
