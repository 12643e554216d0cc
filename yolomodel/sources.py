"""Where ``yolo-infer`` takes its pictures from: files, folders, globs, list files, videos, cameras, streams.

``find_sources(arguments)`` turns the ``--source`` arguments into a list of sources, in argument order,
and a list of ``Failure`` for arguments that give nothing:

* an existing folder: its image and video files, recursively, sorted, hidden names skipped;
* an existing ``.txt`` file: a list of paths, one per line (blank lines and ``#`` comments skipped;
  relative paths are taken from the list file's folder), each expanded like an argument;
* an existing file with a video suffix (``VIDEO_SUFFIXES``): a video; any other existing file: a picture;
* a pattern with ``*``, ``?`` or ``[`` (``**`` searches subfolders): the files it matches;
* a whole number that names no file (``0``): a camera index;
* ``rtsp://``, ``rtmp://``, ``http://`` or ``https://``: a network stream.

Two kinds of source, kept thin: ``ImageSource`` (one picture, ``read()``) and ``VideoSource`` (a
video file, camera or stream, ``open()`` then ``frames()``). Both carry ``relative``, the name the
outputs are named after.

Videos are read through OpenCV's FFmpeg backend (V4L2 for cameras). When a source does not open, the
backend's own messages (FFmpeg writes them on the process's stderr, e.g. ``moov atom not found`` or
``Connection refused``) are caught and put into the ``SourceError``. A frame the decoder rejects in
the middle of a video is skipped and counted (``VideoReader.num_corrupt``); the next frames are read on.
"""
from __future__ import annotations

import contextlib
import dataclasses
import glob
import os
import re
import tempfile
from pathlib import Path, PurePosixPath
from typing import Iterator, Sequence

import cv2
import numpy as np

from yolodata import image_io

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff")
VIDEO_SUFFIXES = (".mp4", ".avi", ".mov", ".mkv", ".m4v", ".mpg", ".mpeg", ".wmv", ".webm", ".flv", ".ts",
                  ".asf", ".3gp", ".mjpeg", ".mjpg")
LIST_SUFFIX = ".txt"
STREAM_SCHEMES = ("rtsp://", "rtmp://", "http://", "https://")
GLOB_CHARACTERS = re.compile(r"[*?\[]")
# a network stream that does not answer within this time is reported, not waited for
OPEN_TIMEOUT_MS = 15000
READ_TIMEOUT_MS = 15000
# consecutive decode failures after which a video is taken to have ended (a file) or died (a stream)
MAX_FAILURES_IN_A_ROW = {"video": 30, "camera": 3, "stream": 3}
BACKEND_MESSAGE_CHARS = 600


class SourceError(ValueError):
    """A source that cannot be read (a video, camera or stream that does not open); names it and why."""


@dataclasses.dataclass(frozen=True)
class Failure:
    """An input that could not be processed, with the reason in words."""

    file: str
    reason: str


@dataclasses.dataclass(frozen=True)
class ImageSource:
    """One image file to process: where it is, and its path relative to the argument it came from."""

    path: Path
    relative: PurePosixPath
    kind = "image"

    @property
    def name(self) -> str:
        return str(self.path)

    def read(self) -> np.ndarray:
        """BGR uint8 (H, W, 3); ``image_io.ImageProblem`` with the reason otherwise (``read_image``)."""
        return read_image(self.path)


@dataclasses.dataclass(frozen=True)
class VideoSource:
    """A video file (``kind`` "video"), a camera index ("camera") or a stream URL ("stream")."""

    target: object           # Path of a file, int camera index, or the URL
    relative: PurePosixPath
    kind: str

    @property
    def name(self) -> str:
        return f"camera {self.target}" if self.kind == "camera" else str(self.target)

    def open(self) -> "VideoReader":
        """The opened capture; SourceError with the backend's reason when it does not open."""
        return VideoReader(self, open_capture(self))


