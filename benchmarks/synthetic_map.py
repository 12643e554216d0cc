"""The proof: train yolov5n from scratch on the built-in synthetic dataset on CPU, then measure COCO mAP.

    python benchmarks/synthetic_map.py [--output_dir outputs/synthetic_map] [--json FILE]
        [--num_images 600] [--max_epoch 16] [--lr 0.02] [--mosaic 1.0] ...   (--help lists the recipe)

The whole chain runs as a user would run it:

The recipe is ``yolomodel.demo.Recipe`` (its defaults; every field is a flag here), the steps are
``yolomodel.demo``'s, which ``yolo-demo`` runs in a shorter version:

1. ``yolodata.synthetic.make_synthetic_coco`` draws a COCO-format dataset (five shape classes on
   textured backgrounds, exact boxes) and ``yolodata.convert.convert_coco`` converts its train and val
   splits into MindRecord shards (what yolo-make-synthetic-coco and yolo-coco2mindrecord do);
2. ``yolo-train`` trains yolov5n from random weights on the train shards (the input pipeline with
   mosaic/affine/HSV/flip and YOLOv5 targets, the network, the loss, Nesterov SGD, warmup + cosine
   learning rate, EMA of the weights), as a subprocess with the flags printed below;
3. ``yolo-eval`` runs the last checkpoint's EMA weights over the val shards (letterbox eval
   pipeline, box decoding, class-aware NMS, mapping back to original pixels) and scores the COCO results
   json with pycocotools, also as a subprocess; the results file is then re-scored here to record the
   12 numbers at full precision.

It prints mAP@0.5 and mAP@0.5:0.95, the time of each part (generation + conversion, training,
evaluation, total) and the 1-minute load average before and after, and writes all of it, with the
recipe, to ``--json``. The target of the project is mAP@0.5 >= 0.8 within 15 minutes on a 2-core CPU;
the last line says whether this run met it. Timings depend on what else runs on the machine: compare
figures only between runs made under the same load.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import os
import platform
import re
import shutil
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from yolomodel.demo import (Recipe, coco_scores, convert_splits, eval_command, generate_dataset,  # noqa: E402
                            load_average, run_checkpoint, loss_curve, run_streaming, train_command)

TARGET_MAP50 = 0.8
TARGET_SECONDS = 15 * 60


# ---------------------------------------------------------------------------------------------
# Command line
# ---------------------------------------------------------------------------------------------

def _pair(kind):
    def parse(text):
        parts = [p for p in re.split(r"[,x ]", str(text)) if p]
        if len(parts) != 2:
            raise argparse.ArgumentTypeError(f"expected two numbers like 'A,B', got {text!r}")
        try:
            return tuple(kind(p) for p in parts)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected two numbers like 'A,B', got {text!r}") from None
    return parse


def build_parser() -> argparse.ArgumentParser:
    defaults = Recipe()
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--output_dir", type=Path, default=ROOT / "outputs" / "synthetic_map",
                        help="dataset, shards, checkpoints, logs and results (replaced on each run)")
    parser.add_argument("--json", type=Path, default=None, help="write the figures and the recipe here")
    parser.add_argument("--keep_checkpoints", type=int, default=1,
                        help="epoch checkpoints to keep (more lets you evaluate earlier epochs)")
    recipe = parser.add_argument_group("recipe (defaults: the benchmark's)")
    for field in dataclasses.fields(Recipe):
        value = getattr(defaults, field.name)
        if isinstance(value, tuple):
            kind = _pair(type(value[0]))
            shown = ",".join(str(v) for v in value)
        else:
            kind, shown = type(value), value
        recipe.add_argument(f"--{field.name}", type=kind, default=value, help=f"default {shown}")
    return parser


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    recipe = Recipe(**{f.name: getattr(args, f.name) for f in dataclasses.fields(Recipe)})
    try:
        recipe.check()
    except ValueError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    output_dir = args.output_dir.resolve()
    run_dir = output_dir / "train"
    for stale in (run_dir, output_dir / "eval"):
        if stale.exists():
            shutil.rmtree(stale)
    output_dir.mkdir(parents=True, exist_ok=True)
    print(f"recipe: {recipe.describe()}")
    load_before = load_average()
    print(f"CPU count {os.cpu_count()}, load average (1 min) {load_before}", flush=True)

    times = {}
    started = time.perf_counter()
    shards = convert_splits(generate_dataset(recipe, output_dir), output_dir)
    times["generate_convert"] = time.perf_counter() - started

    mark = time.perf_counter()
    train_output = run_streaming(train_command(recipe, shards["train"], shards["val"], run_dir,
                                               keep_checkpoints=args.keep_checkpoints),
                                 log_file=output_dir / "train_output.txt")
    times["train"] = time.perf_counter() - mark
    checkpoint = run_checkpoint(run_dir, "last.ckpt")

    mark = time.perf_counter()
    results_file = output_dir / "eval" / "results.json"
    run_streaming(eval_command(recipe, checkpoint, shards["val"], results_file),
                  log_file=output_dir / "eval_output.txt")
    scores = coco_scores(shards["val"], results_file)
    times["eval"] = time.perf_counter() - mark
    times["total"] = time.perf_counter() - started
    load_after = load_average()

    met = scores["map50"] >= TARGET_MAP50 and times["total"] <= TARGET_SECONDS
    curve = loss_curve(train_output)
    print("\n==== synthetic mAP benchmark ====")
    print(f"recipe            {recipe.describe()}")
    print(f"mAP@0.5           {scores['map50']:.4f}")
    print(f"mAP@0.5:0.95      {scores['map50_95']:.4f}")
    print(f"time              generation+conversion {times['generate_convert']:.1f} s, training "
          f"{times['train']:.1f} s, evaluation {times['eval']:.1f} s, total {times['total']:.1f} s "
          f"({times['total'] / 60:.1f} min)")
    if curve:
        print(f"loss              {curve[0]['loss']:.3f} (iter {curve[0]['iter']}) -> {curve[-1]['loss']:.3f} "
              f"(iter {curve[-1]['iter']})")
    print(f"load average      {load_before} before, {load_after} after ({os.cpu_count()} CPUs)")
    print(f"checkpoint        {checkpoint}")
    print(f"target            mAP@0.5 >= {TARGET_MAP50} within {TARGET_SECONDS // 60} min: "
          f"{'met' if met else 'NOT met'}")
    if args.json is not None:
        import mindspore

        report = {"map50": scores["map50"], "map50_95": scores["map50_95"], "coco_stats": scores["stats"],
                  "seconds": {k: round(v, 2) for k, v in times.items()}, "target_met": met,
                  "load_average_before": load_before, "load_average_after": load_after,
                  "cpu_count": os.cpu_count(), "recipe": dataclasses.asdict(recipe),
                  "recipe_text": recipe.describe(), "checkpoint": str(checkpoint), "loss_curve": curve,
                  "mindspore": mindspore.__version__, "python": platform.python_version(),
                  "machine": platform.machine()}
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(report, indent=2))
        print(f"figures written to {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
