"""Training checkpoints: layout, atomic writing, exact resume, and weights-only loading.

Layout of a training checkpoint (one MindSpore ``.ckpt`` file)
--------------------------------------------------------------
* network parameters under their own names: ``backbone.*``, ``neck.*``, ``head.*`` (BatchNorm moving
  statistics included);
* EMA: ``ema.<parameter name>`` for every float parameter of the network, and ``ema_updates`` (int32);
  eval and export should use these (``load_inference_weights``);
* optimizer state: ``global_step`` and ``moments.<parameter name>`` (nn.Momentum's names); the learning
  rate is not stored, it comes from the schedule and the position;
* loss scale: ``loss_scale`` (float32), plus ``current_iterator_step`` / ``last_overflow_iterator_step``
  with the dynamic loss scale;
* metadata entries (``METADATA_KEYS``): ``format`` (str, ``CHECKPOINT_FORMAT``), ``epoch`` and ``step``
  (the position to continue from: 0-based epoch and the number of steps of that epoch already done),
  ``steps_completed`` (all steps so far), ``seed``, ``dataset_id`` (str), ``yolov5_version`` (str),
  ``num_classes``, ``training_shape``, ``global_batch_size``. Integers are stored as 0-d int64 entries
  (MindSpore's append_dict), strings as strings; ``read_checkpoint`` returns them as Python values.

Writing is atomic: the file is written under a temporary name in the same folder and moved into place
with ``os.replace``, so a crash or a kill never leaves a truncated checkpoint under the final name.
"""
from __future__ import annotations

import dataclasses
import logging
from pathlib import Path

import mindspore as ms
import numpy as np
from mindspore import Parameter, nn

from yolodata.fileio import atomic_path

from .ema import EMA_PREFIX

logger = logging.getLogger(__name__)

CHECKPOINT_FORMAT = "yolov5-train-1"
HEAD_PREFIX = "head."
BACKBONE_PREFIX = "backbone."
# optimizer hyper-parameters that come from the configuration, not from the checkpoint
NOT_SAVED = ("learning_rate", "momentum")
METADATA_KEYS = ("format", "epoch", "step", "steps_completed", "seed", "dataset_id", "yolov5_version",
                 "num_classes", "training_shape", "global_batch_size")
_STRING_KEYS = ("format", "dataset_id", "yolov5_version")


@dataclasses.dataclass(frozen=True)
class TrainState:
    """Where a run stands, stored in every checkpoint."""

    epoch: int              # epoch of the next step (0-based)
    step: int               # steps of that epoch already done
    steps_completed: int    # steps done since the start of training
    seed: int
    dataset_id: str
    yolov5_version: str
    num_classes: int
    training_shape: int
    global_batch_size: int

    def metadata(self) -> dict:
        values = dataclasses.asdict(self)
        values["format"] = CHECKPOINT_FORMAT
        return values


def checkpoint_file_name(rank: int, epoch_number: int, step_in_epoch: int) -> str:
    """The reference's naming: ``{rank}-{epoch (1-based)}_{steps done in that epoch}.ckpt``."""
    return f"{int(rank)}-{int(epoch_number)}_{int(step_in_epoch)}.ckpt"


def saved_parameters(cell: nn.Cell) -> list[Parameter]:
    """The parameters of a training cell that a checkpoint holds (everything but lr and momentum)."""
    seen, params = set(), []
    for param in cell.get_parameters():
        if param.name in NOT_SAVED or param.name in seen:
            continue
        seen.add(param.name)
        params.append(param)
    return params


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


def save_train_checkpoint(path, train_cell: nn.Cell, state: TrainState) -> Path:
    """Weights, EMA, optimizer and loss-scale state of ``train_cell`` plus ``state``, atomically."""
    return save_checkpoint_atomic(path, saved_parameters(train_cell), state.metadata())


def _python_value(value):
    if isinstance(value, str):
        return value
    array = np.asarray(value.asnumpy() if hasattr(value, "asnumpy") else value)
    return array.item() if array.ndim == 0 else array


