"""``--hyp``: YOLOv5 hyp files read with YOLOv5's meaning.

The schedule is checked against YOLOv5's train.py loop written out here as a simulation (its optimizer's
param_groups as dicts, np.interp in warmup, LambdaLR's epoch step, the ``ni - last_opt_step`` rule), for
the two published hyp files in ``tests/data/hyps`` (their numbers copied from YOLOv5's data/hyps).
"""
from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import yaml

from float32_tolerance import reordered_sum_rtol
from yolodata.augment.policy import AugmentConfig
from yolomodel.train import checkpoint as ckpt_lib
from yolomodel.train import config as config_lib
from yolomodel.train import hyp as hyp_lib
from yolomodel.train.yolov5_schedule import build_yolov5_schedule
from yolomodel.train.yolov5_step import yolov5_parameter_groups

HYPS = Path(__file__).resolve().parent / "data" / "hyps"
ROOT = Path(__file__).resolve().parents[1]


def hyp_values(name: str, **changes) -> dict:
    data = yaml.safe_load((HYPS / name).read_text())
    data.update(changes)
    values, _ = hyp_lib.resolve_hyp(data, name)
    return values


def yolov5_train_loop(hyp: dict, batch_size: int, nb: int, epochs: int, cos_lr: bool):
    """What YOLOv5's train.py sets per iteration: (lr of its 3 param groups, momentum, optimizer stepped), and
    the weight decay it gives the optimizer, simulated with its own state (param_groups, scheduler, accumulate)."""
    nbs = 64
    accumulate = max(round(nbs / batch_size), 1)
    weight_decay = hyp["weight_decay"] * batch_size * accumulate / nbs
    if cos_lr:
        def lf(x):
            return ((1 - math.cos(x * math.pi / epochs)) / 2) * (hyp["lrf"] - 1) + 1
    else:
        def lf(x):
            return (1 - x / epochs) * (1.0 - hyp["lrf"]) + hyp["lrf"]
    groups = [{"initial_lr": hyp["lr0"], "momentum": hyp["momentum"]} for _ in range(3)]
    for group in groups:                      # LambdaLR at construction: lr = initial_lr * lf(0)
        group["lr"] = group["initial_lr"] * lf(0)
    nw = max(round(hyp["warmup_epochs"] * nb), 100)
    last_opt_step = -1
    lrs, momenta, stepped = [], [], []
    for epoch in range(epochs):
        for i in range(nb):
            ni = i + nb * epoch
            if ni <= nw:
                xi = [0, nw]
                accumulate = max(1, np.interp(ni, xi, [1, nbs / batch_size]).round())
                for j, x in enumerate(groups):
                    x["lr"] = np.interp(ni, xi, [hyp["warmup_bias_lr"] if j == 0 else 0.0, x["initial_lr"] * lf(epoch)])
                    x["momentum"] = np.interp(ni, xi, [hyp["warmup_momentum"], hyp["momentum"]])
            lrs.append([x["lr"] for x in groups])
            momenta.append(groups[1]["momentum"])
            if ni - last_opt_step >= accumulate:
                last_opt_step = ni
                stepped.append(True)
            else:
                stepped.append(False)
        for x in groups:                      # scheduler.step()
            x["lr"] = x["initial_lr"] * lf(epoch + 1)
    return np.array(lrs), np.array(momenta), np.array(stepped), weight_decay


