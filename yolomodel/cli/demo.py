"""The whole chain end to end on the built-in synthetic dataset, in a few minutes (what `make demo` runs).

    yolo-demo --output_dir demo_output [--num_images 1200] [--epochs 8] [--seed 0]
    (or: python tools/demo.py ...)

1. generate a synthetic COCO-format dataset (five shape classes on textured backgrounds, exact boxes);
2. convert its train and val splits to sharded MindRecord (as tools/coco2mindrecord.py does);
3. verify every shard with plain MindDataset against the manifest, and show one batch of the train and
   eval pipelines (columns, dtypes, shapes);
4. draw what training sees (yolo-visualize): a grid of augmented training batches and the label
   statistics figure;
5. train yolov5n from scratch for a few epochs on CPU (yolo-train; a short version of the recipe in
   ``yolomodel.demo.Recipe``, with which benchmarks/synthetic_map.py reaches mAP@0.5 >= 0.8), validating
   on the val split every other epoch (results.csv, results.png, best.ckpt);
6. evaluate best.ckpt's EMA weights on the val split with COCO mAP (yolo-eval);
7. draw detections on a few val images (yolo-infer) and export the network to ONNX (yolo-export);
and print where everything went. Steps 4-7 run the project's command-line tools as subprocesses with
this Python, exactly as a user would; their output is shown as it comes.

A short demo trains far less than the benchmark: expect a mAP@0.5 well below 0.8 (the figure shows that
the chain works, not the quality a longer run reaches).
"""
from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import shutil
import sys
import time
from pathlib import Path

from yolodata.augment.policy import AugmentConfig
from yolodata.checks import check_multiple_of
from yolodata.pipeline import EVAL_COLUMNS, TRAIN_COLUMNS, create_eval_dataset, create_train_dataset
from yolodata.verify import verify_output
from yolomodel.demo import (Recipe, coco_scores, convert_splits, eval_command, generate_dataset, load_average,
                            run_checkpoint, run_streaming, tool_command, train_command)

STEPS = 7
DEMO_EPOCHS = 8
DEMO_IMAGES = 1200
VALIDATE_EVERY = 2      # epochs between validations during training (and after the last one)


def demo_recipe(args) -> Recipe:
    """The benchmark's recipe, shortened to ``--epochs`` epochs on ``--num_images`` images."""
    return dataclasses.replace(Recipe(), num_images=args.num_images, max_epoch=args.epochs, seed=args.seed,
                               per_batch_size=args.per_batch_size,
                               training_shape=args.training_shape, testing_shape=args.training_shape)


def banner(number: int, text: str) -> None:
    print(f"\n[{number}/{STEPS}] {text}", flush=True)


def indent(text: str) -> None:
    print("      " + text, flush=True)


def augment_flags(recipe: Recipe) -> list[str]:
    """The recipe's augmentation options as yolo-visualize flags (so the grid shows what training sees)."""
    return [text for name, value in recipe.augment().items() for text in (f"--{name}", str(value))]


def first_batch_columns(train_dir: Path, val_dir: Path, recipe: Recipe) -> list[str]:
    """One train and one eval batch through the pipelines: their columns, dtypes and shapes."""
    lines = []
    train = create_train_dataset(train_dir, per_batch_size=recipe.per_batch_size,
                                 training_shape=recipe.training_shape, seed=recipe.seed,
                                 augment=AugmentConfig.from_mapping(recipe.augment()))
    evaluation = create_eval_dataset(val_dir, per_batch_size=recipe.per_batch_size,
                                     testing_shape=recipe.testing_shape)
    for title, dataset, names in (("train batch", train, TRAIN_COLUMNS), ("eval batch", evaluation, EVAL_COLUMNS)):
        iterator = dataset.create_tuple_iterator(output_numpy=True, num_epochs=1)
        batch = next(iterator)
        iterator.stop()   # one batch is all this step shows; let the pipeline's workers go
        lines.append(f"  {title}:")
        lines += [f"    {name:<22}{str(value.dtype):<9}{value.shape}" for name, value in zip(names, batch)]
    return lines


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--output_dir", type=Path, default=Path("demo_output"),
                        help="everything goes here (replaced on each run)")
    parser.add_argument("--num_images", type=int, default=DEMO_IMAGES, help="synthetic images, both splits")
    parser.add_argument("--epochs", type=int, default=DEMO_EPOCHS, help="training epochs")
    parser.add_argument("--training_shape", type=int, default=Recipe().training_shape,
                        help="train and eval input size (a multiple of 32)")
    parser.add_argument("--per_batch_size", type=int, default=Recipe().per_batch_size)
    parser.add_argument("--seed", type=int, default=0)
    return parser


