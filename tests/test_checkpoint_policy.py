"""The files a training run leaves (issue 27): last.ckpt and best.ckpt, periodic checkpoints only when asked
and capped, the small half-precision weights files every command reads, exact resume from last.ckpt, and the
anchors message."""
from __future__ import annotations

import argparse
import json
import os
import re
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from conftest import PROJECT_ROOT, shared_data_path
from yolodata.pipeline.targets import YOLOV5_ANCHORS
from yolomodel.checkpoint.format import WEIGHTS_DTYPE_KEY, WEIGHTS_FORMAT, save_weights_file
from yolomodel.checkpoint.loading import load_inference_net, read_weights
from yolomodel.cli import export as export_cli
from yolomodel.cli import train as train_cli
from yolomodel.network import create_yolov5
from yolomodel.train import checkpoint as ckpt_lib
from yolomodel.train import config as config_lib
from yolomodel.train import results as results_lib
from yolomodel.train.session import anchors_message, resolve_model

from validation_runs import FINAL_FILES, INTERRUPT_AT, TIME_COLUMNS, validation_train_argv

PERIODIC = re.compile(r"\d+-\d+_\d+\.ckpt")


# --- fast -------------------------------------------------------------------------------------------

def test_anchors_message_says_when_they_are_yolov5s_defaults():
    assert anchors_message(np.array(YOLOV5_ANCHORS), "--weights a.pt") == \
        "anchors from --weights a.pt: YOLOv5's default anchors"
    other = anchors_message(np.array(YOLOV5_ANCHORS) * 1.5, "--weights b.ckpt")
    assert "(not YOLOv5's defaults)" in other and "15.0, 19.5" in other


def test_real_coco_weights_are_reported_with_yolov5s_default_anchors():
    weights = shared_data_path("yolov5_pt", "yolov5n_v6.1_coco.pt")
    args = argparse.Namespace(resume="", resume_yolov5=str(weights), yolov5_version=None, yolov5_layout=None)
    messages = []
    resolve_model(args, None, messages.append)
    assert messages == [f"anchors from --weights {weights}: YOLOv5's default anchors"]


def test_checkpoint_flags_default_to_no_periodic_checkpoints_and_a_small_cap():
    args = config_lib.parse_config(["--mindrecord", "x"])
    assert (args.ckpt_interval, args.save_period, args.keep_checkpoint_max) == (None, -1, 5)
    with pytest.raises(ValueError, match="--save_period must be at least 1"):
        config_lib.parse_config(["--mindrecord", "x", "--save_period", "0"])


def test_half_precision_weights_file_reads_back_as_float32_and_loads(tmp_path):
    weights = {p.name: p.asnumpy() for p in create_yolov5("yolov5n", 3).get_parameters()}
    description = {"yolov5_version": "yolov5n", "yolov5_layout": "v5.0", "num_classes": 3}
    half = save_weights_file(tmp_path / "half.ckpt", weights, description)
    full = save_weights_file(tmp_path / "full.ckpt", weights, description, half=False)
    assert half.stat().st_size < 0.55 * full.stat().st_size
    read = read_weights(half)
    assert read.metadata["format"] == WEIGHTS_FORMAT and read.metadata[WEIGHTS_DTYPE_KEY] == "float16"
    assert sorted(read.weights) == sorted(weights)
    for name, value in weights.items():
        loaded = read.weights[name].asnumpy()
        assert loaded.dtype == np.float32, name
        np.testing.assert_array_equal(loaded, value.astype(np.float16).astype(np.float32), err_msg=name)
    loaded = load_inference_net(half)
    assert (loaded.version, loaded.num_classes) == ("yolov5n", 3) and "3 classes, weights from" in loaded.describe()


# --- a tiny training run with the defaults --------------------------------------------------------

@pytest.fixture(scope="module")
def splits(validation_splits):
    return validation_splits


@pytest.fixture(scope="module")
def default_run(uninterrupted_validation_run):
    """The defaults plus ``--save_period 1`` (tests/conftest.py's run, shared with test_train_validation.py;
    periodic checkpoints change no trained value). That the defaults alone write no periodic checkpoint is
    checked on the interrupted run below (after epoch 1) and on test_train_validation.py's patience run
    (the defaults to the end of training)."""
    return uninterrupted_validation_run


@pytest.fixture(scope="module")
def resumed_from_last(splits, tmp_path_factory):
    """Interrupted inside epoch 2 (SIGTERM: last.ckpt written after that step), then resumed from last.ckpt
    with periodic checkpoints every epoch capped at 1."""
    run_dir = tmp_path_factory.mktemp("resumed_from_last")

    def interrupt(iteration, columns):
        if iteration == INTERRUPT_AT:
            os.kill(os.getpid(), signal.SIGTERM)
        return columns

    assert train_cli.main(validation_train_argv(splits, run_dir), batch_hook=interrupt) == 128 + signal.SIGTERM
    after_stop = sorted(p.name for p in (run_dir / "ckpt_0").iterdir())
    last = run_dir / "ckpt_0" / "last.ckpt"
    position = ckpt_lib.train_state_from(ckpt_lib.read_checkpoint(last)[1], last)
    assert train_cli.main(validation_train_argv(splits, run_dir, "--resume", str(last), "--save_period", "1",
                                     "--keep_checkpoint_max", "1")) == 0
    return run_dir, after_stop, position


