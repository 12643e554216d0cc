"""What every source-format reader returns: a COCO-style document, its image root, and the problems
found while reading, each naming a file and (where there is one) a line.

A reader turns a dataset on disk (YOLO txt, Pascal VOC XML) into exactly what a COCO json would have
given the converter: ``images`` with ``file_name`` relative to one image root and the size of the
picture in the frame the labels describe, ``annotations`` with COCO ``[x, y, width, height]`` pixel
boxes (pixel-edge coordinates: a box covering pixel columns 0..9 has x 0 and width 10), and
``categories``. The converter then checks and writes it as it does a COCO json.

Image ids are 1, 2, ... in the order of the images' paths; they are assigned before any image is left
out, so fixing one bad file never renumbers the others. Category ids are the class indices 0..C-1.
"""
from __future__ import annotations

import dataclasses
import os
from pathlib import Path

from ..image_io import EXIF_FRAMES
from .image_size import ImageSize, ImageSizeError, read_image_size

# Image suffixes of a YOLO dataset folder (Ultralytics' list); OpenCV cannot decode every one of them
# (.dng, .heic): such files are reported as undecodable, never silently left out.
IMAGE_SUFFIXES = frozenset({".bmp", ".dng", ".jpeg", ".jpg", ".mpo", ".png", ".tif", ".tiff", ".webp", ".pfm",
                            ".heic"})

# A normalised coordinate this far outside [0, 1] is still taken (the box is clipped to the image by
# the converter and counted); farther is refused. VOC corners use the same fraction of the image size.
COORDINATE_TOLERANCE = 0.01


class FormatError(ValueError):
    """The dataset cannot be read at all (a missing or malformed data.yaml, obj.data, names file, split
    or folder); the message names the file, the line where there is one, and what to fix."""


@dataclasses.dataclass(frozen=True)
class SourceProblem:
    """Something wrong in the source files, where it is, and what happened because of it.

    ``image`` is the file name (relative to the image root) of the image left out because of it, None
    when no image is left out (a label file without an image, a fix that was applied). ``is_error``
    False marks a fix that was applied and counted (a duplicate line dropped, a coordinate slightly
    outside [0, 1]): listed, yet never a reason for ``--strict`` to stop.
    """

    reason: str
    message: str
    file: str
    line: int | None = None
    image: str | None = None
    image_id: int | None = None
    is_error: bool = True

    @property
    def location(self) -> str:
        return self.file if self.line is None else f"{self.file}:{self.line}"

    def describe_where(self) -> str:
        """``file:line: message``."""
        return f"{self.location}: {self.message}"

    def describe(self) -> str:
        tail = f" (image {self.image})" if self.image is not None and self.is_error else ""
        return f"{self.describe_where()}{tail}"

    def manifest_entry(self) -> dict:
        entry = {"file": self.file, "line": self.line, "reason": self.reason, "message": self.message}
        if self.image is not None:
            entry.update(image_id=self.image_id, file_name=self.image)
        return entry


@dataclasses.dataclass
class SourceDataset:
    """A dataset read into the converter's terms (see the module docstring)."""

    source_format: str            # "yolo" or "voc"
    image_root: Path              # the folder every images[].file_name is relative to
    document: dict                # COCO-style: images, annotations, categories
    problems: list                # SourceProblem, sorted by file and line
    source: dict                  # for manifest.json: layout, files read, split, class order, counts

    @property
    def errors(self) -> list:
        return [p for p in self.problems if p.is_error]

    @property
    def skipped_images(self) -> list:
        """File names of the images left out, in order, each once."""
        return sorted({p.image for p in self.problems if p.image is not None and p.is_error})


def check_exif_frame(exif_frame: str) -> str:
    if exif_frame not in EXIF_FRAMES:
        raise ValueError(f"exif_frame must be one of {EXIF_FRAMES}, got {exif_frame!r}")
    return exif_frame


def normalised_path(path: str | os.PathLike) -> str:
    """Absolute path with '.' and '..' removed lexically; symbolic links are kept (a dataset of links
    stays inside its own folder)."""
    return os.path.abspath(os.fspath(path))


def is_within(path: str, folder: str) -> bool:
    return path == folder or path.startswith(folder.rstrip(os.sep) + os.sep)


def choose_image_root(paths: list, preferred: str) -> str:
    """``preferred`` when every image path lies under it, else the deepest folder holding them all."""
    preferred = normalised_path(preferred)
    if all(is_within(path, preferred) for path in paths):
        return preferred
    return os.path.commonpath([os.path.dirname(path) for path in paths])


def relative_file_name(path: str, root: str) -> str:
    """``path`` (normalised, under ``root``) relative to ``root`` with '/' separators (the json's file_name)."""
    if not is_within(path, root) or path == root:
        raise ValueError(f"{path} is not under {root}")
    relative = path[len(root.rstrip(os.sep)) + 1:]
    return relative if os.sep == "/" else relative.replace(os.sep, "/")


def image_size_or_problem(path: str, file_name: str, image_id: int):
    """(ImageSize, None) or (None, SourceProblem naming the image file)."""
    try:
        return read_image_size(path), None
    except ImageSizeError as error:
        return None, SourceProblem(error.reason, str(error), path, image=file_name, image_id=image_id)


def category_records(names: list) -> list:
    return [{"id": index, "name": name} for index, name in enumerate(names)]


class DocumentBuilder:
    """Collects images and pixel boxes into a COCO-style document (annotation ids 1, 2, ...).

    ``image_root`` is the folder the file names are relative to. Each record goes through ``keep``: this
    builder appends it to its lists; a subclass may send it elsewhere (``convert.reader_stream`` spills
    it to disk).
    """

    def __init__(self, names: list, image_root: str | os.PathLike | None = None):
        self.categories = category_records(names)
        self.image_root = image_root
        self.images: list = []
        self.annotations: list = []
        self.num_annotations = 0

    def add_image(self, image_id: int, file_name: str, height_width: tuple) -> None:
        height, width = height_width
        self.keep("images", {"id": image_id, "file_name": file_name, "height": int(height), "width": int(width)})

    def add_box(self, image_id: int, class_index: int, x1: float, y1: float, x2: float, y2: float,
                iscrowd: int = 0) -> None:
        width, height = x2 - x1, y2 - y1
        self.num_annotations += 1
        self.keep("annotations", {"id": self.num_annotations, "image_id": image_id,
                                  "category_id": int(class_index), "bbox": [x1, y1, width, height],
                                  "area": max(width, 0.0) * max(height, 0.0), "iscrowd": int(iscrowd)})

    def keep(self, key: str, record: dict) -> None:
        (self.images if key == "images" else self.annotations).append(record)

    def document(self) -> dict:
        return {"images": self.images, "annotations": self.annotations, "categories": self.categories}


def progress_iter(items: list, enabled: bool, what: str):
    """``items``, with a tqdm bar on stderr when ``enabled`` (reading labels of a large set takes seconds)."""
    if not enabled:
        return items
    from tqdm import tqdm

    return tqdm(items, unit="img", desc=what, dynamic_ncols=True, leave=False)


def sorted_problems(problems: list) -> list:
    return sorted(problems, key=lambda p: (p.file, p.line if p.line is not None else 0, p.reason))


__all__ = ["COORDINATE_TOLERANCE", "DocumentBuilder", "FormatError", "IMAGE_SUFFIXES", "ImageSize", "SourceDataset",
           "SourceProblem", "check_exif_frame", "choose_image_root", "image_size_or_problem", "is_within",
           "normalised_path", "progress_iter", "relative_file_name", "sorted_problems"]
