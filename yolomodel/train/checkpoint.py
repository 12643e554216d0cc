"""Training checkpoints: layout, atomic writing, reading, and exact resume.

Layout of a training checkpoint (one MindSpore ``.ckpt`` file)
--------------------------------------------------------------
* network parameters under their own names: ``backbone.*``, ``neck.*``, ``head.*`` (BatchNorm moving
  statistics included);
* EMA: ``ema.<parameter name>`` for every float parameter of the network, and ``ema_updates`` (int32);
  eval, infer and export use these (``yolomodel.loading``);
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
with ``os.replace``, so a crash or a kill never leaves a truncated checkpoint under the final name. The
file gets the mode of the project's other outputs (0o666 minus the umask), not MindSpore's owner-only
0o400, so that the other users of a shared run folder can evaluate it.

``--resume`` loads everything (``load_for_resume``). Loading only the weights (eval, infer, export,
``--resume_yolov5``, ``--pretrained_backbone``) is in ``yolomodel.loading``, which reads through
``read_checkpoint`` too.
"""
from __future__ import annotations

import dataclasses
from pathlib import Path

import mindspore as ms
import numpy as np
from mindspore import Parameter, nn

from yolodata.fileio import atomic_path

CHECKPOINT_FORMAT = "yolov5-train-1"
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
