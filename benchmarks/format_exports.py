"""Write a COCO-style dataset out as YOLO txt and as Pascal VOC XML, following each format's conventions,
for benchmarks/convert_throughput.py and the tests of the format readers (images are symbolic links to
the originals: the bytes stay real).

Conventions written here (the readers must undo them exactly):
- YOLO: ``class cx cy w h`` normalised by the image width and height (or a polygon ``class x1 y1 ...``),
  class = index of the category in id order; crowd annotations are left out (YOLO txt has no crowd).
- VOC: corners 1-based and inclusive, xmin = x + 1, xmax = x + w (pixel-edge x, w); with
  ``integer=True`` rounded to whole pixels as labelling tools write them: xmin = round(x) + 1,
  xmax = round(x + w). Crowd annotations become ``<difficult>1</difficult>``.
"""
from __future__ import annotations

import json
import os
from pathlib import Path
from xml.sax.saxutils import escape


def category_order(document: dict) -> list:
    """Categories sorted by id: list position = class index."""
    return sorted(document["categories"], key=lambda c: c["id"])


def annotations_by_image(document: dict) -> dict:
    found: dict = {}
    for ann in document["annotations"]:
        found.setdefault(ann["image_id"], []).append(ann)
    return found


def _link(source: Path, link: Path) -> None:
    link.parent.mkdir(parents=True, exist_ok=True)
    os.symlink(os.path.abspath(source), link)


def yolo_line(class_index: int, values, precision: int | None) -> str:
    text = [repr(float(v)) if precision is None else f"{v:.{precision}f}" for v in values]
    return " ".join([str(class_index), *text])


def write_yolo(document: dict, image_dir: Path, dest: Path, *, layout: str = "ultralytics",
               precision: int | None = None, polygons: bool = False, names_as_dict: bool = False,
               split: str = "train", empty_label_file_for_background: bool = True) -> Path:
    """The dataset as YOLO txt in ``dest``; returns the data file (data.yaml or obj.data).

    ``layout`` "ultralytics": images/<split>/<file_name>, labels/<split>/<stem>.txt, data.yaml with
    ``path: .`` and ``<split>: images/<split>``. "darknet": obj_<split>_data/<file_name> with the label
    beside it, <split>.txt listing ``obj_<split>_data/<file_name>``, obj.names and obj.data (CVAT's
    "YOLO 1.1" export). ``polygons`` writes each annotation's first segmentation polygon instead of its
    box. A background image gets an empty label file or none, alternately.
    """
    categories = category_order(document)
    index_of = {c["id"]: k for k, c in enumerate(categories)}
    names = [c["name"] for c in categories]
    by_image = annotations_by_image(document)
    listed = []
    background_count = 0
    for record in sorted(document["images"], key=lambda r: r["id"]):
        width, height = record["width"], record["height"]
        if layout == "ultralytics":
            image_path = dest / "images" / split / record["file_name"]
            label_path = dest / "labels" / split / Path(record["file_name"]).with_suffix(".txt")
        else:
            image_path = dest / f"obj_{split}_data" / record["file_name"]
            label_path = image_path.with_suffix(".txt")
        _link(image_dir / record["file_name"], image_path)
        listed.append(image_path.relative_to(dest).as_posix())
        lines = []
        for ann in by_image.get(record["id"], []):
            if ann.get("iscrowd", 0):
                continue
            if polygons:  # every polygon of the object in one line: the extent stays the object's
                polygon = [v for part in ann["segmentation"] for v in part]
                values = [v / (width if k % 2 == 0 else height) for k, v in enumerate(polygon)]
            else:
                x, y, w, h = ann["bbox"]
                values = [(x + w / 2) / width, (y + h / 2) / height, w / width, h / height]
            lines.append(yolo_line(index_of[ann["category_id"]], values, precision))
        label_path.parent.mkdir(parents=True, exist_ok=True)
        if lines:
            label_path.write_text("\n".join(lines) + "\n")
        else:
            background_count += 1
            if empty_label_file_for_background and background_count % 2 == 1:
                label_path.write_text("")
    if layout == "ultralytics":
        names_yaml = ("\n".join(f"  {k}: {json.dumps(n)}" for k, n in enumerate(names)) if names_as_dict
                      else "\n".join(f"  - {json.dumps(n)}" for n in names))
        data = dest / "data.yaml"
        data.write_text(f"path: .\n{split}: images/{split}\nnc: {len(names)}\nnames:\n{names_yaml}\n")
        return data
    (dest / "obj.names").write_text("\n".join(names) + "\n")
    (dest / f"{split}.txt").write_text("\n".join(listed) + "\n")
    data = dest / "obj.data"
    data.write_text(f"classes = {len(names)}\n{'valid' if split == 'val' else split} = {split}.txt\n"
                    f"names = obj.names\nbackup = backup/\n")
    return data


