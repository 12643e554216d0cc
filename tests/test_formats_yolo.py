"""The YOLO txt reader (yolodata.formats.yolo_txt): layouts, conventions and every bad input, on
coco128 written out as YOLO txt by the test (tests/dataset_exports.py) and on hand-written files."""
from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest

from benchmarks.format_exports import category_order, write_yolo
from yolodata.formats import FormatError, read_yolo_dataset
from yolodata.formats.yolo_txt import parse_label_text, ultralytics_label_path

COCO128_JSON = Path("annotations") / "instances_val2017.json"


def coco128_document(coco128_dir: Path, count: int | None = None) -> dict:
    document = json.loads((coco128_dir / COCO128_JSON).read_text())
    if count is not None:
        images = sorted(document["images"], key=lambda r: r["id"])[:count]
        keep = {r["id"] for r in images}
        document = {**document, "images": images,
                    "annotations": [a for a in document["annotations"] if a["image_id"] in keep]}
    return document


def boxes_by_name(document: dict, *, skip_crowd: bool, index_of: dict | None = None) -> dict:
    """{image base name: (sorted rows of class, x1, y1, x2, y2, iscrowd) float64}."""
    names = {r["id"]: Path(r["file_name"]).name for r in document["images"]}
    index_of = index_of or {c["id"]: c["id"] for c in document["categories"]}
    rows: dict = {name: [] for name in names.values()}
    for ann in document["annotations"]:
        if skip_crowd and ann.get("iscrowd", 0):
            continue
        x, y, w, h = ann["bbox"]
        rows[names[ann["image_id"]]].append((index_of[ann["category_id"]], x, y, x + w, y + h,
                                             ann.get("iscrowd", 0)))
    return {name: np.array(sorted(found), np.float64).reshape(-1, 6) for name, found in rows.items()}


def assert_same_boxes(got: dict, want: dict, atol: float) -> None:
    assert sorted(got) == sorted(want)
    for name in want:
        assert got[name].shape == want[name].shape, name
        np.testing.assert_array_equal(got[name][:, [0, 5]], want[name][:, [0, 5]], err_msg=name)
        np.testing.assert_allclose(got[name][:, 1:5], want[name][:, 1:5], rtol=0, atol=atol, err_msg=name)


# ----------------------------------------------------------------------------------------------------
# Label lines
# ----------------------------------------------------------------------------------------------------

def test_a_box_line_is_centre_and_size_normalised():
    parsed = parse_label_text("2 0.5 0.25 0.2 0.1\n", num_classes=3)
    assert parsed.errors == [] and parsed.notes == []
    (line, cls, x1, y1, x2, y2), = parsed.boxes
    assert (line, cls) == (1, 2)
    np.testing.assert_allclose([x1, y1, x2, y2], [0.4, 0.2, 0.6, 0.3])


def test_a_polygon_line_becomes_its_extent():
    parsed = parse_label_text("0 0.1 0.2 0.5 0.1 0.3 0.7 0.2 0.4\n", num_classes=1)
    (_, cls, x1, y1, x2, y2), = parsed.boxes
    assert cls == 0 and (x1, y1, x2, y2) == (0.1, 0.1, 0.5, 0.7)


def test_blank_lines_and_windows_line_ends_are_fine():
    parsed = parse_label_text("\r\n0 0.5 0.5 0.2 0.2\r\n\r\n   \n1 0.5 0.5 0.1 0.1", num_classes=2)
    assert [b[0] for b in parsed.boxes] == [2, 5] and not parsed.errors


@pytest.mark.parametrize("text, reason, words", [
    ("0 0.5 0.5 0.2\n", "wrong_field_count", "4 fields"),
    ("0 0.5 0.5 0.2 0.2 0.9\n", "wrong_field_count", "6 fields"),
    ("0 0.1 0.1 0.2 0.2 0.3\n", "wrong_field_count", "6 fields"),           # a polygon of 2.5 points
    ("0 0.5 zero 0.2 0.2\n", "not_a_number", "'zero' is not a number"),
    ("0 0.5 nan 0.2 0.2\n", "not_a_number", "not finite"),
    ("3 0.5 0.5 0.2 0.2\n", "unknown_class", "class 3 is outside names (0..2)"),
    ("-1 0.5 0.5 0.2 0.2\n", "unknown_class", "class -1 is outside names"),
    ("1.5 0.5 0.5 0.2 0.2\n", "unknown_class", "not an integer"),
    ("0 0.5 0.5 1.2 0.2\n", "coordinates_out_of_range", "value 1.2 is outside [0, 1]"),
    ("0 320 240 50 60\n", "coordinates_out_of_range", "normalised"),           # pixels written by mistake
])
def test_bad_lines_are_named_by_line_and_reason(text, reason, words):
    parsed = parse_label_text("1 0.5 0.5 0.1 0.1\n" + text, num_classes=3)
    assert len(parsed.errors) == 1
    line, got_reason, message = parsed.errors[0]
    assert (line, got_reason) == (2, reason) and words in message


