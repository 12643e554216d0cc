"""Training from one seed gives the same losses and weights as the step before issue 15's changes.

The reference step is rebuilt here from the pieces as they were: the padded loss
(``test_loss_compact.ReferenceYoloLoss``), the ResizeNearestNeighbor upsample, the SiLU primitive, the
SPP's 5/9/13 max-pools side by side, and the reference's static loss scale 64 with its unscale and
gradient sweep. A power-of-two static scale is exact in float32, so the two steps differ only by the
rounding of reordered sums.

Two float32 formulations are not asked to agree to 1e-5 after several optimizer steps: rounding
differences of each update feed the next, and the CPU kernels split their sums across threads by the
machine's load, so the order of additions (and the last bits) change from run to run on a busy machine.
What can honestly be compared, each with a tolerance derived below from float32 rounding:
the loss parts of one forward from the same weights, the first update from the same weights, and the
losses of a few steps relative to how far the steps moved them.
"""
from __future__ import annotations

import numpy as np
import pytest
from mindspore import Tensor, ops

import yolomodel.layers as layers_module
import yolomodel.network as network_module
from yolodata.pipeline.targets import STRIDES, build_targets
from yolodata.rng import keyed_rng
from yolomodel.loss import YoloLoss
from yolomodel.network import create_yolov5
from yolomodel.train import step as step_lib
from yolomodel.train.ema import ModelEMA

from float32_tolerance import FLOAT32_UNIT_ROUNDOFF, network_rtol
from test_loss_compact import ReferenceYoloLoss

NUM_CLASSES, SIZE, BATCH, STEPS = 3, 64, 2, 3


def reference_upsample(x):
    """The 2x nearest upsample as it was: ResizeNearestNeighbor to twice the runtime size."""
    height, width = x.shape[2], x.shape[3]
    return ops.ResizeNearestNeighbor((2 * height, 2 * width))(x)


def reference_silu(x):
    """SiLU as it was: MindSpore's SiLU primitive (what nn.SiLU runs)."""
    return ops.silu(x)


def batch_columns():
    rng = keyed_rng(31, purpose="test_step_equivalence")
    labels = []
    for _ in range(BATCH):
        count = 4
        centre = rng.uniform(8, SIZE - 8, size=(count, 2))
        wh = rng.uniform(6, 40, size=(count, 2))
        rows = np.concatenate([np.clip(centre - wh / 2, 0, SIZE), np.clip(centre + wh / 2, 0, SIZE),
                               rng.integers(0, NUM_CLASSES, size=(count, 1)), np.zeros((count, 1))], axis=1)
        labels.append(rows.astype(np.float32))
    targets = build_targets(labels, (SIZE, SIZE), max_boxes=8)
    images = rng.integers(0, 256, size=(BATCH, SIZE, SIZE, 3), dtype=np.uint8)
    columns = [images]
    for stride in STRIDES:
        columns += [targets[f"target_indices_s{stride}"], targets[f"target_values_s{stride}"]]
    return [Tensor(c) for c in columns]


# One forward from the same weights. Each loss part ends a chain of float32 sums whose order the two
# formulations (and the CPU kernels' split of work across threads, machine to machine) may change:
# convolutions summing at most K = 3*3*256 = 2304 products per output in yolov5n, about D = 60 such
# layers in sequence, then the loss's sums over the B*3*(8*8 + 4*4 + 2*2) = 504 head rows. Reordering a
# sum of n terms moves it by about u*sqrt(n) relative (rounding errors of random sign), so about
# u*sqrt(2304) = 2.9e-6 per layer; errors of successive layers add like a random walk:
# sqrt(D) * 2.9e-6 = 2.2e-5; float32_tolerance's safety factor of 8 gives 1.8e-4 relative. A real bug
# moves a part by far more: a box gain 1% off moves the box part by 1e-2 (checked below), a missing
# target entry or stride level by tens of per cent.
FORWARD_RTOL = network_rtol(max_terms_per_layer=2304, num_layers=60)

# The first update from the same weights. The update of each weight tensor is lr times its gradient
# (plus weight decay; measured: the momentum first acts on step 2, so a wrong momentum is left to the
# several-step check below, which caught 0.8 for 0.9). Its gradient sums over the batch and every
# position of the feature map and runs back through the same chain of layers, so it carries the same
# kind of relative error as the forward, relative to the size of the tensor's update (not per element:
# an element whose gradient nearly cancels keeps the absolute error of its tensor's sums). Allowed:
# FIRST_UPDATE_RTOL of the tensor's largest update, 10x FORWARD_RTOL because backward sums are longer
# (up to B*32*32 = 2048 positions on top of the channel sums) and the upsample's backward adds each 2x2
# block in another order. Plus the rounding of the weight itself: w1 and w0 are float32, so w1 - w0 is
# known only to about 2 * u * |w| per element (a BatchNorm gamma of 1 moved by 1e-6 is a 10% update
# blurred by its own ulp). A backward bug (a term left out of the gradient, a stop-gradient missing or
# misplaced) changes the updates of the layers it feeds by tens of per cent, 100x this tolerance; a
# wrong gain already fails the forward check.
FIRST_UPDATE_RTOL = 10 * FORWARD_RTOL

# Several steps. The trajectories start bitwise-equal or within the first-update tolerance and drift
# apart through the loss's curvature: each step adds the rounding difference of its update, which moves
# the next losses by a small fraction of how much that update moved them. So the loss parts of step k
# may differ by a fraction of the path they travelled, sum_j |L_j+1 - L_j|, plus the forward tolerance
# (measured: at most 1.1e-3 of the path; 5e-2 leaves 45x for a busy machine, where the thread split of
# the CPU kernels may differ between the two runs). A bug of one step's kind (an lr twice as large, a
# momentum or weight decay gone) moves the losses by about the size of their first move, 5x and more
# this tolerance (checked below); a wrong gain already fails the first forward.
TRAJECTORY_FRACTION = 5e-2


