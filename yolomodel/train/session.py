"""Training set-up: the shards, the network a run builds, its weights, step, schedule and checkpoint writer.

``prepare`` turns the merged flags into a ``Session``, everything the loop (``train.loop``) needs:
the manifest of the training shards, the compiled step's parts, the per-step learning rates, the
position to start from (0, or what ``--resume`` recorded), the ``CheckpointWriter`` and, with
validation shards, the ``Validator``. ``resolve_model`` decides size, layout and anchors from
``--resume`` / ``--weights`` and the flags.
"""
from __future__ import annotations

import dataclasses
import logging
from pathlib import Path

import numpy as np

from yolodata.pipeline import sampler
from yolodata.pipeline.targets import YOLOV5_ANCHORS
from yolodata.manifest import Manifest, load_manifest
from yolomodel.checkpoint import loading
from yolomodel.checkpoint.loading import layout_from_weights, read_weights, version_from_weights
from yolomodel.network import DEFAULT_LAYOUT, normalize_layout

from . import autoanchor, builder, lr_schedule
from .labels import TrainingLabels, image_weights_for
from . import checkpoint as ckpt_lib
from . import config as config_lib
from . import hyp as hyp_lib
from . import results as results_lib
from . import step as step_lib
from . import yolov5_schedule
from .validation import LAST_CHECKPOINT, Validator

logger = logging.getLogger(__name__)


class CheckpointWriter:
    """Writes ``folder/{rank}-{epoch}_{step}.ckpt`` atomically and keeps the newest ``keep_max`` of this run;
    ``last.ckpt`` and ``best.ckpt`` (``save_named``) and the final weights files outside that rotation."""

    def __init__(self, folder: Path, rank: int, enabled: bool, keep_max: int):
        self.folder = Path(folder)
        self.rank = rank
        self.enabled = enabled
        self.keep_max = keep_max
        self.written: list[Path] = []
        self.last_path: Path | None = None

    def save(self, train_cell, state: ckpt_lib.TrainState, epoch_number: int, step_in_epoch: int) -> Path | None:
        if not self.enabled:
            return None
        path = self.folder / ckpt_lib.checkpoint_file_name(self.rank, epoch_number, step_in_epoch)
        ckpt_lib.save_train_checkpoint(path, train_cell, state)
        if path in self.written:
            self.written.remove(path)
        self.written.append(path)
        self.last_path = path
        while len(self.written) > self.keep_max:
            old = self.written.pop(0)
            if old.exists():
                old.unlink()
        return path

    def save_named(self, train_cell, state: ckpt_lib.TrainState, name: str, *, is_last: bool = False) -> Path | None:
        """``folder/name`` (``last.ckpt``, ``best.ckpt``): a full training checkpoint outside the rotation;
        ``is_last``: it is now the newest checkpoint of the run (named in messages)."""
        if not self.enabled:
            return None
        path = ckpt_lib.save_train_checkpoint(self.folder / name, train_cell, state)
        if is_last:
            self.last_path = path
        return path

    def save_weights(self, checkpoint_name: str, weights_name: str, source: str) -> Path | None:
        """The EMA weights of ``folder/checkpoint_name`` as the small weights file ``folder/weights_name``."""
        checkpoint = self.folder / checkpoint_name
        if not self.enabled or not checkpoint.is_file():
            return None
        return ckpt_lib.save_final_weights(self.folder / weights_name, checkpoint, source)


@dataclasses.dataclass
class Session:
    """Everything the loop needs, built by ``prepare``."""

    args: object
    rank: int
    group_size: int
    manifest: Manifest             # of the training shards
    training_shape: int
    resize_rate: int
    steps_per_epoch: int
    lr: np.ndarray
    parts: object
    position: ckpt_lib.TrainState
    writer: CheckpointWriter
    run_dir: Path
    validator: Validator | None = None     # with validation shards
    anchors: np.ndarray | None = None      # pixels (3, 3, 2) of the network; None = YOLOv5's defaults
    yolov5_schedule: yolov5_schedule.Yolov5Schedule | None = None   # with --hyp (``lr`` is its weight group's)
    anchor_reason: str = ""                # which anchors are used and why (``autoanchor.choose_anchors``)
    image_weights: np.ndarray | None = None  # --image_weights: per-image sampling weights (row order)


