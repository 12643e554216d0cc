"""Training configuration: the reference train.py's flags, a YAML file, and the merged result.

Precedence: built-in defaults < ``--config FILE.yaml`` < ``--hyp FILE`` (a YOLOv5 hyp file, ``train.hyp``)
< the command line. The YAML file holds flag
names as keys (like the reference's default_config.yaml) and may add an ``augment`` mapping with the
pipeline's augmentation options (``yolodata.augment.policy.AugmentConfig``: mosaic, degrees, translate, scale,
shear, perspective, hsv_h, hsv_s, hsv_v, fliplr, flipud, extras). Keys this program does not know (the
reference's yaml has many, e.g. ``enable_modelarts``) are reported and ignored.

Defaults are the reference README's, except ``--device_target`` (CPU here), ``--is_distributed``
(0 here: the reference's 1 fails without a launcher; ``scripts/run_distribute_train.sh`` passes 1) and
``--loss_scale``, which depends on the precision (``train.step.default_loss_scale``: 1 in float32, the
reference's 64 with mixed precision or a dynamic scale).

The network: ``--yolov5_version`` (size n/s/m/l/x) and ``--yolov5_layout`` (v5.0 or v6.0) default to
what ``--resume`` or ``--weights`` (= the reference's ``--resume_yolov5``) records, else to yolov5s and
the reference's v5.0; given explicitly, they must agree with that checkpoint. ``--freeze`` is YOLOv5's:
one number N freezes its layers 0..N-1 (10 = the backbone), several numbers freeze those layers.
"""
from __future__ import annotations

import argparse
import logging
import os
from pathlib import Path

import yaml

from yolodata.augment.policy import AugmentConfig
from yolodata.checks import check_multiple_of
from yolodata.fileio import write_file_atomic
from yolomodel.device import DEVICE_TARGETS
from yolomodel.evaluation import eval_settings
from yolomodel.network import DEFAULT_LAYOUT, YOLOV5_LAYER_CELLS, normalize_layout
from yolomodel.nms import EVAL_CONF_THRESH

from . import hyp as hyp_lib
from .validation import ValidationSettings

logger = logging.getLogger(__name__)

LR_SCHEDULERS = ("exponential", "cosine_annealing")
DEFAULT_TRAINING_SHAPE = 640   # used when --training_shape is empty (multi-scale up to it)
CONFIG_FILE_NAME = "config.yaml"
DEFAULT_KEEP_CHECKPOINT_MAX = 5   # periodic checkpoints kept (the reference kept max_epoch of them)
YAML_ONLY_KEYS = ("augment", "max_boxes")


def _int_flag(text) -> int:
    """0/1 flags given as '0', '1', 'true', 'false' (the reference passes them as ints)."""
    if isinstance(text, bool):
        return int(text)
    lowered = str(text).strip().lower()
    if lowered in ("1", "true", "yes"):
        return 1
    if lowered in ("0", "false", "no"):
        return 0
    raise argparse.ArgumentTypeError(f"expected 0 or 1, got {text!r}")


def _optional_int(text):
    """'' or None -> None, else an int (the reference's ``--ckpt_interval`` default is None)."""
    if text is None or str(text).strip() in ("", "None", "none"):
        return None
    return int(text)


def _shape(text) -> str:
    """--training_shape: '' (multi-scale up to 640) or a multiple of 32, kept as given."""
    if text is None:
        return ""
    value = str(text).strip()
    if value:
        try:
            check_multiple_of("--training_shape", int(value) if value.isdigit() else value)
        except ValueError as error:
            raise argparse.ArgumentTypeError(f"{error} (or empty for multi-scale up to 640)") from None
    return value


def _layout(text) -> str:
    """--yolov5_layout: v5.0 or v6.0 (release names such as v6.1, v7.0 are accepted)."""
    try:
        return normalize_layout(text)
    except ValueError as error:
        raise argparse.ArgumentTypeError(str(error)) from None


