"""What the per-class report adds to a validation: coco128 at 320 with the COCO-pretrained yolov5n.

    python benchmarks/class_report.py [--mindrecord VAL_DIR] [--pretrained CKPT] [--testing_shape 320]
        [--per_batch_size 16] [--repeats 3]

Without --mindrecord, coco128 (shared/data) is converted into a temporary folder; without --pretrained,
YOLOv5's yolov5n_v6.1_coco.pt is imported on the fly. The network is built once and evaluated once to
compile. Then, ``--repeats`` times and alternating, in the same process:

* a validation as training runs it without the report (``evaluate`` as ``Validator`` calls it);
* a validation that keeps its COCOeval and first batch, plus what ``RunReport.after_validation`` does at
  a validation that is both the best so far and the last (the dearest case): the per-class numbers,
  ``per_class.csv``, the confusion matrix (png + csv), the four curves, ``val_batch0_labels.jpg`` /
  ``val_batch0_pred.jpg`` and the per-class table in the log.

It prints the medians and the added time as a share of the validation's, and what an ordinary validation
(not a new best, not the last) adds: the per-class numbers and two log lines, no files.
``train_batch0..2.jpg`` are drawn once per run; their time per picture is printed too.
"""
from __future__ import annotations

import argparse
import dataclasses
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402

from benchmarks.real_data import COCO128, REAL_DATA  # noqa: E402

DEFAULT_CHECKPOINT = REAL_DATA / "yolov5_pt" / "yolov5n_v6.1_coco.pt"


def parse_args(argv):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--mindrecord", type=Path, default=None, help="converted val folder (default: coco128)")
    parser.add_argument("--pretrained", type=Path, default=DEFAULT_CHECKPOINT)
    parser.add_argument("--testing_shape", type=int, default=320)
    parser.add_argument("--per_batch_size", type=int, default=16)
    parser.add_argument("--repeats", type=int, default=3)
    return parser.parse_args(argv)


def time_validations(network, mindrecord, args, class_names, category_ids, report_dir: Path):
    """Seconds of: plain validations, validations with the report, the report alone (``after_validation``
    at a new best that is the last), and ``after_validation`` at an ordinary validation (neither: the
    numbers and two log lines), alternating."""
    from yolomodel.evaluation import evaluate
    from yolomodel.train.results import ValidationState
    from yolomodel.train.run_report import RunReport
    from yolomodel.train.validation import ValidationOutcome

    common = dict(testing_shape=args.testing_shape, per_batch_size=args.per_batch_size, show_progress=False,
                  score_on_every_rank=True)
    plain, with_report, report_seconds, ordinary_seconds = [], [], [], []
    run_report = RunReport(report_dir, class_names, category_ids, 0, log=lambda text: None)
    for _ in range(args.repeats):
        started = time.perf_counter()
        evaluate(network, mindrecord, **common)
        plain.append(time.perf_counter() - started)

        started = time.perf_counter()
        report = evaluate(network, mindrecord, keep_evaluator=True, keep_first_batch=True, **common)
        outcome = ValidationOutcome(report.scores, 0.0, True, ValidationState(), 0.0, report.images_evaluated,
                                    report.scores.evaluator, report.first_batch)
        report_seconds.append(run_report.after_validation(outcome, 1, last=True))
        with_report.append(time.perf_counter() - started)
        ordinary_seconds.append(run_report.after_validation(dataclasses.replace(outcome, improved=False), 2,
                                                            last=False))
    return plain, with_report, report_seconds, ordinary_seconds


def time_train_picture(class_names) -> float:
    """Seconds to draw and write one train_batch picture of 16 images at 320 px."""
    from yolomodel.train.run_report import RunReport

    rng = np.random.default_rng(0)
    images = rng.integers(0, 255, (16, 320, 320, 3), dtype=np.uint8)
    boxes = np.zeros((16, 64, 6), np.float32)
    corners = rng.uniform(0, 240, (16, 20, 2))
    boxes[:, :20, 0:2], boxes[:, :20, 2:4] = corners, corners + 60
    boxes[:, :20, 4] = rng.integers(0, len(class_names), (16, 20))
    boxes[:, :20, 5] = 1
    with tempfile.TemporaryDirectory() as folder:
        run_report = RunReport(folder, class_names, range(len(class_names)), 0, log=lambda text: None)
        started = time.perf_counter()
        run_report.after_step(0, [images, np.arange(16), boxes])
        return time.perf_counter() - started


def main(argv=None) -> int:
    args = parse_args(argv)
    from yolodata.convert import convert_coco
    from yolodata.manifest import load_manifest
    from yolomodel.device import setup_device
    from yolomodel.evaluation import evaluate, load_model_for_dataset

    setup_device("CPU", distributed=False)
    with tempfile.TemporaryDirectory() as scratch:
        mindrecord = args.mindrecord
        if mindrecord is None:
            mindrecord = Path(scratch) / "coco128"
            convert_coco(COCO128 / "val2017", COCO128 / "annotations" / "instances_val2017.json", mindrecord)
        manifest = load_manifest(mindrecord)
        loaded = load_model_for_dataset(args.pretrained, manifest.num_classes)
        print(f"{loaded.describe()} on {mindrecord} ({manifest.num_images} images, {manifest.num_classes} classes) "
              f"at {args.testing_shape}, batches of {args.per_batch_size}", flush=True)
        evaluate(loaded.network, mindrecord, testing_shape=args.testing_shape, per_batch_size=args.per_batch_size,
                 show_progress=False)   # compiles
        plain, with_report, report_only, ordinary = time_validations(
            loaded.network, mindrecord, args, manifest.class_names, manifest.category_ids, Path(scratch) / "report")
    base, full = statistics.median(plain), statistics.median(with_report)
    print(f"validation without the report: {', '.join(f'{s:.2f}' for s in plain)} s (median {base:.2f} s)")
    print(f"validation with the report:    {', '.join(f'{s:.2f}' for s in with_report)} s (median {full:.2f} s)")
    added = statistics.median(report_only)
    print(f"the report alone (after_validation): {', '.join(f'{s:.2f}' for s in report_only)} s (median {added:.2f} s)")
    print(f"added per validation that is a new best and the last: {added:.2f} s measured directly = "
          f"{100 * added / base:.1f}% of the validation; difference of the medians {full - base:.2f} s = "
          f"{100 * (full - base) / base:.1f}%")
    usual = statistics.median(ordinary)
    print(f"added per ordinary validation (numbers and log lines only): {', '.join(f'{s:.3f}' for s in ordinary)} s "
          f"(median {usual:.3f} s = {100 * usual / base:.1f}%)")
    print(f"one train_batch picture (16 images at 320 px): {time_train_picture(manifest.class_names):.3f} s "
          f"(three per run)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
