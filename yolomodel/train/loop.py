"""The training loop: data epochs, the compiled step, logging, checkpoints, resume, signals, profiler.

Position and exact resume
-------------------------
The run's position is (epoch, step within the epoch); ``steps_completed`` counts all steps. The input
pipeline is built per epoch with ``start_epoch``/``start_step`` (``yolodata.pipeline``), so the batches
from a position on are exactly those an uninterrupted run sees there, and the learning rate of step
``i`` is entry ``i`` of the per-step schedule. A checkpoint stores weights, EMA, optimizer moments,
loss-scale state and the position, so resuming reproduces the uninterrupted run's weights.

Stopping
--------
* SIGINT / SIGTERM: the step that is running finishes, a checkpoint is written, and ``train`` returns
  with status "interrupted" (a second signal interrupts at once). With several ranks the stop request
  travels through the step's all-reduce, so every rank stops after the same step.
* A non-finite loss (or, with the static loss scale, non-finite gradients): the step's update is not
  applied, nothing more is saved, and ``TrainingDiverged`` names the last checkpoint written.
"""
from __future__ import annotations

import dataclasses
import logging
import math
import signal
import threading
import time
from pathlib import Path

import numpy as np

from yolodata.manifest import Manifest
from yolodata.pipeline.targets import STRIDES

from . import checkpoint as ckpt_lib
from . import results as results_lib
from .results import ValidationState
from .validation import BEST_CHECKPOINT, LAST_CHECKPOINT, Validator, summary_line
from . import config as config_lib

logger = logging.getLogger(__name__)

# The compiled step's inputs, by name among pipeline.TRAIN_COLUMNS: the image, then each stride's
# (indices, values) target pair in stride order (YoloLoss's order)
STEP_INPUT_COLUMNS = ("image",) + tuple(f"target_{kind}_s{stride}" for stride in STRIDES
                                        for kind in ("indices", "values"))


class TrainingDiverged(RuntimeError):
    """The loss (or, with a static loss scale, a gradient) became NaN or infinite."""


@dataclasses.dataclass
class TrainSummary:
    status: str                    # "finished", "interrupted", "profiled" or "stopped_early" (--patience)
    steps: int                     # steps run by this process
    steps_completed: int           # steps since the start of training (the position)
    epoch: int
    step: int
    seconds: float
    images_per_second: float       # after the first step of this process (which includes compilation)
    last_loss: float | None
    last_checkpoint: str | None
    signal: int | None = None
    profile_dir: str | None = None
    validation: ValidationState | None = None   # the best fitness so far, when validating


class StopSignals:
    """Turns SIGINT/SIGTERM into a flag that the loop checks after each step.

    A second signal restores the default handling and re-delivers itself (Ctrl-C twice stops at once).
    Handlers are installed only in the main thread (Python's rule) and restored on exit.
    """

    def __init__(self, signals=(signal.SIGINT, signal.SIGTERM)):
        self.signals = tuple(signals)
        self.received: int | None = None
        self._previous: dict = {}

    def _handle(self, signum, frame):
        if self.received is not None:
            self._restore()
            signal.raise_signal(signum)
            return
        self.received = signum
        logger.warning("received %s: finishing the current step, then saving a checkpoint and stopping "
                       "(send it again to stop at once)", signal.Signals(signum).name)

    def _restore(self):
        for signum, handler in self._previous.items():
            signal.signal(signum, handler)
        self._previous = {}

    def __enter__(self):
        if threading.current_thread() is threading.main_thread():
            for signum in self.signals:
                self._previous[signum] = signal.signal(signum, self._handle)
        return self

    def __exit__(self, *exc):
        self._restore()
        return False


