"""The MindRecord row layout written by the converter and read by every pipeline.

One row per image. Field names are a public contract: users and other tools read them by name.

MindRecord cannot carry an empty array through ``MindDataset`` (a (0, 4) float32 field reads back as
a 0-d scalar holding garbage; ``mindspore.mindrecord.FileReader`` reads it right). So every row stores at least one box row:
an image without boxes stores one all-zero placeholder box with class -1, and ``num_boxes`` says how
many leading rows are real. Every reader must slice with ``num_boxes`` (``row_labels`` does it).
"""
from __future__ import annotations

import numpy as np

SCHEMA_VERSION = 3
# Version 1 (converter < 1.3) has no original-size columns: its pictures are stored at their original
# size. Readers take the columns a set has from its manifest's schema_version (``columns_of``).
# Version 3 (converter 1.5, work units): the same columns, but ``row_index`` is the row's position
# within its own file (each file is written on its own, by any worker); in versions 1 and 2 it is the
# global position in the linked set. ``manifest.Manifest.stored_row_index`` maps a global row to the
# value its row holds, for either meaning.
READABLE_SCHEMA_VERSIONS = (1, 2, 3)
ROW_INDEX_PER_FILE_VERSION = 3
# The version hashed into a set's dataset_id (``manifest.compute_dataset_id``). Schema 2 only added
# columns and schema 3 only changed what row_index counts from, so it stays 1: the same images, labels and row order keep their identity, sample order and
# resume across the bump.
DATASET_ID_VERSION = 1

# Field name -> MindRecord schema entry.
MINDRECORD_SCHEMA = {
    "image": {"type": "bytes"},            # encoded image (original bytes when OpenCV decodes them right)
    "image_id": {"type": "int64"},         # original COCO image id
    "file_name": {"type": "string"},       # as in the json, relative to --image_dir
    "height": {"type": "int32"},           # of the stored (decoded) image
    "width": {"type": "int32"},
    "orig_height": {"type": "int32"},      # of the source picture (annotations.json's height); version 2
    "orig_width": {"type": "int32"},
    "stored_scale": {"type": "float64"},   # stored pixels per source pixel (1.0 unless --max_side shrank it)
    "num_boxes": {"type": "int32"},        # real rows in boxes/classes/iscrowd (0 for a background image)
    "boxes": {"type": "float32", "shape": [-1, 4]},   # xyxy pixels of the stored image
    "classes": {"type": "int32", "shape": [-1]},      # contiguous class index (manifest categories)
    "iscrowd": {"type": "int32", "shape": [-1]},      # 1 for COCO crowd annotations
    "row_index": {"type": "int64"},        # position of the row in its file (schema 3; global before), see above
}

FIELDS = tuple(MINDRECORD_SCHEMA)
ORIGINAL_SIZE_FIELDS = ("orig_height", "orig_width", "stored_scale")   # new in schema version 2


def columns_of(schema_version: int, wanted) -> list[str]:
    """``wanted`` column names, without the original-size columns a version 1 set does not have."""
    if int(schema_version) >= 2:
        return list(wanted)
    return [name for name in wanted if name not in ORIGINAL_SIZE_FIELDS]

# Columns of the internal label array used by every transform: float32 (N, 6).
# Boxes and their class and flags live in one array so that a filter can never separate them.
LABEL_COLUMNS = ("x1", "y1", "x2", "y2", "class", "iscrowd")
NUM_LABEL_COLUMNS = len(LABEL_COLUMNS)

MANIFEST_NAME = "manifest.json"
ANNOTATIONS_NAME = "annotations.json"
SHARD_PREFIX = "data.mindrecord"


def placeholder_arrays():
    """Arrays stored for an image without boxes (see the module docstring)."""
    return (np.zeros((1, 4), np.float32), np.full((1,), -1, np.int32), np.zeros((1,), np.int32))


def row_labels(num_boxes, boxes, classes, iscrowd) -> np.ndarray:
    """Label array float32 (num_boxes, 6) from the stored fields, honouring ``num_boxes``."""
    n = int(np.asarray(num_boxes).reshape(()))
    labels = np.empty((n, NUM_LABEL_COLUMNS), np.float32)
    if n:
        labels[:, :4] = np.asarray(boxes, np.float32).reshape(-1, 4)[:n]
        labels[:, 4] = np.asarray(classes).reshape(-1)[:n]
        labels[:, 5] = np.asarray(iscrowd).reshape(-1)[:n]
    return labels