def build_step(loss_fn, loss_scale, *, reference_layers=False):
    """A TrainStep over a fresh yolov5n (seed 0), its optimizer, static loss scale and EMA."""
    network = create_yolov5("yolov5n", NUM_CLASSES, seed=0)
    assert network.backbone.spp.chained
    if reference_layers:
        network.backbone.spp.chained = False             # the SPP's three max-pools side by side, as they were
    optimizer = step_lib.build_optimizer(network, momentum=0.9, weight_decay=5e-4)
    scale = step_lib.LossScale("static", loss_scale)
    train_step = step_lib.TrainStep(network, loss_fn, optimizer, scale, ModelEMA(network))
    train_step.set_train(True)
    return train_step


def trained_weights(train_step):
    """Copies of the network and EMA weights of a step cell."""
    return {p.name: p.asnumpy().copy() for p in train_step.get_parameters()
            if p.name.startswith(("backbone.", "neck.", "head.", "ema."))}


def train(loss_fn, loss_scale, *, reference_layers=False):
    """Loss parts of STEPS steps (float64 (STEPS, 4)), the weights after the first step, and the step cell.

    The parts of step 1 are one forward from the seed-0 weights; the weights after it are the first update.
    """
    train_step = build_step(loss_fn, loss_scale, reference_layers=reference_layers)
    batch = batch_columns()
    history, first_weights = [], None
    for _ in range(STEPS):
        parts, finite, _, _ = train_step(*batch, Tensor(np.float32(0.01)), Tensor(np.float32(0.0)))
        assert bool(finite.asnumpy())
        history.append(parts.asnumpy().astype(np.float64))
        first_weights = trained_weights(train_step) if first_weights is None else first_weights
    return np.array(history), first_weights, train_step


def with_box_gain_factor(parts, factor):
    """The loss parts a loss with its box gain multiplied by ``factor`` gives: the box part is linear in it."""
    loss, box, obj, cls = parts
    box = box * factor
    return np.array([(box + obj + cls) * BATCH, box, obj, cls])


def assert_first_update_agrees(got_weights, expected_weights):
    """Each tensor's first update (weights after step 1 minus the seed-0 weights) agrees to its rounding."""
    initial = {p.name: p.asnumpy() for p in create_yolov5("yolov5n", NUM_CLASSES, seed=0).get_parameters()}
    assert set(got_weights) == set(expected_weights)
    moved = 0
    for name, value in expected_weights.items():
        start = initial[name[len("ema."):] if name.startswith("ema.") else name]
        expected_update, got_update = value - start, got_weights[name] - start
        size = float(np.abs(expected_update).max())
        moved += size > 0
        weight_rounding = 2 * FLOAT32_UNIT_ROUNDOFF * (np.abs(start) + np.abs(value))
        tolerance = FIRST_UPDATE_RTOL * size + weight_rounding
        excess = np.abs(got_update - expected_update) - tolerance
        assert excess.max() <= 0, (name, size, float(np.abs(got_update - expected_update).max()))
    assert moved > 0.9 * len(expected_weights)           # the update reached (nearly) every tensor


@pytest.mark.slow
def test_same_seed_same_losses_as_the_reference_step(graph_mode, monkeypatch):
    with monkeypatch.context() as patched:
        patched.setattr(network_module, "upsample_nearest_2x", reference_upsample)
        patched.setattr(layers_module, "silu", reference_silu)
        expected, expected_weights, reference_step = train(
            ReferenceYoloLoss(NUM_CLASSES, training_shape=SIZE, target_gather="padded"), 64.0, reference_layers=True)
    assert reference_step.apply_gradients.check_gradients
    got, got_weights, new_step = train(YoloLoss(NUM_CLASSES, training_shape=SIZE), step_lib.default_loss_scale("O0"))
    assert not new_step.apply_gradients.check_gradients and new_step.forward_backward.loss_fn.target_gather == "compact"

    # one forward from the same weights: the loss parts agree to float32 rounding of their sums
    np.testing.assert_allclose(got[0], expected[0], rtol=FORWARD_RTOL, atol=0)
    # ... and the check can fail: a box gain 1% off lies outside 10x the tolerance, the weights one step on
    # outside 50x
    assert not np.allclose(with_box_gain_factor(expected[0], 1.01), expected[0], rtol=10 * FORWARD_RTOL, atol=0)
    assert not np.allclose(expected[1], expected[0], rtol=50 * FORWARD_RTOL, atol=0)

    # the first update from the same weights, network and EMA, tensor by tensor
    assert_first_update_agrees(got_weights, expected_weights)

    # a few steps: the losses agree to a small fraction of the way the updates moved them
    path = np.abs(np.diff(expected, axis=0)).sum(axis=0)
    assert (path > 20 * FORWARD_RTOL * np.abs(expected).max(axis=0)).all()   # the updates do move every part
    trajectory_tolerance = TRAJECTORY_FRACTION * path + FORWARD_RTOL * np.abs(expected).max(axis=0)
    assert (np.abs(got - expected) <= trajectory_tolerance).all(), (got - expected, trajectory_tolerance)
    # a step twice as large (a wrong lr) moves step 2's losses by about the size of its first move
    first_move = np.abs(expected[1] - expected[0])
    assert (first_move > 5 * trajectory_tolerance).any()
