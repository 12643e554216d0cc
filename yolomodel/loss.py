"""YOLOv5's training loss (utils/loss.py ``ComputeLoss``, v5.0/v6) on the targets the input pipeline built.

The pipeline (``yolodata.pipeline.targets.build_targets``) has already done YOLOv5's matching: for each stride it
delivers ``target_indices`` int32 (B, K), a flat row index a*H*W + gy*W + gx into that stride's head
output, and ``target_values`` float32 (B, K, 6) = tx, ty, tw, th, class, valid in grid units. The loss
only gathers the predicted rows at those indices; it never matches. The number of valid entries
varies from batch to batch (about 500 of the 16 x 2304 slots per stride at batch 16, max_boxes 256);
every mean divides by max(count, 1). Two ways to reach them, with the same results:

* "compact" (CPU): the valid entries (plus entry 0, always kept so that a batch without targets never
  gives an empty shape; its valid flag still masks it) are gathered with ``ops.nonzero`` before the
  per-entry work, so its cost follows the number of targets, not ``max_boxes``. The shape inside the
  graph changes with the data; MindSpore's CPU backend runs that without recompiling.
* "padded" (GPU, Ascend): the per-entry work runs on all B*K slots and invalid ones are masked, so
  every shape is static, what Ascend's graph sinking needs; this project has no device to check a
  dynamic-shape loss there.

Per stride s (nl strides, usually 3), with the head output viewed as (B, A*H*W, 5 + C) raw logits:

* matched rows: pxy = 2*sigmoid(p_xy) - 0.5, pwh = (2*sigmoid(p_wh))^2 * anchor (grid units, anchor
  pixels / stride), both relative to the entry's cell like tx, ty; the anchor is the one of the row the
  entry points at (row // (H*W)), which for the pipeline's targets is the entry's own (k // 3) % 3;
* box: mean over valid entries of 1 - CIoU(pred, target) (or 1 - GIoU);
* objectness: BCE-with-logits of the objectness logit of every row against a target that is 0 except at
  matched rows, where it is clamp(IoU, 0) with the IoU detached (YOLOv5's gr = 1.0); the mean over all
  B*A*H*W rows is weighted by ``balance[s]``;
* class (only when C > 1): BCE-with-logits of the class logits of valid entries against one-hot targets
  (cp = 1 - eps/2 on the class, cn = eps/2 elsewhere: YOLOv5's smooth_BCE), mean over entries and
  classes.

Duplicates: several valid entries can point at the same (image, anchor, cell), e.g. two boxes whose
centres share a cell. Every one of them counts in the box and class losses, as in YOLOv5. The objectness
target of that row, which YOLOv5 writes with an indexed assignment (in practice the last write wins, an
order PyTorch does not promise), is here the **largest** of their IoU targets: a scatter-max, which does
not depend on the entry order and so is deterministic.

Totals: box, obj, cls are summed over strides and multiplied by their gains, which are scaled as
YOLOv5's train.py does (box *= 3/nl, cls *= C/80 * 3/nl, obj *= (training_shape/640)^2 * 3/nl); the loss
is (box + obj + cls) * batch_size, and the three parts are returned without the batch factor.

IoU formulas follow YOLOv5's ``bbox_iou`` with eps = 1e-7: boxes go to corners, w = x2 - x1,
h = y2 - y1 + eps, union = w1*h1 + w2*h2 - inter + eps; CIoU = IoU - (rho^2 / (c^2 + eps) + v*alpha)
with v = 4/pi^2 * (atan(w2/h2) - atan(w1/h1))^2 and alpha = v / (v - IoU + 1 + eps) treated as a
constant (no gradient); GIoU = IoU - (C - union) / C with C = enclosing area + eps.
"""
from __future__ import annotations

import math
import numbers

import numpy as np
import mindspore as ms
from mindspore import nn, ops

from yolodata.pipeline.targets import STRIDES, YOLOV5_ANCHORS, check_anchors

IOU_EPS = 1e-7
IOU_TYPES = ("ciou", "giou")
TARGET_GATHERS = ("auto", "compact", "padded")
NUM_BOX_OUTPUTS = 5            # x, y, w, h, objectness before the class logits
NUM_TARGET_COLUMNS = 6         # tx, ty, tw, th, class, valid
REFERENCE_CLASSES = 80         # YOLOv5's hyperparameters are tuned for COCO's 80 classes ...
REFERENCE_SHAPE = 640          # ... at 640x640 input


