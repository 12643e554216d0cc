"""YOLO txt datasets -> a COCO-style document for the converter.

Two layouts:

- Ultralytics (``data.yaml``): ``path`` (the dataset root; relative to the yaml's folder, default that
  folder), ``train`` / ``val`` / ``test`` each a folder, a list of folders or a ``.txt`` list of images
  (relative to ``path``; an entry starting with ``../`` that does not exist is also tried without it,
  as Ultralytics does), ``names`` as a list or a ``{index: name}`` dict, ``nc`` optional. An image's
  label file is its path with the last ``/images/`` replaced by ``/labels/`` and the suffix by ``.txt``.
- Darknet (``obj.data``, as labelling tools export it): ``names`` (a file with one class name per
  line), ``train`` / ``valid`` (text files listing images), ``classes`` optional; each label file lies
  beside its image. Relative paths are tried against the folder of obj.data, then its parent (Darknet
  resolves them against the folder it runs in, which holds ``data/``).

Lines of an image list are relative to the list's folder, then to the dataset root.

A label line is ``class cx cy w h`` normalised to [0, 1], or a polygon ``class x1 y1 x2 y2 ...`` (three
points or more) whose extent becomes the box. A missing or empty label file is a background image.
Boxes become pixels with the size of the picture itself (read from its header): x1 = (cx - w/2) * W.

Problems, each with its file and line: an image with a bad line (wrong number of fields, not a number,
a class outside ``names``, a value outside [-0.01, 1.01]) is left out whole, as Ultralytics does, so
that it never trains with a missing object; a value in [-0.01, 0) or (1, 1.01] is kept (the converter
clips the box to the image and counts it) and listed; a duplicate line is dropped and listed; a label
file without an image and a listed image that does not exist are listed.
"""
from __future__ import annotations

import dataclasses
import math
import os
from pathlib import Path
from typing import Callable

from .common import (COORDINATE_TOLERANCE, IMAGE_SUFFIXES, DocumentBuilder, FormatError, SourceDataset,
                     SourceProblem, check_exif_frame, choose_image_root, image_size_or_problem, normalised_path,
                     progress_iter, relative_file_name, sorted_problems)

YAML_SUFFIXES = (".yaml", ".yml")
DARKNET_SPLIT_KEYS = {"val": "valid"}     # --split val reads obj.data's "valid"
NOT_LABEL_FILES = frozenset({"classes.txt"})  # written into label folders by labelImg and others


# ----------------------------------------------------------------------------------------------------
# One label file
# ----------------------------------------------------------------------------------------------------

@dataclasses.dataclass
class ParsedLabels:
    """The boxes of one label file, normalised xyxy, and what was wrong with its lines."""

    boxes: list                   # (line, class index, x1, y1, x2, y2) normalised
    errors: list                  # (line, reason, message): the image must be left out
    notes: list                   # (line, reason, message): fixed (duplicate dropped, value slightly outside)


def _not_a_number(fields: list) -> str:
    """Why ``fields`` do not parse as finite numbers."""
    for field in fields:
        try:
            value = float(field)
        except ValueError:
            return f"{field!r} is not a number"
        if not math.isfinite(value):
            return f"{field!r} is not finite"
    return "a value is not finite"


