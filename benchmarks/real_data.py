"""Where the real test and benchmark data is: the folder ``YOLO_REAL_DATA`` names, else ``shared/data``
beside the project (coco128, labelme_voc3, image quirks, cocoapi's example, YOLOv5 checkpoints).

Benchmarks build their large image sets by repeating coco128's real JPEGs; tests read the folders
directly (tests/conftest.py). A fresh clone may not have the folder: the users of these paths say so.
"""
from __future__ import annotations

import os
from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parents[1]
REAL_DATA = Path(os.environ.get("YOLO_REAL_DATA") or PROJECT_ROOT.parent / "shared" / "data")
COCO128 = REAL_DATA / "coco128"
