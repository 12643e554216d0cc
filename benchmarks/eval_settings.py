"""One checkpoint evaluated under every input geometry and NMS setting, in one run: mAP and time of each.

    python benchmarks/eval_settings.py --mindrecord VAL_DIR --pretrained CKPT --testing_shape 640 \
        [--per_batch_size 16] [--json FILE]

The settings: square or rectangular batches (``--rect``), with or without enlarging small images
(``--scaleup``), with or without multi-label NMS, at COCO evaluation's NMS IoU 0.65; and YOLOv5 val.py's
whole setting (``--yolov5_val``: rect, enlarging, area shrinking, multi-label NMS at IoU 0.6). One network
serves them all; every setting is run twice and the second run is timed, so that the graph compilations of
its input shapes (reported) are not in its time.
"""
from __future__ import annotations

import argparse
import itertools
import json
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))


def settings() -> list[tuple[str, dict]]:
    """(name, ``eval_settings`` keywords) of every setting compared."""
    rows = []
    for rect, scaleup, multi_label in itertools.product((False, True), repeat=3):
        name = (f"{'rect' if rect else 'square'}, {'enlarge' if scaleup else 'no enlarge'}, "
                f"{'multi-label' if multi_label else 'best class'}")
        rows.append((name, dict(rect=rect, scaleup=scaleup, multi_label=multi_label)))
    rows.append(("YOLOv5 val.py (--yolov5_val)", dict(yolov5_val=True)))
    return rows


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--mindrecord", required=True, type=Path, help="converted val folder")
    parser.add_argument("--pretrained", required=True, type=Path, help="checkpoint to evaluate")
    parser.add_argument("--testing_shape", type=int, default=640)
    parser.add_argument("--per_batch_size", type=int, default=16)
    parser.add_argument("--json", type=Path, default=None, help="write the figures here")
    args = parser.parse_args(argv)

    from yolodata.manifest import load_manifest
    from yolodata.pipeline import create_eval_dataset
    from yolomodel.device import setup_device
    from yolomodel.evaluation import eval_settings, evaluate, load_model_for_dataset

    setup_device("CPU", distributed=False)
    manifest = load_manifest(args.mindrecord)
    loaded = load_model_for_dataset(args.pretrained, manifest.num_classes)
    print(f"{loaded.describe()} on {args.mindrecord} ({manifest.num_images} images) at {args.testing_shape}",
          flush=True)
    figures = []
    for name, keywords in settings():
        geometry, nms = eval_settings(**keywords)
        shapes = create_eval_dataset(args.mindrecord, per_batch_size=args.per_batch_size,
                                     testing_shape=args.testing_shape, geometry=geometry).batch_shapes
        for _ in range(2):  # the first run compiles the shapes this setting needs
            started = time.perf_counter()
            report = evaluate(loaded.network, args.mindrecord, testing_shape=args.testing_shape,
                              per_batch_size=args.per_batch_size, nms=nms, geometry=geometry, show_progress=False)
            seconds = time.perf_counter() - started
        stats = [float(v) for v in report.scores.stats]
        figures.append({"setting": name, "map50_95": stats[0], "map50": stats[1], "seconds": round(seconds, 2),
                        "input_shapes": len(shapes), "stats": stats})
        print(f"{name:<40} mAP@0.5:0.95 {stats[0]:.4f}  mAP@0.5 {stats[1]:.4f}  {seconds:6.1f} s  "
              f"{len(shapes)} input shape(s)", flush=True)
    print("\n| setting | mAP@0.5:0.95 | mAP@0.5 | eval time | input shapes |\n| --- | ---: | ---: | ---: | ---: |")
    for row in figures:
        print(f"| {row['setting']} | {row['map50_95']:.4f} | {row['map50']:.4f} | {row['seconds']:.1f} s | "
              f"{row['input_shapes']} |")
    if args.json is not None:
        args.json.write_text(json.dumps(figures, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
