"""Per-step learning-rate arrays as the reference train.py builds them.

The reference (ModelZoo YOLOv5, ``src/lr_scheduler.py``) precomputes one learning rate per training
step for ``max_epoch * steps_per_epoch`` steps: a linear warmup from 0 to ``lr`` over the first
``warmup_epochs`` epochs (step i of the warmup gets ``lr * (i + 1) / warmup_steps``), then either

* ``exponential``: the step schedule, multiplying by ``lr_gamma`` at each epoch listed in ``lr_epochs``
  (a milestone that falls inside the warmup is not applied, as in the reference), or
* ``cosine_annealing``: ``eta_min + (lr - eta_min) * (1 + cos(pi * epoch / t_max)) / 2``, constant
  within an epoch (the reference anneals per epoch, not per step).

Pure functions: they return new float32 arrays and take plain numbers.
"""
from __future__ import annotations

import math
from typing import Sequence

import numpy as np

SCHEDULERS = ("exponential", "cosine_annealing")


def _check_common(lr: float, steps_per_epoch: int, warmup_epochs: float, max_epoch: int) -> None:
    if not lr > 0:
        raise ValueError(f"lr must be positive, got {lr}")
    if int(steps_per_epoch) < 1:
        raise ValueError(f"steps_per_epoch must be at least 1, got {steps_per_epoch}")
    if int(max_epoch) < 1:
        raise ValueError(f"max_epoch must be at least 1, got {max_epoch}")
    if warmup_epochs < 0:
        raise ValueError(f"warmup_epochs must not be negative, got {warmup_epochs}")


def linear_warmup(step: int, warmup_steps: int, base_lr: float, init_lr: float = 0.0) -> float:
    """Learning rate of warmup step ``step`` (1-based: the reference passes i + 1)."""
    increment = (float(base_lr) - float(init_lr)) / float(warmup_steps)
    return float(init_lr) + increment * step


def parse_lr_epochs(lr_epochs) -> list[int]:
    """'220,250' or [220, 250] -> [220, 250] (the reference's comma-separated milestone epochs)."""
    if isinstance(lr_epochs, str):
        parts = [part.strip() for part in lr_epochs.split(",") if part.strip()]
    elif isinstance(lr_epochs, (int, np.integer)):
        parts = [lr_epochs]
    else:
        parts = list(lr_epochs)
    try:
        epochs = [int(part) for part in parts]
    except (TypeError, ValueError):
        raise ValueError(f"lr_epochs must be comma-separated whole epochs like '220,250', got {lr_epochs!r}") from None
    if any(e < 0 for e in epochs):
        raise ValueError(f"lr_epochs must not be negative, got {lr_epochs!r}")
    return epochs


def warmup_step_lr(lr: float, lr_epochs: Sequence[int], steps_per_epoch: int, warmup_epochs: float,
                   max_epoch: int, gamma: float = 0.1) -> np.ndarray:
    """float32 (max_epoch * steps_per_epoch,): warmup, then lr * gamma**(milestones passed)."""
    _check_common(lr, steps_per_epoch, warmup_epochs, max_epoch)
    total_steps = int(max_epoch) * int(steps_per_epoch)
    warmup_steps = int(warmup_epochs * steps_per_epoch)
    milestone_steps = [int(e) * int(steps_per_epoch) for e in lr_epochs]
    rates = np.empty(total_steps, np.float64)
    current = float(lr)
    for i in range(total_steps):
        if i < warmup_steps:
            current = linear_warmup(i + 1, warmup_steps, lr)
        else:
            current = current * gamma ** milestone_steps.count(i)
        rates[i] = current
    return rates.astype(np.float32)


def warmup_cosine_annealing_lr(lr: float, steps_per_epoch: int, warmup_epochs: float, max_epoch: int,
                               t_max: float, eta_min: float = 0.0) -> np.ndarray:
    """float32 (max_epoch * steps_per_epoch,): warmup, then per-epoch cosine annealing over t_max epochs."""
    _check_common(lr, steps_per_epoch, warmup_epochs, max_epoch)
    if not t_max > 0:
        raise ValueError(f"t_max must be a positive number of epochs, got {t_max}")
    total_steps = int(max_epoch) * int(steps_per_epoch)
    warmup_steps = int(warmup_epochs * steps_per_epoch)
    steps = np.arange(total_steps)
    epochs = steps // int(steps_per_epoch)
    cosine = eta_min + (lr - eta_min) * (1.0 + np.cos(math.pi * epochs / t_max)) / 2.0
    # the reference's arithmetic order: (lr / warmup_steps) * (i + 1)
    warmup = (float(lr) / max(warmup_steps, 1)) * (steps + 1)
    return np.where(steps < warmup_steps, warmup, cosine).astype(np.float32)


def build_lr_schedule(*, lr_scheduler: str, lr: float, steps_per_epoch: int, warmup_epochs: float,
                      max_epoch: int, lr_epochs="220,250", lr_gamma: float = 0.1, t_max: float = 320,
                      eta_min: float = 0.0) -> np.ndarray:
    """The reference's get_lr(): the per-step array for ``lr_scheduler``."""
    if lr_scheduler == "exponential":
        return warmup_step_lr(lr, parse_lr_epochs(lr_epochs), steps_per_epoch, warmup_epochs, max_epoch,
                              gamma=lr_gamma)
    if lr_scheduler == "cosine_annealing":
        return warmup_cosine_annealing_lr(lr, steps_per_epoch, warmup_epochs, max_epoch, t_max, eta_min)
    raise ValueError(f"lr_scheduler must be one of {SCHEDULERS}, got {lr_scheduler!r}")
