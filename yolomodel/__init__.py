"""yolomodel: the YOLOv5 network (v5.0 layout) for MindSpore, its loss, evaluation and training."""
from .loss import YoloLoss
from .network import YOLOV5_VERSIONS, InferenceNet, YOLOv5, create_yolov5

__all__ = ["YOLOV5_VERSIONS", "InferenceNet", "YOLOv5", "YoloLoss", "create_yolov5"]
