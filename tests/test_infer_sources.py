"""yolo-infer's sources and outputs: list files, globs, folders, video files, an HTTP MJPEG stream from
127.0.0.1, cameras that do not exist, corrupt frames; YOLO label files, crops, drawn videos, the class filter.

The detection itself is the stand-in of ``detection_stand_ins`` (it finds the red rectangle), so every
label and every frame can be checked exactly; the command-line tests run a real (random) network.
"""
from __future__ import annotations

import http.server
import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import cv2
import numpy as np
import pytest

from detection_stand_ins import RED_BGR, rectangle_image, red_extent_predictor
from yolomodel.checkpoint.format import save_checkpoint_atomic
from yolomodel.network import create_yolov5
from yolomodel.infer import (DETECTIONS_NAME, Detector, InterruptsHeld, OutputOptions, Progress, detections_document,
                             keep_classes, run_inference, write_detections_json)
from yolomodel.outputs import crop_boxes, draw_detections, label_name, yolo_label_text
from yolomodel.sources import SourceError, VideoSource, find_sources

PROJECT_ROOT = Path(__file__).resolve().parents[1]
FRAME_HW = (96, 128)
NUM_FRAMES = 12
FPS = 10.0
BOUNDARY = "frameboundary"


def moving_box(index: int):
    """The red rectangle of frame ``index`` (x1, y1, x2, y2): 30 x 24 pixels, moving 6 px right a frame."""
    return (8 + 6 * index, 30, 38 + 6 * index, 54)


def frame_picture(index: int) -> np.ndarray:
    return rectangle_image(*FRAME_HW, moving_box(index))


def write_video(path: Path, num_frames: int = NUM_FRAMES) -> Path:
    """An MJPEG AVI of the moving red rectangle (MJPEG: every frame its own JPEG, so one can be corrupted)."""
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), FPS, (FRAME_HW[1], FRAME_HW[0]))
    assert writer.isOpened()
    for index in range(num_frames):
        writer.write(frame_picture(index))
    writer.release()
    return path


def write_picture(path: Path, image: np.ndarray) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    assert cv2.imwrite(str(path), image)
    return path


def detector() -> Detector:
    return Detector(red_extent_predictor(), 128, conf_thresh=0.25)


class Recorder(Progress):
    def __init__(self):
        self.failures, self.totals, self.frames = [], [], 0

    def add_total(self, num_frames):
        self.totals.append(num_frames)

    def update(self, num_frames=1):
        self.frames += num_frames

    def failure(self, failure):
        self.failures.append(failure)


def read_label(path: Path) -> list[list[float]]:
    return [[float(v) for v in line.split()] for line in path.read_text().splitlines()]


def expected_label(box, image_hw=FRAME_HW) -> list[float]:
    x1, y1, x2, y2 = box
    height, width = image_hw
    return [1, (x1 + x2) / 2 / width, (y1 + y2) / 2 / height, (x2 - x1) / width, (y2 - y1) / height]


def video_frames(path: Path) -> list[np.ndarray]:
    capture = cv2.VideoCapture(str(path))
    frames = []
    while True:
        ok, frame = capture.read()
        if not ok:
            break
        frames.append(frame)
    capture.release()
    return frames


# --- finding the sources -------------------------------------------------------------------

