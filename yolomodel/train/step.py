"""The YOLOv5 training step, compiled in graph mode.

One call of ``TrainStep`` does: forward + loss, gradients of the *scaled* loss (static or dynamic loss
scale), the all-reduce mean of the gradients across ranks when distributed, unscaling, a finiteness
check, and only when everything is finite the momentum update (weight decay on conv/linear weights
only) and the EMA update. A non-finite step leaves weights, optimizer state and EMA untouched; with the
dynamic loss scale it lowers the scale (MindSpore's ``DynamicLossScaleUpdateCell``), with the static one
the caller stops the run.

With a static scale of 1 (float32, the default on CPU) there is nothing to unscale and no scaled
gradient can overflow where the loss did not, so the step skips the per-gradient unscale and the
finiteness sweep over every gradient and checks the loss alone; the training loop checks the weights
before it writes a checkpoint instead (``weights_finite``).

The step is split in two cells so that a test can rebuild a distributed step in one process:
``ForwardBackward`` (loss parts and scaled gradients of one micro-batch) and ``ApplyGradients``
(unscale, check, update). ``TrainStep`` chains them with the gradient reducer in between, in one graph.
"""
from __future__ import annotations

import mindspore as ms
from mindspore import Parameter, ParameterTuple, Tensor, nn, ops

LOSS_SCALE_TYPES = ("static", "dynamic")
DYNAMIC_SCALE_FACTOR = 2          # MindSpore DynamicLossScaleManager defaults
DYNAMIC_SCALE_WINDOW = 2000
AMP_LEVELS = ("auto", "O0", "O1", "O2", "O3")
MIXED_PRECISION_LOSS_SCALE = 64.0   # the reference's --loss_scale default, for float16 gradients

_hyper_map = ops.HyperMap()


def decay_parameter_groups(params, weight_decay: float) -> list[dict]:
    """Optimizer groups: weight decay on conv and linear weights (ndim > 1) only, as YOLOv5 does.

    BatchNorm gamma/beta and every bias (1-D) get no weight decay.
    """
    params = list(params)
    decayed = [p for p in params if len(p.shape) > 1]
    plain = [p for p in params if len(p.shape) <= 1]
    groups = []
    if decayed:
        groups.append({"params": decayed, "weight_decay": float(weight_decay)})
    if plain:
        groups.append({"params": plain, "weight_decay": 0.0})
    return groups


def build_optimizer(network: nn.Cell, *, momentum: float, weight_decay: float, nesterov: bool = True):
    """``nn.Momentum`` over the trainable parameters (YOLOv5: SGD with Nesterov momentum).

    The learning rate is a Parameter the step overwrites with the schedule's value for each step, so
    the schedule is indexed by the loop's step counter (exact on resume, and skipped overflow steps do
    not shift it).
    """
    if not 0.0 <= momentum < 1.0:
        raise ValueError(f"momentum must be in [0, 1), got {momentum}")
    if weight_decay < 0:
        raise ValueError(f"weight_decay must not be negative, got {weight_decay}")
    groups = decay_parameter_groups(network.trainable_params(), weight_decay)
    return nn.Momentum(groups, learning_rate=0.0, momentum=float(momentum), use_nesterov=bool(nesterov))


def _scale(factor, tensor):
    return tensor * factor.astype(tensor.dtype)


def _is_finite(tensor):
    return ops.isfinite(tensor).all()


def all_finite(tensors):
    """Scalar bool Tensor: every element of every tensor of the tuple is finite."""
    flags = _hyper_map(_is_finite, tensors)
    return ops.stack(flags).all()


class LossScale(nn.Cell):
    """The loss-scale state: a constant (static, like FixedLossScaleManager) or MindSpore's dynamic one.

    ``scale`` is a Parameter named ``loss_scale`` (saved in checkpoints, so a resumed dynamic run
    continues with the same scale and window counters).
    """

    def __init__(self, loss_scale_type: str = "static", init_scale: float = 64.0,
                 scale_factor: int = DYNAMIC_SCALE_FACTOR, scale_window: int = DYNAMIC_SCALE_WINDOW):
        super().__init__(auto_prefix=False)
        if loss_scale_type not in LOSS_SCALE_TYPES:
            raise ValueError(f"loss_scale_type must be one of {LOSS_SCALE_TYPES}, got {loss_scale_type!r}")
        if not init_scale >= 1.0:
            raise ValueError(f"loss_scale must be at least 1, got {init_scale}")
        self.dynamic = loss_scale_type == "dynamic"
        # a static scale of 1: gradients need no unscaling and overflow no more than the loss does
        self.unit = not self.dynamic and float(init_scale) == 1.0
        self.scale = Parameter(Tensor(float(init_scale), ms.float32), name="loss_scale", requires_grad=False)
        if self.dynamic:
            self.updater = nn.DynamicLossScaleUpdateCell(float(init_scale), scale_factor, scale_window)

    def construct(self, overflow):
        """Adjust the scale after a step (dynamic only); returns ``overflow``."""
        if self.dynamic:
            return self.updater(self.scale, overflow)
        return overflow


