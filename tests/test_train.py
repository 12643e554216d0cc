"""Training: schedules, configuration, checkpoints, EMA, and the loop end to end on a tiny dataset.

The end-to-end tests share two training runs to keep compilations few (each compiles yolov5n):
* ``interrupted_run``: tools/train.py in a subprocess on 2 images (1 step per epoch, augmentation off, so
  every step sees the same batch), checkpoint every step, profiler on; SIGTERM after 6 logged steps.
* ``resumed_run``: in this process, ``--resume`` from that run's checkpoint after 2 steps, with a hook
  that makes the targets of step 4 NaN.
"""
from __future__ import annotations

import logging
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import yaml

from yolodata.convert import convert_coco
from yolodata.manifest import load_manifest
from yolodata.synthetic import make_synthetic_coco
from yolomodel.checkpoint import loading
from yolomodel.train import checkpoint as ckpt_lib
from yolomodel.train import config as config_lib
from yolomodel.train import data as data_lib
from yolomodel.train import loop
from yolomodel.train import session as session_lib
from yolomodel.train.ema import ModelEMA, ema_decay
from yolomodel.train.lr_schedule import build_lr_schedule, parse_lr_epochs
from yolomodel.train.step import decay_parameter_groups

ROOT = Path(__file__).resolve().parents[1]
NO_AUGMENT = {"mosaic": 0.0, "translate": 0.0, "scale": 0.0, "fliplr": 0.0, "hsv_h": 0.0, "hsv_s": 0.0,
              "hsv_v": 0.0, "extras": 0.0}
LOG_LINE = re.compile(r"epoch\[(\d+)\], iter\[(\d+)\], loss:(\d+\.\d{6}), fps:\d+\.\d\d imgs/sec, lr:([0-9.e-]+), "
                      r"box:\d+\.\d{6}, obj:\d+\.\d{6}, cls:\d+\.\d{6}, data_wait:\d+\.\dms, step:\d+\.\dms$")
NAN_ITERATION = 4


# --- learning-rate schedules ----------------------------------------------------------------------

