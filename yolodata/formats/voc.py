"""Pascal VOC XML datasets -> a COCO-style document for the converter.

Layout: ``VOC_DIR/Annotations/<id>.xml``, ``VOC_DIR/JPEGImages/`` and, for a split,
``VOC_DIR/ImageSets/Main/<split>.txt`` (one id per line); without a split every XML of Annotations/.
The image is ``JPEGImages/<filename>`` (the XML's ``<filename>``), else ``JPEGImages/<id>.<suffix>``;
its ``file_name`` in the document is relative to VOC_DIR (``JPEGImages/2011_000003.jpg``).

Coordinates: VOC's ``<bndbox>`` corners are 1-based pixel indices, inclusive: xmin = 1, xmax = W covers
the whole width. In COCO's (and the converter's) pixel-edge coordinates the same box is

    x1 = xmin - 1,  y1 = ymin - 1,  x2 = xmax,  y2 = ymax   (COCO bbox [xmin - 1, ymin - 1,
                                                             xmax - xmin + 1, ymax - ymin + 1])

Non-integer corners (some tools write them) go through the same formula.

``difficult`` objects: "ignore" (default) keeps them as crowd-like boxes (``iscrowd`` 1: never a
training target, ignored by COCO evaluation as crowd boxes are), "keep" makes them ordinary objects,
"drop" leaves them out (counted).

Class order: the lines of a names file, else the sorted names found in every XML of Annotations/ (all
splits, so that the train and val conversions of one VOC folder agree). Category id = class index.

The image size comes from the picture (its header); ``<size>`` is checked against it (the displayed
frame, or with ``exif_frame`` "auto" the stored frame of an EXIF-rotated picture when only that one
fits, which the converter then stores re-encoded in that frame). A missing or zero ``<size>`` is not
checked.

Problems, each with its file and line: a malformed XML, an object without a name or with a bad box,
a class missing from the names file, a corner more than 1% of the image size outside it, a
``<size>`` that disagrees with the picture, a missing image: the image is left out and listed; a
split line whose XML does not exist is listed.
"""
from __future__ import annotations

import dataclasses
import math
import os
from pathlib import Path
from typing import Callable
from xml.etree import ElementTree
from xml.parsers import expat

from .common import (COORDINATE_TOLERANCE, IMAGE_SUFFIXES, DocumentBuilder, FormatError, SourceDataset,
                     SourceProblem, check_exif_frame, image_size_or_problem, normalised_path, progress_iter,
                     relative_file_name, sorted_problems)

DIFFICULT_MODES = ("ignore", "keep", "drop")
ANNOTATIONS_FOLDER, IMAGES_FOLDER, SPLITS_FOLDER = "Annotations", "JPEGImages", os.path.join("ImageSets", "Main")


# ----------------------------------------------------------------------------------------------------
# XML with line numbers
# ----------------------------------------------------------------------------------------------------

@dataclasses.dataclass
class XmlElement:
    tag: str
    line: int
    children: list = dataclasses.field(default_factory=list)
    text: str = ""

    def find(self, tag: str) -> XmlElement | None:
        return next((child for child in self.children if child.tag == tag), None)

    def findall(self, tag: str) -> list:
        return [child for child in self.children if child.tag == tag]


class XmlProblem(ValueError):
    def __init__(self, line: int | None, message: str):
        super().__init__(message)
        self.line = line


def parse_xml(data: bytes) -> XmlElement:
    """The element tree of ``data`` with each element's line; XmlProblem (with the line) when it is not
    well-formed. Entity and DTD declarations are refused (a VOC file has none)."""
    parser = expat.ParserCreate()
    stack: list = []
    root: list = []

    def start(tag, attributes):
        element = XmlElement(tag, parser.CurrentLineNumber)
        if stack:
            stack[-1].children.append(element)
        else:
            root.append(element)
        stack.append(element)

    def end(tag):
        element = stack.pop()
        element.text = element.text.strip()

    def characters(text):
        if stack:
            stack[-1].text += text

    def refuse(*args):
        raise XmlProblem(parser.CurrentLineNumber, "DTD and entity declarations are not allowed in a VOC file")

    parser.StartElementHandler, parser.EndElementHandler = start, end
    parser.CharacterDataHandler = characters
    parser.StartDoctypeDeclHandler = refuse
    parser.EntityDeclHandler = refuse
    try:
        parser.Parse(data, True)
    except expat.ExpatError as error:
        raise XmlProblem(error.lineno, f"malformed XML: {expat.ErrorString(error.code)} "
                                       f"(line {error.lineno}, column {error.offset + 1})") from None
    return root[0]


