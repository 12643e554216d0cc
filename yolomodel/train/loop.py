"""The training loop: data epochs, the compiled step, logging, checkpoints, resume, signals, profiler.

``train`` takes its set-up from ``train.session.prepare``, then for each epoch runs the steps
(``_run_steps``) and one end-of-epoch call (``_end_epoch``: validation, the results row, the epoch's
checkpoint, last/best, patience).

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
import itertools
import logging
import math
import signal
import threading
import time
from pathlib import Path

import mindspore as ms
import mindspore.dataset as ds
import numpy as np

from yolodata.augment.policy import AugmentConfig
from yolodata.pipeline import TRAIN_COLUMNS, create_train_dataset
from yolodata.pipeline.targets import STRIDES

from . import checkpoint as ckpt_lib
from . import config as config_lib
from . import results as results_lib
from . import hyp as hyp_lib
from . import memory
from . import step as step_lib
from . import yolov5_step
from .results import ValidationState
from .run_report import RunReport
from .session import CheckpointWriter, Session, prepare
from .validation import (BEST_CHECKPOINT, BEST_WEIGHTS, LAST_CHECKPOINT, LAST_WEIGHTS, ValidationOutcome,
                         summary_line)

logger = logging.getLogger(__name__)

# Batches each pipeline stage may hold ahead (MindSpore's default is 16: at 640 px and batch 16, 16 batches
# of 19.7 MB per stage). A step takes longer than a batch does to build, so a short queue keeps the step fed.
PREFETCH_BATCHES = 4

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


def step_inputs(columns) -> list:
    """The step's input arrays (``STEP_INPUT_COLUMNS``) from a batch's columns in ``TRAIN_COLUMNS`` order."""
    named = dict(zip(TRAIN_COLUMNS, columns))
    return [named[name] for name in STEP_INPUT_COLUMNS]


def _epoch_dataset(session: Session, epoch: int, start_step: int):
    """The input pipeline of one epoch from ``start_step`` on (the batches an uninterrupted run sees there)."""
    args = session.args
    return create_train_dataset(
        args.mindrecord, per_batch_size=args.per_batch_size, training_shape=session.training_shape,
        resize_rate=session.resize_rate, num_parallel_workers=args.num_parallel_workers, rank=session.rank,
        group_size=session.group_size, seed=args.seed, start_epoch=epoch, start_step=start_step, num_epochs=1,
        max_boxes=args.max_boxes, expected_dataset_id=session.position.dataset_id,
        augment=AugmentConfig.from_mapping(args.augment), anchor_t=hyp_lib.anchor_t_of(args.hyp),
        image_weights=session.image_weights,
        **({} if session.anchors is None else {"anchors": session.anchors}))


def _start_profiler(folder: Path):
    # mindspore.profiler is imported only when --need_profiler asks for it
    from mindspore.profiler import ProfilerActivity, profile, tensorboard_trace_handler

    profiler = profile(activities=[ProfilerActivity.CPU, ProfilerActivity.NPU]
                       if _device_is_ascend() else [ProfilerActivity.CPU],
                       on_trace_ready=tensorboard_trace_handler(str(folder)))
    profiler.start()
    return profiler


def _device_is_ascend() -> bool:
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


@dataclasses.dataclass
class Run:
    """One call of ``train``: the session, how steps are fed and logged, and what changes from step to step."""

    session: Session
    batch_hook: object
    log: object
    global_batch: int
    total_steps: int
    checks_gradients: bool         # with a unit loss scale the step checks the loss only; weights before each save
    stop_flags: tuple              # the step's stop input: (no stop, stop)
    position: ckpt_lib.TrainState
    started: float
    last_log_time: float
    last_log_iter: int
    profiler: object = None
    profile_dir: Path | None = None
    signals: StopSignals | None = None
    meter: IntervalMeter = dataclasses.field(default_factory=IntervalMeter)
    steps_run: int = 0
    first_step_done_at: float | None = None
    validation_seconds: float = 0.0     # kept out of the logged images/s, which stay the train step's
    run_report: RunReport | None = None  # batch pictures, the best epoch's per-class report (rank 0 writes)
    last_parts: np.ndarray | None = None
    status: str = "finished"


@dataclasses.dataclass(frozen=True)
class StepDone:
    """What the saving, stopping and epoch-end decisions need from one step."""

    epoch: int
    step_in_epoch: int
    iteration: int
    lr: np.float32
    epoch_losses: tuple            # (box/obj/cls sums, steps) of the epoch up to and including this step
    epoch_end: bool
    interval_due: bool             # --ckpt_interval asks for a checkpoint after this step
    stopping: bool                 # a stop was requested (this process's signal, or any rank's vote)


def train(args, rank: int = 0, group_size: int = 1, *, batch_hook=None, log=logger.info) -> TrainSummary:
    """Run training as configured by ``args`` (``config.parse_config``), after ``yolomodel.device.setup_device``.

    ``batch_hook(iteration, columns) -> columns`` (tests) may replace a batch's numpy columns
    (``yolodata.pipeline.TRAIN_COLUMNS`` order) before the step sees them.
    """
    memory.note("start")
    memory.limit_malloc_arenas()
    ds.config.set_prefetch_size(PREFETCH_BATCHES)
    session = prepare(args, rank, group_size, log=log)
    memory.note("set-up (network, weights, step built; validator made)")
    if rank == 0:
        _save_run_config(session, log)
    run = _start_run(session, batch_hook, log)
    with StopSignals() as signals:
        run.signals = signals
        epoch, start_step = run.position.epoch, run.position.step
        while epoch < args.max_epoch and run.status == "finished":
            _train_epoch(run, epoch, start_step)
            epoch, start_step = epoch + 1, 0
    if run.profiler is not None:
        run.profiler.stop()
        log(f"MindSpore profile written to {run.profile_dir}")
    if run.status == "stopped_early" or (run.status == "finished" and run.position.epoch >= args.max_epoch):
        _write_final_weights(run)
        memory.note("final weights files written")
    summary = _summary(run)
    if rank == 0:
        log(summary_text(summary))
        if run.run_report.summary():
            log(run.run_report.summary())
    return summary


def _write_final_weights(run: Run) -> None:
    """When training ends: the EMA weights of best.ckpt and last.ckpt as small half-precision weights files
    (``best_weights.ckpt``, ``last_weights.ckpt``) for eval, infer, export and ``--weights``."""
    writer, epoch = run.session.writer, run.position.epoch
    for checkpoint, weights, what in ((BEST_CHECKPOINT, BEST_WEIGHTS, "best"), (LAST_CHECKPOINT, LAST_WEIGHTS, "last")):
        path = writer.save_weights(checkpoint, weights, f"EMA weights of {checkpoint} ({what} epoch of a "
                                                        f"{epoch}-epoch run)")
        if path is not None:
            run.log(f"saved {path} ({path.stat().st_size / 1e6:.1f} MB: the {what} EMA weights in half precision "
                    f"for yolo-eval, yolo-infer, yolo-export and --weights)")


def _save_run_config(session: Session, log) -> None:
    extra = {"rank_0_of": session.group_size, "steps_per_epoch": session.steps_per_epoch,
             "num_classes": session.manifest.num_classes, "dataset_id": session.manifest.dataset_id,
             "training_shape_used": session.training_shape, "resize_rate_used": session.resize_rate,
             "anchors": np.asarray(session.anchors, np.float32).reshape(3, -1).tolist(),
             "anchors_reason": session.anchor_reason}
    config_path = config_lib.save_config(session.args, session.run_dir, extra)
    log(f"configuration saved to {config_path}")


def _start_run(session: Session, batch_hook, log) -> Run:
    """Log what is trained, start the clock and (with --need_profiler) the profiler."""
    args, position, group_size = session.args, session.position, session.group_size
    global_batch = int(args.per_batch_size) * int(group_size)
    log(f"{args.yolov5_version} (layout {args.yolov5_layout}), {session.manifest.num_classes} classes, "
        f"{session.manifest.num_images} images, "
        f"{session.steps_per_epoch} steps per epoch of {global_batch} images ({group_size} rank(s) x "
        f"{args.per_batch_size}), epochs {position.epoch}..{args.max_epoch - 1}, training shape "
        f"{session.training_shape}"
        + (f" (multi-scale, a new shape every {session.resize_rate} steps)" if session.resize_rate else ""))
    if args.hyp:
        log(f"--hyp {hyp_lib.summary(args.hyp)}")
    started = time.perf_counter()
    profile_dir, profiler = None, None
    if args.need_profiler:
        profile_dir = session.run_dir / f"profiler_rank{session.rank}"
        profiler = _start_profiler(profile_dir)
        log(f"profiling the first {args.profiler_steps} steps into {profile_dir}")
    return Run(session=session, batch_hook=batch_hook, log=log, global_batch=global_batch,
               total_steps=int(args.max_epoch) * session.steps_per_epoch,
               checks_gradients=session.parts.train_step.apply_gradients.check_gradients,
               stop_flags=(ms.Tensor(np.float32(0.0)), ms.Tensor(np.float32(1.0))), position=position,
               started=started, last_log_time=started, last_log_iter=position.steps_completed - 1,
               profiler=profiler, profile_dir=profile_dir,
               run_report=RunReport(session.run_dir, session.manifest.class_names, session.manifest.category_ids,
                                    session.rank, log))


def _train_epoch(run: Run, epoch: int, start_step: int) -> None:
    """Epoch ``epoch`` from step ``start_step``: its steps, then the end-of-epoch work once its last step ran."""
    dataset = _epoch_dataset(run.session, epoch, start_step)
    epoch_started = time.perf_counter()
    done, epoch_steps_run = _run_steps(run, dataset, epoch, start_step)
    memory.note(f"epoch {epoch} steps")
    if done is not None and done.epoch_end:
        _end_epoch(run, done, time.perf_counter() - epoch_started, epoch_steps_run)
        if run.status == "finished":
            run.status = _stop_status(run, done)
    bad_rows = len(getattr(dataset, "bad_rows", []))
    if bad_rows:
        logger.warning("epoch %d: %d bad rows were skipped", epoch, bad_rows)


def _run_steps(run: Run, dataset, epoch: int, start_step: int) -> tuple[StepDone | None, int]:
    """The epoch's steps until its last one (whose checkpoint is the epoch end's) or a stop; returns the
    last step and how many steps ran."""
    batches = dataset.create_tuple_iterator(num_epochs=1, output_numpy=True)
    done, steps_run = None, 0
    try:
        for step_in_epoch in itertools.count(start_step):
            waited_from = time.perf_counter()
            columns = next(batches, None)
            if columns is None:
                break
            done = _run_step(run, epoch, step_in_epoch, columns, waited_from)
            if run.steps_run == 1:
                memory.note("first step run")
            steps_run += 1
            if done.epoch_end:
                break
            if done.interval_due:
                _save_checkpoint(run, done)
            if done.stopping:
                _save_last(run, done)
            run.status = _stop_status(run, done)
            if run.status != "finished":
                break
    finally:
        # the epoch's pipeline (threads, prefetched batches) goes before validation and the next epoch's
        # pipeline start, not when a garbage collection finds it
        batches.stop()
    return done, steps_run


def _run_step(run: Run, epoch: int, step_in_epoch: int, columns, waited_from: float) -> StepDone:
    """One compiled step on ``columns``: divergence check, position, interval meter and log line."""
    session, args = run.session, run.session.args
    step_from = time.perf_counter()
    iteration = run.position.steps_completed
    if run.batch_hook is not None:
        columns = run.batch_hook(iteration, list(columns))
    inputs = [ms.Tensor(column) for column in step_inputs(columns)]
    index = min(iteration, run.total_steps - 1)
    lr_value = session.lr[index]
    schedule_inputs = ([ms.Tensor(lr_value)] if session.yolov5_schedule is None
                       else yolov5_step.schedule_inputs(session.yolov5_schedule, index))
    no_stop, stop = run.stop_flags
    step_args = (*inputs, *schedule_inputs, stop if run.signals.received else no_stop)
    if run.steps_run == 0:   # compiling apart from running, so that what compiling freed is returned first
        memory.note("first batch read (the input pipeline running)")
        session.parts.train_step.compile(*step_args)
        memory.note("train step compiled (not run yet)")
        memory.return_freed_memory()
        memory.note("memory freed by compiling returned")
    outputs = session.parts.train_step(*step_args)
    parts, finite, scale, votes = (o.asnumpy() for o in outputs)
    step_done = time.perf_counter()
    run.run_report.after_step(iteration, columns)
    run.steps_run += 1
    if run.first_step_done_at is None:
        run.first_step_done_at = time.perf_counter()
    _check_update(run, parts, bool(finite), scale, epoch, iteration)
    run.last_parts = parts
    run.meter.update(parts, step_from - waited_from, step_done - step_from)
    next_epoch, next_step = position_after(epoch, step_in_epoch, session.steps_per_epoch)
    position = run.position
    epoch_losses = (np.add(position.epoch_loss_sums, parts[1:4]), position.epoch_loss_steps + 1)
    run.position = position.after_step(next_epoch, next_step, iteration + 1, parts[1:4])
    _log_step(run, epoch, iteration, lr_value)
    return StepDone(
        epoch, step_in_epoch, iteration, lr_value, epoch_losses, epoch_end=next_epoch != epoch,
        interval_due=args.ckpt_interval is not None and (iteration + 1) % args.ckpt_interval == 0,
        # one process stops as soon as it sees the signal; ranks stop on the all-reduced votes
        stopping=float(votes) > 0 or (session.group_size == 1 and run.signals.received is not None))


def _check_update(run: Run, parts, finite: bool, scale, epoch: int, iteration: int) -> None:
    """TrainingDiverged on a non-finite loss (or gradient, with a static loss scale); a skipped update of
    the dynamic loss scale is only logged."""
    if finite:
        return
    args = run.session.args
    finite_loss = bool(np.isfinite(parts).all())
    if not finite_loss or args.loss_scale_type == "static":
        if run.profiler is not None:
            run.profiler.stop()
        raise TrainingDiverged(_diverged_message(parts, finite_loss, epoch, iteration, run.session.writer, args))
    logger.warning("epoch[%d], iter[%d]: gradient overflow at loss scale %g, update skipped; "
                   "the dynamic loss scale is now %g", epoch, iteration, float(scale),
                   float(run.session.parts.loss_scale.scale.asnumpy()))


def _log_step(run: Run, epoch: int, iteration: int, lr_value) -> None:
    """The reference's log line every --log_interval steps (rank 0), with the means since the last one."""
    if iteration % run.session.args.log_interval != 0:
        return
    now = time.perf_counter()
    fps = run.global_batch * (iteration - run.last_log_iter) / max(now - run.last_log_time, 1e-9)
    if run.session.rank == 0:
        run.log(log_line(epoch, iteration, run.meter.mean(), fps, lr_value, run.meter.mean_ms()))
    run.meter.reset()
    run.last_log_time, run.last_log_iter = now, iteration


