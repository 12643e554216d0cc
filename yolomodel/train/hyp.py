"""YOLOv5 hyperparameter files (``--hyp``): every key read with YOLOv5's meaning, or refused by name.

A YOLOv5 hyp file (``data/hyps/hyp.scratch-low.yaml``, ``hyp.scratch-high.yaml``, ``hyp.VOC.yaml`` or
a file ``--evolve`` wrote, or the ``hyp.yaml`` of a YOLOv5 run folder) is a flat mapping of names to
numbers. Here each key goes where YOLOv5 uses it:

* schedule (``train.yolov5_schedule``): ``lr0``, ``lrf``, ``momentum``, ``weight_decay``,
  ``warmup_epochs``, ``warmup_momentum``, ``warmup_bias_lr``, with YOLOv5's three parameter groups, its
  warmup and nominal batch of 64 (gradient accumulation, weight decay scaled with it);
* loss (``yolomodel.loss.YoloLoss``): ``box``, ``cls``, ``obj`` gains, ``cls_pw``, ``obj_pw`` (BCE
  positive weights), ``fl_gamma`` (focal loss when > 0), ``label_smoothing`` (YOLOv5 writes its
  ``--label-smoothing`` into a run's hyp.yaml);
* target assignment (``yolodata.pipeline.targets``): ``anchor_t``;
* augmentation (``yolodata.augment.policy.AugmentConfig``): ``hsv_h``, ``hsv_s``, ``hsv_v``,
  ``degrees``, ``translate``, ``scale``, ``shear``, ``perspective``, ``flipud``, ``fliplr``, ``mosaic``
  and ``mixup`` (``yolodata.augment.mixup``);
* ``iou_t``: accepted and unused; YOLOv5's train.py does not use it either (only ``--evolve`` mutates it).

Refused when they ask for something this trainer cannot do: ``copy_paste`` > 0 (needs segment
polygons, which MindRecord shards here do not hold) and ``anchors`` > 0 (anchors per output layer:
YOLOv5 then discards the checkpoint's anchors and lets AutoAnchor compute new ones). Unknown keys are
refused too (a misspelt key is never silently ignored). Keys a file leaves out take the value of
YOLOv5's hyp.scratch-low.yaml (``label_smoothing``: 0, YOLOv5's ``--label-smoothing`` default), and the
log says which.

Precedence: built-in defaults < ``--config`` < ``--hyp`` < the command line. Five hyp keys are also
this trainer's own flags (``HYP_FLAGS``: lr0 = --lr, momentum, weight_decay, warmup_epochs,
label_smoothing = --label_smooth_factor with --label_smooth 1); a flag given on the command line wins
over the file and the value in effect is what the run records. The values in effect are stored as the
``hyp`` mapping in ``config.yaml`` (``--config`` accepts it back: a ``hyp`` entry may be a file name or
such a mapping) and as JSON in every checkpoint.
"""
from __future__ import annotations

import json
import math
from pathlib import Path

import yaml


# YOLOv5's data/hyps/hyp.scratch-low.yaml (the values a file leaves out), plus its --label-smoothing default
YOLOV5_SCRATCH_LOW = {
    "lr0": 0.01, "lrf": 0.01, "momentum": 0.937, "weight_decay": 0.0005, "warmup_epochs": 3.0,
    "warmup_momentum": 0.8, "warmup_bias_lr": 0.1, "box": 0.05, "cls": 0.5, "cls_pw": 1.0, "obj": 1.0,
    "obj_pw": 1.0, "iou_t": 0.2, "anchor_t": 4.0, "fl_gamma": 0.0, "hsv_h": 0.015, "hsv_s": 0.7, "hsv_v": 0.4,
    "degrees": 0.0, "translate": 0.1, "scale": 0.5, "shear": 0.0, "perspective": 0.0, "flipud": 0.0,
    "fliplr": 0.5, "mosaic": 1.0, "mixup": 0.0, "copy_paste": 0.0, "label_smoothing": 0.0,
}
# hyp key -> this trainer's flag of the same meaning
HYP_FLAGS = {"lr0": "lr", "momentum": "momentum", "weight_decay": "weight_decay",
             "warmup_epochs": "warmup_epochs", "label_smoothing": "label_smooth_factor"}