@pytest.mark.parametrize("name, batch_size, nb, epochs, cos_lr", [
    ("hyp.scratch-low.yaml", 16, 37, 12, False),     # warmup 111 iterations, ends mid-epoch; accumulate 4
    ("hyp.scratch-high.yaml", 8, 10, 15, True),      # warmup 100 iterations (> 3 epochs); accumulate 8
    ("hyp.scratch-low.yaml", 24, 9, 20, True),       # 64 / 24 = 2.67: accumulate 3, decay * 72/64
    ("hyp.scratch-high.yaml", 128, 5, 30, False),    # 64 / 128 rounds to 0: accumulate 1, decay * 2
])
def test_schedule_equals_yolov5_train_loop(name, batch_size, nb, epochs, cos_lr):
    hyp = hyp_values(name, mixup=0.0, copy_paste=0.0)
    schedule = build_yolov5_schedule(hyp, total_batch_size=batch_size, batches_per_epoch=nb, epochs=epochs,
                                     cos_lr=cos_lr)
    lrs, momenta, stepped, weight_decay = yolov5_train_loop(hyp, batch_size, nb, epochs, cos_lr)
    # float64 on both sides, the same operations up to their order: a few ulp
    np.testing.assert_allclose(schedule.lr, lrs, rtol=1e-12, atol=1e-15)
    np.testing.assert_allclose(schedule.momentum, momenta, rtol=1e-12)
    np.testing.assert_array_equal(schedule.optimizer_step, stepped)
    assert schedule.weight_decay == pytest.approx(weight_decay, rel=1e-12)
    # what the cases are there for
    assert not stepped.all() if batch_size < 43 else stepped.all()   # round(64 / 43) = 1
    assert lrs[0, 0] == hyp["warmup_bias_lr"] and lrs[0, 1] == 0.0


def test_nominal_batch_size_0_steps_every_batch_with_the_decay_as_given():
    hyp = hyp_values("hyp.scratch-low.yaml")
    schedule = build_yolov5_schedule(hyp, total_batch_size=8, batches_per_epoch=10, epochs=3, nominal_batch_size=0)
    accumulated = build_yolov5_schedule(hyp, total_batch_size=8, batches_per_epoch=10, epochs=3)
    assert schedule.optimizer_step.all() and schedule.weight_decay == hyp["weight_decay"]
    np.testing.assert_array_equal(schedule.lr, accumulated.lr)     # the learning rates do not depend on it
    assert not accumulated.optimizer_step.all()


def test_parameter_groups_are_yolov5s():
    from yolomodel.network import create_yolov5

    network = create_yolov5("yolov5s", 80, layout="v6.0")
    biases, weights, bn_weights = yolov5_parameter_groups(network.trainable_params(), 5e-4)
    # YOLOv5's smart_optimizer on yolov5s: "57 weight(decay=0.0), 60 weight(decay=0.0005), 60 bias"
    assert (len(bn_weights), len(weights), len(biases)) == (57, 60, 60)
    assert all(len(p.shape) == 4 for p in weights) and all(p.name.endswith("gamma") for p in bn_weights)


def test_flags_win_over_the_hyp_file_and_the_file_over_config(tmp_path):
    config = tmp_path / "own.yaml"
    config.write_text(yaml.safe_dump({"lr": 0.5, "momentum": 0.5, "augment": {"scale": 0.1, "extras": 0.0}}))
    messages = []
    args = config_lib.parse_config(["--config", str(config), "--hyp", str(HYPS / "hyp.scratch-low.yaml"),
                                    "--mindrecord", "x", "--weight_decay", "0.001"], log=messages.append)
    assert (args.lr, args.momentum, args.weight_decay, args.warmup_epochs) == (0.01, 0.937, 0.001, 3.0)
    assert args.hyp["weight_decay"] == 0.001 and args.hyp["lr0"] == 0.01       # the values in effect
    assert args.augment["scale"] == 0.5 and args.augment["extras"] == 0.0      # hyp over --config; others kept
    assert any("--weight_decay 0.001 given on the command line wins" in m for m in messages)
    assert hyp_lib.loss_options(args.hyp)["obj_gain"] == 1.0 and hyp_lib.anchor_t_of(args.hyp) == 4.0


def test_label_smoothing_and_missing_keys(tmp_path):
    partial = tmp_path / "hyp.partial.yaml"
    partial.write_text("lr0: 0.02\nlabel_smoothing: 0.1\nfl_gamma: 1.5\n")
    messages = []
    args = config_lib.parse_config(["--hyp", str(partial), "--mindrecord", "x"], log=messages.append)
    assert (args.lr, args.label_smooth, args.label_smooth_factor) == (0.02, 1, 0.1)
    assert args.hyp["lrf"] == 0.01 and args.hyp["fl_gamma"] == 1.5
    assert any("hyp.scratch-low values used: lrf, momentum" in m for m in messages)


