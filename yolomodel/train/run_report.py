"""What a training run leaves to look at besides its checkpoints and results.csv (rank 0 writes, atomically):

* ``train_batch0.jpg`` .. ``train_batch2.jpg``: the first three batches of the run exactly as the step
  got them (after augmentation, and after a test's batch hook), boxes outlined and named;
* at every validation whose fitness is the best so far: the per-class report of that validation
  (``per_class.csv``, ``confusion_matrix.png``/``.csv``, ``PR_curve.png``, ``F1_curve.png``,
  ``P_curve.png``, ``R_curve.png``; ``yolomodel.class_report``) and ``val_batch0_labels.jpg`` /
  ``val_batch0_pred.jpg`` (the first val batch with its ground truth, and with the detections scoring
  above 0.25), each file replaced as a whole, so the folder always holds the best epoch's set;
* in the log after every validation: P and R (at the confidence maximising the mean F1), AP@0.5 and
  AP@0.5:0.95 of all classes and the five worst classes; at the run's last validation the whole
  per-class table.

The figures and pictures are made only at a new best; the other validations only add the numbers
(read from the evaluation's own COCOeval) and the log lines.
"""
from __future__ import annotations

import time
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

from yolodata.fileio import write_file_atomic
from yolodata.pipeline import TRAIN_COLUMNS
from yolodata.visualize.batch_pictures import eval_batch_grids, train_batch_grid
from yolodata.visualize.drawing import encode_grid

from ..class_report import REPORT_FILES, format_class_table, worst_classes_line, write_class_report
from ..metrics import class_metrics

NUM_TRAIN_BATCH_PICTURES = 3
VAL_LABELS_PICTURE = "val_batch0_labels.jpg"
VAL_PRED_PICTURE = "val_batch0_pred.jpg"


def train_batch_picture_name(iteration: int) -> str:
    return f"train_batch{int(iteration)}.jpg"


def report_file_names() -> list[str]:
    """Every file a run may leave here, in the order the closing summary lists them."""
    return ([train_batch_picture_name(i) for i in range(NUM_TRAIN_BATCH_PICTURES)] + list(REPORT_FILES)
            + [VAL_LABELS_PICTURE, VAL_PRED_PICTURE])


def letterboxed_truth(ground_truth, image_id: int, scale: float, pad, class_of_category: dict) -> np.ndarray:
    """float32 (N, 6) label array (x1, y1, x2, y2, class, iscrowd) of an image's COCO ground truth, moved
    into its letterboxed eval pixels (original * scale + pad)."""
    annotations = ground_truth.imgToAnns.get(int(image_id), [])
    labels = np.zeros((len(annotations), 6), np.float64)
    for row, annotation in enumerate(annotations):
        x, y, w, h = annotation["bbox"]
        labels[row] = (x, y, x + w, y + h, class_of_category[annotation["category_id"]],
                       1.0 if annotation.get("iscrowd", 0) else 0.0)
    pad_x, pad_y = (float(v) for v in np.asarray(pad).reshape(2))
    labels[:, :4] = labels[:, :4] * float(scale) + np.array([pad_x, pad_y, pad_x, pad_y])
    return labels.astype(np.float32)


class RunReport:
    """Writes the pictures and per-class reports of a run into ``run_dir`` (``rank`` 0 only)."""

    def __init__(self, run_dir: str | Path, class_names: Sequence[str], category_ids: Sequence[int], rank: int,
                 log: Callable[[str], None]):
        self.run_dir = Path(run_dir)
        self.class_names = [str(n) for n in class_names]
        self.category_ids = np.asarray(category_ids, np.int64)
        self.enabled = int(rank) == 0
        self.log = log
        self.best_epoch: int | None = None

    def after_step(self, iteration: int, columns) -> None:
        """Draw ``train_batch{iteration}.jpg`` for the run's first iterations; ``columns`` in
        ``TRAIN_COLUMNS`` order, as the step got them."""
        if not self.enabled or iteration >= NUM_TRAIN_BATCH_PICTURES:
            return
        named = dict(zip(TRAIN_COLUMNS, columns))
        grid = train_batch_grid(named["image"], named["boxes"], named["image_id"], self.class_names)
        write_file_atomic(self.run_dir / train_batch_picture_name(iteration), encode_grid(grid, ".jpg"))

    def after_validation(self, outcome, epoch_number: int, last: bool) -> float:
        """Log the "all" row and the worst classes (the whole per-class table when ``last``), and write the
        best epoch's report and pictures when ``outcome`` improved; the seconds this took."""
        evaluator = getattr(outcome, "evaluator", None)
        if not self.enabled or evaluator is None:
            return 0.0
        started = time.perf_counter()
        metrics = class_metrics(evaluator, self.category_ids, self.class_names)
        if last:
            self.log(f"per-class results of the last validation (epoch {epoch_number}):\n"
                     + format_class_table(metrics) + "\n" + worst_classes_line(metrics))
        else:
            self.log(format_class_table(metrics, per_class=False) + "\n" + worst_classes_line(metrics))
        if outcome.improved:
            write_class_report(metrics, self.run_dir)
            if outcome.first_batch is not None:
                self.write_val_batch_pictures(outcome.first_batch, evaluator.cocoGt)
            self.best_epoch = int(epoch_number)
            empty = (" (no detections: the curves are empty)" if metrics.num_detections == 0 else "")
            self.log(f"per-class report and val batch pictures of epoch {epoch_number} (the best so far) written "
                     f"to {self.run_dir}{empty}")
        return time.perf_counter() - started

    def write_val_batch_pictures(self, first_batch, ground_truth) -> None:
        """``val_batch0_labels.jpg`` and ``val_batch0_pred.jpg`` of the first val batch."""
        class_of_category = {int(c): k for k, c in enumerate(self.category_ids.tolist())}
        truth = [letterboxed_truth(ground_truth, image_id, first_batch.scale[k], first_batch.pad[k],
                                   class_of_category) if image_id >= 0 else np.zeros((0, 6), np.float32)
                 for k, image_id in enumerate(first_batch.image_ids.tolist())]
        labels_grid, pred_grid = eval_batch_grids(first_batch.images, first_batch.image_ids, truth,
                                                  first_batch.detections, self.class_names)
        write_file_atomic(self.run_dir / VAL_LABELS_PICTURE, encode_grid(labels_grid, ".jpg"))
        write_file_atomic(self.run_dir / VAL_PRED_PICTURE, encode_grid(pred_grid, ".jpg"))

    def summary(self) -> str | None:
        """One line listing the pictures and reports present in the run folder (None when there are none)."""
        present = [name for name in report_file_names() if (self.run_dir / name).is_file()]
        if not self.enabled or not present:
            return None
        best = f" (per-class report and val pictures of epoch {self.best_epoch}, the best)" if self.best_epoch else ""
        return f"pictures and reports in {self.run_dir}{best}: {', '.join(present)}"