def build_parser() -> argparse.ArgumentParser:
    """The training flags (ModelZoo names), one group a function, in the order ``--help`` lists them."""
    parser = argparse.ArgumentParser(
        description="Train YOLOv5 on MindRecord shards (or a COCO folder, converted first).",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    add = parser.add_argument
    add("--config", default="", help="YAML file with any of these options; the command line overrides it")
    add("--device_target", choices=DEVICE_TARGETS, default="CPU", help="device (the reference defaulted to Ascend)")
    for add_flags in (_add_data_flags, _add_model_flags, _add_optimisation_flags, _add_validation_flags,
                      _add_checkpoint_flags, _add_device_flags):
        add_flags(add)
    return parser


def _add_data_flags(add) -> None:
    """Where the training (and validation) data come from and how batches are made."""
    add("--data_dir", default="", help="COCO folder (train2017/ and annotations/instances_train2017.json); "
        "converted to MindRecord first when --mindrecord holds no shards yet")
    add("--mindrecord", default="", help="training shards: a folder written by tools/coco2mindrecord.py")
    add("--val_mindrecord", default="", help="validation shards: the EMA weights are evaluated on them (COCO mAP) "
        "every --eval_interval epochs, keeping best.ckpt by YOLOv5's fitness")
    add("--per_batch_size", type=int, default=8, help="batch size per device")
    add("--num_parallel_workers", type=int, default=None, help="input pipeline threads (clamped to the CPU count)")
    add("--training_shape", type=_shape, default="", help="fixed training shape; empty: multi-scale up to 640")
    add("--resize_rate", type=int, default=10, help="steps between multi-scale shape changes (empty --training_shape)")
    add("--seed", type=int, default=0, help="seed of the sample order, augmentation and initial weights")


def _add_model_flags(add) -> None:
    """The model: size, layout, starting weights, frozen layers, resuming, anchors."""
    add("--yolov5_version", default=None, choices=("yolov5n", "yolov5s", "yolov5m", "yolov5l", "yolov5x"),
        help="model size (default: the one --resume/--weights records, else yolov5s)")
    add("--yolov5_layout", type=_layout, default=None,
        help="network layout: v5.0 (Focus stem, SPP; the reference's) or v6.0 (6x6 stem conv, SPPF; YOLOv5 "
             "releases v6.0-v7.0). Default: the one --resume/--weights records, else v5.0")
    add("--pretrained_backbone", default="", help="checkpoint whose backbone.* weights to load")
    add("--weights", "--resume_yolov5", dest="resume_yolov5", default="", metavar="CHECKPOINT",
        help="checkpoint to fine-tune from, weights only: a .ckpt (trained here or imported by "
             "tools/import_yolov5.py) or a YOLOv5 .pt (imported on the fly). Size, layout and anchors come from "
             "it; with another class count the detection heads start afresh")
    add("--freeze", type=int, nargs="+", default=[0],
        help="YOLOv5's --freeze: N freezes layers 0..N-1 (10 = the backbone), several numbers freeze those "
             "layers (0-24); 0 trains everything")
    add("--resume", default="", help="training checkpoint to continue exactly (weights, EMA, optimizer, position)")
    add("--noautoanchor", action="store_true",
        help="skip AutoAnchor (by default it checks the anchors' best possible recall on the training boxes "
             "and computes new ones below 0.98 when training from scratch or with another class count)")
    add("--image_weights", action="store_true",
        help="YOLOv5's --image-weights: each epoch samples images (with replacement) by weights from their "
             "classes' inverse frequencies, times (1 - class mAP)^2 once validation has measured it")


def _add_optimisation_flags(add) -> None:
    """The optimizer, its schedule, the loss scale and the loss."""
    add("--hyp", default="", metavar="FILE",
        help="a YOLOv5 hyp yaml (hyp.scratch-low.yaml, an evolved file, ...): every key with YOLOv5's meaning, "
             "including its one-cycle schedule, warmup and nominal batch of 64; a flag given on the command line "
             "wins over the file (see README)")
    add("--cos_lr", type=_int_flag, default=0, help="with --hyp: 1 = YOLOv5's --cos-lr (cosine one-cycle), "
        "0 = its linear one-cycle")
    add("--nominal_batch_size", type=int, default=64,
        help="with --hyp: YOLOv5's nominal batch (nbs): gradients of max(round(N / global batch), 1) batches are "
             "summed per optimizer step and the weight decay scaled to match; 0 = one step per batch")
    add("--lr_scheduler", choices=LR_SCHEDULERS, default="cosine_annealing")
    add("--lr", type=float, default=0.02, help="learning rate after warmup")
    add("--lr_epochs", default="220,250", help="epochs where the exponential schedule multiplies lr by lr_gamma")
    add("--lr_gamma", type=float, default=0.1, help="factor of the exponential (step) schedule")
    add("--eta_min", type=float, default=0.0, help="lowest lr of cosine annealing")
    add("--t_max", type=float, default=320, help="cosine annealing period in epochs")
    add("--max_epoch", type=int, default=320)
    add("--warmup_epochs", type=float, default=20, help="linear warmup from 0 over this many epochs")
    add("--weight_decay", type=float, default=0.0005, help="on conv and linear weights only")
    add("--momentum", type=float, default=0.9, help="Nesterov momentum")
    add("--loss_scale", type=float, default=None,
        help="loss scale (the initial one with --loss_scale_type dynamic); default: 1 in float32 (CPU, GPU: "
        "nothing to unscale), 64 (the reference's) with mixed precision (Ascend) or a dynamic scale")
    add("--loss_scale_type", choices=("static", "dynamic"), default="static",
        help="static: a fixed scale; dynamic: MindSpore's DynamicLossScaleUpdateCell (skips overflow steps)")
    add("--amp_level", choices=("auto", "O0", "O1", "O2", "O3"), default="auto",
        help="mixed precision; auto = O2 on Ascend, O0 (float32) elsewhere")
    add("--label_smooth", type=_int_flag, default=0, help="1: smooth the class targets")
    add("--label_smooth_factor", type=float, default=0.1)
    add("--iou_type", choices=("ciou", "giou"), default="ciou", help="box loss (the reference used GIoU)")


def _add_validation_flags(add) -> None:
    """Validation during training (with --val_mindrecord, or the val split of --data_dir)."""
    add("--eval_interval", type=int, default=1, help="validate every this many epochs, and after the last one")
    add("--patience", type=int, default=0,
        help="stop when this many validations in a row bring no better fitness (0: never stop early)")
    add("--testing_shape", type=int, default=None,
        help="validation input size (default: the fixed --training_shape, else 640)")
    add("--val_per_batch_size", type=int, default=None, help="validation batch size (default: --per_batch_size)")
    add("--val_rect", type=_int_flag, default=0, help="1: YOLOv5 val.py's rectangular validation batches")
    add("--val_scaleup", type=_int_flag, default=0,
        help="1: enlarge small validation images to the test size (YOLOv5's val.py does)")
    add("--val_multi_label", type=_int_flag, default=0, help="1: multi-label NMS in validation")
    add("--val_conf_thresh", type=float, default=EVAL_CONF_THRESH,
        help="minimum objectness * class score of a validation detection (COCO evaluation's 0.001)")
    add("--val_yolov5", type=_int_flag, default=0,
        help="1: all of YOLOv5 val.py's settings in validation (rect, enlarging, area shrinking, multi-label "
             "NMS at IoU 0.6)")
    add("--val_compiled", type=_int_flag, default=0,
        help="1: run validation's network as a compiled graph: about twice as fast per batch, but the graph "
             "stays resident beside the train step's (about 250 MB for yolov5n at 320); 0: op by op")


def _add_checkpoint_flags(add) -> None:
    """Logging and checkpoints."""
    add("--log_interval", type=int, default=100, help="log every this many iterations")
    add("--ckpt_path", default="outputs/", help="folder for checkpoints (ckpt_<rank>/), logs and config.yaml")
    add("--ckpt_interval", type=_optional_int, default=None,
        help="also save a periodic checkpoint {rank}-{epoch}_{step}.ckpt every this many iterations; default: "
             "none (last.ckpt and best.ckpt are always written at epoch ends)")
    add("--save_period", type=int, default=-1,
        help="YOLOv5's --save-period: also save a periodic checkpoint every this many epochs; -1: never")
    add("--keep_checkpoint_max", type=int, default=DEFAULT_KEEP_CHECKPOINT_MAX,
        help="keep the newest N periodic checkpoints of this run (last.ckpt, best.ckpt and the final weights "
             f"files are always kept); default {DEFAULT_KEEP_CHECKPOINT_MAX}")
    add("--is_save_on_master", type=_int_flag, default=1, help="1: only rank 0 saves; 0: every rank")


def _add_device_flags(add) -> None:
    """Distribution over ranks and profiling."""
    add("--is_distributed", type=_int_flag, default=0, help="1: data parallel over the ranks msrun started")
    add("--rank", type=int, default=0, help="rank (set from the communication group when distributed)")
    add("--group_size", type=int, default=1, help="number of ranks (from the communication group when distributed)")
    add("--need_profiler", type=_int_flag, default=0, help="1: profile the first steps, then stop")
    add("--profiler_steps", type=int, default=5, help="steps to profile with --need_profiler 1")


def _explicit_arguments(parser: argparse.ArgumentParser, argv) -> set[str]:
    """The option names given on the command line (so the YAML file does not override them)."""
    shadow = argparse.ArgumentParser(add_help=False)
    for action in parser._actions:  # noqa: SLF001 - argparse offers no public way to list actions
        if not action.option_strings or action.dest == "help":
            continue
        if action.nargs == 0:  # a bare switch (--noautoanchor, --image_weights)
            shadow.add_argument(*action.option_strings, dest=action.dest, action="store_const", const=True,
                                default=argparse.SUPPRESS)
        else:
            shadow.add_argument(*action.option_strings, dest=action.dest, nargs=action.nargs,
                                default=argparse.SUPPRESS)
    known, _ = shadow.parse_known_args(argv)
    return set(vars(known))


def load_yaml(path) -> dict:
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"--config {path} does not exist")
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as error:
        raise ValueError(f"--config {path} is not valid YAML: {error}") from error
    if not isinstance(data, dict):
        raise ValueError(f"--config {path} must hold a mapping of option: value, got {type(data).__name__}")
    return data