@dataclasses.dataclass
class ModelChoice:
    """The network a run builds and where that choice came from."""

    version: str
    layout: str
    anchors: np.ndarray | None     # pixels; None = YOLOv5's defaults
    start: object | None           # ``loading.read_weights`` of --weights (a CheckpointWeights), read once


def resolve_model(args, resume_state, log=logger.info) -> ModelChoice:
    """Size, layout and anchors: recorded by --resume or --weights, else the flags, else yolov5s / v5.0.

    A flag given explicitly must agree with the checkpoint (so a run never silently builds another
    network than the weights it loads). Sets ``args.yolov5_version`` / ``args.yolov5_layout`` to the
    choice, so config.yaml records it.
    """
    start, anchors = None, None
    if resume_state is not None:
        version, layout, source = resume_state.yolov5_version, resume_state.yolov5_layout, f"--resume {args.resume}"
        anchors = ckpt_lib.decode_anchors({"anchors": resume_state.anchors})
    elif args.resume_yolov5:
        start = read_weights(args.resume_yolov5)
        weights, metadata = start.weights, start.metadata
        version = metadata.get("yolov5_version") or version_from_weights(weights)
        layout = layout_from_weights(metadata, weights)
        anchors = ckpt_lib.decode_anchors(metadata)
        source = f"--weights {args.resume_yolov5}"
        if version is None and args.yolov5_version is None:
            raise ValueError(f"{source} does not record its model size and its weights match none; pass "
                             f"--yolov5_version")
    else:
        version, layout, source = None, None, None
    for flag, given, recorded in (("--yolov5_version", args.yolov5_version, version),
                                  ("--yolov5_layout", args.yolov5_layout, layout)):
        if given is not None and recorded is not None and given != recorded:
            raise ValueError(f"{flag} {given} but {source} holds a {recorded}; drop {flag} (it comes from the "
                             f"checkpoint) or start from a checkpoint of that network")
    version = version or args.yolov5_version or "yolov5s"
    layout = normalize_layout(layout or args.yolov5_layout or DEFAULT_LAYOUT)
    args.yolov5_version, args.yolov5_layout = version, layout
    if anchors is not None:
        log(anchors_message(anchors, source))
    return ModelChoice(version, layout, anchors, start)


def anchors_message(anchors: np.ndarray, source: str) -> str:
    """What the log says about the anchors a checkpoint records: whether they are YOLOv5's defaults."""
    defaults = np.asarray(YOLOV5_ANCHORS, np.float32).reshape(3, 3, 2)
    if np.array_equal(np.asarray(anchors, np.float32).reshape(3, 3, 2), defaults):
        return f"anchors from {source}: YOLOv5's default anchors"
    return f"anchors from {source} (not YOLOv5's defaults): {np.asarray(anchors).reshape(3, -1).tolist()} pixels"


def _existing_checkpoints(folder: Path) -> list[Path]:
    return sorted(folder.glob("*.ckpt")) if folder.is_dir() else []