def test_slight_overshoot_is_kept_and_noted_and_duplicates_are_dropped_and_noted():
    parsed = parse_label_text("0 0.5 0.5 0.2 0.2\n0 1.005 0.5 0.02 0.2\n0 0.5 0.5 0.2 0.2\n0 0.5 0.5 0.20 0.2\n",
                              num_classes=1)
    assert parsed.errors == []
    assert [b[0] for b in parsed.boxes] == [1, 2]
    assert [(line, reason) for line, reason, _ in parsed.notes] == [
        (2, "slightly_outside"), (3, "duplicate_line"), (4, "duplicate_line")]
    assert "same as line 1" in parsed.notes[1][2]


def test_label_path_replaces_the_last_images_folder():
    sep = os.sep
    path = sep.join(["", "data", "images", "set", "images", "train", "a.b.jpg"])
    assert ultralytics_label_path(path) == sep.join(["", "data", "images", "set", "labels", "train", "a.b.txt"])
    assert ultralytics_label_path(sep.join(["", "d", "x.png"])) == sep.join(["", "d", "x.txt"])  # beside


# ----------------------------------------------------------------------------------------------------
# coco128 written out as YOLO txt reads back as the COCO json says
# ----------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("layout, names_as_dict", [("ultralytics", True), ("ultralytics", False), ("darknet", False)])
def test_coco128_as_yolo_reads_back_to_the_json_boxes(coco128_dir, tmp_path, layout, names_as_dict):
    document = coco128_document(coco128_dir)
    data = write_yolo(document, coco128_dir / "val2017", tmp_path / "yolo", layout=layout,
                      names_as_dict=names_as_dict)
    dataset = read_yolo_dataset(data, "train")
    assert dataset.problems == [] and dataset.source_format == "yolo"
    assert dataset.image_root == tmp_path / "yolo"
    got = dataset.document
    assert [c["name"] for c in got["categories"]] == [c["name"] for c in category_order(document)]
    assert [c["id"] for c in got["categories"]] == list(range(80))
    assert len(got["images"]) == 128
    folder = "images/train/" if layout == "ultralytics" else "obj_train_data/"
    assert [r["file_name"] for r in got["images"]] == [folder + r["file_name"] for r in
                                                       sorted(document["images"], key=lambda r: r["file_name"])]
    assert [r["id"] for r in got["images"]] == list(range(1, 129))
    sizes = {Path(r["file_name"]).name: (r["width"], r["height"]) for r in got["images"]}
    assert sizes == {r["file_name"]: (r["width"], r["height"]) for r in document["images"]}
    index_of = {c["id"]: k for k, c in enumerate(category_order(document))}
    want = boxes_by_name(document, skip_crowd=True, index_of=index_of)
    assert_same_boxes(boxes_by_name(got, skip_crowd=False), want, atol=1e-6)
    assert sum(len(v) for v in want.values()) == 939 - 10 == len(got["annotations"])
    assert dataset.source["layout"] == layout and dataset.source["class_order"]


def test_six_decimal_labels_are_within_a_thousandth_of_a_pixel_at_640(coco128_dir, tmp_path):
    """What Ultralytics and labelling tools write (%.6f): at most 640 * 5e-7 px off per coordinate."""
    document = coco128_document(coco128_dir, 16)
    data = write_yolo(document, coco128_dir / "val2017", tmp_path / "yolo", precision=6)
    got = read_yolo_dataset(data).document
    index_of = {c["id"]: k for k, c in enumerate(category_order(document))}
    assert_same_boxes(boxes_by_name(got, skip_crowd=False), boxes_by_name(document, skip_crowd=True,
                                                                          index_of=index_of), atol=1e-3)