def _coerce(action: argparse.Action, value, source: str):
    """A YAML value through the flag's own type/choices check."""
    if action.nargs in ("+", "*") and value is not None:
        values = value if isinstance(value, (list, tuple)) else [value]
        result = [_coerce(_single_value_action(action), item, source) for item in values]
        return result
    if value is None or action.type is None:
        result = value
    else:
        try:
            result = action.type(value if isinstance(value, (str, bool)) else str(value)) \
                if action.type in (_int_flag, _optional_int, _shape) else action.type(value)
        except (TypeError, ValueError, argparse.ArgumentTypeError) as error:
            raise ValueError(f"{source}: option {action.dest}: {error}") from None
    if action.choices is not None and result is not None and result not in action.choices:
        raise ValueError(f"{source}: option {action.dest} must be one of {list(action.choices)}, got {result!r}")
    return result


def _single_value_action(action: argparse.Action) -> argparse.Action:
    """A copy of ``action`` taking one value (to coerce the items of a list option one by one)."""
    return argparse.Action(action.option_strings, action.dest, type=action.type, choices=action.choices)


def parse_config(argv=None, *, log=logger.warning) -> argparse.Namespace:
    """Defaults < YAML (--config) < command line; validated. ``augment`` and ``max_boxes`` come from YAML only."""
    parser = build_parser()
    args = parser.parse_args(argv)
    args.augment = {}
    args.max_boxes = 256
    explicit = _explicit_arguments(parser, argv)
    if args.config:
        data = load_yaml(args.config)
        actions = {a.dest: a for a in parser._actions if a.option_strings}  # noqa: SLF001
        unknown = sorted(k for k in data if k not in actions and k not in YAML_ONLY_KEYS)
        if unknown:
            log(f"--config {args.config}: ignoring keys this trainer does not use: {', '.join(unknown)}")
        for key, value in data.items():
            if key in YAML_ONLY_KEYS:
                setattr(args, key, value)
            elif key in actions and key not in explicit and key != "config":
                setattr(args, key, _coerce(actions[key], value, f"--config {args.config}"))
    if args.hyp:
        source = f"--hyp {args.hyp}" if "hyp" in explicit else f"--config {args.config}: hyp"
        values, filled = hyp_lib.load_hyp(args.hyp, source)
        hyp_lib.apply_hyp(args, values, explicit, log=log)
        if filled:
            log(f"{source}: not in the file, YOLOv5's hyp.scratch-low values used: {', '.join(filled)}")
    hyp_lib.check_hyp_flags(args, explicit)
    validate(args)
    return args