def _check_weights_finite(run: Run, done: StepDone) -> None:
    """Before a save: with a unit loss scale the step checks only the loss, so the weights are checked here."""
    session = run.session
    if not run.checks_gradients and not step_lib.weights_finite(session.parts.network):
        raise TrainingDiverged(_non_finite_weights_message(done.epoch, done.iteration, session.writer))


def _save_checkpoint(run: Run, done: StepDone) -> None:
    """The rotating ``{rank}-{epoch}_{step}.ckpt`` after step ``done``, once the weights are known finite."""
    session = run.session
    _check_weights_finite(run, done)
    saved = session.writer.save(session.parts.train_step, run.position, done.epoch + 1, done.step_in_epoch + 1)
    if saved is not None:
        run.log(f"saved checkpoint {saved}")


def _save_last(run: Run, done: StepDone) -> None:
    """``last.ckpt``: the full training state after step ``done`` (what ``--resume`` continues from)."""
    _check_weights_finite(run, done)
    run.session.writer.save_named(run.session.parts.train_step, run.position, LAST_CHECKPOINT, is_last=True)


def periodic_due(done: StepDone, save_period: int) -> bool:
    """Whether a periodic checkpoint follows step ``done``: --ckpt_interval steps or --save_period epochs."""
    epoch_due = done.epoch_end and save_period > 0 and (done.epoch + 1) % save_period == 0
    return done.interval_due or epoch_due


