"""The synthetic-data recipe and the steps of the whole chain, shared by ``yolo-demo`` and the mAP benchmark.

``Recipe`` holds everything that decides the result of training yolov5n from scratch on the built-in
synthetic dataset: the dataset, input size, schedule and augmentation. Its defaults are the recipe of
``benchmarks/synthetic_map.py`` (the proof that the chain reaches a good mAP on CPU); ``yolo-demo``
(``make demo``) runs a shorter version of it.

The steps run the chain as a user would: the generator and the converter through the library, and the
training, evaluation, visualization, inference and export command-line tools as subprocesses of this
Python (``tool_command``), each printed before it runs.
"""
from __future__ import annotations

import dataclasses
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import yaml

from yolodata.checks import check_int, check_multiple_of
from yolodata.convert import convert_coco
from yolodata.fileio import write_file_atomic
from yolodata.manifest import load_manifest
from yolodata.synthetic import make_synthetic_coco, split_and_backgrounds

from .coco_eval import score_results

SEED = 0

# console script -> the module that holds its main (setup.cfg [options.entry_points])
CONSOLE_SCRIPTS = {
    "yolo-train": "yolomodel.cli.train",
    "yolo-eval": "yolomodel.cli.eval",
    "yolo-export": "yolomodel.cli.export",
    "yolo-infer": "yolomodel.cli.infer",
    "yolo-visualize": "yolodata.cli.visualize",
}


@dataclasses.dataclass
class Recipe:
    """Everything that decides the result: dataset, input size, schedule and augmentation."""

    # dataset (yolodata.synthetic.make_synthetic_coco)
    num_images: int = 1200                      # both splits together
    val_fraction: float = 1 / 6                 # 1200 -> 1000 train + 200 val images
    image_size: tuple[int, int] = (192, 192)    # height, width: the training shape, so no letterbox shrink
    objects_per_image: tuple[int, int] = (1, 8)
    object_size: tuple[float, float] = (0.15, 0.45)   # of the image side: 29-86 px, shapes stay legible
    background_fraction: float = 0.05
    # training (yolo-train flags)
    yolov5_version: str = "yolov5n"
    yolov5_layout: str = "v5.0"                 # v5.0 (the reference's) or v6.0
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
    # evaluation (yolo-eval flags)
    testing_shape: int = 192
    seed: int = SEED

    def augment(self) -> dict:
        return {"mosaic": float(self.mosaic), "scale": float(self.scale)}

    def check(self) -> None:
        """ValueError naming the first setting that cannot work."""
        for name in ("num_images", "per_batch_size", "max_epoch"):
            check_int(f"--{name}", getattr(self, name), minimum=1)
        for name in ("training_shape", "testing_shape"):
            check_multiple_of(f"--{name}", getattr(self, name))

    def describe(self) -> str:
        num_val = int(split_and_backgrounds(self.num_images, self.seed, self.val_fraction,
                                            self.background_fraction)[0].sum())
        return (f"{self.yolov5_version} ({self.yolov5_layout} layout) from scratch, synthetic {self.num_images} images "
                f"({self.num_images - num_val} train + {num_val} val) of {self.image_size[0]}x{self.image_size[1]}, "
                f"objects {self.objects_per_image[0]}-{self.objects_per_image[1]} per image of "
                f"{self.object_size[0]:g}-{self.object_size[1]:g} of the short side; training shape "
                f"{self.training_shape}, batch {self.per_batch_size}, {self.max_epoch} epochs, lr {self.lr:g} "
                f"(warmup {self.warmup_epochs:g} epoch(s), cosine to {self.eta_min:g}), momentum {self.momentum:g}, "
                f"weight decay {self.weight_decay:g}, mosaic {self.mosaic:g}, scale +-{self.scale:g}; "
                f"eval at {self.testing_shape}")


# ---------------------------------------------------------------------------------------------
# The steps
# ---------------------------------------------------------------------------------------------

def tool_command(script: str, *arguments) -> list[str]:
    """The command line of a project tool: its installed console script beside this Python, else
    ``python -m <module>`` (a checkout used without installing)."""
    installed = Path(sys.executable).with_name(script)
    head = [str(installed)] if installed.is_file() else [sys.executable, "-m", CONSOLE_SCRIPTS[script]]
    return head + [str(argument) for argument in arguments]