def validate(args: argparse.Namespace) -> None:
    """ValueError naming the option and what to pass, for values argparse cannot check alone."""
    positive = ("per_batch_size", "max_epoch", "log_interval")
    for name in positive:
        if getattr(args, name) < 1:
            raise ValueError(f"--{name} must be at least 1, got {getattr(args, name)}")
    if args.ckpt_interval is not None and args.ckpt_interval < 1:
        raise ValueError(f"--ckpt_interval must be at least 1 (or empty for epoch ends only), got {args.ckpt_interval}")
    if args.keep_checkpoint_max is not None and args.keep_checkpoint_max < 1:
        raise ValueError(f"--keep_checkpoint_max must be at least 1, got {args.keep_checkpoint_max}")
    if args.save_period == 0 or args.save_period < -1:
        raise ValueError(f"--save_period must be at least 1 (or -1: no periodic checkpoints), got {args.save_period}")
    if args.resize_rate < 0:
        raise ValueError(f"--resize_rate must not be negative, got {args.resize_rate}")
    if args.lr <= 0:
        raise ValueError(f"--lr must be positive, got {args.lr}")
    if args.warmup_epochs < 0:
        raise ValueError(f"--warmup_epochs must not be negative, got {args.warmup_epochs}")
    if not 0 <= args.label_smooth_factor < 1:
        raise ValueError(f"--label_smooth_factor must be in [0, 1), got {args.label_smooth_factor}")
    if args.loss_scale is not None and not args.loss_scale >= 1:
        raise ValueError(f"--loss_scale must be at least 1 (or left out for the device's default), got {args.loss_scale}")
    if args.seed < 0:
        raise ValueError(f"--seed must not be negative, got {args.seed}")
    if args.profiler_steps < 1:
        raise ValueError(f"--profiler_steps must be at least 1, got {args.profiler_steps}")
    if args.nominal_batch_size < 0:
        raise ValueError(f"--nominal_batch_size must be 0 (one optimizer step per batch) or a number of images such "
                         f"as YOLOv5's 64, got {args.nominal_batch_size}")
    if args.eval_interval < 1:
        raise ValueError(f"--eval_interval must be at least 1, got {args.eval_interval}")
    if args.patience < 0:
        raise ValueError(f"--patience must not be negative (0: never stop early), got {args.patience}")
    if args.testing_shape is not None:
        check_multiple_of("--testing_shape", args.testing_shape)
    if args.val_per_batch_size is not None and args.val_per_batch_size < 1:
        raise ValueError(f"--val_per_batch_size must be at least 1, got {args.val_per_batch_size}")
    if args.resume and args.resume_yolov5:
        raise ValueError("--resume continues a run exactly and --weights (--resume_yolov5) starts a new one from "
                         "weights; pass only one of them")
    check_freeze(args.freeze)
    if not args.mindrecord and not args.data_dir:
        raise ValueError("pass --mindrecord DIR (shards from tools/coco2mindrecord.py) or --data_dir COCO_DIR "
                         "(converted to MindRecord first)")
    if not isinstance(args.augment, dict):
        raise ValueError(f"--config: 'augment' must be a mapping of augmentation options, got {args.augment!r}")
    try:  # a misspelt or out-of-range option fails here, before any network is built
        AugmentConfig.from_mapping(args.augment)
    except ValueError as error:
        raise ValueError(f"--config: augment: {error}") from None
    if not isinstance(args.max_boxes, int) or args.max_boxes < 1:
        raise ValueError(f"--config: 'max_boxes' must be a positive integer, got {args.max_boxes!r}")


