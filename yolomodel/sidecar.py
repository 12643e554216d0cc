"""The small json ``yolo-export`` writes beside an exported model: what a runtime needs to use the file.

``model.onnx`` -> ``model.onnx.json`` (``sidecar_path``). It records the model (size, layout, class
count and names, anchors, strides), the graph's input (name, uint8, NHWC, RGB, 0..255, the square
side it was exported for, fixed or dynamic batch, the letterbox that makes it) and output (name and
column meaning), where the weights came from, and the SHA-256 of the exported file, so that a sidecar
that belongs to another file (a model re-exported at another size, a file replaced by hand) is told
apart instead of silently giving wrong class names or geometry.

``read_sidecar`` checks the document against the file; ``ExportedModelError`` says what is wrong and
how to fix it (export again with ``yolo-export``, or copy the ``.json`` along with the model).
"""
from __future__ import annotations

import hashlib
import json
from pathlib import Path

from yolodata.fileio import write_file_atomic

SIDECAR_SUFFIX = ".json"
SIDECAR_KIND = "yolov5-mindspore-exported-model"
SIDECAR_VERSION = 1
DYNAMIC = "dynamic"
OUTPUT_COLUMNS = "cx, cy, w, h (input pixels), objectness, class probabilities"
HASH_CHUNK = 1 << 20
REQUIRED_FIELDS = ("file_format", "sha256", "yolov5_version", "yolov5_layout", "num_classes", "testing_shape",
                   "batch_size", "input", "output")


class ExportedModelError(ValueError):
    """An exported model that cannot be used as it is (sidecar missing, unreadable or of another file)."""


def sidecar_path(exported) -> Path:
    """``model.onnx`` -> ``model.onnx.json``."""
    exported = Path(exported)
    return exported.with_name(exported.name + SIDECAR_SUFFIX)


def file_sha256(path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as stream:
        for chunk in iter(lambda: stream.read(HASH_CHUNK), b""):
            digest.update(chunk)
    return digest.hexdigest()


def build_sidecar(exported, *, file_format: str, loaded, testing_shape: int, batch_size, input_name: str,
                  output_name: str) -> dict:
    """The sidecar document of the exported file ``exported`` made from ``loaded`` (a ``LoadedModel``).

    ``batch_size``: the graph's fixed batch, or ``DYNAMIC``.
    """
    exported = Path(exported)
    return {
        "kind": SIDECAR_KIND,
        "sidecar_version": SIDECAR_VERSION,
        "file": exported.name,
        "file_format": file_format,
        "sha256": file_sha256(exported),
        "yolov5_version": loaded.version,
        "yolov5_layout": loaded.layout,
        "num_classes": int(loaded.num_classes),
        "class_names": list(loaded.class_names) if loaded.class_names is not None else None,
        "anchors": [[[float(v) for v in pair] for pair in level] for level in loaded.anchors.tolist()]
        if loaded.anchors is not None else None,
        "strides": [int(s) for s in loaded.network.strides],
        "testing_shape": int(testing_shape),
        "batch_size": batch_size if batch_size == DYNAMIC else int(batch_size),
        "input": {"name": input_name, "dtype": "uint8", "layout": "NHWC", "channels": "RGB", "range": [0, 255],
                  "letterbox": {"scaleup": False, "pad_value": 114, "centred": True}},
        "output": {"name": output_name, "dtype": "float32", "columns": OUTPUT_COLUMNS, "nms_inside": False},
        "weights": loaded.weights,
        "checkpoint": str(loaded.checkpoint),
    }


def write_sidecar(exported, document: dict) -> Path:
    """Write ``document`` as the sidecar of ``exported``, atomically; returns its path."""
    path = sidecar_path(exported)
    write_file_atomic(path, (json.dumps(document, indent=1, ensure_ascii=False) + "\n").encode("utf-8"))
    return path


def read_sidecar(exported, *, file_format: str) -> dict:
    """The sidecar of ``exported``, checked: present, readable, complete, of ``file_format``, of this file."""
    exported = Path(exported)
    path = sidecar_path(exported)
    again = f"export again with yolo-export (it writes {path.name} beside {exported.name}), or copy {path.name} " \
            f"along with the model"
    if not path.is_file():
        raise ExportedModelError(f"{exported} has no sidecar {path}: it holds the class names, input size and "
                                 f"layout the model needs; {again}")
    try:
        document = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError) as error:
        raise ExportedModelError(f"sidecar {path} cannot be read as json ({error}); {again}") from error
    if not isinstance(document, dict) or document.get("kind") != SIDECAR_KIND:
        raise ExportedModelError(f"{path} is not a sidecar written by yolo-export (no \"kind\": \"{SIDECAR_KIND}\"); "
                                 f"{again}")
    if document.get("sidecar_version") != SIDECAR_VERSION:
        raise ExportedModelError(f"{path} is a sidecar of version {document.get('sidecar_version')!r}; this tool "
                                 f"reads version {SIDECAR_VERSION}; {again}")
    missing = [name for name in REQUIRED_FIELDS if name not in document]
    if missing:
        raise ExportedModelError(f"sidecar {path} lacks {', '.join(missing)}; {again}")
    if document["file_format"] != file_format:
        raise ExportedModelError(f"sidecar {path} describes a {document['file_format']} file but {exported.name} is "
                                 f"read as {file_format}; {again}")
    if file_sha256(exported) != document["sha256"]:
        raise ExportedModelError(f"sidecar {path} belongs to another file: {exported.name}'s SHA-256 differs from "
                                 f"the one recorded (the model was replaced or re-exported, e.g. at another size "
                                 f"or for another model, without its sidecar); {again}")
    return document