def parse_label_text(text: str, num_classes: int, tolerance: float = COORDINATE_TOLERANCE) -> ParsedLabels:
    """Parse a YOLO label file's text (see the module docstring for the rules)."""
    parsed = ParsedLabels([], [], [])
    first_line_of: dict = {}
    low, high = -tolerance, 1 + tolerance
    for number, line in enumerate(text.splitlines(), start=1):
        fields = line.split()
        count = len(fields)
        if not count:
            continue
        if count != 5 and not (count >= 7 and count % 2 == 1):
            parsed.errors.append((number, "wrong_field_count",
                                  f"{count} fields; a box line has 5 (class cx cy w h), a polygon line 1 + an "
                                  f"even number of at least 6 (class x1 y1 x2 y2 x3 y3 ...)"))
            continue
        try:
            values = list(map(float, fields))
        except ValueError:
            values = None
        if values is None or not math.isfinite(sum(values)):
            parsed.errors.append((number, "not_a_number", _not_a_number(fields)))
            continue
        class_value, coordinates = values[0], values[1:]
        class_index = int(class_value)
        if class_value != class_index:
            parsed.errors.append((number, "unknown_class", f"class {fields[0]!r} is not an integer"))
            continue
        if not 0 <= class_index < num_classes:
            parsed.errors.append((number, "unknown_class",
                                  f"class {class_index} is outside names (0..{num_classes - 1})"))
            continue
        smallest, largest = min(coordinates), max(coordinates)
        if smallest < low or largest > high:
            far = smallest if smallest < low else largest
            parsed.errors.append((number, "coordinates_out_of_range",
                                  f"value {far:g} is outside [0, 1] by more than {tolerance:g}; YOLO "
                                  f"coordinates are normalised to the image size"))
            continue
        key = (class_index, *coordinates)
        if key in first_line_of:
            parsed.notes.append((number, "duplicate_line", f"same as line {first_line_of[key]}; dropped"))
            continue
        first_line_of[key] = number
        if smallest < 0 or largest > 1:
            slight = smallest if smallest < 0 else largest
            parsed.notes.append((number, "slightly_outside",
                                 f"value {slight:g} is slightly outside [0, 1]; the box is clipped to the image"))
        if count == 5:
            cx, cy, w, h = coordinates
            parsed.boxes.append((number, class_index, cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2))
        else:
            xs, ys = coordinates[0::2], coordinates[1::2]
            parsed.boxes.append((number, class_index, min(xs), min(ys), max(xs), max(ys)))
    return parsed


# ----------------------------------------------------------------------------------------------------
# The split: which images, which names, where the labels are
# ----------------------------------------------------------------------------------------------------

@dataclasses.dataclass
class SplitSpec:
    layout: str                   # "ultralytics" or "darknet"
    names: list
    class_order: str              # where the class order comes from (for the manifest)
    root: str                     # the dataset root (preferred image root)
    sources: list                 # absolute folders and list files of the split
    list_bases: list              # folders a relative line of an image list is tried against (after its own)
    label_path: Callable[[str], str]
    problems: list                # SourceProblem found while resolving the split (a missing folder of several)
    files: dict                   # what the manifest records


def ultralytics_label_path(image_path: str) -> str:
    """Ultralytics' rule: the last ``/images/`` becomes ``/labels/``, the suffix ``.txt``."""
    images, labels = f"{os.sep}images{os.sep}", f"{os.sep}labels{os.sep}"
    head, found, tail = image_path.rpartition(images)
    path = head + labels + tail if found else image_path
    return os.path.splitext(path)[0] + ".txt"


def beside_label_path(image_path: str) -> str:
    """Darknet's layout: the label file beside its image."""
    return os.path.splitext(image_path)[0] + ".txt"


def _read_text(path: Path, what: str) -> str:
    try:
        return path.read_text(encoding="utf-8-sig")
    except OSError as error:
        raise FormatError(f"cannot read the {what} {path}: {error.strerror or error}") from error
    except UnicodeDecodeError as error:
        raise FormatError(f"the {what} {path} is not UTF-8 text ({error})") from error


def _yaml_mapping(path: Path) -> tuple[dict, dict]:
    """(the yaml's top-level mapping, {key: line number})."""
    import yaml

    text = _read_text(path, "dataset yaml")
    try:
        data = yaml.safe_load(text)
        node = yaml.compose(text)
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None)
        where = f"{path}:{mark.line + 1}" if mark is not None else str(path)
        raise FormatError(f"{where}: not valid YAML ({getattr(error, 'problem', None) or error})") from error
    if not isinstance(data, dict):
        raise FormatError(f"{path}: expected a mapping with path, train/val/test and names; got "
                          f"{type(data).__name__}")
    lines = {}
    if isinstance(node, yaml.MappingNode):
        lines = {key.value: key.start_mark.line + 1 for key, _ in node.value if isinstance(key, yaml.ScalarNode)}
    return data, lines


