"""Assembles network, loss, optimizer, loss scale, EMA and the compiled step from plain settings."""
from __future__ import annotations

import dataclasses

from mindspore import nn

from yolomodel.loss import YoloLoss
from yolomodel.network import create_yolov5, layer_parameter_prefixes

from . import step as step_lib
from . import yolov5_step
from .ema import ModelEMA


@dataclasses.dataclass
class TrainParts:
    network: nn.Cell
    loss_fn: nn.Cell
    optimizer: nn.Optimizer
    loss_scale: step_lib.LossScale
    ema: ModelEMA
    train_step: step_lib.TrainStep


def build_network(yolov5_version: str, num_classes: int, *, seed: int = 0, amp_level: str = "O0",
                  layout: str = "v5.0", anchors=None) -> nn.Cell:
    """The YOLOv5 network (initial weights fixed by ``seed``), with mixed precision if asked."""
    network = create_yolov5(yolov5_version, num_classes, seed=seed, layout=layout, anchors=anchors)
    return step_lib.apply_mixed_precision(network, amp_level)


def freeze_layers(network: nn.Cell, layout: str, layers) -> list[str]:
    """YOLOv5's ``--freeze``: stop training the parameters of its layers ``layers`` (indices 0-24).

    As in YOLOv5 only the gradients stop: BatchNorm statistics of frozen layers still follow the data
    in training mode. Call before ``assemble`` (the optimizer takes the trainable parameters). Returns
    the frozen parameter names.
    """
    prefixes = layer_parameter_prefixes(layout, layers)
    frozen = []
    for param in network.trainable_params():
        if prefixes and param.name.startswith(prefixes):
            param.requires_grad = False
            frozen.append(param.name)
    return frozen


def assemble(network: nn.Cell, *, num_classes: int, training_shape: int, momentum: float, weight_decay: float,
             loss_scale: float, loss_scale_type: str, label_smooth_factor: float, iou_type: str,
             group_size: int = 1, anchors=None, loss_options: dict | None = None,
             yolov5_schedule=None) -> TrainParts:
    """Loss, optimizer, loss scale, EMA (a copy of the network's current weights) and the step.

    Load pretrained weights into ``network`` (and freeze layers) before calling this, so the EMA starts
    from them. ``anchors`` (pixels) default to YOLOv5's; pass the network's. ``loss_options``: more
    ``YoloLoss`` keywords (a hyp file's gains and criteria). ``yolov5_schedule`` (a
    ``yolov5_schedule.Yolov5Schedule``, with --hyp): YOLOv5's optimizer and step (``yolov5_step``) with
    its scaled weight decay instead of ``weight_decay``.
    """
    extra = {} if anchors is None else {"anchors": anchors}
    loss_fn = YoloLoss(num_classes, label_smooth_factor=label_smooth_factor, iou_type=iou_type,
                       training_shape=training_shape, **extra, **(loss_options or {}))
    scale = step_lib.LossScale(loss_scale_type, loss_scale)
    ema = ModelEMA(network)
    if yolov5_schedule is None:
        optimizer = step_lib.build_optimizer(network, momentum=momentum, weight_decay=weight_decay)
        train_step = step_lib.TrainStep(network, loss_fn, optimizer, scale, ema, group_size=group_size)
    else:
        optimizer, param_groups = yolov5_step.build_yolov5_optimizer(network, momentum=momentum,
                                                                     weight_decay=yolov5_schedule.weight_decay)
        train_step = yolov5_step.Yolov5TrainStep(
            network, loss_fn, optimizer, param_groups, scale, ema, group_size=group_size,
            accumulating=not bool(yolov5_schedule.optimizer_step.all()), weight_decay=yolov5_schedule.weight_decay)
    train_step.set_train(True)
    return TrainParts(network, loss_fn, optimizer, scale, ema, train_step)


def build_train_step(*, yolov5_version: str, num_classes: int, training_shape: int, momentum: float,
                     weight_decay: float, loss_scale: float, loss_scale_type: str, label_smooth_factor: float,
                     iou_type: str, amp_level: str = "O0", seed: int = 0, group_size: int = 1,
                     layout: str = "v5.0") -> TrainParts:
    """``build_network`` + ``assemble`` for callers that load no weights (benchmarks, tests)."""
    network = build_network(yolov5_version, num_classes, seed=seed, amp_level=amp_level, layout=layout)
    return assemble(network, num_classes=num_classes, training_shape=training_shape, momentum=momentum,
                    weight_decay=weight_decay, loss_scale=loss_scale, loss_scale_type=loss_scale_type,
                    label_smooth_factor=label_smooth_factor, iou_type=iou_type, group_size=group_size)
