"""YOLOv5's per-iteration learning rates, momentum, weight decay and optimizer steps (``--hyp``).

What YOLOv5's train.py computes for a hyp, a total batch size B (all ranks), N batches per epoch and E
epochs, iteration i = epoch * N + step (0-based), as one precomputed table:

* nominal batch 64: ``accumulate = max(round(64 / B), 1)`` batches per optimizer step, and the weight
  decay becomes ``weight_decay * B * accumulate / 64`` (once, for the whole run);
* the one-cycle factor of epoch e: linear ``(1 - e / E) * (1 - lrf) + lrf``, or with ``--cos_lr``
  ``1 + (lrf - 1) * (1 - cos(pi * e / E)) / 2``; after warmup every group's lr is ``lr0 * factor(e)``;
* warmup over ``nw = max(round(warmup_epochs * N), 100)`` iterations, for i <= nw (nw included), by
  linear interpolation in i over [0, nw]: the bias group's lr from ``warmup_bias_lr`` down to
  ``lr0 * factor(e)``, the other groups' from 0 up to it, momentum from ``warmup_momentum`` to
  ``momentum`` (and ``momentum`` from then on), and the accumulation count from 1 to ``64 / B``,
  rounded half to even as numpy rounds;
* an optimizer step at iteration i when ``i - (iteration of the last optimizer step) >= accumulate``
  (the last one starts at -1), with the lr and momentum of iteration i, applied to the gradients summed
  since the previous step. Exact resume: the table depends only on the iteration, so a resumed run
  continues it; the gradients summed so far are part of the checkpoint (``yolov5_step``).

The groups are YOLOv5's, in its order (``GROUPS``): biases (every bias and BatchNorm beta, no decay),
weights (convolution weights, with decay), BatchNorm weights (gamma, no decay).
"""
from __future__ import annotations

import dataclasses
import math

import numpy as np

NOMINAL_BATCH_SIZE = 64
MIN_WARMUP_ITERATIONS = 100
GROUPS = ("bias", "weight", "bn_weight")
BIAS_GROUP, WEIGHT_GROUP = 0, 1


@dataclasses.dataclass(frozen=True)
class Yolov5Schedule:
    """The table of one run: row i is iteration i."""

    lr: np.ndarray                 # float64 (iterations, 3): lr of the GROUPS
    momentum: np.ndarray           # float64 (iterations,)
    optimizer_step: np.ndarray     # bool (iterations,): the optimizer steps after this iteration's gradients
    weight_decay: float            # of the weight group, scaled for the nominal batch
    accumulate: int                # batches per optimizer step after warmup
    nominal_batch_size: int
    warmup_iterations: int

    def describe(self) -> str:
        return (f"YOLOv5 schedule: {self.warmup_iterations} warmup iterations, an optimizer step every "
                f"{self.accumulate} batch(es) after warmup (nominal batch {self.nominal_batch_size}), weight decay "
                f"{self.weight_decay:g}, lr {self.lr[0, WEIGHT_GROUP]:g} at the first iteration, "
                f"{self.lr[-1, WEIGHT_GROUP]:g} at the last")


def one_cycle_factor(epoch: int, epochs: int, lrf: float, cosine: bool) -> float:
    """YOLOv5's LambdaLR factor of ``epoch``: linear or cosine from 1 (epoch 0) towards ``lrf`` (epoch E)."""
    if cosine:
        return 1.0 + (lrf - 1.0) * (1.0 - math.cos(epoch * math.pi / epochs)) / 2.0
    return (1.0 - epoch / epochs) * (1.0 - lrf) + lrf


def _ramp(iteration: int, warmup: int, start: float, end: float) -> float:
    """The straight line from ``start`` at iteration 0 to ``end`` at ``warmup``, in the arithmetic order
    of numpy's interp (slope times offset plus start; exactly ``end`` at the end), so that the rounded
    accumulation count flips at the same iterations as YOLOv5's."""
    if iteration >= warmup:
        return float(end)
    return (end - start) / warmup * iteration + start


def nominal_accumulation(total_batch_size: int, nominal_batch_size: int = NOMINAL_BATCH_SIZE) -> int:
    """Batches per optimizer step after warmup: max(round(64 / B), 1)."""
    return max(round(nominal_batch_size / int(total_batch_size)), 1)


def build_yolov5_schedule(hyp: dict, *, total_batch_size: int, batches_per_epoch: int, epochs: int,
                          cos_lr: bool = False, nominal_batch_size: int = NOMINAL_BATCH_SIZE) -> Yolov5Schedule:
    """The per-iteration table for ``epochs * batches_per_epoch`` iterations (see the module docstring).

    ``nominal_batch_size``: YOLOv5's fixed 64 by default; 0 means the total batch itself (one optimizer
    step per batch and the weight decay as given: ``--nominal_batch_size 0``).
    """
    if int(total_batch_size) < 1 or int(batches_per_epoch) < 1 or int(epochs) < 1:
        raise ValueError(f"total_batch_size, batches_per_epoch and epochs must be at least 1, got "
                         f"{total_batch_size}, {batches_per_epoch}, {epochs}")
    batch, per_epoch, epochs = int(total_batch_size), int(batches_per_epoch), int(epochs)
    nominal = int(nominal_batch_size) or batch
    accumulate = nominal_accumulation(batch, nominal)
    warmup = max(round(hyp["warmup_epochs"] * per_epoch), MIN_WARMUP_ITERATIONS)
    num_iterations = epochs * per_epoch
    lr = np.empty((num_iterations, len(GROUPS)), np.float64)
    momentum = np.empty(num_iterations, np.float64)
    optimizer_step = np.zeros(num_iterations, bool)
    last_step, current_accumulate = -1, accumulate
    for iteration in range(num_iterations):
        peak = hyp["lr0"] * one_cycle_factor(iteration // per_epoch, epochs, hyp["lrf"], cos_lr)
        if iteration <= warmup:
            current_accumulate = max(1.0, float(np.round(_ramp(iteration, warmup, 1.0, nominal / batch))))
            lr[iteration] = _ramp(iteration, warmup, 0.0, peak)
            lr[iteration, BIAS_GROUP] = _ramp(iteration, warmup, hyp["warmup_bias_lr"], peak)
            momentum[iteration] = _ramp(iteration, warmup, hyp["warmup_momentum"], hyp["momentum"])
        else:
            lr[iteration] = peak
            momentum[iteration] = hyp["momentum"]
        if iteration - last_step >= current_accumulate:
            optimizer_step[iteration] = True
            last_step = iteration
    return Yolov5Schedule(lr=lr, momentum=momentum, optimizer_step=optimizer_step,
                          weight_decay=hyp["weight_decay"] * batch * accumulate / nominal,
                          accumulate=accumulate, nominal_batch_size=nominal, warmup_iterations=warmup)