class ForwardBackward(nn.Cell):
    """(loss, box, obj, cls) and the gradients of ``loss * scale`` w.r.t. the trainable weights."""

    def __init__(self, network: nn.Cell, loss_fn: nn.Cell, weights):
        """``weights``: the parameters to differentiate, in the optimizer's order (``optimizer.parameters``;
        parameter groups reorder them)."""
        super().__init__(auto_prefix=False)
        self.network = network
        self.loss_fn = loss_fn
        self.weights = ParameterTuple(weights)
        self.grad_fn = ops.value_and_grad(self.scaled_loss, None, self.weights, has_aux=True)

    def scaled_loss(self, scale, images, ti8, tv8, ti16, tv16, ti32, tv32):
        outputs = self.network(images)
        outputs = tuple(out.astype(ms.float32) for out in outputs)  # no-op in fp32; fp16 heads under amp
        loss, box, obj, cls = self.loss_fn(outputs, ti8, tv8, ti16, tv16, ti32, tv32)
        return loss * scale, ops.stack((loss, box, obj, cls))

    def construct(self, scale, images, ti8, tv8, ti16, tv16, ti32, tv32):
        (_, parts), grads = self.grad_fn(scale, images, ti8, tv8, ti16, tv16, ti32, tv32)
        return parts, grads


class ApplyGradients(nn.Cell):
    """Unscale gradients, check them and the loss, then (only if finite) set lr, step and update EMA."""

    def __init__(self, optimizer: nn.Optimizer, loss_scale: LossScale, ema: nn.Cell | None = None):
        super().__init__(auto_prefix=False)
        self.optimizer = optimizer
        self.loss_scale = loss_scale
        self.ema = ema
        self.has_ema = ema is not None
        self.check_gradients = not loss_scale.unit

    def unscaled(self, grads, parts):
        """(``grads`` divided by the loss scale, whether they and the loss ``parts`` are all finite).

        With a unit loss scale the gradients are used as they are and only the loss parts are checked.
        """
        if self.check_gradients:
            inverse = 1.0 / self.loss_scale.scale
            grads = _hyper_map(ops.partial(_scale, inverse), grads)
            finite = ops.logical_and(all_finite(grads), ops.isfinite(parts).all())
        else:
            finite = ops.isfinite(parts).all()
        return grads, finite

    def construct(self, grads, parts, lr):
        """``grads`` of the scaled loss, ``parts`` float32 (4,), ``lr`` float32 scalar -> bool finite."""
        grads, finite = self.unscaled(grads, parts)
        if finite:
            lr = ops.depend(lr, grads)
            ops.assign(self.optimizer.learning_rate, lr)
            finite = ops.depend(finite, self.optimizer(grads))
            if self.has_ema:
                finite = ops.depend(finite, self.ema())
        self.loss_scale(ops.logical_not(finite))
        return finite


