"""The proof: train yolov5n from scratch on the built-in synthetic dataset on CPU, then measure COCO mAP.

    python benchmarks/synthetic_map.py [--output_dir outputs/synthetic_map] [--json FILE]
        [--num_images 600] [--max_epoch 16] [--lr 0.02] [--mosaic 1.0] ...   (--help lists the recipe)

The whole chain runs as a user would run it:

1. ``yolodata.synthetic.make_synthetic_coco`` draws a COCO-format dataset (five shape classes on
   textured backgrounds, exact boxes) and ``yolodata.convert.convert_coco`` converts its train and val
   splits into MindRecord shards (what tools/make_synthetic_coco.py and tools/coco2mindrecord.py do);
2. ``tools/train.py`` trains yolov5n from random weights on the train shards (the input pipeline with
   mosaic/affine/HSV/flip and YOLOv5 targets, the network, the loss, Nesterov SGD, warmup + cosine
   learning rate, EMA of the weights), as a subprocess with the flags printed below;
3. ``tools/eval.py`` runs the last checkpoint's EMA weights over the val shards (letterbox eval
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
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from yolodata.checks import check_multiple_of  # noqa: E402

TARGET_MAP50 = 0.8
TARGET_SECONDS = 15 * 60
SEED = 0


@dataclasses.dataclass
class Recipe:
    """Everything that decides the result: dataset, input size, schedule and augmentation.

    The defaults are the benchmark's recipe (see the README's "Measured figures"); ``tools/demo.py``
    runs a shorter version of it.
    """

    # dataset (yolodata.synthetic.make_synthetic_coco)
    num_images: int = 1200                      # both splits together
    val_fraction: float = 1 / 6                 # 1200 -> 1000 train + 200 val images
    image_size: tuple[int, int] = (192, 192)    # height, width: the training shape, so no letterbox shrink
    objects_per_image: tuple[int, int] = (1, 8)
    object_size: tuple[float, float] = (0.15, 0.45)   # of the image side: 29-86 px, shapes stay legible
    background_fraction: float = 0.05
    # training (tools/train.py flags)
    yolov5_version: str = "yolov5n"
    training_shape: int = 192
    per_batch_size: int = 16
    max_epoch: int = 20
    lr: float = 0.1
    warmup_epochs: float = 1.0
    eta_min: float = 0.001                      # cosine annealing from lr to eta_min over max_epoch epochs
    momentum: float = 0.937                     # YOLOv5's hyp.scratch-low
    weight_decay: float = 0.005
    mosaic: float = 0.0                         # the pipeline's augmentation (YOLOv5 defaults otherwise):
    scale: float = 0.25                         # mosaic probability and random scale range 1 +- scale
    # evaluation (tools/eval.py flags)
    testing_shape: int = 192
    seed: int = SEED

    def augment(self) -> dict:
        return {"mosaic": float(self.mosaic), "scale": float(self.scale)}

    def describe(self) -> str:
        from yolodata.synthetic import split_and_backgrounds

        num_val = int(split_and_backgrounds(self.num_images, self.seed, self.val_fraction,
                                            self.background_fraction)[0].sum())
        return (f"{self.yolov5_version} from scratch, synthetic {self.num_images} images "
                f"({self.num_images - num_val} train + {num_val} val) of {self.image_size[0]}x{self.image_size[1]}, objects "
                f"{self.objects_per_image[0]}-{self.objects_per_image[1]} per image of "
                f"{self.object_size[0]:g}-{self.object_size[1]:g} of the short side; training shape "
                f"{self.training_shape}, batch {self.per_batch_size}, {self.max_epoch} epochs, lr {self.lr:g} "
                f"(warmup {self.warmup_epochs:g} epoch(s), cosine to {self.eta_min:g}), momentum {self.momentum:g}, "
                f"weight decay {self.weight_decay:g}, mosaic {self.mosaic:g}, scale +-{self.scale:g}; eval at {self.testing_shape}")


# ---------------------------------------------------------------------------------------------
# The steps (tools/demo.py uses them too)
# ---------------------------------------------------------------------------------------------

def generate_dataset(recipe: Recipe, output_dir: Path, *, log=print):
    """The recipe's synthetic COCO dataset in output_dir/synthetic (replaced): a ``SyntheticCoco``."""
    from yolodata.synthetic import make_synthetic_coco

    synthetic_dir = output_dir / "synthetic"
    if synthetic_dir.exists():
        shutil.rmtree(synthetic_dir)
    log(f"generating {recipe.num_images} synthetic images ({recipe.image_size[0]}x{recipe.image_size[1]}) "
        f"in {synthetic_dir}")
    return make_synthetic_coco(
        synthetic_dir, num_images=recipe.num_images, seed=recipe.seed, image_size=tuple(recipe.image_size),
        val_fraction=recipe.val_fraction, background_fraction=recipe.background_fraction,
        objects_per_image=tuple(recipe.objects_per_image), object_size=tuple(recipe.object_size))


def convert_splits(synthetic, output_dir: Path, *, shard_num: int = 2, log=print) -> dict:
    """Both splits of a ``SyntheticCoco`` as shards: {"train": output_dir/mindrecord_train, "val": ...}."""
    from yolodata.convert import convert_coco

    shards = {}
    for split, ann_file in (("train", synthetic.train_json), ("val", synthetic.val_json)):
        shards[split] = output_dir / f"mindrecord_{split}"
        log(f"converting {split}: {ann_file} -> {shards[split]}")
        convert_coco(synthetic.image_dir, ann_file, shards[split], shard_num=shard_num)
    return shards