class IntervalMeter:
    """Mean of the loss parts (loss, box, obj, cls) since the last log line, and where the time went:
    waiting for the input pipeline's next batch versus the step (host copies, compiled step, results)."""

    def __init__(self):
        self.total = np.zeros(4, np.float64)
        self.count = 0
        self.data_seconds = 0.0
        self.step_seconds = 0.0

    def update(self, parts, data_seconds: float = 0.0, step_seconds: float = 0.0) -> None:
        self.total += np.asarray(parts, np.float64)
        self.count += 1
        self.data_seconds += data_seconds
        self.step_seconds += step_seconds

    def mean(self) -> np.ndarray:
        return self.total / max(self.count, 1)

    def mean_ms(self) -> tuple[float, float]:
        """(data wait, step) milliseconds per step since the last log line."""
        count = max(self.count, 1)
        return 1000.0 * self.data_seconds / count, 1000.0 * self.step_seconds / count

    def reset(self) -> None:
        self.total[:] = 0
        self.count = 0
        self.data_seconds = 0.0
        self.step_seconds = 0.0


def log_line(epoch: int, iteration: int, parts, fps: float, lr, timing_ms=None) -> str:
    """The reference's line, ``epoch[0], iter[600], loss:296.308071, fps:44.44 imgs/sec, lr:0.000106...``,
    followed by the loss parts and, given ``timing_ms`` = (data wait, step), where a step's time went."""
    loss, box, obj, cls = (float(v) for v in parts)
    line = (f"epoch[{epoch}], iter[{iteration}], loss:{loss:f}, fps:{fps:.2f} imgs/sec, "
            f"lr:{float(np.float32(lr))!r}, box:{box:f}, obj:{obj:f}, cls:{cls:f}")
    if timing_ms is not None:
        line += f", data_wait:{timing_ms[0]:.1f}ms, step:{timing_ms[1]:.1f}ms"
    return line


def position_after(epoch: int, step_in_epoch: int, steps_per_epoch: int) -> tuple[int, int]:
    """(epoch, steps done in it) after finishing step ``step_in_epoch`` (0-based) of ``epoch``."""
    if step_in_epoch + 1 >= steps_per_epoch:
        return epoch + 1, 0
    return epoch, step_in_epoch + 1


class CheckpointWriter:
    """Writes ``folder/{rank}-{epoch}_{step}.ckpt`` atomically and keeps the newest ``keep_max`` of this run."""

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

    def save_named(self, train_cell, state: ckpt_lib.TrainState, name: str) -> Path | None:
        """``folder/name`` (``last.ckpt``, ``best.ckpt``): a full training checkpoint outside the rotation."""
        if not self.enabled:
            return None
        return ckpt_lib.save_train_checkpoint(self.folder / name, train_cell, state)


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
    from yolomodel.checkpoint.loading import layout_from_weights, read_weights, version_from_weights
    from yolomodel.network import DEFAULT_LAYOUT, normalize_layout

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
        log(f"anchors from {source} (not YOLOv5's defaults): {anchors.reshape(3, -1).tolist()} pixels")
    return ModelChoice(version, layout, anchors, start)


def _existing_checkpoints(folder: Path) -> list[Path]:
    return sorted(folder.glob("*.ckpt")) if folder.is_dir() else []


