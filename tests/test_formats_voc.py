"""The Pascal VOC reader (yolodata.formats.voc): the corner convention, difficult objects, class order and
every bad input, on coco128 and labelme_voc3 written out as VOC XML by the test (tests/dataset_exports.py)
and on hand-written files."""
from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest

from benchmarks.format_exports import category_order, polygon_extent_document, write_voc
from test_formats_yolo import assert_same_boxes, boxes_by_name, coco128_document
from yolodata.formats import FormatError, read_voc_dataset
from yolodata.formats.voc import XmlProblem, parse_xml, read_annotation, voc_corners_to_xyxy


def test_voc_corners_land_on_coco_pixel_edges():
    # xmin = 1, xmax = W covers the whole width: pixel edges 0 .. W
    assert voc_corners_to_xyxy((1, 1, 500, 375)) == (0.0, 0.0, 500.0, 375.0)
    # a one-pixel box at 1-based column 10, row 20 covers [9, 10) x [19, 20)
    assert voc_corners_to_xyxy((10, 20, 10, 20)) == (9.0, 19.0, 10.0, 20.0)
    assert voc_corners_to_xyxy((48.5, 240.25, 195.5, 371.75)) == (47.5, 239.25, 195.5, 371.75)


def test_xml_elements_carry_their_lines():
    root = parse_xml(b"<annotation>\n  <object>\n    <name>dog</name>\n  </object>\n</annotation>\n")
    assert (root.tag, root.line) == ("annotation", 1)
    obj = root.find("object")
    assert (obj.line, obj.find("name").line, obj.find("name").text) == (2, 3, "dog")


def test_parts_of_an_object_do_not_replace_its_box():
    annotation = read_annotation(
        b"<annotation><object><name>person</name><bndbox><xmin>10</xmin><ymin>20</ymin><xmax>110</xmax>"
        b"<ymax>220</ymax></bndbox><part><name>head</name><bndbox><xmin>50</xmin><ymin>20</ymin>"
        b"<xmax>70</xmax><ymax>40</ymax></bndbox></part></object></annotation>")
    (obj,) = annotation.objects
    assert obj.name == "person" and obj.corners == (10, 20, 110, 220) and not obj.difficult
    assert annotation.size_wh is None


# ----------------------------------------------------------------------------------------------------
# coco128 written out as VOC reads back as the COCO json says
# ----------------------------------------------------------------------------------------------------

def test_coco128_as_voc_reads_back_to_the_json_boxes_with_crowd_as_difficult(coco128_dir, tmp_path):
    document = coco128_document(coco128_dir)
    voc_dir = write_voc(document, coco128_dir / "val2017", tmp_path / "voc")
    dataset = read_voc_dataset(voc_dir, "train", names_file=voc_dir / "names.txt")
    assert dataset.problems == [] and dataset.source_format == "voc"
    got = dataset.document
    assert [c["name"] for c in got["categories"]] == [c["name"] for c in category_order(document)]
    assert [r["file_name"] for r in got["images"]] == [
        "JPEGImages/" + r["file_name"] for r in sorted(document["images"], key=lambda r: r["file_name"])]
    index_of = {c["id"]: k for k, c in enumerate(category_order(document))}
    assert_same_boxes(boxes_by_name(got, skip_crowd=False), boxes_by_name(document, skip_crowd=False,
                                                                          index_of=index_of), atol=1e-6)
    assert sum(a["iscrowd"] for a in got["annotations"]) == 10
    assert dataset.source["difficult"] == "ignore" and dataset.source["num_difficult"] == 10
    assert "names.txt" in dataset.source["class_order"]


@pytest.mark.parametrize("mode, boxes, crowd", [("keep", 939, 0), ("drop", 929, 0), ("ignore", 939, 10)])
def test_difficult_objects_are_ignored_kept_or_dropped(coco128_dir, tmp_path, mode, boxes, crowd):
    voc_dir = write_voc(coco128_document(coco128_dir), coco128_dir / "val2017", tmp_path / "voc")
    got = read_voc_dataset(voc_dir, "train", names_file=voc_dir / "names.txt", difficult=mode).document
    assert len(got["annotations"]) == boxes and sum(a["iscrowd"] for a in got["annotations"]) == crowd
    assert len(got["images"]) == 128


