"""What ``yolo-infer`` writes for each picture or video frame: drawn images and videos, YOLO label files, crops.

Layout inside the output folder (YOLOv5's, so a folder of labels can be trained on again):

* ``<name>.jpg`` the picture with its detections drawn; ``<name>.mp4`` a video or stream, drawn, at the
  source's frame rate (divided by ``--vid_stride``) and size;
* ``labels/<name>.txt`` for a picture, ``labels/<name>_<frame>.txt`` for a video frame: one line per
  detection, ``class cx cy w h`` normalised to [0, 1] by the picture's width and height (then the
  score with ``--save_conf``); a picture without detections gets an empty file;
* ``crops/<class name>/<name>[_<frame>]_<k>.jpg``: the pixels inside the k-th detection's box.

Every file appears under its final name only when complete (``yolodata.fileio.atomic_path``). A video
is written under a hidden temporary name and moved to its final name by ``VideoOutput.close()``,
which the caller runs whether the video ended, the stream was interrupted (Ctrl-C) or an error
happened: the frames written so far are kept as a playable file.
"""
from __future__ import annotations

import os
import re
import secrets
from pathlib import Path, PurePosixPath

import cv2
import numpy as np

from yolodata.fileio import atomic_path, default_file_mode
from yolodata.visualize import class_colour, text_colour_on

IMAGE_OUTPUT_SUFFIX = ".jpg"
VIDEO_OUTPUT_SUFFIX = ".mp4"
VIDEO_FOURCC = "mp4v"     # the MPEG-4 part 2 encoder every OpenCV FFmpeg build has (no H.264 in the wheels)
JPEG_QUALITY = 95
LABELS_FOLDER = "labels"
CROPS_FOLDER = "crops"
LABEL_DECIMALS = 6


# ---------------------------------------------------------------------------------------------
# Drawing
# ---------------------------------------------------------------------------------------------

def line_thickness(image_hw) -> int:
    """Outline width in pixels for an image: YOLOv5's round(0.002 * mean side) + 1."""
    return int(round(0.002 * (image_hw[0] + image_hw[1]) / 2)) + 1


def caption_of(class_index: int, score: float, class_names, *, hide_labels: bool = False,
               hide_conf: bool = False) -> str:
    """``name 0.87`` (``class 3 0.87`` when the name is unknown); parts left out as asked."""
    index = int(class_index)
    name = class_names[index] if class_names and 0 <= index < len(class_names) else f"class {index}"
    parts = ([] if hide_labels else [name]) + ([] if hide_conf else [f"{score:.2f}"])
    return " ".join(parts)


def draw_caption(canvas: np.ndarray, text: str, top_left, colour_rgb, thickness: int) -> None:
    """The caption plate above the box (inside it when the box touches the top edge), drawn in place."""
    height, width = canvas.shape[:2]
    font_scale = max(thickness / 3, 0.35)
    text_thickness = max(thickness - 1, 1)
    colour_bgr = tuple(int(c) for c in colour_rgb[::-1])
    (text_w, text_h), baseline = cv2.getTextSize(text, cv2.FONT_HERSHEY_SIMPLEX, font_scale, text_thickness)
    plate_h = text_h + baseline + 2
    left = min(max(top_left[0], 0), max(width - text_w - 2, 0))
    top = top_left[1] - plate_h
    if top < 0:
        top = min(max(top_left[1], 0), max(height - plate_h, 0))
    cv2.rectangle(canvas, (left, top), (left + text_w + 2, top + plate_h), colour_bgr, -1)
    text_bgr = tuple(int(c) for c in text_colour_on(colour_rgb)[::-1])
    cv2.putText(canvas, text, (left + 1, top + text_h + 1), cv2.FONT_HERSHEY_SIMPLEX, font_scale, text_bgr,
                text_thickness, cv2.LINE_AA)


def draw_detections(image_bgr: np.ndarray, detections: np.ndarray, class_names=None, *, thickness=None,
                    hide_labels: bool = False, hide_conf: bool = False) -> np.ndarray:
    """A new BGR image with every (M, 6) detection (original pixels) outlined in its class colour and
    captioned with class name and score (either left out on request); the best drawn last, on top.

    ``thickness``: outline width in pixels (default ``line_thickness`` of the image).
    """
    canvas = np.array(image_bgr, copy=True)
    thickness = int(thickness) if thickness else line_thickness(canvas.shape[:2])
    for x1, y1, x2, y2, score, class_index in np.asarray(detections, np.float32).reshape(-1, 6)[::-1]:
        colour_rgb = class_colour(int(class_index))
        top_left = (int(round(float(x1))), int(round(float(y1))))
        bottom_right = (int(round(float(x2))), int(round(float(y2))))
        cv2.rectangle(canvas, top_left, bottom_right, tuple(int(c) for c in colour_rgb[::-1]), thickness,
                      cv2.LINE_AA)
        text = caption_of(class_index, float(score), class_names, hide_labels=hide_labels, hide_conf=hide_conf)
        if text:
            draw_caption(canvas, text, top_left, colour_rgb, thickness)
    return canvas


def encode_jpeg(image_bgr: np.ndarray) -> bytes:
    ok, buffer = cv2.imencode(IMAGE_OUTPUT_SUFFIX, image_bgr, [cv2.IMWRITE_JPEG_QUALITY, JPEG_QUALITY])
    if not ok:
        raise RuntimeError("OpenCV could not encode the drawn image as JPEG")
    return buffer.tobytes()