@pytest.mark.slow
def test_three_epochs_with_defaults_leave_last_best_and_the_small_weights_files(default_run):
    files = sorted(p.name for p in (default_run / "ckpt_0").iterdir())
    # besides the periodic checkpoints --save_period 1 asked for, the final files and no temporary file
    assert [name for name in files if not PERIODIC.fullmatch(name)] == FINAL_FILES
    assert [name for name in files if PERIODIC.fullmatch(name)] == ["0-1_4.ckpt", "0-2_4.ckpt", "0-3_4.ckpt"]
    last_params, last_meta = ckpt_lib.read_checkpoint(default_run / "ckpt_0" / "last.ckpt")
    assert ckpt_lib.train_state_from(last_meta, "last").epoch == 3
    weights = read_weights(default_run / "ckpt_0" / "last_weights.ckpt")
    assert weights.metadata[WEIGHTS_DTYPE_KEY] == "float16" and weights.metadata["num_classes"] == 5
    for name, value in weights.weights.items():     # last.ckpt's EMA weights, rounded to half precision
        expected = last_params["ema." + name].asnumpy().astype(np.float16).astype(np.float32)
        np.testing.assert_array_equal(value.asnumpy(), expected, err_msg=name)
    size = {name: (default_run / "ckpt_0" / name).stat().st_size for name in FINAL_FILES}
    assert size["last_weights.ckpt"] < 0.25 * size["last.ckpt"] and size["best_weights.ckpt"] < 0.25 * size["best.ckpt"]


@pytest.mark.slow
def test_best_ckpt_holds_what_resume_needs(default_run, splits, tmp_path):
    best = default_run / "ckpt_0" / "best.ckpt"
    state = ckpt_lib.train_state_from(ckpt_lib.read_checkpoint(best)[1], best)
    assert state.validation.best_epoch == state.epoch >= 1 and state.step == 0
    # resuming from it runs the remaining epochs
    assert train_cli.main(validation_train_argv(splits, tmp_path / "from_best", "--resume", str(best))) == 0
    rows = results_lib.read_results(tmp_path / "from_best" / "results.csv")
    assert [row["epoch"] for row in rows] == list(range(1, 4))


@pytest.mark.slow
def test_resume_from_last_ckpt_continues_exactly_and_periodic_checkpoints_are_capped(default_run, resumed_from_last):
    run_dir, after_stop, position = resumed_from_last
    assert after_stop == ["best.ckpt", "last.ckpt"]            # interrupted: no final weights files
    assert (position.epoch, position.step) == (1, INTERRUPT_AT + 1 - 4)
    files = sorted(p.name for p in (run_dir / "ckpt_0").iterdir())
    assert [name for name in files if PERIODIC.fullmatch(name)] == ["0-3_4.ckpt"]    # --keep_checkpoint_max 1
    assert [name for name in files if not PERIODIC.fullmatch(name)] == FINAL_FILES
    untimed = [{k: v for k, v in row.items() if k not in TIME_COLUMNS}
               for row in results_lib.read_results(run_dir / "results.csv")]
    assert untimed == [{k: v for k, v in row.items() if k not in TIME_COLUMNS}
                       for row in results_lib.read_results(default_run / "results.csv")]
    for name in ("last.ckpt", "best.ckpt"):
        want, want_meta = ckpt_lib.read_checkpoint(default_run / "ckpt_0" / name)
        have, have_meta = ckpt_lib.read_checkpoint(run_dir / "ckpt_0" / name)
        assert want_meta == have_meta and sorted(want) == sorted(have), name
        assert all(np.array_equal(want[n].asnumpy(), have[n].asnumpy()) for n in want), name


@pytest.mark.slow
def test_the_small_weights_file_works_in_eval_infer_and_export(default_run, splits, tmp_path, capsys):
    shards, _, synthetic = splits
    weights_file = default_run / "ckpt_0" / "best_weights.ckpt"
    done = subprocess.run([sys.executable, str(PROJECT_ROOT / "tools" / "eval.py"), "--mindrecord", str(shards["val"]),
                           "--pretrained", str(weights_file), "--testing_shape", "64", "--per_batch_size", "2",
                           "--num_parallel_workers", "1"], capture_output=True, text=True, cwd=PROJECT_ROOT,
                          timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "yolov5n, 5 classes, weights from" in done.stdout and "EMA weights of best.ckpt" in done.stdout
    assert len(re.findall(r"^ Average (?:Precision|Recall) .* = -?\d\.\d{3}$", done.stdout, re.M)) == 12
    done = subprocess.run([sys.executable, str(PROJECT_ROOT / "tools" / "infer.py"), "--pretrained", str(weights_file),
                           "--images", str(synthetic.image_dir), "--output_dir", str(tmp_path / "infer"),
                           "--testing_shape", "64", "--conf_thresh", "0.001"], capture_output=True, text=True,
                          cwd=PROJECT_ROOT, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    document = json.loads((tmp_path / "infer" / "detections.json").read_text())
    assert document["model"]["num_classes"] == 5 and len(document["images"]) == 12
    assert export_cli.main(["--ckpt_file", str(weights_file), "--file_format", "MINDIR", "--testing_shape", "64",
                            "--file_name", str(tmp_path / "model")]) == 0
    assert (tmp_path / "model.mindir").stat().st_size > 100_000