def _names_from_yaml(data: dict, lines: dict, path: Path) -> list:
    where = f"{path}:{lines.get('names', lines.get('nc', '?'))}"
    names = data.get("names")
    if names is None:
        if "nc" not in data:
            raise FormatError(f"{path}: neither 'names' nor 'nc'; list the class names under 'names'")
        names = [f"class_{index}" for index in range(_count(data["nc"], f"{path}:{lines.get('nc')}"))]
    elif isinstance(names, dict):
        try:
            keys = sorted(int(key) for key in names)
        except (TypeError, ValueError):
            raise FormatError(f"{where}: the keys of 'names' must be class indices 0, 1, ...") from None
        if keys != list(range(len(keys))):
            raise FormatError(f"{where}: the keys of 'names' must be 0..{len(keys) - 1} without gaps, got {keys}")
        by_index = {int(key): value for key, value in names.items()}
        names = [by_index[index] for index in keys]
    elif not isinstance(names, list):
        raise FormatError(f"{where}: 'names' must be a list or a {{index: name}} mapping, got {type(names).__name__}")
    names = [str(name) for name in names]
    if not names:
        raise FormatError(f"{where}: 'names' is empty; a detection dataset needs at least one class")
    if "nc" in data and _count(data["nc"], f"{path}:{lines.get('nc')}") != len(names):
        raise FormatError(f"{path}:{lines.get('nc')}: nc is {data['nc']} but names lists {len(names)} classes")
    return names


def _count(value, where: str) -> int:
    if type(value) is not int or value < 1:
        raise FormatError(f"{where}: expected a positive integer, got {value!r}")
    return value


def _ultralytics_spec(path: Path, split: str) -> SplitSpec:
    data, lines = _yaml_mapping(path)
    names = _names_from_yaml(data, lines, path)
    yaml_folder = normalised_path(path.parent)
    root = yaml_folder
    if data.get("path") not in (None, ""):
        given = os.path.expanduser(str(data["path"]))
        root = normalised_path(os.path.join(yaml_folder, given))
        if not os.path.isdir(root):
            raise FormatError(f"{path}:{lines.get('path')}: path {data['path']!r} points nowhere ({root} is not a "
                              f"folder); give the dataset root, absolute or relative to the yaml's folder")
    splits = [key for key in ("train", "val", "test") if data.get(key)]
    if not data.get(split):
        raise FormatError(f"{path}: no '{split}' entry (it has {splits or 'none of train, val, test'}); "
                          f"choose one with --split")
    entries = data[split] if isinstance(data[split], list) else [data[split]]
    where = f"{path}:{lines.get(split)}"
    sources, problems = [], []
    for entry in entries:
        if not isinstance(entry, str) or not entry:
            raise FormatError(f"{where}: '{split}' entries must be folder or file paths, got {entry!r}")
        candidate = normalised_path(os.path.join(root, os.path.expanduser(entry)))
        if not os.path.exists(candidate) and entry.startswith("../"):
            candidate = normalised_path(os.path.join(root, entry[3:]))
        if os.path.exists(candidate):
            sources.append(candidate)
        else:
            problems.append(SourceProblem("split_not_found", f"'{split}' entry {entry!r} points nowhere "
                                          f"({candidate} does not exist)", str(path), lines.get(split)))
    if not sources:
        raise FormatError(f"{where}: '{split}' points nowhere: "
                          + "; ".join(p.message for p in problems))
    files = {"data": str(path), "root": root, "split": split, "sources": sources}
    return SplitSpec("ultralytics", names, f"names of {path.name}", root, sources, [root], ultralytics_label_path,
                     problems, files)


def _darknet_mapping(path: Path) -> tuple[dict, dict]:
    values, lines = {}, {}
    for number, line in enumerate(_read_text(path, "Darknet data file").splitlines(), start=1):
        text = line.split("#", 1)[0].strip()
        if not text:
            continue
        key, found, value = text.partition("=")
        if not found:
            raise FormatError(f"{path}:{number}: expected 'key = value', got {line.strip()!r}")
        values[key.strip()], lines[key.strip()] = value.strip(), number
    return values, lines


def _darknet_file(value: str, bases: list) -> str | None:
    for base in bases:
        candidate = normalised_path(os.path.join(base, value))
        if os.path.exists(candidate):
            return candidate
    return None