def parse_args(argv=None) -> argparse.Namespace:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.num_images < 12:
        parser.error(f"--num_images must be at least 12 (both splits need images), got {args.num_images}")
    if args.epochs < 1 or args.per_batch_size < 1:
        parser.error("--epochs and --per_batch_size must be at least 1")
    try:
        check_multiple_of("--training_shape", args.training_shape)
    except ValueError as error:
        parser.error(str(error))
    return args


def main(argv=None) -> int:
    args = parse_args(argv)
    try:
        return run_demo(args)
    except RuntimeError as error:   # a tool failed; its own output above says why
        print(f"error: {error}", file=sys.stderr)
        return 1


@dataclasses.dataclass(frozen=True)
class DemoPaths:
    """Where the demo's steps write, below the output folder (the summary lists them)."""

    out: Path
    grid: Path
    labels: Path
    curves: Path
    run_dir: Path
    results_file: Path
    detections: Path
    onnx_file: Path

    @classmethod
    def below(cls, out: Path, recipe: Recipe) -> "DemoPaths":
        figures = out / "figures"
        return cls(out=out, grid=figures / "train_batches.jpg", labels=figures / "labels.png",
                   curves=figures / "results.png", run_dir=out / "train", results_file=out / "eval" / "results.json",
                   detections=out / "detections",
                   onnx_file=out / "export" / f"{recipe.yolov5_version}_synthetic_{recipe.testing_shape}.onnx")


@contextlib.contextmanager
def timed(times: dict, name: str):
    """Adds the seconds the block took to ``times[name]``."""
    mark = time.perf_counter()
    yield
    times[name] = time.perf_counter() - mark


def fresh_output_dir(output_dir: Path) -> Path:
    """``output_dir`` (resolved, created) without the folders an earlier demo left; the shards are kept."""
    out = output_dir.resolve()
    for stale in ("train", "eval", "figures", "detections", "export"):
        if (out / stale).exists():
            shutil.rmtree(out / stale)
    out.mkdir(parents=True, exist_ok=True)
    return out


def make_shards(recipe: Recipe, out: Path):
    """Steps 1 and 2: the synthetic dataset and its two MindRecord splits; (synthetic, shards by split)."""
    banner(1, "generate the synthetic dataset")
    synthetic = generate_dataset(recipe, out, log=indent)
    indent(f"{synthetic.num_train} train + {synthetic.num_val} val images, "
           f"{sum(synthetic.boxes_per_category.values())} boxes, {synthetic.num_background} without objects")
    banner(2, "convert both splits to MindRecord")
    return synthetic, convert_splits(synthetic, out, log=indent)


def verify_and_show(shards: dict, recipe: Recipe) -> bool:
    """Step 3: every shard verified (the report printed when one fails: False), then one batch of each pipeline."""
    banner(3, "verify the shards and look at one batch of each pipeline")
    for split in ("train", "val"):
        report = verify_output(shards[split])
        if not report.ok:
            print(report.format(), file=sys.stderr)
            return False
        print(f"      {split}: " + report.format().splitlines()[0], flush=True)
    print("\n".join(first_batch_columns(shards["train"], shards["val"], recipe)), flush=True)
    return True


def draw_training_view(recipe: Recipe, shards: dict, paths: DemoPaths) -> None:
    """Step 4: yolo-visualize's grid of training batches and label statistics."""
    banner(4, "draw training batches and label statistics (yolo-visualize)")
    run_streaming(tool_command("yolo-visualize", "--mindrecord", shards["train"], "--output", paths.grid,
                               "--labels", paths.labels, "--stage", "full", "--num", 16,
                               "--per_batch_size", recipe.per_batch_size, "--training_shape", recipe.training_shape,
                               "--seed", recipe.seed, *augment_flags(recipe)), prefix="      ")


def train(recipe: Recipe, shards: dict, paths: DemoPaths) -> Path:
    """Step 5: yolo-train from scratch, validating on the val split; returns best.ckpt."""
    banner(5, f"train {recipe.yolov5_version} from scratch for {recipe.max_epoch} epoch(s) (yolo-train)")
    run_streaming(train_command(recipe, shards["train"], shards["val"], paths.run_dir, eval_interval=VALIDATE_EVERY),
                  log_file=paths.out / "train_output.txt", prefix="      ")
    checkpoint = run_checkpoint(paths.run_dir, "best.ckpt")
    shutil.copyfile(paths.run_dir / "results.png", paths.curves)
    return checkpoint


