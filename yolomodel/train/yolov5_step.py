"""The training step with YOLOv5's optimizer (``--hyp``): three parameter groups, per-iteration lr and
momentum, gradient accumulation to the nominal batch, gradient clipping, and YOLOv5's DDP loss scaling.

* Groups (``yolov5_parameter_groups``), in YOLOv5's order: biases (every ``bias`` and BatchNorm
  ``beta``: PyTorch calls both "bias"), weights with the (nominal-batch scaled) decay, BatchNorm weights
  (``gamma``). The step's ``lr`` input (3,) gives each group's learning rate and its ``momentum`` input the
  momentum of that iteration (``yolov5_schedule`` gives both); the update is PyTorch's SGD with Nesterov
  momentum, written out (``_nesterov_update``): MindSpore 2.8.0's ApplyMomentum on CPU ignores
  ``use_nesterov`` (measured: two steps of lr 0.1, momentum 0.8, gradient 1 move a weight by 0.1 and
  0.18 with and without it, where Nesterov gives 0.18 and 0.244).
* Accumulation: gradients of each batch are added to ``accumulated_grad.<name>`` Parameters; when the
  ``optimizer_step`` input is true, the sum (this batch's included) is clipped to a global norm of 10
  (YOLOv5's ``clip_grad_norm_(max_norm=10)``: scaled by 10 / (norm + 1e-6) when that is below 1), the
  momentum SGD step and the EMA update run, and the sums go back to zero. The sums are Parameters of the
  step, so every checkpoint holds them and ``--resume`` continues mid-accumulation exactly. With a
  nominal accumulation of 1 (a global batch of 43 or more, or ``--nominal_batch_size 0``) there are no sums.
* Distributed: YOLOv5 multiplies each rank's loss by the world size before DDP averages the gradients,
  i.e. the gradients are summed over ranks; the reducer here sums (``mean=False``) for the same update.
  The loss parts reported stay the mean over ranks.

A non-finite batch (dynamic loss scale) adds nothing to the sums; on an optimizer-step batch the sums
are then dropped, as PyTorch's GradScaler skips that step and YOLOv5 zeroes the gradients.
"""
from __future__ import annotations

import mindspore as ms
from mindspore import Tensor, nn, ops

from . import step as step_lib

ACCUMULATED_PREFIX = "accumulated_grad"
MAX_GRADIENT_NORM = 10.0
CLIP_EPS = 1e-6

_hyper_map = ops.HyperMap()


def yolov5_parameter_groups(params, weight_decay: float) -> list[list]:
    """[biases, weights, BatchNorm weights] as YOLOv5's smart_optimizer splits them (see the module doc)."""
    biases, weights, bn_weights = [], [], []
    for param in params:
        leaf = param.name.rsplit(".", 1)[-1]
        if leaf in ("bias", "beta"):
            biases.append(param)
        elif leaf == "gamma":
            bn_weights.append(param)
        else:
            weights.append(param)
    return [biases, weights, bn_weights]


def build_yolov5_optimizer(network: nn.Cell, *, momentum: float, weight_decay: float):
    """``nn.Momentum`` over YOLOv5's groups (it holds the ``moments.*`` and the parameter order; the update
    itself is ``nesterov_update``) and the YOLOv5 group index (0 biases, 1 weights, 2 BatchNorm weights)
    of each of its parameters, in its order."""
    groups = yolov5_parameter_groups(network.trainable_params(), weight_decay)
    decays = (0.0, float(weight_decay), 0.0)
    present = [{"params": params, "weight_decay": decays[i]} for i, params in enumerate(groups) if params]
    optimizer = nn.Momentum(present, learning_rate=0.0, momentum=float(momentum), use_nesterov=True)
    group_of = {id(param): index for index, params in enumerate(groups) for param in params}
    return optimizer, tuple(group_of[id(param)] for param in optimizer.parameters)


def _nesterov_update(momentum, lr, decay, grad, param, moment):
    """PyTorch's SGD(nesterov=True) on one parameter: d = grad + decay * param; buf = momentum * buf + d;
    param -= lr * (d + momentum * buf). (MindSpore 2.8.0's ApplyMomentum on CPU ignores use_nesterov:
    measured, it applies lr * buf, plain momentum.)"""
    step = grad + decay * param
    new_moment = moment * momentum + step
    updated = ops.assign(moment, new_moment)
    return ops.depend(ops.assign(param, param - lr * (step + momentum * new_moment)), updated)


def _add_finite(finite, total, grad):
    return total + ops.select(finite, grad, ops.zeros_like(grad))


def _square_sum(grad):
    return (grad * grad).sum()