# ----------------------------------------------------------------------------------------------------
# Layout variants
# ----------------------------------------------------------------------------------------------------

def small_yolo(coco128_dir: Path, dest: Path, count: int = 4, **options) -> tuple[Path, dict]:
    document = coco128_document(coco128_dir, count)
    return write_yolo(document, coco128_dir / "val2017", dest, **options), document


def test_split_as_an_image_list_with_dot_slash_and_root_relative_lines(coco128_dir, tmp_path):
    data, document = small_yolo(coco128_dir, tmp_path / "d")
    names = sorted(p.name for p in (tmp_path / "d" / "images" / "train").iterdir())
    (tmp_path / "d" / "lists").mkdir()
    (tmp_path / "d" / "lists" / "train.txt").write_text(
        f"../images/train/{names[0]}\n\n./../images/train/{names[1]}\nimages/train/{names[2]}\n")
    text = data.read_text().replace("train: images/train", "train: lists/train.txt")
    data.write_text(text)
    dataset = read_yolo_dataset(data)
    assert [r["file_name"] for r in dataset.document["images"]] == [f"images/train/{n}" for n in names[:3]]
    assert dataset.problems == []


def test_split_as_a_list_of_folders_and_roboflow_parent_paths(coco128_dir, tmp_path):
    document = coco128_document(coco128_dir, 6)
    first = {**document, "images": document["images"][:3]}
    second = {**document, "images": document["images"][3:]}
    write_yolo(first, coco128_dir / "val2017", tmp_path / "d" / "train")
    write_yolo(second, coco128_dir / "val2017", tmp_path / "d" / "extra")
    data = tmp_path / "d" / "data.yaml"
    # Roboflow writes '../train/images' relative to a root one level up; Ultralytics retries without '../'
    data.write_text("train: [../train/images/train, extra/images/train]\nnames: " +
                    json.dumps([c["name"] for c in category_order(document)]) + "\n")
    dataset = read_yolo_dataset(data)
    assert len(dataset.document["images"]) == 6 and dataset.problems == []
    assert dataset.image_root == tmp_path / "d"
    assert dataset.document["images"][0]["file_name"].startswith("extra/images/train/")


def test_names_from_nc_alone_and_image_root_outside_path(coco128_dir, tmp_path):
    data, _ = small_yolo(coco128_dir, tmp_path / "d")
    outside = tmp_path / "elsewhere"
    outside.mkdir()
    moved = outside / "config.yaml"
    moved.write_text(f"path: {tmp_path / 'd'}\ntrain: images/train\nnc: 80\n")
    dataset = read_yolo_dataset(moved)
    assert dataset.document["categories"][5] == {"id": 5, "name": "class_5"}
    assert dataset.image_root == tmp_path / "d"


def test_exif_rotated_pictures_take_the_displayed_frame_or_the_stored_one(quirks_dir, tmp_path):
    images = tmp_path / "d" / "images" / "train"
    images.mkdir(parents=True)
    (tmp_path / "d" / "labels" / "train").mkdir(parents=True)
    os.symlink(quirks_dir / "mmcv" / "color_exif.jpg", images / "color_exif.jpg")  # stored 400x300, shown 300x400
    (tmp_path / "d" / "labels" / "train" / "color_exif.txt").write_text("0 0.5 0.5 0.5 0.25\n")
    data = tmp_path / "d" / "data.yaml"
    data.write_text("train: images/train\nnames: [thing]\n")
    displayed = read_yolo_dataset(data).document
    assert (displayed["images"][0]["width"], displayed["images"][0]["height"]) == (300, 400)
    assert displayed["annotations"][0]["bbox"] == [75.0, 150.0, 150.0, 100.0]
    stored = read_yolo_dataset(data, exif_frame="stored").document
    assert (stored["images"][0]["width"], stored["images"][0]["height"]) == (400, 300)
    assert stored["annotations"][0]["bbox"] == [100.0, 112.5, 200.0, 75.0]


# ----------------------------------------------------------------------------------------------------
# Bad input: named with file and line; the image is left out, the others are not
# ----------------------------------------------------------------------------------------------------