# ---------------------------------------------------------------------------------------------
# Reading pictures
# ---------------------------------------------------------------------------------------------

def read_image(path) -> np.ndarray:
    """BGR uint8 (H, W, 3) of an image file; ``image_io.ImageProblem`` with the reason otherwise.

    Empty files and truncated JPEG/PNG files are refused (OpenCV would decode a truncated JPEG into a
    partly gray picture without complaint).
    """
    try:
        data = Path(path).read_bytes()
    except OSError as error:
        raise image_io.ImageProblem("unreadable", f"cannot read the file: {error.strerror or error}") from error
    image_io.check_complete(data)
    try:
        return image_io.decode_stored(data)
    except ValueError as error:
        raise image_io.ImageProblem("undecodable", f"not an image OpenCV can decode ({image_io.sniff_format(data)} "
                                                   f"format, {len(data)} bytes)") from error


# ---------------------------------------------------------------------------------------------
# Reading videos, cameras and streams
# ---------------------------------------------------------------------------------------------

@contextlib.contextmanager
def captured_native_stderr() -> Iterator[list]:
    """Collect what native code (FFmpeg, OpenCV) writes on file descriptor 2 inside the block.

    Yields a list that holds the text once the block ends. The descriptor is restored whatever happens.
    """
    collected: list = []
    saved = os.dup(2)
    with tempfile.TemporaryFile() as sink:
        os.dup2(sink.fileno(), 2)
        try:
            yield collected
        finally:
            os.dup2(saved, 2)
            os.close(saved)
            sink.seek(0)
            collected.append(sink.read().decode("utf-8", "replace"))


def backend_reason(text: str) -> str:
    """The backend's messages in one line: log prefixes (``[ WARN:0@0.1] global file.cpp:12``) dropped."""
    lines = []
    for line in text.splitlines():
        line = re.sub(r"^\[\s*(WARN|ERROR|INFO)[^\]]*\]\s*(global\s+\S+\s+)?", "", line.strip())
        line = re.sub(r"^\[\w+ @ 0x[0-9a-f]+\]\s*", "", line)
        if line and line not in lines:
            lines.append(line)
    joined = "; ".join(lines)
    return joined[:BACKEND_MESSAGE_CHARS] + ("..." if len(joined) > BACKEND_MESSAGE_CHARS else "")


def describe_open_failure(source: VideoSource, backend_text: str) -> str:
    """Why ``source`` did not open, in words: what we know about it, then what the backend said."""
    said = backend_reason(backend_text)
    if source.kind == "camera":
        device = Path(f"/dev/video{source.target}")
        known = (f"{device} does not exist (no such camera on this machine)" if os.name == "posix" and
                 not device.exists() else "the camera is missing, busy or not accessible")
        return f"camera index {source.target} could not be opened: {known}" + (f" ({said})" if said else "")
    if source.kind == "video":
        path = Path(source.target)
        if not path.exists():
            return f"video {path} does not exist"
        if path.stat().st_size == 0:
            return f"video {path} is an empty file"
        return (f"video {path} could not be opened by OpenCV's FFmpeg backend: "
                + (said or "not a container or codec it knows"))
    return (f"stream {source.target} could not be opened by OpenCV's FFmpeg backend: "
            + (said or f"no answer within {OPEN_TIMEOUT_MS / 1000:g} s, or a protocol or codec it does not know"))


def open_capture(source: VideoSource) -> cv2.VideoCapture:
    """A ``cv2.VideoCapture`` that is open on ``source``; SourceError naming it and the backend's reason."""
    with captured_native_stderr() as backend_text:
        if source.kind == "camera":
            capture = cv2.VideoCapture(int(source.target))
        else:
            capture = cv2.VideoCapture(str(source.target), cv2.CAP_FFMPEG,
                                       [cv2.CAP_PROP_OPEN_TIMEOUT_MSEC, OPEN_TIMEOUT_MS,
                                        cv2.CAP_PROP_READ_TIMEOUT_MSEC, READ_TIMEOUT_MS])
        opened = capture.isOpened()
    if not opened:
        capture.release()
        raise SourceError(describe_open_failure(source, "".join(backend_text)))
    return capture