# ---------------------------------------------------------------------------------------------
# Small files: labels and crops
# ---------------------------------------------------------------------------------------------

def write_small_file(path: Path, data: bytes) -> Path:
    """``data`` under ``path``, atomically (no fsync: one per video frame would cost more than the frame)."""
    with atomic_path(path) as temporary:
        temporary.write_bytes(data)
    return path


def yolo_label_text(detections: np.ndarray, image_hw, *, save_conf: bool = False) -> str:
    """YOLO-format lines of (M, 6) detections in original pixels: ``class cx cy w h [score]``, normalised."""
    height, width = float(image_hw[0]), float(image_hw[1])
    lines = []
    for x1, y1, x2, y2, score, class_index in np.asarray(detections, np.float64).reshape(-1, 6):
        values = [(x1 + x2) / 2 / width, (y1 + y2) / 2 / height, (x2 - x1) / width, (y2 - y1) / height]
        if save_conf:
            values.append(score)
        lines.append(" ".join([str(int(class_index))] + [f"{v:.{LABEL_DECIMALS}f}" for v in values]))
    return "".join(line + "\n" for line in lines)


def label_name(output_name: str, frame=None) -> str:
    """``labels/<name>.txt`` (a picture) or ``labels/<name>_<frame>.txt`` (a video frame), POSIX."""
    stem = str(PurePosixPath(output_name).with_suffix(""))
    return f"{LABELS_FOLDER}/{stem}{'' if frame is None else f'_{int(frame)}'}.txt"


def class_folder_name(class_index: int, class_names) -> str:
    """A folder name for a class: its name with path separators and other odd characters as ``_``."""
    index = int(class_index)
    name = class_names[index] if class_names and 0 <= index < len(class_names) else f"class_{index}"
    return re.sub(r"[^\w.\- ]+", "_", name).strip(" .") or f"class_{index}"


def crop_boxes(image_bgr: np.ndarray, detections: np.ndarray) -> list[tuple[int, np.ndarray]]:
    """(class index, the pixels inside the box) per detection; boxes rounded outwards, clipped, >= 1 px."""
    height, width = image_bgr.shape[:2]
    crops = []
    for x1, y1, x2, y2, _, class_index in np.asarray(detections, np.float64).reshape(-1, 6):
        left, top = int(np.clip(np.floor(x1), 0, width - 1)), int(np.clip(np.floor(y1), 0, height - 1))
        right, bottom = int(np.clip(np.ceil(x2), left + 1, width)), int(np.clip(np.ceil(y2), top + 1, height))
        crops.append((int(class_index), image_bgr[top:bottom, left:right]))
    return crops


def write_crops(output_dir: Path, output_name: str, image_bgr: np.ndarray, detections: np.ndarray,
                class_names=None, frame=None) -> list[str]:
    """One JPEG per detection under ``crops/<class>/``; returns the names written (POSIX, relative)."""
    stem = str(PurePosixPath(output_name).with_suffix("")) + ("" if frame is None else f"_{int(frame)}")
    written = []
    for number, (class_index, pixels) in enumerate(crop_boxes(image_bgr, detections)):
        name = f"{CROPS_FOLDER}/{class_folder_name(class_index, class_names)}/{stem}_{number}{IMAGE_OUTPUT_SUFFIX}"
        write_small_file(output_dir / name, encode_jpeg(pixels))
        written.append(name)
    return written


# ---------------------------------------------------------------------------------------------
# Videos
# ---------------------------------------------------------------------------------------------

class VideoOutput:
    """A drawn video: frames go to a hidden temporary file beside ``final``; ``close()`` moves it there.

    Opened on the first frame (its size decides the video's); ``close()`` is safe to call more than
    once and after no frame at all (then nothing is left behind). OSError when OpenCV cannot write.
    """

    def __init__(self, final: Path, fps: float):
        self.final = Path(final)
        self.fps = float(fps)
        self.writer = None
        self.size = None
        self.num_frames = 0
        self.temporary = self.final.with_name(f".{self.final.stem}.partial-{os.getpid()}-{secrets.token_hex(4)}"
                                              f"{VIDEO_OUTPUT_SUFFIX}")

    def write(self, frame_bgr: np.ndarray) -> None:
        if self.writer is None:
            self.size = (int(frame_bgr.shape[1]), int(frame_bgr.shape[0]))
            self.final.parent.mkdir(parents=True, exist_ok=True)
            self.writer = cv2.VideoWriter(str(self.temporary), cv2.VideoWriter_fourcc(*VIDEO_FOURCC), self.fps,
                                          self.size)
            if not self.writer.isOpened():
                self.writer = None
                raise OSError(f"OpenCV cannot write a {VIDEO_FOURCC} video to {self.temporary}")
        if (frame_bgr.shape[1], frame_bgr.shape[0]) != self.size:  # a stream that changed resolution
            frame_bgr = cv2.resize(frame_bgr, self.size, interpolation=cv2.INTER_AREA)
        self.writer.write(frame_bgr)
        self.num_frames += 1

    def close(self) -> Path | None:
        """Finish the file and give it its final name; returns it (None when no frame was written)."""
        if self.writer is None:
            return None
        self.writer.release()
        self.writer = None
        os.chmod(self.temporary, default_file_mode())
        os.replace(self.temporary, self.final)
        return self.final