def prepare(args, rank: int, group_size: int, log=logger.info) -> Session:
    """Build network, step and schedule; load --pretrained_backbone / --resume_yolov5 / --resume."""
    from yolodata.pipeline import sampler
    from yolodata.manifest import load_manifest

    from yolomodel.checkpoint import loading

    from . import builder, lr_schedule
    from . import step as step_lib

    manifest = load_manifest(args.mindrecord)
    training_shape, resize_rate = config_lib.training_shape_of(args)
    global_batch = int(args.per_batch_size) * int(group_size)
    steps_per_epoch = sampler.steps_per_epoch(manifest.num_images, global_batch)
    run_dir = Path(args.ckpt_path)
    ckpt_dir = run_dir / f"ckpt_{rank}"
    if not args.resume and _existing_checkpoints(ckpt_dir):
        raise ValueError(f"{ckpt_dir} already holds checkpoints of an earlier run; continue it with --resume "
                         f"{_existing_checkpoints(ckpt_dir)[-1]} or choose another --ckpt_path")

    resume_state = None
    if args.resume:
        _, metadata = ckpt_lib.read_checkpoint(args.resume)
        resume_state = ckpt_lib.train_state_from(metadata, args.resume)
        sampler.check_resume(resume_state.dataset_id, manifest.dataset_id)
        if resume_state.global_batch_size != global_batch:
            raise ValueError(f"cannot resume {args.resume}: it was trained with a global batch of "
                             f"{resume_state.global_batch_size} images (per_batch_size x ranks), this run has "
                             f"{global_batch}; the sample order is defined per global batch")
        if resume_state.seed != args.seed:
            log(f"resuming with the checkpoint's seed {resume_state.seed} (not --seed {args.seed}) so that the "
                f"sample order continues")
            args.seed = resume_state.seed

    choice = resolve_model(args, resume_state, log)
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
    anchors = np.asarray(network.anchors, np.float32)
    parts = builder.assemble(
        network, num_classes=manifest.num_classes, training_shape=training_shape, momentum=args.momentum,
        weight_decay=args.weight_decay, loss_scale=args.loss_scale, loss_scale_type=args.loss_scale_type,
        label_smooth_factor=args.label_smooth_factor if args.label_smooth else 0.0, iou_type=args.iou_type,
        group_size=group_size, anchors=anchors)
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
            class_names=ckpt_lib.encode_class_names(manifest.class_names))
    lr = lr_schedule.build_lr_schedule(
        lr_scheduler=args.lr_scheduler, lr=args.lr, steps_per_epoch=steps_per_epoch,
        warmup_epochs=args.warmup_epochs, max_epoch=args.max_epoch, lr_epochs=args.lr_epochs,
        lr_gamma=args.lr_gamma, t_max=args.t_max, eta_min=args.eta_min)
    saving = rank == 0 or not args.is_save_on_master
    keep_max = args.keep_checkpoint_max or int(args.max_epoch)
    writer = CheckpointWriter(ckpt_dir, rank, saving, keep_max)
    validator = None
    settings = config_lib.validation_settings(args)
    if settings is not None:
        check_val_categories(manifest, load_manifest(settings.mindrecord), settings.mindrecord)
        validator = Validator(
            settings, ema=parts.ema, rank=rank, group_size=group_size, num_parallel_workers=args.num_parallel_workers,
            build_network=lambda: builder.build_network(choice.version, manifest.num_classes, seed=args.seed,
                                                        layout=choice.layout, anchors=choice.anchors))
        log(f"validating the EMA weights on {settings.mindrecord} every {settings.eval_interval} epoch(s) at "
            f"{settings.testing_shape}"
            + (f", stopping after {settings.patience} validations without a better fitness" if settings.patience
               else ""))
    if rank == 0 and args.resume:
        carry_results_over(Path(args.resume), run_dir, position.epoch)
    return Session(args, rank, group_size, manifest, training_shape, resize_rate, steps_per_epoch, lr, parts,
                   position, writer, run_dir, validator, anchors)


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


def step_inputs(columns) -> list:
    """The step's input arrays (``STEP_INPUT_COLUMNS``) from a batch's columns in ``TRAIN_COLUMNS`` order."""
    from yolodata.pipeline import TRAIN_COLUMNS

    named = dict(zip(TRAIN_COLUMNS, columns))
    return [named[name] for name in STEP_INPUT_COLUMNS]


def _epoch_dataset(session: Session, epoch: int, start_step: int):
    from yolodata.augment.policy import AugmentConfig
    from yolodata.pipeline import create_train_dataset

    args = session.args
    return create_train_dataset(
        args.mindrecord, per_batch_size=args.per_batch_size, training_shape=session.training_shape,
        resize_rate=session.resize_rate, num_parallel_workers=args.num_parallel_workers, rank=session.rank,
        group_size=session.group_size, seed=args.seed, start_epoch=epoch, start_step=start_step, num_epochs=1,
        max_boxes=args.max_boxes, expected_dataset_id=session.position.dataset_id,
        augment=AugmentConfig.from_mapping(args.augment),
        **({} if session.anchors is None else {"anchors": session.anchors}))


def _start_profiler(folder: Path):
    from mindspore.profiler import ProfilerActivity, profile, tensorboard_trace_handler

    profiler = profile(activities=[ProfilerActivity.CPU, ProfilerActivity.NPU]
                       if _device_is_ascend() else [ProfilerActivity.CPU],
                       on_trace_ready=tensorboard_trace_handler(str(folder)))
    profiler.start()
    return profiler


