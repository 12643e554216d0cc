"""Training checkpoints: what training adds to the checkpoint format, and exact resume.

The file format (names, metadata codec, reading, atomic writing, the model description and the EMA
entries) is ``yolomodel.checkpoint.format``. A training checkpoint (``CHECKPOINT_FORMAT``) holds besides:

* optimizer state: ``global_step`` and ``moments.<parameter name>`` (nn.Momentum's names); the learning
  rate is not stored, it comes from the schedule and the position;
* loss scale: ``loss_scale`` (float32), plus ``current_iterator_step`` / ``last_overflow_iterator_step``
  with the dynamic loss scale;
* training's metadata entries (``TRAIN_METADATA_KEYS``): ``epoch`` and ``step`` (the position to continue
  from: 0-based epoch and the number of steps of that epoch already done), ``steps_completed`` (all steps
  so far), ``seed``, ``dataset_id`` (str), ``training_shape``, ``global_batch_size``, ``image_weights``
  (1 with ``--image_weights``: the sample order depends on it; absent, 0, in older checkpoints); the current epoch's
  loss sums so far (``epoch_box_sum``, ``epoch_obj_sum``, ``epoch_cls_sum``, ``epoch_loss_steps``) and the
  validation state (``best_fitness``, ``best_epoch``, ``evaluations_since_best``; absent from checkpoints
  of older runs, read as "no evaluation yet"). ``read_checkpoint`` here reads them as metadata.

At the end of training the EMA weights of ``best.ckpt`` and ``last.ckpt`` are also written as small
weights files (``save_final_weights``: ``format.save_weights_file``, half precision, no optimizer state)
that eval, infer, export and ``--weights`` read; they cannot resume a run.

``--resume`` loads everything (``load_for_resume``). Loading only the weights (eval, infer, export,
``--resume_yolov5``, ``--pretrained_backbone``) is in ``yolomodel.checkpoint.loading``.
"""
from __future__ import annotations

import dataclasses
from pathlib import Path

import mindspore as ms
from mindspore import Parameter, nn

from yolomodel.checkpoint import format as format_lib
# the format's names training uses, also as ``checkpoint.<name>`` for the training modules
from yolomodel.checkpoint.format import (CHECKPOINT_FORMAT, EMA_PREFIX, METADATA_KEYS, decode_anchors,
                                         decode_class_names, encode_anchors, encode_class_names,
                                         save_checkpoint_atomic, save_weights_file)

from .results import VALIDATION_METADATA_KEYS, ValidationState

# optimizer hyper-parameters that come from the configuration, not from the checkpoint
NOT_SAVED = ("learning_rate", "momentum")
TRAIN_METADATA_KEYS = ("epoch", "step", "steps_completed", "seed", "dataset_id", "training_shape",
                       "global_batch_size", "epoch_box_sum", "epoch_obj_sum", "epoch_cls_sum", "epoch_loss_steps"
                       , "image_weights") + tuple(VALIDATION_METADATA_KEYS)
_STRING_KEYS = ("format", "dataset_id", "yolov5_version", "yolov5_layout", "anchors", "class_names", "hyp")
# fields of TrainState that checkpoints written before they existed lack: their values then
_OPTIONAL_FIELDS = {"yolov5_layout": "v5.0", "anchors": "", "class_names": "", "hyp": "", "image_weights": 0}


