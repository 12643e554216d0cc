"""yolodata: COCO-format datasets to sharded MindRecord, and the YOLOv5 input pipelines on them.

- write side: ``formats`` (YOLO txt, Pascal VOC readers) -> ``convert`` (checks, shards, manifest) -> ``verify``;
- read side: ``pipeline`` (sampler, targets, row decoding, train and eval pipelines) with ``augment``
  (the per-sample transforms and YOLOv5's training policy);
- ``visualize`` (sample grids, label statistics) and ``cli`` (the console scripts' mains).

The three names below are loaded on first use (module ``__getattr__``), so that importing a part of
the package (the converter, a format reader, ``yolo-coco2mindrecord --help``) does not load the
pipelines and the augmentations.
"""
import importlib

_LAZY = {
    "AugmentConfig": "yolodata.augment.policy",
    "create_eval_dataset": "yolodata.pipeline",
    "create_train_dataset": "yolodata.pipeline",
}

__all__ = ["AugmentConfig", "create_eval_dataset", "create_train_dataset"]
__version__ = "0.1.0"


def __getattr__(name: str):
    if name not in _LAZY:
        raise AttributeError(f"module 'yolodata' has no attribute {name!r}")
    value = getattr(importlib.import_module(_LAZY[name]), name)
    globals()[name] = value  # later look-ups skip this function
    return value


def __dir__():
    return sorted(set(globals()) | set(_LAZY))