# --- small pure pieces ----------------------------------------------------------------------------

def scaled_gains(box_gain: float, cls_gain: float, obj_gain: float, *, num_classes: int, num_layers: int,
                 training_shape: int) -> tuple[float, float, float]:
    """(box, cls, obj) gains scaled for the class count, image size and layer count as YOLOv5's train.py."""
    layer_factor = 3.0 / num_layers
    return (box_gain * layer_factor,
            cls_gain * num_classes / REFERENCE_CLASSES * layer_factor,
            obj_gain * (training_shape / REFERENCE_SHAPE) ** 2 * layer_factor)


def smooth_bce_targets(label_smooth_factor: float) -> tuple[float, float]:
    """(positive, negative) class targets for YOLOv5's smooth_BCE: 1 - eps/2 and eps/2."""
    return 1.0 - 0.5 * label_smooth_factor, 0.5 * label_smooth_factor


def bce_with_logits(logits, targets):
    """Element-wise binary cross-entropy on logits: t*softplus(-x) + (1-t)*softplus(x).

    Written as two non-negative terms rather than softplus(x) - x*t, which cancels in float32 when a
    confident logit meets a target near 1 (a nearly perfect objectness prediction).
    """
    return targets * ops.softplus(-logits) + (1.0 - targets) * ops.softplus(logits)


FOCAL_ALPHA = 0.25              # YOLOv5's FocalLoss alpha


def weighted_bce_with_logits(logits, targets, pos_weight: float = 1.0, focal_gamma: float = 0.0):
    """Element-wise BCE-with-logits as YOLOv5's criteria: ``pos_weight`` multiplies the positive term
    (PyTorch's BCEWithLogitsLoss pos_weight, hyp ``cls_pw``/``obj_pw``) and ``focal_gamma`` > 0 turns it into
    YOLOv5's FocalLoss (hyp ``fl_gamma``): times ``alpha_t * (1 - p_t) ** gamma`` with p = sigmoid(logits),
    p_t = t*p + (1-t)*(1-p), alpha_t = 0.25 t + 0.75 (1-t). With the defaults it is ``bce_with_logits``
    itself (the same operations, so the default loss is unchanged).
    """
    if pos_weight == 1.0:
        loss = bce_with_logits(logits, targets)
    else:
        loss = pos_weight * targets * ops.softplus(-logits) + (1.0 - targets) * ops.softplus(logits)
    if focal_gamma > 0:
        probability = ops.sigmoid(logits)
        p_t = targets * probability + (1.0 - targets) * (1.0 - probability)
        alpha_t = targets * FOCAL_ALPHA + (1.0 - targets) * (1.0 - FOCAL_ALPHA)
        loss = loss * alpha_t * (1.0 - p_t) ** focal_gamma
    return loss


def box_iou_xywh(pred_xy, pred_wh, target_xy, target_wh, iou_type: str):
    """(N,) CIoU or GIoU of boxes given as centre (N, 2) and size (N, 2), YOLOv5's formulas (see top).

    The CIoU trade-off alpha carries no gradient, as in YOLOv5.
    """
    p_min, p_max = pred_xy - pred_wh * 0.5, pred_xy + pred_wh * 0.5
    t_min, t_max = target_xy - target_wh * 0.5, target_xy + target_wh * 0.5
    p_w = p_max[:, 0] - p_min[:, 0]
    p_h = p_max[:, 1] - p_min[:, 1] + IOU_EPS
    t_w = t_max[:, 0] - t_min[:, 0]
    t_h = t_max[:, 1] - t_min[:, 1] + IOU_EPS
    overlap = ops.clamp(ops.minimum(p_max, t_max) - ops.maximum(p_min, t_min), min=0.0)   # (N, 2)
    inter = overlap[:, 0] * overlap[:, 1]
    union = p_w * p_h + t_w * t_h - inter + IOU_EPS
    iou = inter / union
    enclose = ops.maximum(p_max, t_max) - ops.minimum(p_min, t_min)                      # (N, 2)
    if iou_type == "giou":
        enclose_area = enclose[:, 0] * enclose[:, 1] + IOU_EPS
        return iou - (enclose_area - union) / enclose_area
    diagonal_sq = enclose[:, 0] ** 2 + enclose[:, 1] ** 2 + IOU_EPS
    centre_sq = ((t_min + t_max - p_min - p_max) ** 2).sum(axis=1) / 4.0
    aspect = (4.0 / math.pi ** 2) * (ops.atan(t_w / t_h) - ops.atan(p_w / p_h)) ** 2
    alpha = ops.stop_gradient(aspect / (aspect - iou + (1.0 + IOU_EPS)))
    return iou - (centre_sq / diagonal_sq + aspect * alpha)


