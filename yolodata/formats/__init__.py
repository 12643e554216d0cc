"""Source formats other than COCO json: each reader turns a dataset on disk into the COCO-style
document the converter checks and writes (see ``common``).

- ``yolo_txt.read_yolo_dataset(data_file, split)``: Ultralytics ``data.yaml`` or Darknet ``obj.data``;
- ``voc.read_voc_dataset(voc_dir, split, names_file=..., difficult=...)``: Pascal VOC XML.
"""
from .common import FormatError, SourceDataset, SourceProblem
from .voc import DIFFICULT_MODES, read_voc_dataset
from .yolo_txt import read_yolo_dataset

SOURCE_FORMATS = ("coco", "yolo", "voc")

__all__ = ["DIFFICULT_MODES", "FormatError", "SOURCE_FORMATS", "SourceDataset", "SourceProblem", "read_voc_dataset",
           "read_yolo_dataset"]