def label_file(dest: Path, image_record: dict) -> Path:
    return dest / "labels" / "train" / Path(image_record["file_name"]).with_suffix(".txt")


def test_each_bad_label_line_skips_its_image_and_names_file_and_line(coco128_dir, tmp_path):
    dest = tmp_path / "d"
    data, document = small_yolo(coco128_dir, dest, count=8)
    records = [r for r in sorted(document["images"], key=lambda r: r["file_name"])]
    annotated = [r for r in records if label_file(dest, r).exists() and label_file(dest, r).read_text()]
    cases = {  # image index in `annotated` -> (line appended, reason)
        0: ("80 0.5 0.5 0.1 0.1", "unknown_class"),
        1: ("0 0.5 0.5 1.5 0.1", "coordinates_out_of_range"),
        2: ("0 0.5 0.5 0.1", "wrong_field_count"),
        3: ("0 0.5 0.5 0.1 O.1", "not_a_number"),
    }
    expected = {}
    for position, (line, reason) in cases.items():
        path = label_file(dest, annotated[position])
        text = path.read_text()
        path.write_text(text + line + "\n")
        expected[reason] = (str(path), len(text.splitlines()) + 1, "images/train/" + annotated[position]["file_name"])
    # a duplicate line and a slight overshoot: fixed and listed, the image is kept
    kept = label_file(dest, annotated[4])
    lines = kept.read_text().splitlines()
    kept.write_text("\n".join(lines + [lines[0], "0 1.004 0.5 0.02 0.1"]) + "\n")
    dataset = read_yolo_dataset(data)
    errors = {p.reason: p for p in dataset.errors}
    assert sorted(errors) == sorted(expected)
    for reason, (file, line, image) in expected.items():
        problem = errors[reason]
        assert (problem.file, problem.line, problem.image) == (file, line, image), reason
        assert f"{file}:{line}:" in problem.describe() and image in problem.describe()
    notes = [(p.reason, p.file, p.line) for p in dataset.problems if not p.is_error]
    assert notes == [("duplicate_line", str(kept), len(lines) + 1), ("slightly_outside", str(kept), len(lines) + 2)]
    assert dataset.source["duplicate_lines_dropped"] == 1 and dataset.source["values_slightly_outside"] == 1
    converted = {r["file_name"] for r in dataset.document["images"]}
    assert converted == {"images/train/" + r["file_name"] for r in records} - {e[2] for e in expected.values()}
    assert dataset.skipped_images == sorted(e[2] for e in expected.values())
    # ids were given before leaving images out: the kept images keep theirs
    assert [r["id"] for r in dataset.document["images"]] == [
        k + 1 for k, r in enumerate(records) if "images/train/" + r["file_name"] in converted]


def test_a_label_file_without_an_image_and_a_listed_image_that_is_missing(coco128_dir, tmp_path):
    dest = tmp_path / "d"
    data, _ = small_yolo(coco128_dir, dest, layout="darknet")
    orphan = dest / "obj_train_data" / "renamed_away.txt"
    orphan.write_text("0 0.5 0.5 0.1 0.1\n")
    (dest / "obj_train_data" / "classes.txt").write_text("person\n")  # labelImg's names file: not a label
    listing = dest / "train.txt"
    lines = listing.read_text().splitlines()
    listing.write_text("\n".join(lines + ["obj_train_data/not_there.jpg", "obj.names"]) + "\n")
    dataset = read_yolo_dataset(data)
    found = [(p.reason, p.file, p.line, p.image) for p in dataset.problems]
    assert found == [("label_without_image", str(orphan), None, None),
                     ("missing_image", str(listing), len(lines) + 1, None),
                     ("not_an_image", str(listing), len(lines) + 2, None)]
    assert "not found" in dataset.problems[1].message and "not_there.jpg" in dataset.problems[1].message
    assert len(dataset.document["images"]) == 4


def test_an_unreadable_label_file_and_an_undecodable_image_are_named(coco128_dir, tmp_path):
    dest = tmp_path / "d"
    data, document = small_yolo(coco128_dir, dest)
    first = sorted(document["images"], key=lambda r: r["file_name"])[0]
    label_file(dest, first).write_bytes(b"0 0.5 0.5 0.1 0.1\n\xff\xfe\n")
    (dest / "images" / "train" / "broken.jpg").write_bytes(b"not an image at all")
    dataset = read_yolo_dataset(data)
    found = {p.reason: p for p in dataset.problems}
    assert sorted(found) == ["undecodable", "unreadable_label"]
    assert found["unreadable_label"].image == "images/train/" + first["file_name"]
    assert "not UTF-8" in found["unreadable_label"].message
    assert found["undecodable"].image == "images/train/broken.jpg"


