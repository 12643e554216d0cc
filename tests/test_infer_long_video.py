"""yolo-infer on a long video: frame records go to disk as they come, and detections.json still holds them all.

A synthetic MJPEG video of many tiny frames (a red square moving across 32 x 32 pixels) and the
stand-in network of ``detection_stand_ins`` (it finds the red square), so every record is known.
Memory cannot be measured in a test (``benchmarks/infer_memory.py`` prints peak RSS for N and 10N
frames); what is tested is what a user relies on: records are on disk while the run goes, a run that
dies leaves them readable, and the published json is what the in-memory layout held.
"""
from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest

from detection_stand_ins import rectangle_image, red_extent_predictor
from yolomodel.frame_log import FRAME_LOG_SUFFIX
from yolomodel.infer import (Detector, OutputOptions, Progress, detection_records, detections_document,
                             run_inference, write_detections_json)
from yolomodel.sources import VideoSource

SIDE = 32
NUM_FRAMES = 400
CLASS_NAMES = ["circle", "square", "cross"]


def square_box(index: int):
    """The red square of frame ``index``: 8 x 8 pixels, one pixel right a frame, wrapping every 24 frames."""
    left = index % 24
    return (left, 12, left + 8, 20)


def write_long_video(path: Path, num_frames: int = NUM_FRAMES) -> Path:
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 25.0, (SIDE, SIDE))
    assert writer.isOpened()
    for index in range(num_frames):
        writer.write(rectangle_image(SIDE, SIDE, square_box(index)))
    writer.release()
    return path


def detector() -> Detector:
    return Detector(red_extent_predictor(), SIDE, conf_thresh=0.25)


def frame_logs(output: Path) -> list[Path]:
    return sorted(output.glob(f".*{FRAME_LOG_SUFFIX}"))


class LogWatcher(Progress):
    """After every frame, counts the lines of the frame log on disk; ``fail_at``: raise after that many."""

    def __init__(self, output: Path, fail_at: int | None = None):
        self.output, self.fail_at = output, fail_at
        self.frames, self.lines_seen = 0, []

    def update(self, num_frames=1):
        self.frames += num_frames
        [log] = frame_logs(self.output)
        self.lines_seen.append(len(log.read_text(encoding="utf-8").splitlines()))
        if self.frames == self.fail_at:
            raise RuntimeError("the run dies here")


def in_memory_records(video: Path) -> list[dict]:
    """What the old layout kept in memory: one ``{"frame", "detections"}`` a frame, made frame by frame."""
    stand_in, capture, records = detector(), cv2.VideoCapture(str(video)), []
    while True:
        ok, image = capture.read()
        if not ok:
            break
        records.append({"frame": len(records),
                        "detections": detection_records(stand_in(image), CLASS_NAMES)})
    capture.release()
    return records


def test_frame_records_are_on_disk_while_running_and_the_json_holds_them_all(tmp_path):
    video, output = write_long_video(tmp_path / "long.avi"), tmp_path / "out"
    watcher = LogWatcher(output)
    report = run_inference([VideoSource(video, Path("long.avi"), "video")], detector(), output,
                           options=OutputOptions(save_drawn=False), class_names=CLASS_NAMES, progress=watcher)
    # each frame's record was on disk (flushed) before the next frame started
    assert watcher.lines_seen == list(range(1, NUM_FRAMES + 1))
    path = write_detections_json(detections_document(report, model={}, settings={}, class_names=CLASS_NAMES),
                                 output)
    text = path.read_text(encoding="utf-8")
    [entry] = json.loads(text)["videos"]
    expected = in_memory_records(video)
    assert len(expected) == NUM_FRAMES and entry["frames_processed"] == NUM_FRAMES
    assert entry["frames"] == expected
    np.testing.assert_allclose(entry["frames"][-1]["detections"][0]["bbox"], square_box(NUM_FRAMES - 1), atol=1)
    assert len(text.splitlines()) > NUM_FRAMES  # one frame a line: readable, never one giant line
    assert frame_logs(output) == []  # the log is removed once the json holds its records


def test_a_run_that_dies_leaves_the_frames_done_readable_and_marked_temporary(tmp_path):
    video, output = write_long_video(tmp_path / "long.avi", 60), tmp_path / "out"
    with pytest.raises(RuntimeError, match="dies"):
        run_inference([VideoSource(video, Path("long.avi"), "video")], detector(), output,
                      options=OutputOptions(save_drawn=False), class_names=CLASS_NAMES,
                      progress=LogWatcher(output, fail_at=25))
    [log] = frame_logs(output)
    assert log.name.startswith(".long.mp4.frames-")
    records = [json.loads(line) for line in log.read_text(encoding="utf-8").splitlines()]
    assert records == in_memory_records(video)[:25]
    assert not (output / "detections.json").exists()


def test_without_the_json_no_frame_log_is_written(tmp_path):
    video, output = write_long_video(tmp_path / "long.avi", 10), tmp_path / "out"
    report = run_inference([VideoSource(video, Path("long.avi"), "video")], detector(), output,
                           options=OutputOptions(save_json=False))
    [entry] = report.videos
    assert entry["frames_processed"] == 10 and "frames" not in entry
    assert frame_logs(output) == [] and not [p for p in output.iterdir() if p.name.startswith(".")]