def generate_dataset(recipe: Recipe, output_dir: Path, *, log=print):
    """The recipe's synthetic COCO dataset in output_dir/synthetic (replaced): a ``SyntheticCoco``."""
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
    shards = {}
    for split, ann_file in (("train", synthetic.train_json), ("val", synthetic.val_json)):
        shards[split] = output_dir / f"mindrecord_{split}"
        log(f"converting {split}: {ann_file} -> {shards[split]}")
        convert_coco(synthetic.image_dir, ann_file, shards[split], shard_num=shard_num)
    return shards


def write_augment_yaml(recipe: Recipe, path: Path) -> Path:
    """A --config file for yolo-train holding the augmentation options (yaml-only settings)."""
    return write_file_atomic(path, yaml.safe_dump({"augment": recipe.augment()}, sort_keys=True).encode("utf-8"))


def train_command(recipe: Recipe, train_dir: Path, val_dir: Path, run_dir: Path, *, log_interval: int = 10,
                  keep_checkpoints: int = 1, eval_interval: int | None = None) -> list[str]:
    """The yolo-train command line of the recipe (cosine annealing over the whole run), validating on
    ``val_dir`` every ``eval_interval`` epochs (default: only after the last one)."""
    config = write_augment_yaml(recipe, run_dir / "augment.yaml")
    return tool_command(
        "yolo-train", "--config", config, "--mindrecord", train_dir, "--val_mindrecord", val_dir,
        "--yolov5_version", recipe.yolov5_version, "--yolov5_layout", recipe.yolov5_layout,
        "--per_batch_size", recipe.per_batch_size,
        "--training_shape", recipe.training_shape, "--resize_rate", 0, "--max_epoch", recipe.max_epoch,
        "--lr", repr(recipe.lr), "--warmup_epochs", repr(recipe.warmup_epochs), "--lr_scheduler", "cosine_annealing",
        "--t_max", recipe.max_epoch, "--eta_min", repr(recipe.eta_min), "--momentum", repr(recipe.momentum),
        "--weight_decay", repr(recipe.weight_decay), "--seed", recipe.seed, "--log_interval", log_interval,
        "--ckpt_path", run_dir, "--keep_checkpoint_max", keep_checkpoints, "--device_target", "CPU",
        "--eval_interval", eval_interval or recipe.max_epoch, "--testing_shape", recipe.testing_shape)


def eval_command(recipe: Recipe, checkpoint: Path, val_dir: Path, results_file: Path) -> list[str]:
    """The yolo-eval command line (COCO defaults: conf 0.001, NMS IoU 0.65, 300 detections)."""
    return tool_command("yolo-eval", "--mindrecord", val_dir, "--pretrained", checkpoint,
                        "--testing_shape", recipe.testing_shape, "--per_batch_size", 16,
                        "--results_file", results_file, "--device_target", "CPU")


def run_streaming(command: list[str], log_file: Path | None = None, prefix: str = "") -> str:
    """Run ``command``, echoing its output line by line as it comes; returns the output.

    Raises RuntimeError naming the command and its exit status when it fails.
    """
    lines = []
    print("$ " + " ".join(command), flush=True)
    handle = open(log_file, "w") if log_file is not None else None
    try:
        with subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                              bufsize=1) as process:
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
        name = command[2] if command[1:2] == ["-m"] else Path(command[0]).name
        raise RuntimeError(f"{name} exited with status {status}"
                           + (f"; its output is in {log_file}" if log_file is not None else ""))
    return "".join(lines)


def run_checkpoint(run_dir: Path, name: str = "last.ckpt") -> Path:
    """``last.ckpt`` (the end of the last epoch) or ``best.ckpt`` (the best validation) of a yolo-train run."""
    path = run_dir / "ckpt_0" / name
    if not path.is_file():
        raise RuntimeError(f"training wrote no {name} in {run_dir / 'ckpt_0'}")
    return path


def loss_curve(train_output: str) -> list[dict]:
    """(epoch, iteration, loss, box, obj, cls) of every log line of yolo-train's output."""
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
    stats = [float(v) for v in score_results(load_manifest(val_dir).annotations_path, results_file).stats]
    return {"map50_95": stats[0], "map50": stats[1], "map75": stats[2], "stats": stats}


def load_average() -> float | None:
    try:
        return round(os.getloadavg()[0], 2)
    except OSError:
        return None
