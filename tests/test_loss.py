"""YOLOv5 loss (yolomodel.loss) against a plainly written numpy reference, in graph mode, and end to end.

The reference below loops over images, strides and target entries and states YOLOv5's ComputeLoss one
scalar at a time (float64, math.atan, its own anchor lookup from the entry number k); it shares no code
with the implementation. Duplicate targets at one (image, anchor, cell) resolve to the largest IoU
target, the rule yolomodel.loss documents.
"""
from __future__ import annotations

import json
import math

import mindspore as ms
import numpy as np
import pytest

from yolodata.rng import keyed_rng
from yolodata.pipeline.targets import STRIDES, YOLOV5_ANCHORS, build_targets
from yolomodel.loss import YoloLoss

from float32_tolerance import reordered_sum_rtol

EPS = 1e-7


# --- the reference --------------------------------------------------------------------------------

def reference_iou(pred, target, iou_type, alpha=None):
    """CIoU / GIoU (or plain IoU) of two (cx, cy, w, h) boxes, YOLOv5's bbox_iou written out for one pair.

    ``alpha``: the CIoU trade-off to use instead of computing it (to differentiate with alpha held
    constant, as YOLOv5 does).
    """
    px1, px2 = pred[0] - pred[2] / 2, pred[0] + pred[2] / 2
    py1, py2 = pred[1] - pred[3] / 2, pred[1] + pred[3] / 2
    tx1, tx2 = target[0] - target[2] / 2, target[0] + target[2] / 2
    ty1, ty2 = target[1] - target[3] / 2, target[1] + target[3] / 2
    pw, ph = px2 - px1, py2 - py1 + EPS
    tw, th = tx2 - tx1, ty2 - ty1 + EPS
    inter = max(min(px2, tx2) - max(px1, tx1), 0.0) * max(min(py2, ty2) - max(py1, ty1), 0.0)
    union = pw * ph + tw * th - inter + EPS
    iou = inter / union
    if iou_type == "iou":
        return iou
    enclose_w = max(px2, tx2) - min(px1, tx1)
    enclose_h = max(py2, ty2) - min(py1, ty1)
    if iou_type == "giou":
        enclose_area = enclose_w * enclose_h + EPS
        return iou - (enclose_area - union) / enclose_area
    diagonal_sq = enclose_w ** 2 + enclose_h ** 2 + EPS
    centre_sq = ((tx1 + tx2 - px1 - px2) ** 2 + (ty1 + ty2 - py1 - py2) ** 2) / 4
    v = 4 / math.pi ** 2 * (math.atan(tw / th) - math.atan(pw / ph)) ** 2
    if alpha is None:
        alpha = v / (v - iou + 1 + EPS)
    return iou - (centre_sq / diagonal_sq + v * alpha)


def sigmoid(x):
    return 1.0 / (1.0 + math.exp(-x))


def bce(logit, target):
    """Binary cross-entropy of one logit, the stable form."""
    return max(logit, 0.0) - logit * target + math.log1p(math.exp(-abs(logit)))


