"""yolodata: COCO-format datasets to sharded MindRecord, and the YOLOv5 input pipelines on them."""
from .augment.policy import AugmentConfig
from .pipeline import create_eval_dataset, create_train_dataset

__all__ = ["AugmentConfig", "create_eval_dataset", "create_train_dataset"]
__version__ = "0.1.0"