def test_without_a_names_file_classes_are_the_sorted_names_of_every_split(coco128_dir, tmp_path):
    document = coco128_document(coco128_dir, 20)
    voc_dir = write_voc(document, coco128_dir / "val2017", tmp_path / "voc", split="train", names_file=False)
    keys = sorted(p.stem for p in (voc_dir / "Annotations").iterdir())
    (voc_dir / "ImageSets" / "Main" / "val.txt").write_text("\n".join(keys[:3]) + "\n")
    all_names = sorted({c["name"] for c in document["categories"]
                        if any(a["category_id"] == c["id"] for a in document["annotations"])})
    val = read_voc_dataset(voc_dir, "val")
    train = read_voc_dataset(voc_dir, "train")
    every = read_voc_dataset(voc_dir)
    for dataset in (val, train, every):
        assert [c["name"] for c in dataset.document["categories"]] == all_names
        assert "sorted names" in dataset.source["class_order"]
    assert len(val.document["images"]) == 3 and len(every.document["images"]) == 20


def test_labelme_photos_as_integer_voc_are_within_half_a_pixel_of_the_drawn_shapes(labelme_dir, tmp_path):
    """Real VOC photos; corners rounded to whole pixels as labelling tools write them."""
    document = polygon_extent_document(json.loads((labelme_dir / "annotations.json").read_text()))
    voc_dir = write_voc(document, labelme_dir, tmp_path / "voc", integer=True)
    dataset = read_voc_dataset(voc_dir, "train", names_file=voc_dir / "names.txt")
    assert dataset.problems == []
    assert {r["file_name"]: (r["width"], r["height"]) for r in dataset.document["images"]} == {
        r["file_name"]: (r["width"], r["height"]) for r in document["images"]}  # sizes from the JPEGs
    assert_same_boxes(boxes_by_name(dataset.document, skip_crowd=False),
                      boxes_by_name(document, skip_crowd=False), atol=0.5)
    text = (voc_dir / "Annotations" / "2011_000003.xml").read_text()
    assert "<xmin>193</xmin>" in text  # the shape's left edge 191.81 rounds to pixel edge 192 -> 1-based 193


# ----------------------------------------------------------------------------------------------------
# Bad input: named with file and line
# ----------------------------------------------------------------------------------------------------

GOOD_OBJECT = ("  <object>\n    <name>{name}</name>\n    <difficult>0</difficult>\n    <bndbox>\n"
               "      <xmin>{0}</xmin>\n      <ymin>{1}</ymin>\n      <xmax>{2}</xmax>\n      <ymax>{3}</ymax>\n"
               "    </bndbox>\n  </object>\n")


def voc_with(labelme_dir: Path, dest: Path, xml_of: dict) -> Path:
    """A VOC folder with labelme_voc3's three photos; ``xml_of[key]`` replaces that image's XML text."""
    document = polygon_extent_document(json.loads((labelme_dir / "annotations.json").read_text()))
    voc_dir = write_voc(document, labelme_dir, dest, integer=True)
    for key, text in xml_of.items():
        (voc_dir / "Annotations" / f"{key}.xml").write_text(text)
    return voc_dir


def xml_text(*objects: str, size=(500, 338), filename="2011_000003.jpg") -> str:
    size_text = "" if size is None else (f"  <size>\n    <width>{size[0]}</width>\n    <height>{size[1]}</height>\n"
                                         f"    <depth>3</depth>\n  </size>\n")
    return f"<annotation>\n  <filename>{filename}</filename>\n{size_text}{''.join(objects)}</annotation>\n"