def read_checkpoint(path) -> tuple[dict, dict]:
    """(parameters name -> Parameter, metadata name -> Python value) of a checkpoint file."""
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"checkpoint {path} does not exist")
    try:
        loaded = ms.load_checkpoint(str(path))
    except Exception as error:  # noqa: BLE001 - name the file in any loading failure
        raise ValueError(f"cannot read checkpoint {path}: {error}") from error
    metadata = {k: _python_value(loaded.pop(k)) for k in METADATA_KEYS if k in loaded}
    for key in list(loaded):
        if isinstance(loaded[key], str):  # unknown string entries are metadata too
            metadata[key] = loaded.pop(key)
    return loaded, metadata


def train_state_from(metadata: dict, path) -> TrainState:
    """The TrainState of a training checkpoint; ValueError when the file is not one."""
    if metadata.get("format") != CHECKPOINT_FORMAT:
        raise ValueError(f"{path} is not a training checkpoint of this project (format "
                         f"{metadata.get('format')!r}, expected {CHECKPOINT_FORMAT!r}); --resume needs one "
                         f"written by tools/train.py. To start from its weights only, use --resume_yolov5.")
    fields = {f.name: metadata[f.name] for f in dataclasses.fields(TrainState)}
    for name in _STRING_KEYS:
        if name in fields:
            fields[name] = str(fields[name])
    return TrainState(**{k: (v if isinstance(v, str) else int(v)) for k, v in fields.items()})


def load_for_resume(train_cell: nn.Cell, path) -> TrainState:
    """Load everything a checkpoint holds into ``train_cell`` (exact resume) and return its TrainState.

    Every saved parameter of ``train_cell`` must be present with the same shape; otherwise ValueError
    naming what differs (a different model size, class count or loss-scale type).
    """
    params, metadata = read_checkpoint(path)
    state = train_state_from(metadata, path)
    expected = {p.name: p for p in saved_parameters(train_cell)}
    missing = sorted(set(expected) - set(params))
    mismatched = sorted(name for name in set(expected) & set(params)
                        if tuple(expected[name].shape) != tuple(params[name].shape))
    if missing or mismatched:
        raise ValueError(
            f"cannot resume from {path}: it does not match this training setup "
            f"({len(missing)} parameters missing, e.g. {missing[:3]}; {len(mismatched)} with another shape, "
            f"e.g. {mismatched[:3]}). Resume with the same --yolov5_version, dataset classes and "
            f"--loss_scale_type as the interrupted run.")
    ms.load_param_into_net(train_cell, {name: params[name] for name in expected}, strict_load=True)
    return state


def _matching(network: nn.Cell, params: dict, prefix_filter=None) -> tuple[dict, list, list]:
    """(entries to load, names skipped for another shape, network names without an entry)."""
    own = {p.name: p for p in network.get_parameters()}
    chosen, wrong_shape = {}, []
    for name, param in own.items():
        if prefix_filter is not None and not prefix_filter(name):
            continue
        if name not in params:
            continue
        if tuple(params[name].shape) != tuple(param.shape):
            wrong_shape.append(name)
            continue
        chosen[name] = params[name]
    absent = sorted(name for name in own if name not in chosen and name not in wrong_shape
                    and (prefix_filter is None or prefix_filter(name)))
    return chosen, wrong_shape, absent


def _assign(network: nn.Cell, chosen: dict) -> None:
    """Copy ``chosen`` (name -> checkpoint Parameter) into the network's parameters of those names.

    Used for partial loads, where ``load_param_into_net`` would warn about every parameter left out.
    """
    own = {p.name: p for p in network.get_parameters()}
    for name, value in chosen.items():
        target = own[name]
        target.set_data(ms.Tensor(value.asnumpy()).astype(target.dtype))


def model_weights(params: dict, use_ema: bool = True) -> tuple[dict, bool]:
    """(network-named weights, whether they are the EMA) from a checkpoint's parameters.

    With ``use_ema`` and ``ema.*`` entries present, those are returned under the network's names;
    otherwise the plain entries (a checkpoint without EMA, e.g. a converted or exported one).
    """
    prefix = EMA_PREFIX + "."
    ema = {name[len(prefix):]: value for name, value in params.items() if name.startswith(prefix)}
    if use_ema and ema:
        return ema, True
    return {name: value for name, value in params.items() if not name.startswith(prefix)}, False