def evaluate(recipe: Recipe, checkpoint: Path, shards: dict, paths: DemoPaths) -> dict:
    """Step 6: yolo-eval of ``checkpoint`` on the val split; its COCO scores."""
    banner(6, "evaluate on the val split: COCO mAP (yolo-eval)")
    run_streaming(eval_command(recipe, checkpoint, shards["val"], paths.results_file), prefix="      ")
    return coco_scores(shards["val"], paths.results_file)


def infer_and_export(recipe: Recipe, synthetic, checkpoint: Path, shards: dict, paths: DemoPaths) -> None:
    """Step 7: yolo-infer on four val images, yolo-export to ONNX."""
    banner(7, "draw detections on val images (yolo-infer) and export to ONNX (yolo-export)")
    val_images = sorted(synthetic.image_dir / image["file_name"] for image in _val_images(synthetic.val_json)[:4])
    run_streaming(tool_command("yolo-infer", "--pretrained", checkpoint, "--images", *val_images,
                               "--output_dir", paths.detections, "--mindrecord", shards["val"],
                               "--testing_shape", recipe.testing_shape), prefix="      ")
    paths.onnx_file.parent.mkdir(parents=True, exist_ok=True)
    run_streaming(tool_command("yolo-export", "--ckpt_file", checkpoint, "--file_format", "ONNX",
                               "--testing_shape", recipe.testing_shape, "--batch_size", 1,
                               "--file_name", paths.onnx_file), prefix="      ")


def print_summary(recipe: Recipe, synthetic, shards: dict, checkpoint: Path, scores: dict, paths: DemoPaths,
                  times: dict, total: float) -> None:
    """The time of each step, the scores, and where everything went."""
    print(f"\nsummary ({total:.0f} s in all: "
          + ", ".join(f"{name} {seconds:.0f} s" for name, seconds in times.items()) + ")")
    print(f"  mAP@0.5 {scores['map50']:.3f}, mAP@0.5:0.95 {scores['map50_95']:.3f} on {synthetic.num_val} val images "
          f"after {recipe.max_epoch} epoch(s) (benchmarks/synthetic_map.py trains longer: mAP@0.5 >= 0.8)")
    run_dir = paths.run_dir
    rows = [("synthetic COCO", synthetic.output_dir),
            ("train shards", f"{shards['train']}  ({synthetic.num_train} images)"),
            ("val shards", f"{shards['val']}  ({synthetic.num_val} images, annotations.json beside them)"),
            ("training batches", paths.grid), ("label statistics", paths.labels),
            ("checkpoint", f"{checkpoint}  (best validation fitness; EMA weights inside)"),
            ("last checkpoint", run_dir / "ckpt_0" / "last.ckpt"),
            ("results table", f"{run_dir / 'results.csv'}  (losses, lr, the 12 COCO numbers per epoch)"),
            ("training curves", paths.curves),
            ("training log", run_dir / "log_rank0.txt"), ("training config", run_dir / "config.yaml"),
            ("COCO results", paths.results_file), ("detections drawn", paths.detections),
            ("ONNX model", paths.onnx_file)]
    for name, where in rows:
        print(f"  {name:<18}{where}")


def run_demo(args) -> int:
    """The seven steps in order, each timed; 1 when the shards fail verification (a failing tool raises)."""
    recipe = demo_recipe(args)
    out = fresh_output_dir(args.output_dir)
    paths = DemoPaths.below(out, recipe)
    times = {}
    started = time.perf_counter()
    print(f"demo: {recipe.describe()}\nload average (1 min) {load_average()}", flush=True)
    with timed(times, "generate + convert"):
        synthetic, shards = make_shards(recipe, out)
    with timed(times, "verify"):
        if not verify_and_show(shards, recipe):
            return 1
    with timed(times, "visualize"):
        draw_training_view(recipe, shards, paths)
    with timed(times, "train"):
        checkpoint = train(recipe, shards, paths)
    with timed(times, "eval"):
        scores = evaluate(recipe, checkpoint, shards, paths)
    with timed(times, "infer + export"):
        infer_and_export(recipe, synthetic, checkpoint, shards, paths)
    print_summary(recipe, synthetic, shards, checkpoint, scores, paths, times, time.perf_counter() - started)
    print(f"load average (1 min) {load_average()}", flush=True)
    return 0


def _val_images(val_json: Path) -> list[dict]:
    return json.loads(Path(val_json).read_text())["images"]
