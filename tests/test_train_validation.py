"""Validation during training: the numbers yolo-eval gives, best/last checkpoints, results.csv, patience, resume.

Two real runs of yolov5n (64 px, 8 train and 4 val synthetic images, 3 epochs of 4 steps, validation
after every epoch): one uninterrupted (tests/conftest.py's session fixture, which test_checkpoint_policy.py
shares), one interrupted by SIGTERM in the middle of epoch 2 and resumed into the same folder. A third run replaces the evaluation by a scripted
fitness sequence to check early stopping without evaluating.
"""
from __future__ import annotations

import csv
import os
import signal

import numpy as np
import pytest

from yolodata.manifest import load_manifest
from yolomodel import class_report
from yolomodel.checkpoint.loading import load_inference_net
from yolomodel.cli import train as train_cli
from yolomodel.evaluation import evaluate
from yolomodel.metrics import class_metrics
from yolomodel.nms import NmsOptions
from yolomodel.train import checkpoint as ckpt_lib
from yolomodel.train import results as results_lib
from yolomodel.train import run_report

from validation_runs import CONF_THRESH, FINAL_FILES, INTERRUPT_AT, TIME_COLUMNS, validation_train_argv

pytestmark = pytest.mark.slow  # trains and evaluates yolov5n



@pytest.fixture(scope="module")
def splits(validation_splits):
    return validation_splits


@pytest.fixture(scope="module")
def uninterrupted(uninterrupted_validation_run):
    return uninterrupted_validation_run