@pytest.mark.parametrize("yaml_text, words", [
    ("path: nowhere\ntrain: images/train\nnames: [a]\n", "data.yaml:1: path 'nowhere' points nowhere"),
    ("train: images/nothing\nnames: [a]\n", "data.yaml:1: 'train' points nowhere"),
    ("val: images/train\nnames: [a]\n", "no 'train' entry (it has ['val'])"),
    ("train: images/train\n", "neither 'names' nor 'nc'"),
    ("train: images/train\nnc: 2\nnames: [a]\n", "data.yaml:2: nc is 2 but names lists 1 classes"),
    ("train: images/train\nnames: {0: a, 2: b}\n", "data.yaml:2: the keys of 'names' must be 0..1 without gaps"),
    ("train: images/train\nnames: [a\n", "not valid YAML"),
    ("- just\n- a list\n", "expected a mapping"),
])
def test_a_data_yaml_that_cannot_be_used_stops_with_file_and_line(coco128_dir, tmp_path, yaml_text, words):
    data, _ = small_yolo(coco128_dir, tmp_path / "d")
    data.write_text(yaml_text)
    with pytest.raises(FormatError) as caught:
        read_yolo_dataset(data)
    assert words in str(caught.value)


def test_one_missing_folder_of_several_is_listed_not_fatal(coco128_dir, tmp_path):
    data, _ = small_yolo(coco128_dir, tmp_path / "d")
    data.write_text(data.read_text().replace("train: images/train", "train: [images/train, images/gone]"))
    dataset = read_yolo_dataset(data)
    assert [(p.reason, p.line) for p in dataset.problems] == [("split_not_found", 2)]
    assert "'images/gone' points nowhere" in dataset.problems[0].message
    assert len(dataset.document["images"]) == 4


@pytest.mark.parametrize("obj_data, words", [
    ("train = train.txt\n", "no 'names = FILE' line"),
    ("names = gone.names\ntrain = train.txt\n", "obj.data:1: names 'gone.names' points nowhere"),
    ("names = obj.names\ntrain = gone.txt\n", "obj.data:2: train 'gone.txt' points nowhere"),
    ("classes = 3\nnames = obj.names\ntrain = train.txt\n", "obj.data:1: classes = 3 but"),
    ("names = obj.names\nvalid = train.txt\n", "no 'train' entry (it has ['valid'])"),
    ("names obj.names\n", "obj.data:1: expected 'key = value'"),
])
def test_an_obj_data_that_cannot_be_used_stops_with_file_and_line(coco128_dir, tmp_path, obj_data, words):
    data, _ = small_yolo(coco128_dir, tmp_path / "d", layout="darknet")
    data.write_text(obj_data)
    with pytest.raises(FormatError) as caught:
        read_yolo_dataset(data)
    assert words in str(caught.value)


def test_darknet_paths_relative_to_the_folder_above_obj_data(coco128_dir, tmp_path):
    """The classic Darknet layout: obj.data in data/, every path written as data/..."""
    dest = tmp_path / "darknet" / "data"
    data, _ = small_yolo(coco128_dir, dest, layout="darknet", split="val")
    data.write_text("classes = 80\nvalid = data/val.txt\nnames = data/obj.names\nbackup = backup/\n")
    listing = dest / "val.txt"
    listing.write_text("".join(f"data/{line}\n" for line in listing.read_text().split()))
    dataset = read_yolo_dataset(data, "val")
    assert len(dataset.document["images"]) == 4 and dataset.problems == []
    assert dataset.image_root == dest
    assert dataset.document["images"][0]["file_name"].startswith("obj_val_data/")


def test_reading_a_large_set_shows_progress(coco128_dir, tmp_path, capsys):
    data, _ = small_yolo(coco128_dir, tmp_path / "d")
    read_yolo_dataset(data, progress=True)
    assert "reading labels" in capsys.readouterr().err
    read_yolo_dataset(data)
    assert capsys.readouterr().err == ""