def _assign_zero_unless(keep_going, target, value):
    return ops.assign(target, ops.select(keep_going, value, ops.zeros_like(value)))


def _clip_factor(grads):
    """min(1, 10 / (global norm + 1e-6)), PyTorch's clip_grad_norm_ factor."""
    norm = ops.sqrt(ops.stack(_hyper_map(_square_sum, grads)).sum())
    return ops.minimum(MAX_GRADIENT_NORM / (norm + CLIP_EPS), 1.0)


class Yolov5ApplyGradients(step_lib.ApplyGradients):
    """Unscale and check, accumulate, and on optimizer-step batches clip, set lr/momentum, step and EMA."""

    def __init__(self, optimizer: nn.Optimizer, param_groups, loss_scale: step_lib.LossScale, ema: nn.Cell | None,
                 accumulating: bool, weight_decay: float):
        super().__init__(optimizer, loss_scale, ema)
        self.param_groups = tuple(int(group) for group in param_groups)     # YOLOv5 group of each parameter
        self.decays = tuple(float(weight_decay) if group == 1 else 0.0 for group in self.param_groups)
        self.params = optimizer.parameters
        self.moments = optimizer.moments
        self.accumulating = bool(accumulating)
        if self.accumulating:
            self.accumulated = optimizer.parameters.clone(prefix=ACCUMULATED_PREFIX, init="zeros")
            for param in self.accumulated:
                param.requires_grad = False

    def construct(self, grads, parts, lr, momentum, optimizer_step):
        """``lr`` float32 (3,) of YOLOv5's groups, ``momentum`` float32, ``optimizer_step`` bool -> finite."""
        grads, finite = self.unscaled(grads, parts)
        if self.accumulating:
            total = _hyper_map(ops.partial(_add_finite, finite), self.accumulated, grads)
        else:
            total = grads
        if ops.logical_and(optimizer_step, finite):
            clipped = _hyper_map(ops.partial(step_lib._scale, _clip_factor(total)), total)  # noqa: SLF001
            lrs = tuple(lr[group] for group in self.param_groups)
            stepped = _hyper_map(ops.partial(_nesterov_update, momentum), lrs, self.decays, clipped, self.params,
                                 self.moments)
            if self.has_ema:
                stepped = ops.depend(stepped, self.ema())
            finite = ops.depend(finite, stepped)
        if self.accumulating:
            keep_going = ops.logical_not(optimizer_step)
            finite = ops.depend(finite, _hyper_map(ops.partial(_assign_zero_unless, keep_going), self.accumulated,
                                                   total))
        self.loss_scale(ops.logical_not(finite))
        return finite


class Yolov5TrainStep(step_lib.TrainStep):
    """``TrainStep`` with YOLOv5's optimizer step: inputs ``(images, ti8, tv8, ti16, tv16, ti32, tv32, lr (3,),
    momentum, optimizer_step, stop_vote)``, outputs as ``TrainStep``'s."""

    def __init__(self, network: nn.Cell, loss_fn: nn.Cell, optimizer: nn.Optimizer, param_groups,
                 loss_scale: step_lib.LossScale, ema: nn.Cell | None = None, *, group_size: int = 1,
                 accumulating: bool = True, weight_decay: float = 0.0):
        super().__init__(network, loss_fn, optimizer, loss_scale, ema, group_size=group_size)
        self.apply_gradients = Yolov5ApplyGradients(optimizer, param_groups, loss_scale, ema, accumulating,
                                                    weight_decay)
        if self.distributed:   # YOLOv5: loss *= WORLD_SIZE, then DDP's mean = the sum over ranks
            self.grad_reducer = nn.DistributedGradReducer(self.forward_backward.weights, mean=False,
                                                          degree=int(group_size))

    def construct(self, images, ti8, tv8, ti16, tv16, ti32, tv32, lr, momentum, optimizer_step, stop_vote):
        parts, grads, scale, stop_votes = self.reduced_gradients(images, ti8, tv8, ti16, tv16, ti32, tv32, stop_vote)
        finite = self.apply_gradients(grads, parts, lr, momentum, optimizer_step)
        return parts, finite, scale, stop_votes


def schedule_inputs(schedule, iteration: int) -> list[Tensor]:
    """The step's (lr (3,), momentum, optimizer_step) inputs of ``iteration`` from a ``Yolov5Schedule``."""
    return [Tensor(schedule.lr[iteration], ms.float32), Tensor(float(schedule.momentum[iteration]), ms.float32),
            Tensor(bool(schedule.optimizer_step[iteration]), ms.bool_)]
