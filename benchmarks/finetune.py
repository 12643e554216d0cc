"""Fine-tuning the real COCO-pretrained yolov5n against the same run from random weights, mAP per epoch.

    python benchmarks/finetune.py [--weights ../shared/data/yolov5_pt/yolov5n_v6.1_coco.pt]
        [--training_shape 320] [--max_epoch 3] [--per_batch_size 16] [--output DIR]

coco128 (128 real COCO images, 80 categories) is converted once and serves as training and validation
set, as YOLOv5's own coco128 tutorial does. Two runs of ``yolo-train`` with the same flags (YOLOv5's
hyp.scratch-low learning rate 0.01, momentum 0.937, cosine to 0.01 x lr over the run, one warmup epoch,
its augmentation): one with ``--weights`` the pretrained checkpoint (80 classes: every weight and its
anchors are kept; AutoAnchor does not run), one from random weights of the same network (yolov5n, v6.0
layout; AutoAnchor runs, and keeps COCO's anchors on coco128). Validation of the EMA weights after every
epoch at the training shape; the table shows mAP@0.5:0.95 and mAP@0.5 per epoch from each run's
results.csv. CPU-heavy: a few epochs at 320 px take minutes per run on two cores.
"""
from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from benchmarks.real_data import COCO128, REAL_DATA  # noqa: E402
from yolodata.convert import convert_coco  # noqa: E402
from yolomodel.cli import train as train_cli  # noqa: E402
from yolomodel.train import results as results_lib  # noqa: E402

PRETRAINED = REAL_DATA / "yolov5_pt" / "yolov5n_v6.1_coco.pt"


def train_flags(shards: Path, run_dir: Path, args) -> list[str]:
    """The flags both runs share."""
    return ["--mindrecord", str(shards), "--val_mindrecord", str(shards), "--training_shape", str(args.training_shape),
            "--testing_shape", str(args.training_shape), "--per_batch_size", str(args.per_batch_size),
            "--max_epoch", str(args.max_epoch), "--lr", str(args.lr), "--momentum", "0.937",
            "--weight_decay", "0.0005", "--lr_scheduler", "cosine_annealing", "--t_max", str(args.max_epoch),
            "--eta_min", str(args.lr * 0.01),
            "--warmup_epochs", "1", "--eval_interval", "1", "--log_interval", "4", "--seed", "0",
            "--ckpt_path", str(run_dir)]


def run(name: str, flags: list[str]) -> tuple[list[dict], float]:
    started = time.perf_counter()
    code = train_cli.main(flags)
    if code != 0:
        raise SystemExit(f"the {name} run failed with exit code {code}")
    run_dir = Path(flags[flags.index("--ckpt_path") + 1])
    return results_lib.read_results(run_dir / results_lib.RESULTS_CSV), time.perf_counter() - started


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--weights", type=Path, default=PRETRAINED)
    parser.add_argument("--training_shape", type=int, default=320)
    parser.add_argument("--max_epoch", type=int, default=3)
    parser.add_argument("--per_batch_size", type=int, default=16)
    parser.add_argument("--lr", type=float, default=0.01, help="learning rate after warmup (YOLOv5's lr0 0.01)")
    parser.add_argument("--runs", default="pretrained,scratch", help="which runs: pretrained, scratch or both")
    parser.add_argument("--output", type=Path, default=None, help="keep the runs here (default: a temporary folder)")
    args = parser.parse_args(argv)
    if not args.weights.is_file():
        raise SystemExit(f"{args.weights} does not exist: pass --weights with YOLOv5's yolov5n .pt")
    with tempfile.TemporaryDirectory() as temporary:
        root = args.output or Path(temporary)
        shards = root / "coco128_shards"
        if not shards.exists():
            convert_coco(COCO128 / "val2017", COCO128 / "annotations" / "instances_val2017.json", shards)
        runs = {"pretrained": ["--weights", str(args.weights)],
                "scratch": ["--yolov5_version", "yolov5n", "--yolov5_layout", "v6.0"]}
        chosen = [name for name in args.runs.split(",") if name]
        unknown = [name for name in chosen if name not in runs]
        if unknown:
            raise SystemExit(f"--runs: unknown run(s) {unknown}; choose from {sorted(runs)}")
        figures = {name: run(name, train_flags(shards, root / name, args) + runs[name]) for name in chosen}
    print_table(figures, args)
    return 0


def print_table(figures: dict, args) -> None:
    """One row per epoch, two columns (mAP@0.5:0.95, mAP@0.5) per run."""
    print(f"\nyolov5n on coco128 at {args.training_shape} px, batch {args.per_batch_size}, lr {args.lr}, "
          f"{args.max_epoch} epochs (EMA weights validated on coco128 after every epoch)")
    names = list(figures)
    print("| epoch | " + " | ".join(f"{name} mAP@0.5:0.95 | {name} mAP@0.5" for name in names) + " |")
    print("| --- |" + " --- | --- |" * len(names))
    for epoch_rows in zip(*(figures[name][0] for name in names)):
        cells = " | ".join(f"{row['metrics/mAP_0.5:0.95']:.4f} | {row['metrics/mAP_0.5']:.4f}" for row in epoch_rows)
        print(f"| {epoch_rows[0]['epoch']} | {cells} |")
    print("wall time: " + ", ".join(f"{name} {figures[name][1]:.0f} s" for name in names))


if __name__ == "__main__":
    sys.exit(main())