def load_inference_weights(network: nn.Cell, path, use_ema: bool = True) -> dict:
    """Load a checkpoint's weights for eval/export (EMA when present); returns its metadata.

    Every network parameter must be present with the right shape, else ValueError saying which.
    """
    params, metadata = read_checkpoint(path)
    weights, is_ema = model_weights(params, use_ema)
    chosen, wrong_shape, absent = _matching(network, weights)
    if wrong_shape or absent:
        raise ValueError(f"{path} does not fit this network: {len(wrong_shape)} parameters with another shape "
                         f"(e.g. {wrong_shape[:3]}), {len(absent)} missing (e.g. {absent[:3]}); check "
                         f"--yolov5_version and the number of classes (checkpoint: "
                         f"{metadata.get('yolov5_version', '?')}, {metadata.get('num_classes', '?')} classes)")
    ms.load_param_into_net(network, chosen, strict_load=True)
    metadata["weights"] = "ema" if is_ema else "model"
    return metadata


def load_finetune_weights(network: nn.Cell, path, num_classes: int, log=logger.info) -> dict:
    """``--resume_yolov5``: weights only (EMA when present), heads skipped when the class count differs.

    Returns a small report: loaded / skipped names and whether heads were skipped.
    """
    params, metadata = read_checkpoint(path)
    weights, is_ema = model_weights(params, use_ema=True)
    saved_classes = metadata.get("num_classes")
    head_shapes_differ = any(name.startswith(HEAD_PREFIX) and name in weights
                             and tuple(weights[name].shape) != tuple(p.shape)
                             for p in network.get_parameters() for name in [p.name])
    skip_heads = head_shapes_differ or (saved_classes is not None and int(saved_classes) != int(num_classes))
    keep = (lambda name: not name.startswith(HEAD_PREFIX)) if skip_heads else None
    chosen, wrong_shape, absent = _matching(network, weights, keep)
    if wrong_shape:
        raise ValueError(f"--resume_yolov5 {path}: {len(wrong_shape)} parameters outside the heads have another "
                         f"shape (e.g. {wrong_shape[:3]}): it is another model size than "
                         f"--yolov5_version; checkpoint says {metadata.get('yolov5_version', 'nothing')}")
    if not chosen:
        raise ValueError(f"--resume_yolov5 {path}: no parameter of it fits this network (no name matches); "
                         f"is it a YOLOv5 checkpoint of this project?")
    _assign(network, chosen)
    source = "EMA weights" if is_ema else "weights"
    if skip_heads:
        held = saved_classes if saved_classes is not None else "other head shapes"
        log(f"--resume_yolov5: loaded {len(chosen)} {source} from {path}; the detection heads (head.*) were NOT "
            f"loaded because the class count differs (checkpoint: {held}, this dataset: {num_classes}); they keep "
            f"their fresh initialisation")
    else:
        log(f"--resume_yolov5: loaded {len(chosen)} {source} from {path}")
    if absent:
        log(f"--resume_yolov5: {len(absent)} network parameters were not in the checkpoint and keep their "
            f"initialisation (e.g. {absent[:3]})")
    return {"loaded": sorted(chosen), "skipped_heads": skip_heads, "absent": absent, "ema": is_ema}


def load_pretrained_backbone(network: nn.Cell, path, log=logger.info) -> list[str]:
    """``--pretrained_backbone``: load ``backbone.*`` (EMA when present) from a checkpoint.

    A checkpoint of a bare backbone whose names lack the ``backbone.`` prefix is accepted as well.
    """
    params, _ = read_checkpoint(path)
    weights, is_ema = model_weights(params, use_ema=True)
    if not any(name.startswith(BACKBONE_PREFIX) for name in weights):
        weights = {BACKBONE_PREFIX + name: value for name, value in weights.items()}
    chosen, wrong_shape, absent = _matching(network, weights, lambda name: name.startswith(BACKBONE_PREFIX))
    if wrong_shape or not chosen:
        raise ValueError(f"--pretrained_backbone {path}: {len(chosen)} backbone parameters fit, "
                         f"{len(wrong_shape)} have another shape (e.g. {wrong_shape[:3]}); it must be a backbone "
                         f"of the same --yolov5_version")
    _assign(network, chosen)
    log(f"--pretrained_backbone: loaded {len(chosen)} backbone {'EMA ' if is_ema else ''}parameters from {path}"
        + (f"; {len(absent)} backbone parameters were not in it (e.g. {absent[:3]})" if absent else ""))
    return sorted(chosen)