class VideoReader:
    """An opened video, camera or stream: its frame rate and size, and its frames one by one.

    ``frames(stride)`` yields (frame index, BGR image) for every ``stride``-th frame; the frames between
    are grabbed (FFmpeg decodes them, the stream must be followed) but neither converted nor processed.
    A frame the decoder rejects is skipped and counted in ``num_corrupt`` when later frames still decode;
    a run of ``MAX_FAILURES_IN_A_ROW`` failures ends the video (for a file, its end). ``close()``
    releases the capture.
    """

    def __init__(self, source: VideoSource, capture: cv2.VideoCapture):
        self.source = source
        self.capture = capture
        fps = capture.get(cv2.CAP_PROP_FPS)
        # cameras and some streams report 0 or absurd rates; 30 is what they almost always deliver
        self.fps = float(fps) if 0 < fps <= 240 else 30.0
        self.width = int(capture.get(cv2.CAP_PROP_FRAME_WIDTH))
        self.height = int(capture.get(cv2.CAP_PROP_FRAME_HEIGHT))
        count = int(capture.get(cv2.CAP_PROP_FRAME_COUNT))
        self.num_frames = count if source.kind == "video" and count > 0 else None
        self.num_corrupt = 0
        self.num_read = 0

    def grab_quietly(self) -> bool:
        """``capture.grab()`` with FFmpeg's complaints about a bad frame kept off the terminal (they are counted)."""
        saved = os.dup(2)
        silent = os.open(os.devnull, os.O_WRONLY)
        os.dup2(silent, 2)
        try:
            return bool(self.capture.grab())
        finally:
            os.dup2(saved, 2)
            os.close(saved)
            os.close(silent)

    def frames(self, stride: int = 1) -> Iterator[tuple[int, np.ndarray]]:
        index, failures_in_a_row = 0, 0
        limit = MAX_FAILURES_IN_A_ROW[self.source.kind]
        while failures_in_a_row < limit:
            if not self.grab_quietly():
                failures_in_a_row += 1
                continue
            # failures followed by a good frame were frames in the middle that did not decode
            self.num_corrupt += failures_in_a_row
            index += failures_in_a_row
            failures_in_a_row = 0
            if index % stride == 0:
                ok, image = self.capture.retrieve()
                if ok and image is not None:
                    self.num_read += 1
                    yield index, image
                else:
                    self.num_corrupt += 1
            index += 1

    def close(self) -> None:
        self.capture.release()


# ---------------------------------------------------------------------------------------------
# From arguments to sources
# ---------------------------------------------------------------------------------------------

def is_hidden(name: str) -> bool:
    return name.startswith(".")


def is_image_name(name: str) -> bool:
    """Whether a file found in a folder is taken as an image: a known suffix and not hidden."""
    return not is_hidden(name) and os.path.splitext(name)[1].lower() in IMAGE_SUFFIXES


def is_video_name(name: str) -> bool:
    """Whether a file name has one of the video suffixes (``VIDEO_SUFFIXES``, any case)."""
    return os.path.splitext(name)[1].lower() in VIDEO_SUFFIXES


def file_source(path: Path, relative: PurePosixPath):
    """An ImageSource or, for a video suffix, a VideoSource of kind "video"."""
    return VideoSource(path, relative, "video") if is_video_name(path.name) else ImageSource(path, relative)