def _device_is_ascend() -> bool:
    import mindspore as ms

    return ms.get_context("device_target") == "Ascend"


def _diverged_message(parts, finite_loss: bool, epoch: int, iteration: int, writer: CheckpointWriter,
                      args) -> str:
    loss, box, obj, cls = (float(v) for v in parts)
    what = (f"the loss became {loss} (box {box}, obj {obj}, cls {cls})" if not finite_loss else
            f"the gradients overflowed (loss {loss:f}) with the static loss scale {args.loss_scale:g}")
    if writer.last_path is not None:
        kept = f"the last good checkpoint is {writer.last_path}"
    else:
        kept = "no checkpoint was written in this run" + (f"; it started from {args.resume}" if args.resume else "")
    return (f"training stopped at epoch[{epoch}], iter[{iteration}]: {what}. The update of this step was not "
            f"applied and nothing after it was saved; {kept}. Try a lower --lr or a longer --warmup_epochs, "
            f"check the data, or use --loss_scale_type dynamic")


def _non_finite_weights_message(epoch: int, iteration: int, writer: CheckpointWriter) -> str:
    kept = (f"the last good checkpoint is {writer.last_path}" if writer.last_path is not None
            else "no checkpoint was written in this run")
    return (f"training stopped at epoch[{epoch}], iter[{iteration}]: the weights are no longer finite (a gradient "
            f"overflowed while the loss stayed finite), so no checkpoint was written; {kept}. Try a lower --lr or "
            f"a longer --warmup_epochs, or --loss_scale_type dynamic, which checks every gradient")