def prepare(args, rank: int, group_size: int, log=logger.info) -> Session:
    """Build network, step and schedule; load --pretrained_backbone / --resume_yolov5 / --resume."""
    manifest = load_manifest(args.mindrecord)
    training_shape, resize_rate = config_lib.training_shape_of(args)
    global_batch = int(args.per_batch_size) * int(group_size)
    steps_per_epoch = sampler.steps_per_epoch(manifest.num_images, global_batch)
    run_dir = Path(args.ckpt_path)
    ckpt_dir = run_dir / f"ckpt_{rank}"
    if not args.resume and _existing_checkpoints(ckpt_dir):
        last = ckpt_dir / LAST_CHECKPOINT
        resumable = last if last.is_file() else _existing_checkpoints(ckpt_dir)[-1]
        raise ValueError(f"{ckpt_dir} already holds checkpoints of an earlier run; continue it with --resume "
                         f"{resumable} or choose another --ckpt_path")

    resume_state = _read_resume_state(args, manifest, global_batch, log) if args.resume else None
    choice = resolve_model(args, resume_state, log)
    labels = TrainingLabels(args.mindrecord, args.num_parallel_workers)
    anchor_choice = autoanchor.choose_anchors(args, choice, manifest, training_shape, labels, log)
    choice.anchors = anchor_choice.anchors
    log(anchor_choice.reason)
    schedule = None
    if args.hyp:
        schedule = yolov5_schedule.build_yolov5_schedule(
            args.hyp, total_batch_size=global_batch, batches_per_epoch=steps_per_epoch, epochs=args.max_epoch,
            cos_lr=bool(args.cos_lr), nominal_batch_size=args.nominal_batch_size)
        log(schedule.describe())
    parts = _build_parts(args, choice, manifest, training_shape, group_size, log, schedule)
    anchors = np.asarray(parts.network.anchors, np.float32)
    if args.resume:
        ckpt_lib.load_for_resume(parts.train_step, args.resume)
        log(f"resumed from {args.resume}: epoch {resume_state.epoch}, step {resume_state.step} of "
            f"{steps_per_epoch}, {resume_state.steps_completed} steps done")
        position = resume_state
    else:
        position = ckpt_lib.TrainState(
            epoch=0, step=0, steps_completed=0, seed=int(args.seed), dataset_id=manifest.dataset_id,
            yolov5_version=choice.version, num_classes=manifest.num_classes, training_shape=training_shape,
            global_batch_size=global_batch, yolov5_layout=choice.layout,
            anchors=ckpt_lib.encode_anchors(choice.anchors) if choice.anchors is not None else "",
            class_names=ckpt_lib.encode_class_names(manifest.class_names), hyp=hyp_lib.encode_hyp(args.hyp),
            image_weights=int(bool(args.image_weights)))
    if schedule is not None:
        lr = schedule.lr[:, yolov5_schedule.WEIGHT_GROUP].astype(np.float32)
    else:
        lr = lr_schedule.build_lr_schedule(
            lr_scheduler=args.lr_scheduler, lr=args.lr, steps_per_epoch=steps_per_epoch,
            warmup_epochs=args.warmup_epochs, max_epoch=args.max_epoch, lr_epochs=args.lr_epochs,
            lr_gamma=args.lr_gamma, t_max=args.t_max, eta_min=args.eta_min)
    saving = rank == 0 or not args.is_save_on_master
    keep_max = args.keep_checkpoint_max or config_lib.DEFAULT_KEEP_CHECKPOINT_MAX
    writer = CheckpointWriter(ckpt_dir, rank, saving, keep_max)
    validator = _make_validator(args, choice, manifest, parts, rank, group_size, log)
    if rank == 0 and args.resume:
        carry_results_over(Path(args.resume), run_dir, position.epoch)
    return Session(args, rank, group_size, manifest, training_shape, resize_rate, steps_per_epoch, lr, parts,
                   position, writer, run_dir, validator, anchors, schedule, anchor_choice.reason,
                   image_weights_for(labels, manifest.num_classes, log) if args.image_weights else None)


def _read_resume_state(args, manifest: Manifest, global_batch: int, log) -> ckpt_lib.TrainState:
    """The position and model ``--resume`` records, checked against this run's shards and global batch;
    adopts the checkpoint's seed (the sample order continues only with it)."""
    _, metadata = ckpt_lib.read_checkpoint(args.resume)
    resume_state = ckpt_lib.train_state_from(metadata, args.resume)
    sampler.check_resume(resume_state.dataset_id, manifest.dataset_id)
    if resume_state.global_batch_size != global_batch:
        raise ValueError(f"cannot resume {args.resume}: it was trained with a global batch of "
                         f"{resume_state.global_batch_size} images (per_batch_size x ranks), this run has "
                         f"{global_batch}; the sample order is defined per global batch")
    if resume_state.hyp != hyp_lib.encode_hyp(args.hyp):
        raise ValueError(f"cannot resume {args.resume} exactly: it was trained with "
                         + (f"the YOLOv5 hyperparameters {resume_state.hyp}" if resume_state.hyp else "no --hyp")
                         + (f", this run has {hyp_lib.encode_hyp(args.hyp)}" if args.hyp else ", this run has none")
                         + "; resume with the run's config.yaml (--config), which holds them")
    if resume_state.seed != args.seed:
        log(f"resuming with the checkpoint's seed {resume_state.seed} (not --seed {args.seed}) so that the "
            f"sample order continues")
        args.seed = resume_state.seed
    if resume_state.image_weights != int(bool(args.image_weights)):
        log(f"resuming {'with' if resume_state.image_weights else 'without'} --image_weights as the checkpoint's "
            f"run did, so that the sample order continues")
        args.image_weights = bool(resume_state.image_weights)
    return resume_state