def test_sources_from_list_files_globs_folders_cameras_and_urls(tmp_path):
    picture = rectangle_image(40, 60, (5, 5, 20, 20))
    data = tmp_path / "data"
    write_picture(data / "a" / "one.jpg", picture)
    write_picture(data / "b" / "one.jpg", picture)
    write_picture(data / "b" / "two.png", picture)
    write_video(data / "clip.avi", 2)
    (data / "list.txt").write_text("# pictures to check\na/one.jpg\n\n" + str(data / "b" / "two.png") + "\nnope.jpg\n"
                                   "rtsp://camera.local/live\n")

    sources, failures = find_sources([str(data / "list.txt")])
    assert [(type(s).__name__, str(s.relative)) for s in sources] == [
        ("ImageSource", "one.jpg"), ("ImageSource", "two.png"), ("VideoSource", "stream_camera.local_live")]
    assert sources[2].kind == "stream" and [Path(f.file).name for f in failures] == ["nope.jpg"]

    sources, failures = find_sources([str(data / "**" / "*.jpg"), str(data / "*.mp4")])
    assert [str(s.relative) for s in sources] == ["a/one.jpg", "b/one.jpg"]  # named below the pattern's folder
    assert [(f.file, f.reason) for f in failures] == [(str(data / "*.mp4"), "no file matches this pattern")]

    sources, failures = find_sources([data, "0", "https://example.org/cam.mjpg", data / "a" / "one.jpg"])
    # a folder's own files first, then its subfolders', each sorted
    assert [str(s.relative) for s in sources] == ["clip.avi", "a/one.jpg", "b/one.jpg", "b/two.png", "camera0",
                                                 "stream_example.org_cam.mjpg"]
    assert [s.kind for s in sources] == ["video"] + ["image"] * 3 + ["camera", "stream"]
    assert failures == []  # the picture given again inside the folder is processed once


def test_a_video_that_does_not_open_is_named_with_the_backends_reason(tmp_path):
    junk = tmp_path / "junk.mp4"
    junk.write_bytes(b"not a video at all " * 200)
    with pytest.raises(SourceError, match=r"video .*junk.mp4 could not be opened by OpenCV's FFmpeg backend: .+"):
        VideoSource(junk, Path("junk.mp4"), "video").open()
    (tmp_path / "empty.avi").write_bytes(b"")
    with pytest.raises(SourceError, match="empty file"):
        VideoSource(tmp_path / "empty.avi", Path("empty.avi"), "video").open()
    with pytest.raises(SourceError, match="could not be opened by OpenCV's FFmpeg backend: .*(refused|Connection)"):
        VideoSource("http://127.0.0.1:9/none.mjpg", Path("s"), "stream").open()  # port 9: nothing listens


def missing_camera_index() -> int:
    return next(index for index in range(8, 64) if not os.path.exists(f"/dev/video{index}"))


def test_a_camera_that_does_not_exist_is_a_clear_error():
    index = missing_camera_index()
    with pytest.raises(SourceError, match=f"camera index {index} could not be opened: /dev/video{index} does not exist"):
        VideoSource(index, Path(f"camera{index}"), "camera").open()


# --- videos -------------------------------------------------------------------------------

def test_a_video_becomes_a_drawn_video_and_one_label_file_per_frame(tmp_path):
    video = write_video(tmp_path / "clip.avi")
    output = tmp_path / "out"
    progress = Recorder()
    report = run_inference([VideoSource(video, Path("clip.avi"), "video")], detector(), output,
                           options=OutputOptions(save_txt=True, save_conf=True, save_crop=True),
                           class_names=["circle", "square", "cross"], progress=progress)
    assert progress.totals == [NUM_FRAMES] and progress.frames == NUM_FRAMES and progress.failures == []
    [entry] = report.videos
    assert (entry["frames_processed"], entry["frames_corrupt"], entry["output"]) == (NUM_FRAMES, 0, "clip.mp4")
    assert report.class_counts == {1: NUM_FRAMES}
    for index in range(NUM_FRAMES):
        [row] = read_label(output / label_name("clip.mp4", index))
        # the stand-in finds the red extent to a pixel in the frame; the score is the stand-in's 0.9
        np.testing.assert_allclose(row[:5], expected_label(moving_box(index)), atol=1.5 / FRAME_HW[1])
        assert row[5] == pytest.approx(0.9)
        [frame_entry] = [f for f in entry["frames"] if f["frame"] == index]
        np.testing.assert_allclose(frame_entry["detections"][0]["bbox"], moving_box(index), atol=1.5)
    assert len(list((output / "crops" / "square").glob("clip_*_0.jpg"))) == NUM_FRAMES
    drawn = cv2.VideoCapture(str(output / "clip.mp4"))
    assert drawn.get(cv2.CAP_PROP_FPS) == pytest.approx(FPS)
    assert (drawn.get(cv2.CAP_PROP_FRAME_WIDTH), drawn.get(cv2.CAP_PROP_FRAME_HEIGHT)) == (FRAME_HW[1], FRAME_HW[0])
    drawn.release()
    assert len(video_frames(output / "clip.mp4")) == NUM_FRAMES
    records = list(entry["frames"])
    path = write_detections_json(detections_document(report, model={}, settings={}), output)
    [written] = json.loads(path.read_text(encoding="utf-8"))["videos"]
    assert written["frames"] == records and written["frames_processed"] == NUM_FRAMES
    # no temporary left behind: the drawn video's and the frame log (its records are now in the json)
    assert not [p for p in output.iterdir() if p.name.startswith(".")]


