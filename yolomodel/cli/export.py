"""Export a YOLOv5 checkpoint for deployment: MINDIR, ONNX or AIR.

    yolo-export --ckpt_file CKPT --file_format MINDIR|ONNX|AIR --testing_shape 640 \\
        --batch_size 1 [--dynamic_batch] --file_name NAME [--yolov5_version yolov5s --num_classes N] \\
        [--device_target CPU]
    (or: python tools/export.py ...)

The exported graph is the whole inference network: input ``images`` uint8 (batch_size, S, S, 3) RGB
(S = --testing_shape, a multiple of 32; letterbox your images to it), output ``predictions`` float32
(batch_size, 3 * ((S/8)^2 + (S/16)^2 + (S/32)^2), 5 + C) = cx, cy, w, h in input pixels, objectness
probability, class probabilities. Normalisation (/255, NHWC -> NCHW) and box decoding are inside;
NMS is not. The EMA weights are exported when the checkpoint has them. --dynamic_batch (ONNX and
MINDIR) makes the batch dimension symbolic: the file then takes any batch (--batch_size is only the
one traced); the image side stays fixed.

Beside NAME.<suffix> a sidecar NAME.<suffix>.json is written (atomically, after the model): model
size, layout, class count and names, anchors, input side, batch, layout of input and output, and the
model file's SHA-256. yolo-infer --pretrained NAME.onnx / NAME.mindir reads it, so no flag repeats them.

Checkpoints written by training and by yolo-import-yolov5 record the model size, layout, class count,
class names and anchors, so --yolov5_version and --num_classes may be left out (when given, they must
agree with the checkpoint). A plain weights checkpoint needs both flags. CKPT may also be a PyTorch
YOLOv5 .pt, imported on the fly (nothing in it is executed). The output is NAME.mindir / NAME.onnx / NAME.air (the suffix is added
unless NAME has it), written atomically. AIR needs an Ascend device; elsewhere the tool says so and
writes nothing.

Exit codes: 0 written; 2 a user error (message on stderr starting with "error:", no traceback);
1 anything unexpected.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from yolomodel.checkpoint.loading import ModelLoadError, load_inference_net
from yolomodel.cli import EXIT_OK, report_user_error
from yolomodel.device import DEVICE_TARGETS, DeviceError, setup_device
from yolomodel.export import (INPUT_NAME, OUTPUT_NAME, ExportError, check_export_request, export_network,
                              output_shape)
from yolomodel.sidecar import DYNAMIC, build_sidecar, write_sidecar


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--ckpt_file", type=Path, required=True,
                        help="checkpoint to export (.ckpt, or a YOLOv5 .pt imported on the fly)")
    parser.add_argument("--file_format", type=str.upper, choices=("MINDIR", "ONNX", "AIR"), default="MINDIR",
                        help="output format (default MINDIR)")
    parser.add_argument("--testing_shape", type=int, default=640, help="input side S, a multiple of 32 (default 640)")
    parser.add_argument("--batch_size", type=int, default=1, help="fixed batch size of the graph (default 1)")
    parser.add_argument("--dynamic_batch", action="store_true",
                        help="ONNX and MINDIR: the graph takes any batch size (the batch axis is symbolic)")
    parser.add_argument("--file_name", default="yolov5",
                        help="output file; .mindir/.onnx/.air is appended unless present (default yolov5)")
    parser.add_argument("--yolov5_version", default=None,
                        help="yolov5n/s/m/l/x (default: recorded in the checkpoint)")
    parser.add_argument("--num_classes", type=int, default=None,
                        help="class count of the checkpoint (default: recorded in the checkpoint)")
    parser.add_argument("--device_target", default="CPU", choices=DEVICE_TARGETS,
                        help="backend to build the graph with (default CPU; AIR needs Ascend)")
    return parser


def run(args) -> int:
    started = time.perf_counter()
    check_export_request(file_format=args.file_format, batch_size=args.batch_size, testing_shape=args.testing_shape,
                         device_target=args.device_target, file_name=args.file_name, dynamic_batch=args.dynamic_batch)
    # the export traces its graph itself: the execution mode is left as it is
    setup_device(args.device_target, graph_mode=False)
    loaded = load_inference_net(args.ckpt_file, version=args.yolov5_version, num_classes=args.num_classes)
    print(f"exporting {loaded.describe()} as {args.file_format}", flush=True)
    written = export_network(loaded.network, file_format=args.file_format, batch_size=args.batch_size,
                             testing_shape=args.testing_shape, file_name=args.file_name,
                             device_target=args.device_target, dynamic_batch=args.dynamic_batch)
    batch = DYNAMIC if args.dynamic_batch else args.batch_size
    sidecar = write_sidecar(written, build_sidecar(written, file_format=args.file_format, loaded=loaded,
                                                   testing_shape=args.testing_shape, batch_size=batch,
                                                   input_name=INPUT_NAME, output_name=OUTPUT_NAME))
    size = args.testing_shape
    print(f"wrote {written} ({written.stat().st_size / 2 ** 20:.1f} MiB) in {time.perf_counter() - started:.1f} s\n"
          f"  input  images      uint8   {(batch, size, size, 3)} RGB, letterboxed, 0..255\n"
          f"  output predictions float32 {(batch,) + output_shape(args.batch_size, size, loaded.num_classes)[1:]} "
          f"cx, cy, w, h (input pixels), objectness, {loaded.num_classes} class probabilities"
          + (f"\n  classes {', '.join(loaded.class_names[:10])}{', ...' if len(loaded.class_names) > 10 else ''}"
             if loaded.class_names else "")
          + f"\n  sidecar {sidecar}", flush=True)
    return EXIT_OK


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return run(args)
    except (ExportError, ModelLoadError, DeviceError) as error:
        return report_user_error(error)


if __name__ == "__main__":
    sys.exit(main())