def _darknet_spec(path: Path, split: str) -> SplitSpec:
    values, lines = _darknet_mapping(path)
    folder = normalised_path(path.parent)
    bases = [folder, os.path.dirname(folder)]
    if "names" not in values:
        raise FormatError(f"{path}: no 'names = FILE' line naming the class names file")
    names_path = _darknet_file(values["names"], bases)
    if names_path is None:
        raise FormatError(f"{path}:{lines['names']}: names {values['names']!r} points nowhere (tried "
                          f"{' and '.join(bases)})")
    names = [line.strip() for line in _read_text(Path(names_path), "class names file").splitlines() if line.strip()]
    if not names:
        raise FormatError(f"{names_path}: no class names; a detection dataset needs at least one class")
    if "classes" in values:
        try:
            declared = int(values["classes"])
        except ValueError:
            raise FormatError(f"{path}:{lines['classes']}: classes {values['classes']!r} is not an integer") from None
        if declared != len(names):
            raise FormatError(f"{path}:{lines['classes']}: classes = {declared} but {names_path} lists "
                              f"{len(names)} names")
    key = DARKNET_SPLIT_KEYS.get(split, split)
    if key not in values:
        present = [k for k in ("train", "valid", "test") if k in values]
        raise FormatError(f"{path}: no '{key}' entry (it has {present or 'none of train, valid'}); choose one "
                          f"with --split")
    source = _darknet_file(values[key], bases)
    if source is None:
        raise FormatError(f"{path}:{lines[key]}: {key} {values[key]!r} points nowhere (tried {' and '.join(bases)})")
    files = {"data": str(path), "names": names_path, "split": split, "sources": [source]}
    return SplitSpec("darknet", names, f"{Path(names_path).name} (named by {path.name})", folder, [source], bases,
                     beside_label_path, [], files)


def read_split_spec(data_file: str | os.PathLike, split: str) -> SplitSpec:
    path = Path(data_file)
    if not path.is_file():
        raise FormatError(f"--data {path} is not a file; give a data.yaml (Ultralytics) or obj.data (Darknet)")
    if path.suffix.lower() in YAML_SUFFIXES:
        return _ultralytics_spec(path, split)
    return _darknet_spec(path, split)


# ----------------------------------------------------------------------------------------------------
# Images of the split
# ----------------------------------------------------------------------------------------------------

def _folder_images(folder: str) -> list:
    found = []
    for parent, folders, files in os.walk(folder, followlinks=True):
        folders.sort()
        found += [os.path.join(parent, name) for name in sorted(files)
                  if os.path.splitext(name)[1].lower() in IMAGE_SUFFIXES]
    return found


def _listed_images(list_file: str, bases: list, problems: list) -> list:
    found = []
    own = os.path.dirname(list_file)
    for number, line in enumerate(_read_text(Path(list_file), "image list").splitlines(), start=1):
        entry = line.strip()
        if not entry:
            continue
        entry = os.path.expanduser(entry)
        tried = [normalised_path(entry)] if os.path.isabs(entry) else \
            [normalised_path(os.path.join(base, entry)) for base in [own, *bases]]
        path = next((candidate for candidate in tried if os.path.isfile(candidate)), None)
        if path is None:
            problems.append(SourceProblem("missing_image", f"image {entry!r} not found (tried "
                                          f"{', '.join(dict.fromkeys(tried))})", list_file, number))
        elif os.path.splitext(path)[1].lower() not in IMAGE_SUFFIXES:
            problems.append(SourceProblem("not_an_image", f"{entry!r} does not have an image suffix "
                                          f"({', '.join(sorted(IMAGE_SUFFIXES))})", list_file, number))
        else:
            found.append(path)
    return found


def split_images(spec: SplitSpec) -> tuple[list, list]:
    """(sorted unique absolute image paths of the split, problems of the image lists)."""
    problems, paths = [], []
    for source in spec.sources:
        paths += _folder_images(source) if os.path.isdir(source) else _listed_images(source, spec.list_bases, problems)
    return sorted(set(paths)), problems


def orphan_label_problems(image_paths: list, spec: SplitSpec) -> list:
    """A label file in the label folders of the split with no image of its name on disk."""
    image_folders: dict = {}
    for path in image_paths:
        image_folders.setdefault(os.path.dirname(spec.label_path(path)), set()).add(os.path.dirname(path))
    skip = {os.path.basename(source) for source in spec.sources if os.path.isfile(source)} | NOT_LABEL_FILES
    problems = []
    for label_folder, folders in sorted(image_folders.items()):
        try:
            label_files = sorted(name for name in os.listdir(label_folder) if name.endswith(".txt"))
        except OSError:
            continue
        expected = set()
        for folder in folders:
            expected |= {os.path.basename(spec.label_path(path)) for path in _images_in(folder)}
        for name in label_files:
            if name not in expected and name not in skip:
                problems.append(SourceProblem("label_without_image", "label file without an image (no image "
                                              f"of this name in {' or '.join(sorted(folders))})",
                                              os.path.join(label_folder, name)))
    return problems