def test_vid_stride_processes_every_nth_frame_and_keeps_the_duration(tmp_path):
    video = write_video(tmp_path / "clip.avi")
    report = run_inference([VideoSource(video, Path("clip.avi"), "video")], detector(), tmp_path / "out",
                           options=OutputOptions(save_txt=True), vid_stride=3)
    [entry] = report.videos
    assert [f["frame"] for f in entry["frames"]] == [0, 3, 6, 9]
    assert sorted(p.name for p in (tmp_path / "out" / "labels").iterdir()) == [f"clip_{i}.txt" for i in (0, 3, 6, 9)]
    drawn = cv2.VideoCapture(str(tmp_path / "out" / "clip.mp4"))
    assert drawn.get(cv2.CAP_PROP_FPS) == pytest.approx(FPS / 3, abs=0.01)
    drawn.release()


def corrupt_one_frame(video: Path, index: int) -> None:
    """Overwrite the first half of the ``index``-th JPEG of an MJPEG AVI with zeros (its decoder then rejects it)."""
    data = bytearray(video.read_bytes())
    starts = [i for i in range(len(data) - 2) if data[i:i + 3] == b"\xff\xd8\xff"]
    assert len(starts) == NUM_FRAMES
    half = (starts[index + 1] - starts[index]) // 2
    data[starts[index]:starts[index] + half] = bytes(half)
    video.write_bytes(bytes(data))


def test_a_corrupt_frame_in_the_middle_is_skipped_counted_and_the_rest_processed(tmp_path):
    video = write_video(tmp_path / "clip.avi")
    corrupt_one_frame(video, 5)
    progress = Recorder()
    report = run_inference([VideoSource(video, Path("clip.avi"), "video")], detector(), tmp_path / "out",
                           options=OutputOptions(save_txt=True), progress=progress)
    [entry] = report.videos
    assert entry["frames_corrupt"] == 1 and entry["frames_processed"] == NUM_FRAMES - 1
    assert [f["frame"] for f in entry["frames"]] == [i for i in range(NUM_FRAMES) if i != 5]
    for index in (4, 6, NUM_FRAMES - 1):  # frame numbers stay those of the file after the gap
        [row] = read_label(tmp_path / "out" / label_name("clip.mp4", index))
        np.testing.assert_allclose(row, expected_label(moving_box(index)), atol=1.5 / FRAME_HW[1])
    assert any("1 frame(s) could not be decoded" in f.reason for f in progress.failures)


# --- an HTTP MJPEG stream from this machine ---------------------------------------------------------