# ----------------------------------------------------------------------------------------------------
# One annotation file
# ----------------------------------------------------------------------------------------------------

@dataclasses.dataclass
class VocObject:
    name: str
    corners: tuple                # xmin, ymin, xmax, ymax as written (1-based, inclusive)
    difficult: bool
    line: int | None              # None when read by the fast path (see read_annotation)


@dataclasses.dataclass
class VocAnnotation:
    filename: str | None
    filename_line: int | None
    size_wh: tuple | None         # <size> width, height when stated (non-zero)
    size_line: int | None
    objects: list


def _text(element) -> str:
    return (element.text or "").strip() if element is not None else ""


def _line(element) -> int | None:
    return getattr(element, "line", None)  # an ElementTree element (fast path) has none


def _number(element, what: str, parent) -> float:
    text = _text(element)
    if not text:
        raise XmlProblem(_line(parent), f"<{parent.tag}> has no <{what}>")
    try:
        value = float(text)
    except ValueError:
        raise XmlProblem(_line(element), f"<{what}> {text!r} is not a number") from None
    if not math.isfinite(value):
        raise XmlProblem(_line(element), f"<{what}> {text!r} is not a finite number")
    return value


def _annotation_from_tree(root) -> VocAnnotation:
    """The VocAnnotation of an element tree (ElementTree's or parse_xml's: the same checks)."""
    if root.tag != "annotation":
        raise XmlProblem(_line(root), f"the root element is <{root.tag}>, expected <annotation>")
    filename = root.find("filename")
    size, size_wh = root.find("size"), None
    if size is not None and size.find("width") is not None and size.find("height") is not None:
        width, height = _number(size.find("width"), "width", size), _number(size.find("height"), "height", size)
        if width != int(width) or height != int(height) or width < 0 or height < 0:
            raise XmlProblem(_line(size), f"<size> {width:g} x {height:g} is not a pixel count")
        if width > 0 and height > 0:
            size_wh = (int(width), int(height))
    objects = []
    for element in root.findall("object"):
        name = _text(element.find("name"))
        if not name:
            raise XmlProblem(_line(element), "<object> has no <name>")
        box = element.find("bndbox")
        if box is None:
            raise XmlProblem(_line(element), f"<object> {name!r} has no <bndbox>")
        corners = tuple(_number(box.find(key), key, box) for key in ("xmin", "ymin", "xmax", "ymax"))
        if corners[2] < corners[0] or corners[3] < corners[1]:
            raise XmlProblem(_line(box), f"<bndbox> of {name!r} has xmax < xmin or ymax < ymin "
                                         f"({', '.join(f'{v:g}' for v in corners)})")
        difficult = element.find("difficult")
        flag = _text(difficult) or "0"
        if flag not in ("0", "1"):
            raise XmlProblem(_line(difficult), f"<difficult> {flag!r} must be 0 or 1")
        objects.append(VocObject(name, corners, flag == "1", _line(element)))
    return VocAnnotation(_text(filename) or None, _line(filename), size_wh, _line(size), objects)


def read_annotation(data: bytes, *, lines: bool = False) -> VocAnnotation:
    """The parts of a VOC XML the converter uses; XmlProblem naming the line of the first bad element.

    ElementTree's C parser reads the file (fast); the line-keeping parser (``parse_xml``) reads it again
    only when something is wrong, to name the line, or when ``lines`` asks for every element's line.
    """
    if not lines and b"<!DOCTYPE" not in data and b"<!ENTITY" not in data:
        try:
            return _annotation_from_tree(ElementTree.fromstring(data))
        except (ElementTree.ParseError, XmlProblem):
            pass
    return _annotation_from_tree(parse_xml(data))


def voc_corners_to_xyxy(corners: tuple) -> tuple:
    """VOC's 1-based inclusive corners -> pixel-edge x1, y1, x2, y2 (see the module docstring)."""
    xmin, ymin, xmax, ymax = corners
    return xmin - 1.0, ymin - 1.0, float(xmax), float(ymax)


# ----------------------------------------------------------------------------------------------------
# The dataset
# ----------------------------------------------------------------------------------------------------

