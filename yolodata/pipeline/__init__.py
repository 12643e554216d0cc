"""The read side: training and evaluation input pipelines on the converter's MindRecord shards.

The counterpart of ``yolodata.convert`` (which writes the shards). Modules, one concern each:

- ``sampler``: the deterministic distributed sample order, resume and the multi-scale schedule (pure);
- ``targets``: YOLOv5's target assignment, vectorised, into fixed-shape arrays; anchors and strides (pure);
- ``eval_batches``: which rows an eval batch holds and the (square or rect) shape it is letterboxed into
  (pure);
- ``rows``: the shard files of a folder (``resolve_mindrecord``), reading rows in a given order with
  ``MindDataset``, decoding them once each and naming a bad row;
- ``train``: ``create_train_dataset`` (sampler -> rows -> ``yolodata.augment.policy`` -> targets, in
  one per-batch function);
- ``eval``: ``create_eval_dataset`` (eval batches -> rows -> letterbox).

The names below are the package's interface. Importing it loads numpy and OpenCV, not MindSpore:
MindSpore's dataset engine is imported when the first dataset is made.
"""
from .eval import EVAL_COLUMNS, EvalBatchBuilder, create_eval_dataset
from .eval_batches import INTERPOLATIONS, EvalGeometry
from .rows import resolve_mindrecord
from .targets import STRIDES, YOLOV5_ANCHORS
from .train import TRAIN_COLUMNS, TrainBatchBuilder, create_train_dataset

__all__ = [
    "EVAL_COLUMNS", "EvalBatchBuilder", "create_eval_dataset",
    "INTERPOLATIONS", "EvalGeometry",
    "resolve_mindrecord",
    "STRIDES", "YOLOV5_ANCHORS",
    "TRAIN_COLUMNS", "TrainBatchBuilder", "create_train_dataset",
]