def train(args, rank: int = 0, group_size: int = 1, *, batch_hook=None, log=logger.info) -> TrainSummary:
    """Run training as configured by ``args`` (``config.parse_config``), after ``yolomodel.device.setup_device``.

    ``batch_hook(iteration, columns) -> columns`` (tests) may replace a batch's numpy columns
    (``yolodata.pipeline.TRAIN_COLUMNS`` order) before the step sees them.
    """
    import mindspore as ms

    from . import step as step_lib

    session = prepare(args, rank, group_size, log=log)
    if rank == 0:
        extra = {"rank_0_of": group_size, "steps_per_epoch": session.steps_per_epoch,
                 "num_classes": session.manifest.num_classes, "dataset_id": session.manifest.dataset_id,
                 "training_shape_used": session.training_shape, "resize_rate_used": session.resize_rate}
        config_path = config_lib.save_config(args, session.run_dir, extra)
        log(f"configuration saved to {config_path}")
    position = session.position
    global_batch = int(args.per_batch_size) * int(group_size)
    total_steps = int(args.max_epoch) * session.steps_per_epoch
    log(f"{args.yolov5_version} (layout {args.yolov5_layout}), {session.manifest.num_classes} classes, "
        f"{session.manifest.num_images} images, "
        f"{session.steps_per_epoch} steps per epoch of {global_batch} images ({group_size} rank(s) x "
        f"{args.per_batch_size}), epochs {position.epoch}..{args.max_epoch - 1}, training shape "
        f"{session.training_shape}"
        + (f" (multi-scale, a new shape every {session.resize_rate} steps)" if session.resize_rate else ""))

    train_step = session.parts.train_step
    # with a unit loss scale the step checks the loss only; the weights are checked before each save
    checks_gradients = train_step.apply_gradients.check_gradients
    meter = IntervalMeter()
    validation_seconds = 0.0     # kept out of the logged images/s, which stay the train step's
    started = time.perf_counter()
    first_step_done_at = None
    last_log_time, last_log_iter = started, position.steps_completed - 1
    steps_run, last_parts, status, profile_dir = 0, None, "finished", None
    profiler = None
    if args.need_profiler:
        profile_dir = session.run_dir / f"profiler_rank{rank}"
        profiler = _start_profiler(profile_dir)
        log(f"profiling the first {args.profiler_steps} steps into {profile_dir}")
    no_stop, stop = ms.Tensor(np.float32(0.0)), ms.Tensor(np.float32(1.0))

    with StopSignals() as signals:
        epoch, start_step = position.epoch, position.step
        while epoch < args.max_epoch and status == "finished":
            dataset = _epoch_dataset(session, epoch, start_step)
            step_in_epoch = start_step
            epoch_started, epoch_steps_run = time.perf_counter(), 0
            batches = dataset.create_tuple_iterator(num_epochs=1, output_numpy=True)
            while True:
                waited_from = time.perf_counter()
                columns = next(batches, None)
                if columns is None:
                    break
                step_from = time.perf_counter()
                iteration = position.steps_completed
                if batch_hook is not None:
                    columns = batch_hook(iteration, list(columns))
                inputs = [ms.Tensor(column) for column in step_inputs(columns)]
                lr_value = session.lr[min(iteration, total_steps - 1)]
                outputs = train_step(*inputs, ms.Tensor(lr_value), stop if signals.received else no_stop)
                parts, finite, scale, votes = (o.asnumpy() for o in outputs)
                step_done = time.perf_counter()
                steps_run += 1
                if first_step_done_at is None:
                    first_step_done_at = time.perf_counter()
                finite_loss = bool(np.isfinite(parts).all())
                if not bool(finite):
                    if not finite_loss or args.loss_scale_type == "static":
                        if profiler is not None:
                            profiler.stop()
                        raise TrainingDiverged(_diverged_message(parts, finite_loss, epoch, iteration,
                                                                 session.writer, args))
                    logger.warning("epoch[%d], iter[%d]: gradient overflow at loss scale %g, update skipped; "
                                   "the dynamic loss scale is now %g", epoch, iteration, float(scale),
                                   float(session.parts.loss_scale.scale.asnumpy()))
                last_parts = parts
                meter.update(parts, step_from - waited_from, step_done - step_from)
                epoch_steps_run += 1
                next_epoch, next_step = position_after(epoch, step_in_epoch, session.steps_per_epoch)
                epoch_losses = (np.add(position.epoch_loss_sums, parts[1:4]), position.epoch_loss_steps + 1)
                position = position.after_step(next_epoch, next_step, iteration + 1, parts[1:4])
                if iteration % args.log_interval == 0:
                    now = time.perf_counter()
                    fps = global_batch * (iteration - last_log_iter) / max(now - last_log_time, 1e-9)
                    if rank == 0:
                        log(log_line(epoch, iteration, meter.mean(), fps, lr_value, meter.mean_ms()))
                    meter.reset()
                    last_log_time, last_log_iter = now, iteration
                epoch_end = next_epoch != epoch
                interval_due = args.ckpt_interval is not None and (iteration + 1) % args.ckpt_interval == 0
                # one process stops as soon as it sees the signal; ranks stop on the all-reduced votes
                stopping = float(votes) > 0 or (group_size == 1 and signals.received is not None)
                outcome = None
                if epoch_end:
                    epoch_seconds = time.perf_counter() - epoch_started
                    if session.validator is not None and session.validator.settings.due(epoch + 1, args.max_epoch):
                        outcome = session.validator.validate(position.validation, epoch + 1)
                        validation_seconds += outcome.seconds
                        last_log_time += outcome.seconds
                        position = dataclasses.replace(position, validation=outcome.state)
                        if rank == 0:
                            log("validation of the EMA weights:\n" + outcome.scores.text)
                            log(summary_line(outcome, epoch + 1, args.max_epoch))
                    if rank == 0:
                        record_epoch(session.run_dir, epoch + 1, epoch_losses, lr_value, epoch_seconds,
                                     global_batch * epoch_steps_run / max(epoch_seconds, 1e-9), outcome)
                if epoch_end or interval_due or stopping:
                    if not checks_gradients and not step_lib.weights_finite(session.parts.network):
                        raise TrainingDiverged(_non_finite_weights_message(epoch, iteration, session.writer))
                    saved = session.writer.save(train_step, position, epoch + 1, step_in_epoch + 1)
                    if saved is not None:
                        log(f"saved checkpoint {saved}")
                if epoch_end:
                    session.writer.save_named(train_step, position, LAST_CHECKPOINT)
                    if outcome is not None and outcome.improved:
                        best = session.writer.save_named(train_step, position, BEST_CHECKPOINT)
                        if best is not None:
                            log(f"saved {best} (fitness {outcome.fitness:.4f}, the best so far)")
                    if outcome is not None and outcome.state.patience_exhausted(session.validator.settings.patience):
                        status = "stopped_early"
                        log(f"stopping early: the fitness has not improved for {outcome.state.evaluations_since_best} "
                            f"validations (--patience {session.validator.settings.patience}); the best, "
                            f"{outcome.state.best_fitness:.4f} at epoch {outcome.state.best_epoch}, is in "
                            f"{session.writer.folder / BEST_CHECKPOINT}")
                        break
                if profiler is not None and steps_run >= args.profiler_steps:
                    profiler.stop()
                    profiler = None
                    status = "profiled"
                    log(f"MindSpore profile of {steps_run} steps written to {profile_dir}; stopping as the "
                        f"reference does with --need_profiler 1")
                    break
                if stopping:
                    status = "interrupted"
                    break
                step_in_epoch += 1
            bad_rows = len(getattr(dataset, "bad_rows", []))
            if bad_rows:
                logger.warning("epoch %d: %d bad rows were skipped", epoch, bad_rows)
            epoch, start_step = epoch + 1, 0
    if profiler is not None:
        profiler.stop()
        log(f"MindSpore profile written to {profile_dir}")

    ended = time.perf_counter()
    timed_steps = max(steps_run - 1, 0)
    steady = (ended - first_step_done_at - validation_seconds) if first_step_done_at is not None else 0.0
    summary = TrainSummary(
        status=status, steps=steps_run, steps_completed=position.steps_completed, epoch=position.epoch,
        step=position.step, seconds=ended - started,
        images_per_second=global_batch * timed_steps / steady if steady > 0 and timed_steps else 0.0,
        last_loss=float(last_parts[0]) if last_parts is not None else None,
        last_checkpoint=str(session.writer.last_path) if session.writer.last_path else None,
        signal=signals.received, profile_dir=str(profile_dir) if profile_dir else None,
        validation=position.validation if session.validator is not None else None)
    if rank == 0:
        log(summary_text(summary))
    return summary