def _end_epoch(run: Run, done: StepDone, epoch_seconds: float, epoch_steps_run: int) -> None:
    """After an epoch's last step: validation when due, the results row, a periodic checkpoint when asked
    (--ckpt_interval / --save_period), last.ckpt, best.ckpt when the fitness improved (every epoch without
    validation), and --patience (status "stopped_early")."""
    session, epoch_number = run.session, done.epoch + 1
    outcome = _validate(run, epoch_number)
    memory.note(f"epoch {done.epoch} validation")
    memory.return_freed_memory()
    if session.rank == 0:
        record_epoch(session.run_dir, epoch_number, done.epoch_losses, done.lr, epoch_seconds,
                     run.global_batch * epoch_steps_run / max(epoch_seconds, 1e-9), outcome)
    if periodic_due(done, session.args.save_period):
        _save_checkpoint(run, done)
    _save_last(run, done)
    memory.note(f"epoch {done.epoch} checkpoints")
    train_step, writer = session.parts.train_step, session.writer
    if session.validator is None:   # as YOLOv5 without validation: the latest epoch is the best
        writer.save_named(train_step, run.position, BEST_CHECKPOINT)
    if outcome is None:
        return
    if outcome.improved:
        best = writer.save_named(train_step, run.position, BEST_CHECKPOINT)
        if best is not None:
            run.log(f"saved {best} (fitness {outcome.fitness:.4f}, the best so far)")
    patience = session.validator.settings.patience
    if outcome.state.patience_exhausted(patience):
        run.status = "stopped_early"
        run.log(f"stopping early: the fitness has not improved for {outcome.state.evaluations_since_best} "
                f"validations (--patience {patience}); the best, {outcome.state.best_fitness:.4f} at epoch "
                f"{outcome.state.best_epoch}, is in {writer.folder / BEST_CHECKPOINT}")


