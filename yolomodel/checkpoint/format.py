"""The project's checkpoint file format: names, metadata codec, reading and atomic writing.

Every checkpoint the project writes is one MindSpore ``.ckpt`` file:

* network parameters under their own names: ``backbone.*``, ``neck.*``, ``head.*`` (BatchNorm moving
  statistics included);
* EMA weights (training checkpoints): ``ema.<parameter name>`` (``EMA_PREFIX``) for every float parameter
  of the network, and ``ema_updates`` (int32); eval, infer and export use these (``checkpoint.loading``);
* metadata entries. The model description (``METADATA_KEYS``): ``format`` (str, ``CHECKPOINT_FORMAT`` or
  ``WEIGHTS_FORMAT``), ``yolov5_version`` (str), ``yolov5_layout`` (str, ``network.YOLOV5_LAYOUTS``;
  absent in checkpoints older than the v6.0 layout, which are all v5.0), ``num_classes``, ``anchors``
  (JSON of the (3, 3, 2) pixel anchors, ``encode_anchors``; absent for YOLOv5's defaults),
  ``class_names`` (JSON list, ``encode_class_names``) and ``source`` (where imported weights came from).
  Whoever writes a checkpoint may add its own entries (training adds its position, loss sums and
  validation state: ``yolomodel.train.checkpoint``) and passes their names to ``read_checkpoint``.

Metadata values: integers are stored as 0-d int64 entries (MindSpore's append_dict), floats as their
exact ``repr`` strings, strings as strings; ``read_checkpoint`` returns them as Python values. String
entries are metadata whatever their name.

A weights checkpoint (``WEIGHTS_FORMAT``, written by the YOLOv5 importer and, at the end of training,
as ``best_weights.ckpt`` / ``last_weights.ckpt`` by ``save_weights_file``) holds the network parameters
and the model description only. Training's weights files store the EMA weights in half precision
(``WEIGHTS_DTYPE_KEY`` = ``"float16"``), a sixth of a training checkpoint; readers
(``checkpoint.loading.read_weights``) give them back as float32, which reproduces the float32
detections within the tolerance ``benchmarks/half_weights.py`` measures (README, training).
A training checkpoint (``CHECKPOINT_FORMAT``) also holds what training
needs to resume exactly (``yolomodel.train.checkpoint`` describes those entries).

Writing is atomic: the file is written under a temporary name in the same folder and moved into place
with ``os.replace``, so a crash or a kill never leaves a truncated checkpoint under the final name. The
file gets the mode of the project's other outputs (0o666 minus the umask), not MindSpore's owner-only
0o400, so that the other users of a shared run folder can evaluate it.
"""
from __future__ import annotations

import json
from pathlib import Path

import mindspore as ms
import numpy as np

from yolodata.fileio import atomic_path

CHECKPOINT_FORMAT = "yolov5-train-1"
WEIGHTS_FORMAT = "yolov5-weights-1"
METADATA_KEYS = ("format", "yolov5_version", "yolov5_layout", "num_classes", "anchors", "class_names", "source")
EMA_PREFIX = "ema"          # EMA weights are stored as ``ema.<parameter name>``
WEIGHTS_DTYPE_KEY = "weights_dtype"     # "float16" in weights files stored in half precision


def encode_anchors(anchors) -> str:
    """Anchors (pixels, (3, 3, 2)) as the JSON text checkpoints record; float32 values survive exactly."""
    values = np.asarray(anchors, np.float32)
    return json.dumps([[[float(v) for v in pair] for pair in level] for level in values.tolist()])


def decode_anchors(metadata: dict):
    """The anchors a checkpoint records as float32 (3, 3, 2), or None (YOLOv5's defaults)."""
    text = metadata.get("anchors")
    if not text:
        return None
    try:
        return np.asarray(json.loads(text), np.float32)
    except (TypeError, ValueError) as error:
        raise ValueError(f"the checkpoint's anchors entry is not readable ({error})") from error


def encode_class_names(names) -> str:
    return json.dumps([str(name) for name in names], ensure_ascii=False)


def decode_class_names(metadata: dict):
    """The class names a checkpoint records (a list of str), or None."""
    text = metadata.get("class_names")
    if not text:
        return None
    try:
        names = json.loads(text)
    except (TypeError, ValueError):
        return None
    return [str(name) for name in names] if isinstance(names, list) else None


def save_checkpoint_atomic(path, entries, metadata: dict | None = None) -> Path:
    """Write ``entries`` (a Cell or a list of Parameters / {'name','data'} dicts) + metadata atomically."""
    final = Path(path)
    if final.suffix != ".ckpt":
        raise ValueError(f"checkpoint file names must end with .ckpt, got {final}")
    if isinstance(entries, (list, tuple)):
        entries = [e if isinstance(e, dict) else {"name": e.name, "data": e} for e in entries]
    with atomic_path(final) as temporary:
        ms.save_checkpoint(entries, str(temporary), append_dict=dict(metadata or {}))
    return final


def _python_value(value):
    if isinstance(value, str):
        return value
    array = np.asarray(value.asnumpy() if hasattr(value, "asnumpy") else value)
    return array.item() if array.ndim == 0 else array


def read_checkpoint(path, extra_metadata_keys=()) -> tuple[dict, dict]:
    """(parameters name -> Parameter, metadata name -> Python value) of a checkpoint file.

    ``METADATA_KEYS``, ``extra_metadata_keys`` (the writer's own numeric entries, e.g. training's
    position) and every string entry are metadata; everything else is a parameter.
    """
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"checkpoint {path} does not exist")
    try:
        loaded = ms.load_checkpoint(str(path))
    except Exception as error:  # noqa: BLE001 - name the file in any loading failure
        raise ValueError(f"cannot read checkpoint {path}: {error}") from error
    keys = METADATA_KEYS + tuple(key for key in extra_metadata_keys if key not in METADATA_KEYS)
    metadata = {k: _python_value(loaded.pop(k)) for k in keys if k in loaded}
    for key in list(loaded):
        if isinstance(loaded[key], str):  # unknown string entries are metadata too
            metadata[key] = loaded.pop(key)
    return loaded, metadata


def _as_numpy(value) -> np.ndarray:
    return np.asarray(value.asnumpy() if hasattr(value, "asnumpy") else value)


def save_weights_file(path, weights: dict, metadata: dict, *, half: bool = True) -> Path:
    """A weights checkpoint (``WEIGHTS_FORMAT``) of ``weights`` (network name -> array or Parameter), atomically.

    ``metadata``: the model description (``METADATA_KEYS``); ``half`` stores float32 values as float16
    (recorded as ``WEIGHTS_DTYPE_KEY``) so the file is half the size; readers return float32.
    """
    entries = []
    for name, value in weights.items():
        array = _as_numpy(value)
        if half and array.dtype == np.float32:
            array = array.astype(np.float16)
        entries.append({"name": name, "data": ms.Tensor(array)})
    described = dict(metadata, format=WEIGHTS_FORMAT)
    described[WEIGHTS_DTYPE_KEY] = "float16" if half else "float32"
    return save_checkpoint_atomic(path, entries, described)


def as_float32(weights: dict) -> dict:
    """``weights`` with every float16 value (a half-precision weights file's) as a float32 Parameter of its name."""
    converted = {}
    for name, value in weights.items():
        dtype = getattr(value, "dtype", None)
        if dtype == ms.float16 or dtype == np.float16:
            value = ms.Parameter(ms.Tensor(_as_numpy(value).astype(np.float32)), name=name)
        converted[name] = value
    return converted
