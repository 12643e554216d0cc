"""yolomodel: the YOLOv5 network (v5.0 and v6.0 layouts) for MindSpore, its loss, evaluation, training and import."""
from .loss import YoloLoss
from .network import YOLOV5_LAYOUTS, YOLOV5_VERSIONS, InferenceNet, YOLOv5, create_yolov5

__all__ = ["YOLOV5_LAYOUTS", "YOLOV5_VERSIONS", "InferenceNet", "YOLOv5", "YoloLoss", "create_yolov5"]
