"""benchmarks/input_vs_device.py: table, Markdown and plot written; the figures agree with each other."""
from __future__ import annotations

import json
import os

import pytest

from benchmarks import input_vs_device
from yolodata.convert import convert_coco
from yolodata.synthetic import make_synthetic_coco


@pytest.fixture(scope="module")
def small_shards(tmp_path_factory):
    root = tmp_path_factory.mktemp("ivd")
    synthetic = make_synthetic_coco(root / "synthetic", num_images=24, seed=3, image_size=(120, 160),
                                    val_fraction=0.0)
    out = root / "mr"
    convert_coco(synthetic.image_dir, synthetic.train_json, out, shard_num=1)
    return out


def test_summary_figures_follow_from_the_measurements():
    summary = input_vs_device.summarise({1: 40.0, 2: 75.0}, device_fps=50.0)
    assert [row["headroom"] for row in summary["rows"]] == [0.8, 1.5]
    assert summary["fewest_workers_to_feed_one_device"] == 2
    assert summary["cores_per_device"] == 2       # 50 / 40 per worker, rounded up
    unfed = input_vs_device.summarise({1: 10.0}, device_fps=56.0)
    assert unfed["fewest_workers_to_feed_one_device"] is None
    assert unfed["cores_per_device"] == 6


def test_benchmark_writes_table_and_plot_for_one_and_two_workers(small_shards, tmp_path, capsys):
    max_workers = min(2, os.cpu_count() or 1)
    out = tmp_path / "bench"
    summary = input_vs_device.main([
        "--mindrecord", str(small_shards), "--training_shape", "96", "--per_batch_size", "4",
        "--max_workers", str(max_workers), "--device_fps", "56", "--max_batches", "3",
        "--warmup_batches", "1", "--output_dir", str(out)])
    assert [row["workers"] for row in summary["rows"]] == list(range(1, max_workers + 1))
    for row in summary["rows"]:
        assert row["input_images_per_s"] > 0
        assert row["headroom"] == pytest.approx(row["input_images_per_s"] / 56.0, abs=0.01)
    markdown = (out / "input_vs_device.md").read_text()
    data_rows = [line for line in markdown.splitlines() if line[:3].strip("| ").isdigit()]
    assert len(data_rows) == max_workers
    png = (out / "input_vs_device.png").read_bytes()
    assert png.startswith(b"\x89PNG") and len(png) > 5000
    saved = json.loads((out / "input_vs_device.json").read_text())
    assert saved["rows"] == summary["rows"]
    printed = capsys.readouterr().out
    assert "cores per device a host needs" in printed
    assert not list(out.glob("*.tmp*"))


def test_bad_max_workers_is_refused(small_shards, tmp_path):
    with pytest.raises(SystemExit) as exc:
        input_vs_device.main(["--mindrecord", str(small_shards), "--max_workers", "0",
                              "--device_fps", "10", "--output_dir", str(tmp_path)])
    assert exc.value.code == 2


@pytest.mark.slow
def test_device_fps_is_measured_with_the_train_step_benchmark():
    fps = input_vs_device.measure_device_fps("yolov5n", 64, 2, "CPU", 1)
    assert fps > 0