def write_augment_yaml(recipe: Recipe, path: Path) -> Path:
    """A --config file for tools/train.py holding the augmentation options (yaml-only settings)."""
    import yaml

    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump({"augment": recipe.augment()}, sort_keys=True))
    return path


def train_command(recipe: Recipe, train_dir: Path, val_dir: Path, run_dir: Path, *, log_interval: int = 10,
                  keep_checkpoints: int = 1) -> list[str]:
    """The tools/train.py command line of the recipe (cosine annealing over the whole run)."""
    config = write_augment_yaml(recipe, run_dir / "augment.yaml")
    return [sys.executable, str(ROOT / "tools" / "train.py"), "--config", str(config),
            "--mindrecord", str(train_dir), "--val_mindrecord", str(val_dir),
            "--yolov5_version", recipe.yolov5_version, "--per_batch_size", str(recipe.per_batch_size),
            "--training_shape", str(recipe.training_shape), "--resize_rate", "0",
            "--max_epoch", str(recipe.max_epoch), "--lr", repr(recipe.lr),
            "--warmup_epochs", repr(recipe.warmup_epochs), "--lr_scheduler", "cosine_annealing",
            "--t_max", str(recipe.max_epoch), "--eta_min", repr(recipe.eta_min),
            "--momentum", repr(recipe.momentum), "--weight_decay", repr(recipe.weight_decay),
            "--seed", str(recipe.seed), "--log_interval", str(log_interval), "--ckpt_path", str(run_dir),
            "--keep_checkpoint_max", str(keep_checkpoints), "--device_target", "CPU"]


def eval_command(recipe: Recipe, checkpoint: Path, val_dir: Path, results_file: Path) -> list[str]:
    """The tools/eval.py command line (COCO defaults: conf 0.001, NMS IoU 0.65, 300 detections)."""
    return [sys.executable, str(ROOT / "tools" / "eval.py"), "--mindrecord", str(val_dir),
            "--pretrained", str(checkpoint), "--testing_shape", str(recipe.testing_shape),
            "--per_batch_size", "16", "--results_file", str(results_file), "--device_target", "CPU"]


def run_streaming(command: list[str], log_file: Path | None = None, prefix: str = "") -> str:
    """Run ``command``, echoing its output line by line as it comes; returns the output.

    Raises RuntimeError naming the command and its exit status when it fails.
    """
    lines = []
    print("$ " + " ".join(command), flush=True)
    handle = open(log_file, "w") if log_file is not None else None
    try:
        with subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, bufsize=1,
                              cwd=str(ROOT)) as process:
            for line in process.stdout:
                lines.append(line)
                if handle is not None:
                    handle.write(line)
                print(prefix + line, end="", flush=True)
            status = process.wait()
    finally:
        if handle is not None:
            handle.close()
    if status != 0:
        raise RuntimeError(f"{Path(command[1]).name} exited with status {status}"
                           + (f"; its output is in {log_file}" if log_file is not None else ""))
    return "".join(lines)


def last_checkpoint(run_dir: Path) -> Path:
    """The newest checkpoint tools/train.py wrote for rank 0 in ``run_dir``."""
    checkpoints = sorted((run_dir / "ckpt_0").glob("*.ckpt"), key=lambda p: p.stat().st_mtime)
    if not checkpoints:
        raise RuntimeError(f"training wrote no checkpoint in {run_dir / 'ckpt_0'}")
    return checkpoints[-1]


def loss_curve(train_output: str) -> list[dict]:
    """(epoch, iteration, loss, box, obj, cls) of every log line of tools/train.py's output."""
    pattern = re.compile(r"epoch\[(\d+)\], iter\[(\d+)\], loss:([-\d.eE+naif]+), .*box:([-\d.eE+naif]+), "
                         r"obj:([-\d.eE+naif]+), cls:([-\d.eE+naif]+)")
    curve = []
    for match in pattern.finditer(train_output):
        epoch, iteration, loss, box, obj, cls = match.groups()
        curve.append({"epoch": int(epoch), "iter": int(iteration), "loss": float(loss), "box": float(box),
                      "obj": float(obj), "cls": float(cls)})
    return curve


def coco_scores(val_dir: Path, results_file: Path) -> dict:
    """The 12 COCO numbers of a results file against the val shards' annotations.json."""
    from yolodata.schema import ANNOTATIONS_NAME
    from yolomodel.coco_eval import evaluate

    stats = [float(v) for v in evaluate(val_dir / ANNOTATIONS_NAME, results_file).stats]
    return {"map50_95": stats[0], "map50": stats[1], "map75": stats[2], "stats": stats}


def load_average() -> float | None:
    try:
        return round(os.getloadavg()[0], 2)
    except OSError:
        return None


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


def check_recipe(recipe: Recipe) -> None:
    for name in ("num_images", "per_batch_size", "max_epoch", "training_shape", "testing_shape"):
        if getattr(recipe, name) < 1:
            raise ValueError(f"--{name} must be at least 1, got {getattr(recipe, name)}")
    for name in ("training_shape", "testing_shape"):
        check_multiple_of(f"--{name}", getattr(recipe, name))


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    recipe = Recipe(**{f.name: getattr(args, f.name) for f in dataclasses.fields(Recipe)})
    try:
        check_recipe(recipe)
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
    checkpoint = last_checkpoint(run_dir)

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
