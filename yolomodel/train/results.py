"""What validation during training keeps: the best fitness so far, patience, ``results.csv`` and its curves.

* Fitness is YOLOv5's: ``0.1 * mAP@0.5 + 0.9 * mAP@0.5:0.95``; a checkpoint becomes ``best.ckpt`` when
  its fitness is strictly above every earlier one.
* ``ValidationState`` travels in every checkpoint (``metadata``/``from_metadata``), so a resumed run
  compares against the same best fitness and counts patience on: an interrupted and resumed run ends
  with the same ``best.ckpt`` as an uninterrupted one.
* ``results.csv`` has one row per finished epoch (``RESULTS_COLUMNS``; the COCO numbers are empty for
  epochs that were not evaluated). Writing the row of epoch E drops every row of epoch E or later
  first, so a resumed run never duplicates an epoch; the file is rewritten atomically each time.
* ``results.png`` draws the train losses, the learning rate and the two mAPs per epoch.
"""
from __future__ import annotations

import csv
import dataclasses
import io
from pathlib import Path
from typing import Sequence

from yolodata.fileio import write_file_atomic

RESULTS_CSV = "results.csv"
RESULTS_PNG = "results.png"
FITNESS_WEIGHTS = (0.1, 0.9)              # of mAP@0.5 and mAP@0.5:0.95, as YOLOv5's fitness()
NO_FITNESS = -1.0                          # before the first evaluation (every real fitness is >= 0)
COCO_COLUMNS = (                           # pycocotools' 12 summary numbers, in its order
    "metrics/mAP_0.5:0.95", "metrics/mAP_0.5", "metrics/mAP_0.75", "metrics/mAP_small", "metrics/mAP_medium",
    "metrics/mAP_large", "metrics/AR_1", "metrics/AR_10", "metrics/AR_100", "metrics/AR_small",
    "metrics/AR_medium", "metrics/AR_large",
)
RESULTS_COLUMNS = (
    "epoch", "train/box_loss", "train/obj_loss", "train/cls_loss", "lr", "metrics/mAP_0.5", "metrics/mAP_0.5:0.95",
    "metrics/mAP_0.75", "metrics/mAP_small", "metrics/mAP_medium", "metrics/mAP_large", "metrics/AR_1",
    "metrics/AR_10", "metrics/AR_100", "metrics/AR_small", "metrics/AR_medium", "metrics/AR_large", "fitness",
    "time/epoch_s", "speed/images_per_s", "time/val_s",
)
_METADATA_KEYS = {"best_fitness": float, "best_epoch": int, "evaluations_since_best": int}
VALIDATION_METADATA_KEYS = tuple(_METADATA_KEYS)


def fitness(map50: float, map50_95: float) -> float:
    """YOLOv5's fitness of one evaluation."""
    return FITNESS_WEIGHTS[0] * float(map50) + FITNESS_WEIGHTS[1] * float(map50_95)


@dataclasses.dataclass(frozen=True)
class ValidationState:
    """The best evaluation so far and how many evaluations since then did not improve on it."""

    best_fitness: float = NO_FITNESS
    best_epoch: int = -1                   # 1-based epoch number of the best evaluation; -1 before any
    evaluations_since_best: int = 0

    def update(self, value: float, epoch_number: int) -> tuple["ValidationState", bool]:
        """(state after an evaluation of fitness ``value`` at ``epoch_number``, whether it is a new best)."""
        if value > self.best_fitness:
            return ValidationState(float(value), int(epoch_number), 0), True
        return dataclasses.replace(self, evaluations_since_best=self.evaluations_since_best + 1), False

    def patience_exhausted(self, patience: int | None) -> bool:
        """Whether ``patience`` evaluations in a row have not improved the fitness (None or 0: never)."""
        return bool(patience) and self.evaluations_since_best >= int(patience)

    def metadata(self) -> dict:
        return {key: getattr(self, key) for key in _METADATA_KEYS}

    @classmethod
    def from_metadata(cls, metadata: dict) -> "ValidationState":
        """The state a checkpoint recorded (the initial state for checkpoints written without validation)."""
        values = {key: kind(metadata[key]) for key, kind in _METADATA_KEYS.items() if key in metadata}
        return cls(**values)