@pytest.mark.parametrize("line, named", [
    ("copy_paste: 0.1", "copy_paste"), ("anchors: 3", "anchors"), ("lr_zero: 0.01", "lr_zero"),
    ("fliplr: 2.0", "fliplr"), ("anchor_t: 1.0", "anchor_t"), ("box: -1", "box"), ("lr0: 0", "lr0"),
])
def test_a_key_that_cannot_be_honoured_is_refused_by_name(tmp_path, line, named):
    hyp_file = tmp_path / "hyp.bad.yaml"
    hyp_file.write_text((HYPS / "hyp.scratch-low.yaml").read_text() + line + "\n")
    with pytest.raises(ValueError, match=rf"hyp\.bad\.yaml.*{named}"):
        config_lib.parse_config(["--hyp", str(hyp_file), "--mindrecord", "x"])


def test_mixup_reaches_the_augmentation(tmp_path):
    hyp_file = tmp_path / "hyp.mixup.yaml"
    hyp_file.write_text((HYPS / "hyp.scratch-low.yaml").read_text().replace("mixup: 0.0", "mixup: 0.25"))
    args = config_lib.parse_config(["--hyp", str(hyp_file), "--mindrecord", "x"])
    assert args.augment["mixup"] == 0.25
    assert AugmentConfig(**args.augment).mixup == 0.25


@pytest.mark.parametrize("flags, message", [
    (["--lr_scheduler", "exponential"], "--lr_scheduler configure this trainer's own schedule"),
    (["--t_max", "10"], "--t_max configure"),
])
def test_own_schedule_flags_are_refused_with_hyp(flags, message):
    with pytest.raises(ValueError, match=message):
        config_lib.parse_config(["--hyp", str(HYPS / "hyp.scratch-low.yaml"), "--mindrecord", "x", *flags])


def test_cos_lr_needs_hyp():
    with pytest.raises(ValueError, match="--cos_lr 1 chooses YOLOv5's cosine"):
        config_lib.parse_config(["--cos_lr", "1", "--mindrecord", "x"])


def test_config_yaml_records_the_values_in_effect_and_reads_them_back(tmp_path):
    hyp_file = tmp_path / "hyp.high-no-paste.yaml"
    hyp_file.write_text((HYPS / "hyp.scratch-high.yaml").read_text().replace("copy_paste: 0.1", "copy_paste: 0.0")
                        .replace("mixup: 0.1", "mixup: 0.0"))
    args = config_lib.parse_config(["--hyp", str(hyp_file), "--mindrecord", "x", "--lr", "0.003", "--cos_lr", "1"])
    config_lib.save_config(args, tmp_path)
    saved = yaml.safe_load((tmp_path / "config.yaml").read_text())
    assert saved["hyp"]["lr0"] == 0.003 and saved["hyp"]["obj"] == 0.7 and saved["hyp"]["scale"] == 0.9
    again = config_lib.parse_config(["--config", str(tmp_path / "config.yaml")])
    assert again.hyp == args.hyp and again.lr == 0.003 and again.cos_lr == 1 and again.augment == args.augment


def test_the_checkpoint_state_carries_the_hyp(tmp_path):
    values = hyp_values("hyp.scratch-low.yaml")
    state = ckpt_lib.TrainState(epoch=1, step=0, steps_completed=3, seed=0, dataset_id="d", yolov5_version="yolov5n",
                                num_classes=2, training_shape=64, global_batch_size=2,
                                hyp=hyp_lib.encode_hyp(values))
    from mindspore import Parameter, Tensor

    path = tmp_path / "s.ckpt"
    ckpt_lib.save_checkpoint_atomic(path, [Parameter(Tensor(np.zeros(2, np.float32)), name="w")], state.metadata())
    _, metadata = ckpt_lib.read_checkpoint(path)
    assert json.loads(ckpt_lib.train_state_from(metadata, path).hyp) == values