class MjpegServer:
    """An HTTP server on 127.0.0.1 (a free port) sending the moving rectangle as multipart JPEG frames.

    ``num_frames`` frames then the stream ends; None: frames until ``max_seconds`` have passed (the test
    bound). The server thread is a daemon and ``close()`` stops it.
    """

    def __init__(self, num_frames: int | None = NUM_FRAMES, max_seconds: float = 60.0, interval: float = 0.02):
        owner = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self):
                self.send_response(200)
                self.send_header("Content-Type", f"multipart/x-mixed-replace; boundary={BOUNDARY}")
                self.end_headers()
                started, index = time.monotonic(), 0
                try:
                    while (owner.num_frames is None or index < owner.num_frames) and \
                            time.monotonic() - started < owner.max_seconds and not owner.stopped.is_set():
                        data = cv2.imencode(".jpg", frame_picture(index % NUM_FRAMES))[1].tobytes()
                        self.wfile.write(f"--{BOUNDARY}\r\nContent-Type: image/jpeg\r\nContent-Length: {len(data)}"
                                         f"\r\n\r\n".encode() + data + b"\r\n")
                        self.wfile.flush()
                        index += 1
                        time.sleep(owner.interval)
                except (BrokenPipeError, ConnectionResetError):
                    pass

            def log_message(self, *args):
                pass

        self.num_frames, self.max_seconds, self.interval = num_frames, max_seconds, interval
        self.stopped = threading.Event()
        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/live.mjpg"

    def close(self):
        self.stopped.set()
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def mjpeg_server():
    server = MjpegServer()
    yield server
    server.close()


def test_an_http_mjpeg_stream_is_processed_until_it_ends(mjpeg_server, tmp_path):
    sources, failures = find_sources([mjpeg_server.url])
    assert failures == [] and sources[0].kind == "stream"
    progress = Recorder()
    report = run_inference(sources, detector(), tmp_path / "out", options=OutputOptions(save_txt=True),
                           progress=progress)
    assert progress.totals == [None]  # a stream has no known length
    [entry] = report.videos
    assert entry["kind"] == "stream" and entry["frames_processed"] == NUM_FRAMES
    for frame in entry["frames"]:
        np.testing.assert_allclose(frame["detections"][0]["bbox"], moving_box(frame["frame"]), atol=1.5)
    name = entry["output"]
    assert name.startswith("stream_127.0.0.1_") and name.endswith(".mp4")
    assert len(video_frames(tmp_path / "out" / name)) == NUM_FRAMES


# --- output pieces ---------------------------------------------------------------------------

def test_label_lines_crops_drawing_options_and_the_class_filter():
    detections = np.array([[10, 20, 50, 60, 0.9, 2], [0, 0, 100, 80, 0.5, 0]], np.float32)
    text = yolo_label_text(detections, (80, 100))
    assert text.splitlines() == ["2 0.300000 0.500000 0.400000 0.500000", "0 0.500000 0.500000 1.000000 1.000000"]
    assert yolo_label_text(detections[:1], (80, 100), save_conf=True).split()[-1] == "0.900000"
    assert yolo_label_text(detections[:0], (80, 100)) == ""
    image = rectangle_image(80, 100, (10, 20, 50, 60))
    crops = crop_boxes(image, detections)
    assert [(c, p.shape) for c, p in crops] == [(2, (40, 40, 3)), (0, (80, 100, 3))]
    assert np.all(crops[0][1] == RED_BGR)
    assert keep_classes(detections, (2,)).tolist() == detections[:1].tolist()
    plain = draw_detections(image, detections, ["a", "b", "c"], hide_labels=True, hide_conf=True, thickness=1)
    captioned = draw_detections(image, detections, ["a", "b", "c"], thickness=1)
    assert not np.array_equal(plain, image) and not np.array_equal(plain, captioned)
    thick = draw_detections(image, detections, ["a", "b", "c"], hide_labels=True, hide_conf=True, thickness=5)
    assert np.count_nonzero(np.any(thick != image, axis=2)) > np.count_nonzero(np.any(plain != image, axis=2))