def _validate(run: Run, epoch_number: int) -> ValidationOutcome | None:
    """Validate the EMA weights if epoch ``epoch_number`` (1-based) ends with a validation; the time it
    takes is kept out of the logged images/s."""
    session = run.session
    if session.validator is None or not session.validator.settings.due(epoch_number, session.args.max_epoch):
        return None
    outcome = session.validator.validate(run.position.validation, epoch_number)
    run.validation_seconds += outcome.seconds
    run.last_log_time += outcome.seconds
    run.position = dataclasses.replace(run.position, validation=outcome.state)
    if session.rank == 0:
        run.log("validation of the EMA weights:\n" + outcome.scores.text)
        run.log(summary_line(outcome, epoch_number, session.args.max_epoch))
    last = (epoch_number >= session.args.max_epoch
            or outcome.state.patience_exhausted(session.validator.settings.patience))
    report_seconds = run.run_report.after_validation(outcome, epoch_number, last=last)
    run.validation_seconds += report_seconds
    run.last_log_time += report_seconds
    return outcome


def _stop_status(run: Run, done: StepDone) -> str:
    """After a step (and its epoch end): "profiled" once --profiler_steps ran, "interrupted" on a stop
    request, else "finished" (go on)."""
    if run.profiler is not None and run.steps_run >= run.session.args.profiler_steps:
        run.profiler.stop()
        run.profiler = None
        run.log(f"MindSpore profile of {run.steps_run} steps written to {run.profile_dir}; stopping as the "
                f"reference does with --need_profiler 1")
        return "profiled"
    if done.stopping:
        return "interrupted"
    return "finished"