def _images_in(folder: str) -> list:
    try:
        return [os.path.join(folder, name) for name in os.listdir(folder)
                if os.path.splitext(name)[1].lower() in IMAGE_SUFFIXES]
    except OSError:
        return []


# ----------------------------------------------------------------------------------------------------
# The reader
# ----------------------------------------------------------------------------------------------------

def _read_labels(label_path: str, num_classes: int) -> tuple[ParsedLabels | None, str | None]:
    """(parsed labels or None, why the file cannot be read); a missing file is a background image."""
    try:
        with open(label_path, "rb") as handle:
            raw = handle.read()
    except FileNotFoundError:
        return ParsedLabels([], [], []), None
    except OSError as error:
        return None, f"cannot read the label file: {error.strerror or error}"
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as error:
        return None, f"the label file is not UTF-8 text ({error.reason} at byte {error.start})"
    return parse_label_text(text, num_classes), None


def read_yolo_dataset(data_file: str | os.PathLike, split: str = "train", *, exif_frame: str = "auto",
                      progress: bool = False, builder_factory: Callable = DocumentBuilder) -> SourceDataset:
    """Read the ``split`` of a YOLO txt dataset (``data.yaml`` or ``obj.data``) into a SourceDataset.

    ``exif_frame`` says which frame of an EXIF-rotated picture the normalised labels refer to: "auto" and
    "displayed" the displayed one (what Ultralytics and labelling tools use), "stored" the stored one.
    ``progress`` shows a tqdm bar while the labels and image headers are read. Raises FormatError when
    the dataset cannot be read at all. ``builder_factory(names, image_root)`` makes the DocumentBuilder
    the records go to (a spilling one keeps them out of memory: ``convert.reader_stream``).
    """
    check_exif_frame(exif_frame)
    spec = read_split_spec(data_file, split)
    paths, list_problems = split_images(spec)
    if not paths:
        raise FormatError(f"{data_file}: the '{split}' split has no images ({', '.join(spec.sources)})"
                          + "".join(f"\n  {p.describe()}" for p in list_problems[:20]))
    root = choose_image_root(paths, spec.root)
    builder = builder_factory(spec.names, root)
    problems = list(spec.problems) + list_problems
    num_duplicates = num_slight = 0
    for image_id, path in enumerate(progress_iter(paths, progress, "reading labels"), start=1):
        file_name = relative_file_name(path, root)
        label_path = spec.label_path(path)
        parsed, unreadable = _read_labels(label_path, len(spec.names))
        if parsed is None:
            problems.append(SourceProblem("unreadable_label", unreadable, label_path, image=file_name,
                                          image_id=image_id))
            continue
        for line, reason, message in parsed.notes:
            problems.append(SourceProblem(reason, message, label_path, line, is_error=False))
        num_duplicates += sum(1 for note in parsed.notes if note[1] == "duplicate_line")
        num_slight += sum(1 for note in parsed.notes if note[1] == "slightly_outside")
        if parsed.errors:
            problems += [SourceProblem(reason, message, label_path, line, image=file_name, image_id=image_id)
                         for line, reason, message in parsed.errors]
            continue
        size, problem = image_size_or_problem(path, file_name, image_id)
        if problem is not None:
            problems.append(problem)
            continue
        height, width = size.frame(exif_frame)
        builder.add_image(image_id, file_name, (height, width))
        for _, class_index, x1, y1, x2, y2 in parsed.boxes:
            builder.add_box(image_id, class_index, x1 * width, y1 * height, x2 * width, y2 * height)
    problems += orphan_label_problems(paths, spec)
    source = {"format": "yolo", "layout": spec.layout, **spec.files, "class_order": spec.class_order,
              "exif_frame": exif_frame, "num_images_found": len(paths),
              "duplicate_lines_dropped": num_duplicates, "values_slightly_outside": num_slight}
    return SourceDataset("yolo", Path(root), builder.document(), sorted_problems(problems), source)