BAD_XML = {  # case -> (xml text of 2011_000003, reason, line, words)
    "malformed": (xml_text(GOOD_OBJECT.format(1, 1, 50, 50, name="person")).replace("</name>", "</nam>"),
                  "malformed_xml", 9, "mismatched tag"),
    "no_name": (xml_text(GOOD_OBJECT.format(1, 1, 50, 50, name="person").replace("<name>person</name>", "")),
                "malformed_xml", 8, "<object> has no <name>"),
    "no_box": (xml_text("  <object>\n    <name>person</name>\n  </object>\n"), "malformed_xml", 8, "has no <bndbox>"),
    "not_a_number": (xml_text(GOOD_OBJECT.format(1, "ten", 50, 50, name="person")), "malformed_xml", 13,
                     "<ymin> 'ten' is not a number"),
    "missing_corner": (xml_text(GOOD_OBJECT.format(1, 1, 50, 50, name="person").replace("<xmax>50</xmax>", "")),
                       "malformed_xml", 11, "<bndbox> has no <xmax>"),
    "inverted": (xml_text(GOOD_OBJECT.format(60, 1, 50, 50, name="person")), "malformed_xml", 11, "xmax < xmin"),
    "difficult_word": (xml_text(GOOD_OBJECT.format(1, 1, 50, 50, name="person").replace(
        "<difficult>0<", "<difficult>yes<")), "malformed_xml", 10, "<difficult> 'yes' must be 0 or 1"),
    "unknown_class": (xml_text(GOOD_OBJECT.format(1, 1, 50, 50, name="person"), GOOD_OBJECT.format(
        1, 1, 50, 50, name="unicorn")), "unknown_class", 18, "class 'unicorn' is not in"),
    "far_outside": (xml_text(GOOD_OBJECT.format(1, 1, 560, 50, name="person")), "coordinates_out_of_range", 8,
                    "more than 1% outside the 500x338 image"),
    "size_mismatch": (xml_text(GOOD_OBJECT.format(1, 1, 50, 50, name="person"), size=(640, 480)), "size_mismatch", 3,
                      "<size> says 640x480 (width x height) but the image is 500x338"),
    "missing_image": (xml_text(GOOD_OBJECT.format(1, 1, 50, 50, name="person"), filename="gone.jpg").replace(
        "2011_000003", "x"), "missing_image", 2, "image gone.jpg not found"),
    "doctype": ('<?xml version="1.0"?>\n<!DOCTYPE a [<!ENTITY e "boom">]>\n' + xml_text(), "malformed_xml", 2,
                "DTD and entity declarations are not allowed"),
}


@pytest.mark.parametrize("case", sorted(BAD_XML))
def test_each_bad_xml_skips_its_image_and_names_file_and_line(labelme_dir, tmp_path, case):
    text, reason, line, words = BAD_XML[case]
    if case == "missing_image":  # the XML of an id whose image is not in JPEGImages
        voc_dir = voc_with(labelme_dir, tmp_path / "voc", {})
        os.unlink(voc_dir / "JPEGImages" / "2011_000003.jpg")
        (voc_dir / "Annotations" / "2011_000003.xml").write_text(text)
    else:
        voc_dir = voc_with(labelme_dir, tmp_path / "voc", {"2011_000003": text})
    dataset = read_voc_dataset(voc_dir, "train", names_file=voc_dir / "names.txt")
    (problem,) = dataset.problems
    xml_path = str(voc_dir / "Annotations" / "2011_000003.xml")
    assert (problem.reason, problem.file, problem.line) == (reason, xml_path, line)
    assert words in problem.message, problem.message
    assert problem.is_error and problem.image.startswith("JPEGImages/")
    assert f"{xml_path}:{line}:" in problem.describe()
    assert sorted(r["file_name"] for r in dataset.document["images"]) == [
        "JPEGImages/2011_000006.jpg", "JPEGImages/2011_000025.jpg"]
    assert dataset.document["images"][0]["id"] == 2  # ids given before the bad image was left out


def test_an_id_of_the_split_without_its_xml_is_named_by_split_file_and_line(labelme_dir, tmp_path):
    voc_dir = voc_with(labelme_dir, tmp_path / "voc", {})
    os.unlink(voc_dir / "Annotations" / "2011_000025.xml")
    split_file = voc_dir / "ImageSets" / "Main" / "train.txt"
    split_file.write_text(split_file.read_text() + "2011_000003\n")  # a repeated id: dropped, listed
    dataset = read_voc_dataset(voc_dir, "train", names_file=voc_dir / "names.txt")
    found = [(p.reason, p.file, p.line, p.image, p.is_error) for p in dataset.problems]
    assert found == [("missing_annotation_file", str(split_file), 3, "JPEGImages/2011_000025.jpg", True),
                     ("duplicate_line", str(split_file), 4, None, False)]
    assert "2011_000025.xml does not exist" in dataset.problems[0].message
    assert len(dataset.document["images"]) == 2


def test_a_missing_size_is_not_checked_and_boxes_may_touch_the_edges(labelme_dir, tmp_path):
    text = xml_text(GOOD_OBJECT.format(1, 1, 500, 338, name="person"), GOOD_OBJECT.format(0, 2, 503, 40, name="dog"),
                    size=None)
    voc_dir = voc_with(labelme_dir, tmp_path / "voc", {"2011_000003": text})
    dataset = read_voc_dataset(voc_dir, "train", names_file=voc_dir / "names.txt")
    assert dataset.problems == []
    first = dataset.document["annotations"][0]
    assert first["bbox"] == [0.0, 0.0, 500.0, 338.0]
    assert dataset.document["annotations"][1]["bbox"] == [-1.0, 1.0, 504.0, 39.0]  # the converter clips it