def voc_corners(bbox, integer: bool) -> list:
    x, y, w, h = bbox
    if integer:
        return [round(x) + 1, round(y) + 1, round(x + w), round(y + h)]
    return [x + 1, y + 1, x + w, y + h]


def voc_xml(record: dict, annotations: list, names_of: dict, *, integer: bool) -> str:
    objects = []
    for ann in annotations:
        corners = voc_corners(ann["bbox"], integer)
        text = [str(v) if integer else repr(float(v)) for v in corners]
        objects.append(
            "\t<object>\n"
            f"\t\t<name>{escape(names_of[ann['category_id']])}</name>\n"
            "\t\t<pose>Unspecified</pose>\n\t\t<truncated>0</truncated>\n"
            f"\t\t<difficult>{int(ann.get('iscrowd', 0))}</difficult>\n"
            "\t\t<bndbox>\n"
            f"\t\t\t<xmin>{text[0]}</xmin>\n\t\t\t<ymin>{text[1]}</ymin>\n"
            f"\t\t\t<xmax>{text[2]}</xmax>\n\t\t\t<ymax>{text[3]}</ymax>\n"
            "\t\t</bndbox>\n\t</object>\n")
    return ("<annotation>\n\t<folder>JPEGImages</folder>\n"
            f"\t<filename>{escape(Path(record['file_name']).name)}</filename>\n"
            f"\t<size>\n\t\t<width>{record['width']}</width>\n\t\t<height>{record['height']}</height>\n"
            "\t\t<depth>3</depth>\n\t</size>\n\t<segmented>0</segmented>\n" + "".join(objects) + "</annotation>\n")


def write_voc(document: dict, image_dir: Path, dest: Path, *, integer: bool = False, split: str | None = "train",
              names_file: bool = True) -> Path:
    """The dataset as Pascal VOC in ``dest`` (Annotations/, JPEGImages/, ImageSets/Main/<split>.txt and,
    with ``names_file``, names.txt in category-id order); returns ``dest``."""
    categories = category_order(document)
    names_of = {c["id"]: c["name"] for c in categories}
    by_image = annotations_by_image(document)
    (dest / "Annotations").mkdir(parents=True, exist_ok=True)
    keys = []
    for record in sorted(document["images"], key=lambda r: r["id"]):
        name = Path(record["file_name"]).name
        _link(image_dir / record["file_name"], dest / "JPEGImages" / name)
        key = Path(name).stem
        keys.append(key)
        (dest / "Annotations" / f"{key}.xml").write_text(
            voc_xml(record, by_image.get(record["id"], []), names_of, integer=integer))
    if split is not None:
        (dest / "ImageSets" / "Main").mkdir(parents=True, exist_ok=True)
        (dest / "ImageSets" / "Main" / f"{split}.txt").write_text("\n".join(sorted(keys)) + "\n")
    if names_file:
        (dest / "names.txt").write_text("\n".join(c["name"] for c in categories) + "\n")
    return dest


def polygon_extent_document(document: dict) -> dict:
    """The document with every bbox replaced by the extent of the annotation's polygons: what a labelling
    tool that stores the drawn shapes exports as the COCO box."""
    annotations = []
    for ann in document["annotations"]:
        xs = [v for polygon in ann["segmentation"] for v in polygon[0::2]]
        ys = [v for polygon in ann["segmentation"] for v in polygon[1::2]]
        annotations.append({**ann, "bbox": [min(xs), min(ys), max(xs) - min(xs), max(ys) - min(ys)]})
    return {**document, "annotations": annotations}