def read_names_file(path: str | os.PathLike) -> list:
    path = Path(path)
    try:
        lines = path.read_text(encoding="utf-8-sig").splitlines()
    except OSError as error:
        raise FormatError(f"cannot read the names file {path}: {error.strerror or error}") from error
    except UnicodeDecodeError as error:
        raise FormatError(f"the names file {path} is not UTF-8 text ({error})") from error
    names, seen = [], {}
    for number, line in enumerate(lines, start=1):
        name = line.strip()
        if not name:
            continue
        if name in seen:
            raise FormatError(f"{path}:{number}: class {name!r} is listed twice (first on line {seen[name]})")
        seen[name] = number
        names.append(name)
    if not names:
        raise FormatError(f"the names file {path} lists no class names")
    return names


def _split_ids(voc_dir: Path, split: str | None) -> tuple[list, str | None, list]:
    """([(id, split file line or None)], split file or None, notes) in id order."""
    annotations = voc_dir / ANNOTATIONS_FOLDER
    if split is None:
        ids = sorted(path.stem for path in annotations.iterdir() if path.suffix.lower() == ".xml")
        return [(image_id, None) for image_id in ids], None, []
    split_file = voc_dir / SPLITS_FOLDER / f"{split}.txt"
    if not split_file.is_file():
        folder = voc_dir / SPLITS_FOLDER
        present = sorted(p.stem for p in folder.glob("*.txt") if "_" not in p.stem) if folder.is_dir() else []
        raise FormatError(f"split {split!r}: {split_file} does not exist (splits there: {present or 'none'}); "
                          f"leave --split out to convert every XML of {annotations}")
    try:
        lines = split_file.read_text(encoding="utf-8-sig").splitlines()
    except (OSError, UnicodeDecodeError) as error:
        raise FormatError(f"cannot read the split file {split_file}: {error}") from error
    first: dict = {}
    notes = []
    for number, line in enumerate(lines, start=1):
        fields = line.split()
        if not fields:
            continue
        if fields[0] in first:
            notes.append(SourceProblem("duplicate_line", f"id {fields[0]} again (first on line {first[fields[0]]}); "
                                       f"dropped", str(split_file), number, is_error=False))
            continue
        first[fields[0]] = number
    return sorted(first.items()), str(split_file), notes


def _image_path(voc_dir: Path, image_key: str, annotation: VocAnnotation) -> str | None:
    """JPEGImages/<filename> when it exists (a <filename> escaping JPEGImages is not used), else
    JPEGImages/<id>.<image suffix>; None when neither exists."""
    images = os.path.join(str(voc_dir), IMAGES_FOLDER)
    if annotation.filename is not None:
        candidate = normalised_path(os.path.join(images, annotation.filename))
        if candidate.startswith(images + os.sep) and os.path.isfile(candidate):
            return candidate
    for suffix in sorted(IMAGE_SUFFIXES):
        for name in (image_key + suffix, image_key + suffix.upper()):
            candidate = os.path.join(images, name)
            if os.path.isfile(candidate):
                return candidate
    return None


def _image_name(voc_dir: Path, key: str) -> str:
    """The file name (relative to VOC_DIR) of the image of ``key`` for a message about it."""
    path = _image_path(voc_dir, key, VocAnnotation(None, None, None, None, []))
    return relative_file_name(path, str(voc_dir)) if path is not None else f"{IMAGES_FOLDER}/{key}.<image suffix>"


def _other_names(voc_dir: Path, read_keys: set) -> set:
    """Class names of every readable XML of Annotations/ outside ``read_keys`` (bad files are reported
    by the conversion that reads them)."""
    names = set()
    for path in (voc_dir / ANNOTATIONS_FOLDER).iterdir():
        if path.suffix.lower() != ".xml" or path.stem in read_keys:
            continue
        try:
            names |= {obj.name for obj in read_annotation(path.read_bytes()).objects}
        except (OSError, XmlProblem):
            continue
    return names