def test_the_shipped_hyp_finetune_file_is_yolov5s_and_accepted():
    args = config_lib.parse_config(["--hyp", str(ROOT / "configs" / "hyp.finetune.yaml"), "--mindrecord", "x"])
    assert (args.hyp["lr0"], args.hyp["lrf"], args.hyp["anchor_t"], args.hyp["obj_pw"]) == (0.0032, 0.12, 2.91, 0.911)
    assert args.augment["shear"] == 0.602


@pytest.mark.slow
def test_the_step_accumulates_then_applies_yolov5s_update(graph_mode):
    """Two batches accumulated (no update after the first), then one SGD step with the group lrs, momentum,
    weight decay and the gradient clipping, against the same update computed here in float64."""
    import mindspore as ms
    from mindspore import Tensor

    from test_train import TinyDetector
    from yolomodel.train import step as step_lib
    from yolomodel.train import yolov5_step
    from yolomodel.train.ema import ModelEMA

    net, loss_fn = TinyDetector.build()
    weight_decay, momentum, lrs = 0.01, 0.8, np.array([0.1, 0.05, 0.02], np.float32)
    optimizer, param_groups = yolov5_step.build_yolov5_optimizer(net, momentum=0.9, weight_decay=weight_decay)
    train_step = yolov5_step.Yolov5TrainStep(net, loss_fn, optimizer, param_groups, step_lib.LossScale("static", 1.0),
                                             ModelEMA(net), weight_decay=weight_decay)
    train_step.set_train(True)
    rng = np.random.default_rng(0)
    images = Tensor(rng.integers(0, 256, (2, 32, 32, 3), dtype=np.uint8))
    # box targets far from the outputs: gradients of a global norm above 10, so the clipping acts
    indices, values = Tensor(np.zeros((2, 4), np.int32)), Tensor((1000 * rng.random((2, 4, 6))).astype(np.float32))
    batch = (images, indices, values, indices, values, indices, values)
    _, grads = train_step.forward_backward(Tensor(np.float32(1.0)), *batch)
    grads = {p.name: g.asnumpy().astype(np.float64) for p, g in zip(optimizer.parameters, grads)}
    before = {p.name: p.asnumpy().astype(np.float64) for p in optimizer.parameters}

    def run(optimizer_step):
        return train_step(*batch, Tensor(lrs), Tensor(momentum, ms.float32), Tensor(optimizer_step, ms.bool_),
                          Tensor(np.float32(0.0)))

    run(False)
    for param, accumulated in zip(optimizer.parameters, train_step.apply_gradients.accumulated):
        np.testing.assert_array_equal(param.asnumpy(), before[param.name].astype(np.float32))   # not updated
        np.testing.assert_allclose(accumulated.asnumpy(), grads[param.name], rtol=1e-6, atol=1e-9)
    assert int(train_step.ema.updates.asnumpy()) == 0
    run(True)
    total = {name: 2.0 * g for name, g in grads.items()}
    norm = math.sqrt(sum(float((g * g).sum()) for g in total.values()))
    clip = min(1.0, 10.0 / (norm + 1e-6))
    group_of = {}
    for index, group in enumerate(yolov5_parameter_groups(optimizer.parameters, weight_decay)):
        group_of.update({p.name: index for p in group})
    for param in optimizer.parameters:
        index = group_of[param.name]
        decay = weight_decay if index == 1 else 0.0
        step = clip * total[param.name] + decay * before[param.name]
        expected = before[param.name] - float(lrs[index]) * (step + momentum * step)   # Nesterov, empty momentum
        tolerance = reordered_sum_rtol(sum(g.size for g in total.values()))
        np.testing.assert_allclose(param.asnumpy(), expected, rtol=tolerance, atol=tolerance * np.abs(expected).max(),
                                   err_msg=param.name)
    assert all(not a.asnumpy().any() for a in train_step.apply_gradients.accumulated)
    assert int(train_step.ema.updates.asnumpy()) == 1 and clip < 1.0


def _softplus(x):
    return np.logaddexp(0.0, x)