def _build_parts(args, choice: ModelChoice, manifest: Manifest, training_shape: int, group_size: int,
                 log, schedule=None) -> builder.TrainParts:
    """The network of ``choice`` with --pretrained_backbone / --weights loaded and --freeze applied, then
    loss, optimizer, loss scale, EMA and step around it. Sets ``args.loss_scale`` when left to the default."""
    amp_level = step_lib.amp_level_for(args.device_target, args.amp_level)
    if args.loss_scale is None:
        args.loss_scale = step_lib.default_loss_scale(amp_level, args.loss_scale_type)
    network = builder.build_network(choice.version, manifest.num_classes, seed=args.seed, amp_level=amp_level,
                                    layout=choice.layout, anchors=choice.anchors)
    if not args.resume:
        if args.pretrained_backbone:
            loading.load_pretrained_backbone(network, args.pretrained_backbone, log=log)
        if args.resume_yolov5:
            loading.load_finetune_weights(network, args.resume_yolov5, manifest.num_classes, log=log,
                                          read=choice.start)
    elif args.pretrained_backbone:
        log("--pretrained_backbone is ignored with --resume (the checkpoint holds every weight)")
    layers = config_lib.frozen_layers(args.freeze)
    if layers:
        frozen = builder.freeze_layers(network, choice.layout, layers)
        log(f"--freeze: YOLOv5 layers {_layer_ranges(layers)} are frozen ({len(frozen)} parameters get no "
            f"gradient; their BatchNorm statistics still follow the data, as in YOLOv5)")
    return builder.assemble(
        network, num_classes=manifest.num_classes, training_shape=training_shape, momentum=args.momentum,
        weight_decay=args.weight_decay, loss_scale=args.loss_scale, loss_scale_type=args.loss_scale_type,
        label_smooth_factor=args.label_smooth_factor if args.label_smooth else 0.0, iou_type=args.iou_type,
        group_size=group_size, anchors=np.asarray(network.anchors, np.float32),
        loss_options=hyp_lib.loss_options(args.hyp), yolov5_schedule=schedule)


def _make_validator(args, choice: ModelChoice, manifest: Manifest, parts: builder.TrainParts, rank: int,
                    group_size: int, log) -> Validator | None:
    """The ``Validator`` of the EMA weights when the run has validation shards (checked to share the
    training shards' categories), else None."""
    settings = config_lib.validation_settings(args)
    if settings is None:
        return None
    check_val_categories(manifest, load_manifest(settings.mindrecord), settings.mindrecord)
    validator = Validator(
        settings, ema=parts.ema, rank=rank, group_size=group_size, num_parallel_workers=args.num_parallel_workers,
        build_network=lambda: builder.build_network(choice.version, manifest.num_classes, seed=args.seed,
                                                    layout=choice.layout, anchors=choice.anchors))
    log(f"validating the EMA weights on {settings.mindrecord} every {settings.eval_interval} epoch(s) at "
        f"{settings.testing_shape}"
        + (f", stopping after {settings.patience} validations without a better fitness" if settings.patience
           else ""))
    return validator


def check_val_categories(train_manifest: Manifest, val_manifest: Manifest, val_dir) -> None:
    """ValueError unless the validation shards have the training shards' categories, in the same order."""
    if val_manifest.categories != train_manifest.categories:
        raise ValueError(f"--val_mindrecord {val_dir} has categories {val_manifest.class_names} (ids "
                         f"{val_manifest.category_ids.tolist()}) but the training shards have "
                         f"{train_manifest.class_names} (ids {train_manifest.category_ids.tolist()}); convert both "
                         f"splits from annotation files with the same categories")


def carry_results_over(resume_checkpoint: Path, run_dir: Path, epoch: int) -> None:
    """When a run resumes into another folder, its ``results.csv`` starts with the earlier run's rows of
    the epochs before ``epoch`` (the resumed run then adds the rest)."""
    previous = resume_checkpoint.resolve().parent.parent / results_lib.RESULTS_CSV
    target = run_dir / results_lib.RESULTS_CSV
    if previous.is_file() and previous.resolve() != target.resolve() and not target.exists():
        results_lib.write_results(target, [row for row in results_lib.read_results(previous) if row["epoch"] <= epoch])


def _layer_ranges(layers) -> str:
    """[0, 1, 2, 5] -> '0-2, 5'."""
    runs, start = [], None
    for index, layer in enumerate(layers):
        if start is None:
            start = layer
        if index + 1 == len(layers) or layers[index + 1] != layer + 1:
            runs.append(f"{start}-{layer}" if layer != start else f"{layer}")
            start = None
    return ", ".join(runs)