def check_freeze(freeze) -> list[int]:
    """``--freeze`` values, or ValueError: one count 0..25, or several layer indices 0..24."""
    num_layers = len(YOLOV5_LAYER_CELLS[DEFAULT_LAYOUT])
    values = list(freeze) if isinstance(freeze, (list, tuple)) else [freeze]
    if not values or any(isinstance(v, bool) or not isinstance(v, int) for v in values):
        raise ValueError(f"--freeze takes integers (a layer count such as 10, or layer indices), got {freeze!r}")
    if len(values) == 1 and not 0 <= values[0] <= num_layers:
        raise ValueError(f"--freeze N freezes YOLOv5's layers 0..N-1: N must be 0..{num_layers} (10 = the "
                         f"backbone), got {values[0]}")
    if len(values) > 1 and not all(0 <= v < num_layers for v in values):
        raise ValueError(f"--freeze layer indices must be 0..{num_layers - 1}, got {values}")
    return values


def frozen_layers(freeze) -> list[int]:
    """YOLOv5's rule: one value N means layers 0..N-1, several values are the layers themselves."""
    values = check_freeze(freeze)
    return list(range(values[0])) if len(values) == 1 else sorted(set(values))


def training_shape_of(args) -> tuple[int, int]:
    """(training shape, resize_rate for the pipeline): empty --training_shape -> 640 multi-scale."""
    if args.training_shape:
        return int(args.training_shape), 0
    return DEFAULT_TRAINING_SHAPE, int(args.resize_rate)


