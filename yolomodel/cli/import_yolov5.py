"""Import a PyTorch YOLOv5 checkpoint (.pt, releases v5.0 to v7.0) as a MindSpore .ckpt of this toolkit; no torch needed.

    yolo-import-yolov5 --weights yolov5s.pt --output yolov5s.ckpt
    (or: python tools/import_yolov5.py ...)

Accepts the checkpoints the PyTorch YOLOv5 (github.com/ultralytics/yolov5) writes: release files
(yolov5n/s/m/l/x.pt) and training files (last.pt, best.pt; their EMA weights are taken), in both
network layouts (v5.0: Focus + SPP; v6.0: 6x6 stem + SPPF, used by v6.0 to v7.0), with any class count.
The .ckpt records the size, layout, class count, class names and anchors, so yolo-train --weights,
yolo-eval, yolo-infer and yolo-export use it without further flags.

The .pt is read with a restricted unpickler that executes nothing from the file (a .pt from the
internet is untrusted: torch.load would run whatever its pickle names). Refused, with the reason and
nothing written: P6 models (yolov5s6), segmentation and classification checkpoints, YOLOv8/YOLO11
(ultralytics package) files, customised networks, torch's legacy non-zip format, truncated or
corrupt files, Git LFS pointers, and anything that is not a checkpoint.

Exit codes: 0 written; 2 refused or a user error (message on stderr); 1 anything unexpected.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from yolomodel.checkpoint.yolov5_import import import_yolov5
from yolomodel.cli import EXIT_OK, report_user_error


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--weights", type=Path, required=True, help="the PyTorch YOLOv5 checkpoint (.pt) to import")
    parser.add_argument("--output", type=Path, default=None,
                        help="the .ckpt to write (default: the .pt's name with .ckpt, in the current folder)")
    return parser


def run(args) -> int:
    started = time.perf_counter()
    output = args.output if args.output is not None else Path(args.weights.with_suffix(".ckpt").name)
    print(f"reading {args.weights} (restricted unpickler: nothing in the file is executed) ...", flush=True)
    imported, written = import_yolov5(args.weights, output)
    values = sum(int(v.size) for v in imported.weights.values())
    print(f"imported {imported.describe()}\n"
          f"wrote {written} ({len(imported.weights)} parameters, {values:,} values) in "
          f"{time.perf_counter() - started:.1f} s\n"
          f"next: yolo-eval --pretrained {written} --mindrecord VAL_DIR, yolo-infer --pretrained {written} "
          f"--images ..., or fine-tune with yolo-train --weights {written} --mindrecord TRAIN_DIR", flush=True)
    return EXIT_OK


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return run(args)
    except ValueError as error:  # YOLOv5ImportError and argument errors: the file named, what to do
        return report_user_error(error)
    except OSError as error:  # e.g. the output folder is not writable, the disk is full
        return report_user_error(error)


if __name__ == "__main__":
    sys.exit(main())