AUGMENT_KEYS = ("hsv_h", "hsv_s", "hsv_v", "degrees", "translate", "scale", "shear", "perspective", "flipud",
                "fliplr", "mosaic", "mixup")
LOSS_KEYS = ("box", "cls", "obj", "cls_pw", "obj_pw", "fl_gamma")
UNUSED_KEYS = ("iou_t",)
# keys that only a zero value (or their absence) makes acceptable here, with the reason
REFUSED_WHEN_NON_ZERO = {
    "copy_paste": "segment copy-paste needs instance polygons, which this trainer's MindRecord shards do not "
                  "hold; set copy_paste: 0.0",
    "anchors": "anchors per output layer: YOLOv5 then drops the checkpoint's anchors and computes new ones "
               "with AutoAnchor, which this trainer does not do from a hyp file; remove the line (or set 0)",
}
OPTIONAL_KEYS = ("anchors",)     # may be absent without a default (YOLOv5: hyp.get("anchors"))
# flags of this trainer's own schedule, meaningless with --hyp (YOLOv5's one-cycle schedule)
OWN_SCHEDULE_FLAGS = ("lr_scheduler", "lr_epochs", "lr_gamma", "eta_min", "t_max")
MUST_BE_POSITIVE = ("lr0", "lrf", "anchor_t")
PROBABILITIES = ("momentum", "warmup_momentum", "flipud", "fliplr", "mosaic", "mixup", "copy_paste",
                 "label_smoothing")


def read_hyp_file(path) -> dict:
    """The mapping a YOLOv5 hyp yaml holds; ValueError naming the file when it is missing or not a mapping."""
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"--hyp {path} does not exist")
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as error:
        raise ValueError(f"--hyp {path} is not valid YAML: {error}") from error
    if not isinstance(data, dict):
        raise ValueError(f"--hyp {path} must hold a mapping of YOLOv5 hyperparameters (lr0: 0.01, ...), "
                         f"got {type(data).__name__}")
    return data


def _number(key: str, value, source: str) -> float:
    if isinstance(value, bool):
        raise ValueError(f"{source}: {key} must be a number, got {value!r}")
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise ValueError(f"{source}: {key} must be a number, got {value!r}") from None
    if not math.isfinite(number) or number < 0:
        raise ValueError(f"{source}: {key} must be a finite number >= 0, got {value!r}")
    return number


def resolve_hyp(data: dict, source: str) -> tuple[dict, list[str]]:
    """(every YOLOv5 key -> float, the keys filled from hyp.scratch-low) of a hyp mapping, checked.

    ValueError naming the key for an unknown key, a value that is not a non-negative number, a value out
    of its range, or a key this trainer refuses (``REFUSED_WHEN_NON_ZERO``).
    """
    known = set(YOLOV5_SCRATCH_LOW) | set(OPTIONAL_KEYS)
    unknown = sorted(str(key) for key in data if key not in known)
    if unknown:
        raise ValueError(f"{source}: unknown hyperparameter(s) {', '.join(unknown)}; a YOLOv5 hyp file has "
                         f"{', '.join(YOLOV5_SCRATCH_LOW)} (and optionally anchors)")
    values = {key: _number(key, value, source) for key, value in data.items()}
    for key, reason in REFUSED_WHEN_NON_ZERO.items():
        if values.get(key, 0.0) != 0.0:
            raise ValueError(f"{source}: {key}: {values[key]:g} cannot be honoured here: {reason}")
    for key in MUST_BE_POSITIVE:
        if key in values and not values[key] > 0:
            raise ValueError(f"{source}: {key} must be positive, got {values[key]:g}")
    for key in PROBABILITIES:
        if key in values and values[key] > 1:
            raise ValueError(f"{source}: {key} must lie in [0, 1], got {values[key]:g}")
    if "anchor_t" in values and not values["anchor_t"] > 1:
        raise ValueError(f"{source}: anchor_t must be greater than 1 (a box-to-anchor size ratio; YOLOv5 uses "
                         f"4.0), got {values['anchor_t']:g}")
    values.pop("anchors", None)       # zero: YOLOv5 ignores it too
    filled = [key for key in YOLOV5_SCRATCH_LOW if key not in values and key != "label_smoothing"]
    return {key: values.get(key, default) for key, default in YOLOV5_SCRATCH_LOW.items()}, filled