def test_exif_rotated_picture_with_size_of_either_frame(quirks_dir, tmp_path):
    voc_dir = tmp_path / "voc"
    (voc_dir / "Annotations").mkdir(parents=True)
    (voc_dir / "JPEGImages").mkdir()
    os.symlink(quirks_dir / "mmcv" / "color_exif.jpg", voc_dir / "JPEGImages" / "a.jpg")  # 400x300, shown 300x400
    os.symlink(quirks_dir / "mmcv" / "color_exif.jpg", voc_dir / "JPEGImages" / "b.jpg")
    os.symlink(quirks_dir / "mmcv" / "color_exif.jpg", voc_dir / "JPEGImages" / "c.jpg")
    box = GOOD_OBJECT.format(1, 1, 10, 10, name="thing")
    (voc_dir / "Annotations" / "a.xml").write_text(xml_text(box, size=(300, 400), filename="a.jpg"))
    (voc_dir / "Annotations" / "b.xml").write_text(xml_text(box, size=(400, 300), filename="b.jpg"))
    (voc_dir / "Annotations" / "c.xml").write_text(xml_text(box, size=(300, 300), filename="c.jpg"))
    dataset = read_voc_dataset(voc_dir)
    assert [(r["file_name"], r["width"], r["height"]) for r in dataset.document["images"]] == [
        ("JPEGImages/a.jpg", 300, 400), ("JPEGImages/b.jpg", 400, 300)]
    assert [(p.reason, p.image) for p in dataset.problems] == [("size_mismatch", "JPEGImages/c.jpg")]
    assert "300x400 displayed, 400x300 as stored" in dataset.problems[0].message
    displayed = read_voc_dataset(voc_dir, exif_frame="displayed")
    assert [r["file_name"] for r in displayed.document["images"]] == ["JPEGImages/a.jpg"]


@pytest.mark.parametrize("setup, words", [
    ("no_annotations", "has no Annotations/ folder"),
    ("no_split", "split 'val': "),
    ("names_missing", "cannot read the names file"),
    ("names_twice", "names.txt:3: class 'aeroplane' is listed twice (first on line 2)"),
])
def test_a_voc_folder_that_cannot_be_used_stops_with_a_message(labelme_dir, tmp_path, setup, words):
    voc_dir = voc_with(labelme_dir, tmp_path / "voc", {})
    names, split = voc_dir / "names.txt", "train"
    if setup == "no_annotations":
        voc_dir = tmp_path / "empty"
        voc_dir.mkdir()
    elif setup == "no_split":
        split = "val"
    elif setup == "names_missing":
        names = voc_dir / "gone.txt"
    elif setup == "names_twice":
        names.write_text("_background_\naeroplane\naeroplane\n")
    with pytest.raises(FormatError) as caught:
        read_voc_dataset(voc_dir, split, names_file=names)
    assert words in str(caught.value)
    if setup == "no_split":
        assert "splits there: ['train']" in str(caught.value)


def test_xml_problem_reports_the_line_of_a_parse_error():
    with pytest.raises(XmlProblem) as caught:
        parse_xml(b"<annotation>\n<object>\n</annotation>")
    assert caught.value.line == 3


def test_reading_does_not_modify_the_source_files(labelme_dir, tmp_path):
    voc_dir = voc_with(labelme_dir, tmp_path / "voc", {})
    before = {p: p.read_bytes() for p in voc_dir.rglob("*") if p.is_file()}
    read_voc_dataset(voc_dir, "train", names_file=voc_dir / "names.txt")
    assert {p: p.read_bytes() for p in voc_dir.rglob("*") if p.is_file()} == before
    assert np.array_equal(np.fromfile(labelme_dir / "JPEGImages" / "2011_000003.jpg", np.uint8),
                          np.fromfile(voc_dir / "JPEGImages" / "2011_000003.jpg", np.uint8))


def test_a_filename_escaping_jpegimages_is_not_followed(labelme_dir, tmp_path):
    text = xml_text(GOOD_OBJECT.format(1, 1, 50, 50, name="person"), filename="../../names.txt")
    voc_dir = voc_with(labelme_dir, tmp_path / "voc", {"2011_000003": text})
    dataset = read_voc_dataset(voc_dir, "train", names_file=voc_dir / "names.txt")
    assert dataset.problems == []
    assert "JPEGImages/2011_000003.jpg" in [r["file_name"] for r in dataset.document["images"]]