def sources_in_folder(folder: Path) -> tuple[list, list[Failure]]:
    """The image and video files under ``folder`` (recursive, sorted, hidden names skipped), and the
    subfolders that could not be listed."""
    found, failures = [], []

    def report(error: OSError) -> None:
        failures.append(Failure(str(error.filename or folder), f"cannot list this folder: {error.strerror or error}"))

    for root, dirs, files in os.walk(folder, onerror=report):
        dirs[:] = sorted(d for d in dirs if not is_hidden(d))
        for name in sorted(files):
            if is_image_name(name) or (is_video_name(name) and not is_hidden(name)):
                path = Path(root) / name
                found.append(file_source(path, PurePosixPath(path.relative_to(folder).as_posix())))
    return found, failures


def glob_base(pattern: str) -> Path:
    """The folder part of ``pattern`` before its first wildcard: matches are named relative to it."""
    parts = Path(pattern).parts
    first_wild = next((i for i, part in enumerate(parts) if GLOB_CHARACTERS.search(part)), len(parts))
    plain = parts[:first_wild]
    return Path(*plain) if plain else Path(".")


def stream_relative(url: str) -> PurePosixPath:
    """An output name for a stream: its URL with every character other than letters, digits, ``.-_`` as ``_``."""
    without_scheme = url.split("://", 1)[-1]
    return PurePosixPath("stream_" + re.sub(r"[^0-9A-Za-z.\-]+", "_", without_scheme).strip("_")[:80])


def read_list_file(path: Path) -> tuple[list[str], list[Failure]]:
    """The entries of a list file (one path per line; relative ones from the list's folder)."""
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as error:
        return [], [Failure(str(path), f"cannot read this list of paths: {error}")]
    entries = []
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        is_remote = line.lower().startswith(STREAM_SCHEMES)
        entries.append(line if is_remote or os.path.isabs(line) else str(path.parent / line))
    if not entries:
        return [], [Failure(str(path), "this list file names no paths (one path per line)")]
    return entries, []


def expand_argument(argument: str, *, from_list: bool = False) -> tuple[list, list[Failure]]:
    """The sources one ``--source`` argument stands for, and the failures it gives."""
    text = str(argument)
    path = Path(text)
    if text.lower().startswith(STREAM_SCHEMES):
        return [VideoSource(text, stream_relative(text), "stream")], []
    if path.is_dir():
        found, failures = sources_in_folder(path)
        if not found and not failures:
            failures = [Failure(text, f"no image files ({', '.join(IMAGE_SUFFIXES)}) or videos in this folder "
                                      f"or its subfolders")]
        return found, failures
    if path.is_file():
        if path.suffix.lower() == LIST_SUFFIX and not from_list:
            entries, failures = read_list_file(path)
            found = []
            for entry in entries:
                more, problems = expand_argument(entry, from_list=True)
                found += more
                failures += problems
            return found, failures
        return [file_source(path, PurePosixPath(path.name))], []
    if text.isdigit():
        return [VideoSource(int(text), PurePosixPath(f"camera{int(text)}"), "camera")], []
    if GLOB_CHARACTERS.search(text):
        base = glob_base(text)
        matches = sorted(Path(m) for m in glob.glob(text, recursive=True) if Path(m).is_file())
        if not matches:
            return [], [Failure(text, "no file matches this pattern")]
        return [file_source(m, PurePosixPath(Path(os.path.relpath(m, base)).as_posix())) for m in matches], []
    return [], [Failure(text, "does not exist")]


def find_sources(arguments: Sequence) -> tuple[list, list[Failure]]:
    """(sources to process in argument order, inputs that cannot be used) for every ``--source`` argument.

    The same file reached twice (given twice, or as a file and inside a folder) is processed once.
    """
    sources, failures, seen = [], [], set()
    for argument in arguments:
        found, problems = expand_argument(argument)
        failures.extend(problems)
        for source in found:
            key = (os.path.realpath(source.path) if isinstance(source, ImageSource)
                   else os.path.realpath(source.target) if source.kind == "video" else (source.kind, source.target))
            if key not in seen:
                seen.add(key)
                sources.append(source)
    return sources, failures