def reference_cosine(lr, steps_per_epoch, warmup_epochs, max_epoch, t_max, eta_min):
    """The reference's warmup_cosine_annealing_lr written out as a plain loop."""
    import math
    out = []
    warmup_steps = int(warmup_epochs * steps_per_epoch)
    for i in range(int(max_epoch * steps_per_epoch)):
        if i < warmup_steps:
            out.append(0.0 + (lr - 0.0) / warmup_steps * (i + 1))
        else:
            out.append(eta_min + (lr - eta_min) * (1.0 + math.cos(math.pi * (i // steps_per_epoch) / t_max)) / 2)
    return np.array(out).astype(np.float32)


def test_cosine_schedule_equals_the_reference_formula():
    got = build_lr_schedule(lr_scheduler="cosine_annealing", lr=0.02, steps_per_epoch=7, warmup_epochs=3,
                            max_epoch=40, t_max=32, eta_min=0.001)
    np.testing.assert_array_equal(got, reference_cosine(0.02, 7, 3, 40, 32, 0.001))
    assert got.dtype == np.float32 and got.shape == (280,)
    assert got[0] == np.float32(0.02 / 21) and got[20] == np.float32(0.02)   # warmup ends at lr
    assert len(set(got[21:28].tolist())) == 1                                 # constant within an epoch


def test_exponential_schedule_steps_down_at_the_milestones():
    got = build_lr_schedule(lr_scheduler="exponential", lr=0.1, steps_per_epoch=4, warmup_epochs=1,
                            max_epoch=10, lr_epochs="3,6", lr_gamma=0.5)
    np.testing.assert_allclose(got[:4], [0.025, 0.05, 0.075, 0.1], rtol=1e-6)
    np.testing.assert_allclose(got[4:12], 0.1, rtol=1e-6)
    np.testing.assert_allclose(got[12:24], 0.05, rtol=1e-6)
    np.testing.assert_allclose(got[24:], 0.025, rtol=1e-6)


def test_bad_schedule_arguments_are_explained():
    with pytest.raises(ValueError, match="lr_scheduler must be one of"):
        build_lr_schedule(lr_scheduler="step", lr=0.1, steps_per_epoch=1, warmup_epochs=0, max_epoch=1)
    with pytest.raises(ValueError, match="lr_epochs must be comma-separated"):
        parse_lr_epochs("220;250")
    with pytest.raises(ValueError, match="t_max"):
        build_lr_schedule(lr_scheduler="cosine_annealing", lr=0.1, steps_per_epoch=1, warmup_epochs=0,
                          max_epoch=1, t_max=0)


# --- configuration --------------------------------------------------------------------------------

def test_reference_defaults_and_all_reference_flags():
    args = config_lib.parse_config(["--mindrecord", "x"])
    assert (args.per_batch_size, args.lr, args.lr_epochs, args.lr_gamma, args.t_max, args.max_epoch) == \
        (8, 0.02, "220,250", 0.1, 320, 320)
    assert (args.warmup_epochs, args.weight_decay, args.momentum, args.log_interval) == (20, 0.0005, 0.9, 100)
    assert args.loss_scale is None          # resolved by precision: see test_default_loss_scale_follows_precision
    assert (args.lr_scheduler, args.ckpt_path, args.ckpt_interval, args.is_save_on_master) == \
        ("cosine_annealing", "outputs/", None, 1)
    assert (args.device_target, args.resize_rate, args.training_shape, args.label_smooth_factor) == \
        ("CPU", 10, "", 0.1)
    assert config_lib.training_shape_of(args) == (640, 10)        # empty: multi-scale up to 640
    flags = ("data_dir per_batch_size pretrained_backbone resume_yolov5 lr_scheduler lr lr_epochs lr_gamma eta_min "
             "t_max max_epoch warmup_epochs weight_decay momentum loss_scale label_smooth label_smooth_factor "
             "log_interval ckpt_path ckpt_interval is_save_on_master is_distributed rank group_size need_profiler "
             "training_shape resize_rate yolov5_version device_target mindrecord val_mindrecord seed "
             "num_parallel_workers resume config").split()
    options = {opt for action in config_lib.build_parser()._actions for opt in action.option_strings}
    assert {f"--{flag}" for flag in flags} <= options


def test_yaml_sets_options_and_the_command_line_overrides_it(tmp_path, caplog):
    config_file = tmp_path / "train.yaml"
    config_file.write_text(yaml.safe_dump({"lr": 0.005, "per_batch_size": 4, "training_shape": 320,
                                           "augment": {"mosaic": 0.5}, "enable_modelarts": False}))
    with caplog.at_level(logging.WARNING):
        args = config_lib.parse_config(["--config", str(config_file), "--mindrecord", "x", "--per_batch_size", "2"],
                                       log=logging.getLogger("t").warning)
    assert (args.lr, args.per_batch_size, args.training_shape, args.augment) == (0.005, 2, "320", {"mosaic": 0.5})
    assert config_lib.training_shape_of(args) == (320, 0)        # a fixed shape turns multi-scale off
    assert "enable_modelarts" in caplog.text                     # unknown keys are reported, not silently used
    saved = config_lib.save_config(args, tmp_path / "run")
    again = config_lib.parse_config(["--config", str(saved)])
    assert vars(again) | {"config": ""} == vars(args) | {"config": ""}


@pytest.mark.parametrize("argv, message", [
    (["--mindrecord", "x", "--per_batch_size", "0"], "per_batch_size must be at least 1"),
    ([], "pass --mindrecord DIR"),
    (["--mindrecord", "x", "--resume", "a.ckpt", "--resume_yolov5", "b.ckpt"], "pass only one of them"),
])
def test_bad_configuration_is_explained(argv, message):
    with pytest.raises(ValueError, match=message):
        config_lib.parse_config(argv)


def test_bad_yaml_value_names_the_option(tmp_path):
    config_file = tmp_path / "bad.yaml"
    config_file.write_text("lr_scheduler: step\n")
    with pytest.raises(ValueError, match="lr_scheduler must be one of"):
        config_lib.parse_config(["--config", str(config_file), "--mindrecord", "x"])
    with pytest.raises(SystemExit):
        config_lib.parse_config(["--mindrecord", "x", "--training_shape", "100"])
    config_file.write_text(yaml.safe_dump({"augment": {"mosiac": 0.5}}))
    with pytest.raises(ValueError, match="augment: unknown augmentation option"):
        config_lib.parse_config(["--config", str(config_file), "--mindrecord", "x"])


# --- small pieces ---------------------------------------------------------------------------------

def test_default_loss_scale_follows_precision():
    from yolomodel.train import step as step_lib

    assert step_lib.default_loss_scale("O0") == 1.0                       # float32: CPU, GPU
    assert step_lib.default_loss_scale("O2") == 64.0                      # Ascend's mixed precision
    assert step_lib.default_loss_scale("O0", "dynamic") == 64.0
    with pytest.raises(ValueError, match="resolved"):
        step_lib.default_loss_scale("auto")
    with pytest.raises(ValueError, match="--loss_scale must be at least 1"):
        config_lib.parse_config(["--mindrecord", "x", "--loss_scale", "0.5"])


def test_log_line_has_the_reference_format():
    line = loop.log_line(0, 600, [296.308071, 1.5, 2.25, 3.0], 44.444, np.float32(0.00010661844862625003))
    assert line == ("epoch[0], iter[600], loss:296.308071, fps:44.44 imgs/sec, lr:0.00010661844862625003, "
                    "box:1.500000, obj:2.250000, cls:3.000000")
    timed = loop.log_line(0, 600, [296.308071, 1.5, 2.25, 3.0], 44.444, np.float32(1e-4), (12.34, 701.25))
    assert timed.endswith("cls:3.000000, data_wait:12.3ms, step:701.2ms")


def test_weight_decay_only_on_conv_weights():
    from yolomodel.network import create_yolov5

    net = create_yolov5("yolov5n", 3)
    decayed, plain = decay_parameter_groups(net.trainable_params(), 5e-4)
    assert decayed["weight_decay"] == 5e-4 and plain["weight_decay"] == 0.0
    assert all(p.name.endswith(".weight") and len(p.shape) == 4 for p in decayed["params"])
    assert all(p.name.endswith((".gamma", ".beta", ".bias")) for p in plain["params"])
    assert len(decayed["params"]) + len(plain["params"]) == len(net.trainable_params())


def test_ema_follows_yolov5s_ramp():
    import mindspore as ms
    from mindspore import nn

    assert ema_decay(1) == pytest.approx(0.9999 * (1 - np.exp(-1 / 2000)))
    assert ema_decay(100000) == pytest.approx(0.9999, abs=1e-9)
    net = nn.Dense(3, 2)
    ema = ModelEMA(net)
    assert [p.name for p in ema.ema_params] == ["ema.weight", "ema.bias"]
    start = net.weight.asnumpy().copy()
    net.weight.set_data(ms.Tensor(start + 1.0))
    ema()
    d = ema_decay(1)
    np.testing.assert_allclose(ema.ema_params[0].asnumpy(), d * start + (1 - d) * (start + 1.0), rtol=1e-6)
    assert int(ema.updates.asnumpy()) == 1


class TinyDetector:
    """A stand-in network with the YOLOv5 output contract: three (B, 3*H*W, 5 + C) raw outputs."""

    @staticmethod
    def build(num_classes=2):
        import mindspore as ms
        from mindspore import nn, ops

        class Net(nn.Cell):
            def __init__(self):
                super().__init__()
                self.conv = nn.Conv2d(3, 8, 3, stride=8, has_bias=False)
                self.bn = nn.BatchNorm2d(8)
                self.head = nn.Conv2d(8, 3 * (5 + num_classes), 1, has_bias=True)

            def construct(self, images):
                x = images.astype(ms.float32).transpose(0, 3, 1, 2) / 255.0
                y = self.head(ops.silu(self.bn(self.conv(x))))
                b, _, h, w = y.shape
                # (B, 3*(5+C), H, W) -> (B, 3*H*W, 5+C)
                out = y.reshape(b, 3, 5 + num_classes, h * w).transpose(0, 1, 3, 2)
                out = out.reshape(b, 3 * h * w, 5 + num_classes)
                return out, out, out

        class Loss(nn.Cell):
            def construct(self, outputs, ti8, tv8, ti16, tv16, ti32, tv32):
                box = ((outputs[0][:, :, :4] - tv8[:, :1, :4]) ** 2).mean()
                obj = ops.abs(outputs[1][:, :, 4] - 1.0).mean()
                cls = (outputs[2][:, :, 5:] ** 2).mean()
                return box + obj + cls, box, obj, cls

        return Net(), Loss()


@pytest.mark.slow
@pytest.mark.parametrize("loss_scale_type, loss_scale", [("static", 64.0), ("dynamic", 64.0), ("static", 1.0)])
def test_step_applies_finite_updates_and_skips_non_finite_ones(loss_scale_type, loss_scale):
    import mindspore as ms
    from mindspore import Tensor

    from yolomodel.train import step as step_lib

    ms.set_context(mode=ms.GRAPH_MODE)
    net, loss_fn = TinyDetector.build()
    optimizer = step_lib.build_optimizer(net, momentum=0.9, weight_decay=5e-4)
    scale = step_lib.LossScale(loss_scale_type, loss_scale)
    ema = ModelEMA(net)
    train_step = step_lib.TrainStep(net, loss_fn, optimizer, scale, ema)
    train_step.set_train(True)
    rng = np.random.default_rng(0)
    images = Tensor(rng.integers(0, 256, (2, 32, 32, 3), dtype=np.uint8))
    indices = Tensor(np.zeros((2, 4), np.int32))
    values = np.ones((2, 4, 6), np.float32)

    def run(target_values):
        tv = Tensor(target_values)
        return train_step(images, indices, tv, indices, tv, indices, tv, Tensor(np.float32(0.05)),
                          Tensor(np.float32(0.0)))

    def state():
        return {p.name: p.asnumpy().copy() for p in train_step.get_parameters() if p.name != "learning_rate"}

    before = state()
    parts, finite, used_scale, votes = run(values)
    after = state()
    assert bool(finite.asnumpy()) and float(used_scale.asnumpy()) == loss_scale and float(votes.asnumpy()) == 0.0
    # a unit scale skips the unscale and the gradient sweep; the loss is still checked
    assert train_step.apply_gradients.check_gradients == (loss_scale != 1.0)
    assert not np.array_equal(before["head.weight"], after["head.weight"])
    assert int(after["ema_updates"]) == 1 and float(optimizer.learning_rate.asnumpy()) == pytest.approx(0.05)
    parts, finite, _, _ = run(np.full_like(values, np.nan))
    skipped = state()
    assert not bool(finite.asnumpy()) and not np.isfinite(parts.asnumpy()[0])
    changed = [n for n in after if n != "loss_scale" and "iterator_step" not in n
               and "moving_" not in n and not np.array_equal(after[n], skipped[n], equal_nan=True)]
    assert not changed                                     # weights, moments, EMA, step counters untouched
    assert float(skipped["loss_scale"]) == (32.0 if loss_scale_type == "dynamic" else loss_scale)


# --- data_dir conversion --------------------------------------------------------------------------

def test_data_dir_is_converted_once_and_reused(tmp_path):
    synthetic = make_synthetic_coco(tmp_path / "syn", num_images=6, seed=4, image_size=(64, 80), val_fraction=0.34)
    coco = tmp_path / "coco"
    (coco / "annotations").mkdir(parents=True)
    shutil.copytree(synthetic.image_dir, coco / "train2017")
    shutil.copytree(synthetic.image_dir, coco / "val2017")
    shutil.copy(synthetic.train_json, coco / "annotations" / "instances_train2017.json")
    shutil.copy(synthetic.val_json, coco / "annotations" / "instances_val2017.json")
    args = config_lib.parse_config(["--data_dir", str(coco)])
    messages = []
    data_lib.resolve_training_data(args, log=messages.append)
    assert args.mindrecord == str(coco / "mindrecord" / "train2017")
    assert args.val_mindrecord == str(coco / "mindrecord" / "val2017")
    assert load_manifest(args.mindrecord).num_images == synthetic.num_train
    assert any("MindRecord shard(s) in " + args.mindrecord in m for m in messages)
    again = config_lib.parse_config(["--data_dir", str(coco)])
    messages.clear()
    data_lib.resolve_training_data(again, log=messages.append)
    assert again.mindrecord == args.mindrecord and any("already converted" in m for m in messages)
    with pytest.raises(ValueError, match="must hold train2017/"):
        data_lib.resolve_training_data(config_lib.parse_config(["--data_dir", str(tmp_path / "syn")]))


# --- training end to end --------------------------------------------------------------------------

@pytest.fixture(scope="module")
def tiny_shards(tmp_path_factory):
    root = tmp_path_factory.mktemp("train_data")
    synthetic = make_synthetic_coco(root / "syn", num_images=3, seed=2, image_size=(96, 128), val_fraction=0.34,
                                    background_fraction=0.0)
    out = root / "shards"
    convert_coco(synthetic.image_dir, synthetic.train_json, out, shard_num=1)
    config_file = root / "no_augment.yaml"
    config_file.write_text(yaml.safe_dump({"augment": NO_AUGMENT, "max_boxes": 16}))
    return out, config_file


def _common_flags(shards, config_file):
    return ["--config", str(config_file), "--mindrecord", str(shards), "--yolov5_version", "yolov5n",
            "--training_shape", "64", "--per_batch_size", "2", "--max_epoch", "100", "--warmup_epochs", "0",
            "--lr", "0.0001", "--log_interval", "1", "--ckpt_interval", "1", "--keep_checkpoint_max", "1000",
            "--num_parallel_workers", "1"]


@pytest.fixture(scope="module")
def interrupted_run(tiny_shards, tmp_path_factory):
    shards, config_file = tiny_shards
    run_dir = tmp_path_factory.mktemp("interrupted")
    argv = [sys.executable, str(ROOT / "tools" / "train.py"), *_common_flags(shards, config_file),
            "--ckpt_path", str(run_dir), "--need_profiler", "1", "--profiler_steps", "1000"]
    process = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, cwd=ROOT)
    lines, deadline = [], time.monotonic() + 400
    try:
        for line in process.stdout:
            lines.append(line.rstrip("\n"))
            if "iter[5]," in line:
                process.send_signal(signal.SIGTERM)
                break
            assert time.monotonic() < deadline, "training did not reach 6 steps:\n" + "\n".join(lines[-30:])
        rest, _ = process.communicate(timeout=200)
    finally:
        if process.poll() is None:
            process.kill()
    lines += rest.splitlines()
    return run_dir, process.returncode, lines


@pytest.mark.slow
def test_log_lines_and_loss_goes_down_on_a_repeated_batch(interrupted_run):
    _, _, lines = interrupted_run
    matches = [LOG_LINE.search(line) for line in lines if "iter[" in line]
    assert matches and all(matches), [line for line in lines if "iter[" in line]
    losses = [float(m.group(3)) for m in matches]
    assert [int(m.group(2)) for m in matches] == list(range(len(matches)))
    assert len(losses) >= 6
    # augmentation off and 1 step per epoch: every step sees the same two images
    assert losses[5] < losses[0] * 0.99, losses


@pytest.mark.slow
def test_sigterm_saves_a_checkpoint_and_exits(interrupted_run):
    run_dir, returncode, lines = interrupted_run
    assert returncode == 128 + signal.SIGTERM, "\n".join(lines[-20:])
    assert any("received SIGTERM" in line for line in lines)
    summary = [line for line in lines if "training interrupted:" in line]
    assert summary, "\n".join(lines[-20:])
    steps = int(re.search(r"\((\d+) steps in all\)", summary[0]).group(1))
    assert steps >= 6
    final = run_dir / "ckpt_0" / f"0-{steps}_1.ckpt"
    _, metadata = ckpt_lib.read_checkpoint(final)
    assert (metadata["epoch"], metadata["step"], metadata["steps_completed"]) == (steps, 0, steps)
    assert not list((run_dir / "ckpt_0").glob(".*tmp*"))


@pytest.mark.slow
def test_checkpoint_layout(interrupted_run, tiny_shards):
    run_dir, _, _ = interrupted_run
    params, metadata = ckpt_lib.read_checkpoint(run_dir / "ckpt_0" / "0-2_1.ckpt")
    assert metadata["format"] == ckpt_lib.CHECKPOINT_FORMAT
    assert metadata["dataset_id"] == load_manifest(tiny_shards[0]).dataset_id
    assert (metadata["yolov5_version"], metadata["num_classes"], metadata["training_shape"],
            metadata["global_batch_size"], metadata["seed"]) == ("yolov5n", 5, 64, 2, 0)
    weights = {n for n in params if n.split(".")[0] in ("backbone", "neck", "head")}
    assert weights and {f"ema.{n}" for n in weights} <= set(params)
    assert "ema_updates" in params and "global_step" in params and "loss_scale" in params
    trainable = {n for n in weights if "moving_" not in n}
    assert {f"moments.{n}" for n in trainable} <= set(params)
    assert int(params["ema_updates"].asnumpy()) == 2
    saved = yaml.safe_load((run_dir / "config.yaml").read_text())
    assert saved["lr"] == 0.0001 and saved["augment"] == NO_AUGMENT


@pytest.mark.slow
def test_profiler_wrote_a_trace(interrupted_run):
    run_dir, _, lines = interrupted_run
    assert any("MindSpore profile" in line and "profiler_rank0" in line for line in lines)
    assert list((run_dir / "profiler_rank0").rglob("trace_view.json"))


@pytest.fixture(scope="module")
def resumed_run(interrupted_run, tiny_shards, tmp_path_factory):
    from yolomodel.cli import train as train_cli

    run_dir, _, _ = interrupted_run
    shards, config_file = tiny_shards
    resumed_dir = tmp_path_factory.mktemp("resumed")
    seen = []

    def poison(iteration, columns):
        seen.append(iteration)
        if iteration == NAN_ITERATION:
            values = columns[4].copy()                       # target_values_s8 (B, K, 6)
            values[values[..., 5] > 0, :4] = np.nan          # the box targets of the valid entries
            columns[4] = values
        return columns

    records = []
    handler = logging.Handler()
    handler.emit = records.append
    logging.getLogger().addHandler(handler)
    try:
        code = train_cli.main([*_common_flags(shards, config_file), "--ckpt_path", str(resumed_dir),
                                "--resume", str(run_dir / "ckpt_0" / "0-2_1.ckpt")], batch_hook=poison)
    finally:
        logging.getLogger().removeHandler(handler)
    return resumed_dir, code, [r.getMessage() for r in records], seen


@pytest.mark.slow
def test_resume_continues_exactly(interrupted_run, resumed_run):
    run_dir, _, _ = interrupted_run
    resumed_dir, _, _, seen = resumed_run
    assert seen[0] == 2                                     # continued at the saved position
    uninterrupted, meta_a = ckpt_lib.read_checkpoint(run_dir / "ckpt_0" / "0-4_1.ckpt")
    resumed, meta_b = ckpt_lib.read_checkpoint(resumed_dir / "ckpt_0" / "0-4_1.ckpt")
    assert meta_a == meta_b
    assert sorted(uninterrupted) == sorted(resumed)
    different = [n for n in uninterrupted if not np.array_equal(uninterrupted[n].asnumpy(), resumed[n].asnumpy())]
    assert not different, different[:5]


@pytest.mark.slow
def test_nan_loss_stops_and_keeps_the_last_good_checkpoint(resumed_run):
    resumed_dir, code, messages, seen = resumed_run
    assert code == 1 and seen[-1] == NAN_ITERATION
    error = [m for m in messages if "training stopped at" in m]
    assert error and "the loss became nan" in error[0]
    last_good = resumed_dir / "ckpt_0" / "last.ckpt"      # written after the periodic one of the same step
    assert f"the last good checkpoint is {last_good}" in error[0]
    np.testing.assert_array_equal(ckpt_lib.read_checkpoint(last_good)[0]["ema_updates"].asnumpy(),
                                  ckpt_lib.read_checkpoint(resumed_dir / "ckpt_0" / f"0-{NAN_ITERATION}_1.ckpt")[0]
                                  ["ema_updates"].asnumpy())
    # no validation: best.ckpt follows the latest epoch, as in YOLOv5; no final weights files after a failure
    assert sorted(p.name for p in (resumed_dir / "ckpt_0").iterdir()) == ["0-3_1.ckpt", "0-4_1.ckpt", "best.ckpt",
                                                                           "last.ckpt"]
    params, _ = ckpt_lib.read_checkpoint(last_good)
    assert all(np.isfinite(p.asnumpy()).all() for p in params.values())


@pytest.mark.slow
def test_finetune_with_other_classes_skips_heads_and_says_so(interrupted_run):
    from yolomodel.network import create_yolov5

    run_dir, _, _ = interrupted_run
    path = run_dir / "ckpt_0" / "0-2_1.ckpt"
    params, _ = ckpt_lib.read_checkpoint(path)
    net = create_yolov5("yolov5n", 3, seed=9)
    head_before = {p.name: p.asnumpy().copy() for p in net.get_parameters() if p.name.startswith("head.")}
    messages = []
    report = loading.load_finetune_weights(net, path, 3, log=messages.append)
    assert report["skipped_heads"] and report["ema"]
    assert any("head.*" in m and "NOT" in m for m in messages)
    for p in net.get_parameters():
        if p.name.startswith("head."):
            np.testing.assert_array_equal(p.asnumpy(), head_before[p.name])
        else:
            np.testing.assert_array_equal(p.asnumpy(), params[f"ema.{p.name}"].asnumpy())
    backbone_only = create_yolov5("yolov5n", 5, seed=9)
    loaded = loading.load_pretrained_backbone(backbone_only, path, log=messages.append)
    assert loaded and all(name.startswith("backbone.") for name in loaded)
    with pytest.raises(ValueError, match="another model size"):
        loading.load_finetune_weights(create_yolov5("yolov5s", 5), path, 5)


@pytest.mark.slow
def test_resume_against_other_batch_size_is_refused(interrupted_run, tiny_shards, tmp_path):
    run_dir, _, _ = interrupted_run
    shards, config_file = tiny_shards
    args = config_lib.parse_config([*_common_flags(shards, config_file), "--per_batch_size", "1",
                                    "--ckpt_path", str(tmp_path), "--resume", str(run_dir / "ckpt_0" / "0-2_1.ckpt")])
    with pytest.raises(ValueError, match="global batch of 2 images"):
        session_lib.prepare(args, 0, 1)


@pytest.mark.slow
def test_fresh_run_refuses_a_folder_with_checkpoints(interrupted_run, tiny_shards):
    run_dir, _, _ = interrupted_run
    shards, config_file = tiny_shards
    args = config_lib.parse_config([*_common_flags(shards, config_file), "--ckpt_path", str(run_dir)])
    with pytest.raises(ValueError, match="already holds checkpoints"):
        session_lib.prepare(args, 0, 1)