def load_hyp(hyp, source: str) -> tuple[dict, list[str]]:
    """``resolve_hyp`` of a file name (``--hyp FILE``) or of a mapping (the ``hyp`` entry of a config.yaml)."""
    if isinstance(hyp, dict):
        return resolve_hyp(hyp, source)
    if isinstance(hyp, (str, Path)) and str(hyp).strip():
        return resolve_hyp(read_hyp_file(hyp), f"--hyp {hyp}")
    raise ValueError(f"{source}: hyp must be a YOLOv5 hyp file name or a mapping of its keys, got {hyp!r}")


def apply_hyp(args, values: dict, explicit: set, log) -> None:
    """Set ``args`` from the resolved hyp ``values`` (flags given on the command line, ``explicit``, win and
    their values replace the file's in ``values``); ``args.hyp`` becomes the mapping in effect."""
    for key, flag in HYP_FLAGS.items():
        if flag in explicit:
            if float(getattr(args, flag)) != values[key]:
                log(f"--{flag} {getattr(args, flag)} given on the command line wins over the hyp file's "
                    f"{key}: {values[key]:g}")
            values[key] = float(getattr(args, flag))
        else:
            setattr(args, flag, values[key])
    if "label_smooth" not in explicit:
        args.label_smooth = int(values["label_smoothing"] > 0)
    elif not args.label_smooth:
        values["label_smoothing"] = 0.0
    augment = dict(args.augment or {})
    augment.update({key: values[key] for key in AUGMENT_KEYS})
    args.augment = augment
    args.hyp = values


def check_hyp_flags(args, explicit: set) -> None:
    """ValueError for command-line flags that contradict --hyp (this trainer's own schedule) or need it."""
    if args.hyp:
        clashing = [f"--{flag}" for flag in OWN_SCHEDULE_FLAGS if flag in explicit]
        if clashing:
            raise ValueError(f"{', '.join(clashing)} configure this trainer's own schedule, which --hyp replaces "
                             f"by YOLOv5's one-cycle schedule (lr0 to lr0 * lrf, linear or --cos_lr 1); drop them "
                             f"or drop --hyp")
    elif args.cos_lr:
        raise ValueError("--cos_lr 1 chooses YOLOv5's cosine one-cycle schedule, which needs --hyp FILE "
                         "(without it use --lr_scheduler cosine_annealing)")


def summary(values: dict) -> str:
    """One log line: the values in effect, grouped by where they act."""
    groups = (("schedule", ("lr0", "lrf", "momentum", "weight_decay", "warmup_epochs", "warmup_momentum",
                            "warmup_bias_lr")),
              ("loss", LOSS_KEYS + ("label_smoothing",)), ("targets", ("anchor_t",)),
              ("augmentation", AUGMENT_KEYS + ("copy_paste",)), ("unused, as in YOLOv5", UNUSED_KEYS))
    return "YOLOv5 hyperparameters in effect: " + "; ".join(
        f"{name}: " + ", ".join(f"{key}={values[key]:g}" for key in keys) for name, keys in groups)


def encode_hyp(values: dict | None) -> str:
    """JSON of the hyp values for a checkpoint's metadata ("" without --hyp)."""
    return json.dumps(values, sort_keys=True) if values else ""


def loss_options(values: dict | None) -> dict:
    """``YoloLoss`` keyword arguments of the hyp values (none without --hyp: the loss keeps its defaults)."""
    if not values:
        return {}
    return {"box_gain": values["box"], "cls_gain": values["cls"], "obj_gain": values["obj"],
            "cls_pos_weight": values["cls_pw"], "obj_pos_weight": values["obj_pw"],
            "focal_gamma": values["fl_gamma"]}


def anchor_t_of(values: dict | None, default: float = 4.0) -> float:
    """The target assignment's box-to-anchor ratio threshold: the hyp's ``anchor_t``, else YOLOv5's 4.0."""
    return float(values["anchor_t"]) if values else float(default)
