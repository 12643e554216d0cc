"""Frames/s of yolo-infer on a video made from coco128's pictures, per runtime and input size, and where the time goes.

    PYTHONPATH=. python benchmarks/infer_throughput.py [--frames 64] [--sizes 640 320] [--weights PT]

Makes a 640x480 MPEG-4 video (``video_from_pictures``: each coco128 picture scaled into the frame and
padded, one frame each, cv2.VideoWriter), exports the real yolov5n (v6.1, COCO) to ONNX and MINDIR at
each size (yolo-export, sidecars included), then runs the inference of ``yolo-infer`` on the video
(``yolomodel.infer.run_inference``: decode, letterbox + network, NMS, drawing + writing the annotated
video) with the checkpoint, the MINDIR and the ONNX file. One frame is run first so that the graph
compile is not counted. Prints frames/s, each stage's share of the time (``StageTimes``), and the
ratio of each runtime to the checkpoint at the same size, measured in the same run.
"""
from __future__ import annotations

import argparse
import contextlib
import io
import sys
import tempfile
import time
from pathlib import Path, PurePosixPath

import cv2
import numpy as np

from benchmarks.real_data import COCO128, REAL_DATA
from yolomodel.cli import export as export_cli
from yolomodel.device import setup_device
from yolomodel.infer import STAGES, Detector, OutputOptions, run_inference
from yolomodel.runtimes import open_runtime
from yolomodel.sources import VideoSource

FRAME_SIZE = (640, 480)   # width, height
FPS = 25.0
DEFAULT_WEIGHTS = REAL_DATA / "yolov5_pt" / "yolov5n_v6.1_coco.pt"


def fit_into_frame(image_bgr: np.ndarray, size_wh=FRAME_SIZE) -> np.ndarray:
    """``image_bgr`` scaled to fit ``size_wh`` (aspect kept), centred on gray 114."""
    width, height = size_wh
    scale = min(width / image_bgr.shape[1], height / image_bgr.shape[0])
    new_w, new_h = max(1, round(image_bgr.shape[1] * scale)), max(1, round(image_bgr.shape[0] * scale))
    frame = np.full((height, width, 3), 114, np.uint8)
    top, left = (height - new_h) // 2, (width - new_w) // 2
    frame[top:top + new_h, left:left + new_w] = cv2.resize(image_bgr, (new_w, new_h), interpolation=cv2.INTER_AREA)
    return frame


def video_from_pictures(pictures, path: Path, *, num_frames: int, size_wh=FRAME_SIZE, fps: float = FPS,
                        fourcc: str = "mp4v") -> Path:
    """A video of ``num_frames`` frames cycling through the picture files ``pictures``; returns ``path``."""
    pictures = list(pictures)
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*fourcc), fps, tuple(size_wh))
    if not writer.isOpened():
        raise RuntimeError(f"OpenCV cannot write {path} with {fourcc}")
    try:
        for index in range(num_frames):
            writer.write(fit_into_frame(cv2.imread(str(pictures[index % len(pictures)])), size_wh))
    finally:
        writer.release()
    return path


def export_model(weights: Path, file_format: str, size: int, folder: Path) -> Path:
    with contextlib.redirect_stdout(io.StringIO()):
        code = export_cli.main(["--ckpt_file", str(weights), "--file_format", file_format, "--testing_shape",
                                str(size), "--file_name", str(folder / f"yolov5n_{size}")])
    if code != 0:
        raise RuntimeError(f"yolo-export {file_format} at {size} failed with exit code {code}")
    return folder / f"yolov5n_{size}.{file_format.lower()}"


def measure(model_path: Path, size: int, video: Path, output_dir: Path) -> dict:
    """frames/s and stage shares of one runtime on ``video``, after one untimed frame (the compile)."""
    runtime = open_runtime(model_path)
    detector = Detector(runtime, size)
    detector(fit_into_frame(np.zeros((8, 8, 3), np.uint8)))
    source = VideoSource(video, PurePosixPath(video.name), "video")
    started = time.perf_counter()
    report = run_inference([source], detector, output_dir, options=OutputOptions(), class_names=runtime.class_names)
    seconds = time.perf_counter() - started
    return {"fps": report.num_frames / seconds, "frames": report.num_frames, "shares": report.times.shares(),
            "detections": report.num_detections}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--frames", type=int, default=64)
    parser.add_argument("--sizes", type=int, nargs="+", default=[640, 320])
    parser.add_argument("--weights", type=Path, default=DEFAULT_WEIGHTS)
    args = parser.parse_args(argv)
    pictures = sorted((COCO128 / "val2017").glob("*.jpg"))
    if not pictures or not args.weights.is_file():
        print(f"needs coco128 and {args.weights} (under {REAL_DATA})", file=sys.stderr)
        return 2
    setup_device("CPU")
    with tempfile.TemporaryDirectory(prefix="infer-bench-") as scratch:
        scratch = Path(scratch)
        video = video_from_pictures(pictures, scratch / "coco128.mp4", num_frames=args.frames)
        print(f"video: {args.frames} frames {FRAME_SIZE[0]}x{FRAME_SIZE[1]} mp4v from {len(pictures)} coco128 pictures")
        print(f"{'runtime':<11}{'size':>5}{'frames/s':>10}{'x ckpt':>8}  " + "".join(f"{s:>9}" for s in STAGES)
              + f"{'detections':>12}")
        for size in args.sizes:
            models = {"checkpoint": args.weights, "MINDIR": export_model(args.weights, "MINDIR", size, scratch),
                      "ONNX": export_model(args.weights, "ONNX", size, scratch)}
            baseline = None
            for name, path in models.items():
                result = measure(path, size, video, scratch / f"out_{name}_{size}")
                baseline = baseline or result["fps"]
                print(f"{name:<11}{size:>5}{result['fps']:>10.1f}{result['fps'] / baseline:>8.2f}  "
                      + "".join(f"{result['shares'][s]:>9.0%}" for s in STAGES) + f"{result['detections']:>12}",
                      flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