@pytest.fixture(scope="module")
def interrupted_and_resumed(splits, tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("resumed")

    def interrupt(iteration, columns):
        if iteration == INTERRUPT_AT:
            os.kill(os.getpid(), signal.SIGTERM)  # the loop finishes this step, saves and stops
        return columns

    status = train_cli.main(validation_train_argv(splits, run_dir, "--ckpt_interval", "1"), batch_hook=interrupt)
    assert status == 128 + signal.SIGTERM
    rows_before = results_lib.read_results(run_dir / "results.csv")
    saved = run_dir / "ckpt_0" / f"0-2_{INTERRUPT_AT + 1 - 4}.ckpt"
    assert train_cli.main(validation_train_argv(splits, run_dir, "--ckpt_interval", "1", "--resume", str(saved),
                                                "--val_compiled", "1")) == 0  # same numbers as op by op
    return run_dir, rows_before


def untimed(rows):
    return [{key: value for key, value in row.items() if key not in TIME_COLUMNS} for row in rows]


def test_validation_numbers_equal_yolo_eval_on_the_saved_checkpoint(uninterrupted, splits):
    from yolomodel.evaluation import evaluate
    from yolomodel.checkpoint.loading import load_inference_net
    from yolomodel.nms import NmsOptions

    rows = results_lib.read_results(uninterrupted / "results.csv")
    assert [row["epoch"] for row in rows] == [1, 2, 3]
    assert all(row["metrics/mAP_0.5"] is not None for row in rows)
    shards, _, _ = splits
    for epoch_number in (1, 3):
        checkpoint = uninterrupted / "ckpt_0" / f"0-{epoch_number}_4.ckpt"
        report = evaluate(load_inference_net(checkpoint).network, shards["val"], testing_shape=64, per_batch_size=2,
                          nms=NmsOptions(conf_thresh=CONF_THRESH))
        logged = [rows[epoch_number - 1][column] for column in results_lib.COCO_COLUMNS]
        assert logged == [float(v) for v in report.scores.stats], epoch_number
    # the comparison means something: the network detects some of the objects
    assert max(rows[-1]["metrics/AR_100"], rows[-1]["metrics/mAP_0.5"]) > 0


def test_best_and_last_checkpoints_and_curves(uninterrupted):
    rows = results_lib.read_results(uninterrupted / "results.csv")
    fitnesses = [row["fitness"] for row in rows]
    best_epoch = int(np.argmax(fitnesses)) + 1  # the first of equal fitnesses, as YOLOv5
    _, best = ckpt_lib.read_checkpoint(uninterrupted / "ckpt_0" / "best.ckpt")
    _, last = ckpt_lib.read_checkpoint(uninterrupted / "ckpt_0" / "last.ckpt")
    assert (best["epoch"], best["step"]) == (best_epoch, 0) and int(best["best_epoch"]) == best_epoch
    assert float(best["best_fitness"]) == max(fitnesses)
    assert (last["epoch"], last["step"]) == (3, 0)
    weights_best, _ = ckpt_lib.read_checkpoint(uninterrupted / "ckpt_0" / "best.ckpt")
    weights_periodic, _ = ckpt_lib.read_checkpoint(uninterrupted / "ckpt_0" / f"0-{best_epoch}_4.ckpt")
    assert all(np.array_equal(weights_best[n].asnumpy(), weights_periodic[n].asnumpy()) for n in weights_periodic)
    assert (uninterrupted / "results.png").stat().st_size > 10_000
    assert (uninterrupted / "log_rank0.txt").read_text().count("validation epoch ") == 3


def test_best_epoch_report_batch_pictures_and_the_last_table(uninterrupted, splits):
    with open(uninterrupted / results_lib.RESULTS_CSV, newline="") as handle:
        assert tuple(next(csv.reader(handle))) == results_lib.RESULTS_COLUMNS     # columns unchanged
    names = run_report.report_file_names()
    assert all((uninterrupted / name).stat().st_size > 0 for name in names), names
    # the report is the best epoch's: the per-class csv of yolo-eval's evaluation of that epoch's checkpoint
    rows = results_lib.read_results(uninterrupted / "results.csv")
    best_epoch = int(np.argmax([row["fitness"] for row in rows])) + 1
    shards, _, _ = splits
    manifest = load_manifest(shards["val"])
    report = evaluate(load_inference_net(uninterrupted / "ckpt_0" / f"0-{best_epoch}_4.ckpt").network, shards["val"],
                      testing_shape=64, per_batch_size=2, nms=NmsOptions(conf_thresh=CONF_THRESH), keep_evaluator=True)
    metrics = class_metrics(report.scores.evaluator, manifest.category_ids, manifest.class_names)
    assert (uninterrupted / class_report.PER_CLASS_CSV).read_bytes() == class_report.per_class_csv(metrics)
    log = (uninterrupted / "log_rank0.txt").read_text()
    assert log.count("per-class results of the last validation (epoch 3)") == 1
    # every validation logs the "all" row and the worst classes; the last one the whole table, once
    assert log.count("per-class results: P and R at confidence") == 3 and log.count("lowest AP@0.5:0.95") == 3
    assert sum(line.startswith(f"{manifest.class_names[0]} ") for line in log.splitlines()) == 1
    summary = log.split("training finished", 1)[1]
    assert all(name in summary for name in names)


def test_resumed_run_has_the_same_results_and_best_checkpoint(uninterrupted, interrupted_and_resumed):
    resumed_dir, rows_before = interrupted_and_resumed
    assert [row["epoch"] for row in rows_before] == [1]   # interrupted inside epoch 2
    expected = results_lib.read_results(uninterrupted / "results.csv")
    got = results_lib.read_results(resumed_dir / "results.csv")
    assert untimed(got) == untimed(expected)   # every epoch once, equal losses (epoch means) and mAPs
    for name in ("best.ckpt", "last.ckpt"):
        want, want_meta = ckpt_lib.read_checkpoint(uninterrupted / "ckpt_0" / name)
        have, have_meta = ckpt_lib.read_checkpoint(resumed_dir / "ckpt_0" / name)
        assert want_meta == have_meta, name
        assert sorted(want) == sorted(have)
        assert all(np.array_equal(want[n].asnumpy(), have[n].asnumpy()) for n in want), name


def test_patience_stops_on_a_scripted_fitness_sequence(splits, tmp_path, monkeypatch):
    from yolomodel import evaluation

    scripted = iter([0.30, 0.20, 0.10, 0.40])   # mAP@0.5:0.95 per validation; never better after the first

    def fake_evaluate(inference_net, mindrecord, **kwargs):
        stats = np.zeros(12)
        stats[0] = stats[1] = next(scripted)
        return evaluation.EvalReport(type("Scores", (), {"stats": stats, "text": "scripted"})(), 4, 0, None, 4)

    monkeypatch.setattr(evaluation, "evaluate", fake_evaluate)
    run_dir = tmp_path / "run"
    assert train_cli.main(validation_train_argv(splits, run_dir, "--max_epoch", "4", "--patience", "2")) == 0
    rows = results_lib.read_results(run_dir / "results.csv")
    assert [row["epoch"] for row in rows] == [1, 2, 3]   # stopped after 2 validations without improvement
    # the defaults to the end of training: no periodic checkpoint, no temporary file (for test_checkpoint_policy.py)
    assert sorted(p.name for p in (run_dir / "ckpt_0").iterdir()) == FINAL_FILES
    _, best = ckpt_lib.read_checkpoint(run_dir / "ckpt_0" / "best.ckpt")
    assert best["epoch"] == 1 and float(best["best_fitness"]) == pytest.approx(0.30)
    log = (run_dir / "log_rank0.txt").read_text()
    assert "stopping early" in log and "--patience 2" in log