def _summary(run: Run) -> TrainSummary:
    session, position = run.session, run.position
    ended = time.perf_counter()
    timed_steps = max(run.steps_run - 1, 0)
    steady = (ended - run.first_step_done_at - run.validation_seconds) if run.first_step_done_at is not None else 0.0
    return TrainSummary(
        status=run.status, steps=run.steps_run, steps_completed=position.steps_completed, epoch=position.epoch,
        step=position.step, seconds=ended - run.started,
        images_per_second=run.global_batch * timed_steps / steady if steady > 0 and timed_steps else 0.0,
        last_loss=float(run.last_parts[0]) if run.last_parts is not None else None,
        last_checkpoint=str(session.writer.last_path) if session.writer.last_path else None,
        signal=run.signals.received, profile_dir=str(run.profile_dir) if run.profile_dir else None,
        validation=position.validation if session.validator is not None else None)


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
            f"{summary.last_checkpoint or 'none'} (it resumes with --resume; {LAST_WEIGHTS} and {BEST_WEIGHTS}, "
            f"written when training ends, are the weights to evaluate and export)"
            + (f"; best fitness {summary.validation.best_fitness:.4f} at epoch {summary.validation.best_epoch} "
               f"({BEST_CHECKPOINT})" if summary.validation is not None and summary.validation.best_epoch > 0 else ""))
