"""Training from one seed gives the same losses and weights as the step before issue 15's changes.

The reference step is rebuilt here from the pieces as they were: the padded loss
(``test_loss_compact.ReferenceYoloLoss``), the ResizeNearestNeighbor upsample, the SiLU primitive, the
SPP's 5/9/13 max-pools side by side, and the reference's static loss scale 64 with its unscale and
gradient sweep. A power-of-two static scale
is exact in float32, so the two steps differ only by the rounding of reordered sums.
"""
from __future__ import annotations

import numpy as np
import pytest
from mindspore import Tensor, ops

import yolomodel.layers as layers_module
import yolomodel.network as network_module
from yolodata.pipeline.targets import STRIDES, build_targets
from yolodata.rng import keyed_rng
from yolomodel.network import create_yolov5
from yolomodel.train import step as step_lib
from yolomodel.train.ema import ModelEMA

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


def train(loss_fn, loss_scale, *, reference_layers=False):
    """Loss parts of STEPS steps and the final weights of a fresh yolov5n (seed 0)."""
    network = create_yolov5("yolov5n", NUM_CLASSES, seed=0)
    assert network.backbone.spp.chained
    if reference_layers:
        network.backbone.spp.chained = False             # the SPP's three max-pools side by side, as they were
    optimizer = step_lib.build_optimizer(network, momentum=0.9, weight_decay=5e-4)
    scale = step_lib.LossScale("static", loss_scale)
    train_step = step_lib.TrainStep(network, loss_fn, optimizer, scale, ModelEMA(network))
    train_step.set_train(True)
    batch = batch_columns()
    history = []
    for _ in range(STEPS):
        parts, finite, _, _ = train_step(*batch, Tensor(np.float32(0.01)), Tensor(np.float32(0.0)))
        assert bool(finite.asnumpy())
        history.append(parts.asnumpy().astype(np.float64))
    weights = {p.name: p.asnumpy().copy() for p in train_step.get_parameters()
               if p.name.startswith(("backbone.", "neck.", "head.", "ema."))}
    return np.array(history), weights, train_step


@pytest.mark.slow
def test_same_seed_same_losses_as_the_reference_step(graph_mode, monkeypatch):
    with monkeypatch.context() as patched:
        patched.setattr(network_module, "upsample_nearest_2x", reference_upsample)
        patched.setattr(layers_module, "silu", reference_silu)
        expected, expected_weights, reference_step = train(
            ReferenceYoloLoss(NUM_CLASSES, training_shape=SIZE, target_gather="padded"), 64.0, reference_layers=True)
    assert reference_step.apply_gradients.check_gradients
    got, got_weights, new_step = train(
        network_module_loss(), step_lib.default_loss_scale("O0"))
    assert not new_step.apply_gradients.check_gradients and new_step.forward_backward.loss_fn.target_gather == "compact"

    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-6)
    assert np.abs(np.diff(got[:, 0])).min() > 1e-4            # the updates change the loss: the check can fail
    # the weights moved by the same updates: the gradients agree to float32 rounding (the upsample's backward
    # sums each 2x2 block in another order), so the updates agree to a small fraction of their size
    initial = {p.name: p.asnumpy() for p in create_yolov5("yolov5n", NUM_CLASSES, seed=0).get_parameters()}
    assert set(got_weights) == set(expected_weights)
    moved = 0
    for name, value in expected_weights.items():
        start = initial[name[len("ema."):] if name.startswith("ema.") else name]
        expected_update, got_update = value - start, got_weights[name] - start
        size = float(np.abs(expected_update).max())
        moved += size > 0
        np.testing.assert_allclose(got_update, expected_update, rtol=0, atol=1e-6 + 2e-3 * size, err_msg=name)
    assert moved > 0.9 * len(expected_weights)


def network_module_loss():
    from yolomodel.loss import YoloLoss

    return YoloLoss(NUM_CLASSES, training_shape=SIZE)