@dataclasses.dataclass(frozen=True)
class TrainState:
    """Where a run stands, stored in every checkpoint.

    Besides the position, the sums of the box/obj/cls losses over the steps of the current epoch done
    so far (so a run resumed mid-epoch reports the same epoch means) and the validation state (best
    fitness, its epoch, evaluations since: the best checkpoint and patience continue exactly).
    """

    epoch: int              # epoch of the next step (0-based)
    step: int               # steps of that epoch already done
    steps_completed: int    # steps done since the start of training
    seed: int
    dataset_id: str
    yolov5_version: str
    num_classes: int
    training_shape: int
    global_batch_size: int
    yolov5_layout: str = "v5.0"
    anchors: str = ""       # JSON (3, 3, 2) pixels; "" = YOLOv5's default anchors
    class_names: str = ""   # JSON list of the dataset's category names in class order
    hyp: str = ""           # JSON of the YOLOv5 hyperparameters in effect (--hyp); "" without
    image_weights: int = 0  # 1: --image_weights (the sample order is YOLOv5's weighted draws)
    epoch_loss_sums: tuple = (0.0, 0.0, 0.0)   # box, obj, cls summed over this epoch's steps so far
    epoch_loss_steps: int = 0
    validation: ValidationState = ValidationState()

    def metadata(self) -> dict:
        values = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)
                  if f.name not in ("epoch_loss_sums", "validation") and getattr(self, f.name) != ""}
        values.update(zip(("epoch_box_sum", "epoch_obj_sum", "epoch_cls_sum"),
                          (float(v) for v in self.epoch_loss_sums)))
        values.update(self.validation.metadata())
        values["format"] = CHECKPOINT_FORMAT
        # floats as their repr: exact (append_dict would keep a float32), so a resumed run compares and
        # averages with the very numbers an uninterrupted one has
        return {key: repr(value) if isinstance(value, float) else value for key, value in values.items()}

    def after_step(self, epoch: int, step: int, steps_completed: int, losses) -> "TrainState":
        """The state after one more step that moved the position to (``epoch``, ``step``) with loss parts
        ``losses`` (box, obj, cls); when the step ended the epoch the sums start again from zero."""
        if epoch != self.epoch:
            return dataclasses.replace(self, epoch=epoch, step=step, steps_completed=steps_completed,
                                       epoch_loss_sums=(0.0, 0.0, 0.0), epoch_loss_steps=0)
        sums = tuple(float(a) + float(b) for a, b in zip(self.epoch_loss_sums, losses))
        return dataclasses.replace(self, step=step, steps_completed=steps_completed, epoch_loss_sums=sums,
                                   epoch_loss_steps=self.epoch_loss_steps + 1)


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


def save_train_checkpoint(path, train_cell: nn.Cell, state: TrainState) -> Path:
    """Weights, EMA, optimizer and loss-scale state of ``train_cell`` plus ``state``, atomically."""
    return save_checkpoint_atomic(path, saved_parameters(train_cell), state.metadata())


def read_checkpoint(path) -> tuple[dict, dict]:
    """``format.read_checkpoint`` with training's metadata entries (position, loss sums, validation state)."""
    return format_lib.read_checkpoint(path, TRAIN_METADATA_KEYS)


def train_state_from(metadata: dict, path) -> TrainState:
    """The TrainState of a training checkpoint; ValueError when the file is not one."""
    if metadata.get("format") != CHECKPOINT_FORMAT:
        raise ValueError(f"{path} is not a training checkpoint of this project (format "
                         f"{metadata.get('format')!r}, expected {CHECKPOINT_FORMAT!r}); --resume needs one "
                         f"written by tools/train.py. To start from its weights only, use --resume_yolov5.")
    optional = ("epoch_loss_sums", "epoch_loss_steps", "validation")
    fields = {f.name: metadata[f.name] if f.name in metadata else _OPTIONAL_FIELDS[f.name]
              for f in dataclasses.fields(TrainState)
              if f.name not in optional and (f.name in metadata or f.name in _OPTIONAL_FIELDS)}
    fields = {k: (str(v) if k in _STRING_KEYS else int(v)) for k, v in fields.items()}
    sums = tuple(float(metadata.get(key, 0.0)) for key in ("epoch_box_sum", "epoch_obj_sum", "epoch_cls_sum"))
    return TrainState(**fields, epoch_loss_sums=sums, epoch_loss_steps=int(metadata.get("epoch_loss_steps", 0)),
                      validation=ValidationState.from_metadata(metadata))


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
            f"e.g. {mismatched[:3]}). Resume with the same --yolov5_version, --yolov5_layout, dataset classes, "
            f"--freeze and --loss_scale_type as the interrupted run.")
    ms.load_param_into_net(train_cell, {name: params[name] for name in expected}, strict_load=True)
    return state


def model_description(metadata: dict, source: str) -> dict:
    """The model description entries (``METADATA_KEYS``) of a training checkpoint's metadata, for a weights file."""
    described = {key: metadata[key] for key in METADATA_KEYS if key in metadata and metadata[key] != ""}
    described["source"] = source
    return described


def save_final_weights(path, checkpoint_path, source: str, *, half: bool = True) -> Path:
    """The EMA weights and model description of the training checkpoint ``checkpoint_path`` as a weights
    file ``path`` (``format.save_weights_file``); ``source`` says where they came from."""
    params, metadata = read_checkpoint(checkpoint_path)
    prefix = EMA_PREFIX + "."
    weights = {name[len(prefix):]: value for name, value in params.items() if name.startswith(prefix)}
    if not weights:
        raise ValueError(f"{checkpoint_path} holds no EMA weights ({prefix}*); it is not a training checkpoint")
    return save_weights_file(path, weights, model_description(metadata, source), half=half)