def reference_loss(outputs, targets, *, num_classes, anchors=YOLOV5_ANCHORS, strides=STRIDES,
                   box_gain=0.05, cls_gain=0.5, obj_gain=1.0, balance=(4.0, 1.0, 0.4),
                   label_smooth_factor=0.0, iou_type="ciou", training_shape=640):
    """(loss, box, obj, cls) as floats; ``outputs`` numpy per stride, ``targets`` [(indices, values), ...]."""
    num_layers = len(strides)
    box_gain *= 3 / num_layers
    cls_gain *= num_classes / 80 * 3 / num_layers
    obj_gain *= (training_shape / 640) ** 2 * 3 / num_layers
    positive, negative = 1 - 0.5 * label_smooth_factor, 0.5 * label_smooth_factor
    box_total = obj_total = cls_total = 0.0
    batch_size = outputs[0].shape[0]
    for level, stride in enumerate(strides):
        output = outputs[level].astype(np.float64)
        indices, values = targets[level]
        obj_target = np.zeros(output.shape[:2])
        box_terms, cls_terms = [], []
        for image in range(batch_size):
            for k in range(indices.shape[1]):
                tx, ty, tw, th, cls, valid = values[image, k].astype(np.float64).tolist()
                if valid == 0:
                    continue
                row = output[image, indices[image, k]]
                pred = decode_row(row, np.asarray(anchors[level][(k // 3) % 3], np.float64) / stride)
                iou = reference_iou(pred, (tx, ty, tw, th), iou_type)
                box_terms.append(1 - iou)
                row_target = obj_target[image, indices[image, k]]
                obj_target[image, indices[image, k]] = max(row_target, iou, 0.0)
                if num_classes > 1:
                    cls_terms.append(np.mean([bce(row[5 + c], positive if c == int(cls) else negative)
                                              for c in range(num_classes)]))
        if box_terms:
            box_total += np.mean(box_terms)
        if cls_terms:
            cls_total += np.mean(cls_terms)
        obj_losses = [bce(logit, target) for logit, target in zip(output[..., 4].ravel(), obj_target.ravel())]
        obj_total += np.mean(obj_losses) * balance[level]
    box, obj, cls = box_total * box_gain, obj_total * obj_gain, cls_total * cls_gain
    return (box + obj + cls) * batch_size, box, obj, cls


# --- random cases ---------------------------------------------------------------------------------

def random_case(seed, *, batch_size, input_hw, num_classes, max_boxes, valid_fraction=0.7, scale=1.5):
    """Random raw head outputs and targets of the documented layout, duplicates included.

    The flat index of entry k uses anchor (k // 3) % 3 and a random cell of a small grid, so several
    valid entries of one image share a row.
    """
    rng = keyed_rng(seed, batch_size, num_classes, purpose="test_loss_case")
    outputs, targets = [], []
    num_entries = max_boxes * 9
    for stride in STRIDES:
        grid_h, grid_w = input_hw[0] // stride, input_hw[1] // stride
        outputs.append((rng.normal(size=(batch_size, 3 * grid_h * grid_w, 5 + num_classes)) * scale)
                       .astype(np.float32))
        anchor = (np.arange(num_entries) // 3) % 3
        cells = rng.integers(0, grid_h * grid_w, size=(batch_size, num_entries))
        indices = (anchor[None, :] * grid_h * grid_w + cells).astype(np.int32)
        values = np.zeros((batch_size, num_entries, 6), np.float32)
        values[..., 0:2] = rng.uniform(-0.49, 1.49, size=(batch_size, num_entries, 2))
        values[..., 2:4] = rng.uniform(0.1, 6.0, size=(batch_size, num_entries, 2))
        values[..., 4] = rng.integers(0, num_classes, size=(batch_size, num_entries))
        values[..., 5] = rng.random((batch_size, num_entries)) < valid_fraction
        invalid = values[..., 5] == 0
        indices[invalid] = 0
        values[invalid] = 0.0
        targets.append((indices, values))
    return outputs, targets


def to_tensors(outputs, targets):
    flat_targets = [ms.Tensor(array) for pair in targets for array in pair]
    return tuple(ms.Tensor(o) for o in outputs), flat_targets


def run_loss(loss_cell, outputs, targets):
    output_tensors, target_tensors = to_tensors(outputs, targets)
    return [float(part.asnumpy()) for part in loss_cell(output_tensors, *target_tensors)]


def count_duplicate_rows(targets):
    """Valid entries that share an (image, row) with an earlier valid entry, over all strides."""
    duplicates = 0
    for indices, values in targets:
        for image in range(indices.shape[0]):
            rows = indices[image][values[image, :, 5] > 0]
            duplicates += len(rows) - len(np.unique(rows))
    return duplicates


def reference_rtol(outputs) -> float:
    """Relative tolerance of the float32 loss parts against the float64 reference.

    Each part is a float32 sum over the head rows (objectness: every row; box and class: the valid
    entries, fewer), each term a few roundings of its own (sigmoid, log, division), so it agrees with the
    float64 sum to the rounding of that many terms, not to a fixed 1e-5: 3 images at 320 px sum 18,900
    rows. A real difference in the formula (a gain, a balance, the duplicate rule) moves a part by per cent.
    """
    return reordered_sum_rtol(sum(output.shape[0] * output.shape[1] for output in outputs))


CASES = {
    "ciou_4_classes": dict(seed=1, batch_size=2, input_hw=(64, 96), num_classes=4, max_boxes=6, options={}),
    "giou_label_smooth": dict(seed=2, batch_size=3, input_hw=(64, 64), num_classes=7, max_boxes=5,
                              options=dict(iou_type="giou", label_smooth_factor=0.1)),
    "one_class": dict(seed=3, batch_size=2, input_hw=(96, 64), num_classes=1, max_boxes=4, options={}),
    "gains_and_shape": dict(seed=4, batch_size=1, input_hw=(64, 64), num_classes=80, max_boxes=3,
                            options=dict(box_gain=0.1, cls_gain=0.3, obj_gain=0.7, balance=(3.0, 1.5, 0.5),
                                         training_shape=320, label_smooth_factor=0.2)),
}


@pytest.mark.parametrize("name", sorted(CASES))
def test_matches_reference(name):
    case = CASES[name]
    outputs, targets = random_case(case["seed"], batch_size=case["batch_size"], input_hw=case["input_hw"],
                                   num_classes=case["num_classes"], max_boxes=case["max_boxes"])
    assert count_duplicate_rows(targets) > 0          # the case exercises the duplicate rule
    assert any((values[..., 5] == 0).any() for _, values in targets)
    loss_cell = YoloLoss(case["num_classes"], **case["options"])
    got = run_loss(loss_cell, outputs, targets)
    expected = reference_loss(outputs, targets, num_classes=case["num_classes"], **case["options"])
    np.testing.assert_allclose(got, expected, rtol=reference_rtol(outputs), atol=1e-7)
    if case["num_classes"] == 1:
        assert got[3] == 0.0
    else:
        assert got[3] > 0.0
    assert got[0] == pytest.approx((got[1] + got[2] + got[3]) * case["batch_size"], rel=1e-6)


def test_empty_targets_give_objectness_only():
    outputs, targets = random_case(5, batch_size=2, input_hw=(64, 64), num_classes=3, max_boxes=4,
                                   valid_fraction=0.0)
    loss, box, obj, cls = run_loss(YoloLoss(3), outputs, targets)
    assert box == 0.0 and cls == 0.0 and obj > 0.0
    np.testing.assert_allclose([loss, box, obj, cls], reference_loss(outputs, targets, num_classes=3),
                               rtol=reference_rtol(outputs), atol=1e-7)


def test_duplicates_take_the_largest_iou_in_any_order():
    """Two entries on the same row: the objectness target is the larger IoU, whatever the entry order."""
    outputs, targets = random_case(6, batch_size=1, input_hw=(32, 32), num_classes=2, max_boxes=2,
                                   valid_fraction=0.0)
    indices, values = targets[0]
    # entries 0 and 1 are (box 0, anchor 0, centre / x-neighbour); put both on row 5 of stride 8
    indices[0, 0:2] = 5
    values[0, 0] = (0.5, 0.5, 1.2, 1.4, 1, 1)
    values[0, 1] = (1.2, 0.1, 3.0, 0.5, 0, 1)
    outputs[0][0, 5, :4] = (0.0, 0.0, -0.3, -0.2)                      # a box near the first target
    loss_cell = YoloLoss(2)
    forward = run_loss(loss_cell, outputs, targets)
    swapped_values = values.copy()
    swapped_values[0, [0, 1]] = values[0, [1, 0]]
    swapped = run_loss(loss_cell, outputs, [(indices, swapped_values)] + targets[1:])
    assert forward == swapped

    row = outputs[0][0, 5].astype(np.float64)
    pred = decode_row(row, YOLOV5_ANCHORS[0, 0].astype(np.float64) / 8)
    ious = [reference_iou(pred, values[0, k, :4].astype(np.float64), "ciou") for k in (0, 1)]
    assert ious[0] > 0.5 > ious[1]
    logits = [o[..., 4].astype(np.float64) for o in outputs]
    obj_means = [np.mean([bce(x, 0.0) for x in logit.ravel()]) for logit in logits]
    row_correction = (bce(row[4], max(ious)) - bce(row[4], 0.0)) / logits[0].size
    expected_obj = ((obj_means[0] + row_correction) * 4.0 + obj_means[1] * 1.0 + obj_means[2] * 0.4)
    assert forward[2] == pytest.approx(expected_obj, rel=1e-5)


# --- graph mode and gradients ---------------------------------------------------------------------

def make_loss_and_grad(loss_cell):
    """A graph-mode function (o8, o16, o32, *targets) -> ((loss, box, obj, cls), gradients of loss)."""
    def total_loss(out8, out16, out32, *targets):
        loss, box, obj, cls = loss_cell((out8, out16, out32), *targets)
        return loss, box, obj, cls
    # has_aux: the gradient is of the first output only
    return ms.jit(ms.value_and_grad(total_loss, grad_position=(0, 1, 2), has_aux=True))


@pytest.fixture(scope="module")
def graph_case():
    outputs, targets = random_case(7, batch_size=2, input_hw=(64, 64), num_classes=3, max_boxes=4)
    loss_cell = YoloLoss(3)
    return outputs, targets, loss_cell, make_loss_and_grad(loss_cell)


@pytest.mark.slow
def test_graph_mode_value_and_finite_gradient(graph_case):
    outputs, targets, loss_cell, loss_and_grad = graph_case
    output_tensors, target_tensors = to_tensors(outputs, targets)
    (loss, box, obj, cls), grads = loss_and_grad(*output_tensors, *target_tensors)
    got = [float(t.asnumpy()) for t in (loss, box, obj, cls)]
    np.testing.assert_allclose(got, reference_loss(outputs, targets, num_classes=3), rtol=reference_rtol(outputs),
                               atol=1e-7)
    assert len(grads) == 3
    for output, grad in zip(outputs, grads):
        grad = grad.asnumpy()
        assert grad.shape == output.shape and np.isfinite(grad).all()

    # rows no valid entry points at: only their objectness logit has a gradient, d/dx of
    # B * obj_gain * balance * mean BCE(x, 0) = B * balance * sigmoid(x) / (B * rows), obj_gain 1 here
    for level, (output, grad, (indices, values)) in enumerate(zip(outputs, grads, targets)):
        grad = grad.asnumpy()
        matched = np.zeros(output.shape[:2], bool)
        for image in range(output.shape[0]):
            matched[image, indices[image][values[image, :, 5] > 0]] = True
        free = ~matched
        assert free.any() and matched.any()
        batch_size, num_rows = output.shape[:2]
        expected = batch_size * (4.0, 1.0, 0.4)[level] / (batch_size * num_rows) * sigmoid_array(output[..., 4])
        np.testing.assert_allclose(grad[..., 4][free], expected[free], rtol=1e-4, atol=1e-9)
        assert (grad[..., :4][free] == 0).all() and (grad[..., 5:][free] == 0).all()
        assert np.abs(grad[..., :4][matched]).sum() > 0


def decode_row(raw, anchor_wh):
    """(cx, cy, w, h) in grid units, relative to the cell, of raw (x, y, w, h) logits."""
    return (2 * sigmoid(raw[0]) - 0.5, 2 * sigmoid(raw[1]) - 0.5,
            (2 * sigmoid(raw[2])) ** 2 * anchor_wh[0], (2 * sigmoid(raw[3])) ** 2 * anchor_wh[1])


@pytest.mark.slow
def test_box_gradient_is_ciou_with_constant_alpha(graph_case):
    """One valid entry: d loss / d raw (x, y, w, h) of its row is that of B * box_gain * (1 - CIoU) with
    alpha held constant (YOLOv5's no_grad alpha), and the objectness target passes no gradient."""
    outputs, targets, _, loss_and_grad = graph_case
    empty = [(np.zeros_like(indices), np.zeros_like(values)) for indices, values in targets]
    level, image, k, cell = 1, 1, 4, 5                 # stride 16, entry 4 = (box 0, anchor 1, x-neighbour)
    anchor = (k // 3) % 3
    grid_cells = outputs[level].shape[1] // 3
    empty[level][0][image, k] = anchor * grid_cells + cell
    target = (0.3, 0.8, 2.5, 1.1)
    empty[level][1][image, k] = target + (2, 1)
    output_tensors, target_tensors = to_tensors(outputs, empty)
    _, grads = loss_and_grad(*output_tensors, *target_tensors)
    got = grads[level].asnumpy()[image, anchor * grid_cells + cell, :4]

    raw = outputs[level][image, anchor * grid_cells + cell, :4].astype(np.float64)
    anchor_wh = YOLOV5_ANCHORS[level, anchor].astype(np.float64) / STRIDES[level]
    base = decode_row(raw, anchor_wh)
    pw, ph = base[2], base[3] + EPS
    v = 4 / math.pi ** 2 * (math.atan(target[2] / (target[3] + EPS)) - math.atan(pw / ph)) ** 2
    frozen_alpha = v / (v - reference_iou(base, target, "iou") + 1 + EPS)
    batch_size = outputs[level].shape[0]

    def numeric_gradient(alpha):
        grad = np.zeros(4)
        for i in range(4):
            step = np.zeros(4)
            step[i] = 1e-6
            plus = 1 - reference_iou(decode_row(raw + step, anchor_wh), target, "ciou", alpha=alpha)
            minus = 1 - reference_iou(decode_row(raw - step, anchor_wh), target, "ciou", alpha=alpha)
            grad[i] = batch_size * 0.05 * (plus - minus) / 2e-6
        return grad

    expected = numeric_gradient(frozen_alpha)
    np.testing.assert_allclose(got, expected, rtol=1e-3, atol=1e-6)
    # the check can tell: letting alpha vary gives a visibly different gradient for this box
    assert np.abs(numeric_gradient(None) - expected).max() > 1e-2 * np.abs(expected).max()


def sigmoid_array(x):
    return 1.0 / (1.0 + np.exp(-x.astype(np.float64)))


@pytest.mark.slow
def test_gradient_descent_lowers_the_loss(graph_case):
    outputs, targets, loss_cell, loss_and_grad = graph_case
    _, target_tensors = to_tensors(outputs, targets)
    params = [o.copy() for o in outputs]
    losses = []
    for _ in range(6):
        (loss, _, _, _), grads = loss_and_grad(*(ms.Tensor(p) for p in params), *target_tensors)
        losses.append(float(loss.asnumpy()))
        params = [p - 20.0 * g.asnumpy() for p, g in zip(params, grads)]
    assert all(later < earlier for earlier, later in zip(losses, losses[1:])), losses
    assert losses[-1] < 0.7 * losses[0], losses


# --- end to end on real boxes ---------------------------------------------------------------------

def coco128_labels(coco128_dir, num_images, input_size):
    """Label arrays of the first images of coco128, scaled so the long side is ``input_size`` pixels."""
    data = json.loads((coco128_dir / "annotations" / "instances_val2017.json").read_text())
    class_of = {c["id"]: i for i, c in enumerate(sorted(data["categories"], key=lambda c: c["id"]))}
    images = sorted(data["images"], key=lambda im: im["id"])
    labels_list = []
    for image in images:
        rows = [a for a in data["annotations"] if a["image_id"] == image["id"]]
        if not rows:
            continue
        scale = input_size / max(image["height"], image["width"])
        labels = np.array([[a["bbox"][0], a["bbox"][1], a["bbox"][0] + a["bbox"][2], a["bbox"][1] + a["bbox"][3],
                            0, a["iscrowd"]] for a in rows], np.float32)
        labels[:, :4] *= scale
        labels[:, 4] = [class_of[a["category_id"]] for a in rows]
        labels_list.append(labels)
        if len(labels_list) == num_images:
            return labels_list
    raise AssertionError("coco128 has fewer annotated images than requested")


def logit(p):
    p = np.clip(p, 1e-6, 1 - 1e-6)
    return np.log(p / (1 - p))


def perfect_outputs(targets, input_hw, num_classes, batch_size):
    """Raw outputs that decode to each valid target exactly, obj logit +12 there and -12 elsewhere."""
    outputs = []
    for level, stride in enumerate(STRIDES):
        indices, values = targets[level]
        grid_h, grid_w = input_hw[0] // stride, input_hw[1] // stride
        output = np.full((batch_size, 3 * grid_h * grid_w, 5 + num_classes), -12.0, np.float64)
        output[..., :4] = 0.0
        for image in range(batch_size):
            for k in np.flatnonzero(values[image, :, 5] > 0):
                tx, ty, tw, th, cls, _ = values[image, k].astype(np.float64)
                anchor_w, anchor_h = YOLOV5_ANCHORS[level, (k // 3) % 3] / stride
                row = output[image, indices[image, k]]
                row[0:2] = logit((np.array([tx, ty]) + 0.5) / 2)
                row[2:4] = logit(np.sqrt(np.array([tw / anchor_w, th / anchor_h])) / 2)
                row[4] = 12.0
                row[5 + int(cls)] = 12.0
        outputs.append(output.astype(np.float32))
    return outputs


def test_perfect_prediction_on_real_boxes(coco128_dir):
    input_hw, num_classes = (320, 320), 80
    labels_list = coco128_labels(coco128_dir, 3, input_hw[0])
    built = build_targets(labels_list, input_hw, max_boxes=24)
    targets = [(built[f"target_indices_s{s}"], built[f"target_values_s{s}"]) for s in STRIDES]
    batch_size = len(labels_list)
    loss_cell = YoloLoss(num_classes, training_shape=input_hw[0])

    perfect = perfect_outputs(targets, input_hw, num_classes, batch_size)
    rng = keyed_rng(8, purpose="test_loss_random_outputs")
    random_outputs = [rng.normal(size=p.shape).astype(np.float32) for p in perfect]
    perfect_parts = run_loss(loss_cell, perfect, targets)
    random_parts = run_loss(loss_cell, random_outputs, targets)

    # real targets against the reference as well (real duplicates: boxes sharing a cell); the absolute
    # tolerance is float32's: IoUs within 1e-6 of 1 leave 1 - IoU resolved to about 1e-7 per entry
    np.testing.assert_allclose(perfect_parts, reference_loss(perfect, targets, num_classes=num_classes,
                                                             training_shape=input_hw[0]), rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(random_parts, reference_loss(random_outputs, targets, num_classes=num_classes,
                                                            training_shape=input_hw[0]),
                               rtol=reference_rtol(random_outputs), atol=1e-7)
    assert random_parts[1] > 0 and random_parts[3] > 0
    assert perfect_parts[0] < 0.1 * random_parts[0], (perfect_parts, random_parts)
    for part in (1, 2, 3):
        assert perfect_parts[part] < 0.2 * random_parts[part], (part, perfect_parts, random_parts)


# --- argument validation --------------------------------------------------------------------------

@pytest.mark.parametrize("kwargs, message", [
    (dict(num_classes=0), "num_classes"),
    (dict(num_classes=True), "num_classes"),
    (dict(num_classes=3, iou_type="diou"), "iou_type"),
    (dict(num_classes=3, label_smooth_factor=1.5), "label_smooth_factor"),
    (dict(num_classes=3, label_smooth_factor=-0.1), "label_smooth_factor"),
    (dict(num_classes=3, balance=(4.0, 1.0)), "balance"),
    (dict(num_classes=3, box_gain=float("nan")), "box_gain"),
    (dict(num_classes=3, obj_gain=-1), "obj_gain"),
    (dict(num_classes=3, anchors=np.ones((2, 3, 2))), "anchors"),
    (dict(num_classes=3, anchors=-np.ones((3, 3, 2))), "anchors"),
    (dict(num_classes=3, strides=(8, 0, 32)), "stride"),
    (dict(num_classes=3, training_shape=0), "training_shape"),
])
def test_rejects_bad_arguments(kwargs, message):
    num_classes = kwargs.pop("num_classes")
    with pytest.raises(ValueError, match=message):
        YoloLoss(num_classes, **kwargs)


def test_rejects_outputs_that_do_not_fit_the_class_count():
    outputs, targets = random_case(9, batch_size=1, input_hw=(32, 32), num_classes=3, max_boxes=1)
    with pytest.raises(ValueError, match="5 \\+ num_classes"):
        run_loss(YoloLoss(4), outputs, targets)
    with pytest.raises(ValueError, match="target pair per stride"):
        output_tensors, target_tensors = to_tensors(outputs, targets)
        YoloLoss(3)(output_tensors, *target_tensors[:4])