def results_row(*, epoch_number: int, losses: Sequence[float], lr: float, epoch_seconds: float,
                images_per_second: float, coco_stats: Sequence[float] | None = None,
                val_seconds: float | None = None) -> dict:
    """One ``results.csv`` row: epoch (1-based), mean box/obj/cls losses, lr, the COCO numbers when the
    epoch was evaluated, the epoch's time and images/s, the validation time and the fitness."""
    box, obj, cls = (float(v) for v in losses)
    row = {"epoch": int(epoch_number), "train/box_loss": box, "train/obj_loss": obj, "train/cls_loss": cls,
           "lr": float(lr), "time/epoch_s": float(epoch_seconds), "speed/images_per_s": float(images_per_second)}
    if coco_stats is not None:
        stats = [float(v) for v in coco_stats]
        if len(stats) != len(COCO_COLUMNS):
            raise ValueError(f"coco_stats must hold pycocotools' {len(COCO_COLUMNS)} numbers, got {len(stats)}")
        row.update(zip(COCO_COLUMNS, stats))
        row["fitness"] = fitness(stats[1], stats[0])
        row["time/val_s"] = float(val_seconds or 0.0)
    return row


def read_results(path) -> list[dict]:
    """The rows of a ``results.csv`` (numbers as floats, epoch as int, empty cells as None)."""
    path = Path(path)
    if not path.is_file():
        return []
    with open(path, newline="", encoding="utf-8") as handle:
        return [{key: None if text in (None, "") else int(text) if key == "epoch" else float(text)
                 for key, text in record.items() if key is not None}
                for record in csv.DictReader(handle)]


def _cell(value) -> str:
    if value is None:
        return ""
    if isinstance(value, int):
        return str(value)
    return repr(float(value))  # full precision: the numbers equal what yolo-eval computes


def write_results(path, rows) -> Path:
    """``rows`` as ``results.csv`` (columns ``RESULTS_COLUMNS``), atomically."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(RESULTS_COLUMNS)
    for record in rows:
        writer.writerow([_cell(record.get(column)) for column in RESULTS_COLUMNS])
    return write_file_atomic(path, buffer.getvalue().encode("utf-8"))


def write_results_row(path, row: dict) -> list[dict]:
    """Add ``row`` to ``results.csv``, dropping rows of its epoch and later ones first; returns the rows."""
    kept = [old for old in read_results(path) if old.get("epoch") is not None and old["epoch"] < row["epoch"]]
    write_results(path, kept + [row])
    return kept + [row]


def plot_results(rows: Sequence[dict], path) -> Path:
    """``results.png``: train losses, lr and the two mAPs against the epoch; atomic."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = (("train/box_loss", "box loss"), ("train/obj_loss", "objectness loss"),
              ("train/cls_loss", "class loss"), ("lr", "learning rate"), ("metrics/mAP_0.5", "mAP@0.5"),
              ("metrics/mAP_0.5:0.95", "mAP@0.5:0.95"))
    figure, axes = plt.subplots(2, 3, figsize=(12, 6), tight_layout=True)
    for ax, (column, title) in zip(axes.ravel(), panels):
        points = [(r["epoch"], r[column]) for r in rows if r.get(column) is not None]
        if points:
            xs, ys = zip(*points)
            ax.plot(xs, ys, marker=".", linewidth=1.5)
        ax.set_title(title)
        ax.set_xlabel("epoch")
        ax.grid(alpha=0.3)
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=100, metadata={"Software": None})
    plt.close(figure)
    return write_file_atomic(path, buffer.getvalue())