def _choose_frame(size, annotation: VocAnnotation, exif_frame: str) -> tuple[tuple | None, str | None]:
    """((height, width) of the frame the XML describes, None) or (None, why <size> fits no frame)."""
    if annotation.size_wh is None:
        return size.frame(exif_frame), None
    stated = (annotation.size_wh[1], annotation.size_wh[0])
    frames = [size.frame(exif_frame)] if exif_frame != "auto" else [size.displayed_hw, size.stored_hw]
    if stated in frames:
        return stated, None
    shown = f"{size.displayed_hw[1]}x{size.displayed_hw[0]}"
    if size.stored_hw != size.displayed_hw:
        shown += f" displayed, {size.stored_hw[1]}x{size.stored_hw[0]} as stored"
    return None, (f"<size> says {stated[1]}x{stated[0]} (width x height) but the image is {shown}")


@dataclasses.dataclass
class _CheckedImage:
    file_name: str | None
    frame: tuple | None           # (height, width) the XML describes
    problems: list
    from_file_size: bool = False  # the problem is the image file's own (no line of the XML to name)


def _check_image(voc_dir: Path, key: str, where: str, annotation: VocAnnotation, image_id: int, index_of: dict,
                 names_file, exif_frame: str) -> _CheckedImage:
    """The image of one parsed XML, its frame, and what is wrong with the pair (see the module docstring)."""
    path = _image_path(voc_dir, key, annotation)
    if path is None:
        named = annotation.filename or f"{key}.<image suffix>"
        return _CheckedImage(None, None, [SourceProblem(
            "missing_image", f"image {named} not found in {voc_dir / IMAGES_FOLDER}", where, annotation.filename_line,
            image=f"{IMAGES_FOLDER}/{named}", image_id=image_id)])
    file_name = relative_file_name(path, str(voc_dir))
    size, problem = image_size_or_problem(path, file_name, image_id)
    if problem is not None:
        return _CheckedImage(file_name, None, [problem], from_file_size=True)
    frame, mismatch = _choose_frame(size, annotation, exif_frame)
    if mismatch is not None:
        return _CheckedImage(file_name, None, [SourceProblem("size_mismatch", mismatch, where, annotation.size_line,
                                                             image=file_name, image_id=image_id)])
    height, width = frame
    limits = (-COORDINATE_TOLERANCE * width, -COORDINATE_TOLERANCE * height,
              (1 + COORDINATE_TOLERANCE) * width, (1 + COORDINATE_TOLERANCE) * height)
    problems = []
    for obj in annotation.objects:
        if obj.name not in index_of:
            problems.append(SourceProblem("unknown_class", f"class {obj.name!r} is not in {names_file}", where,
                                          obj.line, image=file_name, image_id=image_id))
            continue
        x1, y1, x2, y2 = voc_corners_to_xyxy(obj.corners)
        if x1 < limits[0] or y1 < limits[1] or x2 > limits[2] or y2 > limits[3]:
            problems.append(SourceProblem(
                "coordinates_out_of_range", f"<bndbox> of {obj.name!r} ({', '.join(f'{v:g}' for v in obj.corners)}) "
                f"reaches more than {COORDINATE_TOLERANCE:.0%} outside the {width}x{height} image", where, obj.line,
                image=file_name, image_id=image_id))
    return _CheckedImage(file_name, frame, problems)


def _read_xml(voc_dir: Path, key: str, split_line, split_file, image_id: int):
    """(the parsed XML of ``key`` or None, its path, None or the SourceProblem of why it cannot be read)."""
    xml_path = voc_dir / ANNOTATIONS_FOLDER / f"{key}.xml"
    try:
        return read_annotation(xml_path.read_bytes()), xml_path, None
    except FileNotFoundError:
        problem = SourceProblem("missing_annotation_file", f"id {key}: {xml_path} does not exist",
                                split_file or str(xml_path), split_line, image=_image_name(voc_dir, key),
                                image_id=image_id)
    except OSError as error:
        problem = SourceProblem("unreadable_annotation", f"cannot read: {error.strerror or error}", str(xml_path),
                                image=_image_name(voc_dir, key), image_id=image_id)
    except XmlProblem as error:
        problem = SourceProblem("malformed_xml", str(error), str(xml_path), error.line,
                                image=_image_name(voc_dir, key), image_id=image_id)
    return None, xml_path, problem


def _names_of_xml(voc_dir: Path, ids: list, split: str | None, progress: bool) -> list:
    """Sorted class names of the readable XMLs of ``ids`` (and, for a split, of every other XML of
    Annotations/): the class order without a names file. A first pass over the files, so that the
    second one builds the records without holding every parsed file."""
    names = set()
    for key, _ in progress_iter(ids, progress, "reading class names"):
        annotation, _, _ = _read_xml(voc_dir, key, None, None, 0)
        if annotation is not None:
            names |= {obj.name for obj in annotation.objects}
    if split is not None:
        names |= _other_names(voc_dir, {key for key, _ in ids})
    return sorted(names)