def to_yaml_dict(args: argparse.Namespace) -> dict:
    """The merged configuration as plain YAML-able values (what --config accepts back)."""
    return {key: (str(value) if isinstance(value, os.PathLike) else value) for key, value in vars(args).items()
            if key != "config"}


def save_config(args: argparse.Namespace, folder, extra: dict | None = None) -> Path:
    """Write ``folder/config.yaml`` atomically; it can be passed back with --config."""
    final = Path(folder) / CONFIG_FILE_NAME
    document = to_yaml_dict(args)
    text = yaml.safe_dump(document, sort_keys=True)
    if extra:
        text += "# resolved at start (informational, ignored by --config):\n"
        text += "".join(f"# {key}: {value}\n" for key, value in extra.items())
    return write_file_atomic(final, text.encode("utf-8"))


def validation_settings(args: argparse.Namespace):
    """The ``ValidationSettings`` of the flags, or None without validation shards."""
    if not args.val_mindrecord:
        return None
    geometry, nms = eval_settings(rect=bool(args.val_rect), scaleup=bool(args.val_scaleup),
                                  multi_label=bool(args.val_multi_label), conf_thresh=args.val_conf_thresh,
                                  yolov5_val=bool(args.val_yolov5))
    fixed_shape, _ = training_shape_of(args)
    return ValidationSettings(
        mindrecord=str(args.val_mindrecord), testing_shape=int(args.testing_shape or fixed_shape),
        per_batch_size=int(args.val_per_batch_size or args.per_batch_size), geometry=geometry, nms=nms,
        eval_interval=int(args.eval_interval), patience=int(args.patience), compiled=bool(args.val_compiled))
