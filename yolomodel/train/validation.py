"""Validation during training: the EMA weights evaluated on the val shards at epoch ends.

The evaluation is ``yolomodel.evaluation.evaluate``, the same code ``yolo-eval`` runs, on a network
built once per run (float32, the training network's size and classes) into which the EMA weights are
copied before each evaluation: the numbers equal those ``yolo-eval`` gives for the checkpoint written
at that epoch with the same settings. Every rank evaluates its share of the val images and every rank
scores the gathered detections, so all ranks take the same best-checkpoint and patience decisions
without another collective.
"""
from __future__ import annotations

import dataclasses
import time

import mindspore as ms
import numpy as np

from yolodata.manifest import load_manifest
from yolomodel import evaluation
from yolomodel.coco_eval import load_ground_truth
from yolomodel.network import InferenceNet

from .results import ValidationState, fitness

LAST_CHECKPOINT = "last.ckpt"      # in ckpt_<rank>/ beside the periodic ones: the latest epoch end (or stop)
BEST_CHECKPOINT = "best.ckpt"      # the epoch end with the best fitness so far (the latest without validation)
LAST_WEIGHTS = "last_weights.ckpt"   # when training ends: last.ckpt's EMA weights, half precision, no optimizer
BEST_WEIGHTS = "best_weights.ckpt"   # when training ends: best.ckpt's EMA weights, likewise


@dataclasses.dataclass(frozen=True)
class ValidationSettings:
    """When and how to validate (``config.validation_settings`` makes it from the flags)."""

    mindrecord: str                 # the val shard folder
    testing_shape: int
    per_batch_size: int
    geometry: object                # yolodata.pipeline.eval_batches.EvalGeometry
    nms: object                     # yolomodel.nms.NmsOptions
    eval_interval: int = 1          # every this many epochs, and always after the last one
    patience: int = 0               # stop after this many evaluations without a better fitness (0: never)
    compiled: bool = False          # validation's network compiled (faster, a second resident graph) or op by op

    def due(self, epoch_number: int, max_epoch: int) -> bool:
        """Whether the epoch ``epoch_number`` (1-based) ends with a validation."""
        return epoch_number % self.eval_interval == 0 or epoch_number >= max_epoch


@dataclasses.dataclass(frozen=True)
class ValidationOutcome:
    """One validation: the scores, the fitness, whether it is the best so far, and the time it took."""

    scores: object                  # yolomodel.coco_eval.CocoScores
    fitness: float
    improved: bool
    state: ValidationState          # after this validation
    seconds: float
    images_evaluated: int           # distinct val images the ranks ran the network on
    evaluator: object = None        # rank 0: the COCOeval of ``scores`` (per-class numbers are read from it)
    first_batch: object = None      # rank 0: yolomodel.evaluation.FirstBatch (the val batch pictures)

    @property
    def stats(self) -> list[float]:
        return [float(v) for v in self.scores.stats]


class Validator:
    """Evaluates the EMA weights of a training run (``validate``); builds its network on first use."""

    def __init__(self, settings: ValidationSettings, *, ema, build_network, rank: int, group_size: int,
                 num_parallel_workers: int | None = None):
        """``ema``: the run's ``ModelEMA``; ``build_network()``: a new float32 network of the run's size
        and classes (its weights are replaced by the EMA ones before each evaluation)."""
        self.settings = settings
        self.ema = ema
        self.build_network = build_network
        self.rank = int(rank)
        self.group_size = int(group_size)
        self.num_parallel_workers = num_parallel_workers
        self._inference_net = None
        self._ground_truth = None

    def _network_with_ema_weights(self):
        if self._inference_net is None:
            self._inference_net = InferenceNet(self.build_network())
        prefix = self.ema.ema_params[0].name.split(".", 1)[0] + "."
        averages = {param.name[len(prefix):]: param for param in self.ema.ema_params}
        for param in self._inference_net.net.get_parameters():
            param.set_data(ms.Tensor(averages[param.name].asnumpy()))
        return self._inference_net

    def validate(self, state: ValidationState, epoch_number: int) -> ValidationOutcome:
        """Evaluate the EMA weights now, as epoch ``epoch_number`` (1-based) ends."""
        started = time.perf_counter()
        if self._ground_truth is None:
            self._ground_truth = load_ground_truth(load_manifest(self.settings.mindrecord).annotations_path)
        run_mode = _as_is if self.settings.compiled else _op_by_op
        report = run_mode(lambda: evaluation.evaluate(
                          self._network_with_ema_weights(), self.settings.mindrecord,
                          testing_shape=self.settings.testing_shape, per_batch_size=self.settings.per_batch_size,
                          nms=self.settings.nms, geometry=self.settings.geometry, rank=self.rank,
                          group_size=self.group_size, ground_truth=self._ground_truth,
                          num_parallel_workers=self.num_parallel_workers, show_progress=False,
                          score_on_every_rank=True, keep_evaluator=self.rank == 0,
                          keep_first_batch=self.rank == 0))
        stats = np.asarray(report.scores.stats, np.float64)
        value = fitness(stats[1], stats[0])
        new_state, improved = state.update(value, epoch_number)
        return ValidationOutcome(report.scores, value, improved, new_state, time.perf_counter() - started,
                                 report.images_evaluated, getattr(report.scores, "evaluator", None),
                                 report.first_batch)


def _as_is(run):
    """``run()`` in the current mode (``--val_compiled 1``: graph mode compiles validation's network)."""
    return run()


def _op_by_op(run):
    """``run()`` in MindSpore's PyNative mode (kernel by kernel, nothing compiled), then the mode as it was.

    Validation's network then costs no second compiled graph: in graph mode that graph stays resident
    beside the train step's for the whole run (for yolov5n at 320 px, batch 16, about 170 MB kept
    after compiling plus about 85 MB for running it; ``benchmarks/train_memory.py``), while kernel by
    kernel it allocates only its tensors, from the memory pool the step already holds. The detections
    are the same bits (the same CPU kernels on the same inputs; tested against ``yolo-eval``); the forward
    pass takes about twice as long per batch, with no compile wait before the first validation. The
    compiled train step is kept across the switch and is not compiled again.
    """
    mode = ms.get_context("mode")
    ms.set_context(mode=ms.PYNATIVE_MODE)
    try:
        return run()
    finally:
        ms.set_context(mode=mode)


def summary_line(outcome: ValidationOutcome, epoch_number: int, max_epoch: int) -> str:
    """``epoch 3/20: mAP@0.5 0.512, mAP@0.5:0.95 0.301, fitness 0.322 (best), validation 12.3 s``."""
    stats = outcome.stats
    best = "best so far" if outcome.improved else (f"best {outcome.state.best_fitness:.4f} at epoch "
                                                   f"{outcome.state.best_epoch}")
    return (f"validation epoch {epoch_number}/{max_epoch}: mAP@0.5 {stats[1]:.4f}, mAP@0.5:0.95 {stats[0]:.4f}, "
            f"fitness {outcome.fitness:.4f} ({best}); {outcome.images_evaluated} images in {outcome.seconds:.1f} s")