def record_epoch(run_dir: Path, epoch_number: int, epoch_losses, lr, epoch_seconds: float,
                 images_per_second: float, outcome) -> None:
    """The epoch's row of ``results.csv`` (mean box/obj/cls losses, lr, the COCO numbers when validated,
    times) and the redrawn ``results.png``."""
    sums, steps = epoch_losses
    row = results_lib.results_row(
        epoch_number=epoch_number, losses=np.asarray(sums, np.float64) / max(int(steps), 1), lr=float(lr),
        epoch_seconds=epoch_seconds, images_per_second=images_per_second,
        coco_stats=outcome.stats if outcome is not None else None,
        val_seconds=outcome.seconds if outcome is not None else None)
    rows = results_lib.write_results_row(run_dir / results_lib.RESULTS_CSV, row)
    results_lib.plot_results(rows, run_dir / results_lib.RESULTS_PNG)


def summary_text(summary: TrainSummary) -> str:
    loss = "n/a" if summary.last_loss is None or not math.isfinite(summary.last_loss) else f"{summary.last_loss:f}"
    return (f"training {summary.status}: {summary.steps} steps in {summary.seconds:.1f} s "
            f"({summary.images_per_second:.2f} images/s after the first step), now at epoch {summary.epoch} "
            f"step {summary.step} ({summary.steps_completed} steps in all), last loss {loss}, last checkpoint "
            f"{summary.last_checkpoint or 'none'} (its ema.* entries are the weights to evaluate and export)"
            + (f"; best fitness {summary.validation.best_fitness:.4f} at epoch {summary.validation.best_epoch} "
               f"({BEST_CHECKPOINT})" if summary.validation is not None and summary.validation.best_epoch > 0 else ""))