def _add_boxes(builder, image_id: int, annotation: VocAnnotation, index_of: dict, difficult: str,
               num_difficult: dict) -> None:
    for obj in annotation.objects:
        mode = difficult if obj.difficult else None
        if mode is not None:
            num_difficult[mode] += 1
        if mode == "drop":
            continue
        builder.add_box(image_id, index_of[obj.name], *voc_corners_to_xyxy(obj.corners), iscrowd=int(mode == "ignore"))


def read_voc_dataset(voc_dir: str | os.PathLike, split: str | None = None, *, names_file=None,
                     difficult: str = "ignore", exif_frame: str = "auto", progress: bool = False,
                     builder_factory: Callable = DocumentBuilder) -> SourceDataset:
    """Read a Pascal VOC folder (every XML, or the ids of ``ImageSets/Main/<split>.txt``) into a
    SourceDataset. Raises FormatError when the folder, split or names file cannot be used.
    ``builder_factory(names, image_root)`` makes the DocumentBuilder the records go to (as
    ``read_yolo_dataset``); each XML is parsed, checked and handed over in turn (without a names file
    a first pass reads the class names)."""
    check_exif_frame(exif_frame)
    if difficult not in DIFFICULT_MODES:
        raise ValueError(f"difficult must be one of {DIFFICULT_MODES}, got {difficult!r}")
    voc_dir = Path(normalised_path(voc_dir))
    if not (voc_dir / ANNOTATIONS_FOLDER).is_dir():
        raise FormatError(f"--voc_dir {voc_dir} has no {ANNOTATIONS_FOLDER}/ folder; give the folder that holds "
                          f"{ANNOTATIONS_FOLDER}/, {IMAGES_FOLDER}/ and ImageSets/")
    ids, split_file, problems = _split_ids(voc_dir, split)
    if not ids:
        raise FormatError(f"no annotations to convert in {split_file or voc_dir / ANNOTATIONS_FOLDER}")
    if names_file is not None:
        names, class_order = read_names_file(names_file), f"lines of {names_file}"
    else:
        names = _names_of_xml(voc_dir, ids, split, progress)
        class_order = f"sorted names of every XML in {voc_dir / ANNOTATIONS_FOLDER}"
        if not names:
            raise FormatError(f"no <object> in the XML files of {voc_dir / ANNOTATIONS_FOLDER}: no class names; "
                              f"give a names file")
    index_of = {name: index for index, name in enumerate(names)}
    builder = builder_factory(names, voc_dir)
    num_difficult = {"ignore": 0, "keep": 0, "drop": 0}
    for image_id, (key, split_line) in enumerate(progress_iter(ids, progress, "reading XML"), start=1):
        annotation, xml_path, problem = _read_xml(voc_dir, key, split_line, split_file, image_id)
        if problem is not None:
            problems.append(problem)
            continue
        checked = _check_image(voc_dir, key, str(xml_path), annotation, image_id, index_of, names_file, exif_frame)
        if checked.problems and not checked.from_file_size:
            # name the lines: read the file again with the line-keeping parser (only for bad files)
            lined = read_annotation(xml_path.read_bytes(), lines=True)
            checked = _check_image(voc_dir, key, str(xml_path), lined, image_id, index_of, names_file, exif_frame)
        if checked.problems:
            problems += checked.problems
            continue
        builder.add_image(image_id, checked.file_name, checked.frame)
        _add_boxes(builder, image_id, annotation, index_of, difficult, num_difficult)
    source = {"format": "voc", "voc_dir": str(voc_dir), "split": split, "split_file": split_file,
              "names_file": None if names_file is None else str(names_file), "class_order": class_order,
              "difficult": difficult, "exif_frame": exif_frame, "num_images_found": len(ids),
              "difficult_objects": {"ignore": "kept as crowd-like ignored boxes", "keep": "kept as objects",
                                    "drop": "dropped"}[difficult], "num_difficult": sum(num_difficult.values())}
    return SourceDataset("voc", voc_dir, builder.document(), sorted_problems(problems), source)