def compact_entries(flat_index, targets, anchor_index):
    """The valid target entries only, plus entry 0 as a sentinel: a dynamic-shape gather.

    ``flat_index`` int32 (E,), ``targets`` float32 (E, 6), ``anchor_index`` int32 (E,) ->
    the same three with M rows, M = number of valid entries (+ 1 when entry 0 is not valid). Entry 0
    is always kept so that a batch without targets never produces an empty shape; it keeps its valid
    flag, so an invalid sentinel is masked like any padded entry. Order is preserved.
    """
    num_entries = targets.shape[0]
    keep = ops.logical_or(targets[:, 5] > 0, ops.arange(num_entries, dtype=ms.int32) == 0)
    positions = ops.nonzero(keep).reshape(-1)                                          # (M,)
    return (ops.gather(flat_index, positions, 0), ops.gather(targets, positions, 0),
            ops.gather(anchor_index, positions, 0))


def stride_loss(output, indices, values, anchors_grid, *, iou_type: str, num_classes: int,
                class_pos: float, class_neg: float, compact: bool = False, criteria=(1.0, 1.0, 0.0)):
    """(box, obj, cls) float32 scalars of one stride, before gains and balance.

    ``output`` (B, A*H*W, 5 + C) raw logits; ``indices`` int32 (B, K); ``values`` float32 (B, K, 6);
    ``anchors_grid`` float32 (A, 2) anchor sizes in grid units of this stride. ``compact``: do the
    per-entry work on the valid entries only (``compact_entries``) instead of on all B*K slots; the
    result is the same, the cost no longer grows with K. ``criteria`` = (cls pos_weight, obj pos_weight,
    focal gamma) of ``weighted_bce_with_logits``.
    """
    cls_pos_weight, obj_pos_weight, focal_gamma = criteria
    batch_size, num_rows, num_columns = output.shape
    num_entries = indices.shape[1]
    cells_per_anchor = num_rows // anchors_grid.shape[0]
    output = output.astype(ms.float32)           # a float16 head (mixed precision) is scored in float32
    values = values.astype(ms.float32)
    indices = indices.astype(ms.int32)
    # (B, R, 5 + C) -> (B*R, 5 + C): one row per (image, anchor, cell)
    flat_output = output.reshape(batch_size * num_rows, num_columns)
    batch_offset = ops.arange(batch_size, dtype=ms.int32).reshape(batch_size, 1) * num_rows
    # (B, K) -> (B*K,) row numbers into flat_output
    flat_index = (indices + batch_offset).reshape(batch_size * num_entries)
    targets = values.reshape(batch_size * num_entries, NUM_TARGET_COLUMNS)
    anchor_index = (indices // cells_per_anchor).reshape(batch_size * num_entries)
    num_valid = (targets[:, 5] > 0).astype(ms.float32).sum()
    denominator = ops.maximum(num_valid, 1.0)
    if compact:
        flat_index, targets, anchor_index = compact_entries(flat_index, targets, anchor_index)
    valid = targets[:, 5] > 0

    matched = ops.gather(flat_output, flat_index, 0)                                  # (E, 5 + C)
    anchor_wh = ops.gather(anchors_grid, anchor_index, 0)                              # (E, 2)
    pred_xy = ops.sigmoid(matched[:, 0:2]) * 2.0 - 0.5
    pred_wh = (ops.sigmoid(matched[:, 2:4]) * 2.0) ** 2 * anchor_wh
    iou = box_iou_xywh(pred_xy, pred_wh, targets[:, 0:2], targets[:, 2:4], iou_type)
    box = ops.where(valid, 1.0 - iou, 0.0).sum() / denominator

    # objectness target per row: scatter-max of the detached, clamped IoU (invalid entries add 0 at row
    # 0 of their image, which a max with the zero background leaves unchanged; that zero background
    # would also absorb negative IoUs, the clamp states YOLOv5's rule explicitly)
    iou_target = ops.stop_gradient(ops.where(valid, ops.clamp(iou, min=0.0), 0.0))
    obj_target = ops.tensor_scatter_max(ops.zeros(batch_size * num_rows, ms.float32),
                                        flat_index.reshape(-1, 1), iou_target)
    obj = weighted_bce_with_logits(flat_output[:, 4], obj_target, obj_pos_weight, focal_gamma).mean()

    if num_classes > 1:
        class_index = targets[:, 4].astype(ms.int32)
        class_target = ops.one_hot(class_index, num_classes, ms.Tensor(class_pos, ms.float32),
                                   ms.Tensor(class_neg, ms.float32))                   # (E, C)
        class_bce = weighted_bce_with_logits(matched[:, NUM_BOX_OUTPUTS:], class_target, cls_pos_weight,
                                             focal_gamma).sum(axis=1)
        cls = ops.where(valid, class_bce, 0.0).sum() / (denominator * num_classes)
    else:
        cls = ops.zeros((), ms.float32)
    return box, obj, cls


def target_gather_for(device_target: str, requested: str = "auto") -> str:
    """How the loss reaches its target entries on ``device_target``: "compact" or "padded".

    "compact" gathers the valid entries inside the graph (a shape that changes with the data: measured
    on CPU, where MindSpore runs it without recompiling and the loss costs the same at any max_boxes);
    "padded" works on every slot with static shapes. "auto" picks compact on CPU and padded on GPU
    and Ascend, whose graph compilers are built around static shapes (Ascend's graph sinking needs
    them) and where this project has no device to check a dynamic-shape loss on.
    """
    if requested not in TARGET_GATHERS:
        raise ValueError(f"target_gather must be one of {TARGET_GATHERS}, got {requested!r}")
    if requested != "auto":
        return requested
    return "compact" if device_target == "CPU" else "padded"


# --- validation -----------------------------------------------------------------------------------

def _non_negative(name: str, value) -> float:
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be a number >= 0, got {value!r}") from None
    if not (math.isfinite(number) and number >= 0):
        raise ValueError(f"{name} must be a finite number >= 0, got {value!r}")
    return number


def _positive_int(name: str, value, hint: str) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 1:
        raise ValueError(f"{name} must be a positive integer ({hint}), got {value!r}")
    return int(value)


def _check_arguments(num_classes, anchors, strides, box_gain, cls_gain, obj_gain, balance,
                     label_smooth_factor, iou_type, training_shape):
    """Validated (num_classes, anchors float32 (nl, A, 2), strides, gains, balance, eps, iou_type, shape)."""
    num_classes = _positive_int("num_classes", num_classes, "the number of object classes")
    try:
        strides = tuple(strides)
    except TypeError:
        raise ValueError(f"strides must be a sequence of positive integers, got {strides!r}") from None
    if not strides:
        raise ValueError("strides must name at least one stride (YOLOv5: (8, 16, 32))")
    strides = tuple(_positive_int("each stride", s, "YOLOv5: 8, 16, 32") for s in strides)
    anchors = check_anchors(anchors, strides)
    gains = tuple(_non_negative(name, value) for name, value in
                  (("box_gain", box_gain), ("cls_gain", cls_gain), ("obj_gain", obj_gain)))
    try:
        balance = tuple(balance)
    except TypeError:
        raise ValueError(f"balance must be a sequence of {len(strides)} weights, got {balance!r}") from None
    if len(balance) != len(strides):
        raise ValueError(f"balance must give one objectness weight per stride ({len(strides)} for strides "
                         f"{strides}; YOLOv5 uses (4.0, 1.0, 0.4)), got {len(balance)}")
    balance = tuple(_non_negative("each balance weight", b) for b in balance)
    label_smooth_factor = _non_negative("label_smooth_factor", label_smooth_factor)
    if label_smooth_factor > 1:
        raise ValueError(f"label_smooth_factor must lie in [0, 1] (0 turns smoothing off; the reference "
                         f"used 0.1), got {label_smooth_factor}")
    if not isinstance(iou_type, str) or iou_type.lower() not in IOU_TYPES:
        raise ValueError(f"iou_type must be one of {IOU_TYPES}, got {iou_type!r}")
    training_shape = _positive_int("training_shape", training_shape, "the training image size in pixels")
    return (num_classes, anchors.astype(np.float32), strides, gains, balance, label_smooth_factor,
            iou_type.lower(), training_shape)


# --- the cell -------------------------------------------------------------------------------------

class YoloLoss(nn.Cell):
    """YOLOv5's loss on raw head outputs and the pipeline's targets (see the module docstring).

    ``construct(outputs, ti8, tv8, ti16, tv16, ti32, tv32)``: ``outputs`` is the network's tuple of raw
    head outputs, one (B, A*H_s*W_s, 5 + C) float32 tensor per stride in ``strides`` order, followed by
    the (indices, values) target pair of each stride in the same order. Returns float32 scalars
    (loss, box, obj, cls) with loss = (box + obj + cls) * B; runs in graph and PyNative mode.

    ``target_gather``: "compact" (the per-entry work on valid entries only, a dynamic shape), "padded"
    (on all B*K slots, static shapes) or "auto" (``target_gather_for`` the context's device). Both give
    the same loss and gradients. ``cls_pos_weight``, ``obj_pos_weight`` and ``focal_gamma`` are YOLOv5's
    hyp ``cls_pw``, ``obj_pw`` and ``fl_gamma`` (``weighted_bce_with_logits``); the gains are its ``box``,
    ``cls``, ``obj`` before the scaling of ``scaled_gains``.
    """

    def __init__(self, num_classes: int, *, anchors=YOLOV5_ANCHORS, strides=STRIDES, box_gain: float = 0.05,
                 cls_gain: float = 0.5, obj_gain: float = 1.0, balance=(4.0, 1.0, 0.4),
                 label_smooth_factor: float = 0.0, iou_type: str = "ciou", training_shape: int = 640,
                 target_gather: str = "auto", cls_pos_weight: float = 1.0, obj_pos_weight: float = 1.0,
                 focal_gamma: float = 0.0):
        super().__init__()
        self.criteria = tuple(_non_negative(name, value) for name, value in (
            ("cls_pos_weight", cls_pos_weight), ("obj_pos_weight", obj_pos_weight), ("focal_gamma", focal_gamma)))
        self.target_gather = target_gather_for(ms.get_context("device_target"), target_gather)
        (num_classes, anchors, strides, gains, balance, label_smooth_factor, iou_type,
         training_shape) = _check_arguments(num_classes, anchors, strides, box_gain, cls_gain, obj_gain,
                                            balance, label_smooth_factor, iou_type, training_shape)
        self.num_classes = num_classes
        self.num_layers = len(strides)
        self.strides = strides
        self.iou_type = iou_type
        self.balance = balance
        self.box_gain, self.cls_gain, self.obj_gain = scaled_gains(
            *gains, num_classes=num_classes, num_layers=self.num_layers, training_shape=training_shape)
        self.class_pos, self.class_neg = smooth_bce_targets(label_smooth_factor)
        # (nl, A, 2) anchor sizes in grid units of their stride
        grid_anchors = anchors / np.asarray(strides, np.float32)[:, None, None]
        self.anchors_grid = ms.Tensor(grid_anchors.astype(np.float32))

    def construct(self, outputs, *targets):
        if len(outputs) != self.num_layers or len(targets) != 2 * self.num_layers:
            raise ValueError("YoloLoss expects one head output and one (indices, values) target pair per stride")
        batch_size = outputs[0].shape[0]
        box = ops.zeros((), ms.float32)
        obj = ops.zeros((), ms.float32)
        cls = ops.zeros((), ms.float32)
        for level in range(self.num_layers):
            if outputs[level].shape[-1] != NUM_BOX_OUTPUTS + self.num_classes:
                raise ValueError("YoloLoss: a head output's last dimension must be 5 + num_classes")
            level_box, level_obj, level_cls = stride_loss(
                outputs[level], targets[2 * level], targets[2 * level + 1], self.anchors_grid[level],
                iou_type=self.iou_type, num_classes=self.num_classes, class_pos=self.class_pos,
                class_neg=self.class_neg, compact=self.target_gather == "compact", criteria=self.criteria)
            box = box + level_box
            obj = obj + level_obj * self.balance[level]
            cls = cls + level_cls
        box = box * self.box_gain
        obj = obj * self.obj_gain
        cls = cls * self.cls_gain
        loss = (box + obj + cls) * batch_size
        return loss, box, obj, cls