def test_bce_pos_weight_and_focal_loss_follow_yolov5s_criteria():
    from mindspore import Tensor

    from yolomodel.loss import bce_with_logits, weighted_bce_with_logits

    rng = np.random.default_rng(1)
    logits = rng.normal(0, 3, 500)
    targets = np.concatenate([rng.random(250), rng.integers(0, 2, 250)]).astype(np.float64)
    for pos_weight, gamma in ((1.0, 0.0), (2.5, 0.0), (1.0, 1.5), (0.631, 2.0)):
        # PyTorch's BCEWithLogitsLoss(pos_weight): -(pw * t * log(sigmoid(x)) + (1 - t) * log(1 - sigmoid(x)))
        expected = pos_weight * targets * _softplus(-logits) + (1 - targets) * _softplus(logits)
        if gamma:
            p = 1 / (1 + np.exp(-logits))
            p_t = targets * p + (1 - targets) * (1 - p)
            expected = expected * (targets * 0.25 + (1 - targets) * 0.75) * (1 - p_t) ** gamma
        result = weighted_bce_with_logits(Tensor(logits.astype(np.float32)), Tensor(targets.astype(np.float32)),
                                          pos_weight, gamma).asnumpy()
        np.testing.assert_allclose(result, expected, rtol=reordered_sum_rtol(1), atol=1e-6)
    default = bce_with_logits(Tensor(logits.astype(np.float32)), Tensor(targets.astype(np.float32))).asnumpy()
    np.testing.assert_array_equal(weighted_bce_with_logits(Tensor(logits.astype(np.float32)),
                                                           Tensor(targets.astype(np.float32))).asnumpy(), default)