def test_pictures_get_labels_even_without_detections_and_the_json_can_be_left_out(tmp_path):
    pictures = tmp_path / "pictures"
    write_picture(pictures / "red.png", rectangle_image(80, 100, (10, 20, 50, 60)))
    write_picture(pictures / "sub" / "gray.png", np.full((50, 70, 3), 90, np.uint8))
    sources, _ = find_sources([pictures])
    run_inference(sources, detector(), tmp_path / "out", options=OutputOptions(save_drawn=False, save_txt=True))
    assert sorted(str(p.relative_to(tmp_path / "out")) for p in (tmp_path / "out").rglob("*") if p.is_file()) == [
        "labels/red.txt", "labels/sub/gray.txt"]
    assert (tmp_path / "out" / "labels" / "sub" / "gray.txt").read_text() == ""
    assert read_label(tmp_path / "out" / "labels" / "red.txt")[0][0] == 1


def test_an_interrupt_while_a_frame_is_written_waits_for_the_frame():
    done = []
    with pytest.raises(KeyboardInterrupt):
        with InterruptsHeld():
            os.kill(os.getpid(), signal.SIGINT)
            time.sleep(0.05)  # the handler has run by now; nothing was raised inside the block
            done.append("frame written and recorded")
    assert done == ["frame written and recorded"]
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler  # restored


# --- the command line --------------------------------------------------------------------------

@pytest.fixture(scope="module")
def random_checkpoint(tmp_path_factory):
    folder = tmp_path_factory.mktemp("sources_cli")
    return save_checkpoint_atomic(folder / "yolov5n.ckpt", create_yolov5("yolov5n", 3),
                                  {"yolov5_version": "yolov5n", "num_classes": 3, "training_shape": 64})


def infer_command(*args) -> list[str]:
    return [sys.executable, str(PROJECT_ROOT / "tools" / "infer.py"), *map(str, args)]


def test_cli_names_a_camera_that_does_not_exist_and_exits_3(random_checkpoint, tmp_path):
    index = missing_camera_index()
    result = subprocess.run(infer_command("--pretrained", random_checkpoint, "--source", index, "--output_dir",
                                          tmp_path / "out", "--testing_shape", 64),
                            capture_output=True, text=True, cwd=PROJECT_ROOT, timeout=300)
    assert result.returncode == 3, result.stderr
    assert "Traceback" not in result.stderr
    assert f"camera index {index} could not be opened: /dev/video{index} does not exist" in result.stderr
    document = json.loads((tmp_path / "out" / DETECTIONS_NAME).read_text())
    assert [f["file"] for f in document["failed"]] == [f"camera {index}"]


@pytest.mark.slow
def test_cli_ctrl_c_on_an_endless_stream_keeps_a_playable_video(random_checkpoint, tmp_path):
    server = MjpegServer(num_frames=None, max_seconds=120.0, interval=0.05)
    try:
        process = subprocess.Popen(infer_command("--pretrained", random_checkpoint, "--source", server.url,
                                                 "--output_dir", tmp_path / "out", "--testing_shape", 64,
                                                 "--conf_thresh", 0.001, "--save_txt"),
                                   cwd=PROJECT_ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        labels = tmp_path / "out" / "labels"
        deadline = time.monotonic() + 240
        while time.monotonic() < deadline and process.poll() is None and \
                len(list(labels.glob("*.txt")) if labels.is_dir() else []) < 5:
            time.sleep(0.2)
        assert process.poll() is None, process.communicate()
        process.send_signal(signal.SIGINT)
        stdout, stderr = process.communicate(timeout=120)
    finally:
        server.close()
    assert process.returncode == 130, stderr
    assert "Traceback" not in stderr and "interrupted" in stdout
    document = json.loads((tmp_path / "out" / DETECTIONS_NAME).read_text())
    [entry] = document["videos"]
    assert document["interrupted"] is True and entry["interrupted"] is True
    assert entry["frames_processed"] >= 5
    assert len(video_frames(tmp_path / "out" / entry["output"])) == entry["frames_processed"]
    assert not [p for p in (tmp_path / "out").iterdir() if p.name.startswith(".")]
