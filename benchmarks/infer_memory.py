"""Peak memory of yolo-infer's loop on a video of N and of 10N frames: it must not grow with the video.

    PYTHONPATH=. python benchmarks/infer_memory.py [--frames 1000] [--detections_per_frame 64]

Each run is a fresh process (so each peak RSS is its own): it writes an MJPEG video of tiny 64 x 64
frames, runs ``yolomodel.infer.run_inference`` on it with a stand-in network that 'detects'
``--detections_per_frame`` separate boxes in every frame (no MindSpore: only the records, not the
network, are measured), without the drawn video, then writes ``detections.json``. Printed per run:
RSS before the run, peak RSS (``ru_maxrss``), the growth, the json size; last, the ratio of the
growths at 10N and N. Frame records held in memory until the end would make the growth at 10N about
ten times that at N; kept on disk as they come (``yolomodel.frame_log``), the two are about equal.
"""
from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
from pathlib import Path

import cv2
import numpy as np

SIDE = 64
NUM_CLASSES = 3


def grid_predictor(detections_per_frame: int):
    """A stand-in network: ``detections_per_frame`` 4 x 4 boxes on an 8-pixel grid, scores 0.3 to 0.9."""
    per_row = SIDE // 8
    out = np.zeros((1, detections_per_frame, 5 + NUM_CLASSES), np.float32)
    for k in range(detections_per_frame):
        row, column = divmod(k % (per_row * per_row), per_row)
        out[0, k, :5] = (column * 8 + 4, row * 8 + 4, 4, 4, 0.3 + 0.6 * k / detections_per_frame)
        out[0, k, 5 + k % NUM_CLASSES] = 1.0
    return lambda images: out


def write_video(path: Path, num_frames: int) -> Path:
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 25.0, (SIDE, SIDE))
    frame = np.full((SIDE, SIDE, 3), 90, np.uint8)
    for index in range(num_frames):
        frame[:, :, 2] = index % 256
        writer.write(frame)
    writer.release()
    return path


def peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB


def current_rss_mib() -> float:
    with open("/proc/self/statm") as stream:
        return int(stream.read().split()[1]) * resource.getpagesize() / 2 ** 20


def measure(num_frames: int, detections_per_frame: int) -> dict:
    """One run in this process (a fresh child): the figures as a dict."""
    from yolomodel.infer import (Detector, OutputOptions, detections_document, run_inference,
                                 write_detections_json)
    from yolomodel.sources import VideoSource

    with tempfile.TemporaryDirectory() as folder:
        video = write_video(Path(folder) / "long.avi", num_frames)
        detector = Detector(grid_predictor(detections_per_frame), SIDE, conf_thresh=0.25, nms_thresh=0.45,
                            max_det=detections_per_frame)
        before = current_rss_mib()
        report = run_inference([VideoSource(video, Path("long.avi"), "video")], detector, Path(folder) / "out",
                               options=OutputOptions(save_drawn=False))
        path = write_detections_json(detections_document(report, model={}, settings={}), Path(folder) / "out")
        return {"frames": report.num_frames, "detections": report.num_detections, "rss_before_mib": before,
                "peak_rss_mib": peak_rss_mib(), "json_mib": path.stat().st_size / 2 ** 20}


def run_child(num_frames: int, detections_per_frame: int) -> dict:
    command = [sys.executable, __file__, "--child", "--frames", str(num_frames),
               "--detections_per_frame", str(detections_per_frame)]
    done = subprocess.run(command, check=True, capture_output=True, text=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--frames", type=int, default=1000, help="N (the second run has 10N)")
    parser.add_argument("--detections_per_frame", type=int, default=64)
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        print(json.dumps(measure(args.frames, args.detections_per_frame)))
        return 0
    growths = []
    for num_frames in (args.frames, 10 * args.frames):
        figures = run_child(num_frames, args.detections_per_frame)
        growth = figures["peak_rss_mib"] - figures["rss_before_mib"]
        growths.append(growth)
        print(f"{figures['frames']:7d} frames, {figures['detections']:8d} detections: RSS before "
              f"{figures['rss_before_mib']:.1f} MiB, peak {figures['peak_rss_mib']:.1f} MiB, growth {growth:.1f} MiB, "
              f"detections.json {figures['json_mib']:.1f} MiB", flush=True)
    print(f"growth at 10N / growth at N: {growths[1] / max(growths[0], 0.1):.2f} (held in memory: about 10)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
