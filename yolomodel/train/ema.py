"""Exponential moving average of the weights (YOLOv5's ModelEMA), kept as Parameters.

After every applied optimizer step: ``updates += 1``, ``d = decay * (1 - exp(-updates / tau))`` and
``ema = d * ema + (1 - d) * weight`` for every floating-point parameter of the network, BatchNorm's
moving mean and variance included (YOLOv5 averages the whole state dict). The ramp makes early EMA
weights follow the model closely.

The averages are Parameters named ``ema.<parameter name>`` and the counter ``ema_updates``, so they
land in the checkpoint beside the weights; eval and export load ``ema.*`` (``yolomodel.checkpoint.format``).
"""
from __future__ import annotations

import math

import mindspore as ms
from mindspore import Parameter, ParameterTuple, Tensor, nn, ops

from yolomodel.checkpoint.format import EMA_PREFIX

EMA_UPDATES_NAME = "ema_updates"
DEFAULT_DECAY = 0.9999
DEFAULT_TAU = 2000.0

_hyper_map = ops.HyperMap()


def ema_decay(updates: int, decay: float = DEFAULT_DECAY, tau: float = DEFAULT_TAU) -> float:
    """YOLOv5's decay after ``updates`` updates (the number including the current one)."""
    return decay * (1.0 - math.exp(-updates / tau))


def _ema_update(d, average, value):
    return ops.assign(average, average * d + value * (1.0 - d))


class ModelEMA(nn.Cell):
    """Holds ``ema.*`` copies of the network's float parameters; ``construct()`` does one update."""

    def __init__(self, network: nn.Cell, decay: float = DEFAULT_DECAY, tau: float = DEFAULT_TAU):
        super().__init__(auto_prefix=False)
        if not 0.0 < decay < 1.0:
            raise ValueError(f"EMA decay must be in (0, 1), got {decay}")
        if not tau > 0:
            raise ValueError(f"EMA tau must be positive, got {tau}")
        params = [p for p in network.get_parameters() if p.dtype in (ms.float32, ms.float16)]
        self.model_params = ParameterTuple(params)
        self.ema_params = self.model_params.clone(prefix=EMA_PREFIX, init="same")
        for p in self.ema_params:
            p.requires_grad = False
        self.updates = Parameter(Tensor(0, ms.int32), name=EMA_UPDATES_NAME, requires_grad=False)
        self.decay = float(decay)
        self.tau = float(tau)

    def construct(self):
        updates = self.updates + 1
        ops.assign(self.updates, updates)
        d = self.decay * (1.0 - ops.exp(-updates.astype(ms.float32) / self.tau))
        return _hyper_map(ops.partial(_ema_update, d), self.ema_params, self.model_params)

    def copy_from_model(self) -> None:
        """Reset the averages to the current weights and the counter to 0 (after loading weights)."""
        for average, value in zip(self.ema_params, self.model_params):
            average.set_data(value.data.copy())
        self.updates.set_data(Tensor(0, ms.int32))