def test_yolo_loss_takes_the_hyp_gains_and_focal_objectness():
    """A batch without targets: the loss is the objectness of every row against 0, so with focal loss it is
    sum over strides of balance * mean(bce(x, 0) * 0.75 * sigmoid(x) ** gamma) times the scaled obj gain."""
    from mindspore import Tensor

    from yolomodel.loss import YoloLoss

    rng = np.random.default_rng(2)
    num_classes, batch, shape = 3, 2, 64
    outputs = [rng.normal(-2, 2, (batch, 3 * (shape // s) ** 2, 5 + num_classes)).astype(np.float32)
               for s in (8, 16, 32)]
    targets = []
    for _ in range(3):
        targets += [Tensor(np.zeros((batch, 4), np.int32)), Tensor(np.zeros((batch, 4, 6), np.float32))]
    gamma, obj = 1.5, 0.7
    loss = YoloLoss(num_classes, training_shape=shape, obj_gain=obj, focal_gamma=gamma, obj_pos_weight=3.0,
                    cls_pos_weight=2.0)
    _, box, obj_part, cls = (float(v.asnumpy()) for v in loss(tuple(Tensor(o) for o in outputs), *targets))
    expected = 0.0
    for balance, output in zip((4.0, 1.0, 0.4), outputs):
        x = output[..., 4].astype(np.float64)
        expected += balance * (_softplus(x) * 0.75 * (1 / (1 + np.exp(-x))) ** gamma).mean()
    expected *= obj * (shape / 640) ** 2
    assert box == 0.0 and cls == 0.0
    assert obj_part == pytest.approx(expected, rel=reordered_sum_rtol(batch * 3 * 64))
    with pytest.raises(ValueError, match="focal_gamma"):
        YoloLoss(num_classes, focal_gamma=-1.0)


# --- a user's YOLOv5 recipe end to end: --hyp with the real COCO-pretrained yolov5n ------------------------

@pytest.fixture(scope="module")
def recipe_data(tmp_path_factory):
    from conftest import shared_data_path
    from yolodata.convert import convert_coco
    from yolodata.synthetic import make_synthetic_coco

    weights = shared_data_path("yolov5_pt", "yolov5n_v6.1_coco.pt")
    root = tmp_path_factory.mktemp("recipe")
    synthetic = make_synthetic_coco(root / "syn", num_images=6, seed=5, image_size=(96, 128), val_fraction=0.0,
                                    background_fraction=0.0)
    convert_coco(synthetic.image_dir, synthetic.train_json, root / "train", shard_num=1)
    return {"root": root, "train": root / "train", "weights": weights}


def recipe_flags(recipe_data, run_dir, *extra):
    # 6 images, batch 2: 3 iterations per epoch; YOLOv5's accumulation ramps from 1 towards 32 in the warmup,
    # so the optimizer steps after iterations 0, 1 and 3 and epoch 1 ends mid-accumulation (iteration 2)
    return ["--hyp", str(HYPS / "hyp.scratch-low.yaml"), "--weights", str(recipe_data["weights"]),
            "--mindrecord", str(recipe_data["train"]), "--training_shape", "64", "--per_batch_size", "2",
            "--max_epoch", "2", "--log_interval", "1", "--num_parallel_workers", "1", "--ckpt_path", str(run_dir),
            "--save_period", "1", *extra]


def run_train(argv):
    import logging

    from yolomodel.cli import train as train_cli

    records = []
    handler = logging.Handler()
    handler.emit = records.append
    logging.getLogger().addHandler(handler)
    try:
        code = train_cli.main(argv)
    finally:
        logging.getLogger().removeHandler(handler)
    return code, [r.getMessage() for r in records]


@pytest.fixture(scope="module")
def recipe_run(recipe_data):
    run_dir = recipe_data["root"] / "run"
    code, messages = run_train(recipe_flags(recipe_data, run_dir))
    return run_dir, code, messages


@pytest.mark.slow
def test_a_yolov5_recipe_runs_unchanged_and_is_recorded(recipe_run):
    run_dir, code, messages = recipe_run
    assert code == 0, messages[-5:]
    assert any(m.startswith("--hyp YOLOv5 hyperparameters in effect: schedule: lr0=0.01, lrf=0.01") for m in messages)
    assert any("YOLOv5 schedule: 100 warmup iterations, an optimizer step every 32 batch(es)" in m for m in messages)
    saved = yaml.safe_load((run_dir / "config.yaml").read_text())
    assert saved["hyp"] == hyp_values("hyp.scratch-low.yaml") and saved["lr"] == 0.01 and saved["momentum"] == 0.937
    params, metadata = ckpt_lib.read_checkpoint(run_dir / "ckpt_0" / "0-1_3.ckpt")
    assert json.loads(metadata["hyp"]) == saved["hyp"]
    # three optimizer steps in six iterations (after 0, 1, 3); the epoch-1 checkpoint holds a partial sum
    assert int(params["ema_updates"].asnumpy()) == 2
    assert any(params[n].asnumpy().any() for n in params if n.startswith("accumulated_grad."))
    final, _ = ckpt_lib.read_checkpoint(run_dir / "ckpt_0" / "0-2_3.ckpt")
    assert int(final["ema_updates"].asnumpy()) == 3
    steps = [m for m in messages if m.startswith("epoch[") and "iter[" in m]
    assert len(steps) == 6 and "lr:0.0" in steps[0]


@pytest.mark.slow
def test_resume_mid_accumulation_continues_exactly(recipe_data, recipe_run):
    run_dir, _, _ = recipe_run
    resumed_dir = recipe_data["root"] / "resumed"
    code, messages = run_train(recipe_flags(recipe_data, resumed_dir, "--weights", "", "--resume",
                                            str(run_dir / "ckpt_0" / "0-1_3.ckpt")))
    assert code == 0, messages[-5:]
    uninterrupted, meta_a = ckpt_lib.read_checkpoint(run_dir / "ckpt_0" / "0-2_3.ckpt")
    resumed, meta_b = ckpt_lib.read_checkpoint(resumed_dir / "ckpt_0" / "0-2_3.ckpt")
    assert meta_a == meta_b and sorted(uninterrupted) == sorted(resumed)
    different = [n for n in uninterrupted if not np.array_equal(uninterrupted[n].asnumpy(), resumed[n].asnumpy())]
    assert not different, different[:5]
