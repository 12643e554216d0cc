"""Validation bookkeeping: fitness, best/patience on a scripted fitness sequence, results.csv on resume."""
from __future__ import annotations

import math

import cv2
import pytest

from yolomodel.train import results


def stats_with(map50: float, map50_95: float) -> list[float]:
    stats = [0.0] * len(results.COCO_COLUMNS)
    stats[0], stats[1] = map50_95, map50
    return stats


def test_fitness_is_yolov5s_weighting():
    assert results.fitness(0.5, 0.3) == pytest.approx(0.1 * 0.5 + 0.9 * 0.3)


def test_best_and_patience_follow_a_scripted_fitness_sequence():
    sequence = [0.10, 0.20, 0.20, 0.15, 0.25, 0.24, 0.23, 0.22]
    state = results.ValidationState()
    bests, stops = [], []
    for epoch_number, value in enumerate(sequence, start=1):
        state, improved = state.update(value, epoch_number)
        bests.append(improved)
        stops.append(state.patience_exhausted(3))
    # an equal fitness is not an improvement (YOLOv5 keeps the first best)
    assert bests == [True, True, False, False, True, False, False, False]
    assert (state.best_fitness, state.best_epoch, state.evaluations_since_best) == (0.25, 5, 3)
    assert stops == [False] * 7 + [True]
    assert not state.patience_exhausted(0) and not state.patience_exhausted(None)


def test_state_survives_a_checkpoint_round_trip():
    state = results.ValidationState(0.42, 7, 2)
    assert results.ValidationState.from_metadata({**state.metadata(), "epoch": 9}) == state
    assert results.ValidationState.from_metadata({"epoch": 3}) == results.ValidationState()


def test_results_csv_has_one_row_per_epoch_even_after_a_resume(tmp_path):
    path = tmp_path / "results.csv"
    for epoch_number in (1, 2, 3):
        evaluated = epoch_number != 2
        results.write_results_row(path, results.results_row(
            epoch_number=epoch_number, losses=(0.1 * epoch_number, 0.2, 0.3), lr=0.01, epoch_seconds=10.0,
            images_per_second=5.0, coco_stats=stats_with(0.5, 0.3) if evaluated else None,
            val_seconds=2.0 if evaluated else None))
    # resumed from the checkpoint after epoch 1: epochs 2 and 3 run again and replace their rows
    for epoch_number in (2, 3):
        results.write_results_row(path, results.results_row(
            epoch_number=epoch_number, losses=(1.0, 1.0, 1.0), lr=0.02, epoch_seconds=9.0, images_per_second=6.0,
            coco_stats=stats_with(0.6, 0.4), val_seconds=1.0))
    rows = results.read_results(path)
    assert [row["epoch"] for row in rows] == [1, 2, 3]
    assert rows[0]["train/box_loss"] == pytest.approx(0.1) and rows[2]["train/box_loss"] == 1.0
    assert rows[1]["metrics/mAP_0.5"] == 0.6 and rows[1]["fitness"] == pytest.approx(results.fitness(0.6, 0.4))
    assert list(rows[0]) == list(results.RESULTS_COLUMNS)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["results.csv"]


def test_unevaluated_epochs_have_empty_metrics(tmp_path):
    path = tmp_path / "results.csv"
    results.write_results_row(path, results.results_row(epoch_number=1, losses=(1, 2, 3), lr=0.1,
                                                        epoch_seconds=1.0, images_per_second=float("nan")))
    row = results.read_results(path)[0]
    assert row["metrics/mAP_0.5"] is None and row["fitness"] is None and math.isnan(row["speed/images_per_s"])
    with pytest.raises(ValueError, match="12 numbers"):
        results.results_row(epoch_number=1, losses=(1, 2, 3), lr=0.1, epoch_seconds=1.0, images_per_second=1.0,
                            coco_stats=[0.5])


def test_results_png_is_drawn(tmp_path):
    rows = [results.results_row(epoch_number=e, losses=(1.0 / e, 0.5, 0.2), lr=0.01, epoch_seconds=1.0,
                                images_per_second=3.0, coco_stats=stats_with(0.1 * e, 0.05 * e), val_seconds=0.5)
            for e in (1, 2, 3)]
    path = results.plot_results(rows, tmp_path / "results.png")
    picture = cv2.imread(str(path))
    assert picture is not None and picture.shape == (600, 1200, 3)