class TrainStep(nn.Cell):
    """The whole step in one graph.

    ``(images, ti8, tv8, ti16, tv16, ti32, tv32, lr, stop_vote) -> (parts, finite, loss_scale, stop_votes)``:
    ``parts`` float32 (4,) = loss, box, obj, cls (averaged over ranks when distributed, so every rank
    takes the same decision on a non-finite loss); ``finite`` says whether the update was applied;
    ``loss_scale`` is the scale the step used; ``stop_votes`` is the sum over ranks of ``stop_vote``
    (1.0 where a stop signal arrived), so all ranks stop after the same step.
    """

    def __init__(self, network: nn.Cell, loss_fn: nn.Cell, optimizer: nn.Optimizer, loss_scale: LossScale,
                 ema: nn.Cell | None = None, *, group_size: int = 1):
        super().__init__(auto_prefix=False)
        self.forward_backward = ForwardBackward(network, loss_fn, optimizer.parameters)
        self.apply_gradients = ApplyGradients(optimizer, loss_scale, ema)
        self.network = network
        self.optimizer = optimizer
        self.loss_scale = loss_scale
        self.ema = ema
        self.unit_scale = loss_scale.unit
        self.distributed = int(group_size) > 1
        self.group_size = float(group_size)
        if self.distributed:
            self.grad_reducer = nn.DistributedGradReducer(self.forward_backward.weights, mean=True,
                                                          degree=int(group_size))
            self.all_reduce = ops.AllReduce()

    def reduced_gradients(self, images, ti8, tv8, ti16, tv16, ti32, tv32, stop_vote):
        """(parts, gradients, scale, stop_votes) of one batch, reduced over ranks when distributed: the
        part of the step before the update, shared by every step (``yolov5_step`` adds another update)."""
        if self.unit_scale:
            scale = ops.ones((), ms.float32)  # not the parameter: a resumed checkpoint may hold another value
        else:
            scale = self.loss_scale.scale * 1.0  # a copy: the dynamic update below may change the parameter
        parts, grads = self.forward_backward(scale, images, ti8, tv8, ti16, tv16, ti32, tv32)
        stop_votes = stop_vote
        if self.distributed:
            grads = self.grad_reducer(grads)
            # one all-reduce for the loss parts (mean) and the stop votes (sum): (5,)
            packed = self.all_reduce(ops.concat((parts, stop_vote.reshape((1,)))))
            parts = packed[:4] / self.group_size
            stop_votes = packed[4]
        return parts, grads, scale, stop_votes

    def construct(self, images, ti8, tv8, ti16, tv16, ti32, tv32, lr, stop_vote):
        parts, grads, scale, stop_votes = self.reduced_gradients(images, ti8, tv8, ti16, tv16, ti32, tv32, stop_vote)
        finite = self.apply_gradients(grads, parts, lr)
        return parts, finite, scale, stop_votes


def weights_finite(network: nn.Cell) -> bool:
    """Every float parameter of ``network`` is finite (checked on the host, e.g. before a checkpoint)."""
    import numpy as np

    for param in network.get_parameters():
        values = param.asnumpy()
        if np.issubdtype(values.dtype, np.floating) and not np.isfinite(values).all():
            return False
    return True


def amp_level_for(device_target: str, requested: str = "auto") -> str:
    """Mixed precision only on Ascend: 'auto' -> O2 there, O0 elsewhere; O1-O3 elsewhere are refused."""
    if requested not in AMP_LEVELS:
        raise ValueError(f"amp_level must be one of {AMP_LEVELS}, got {requested!r}")
    if requested == "auto":
        return "O2" if device_target == "Ascend" else "O0"
    if requested != "O0" and device_target != "Ascend":
        raise ValueError(f"amp_level {requested} (mixed precision) is only supported on Ascend here; "
                         f"use --amp_level O0 or auto on {device_target}")
    return requested


def default_loss_scale(amp_level: str, loss_scale_type: str = "static") -> float:
    """The loss scale a run gets when ``--loss_scale`` is not given: what the precision needs.

    float32 (``O0``: CPU and GPU by default, Ascend when asked) has the range that gradients need, so a
    static scale buys nothing: 1, which also lets the step skip unscaling and the gradient finiteness
    sweep. Mixed precision (``O1``-``O3``, Ascend's default ``O2``) computes float16 gradients that
    underflow without a scale: 64, the reference's default; a dynamic scale also starts at 64.
    """
    if amp_level not in AMP_LEVELS or amp_level == "auto":
        raise ValueError(f"amp_level must be resolved to one of {AMP_LEVELS[1:]} first, got {amp_level!r}")
    if loss_scale_type not in LOSS_SCALE_TYPES:
        raise ValueError(f"loss_scale_type must be one of {LOSS_SCALE_TYPES}, got {loss_scale_type!r}")
    return 1.0 if amp_level == "O0" and loss_scale_type == "static" else MIXED_PRECISION_LOSS_SCALE


def apply_mixed_precision(network: nn.Cell, amp_level: str) -> nn.Cell:
    """``ms.amp.auto_mixed_precision`` for O1-O3 (BatchNorm stays float32 in O2); O0 returns the net."""
    if amp_level == "O0":
        return network
    return ms.amp.auto_mixed_precision(network, amp_level)
