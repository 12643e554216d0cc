"""The compact YOLOv5 loss (valid target entries gathered in the graph) against the padded one it replaced.

``padded_stride_loss`` below is ``yolomodel.loss.stride_loss`` as it stood before the compact gather,
frozen here as the reference: it does the per-entry work on every one of the B*K target slots with
static shapes. The compact loss must give the same loss parts and the same gradients to the head
outputs, to float32 rounding, on random and real batches, a batch without targets, duplicate cells,
entries at every anchor and neighbour offset, and different numbers of valid entries through one
compiled function. The graph-mode tests compile (the training step's mode); the others run the same
cells op by op (PyNative), which tests the same formulas in a fraction of the time.
"""
from __future__ import annotations

import mindspore as ms
import numpy as np
import pytest
from mindspore import nn, ops

from yolodata.pipeline.targets import STRIDES, YOLOV5_ANCHORS, build_targets
from yolodata.rng import keyed_rng
from yolomodel.loss import (NUM_BOX_OUTPUTS, NUM_TARGET_COLUMNS, YoloLoss, bce_with_logits, box_iou_xywh,
                            target_gather_for)

from float32_tolerance import reordered_sum_rtol
from test_loss import coco128_labels, count_duplicate_rows, random_case


def padded_stride_loss(output, indices, values, anchors_grid, *, iou_type: str, num_classes: int,
                class_pos: float, class_neg: float):
    """yolomodel.loss.stride_loss as it was before the compact gather (frozen here as the reference).

    ``output`` (B, A*H*W, 5 + C) raw logits; ``indices`` int32 (B, K); ``values`` float32 (B, K, 6);
    ``anchors_grid`` float32 (A, 2) anchor sizes in grid units of this stride.
    """
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
    valid = targets[:, 5] > 0
    num_valid = valid.astype(ms.float32).sum()
    denominator = ops.maximum(num_valid, 1.0)

    matched = ops.gather(flat_output, flat_index, 0)                                  # (B*K, 5 + C)
    anchor_wh = ops.gather(anchors_grid, (indices // cells_per_anchor).reshape(-1), 0)  # (B*K, 2)
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
    obj = bce_with_logits(flat_output[:, 4], obj_target).mean()

    if num_classes > 1:
        class_index = targets[:, 4].astype(ms.int32)
        class_target = ops.one_hot(class_index, num_classes, ms.Tensor(class_pos, ms.float32),
                                   ms.Tensor(class_neg, ms.float32))                   # (B*K, C)
        class_bce = bce_with_logits(matched[:, NUM_BOX_OUTPUTS:], class_target).sum(axis=1)
        cls = ops.where(valid, class_bce, 0.0).sum() / (denominator * num_classes)
    else:
        cls = ops.zeros((), ms.float32)
    return box, obj, cls


class ReferenceYoloLoss(YoloLoss):
    """YoloLoss summing ``padded_stride_loss`` over strides, as YoloLoss.construct did."""

    def construct(self, outputs, *targets):
        batch_size = outputs[0].shape[0]
        box = ops.zeros((), ms.float32)
        obj = ops.zeros((), ms.float32)
        cls = ops.zeros((), ms.float32)
        for level in range(self.num_layers):
            level_box, level_obj, level_cls = padded_stride_loss(
                outputs[level], targets[2 * level], targets[2 * level + 1], self.anchors_grid[level],
                iou_type=self.iou_type, num_classes=self.num_classes, class_pos=self.class_pos,
                class_neg=self.class_neg)
            box = box + level_box
            obj = obj + level_obj * self.balance[level]
            cls = cls + level_cls
        box = box * self.box_gain
        obj = obj * self.obj_gain
        cls = cls * self.cls_gain
        return (box + obj + cls) * batch_size, box, obj, cls


class LossAndGrad(nn.Cell):
    """Compiled (loss, box, obj, cls) and the gradient of the loss to the three head outputs."""

    def __init__(self, loss):
        super().__init__(auto_prefix=False)
        self.loss = loss
        self.grad_fn = ops.value_and_grad(self.parts, grad_position=(0, 1, 2), has_aux=True)

    def parts(self, out8, out16, out32, ti8, tv8, ti16, tv16, ti32, tv32):
        loss, box, obj, cls = self.loss((out8, out16, out32), ti8, tv8, ti16, tv16, ti32, tv32)
        return loss, box, obj, cls

    def construct(self, out8, out16, out32, ti8, tv8, ti16, tv16, ti32, tv32):
        return self.grad_fn(out8, out16, out32, ti8, tv8, ti16, tv16, ti32, tv32)


def evaluate(cell, outputs, targets):
    """(parts float64 (4,), [gradient numpy per stride]) of one LossAndGrad call."""
    flat_targets = [ms.Tensor(array) for pair in targets for array in pair]
    (loss, box, obj, cls), grads = cell(*(ms.Tensor(o) for o in outputs), *flat_targets)
    parts = np.array([float(t.asnumpy()) for t in (loss, box, obj, cls)])
    return parts, [g.asnumpy() for g in grads]


def assert_same_loss(got, expected):
    """Loss parts and gradients equal to float32 rounding.

    The parts are sums over every head row (objectness) and every valid entry (box, class) that the two
    formulations add in different orders (gathered entries against zero-padded slots), so they agree to
    the rounding of a reordered sum of that many terms (``float32_tolerance``), not to a fixed 2e-6: the
    real batch sums 25,200 rows. A real difference (an entry lost or counted twice, a wrong denominator)
    moves a part by 1/(number of entries), per cent and more. The gradients to the head outputs are
    element by element: a few terms each (duplicates of a row), so a fixed relative 1e-5 (~170 roundings)
    with an absolute floor at 1e-6 of the largest gradient (elements whose terms nearly cancel).
    """
    (got_parts, got_grads), (expected_parts, expected_grads) = got, expected
    num_rows = sum(grad.shape[0] * grad.shape[1] for grad in expected_grads)
    np.testing.assert_allclose(got_parts, expected_parts, rtol=reordered_sum_rtol(num_rows), atol=1e-7)
    for got_grad, expected_grad in zip(got_grads, expected_grads):
        assert got_grad.shape == expected_grad.shape
        scale = float(np.abs(expected_grad).max())
        np.testing.assert_allclose(got_grad, expected_grad, rtol=1e-5, atol=1e-6 * scale)


def pairs(num_classes, **options):
    """(compact LossAndGrad, reference LossAndGrad) with the same settings."""
    compact = LossAndGrad(YoloLoss(num_classes, target_gather="compact", **options))
    reference = LossAndGrad(ReferenceYoloLoss(num_classes, target_gather="padded", **options))
    return compact, reference


def test_target_gather_by_device():
    assert target_gather_for("CPU") == "compact"
    assert target_gather_for("GPU") == target_gather_for("Ascend") == "padded"
    assert target_gather_for("Ascend", "compact") == "compact"
    with pytest.raises(ValueError, match="target_gather"):
        target_gather_for("CPU", "sparse")
    with pytest.raises(ValueError, match="target_gather"):
        YoloLoss(3, target_gather="dense")


@pytest.mark.parametrize("num_classes, options", [
    (7, dict(iou_type="giou", label_smooth_factor=0.1, training_shape=320)),
    (1, {}),
])
def test_random_batches_with_duplicates(num_classes, options):
    outputs, targets = random_case(11 + num_classes, batch_size=3, input_hw=(64, 96), num_classes=num_classes,
                                   max_boxes=6)
    assert count_duplicate_rows(targets) > 0
    compact, reference = pairs(num_classes, **options)
    assert_same_loss(evaluate(compact, outputs, targets), evaluate(reference, outputs, targets))


@pytest.mark.slow
def test_one_compiled_loss_serves_any_number_of_valid_entries(graph_mode):
    """The same compiled cell on batches with no, one, some and all entries valid (one shape of inputs)."""
    compact, reference = pairs(5)
    for valid_fraction, seed in ((0.0, 21), (0.02, 22), (0.5, 23), (1.0, 24), (0.0, 25)):
        outputs, targets = random_case(seed, batch_size=2, input_hw=(64, 64), num_classes=5, max_boxes=8,
                                       valid_fraction=valid_fraction)
        got, expected = evaluate(compact, outputs, targets), evaluate(reference, outputs, targets)
        assert_same_loss(got, expected)
        if valid_fraction == 0.0:
            assert got[0][1] == 0.0 and got[0][3] == 0.0 and got[0][2] > 0.0
            for grad in got[1]:                      # only objectness logits get a gradient
                assert (grad[..., :4] == 0).all() and (grad[..., 5:] == 0).all()


def test_sentinel_entry_zero_valid_or_not():
    """Entry 0, always kept by the compact gather, counts once when valid and not at all when padding."""
    outputs, targets = random_case(26, batch_size=2, input_hw=(64, 64), num_classes=3, max_boxes=2,
                                   valid_fraction=0.0)
    compact, reference = pairs(3)
    indices, values = targets[0]
    indices[0, 0] = 7
    values[0, 0] = (0.4, 0.7, 1.5, 2.0, 2, 1)        # valid entry 0 only
    assert_same_loss(evaluate(compact, outputs, targets), evaluate(reference, outputs, targets))
    indices[0, 0], values[0, 0] = 0, 0.0
    indices[1, 3] = 9
    values[1, 3] = (0.4, 0.7, 1.5, 2.0, 1, 1)        # a valid entry elsewhere, entry 0 padding
    assert_same_loss(evaluate(compact, outputs, targets), evaluate(reference, outputs, targets))


def boxes_at_every_offset(size):
    """Label arrays whose centres sit left/right/up/down of their cell centre and whose sizes fit every anchor."""
    labels_list = []
    for image, (fx, fy) in enumerate(((0.2, 0.3), (0.8, 0.7), (0.3, 0.8), (0.7, 0.2))):
        rows = []
        for level, stride in enumerate(STRIDES):
            for anchor, (w, h) in enumerate(YOLOV5_ANCHORS[level]):
                cell = 2 + 3 * anchor + level
                cx, cy = (cell + fx) * stride % (size - 2 * stride) + stride, (cell + fy) * stride % (size - 2 * stride) + stride
                w, h = min(float(w), size / 2), min(float(h), size / 2)
                rows.append((cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2, (level * 3 + anchor) % 4, 0))
        labels_list.append(np.clip(np.array(rows, np.float32), 0, size))
    return labels_list


def test_entries_at_every_anchor_and_neighbour_offset():
    size = 256
    built = build_targets(boxes_at_every_offset(size), (size, size), max_boxes=12)
    targets = [(built[f"target_indices_s{s}"], built[f"target_values_s{s}"]) for s in STRIDES]
    for level, (indices, values) in enumerate(targets):
        valid = values[..., 5] > 0
        entry = np.arange(values.shape[1])
        anchors_used = set(((entry // 3) % 3)[valid.any(axis=0)].tolist())
        assert anchors_used == {0, 1, 2}, (level, anchors_used)
        cell_kind = entry % 3                        # centre, x-neighbour, y-neighbour
        tx, ty = values[..., 0], values[..., 1]
        x_neighbour, y_neighbour = valid & (cell_kind == 1), valid & (cell_kind == 2)
        assert (tx[x_neighbour] > 1).any() and (tx[x_neighbour] < 0).any(), level       # left and right
        assert (ty[y_neighbour] > 1).any() and (ty[y_neighbour] < 0).any(), level       # up and down
    rng = keyed_rng(27, purpose="test_loss_compact_offsets")
    outputs = [rng.normal(size=(4, 3 * (size // s) ** 2, 5 + 4)).astype(np.float32) for s in STRIDES]
    compact, reference = pairs(4, training_shape=size)
    assert_same_loss(evaluate(compact, outputs, targets), evaluate(reference, outputs, targets))


@pytest.mark.slow
def test_real_batch(graph_mode, coco128_dir):
    input_hw, num_classes = (320, 320), 80
    labels_list = coco128_labels(coco128_dir, 4, input_hw[0])
    built = build_targets(labels_list, input_hw, max_boxes=64)
    targets = [(built[f"target_indices_s{s}"], built[f"target_values_s{s}"]) for s in STRIDES]
    assert count_duplicate_rows(targets) > 0
    rng = keyed_rng(28, purpose="test_loss_compact_real")
    outputs = [rng.normal(size=(len(labels_list), 3 * (320 // s) ** 2, 85)).astype(np.float32) for s in STRIDES]
    compact, reference = pairs(num_classes, training_shape=input_hw[0])
    assert_same_loss(evaluate(compact, outputs, targets), evaluate(reference, outputs, targets))
