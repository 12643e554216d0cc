"""YOLO txt and Pascal VOC through the converter: rows equal to the COCO json conversion of the same
images, the same outputs (manifest with the source format and class order, annotations.json for
evaluation), and every bad input named with its file and line, skipped by default, fatal with --strict."""
from __future__ import annotations

import hashlib
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from benchmarks.format_exports import category_order, polygon_extent_document, write_voc, write_yolo
from yolodata import manifest as manifest_lib
from yolodata.convert import ConversionError, convert_coco, convert_voc, convert_yolo
from yolodata.image_io import decode_stored
from yolodata.verify import verify_output

ROOT = Path(__file__).resolve().parents[1]
TOOL = ROOT / "tools" / "coco2mindrecord.py"
COCO128_JSON = Path("annotations") / "instances_val2017.json"


def read_rows(output_dir) -> list[dict]:
    import mindspore.dataset as ds

    files = manifest_lib.load_manifest(output_dir).shard_paths
    dataset = ds.MindDataset(str(files[0]), shuffle=False)
    return list(dataset.create_dict_iterator(output_numpy=True, num_epochs=1))


def manifest_of(output_dir) -> dict:
    """manifest.json as written, after the typed reader has checked it and the files it names."""
    return manifest_lib.load_manifest(output_dir).to_dict()


def text_of(value) -> str:
    value = value.item() if isinstance(value, np.ndarray) else value
    return value.decode() if isinstance(value, bytes) else str(value)


def row_labels(row, *, skip_crowd: bool = False) -> np.ndarray:
    """float64 (M, 6) class, x1, y1, x2, y2, iscrowd of a row, sorted."""
    n = int(row["num_boxes"])
    labels = np.concatenate([row["classes"].reshape(-1, 1)[:n], row["boxes"].reshape(-1, 4)[:n],
                             row["iscrowd"].reshape(-1, 1)[:n]], axis=1).astype(np.float64)
    if skip_crowd:
        labels = labels[labels[:, 5] == 0]
    return labels[np.lexsort(labels.T[::-1])]


def assert_rows_match(got: list, want: list, *, atol: float, skip_crowd_in_want: bool = False,
                      compare_bytes: bool = True) -> None:
    """Same pictures (by base name), sizes, classes, crowd flags; boxes within ``atol`` pixels."""
    by_name = {Path(text_of(r["file_name"])).name: r for r in want}
    assert sorted(Path(text_of(r["file_name"])).name for r in got) == sorted(by_name)
    for row in got:
        name = Path(text_of(row["file_name"])).name
        other = by_name[name]
        assert (int(row["height"]), int(row["width"])) == (int(other["height"]), int(other["width"])), name
        if compare_bytes:
            assert row["image"].tobytes() == other["image"].tobytes(), name
        mine, theirs = row_labels(row), row_labels(other, skip_crowd=skip_crowd_in_want)
        assert mine.shape == theirs.shape, name
        np.testing.assert_array_equal(mine[:, [0, 5]], theirs[:, [0, 5]], err_msg=name)
        np.testing.assert_allclose(mine[:, 1:5], theirs[:, 1:5], rtol=0, atol=atol, err_msg=name)


@pytest.fixture(scope="module")
def coco128_module():
    from conftest import shared_data_path

    return shared_data_path("coco128")


@pytest.fixture(scope="module")
def coco128_rows(coco128_module, tmp_path_factory):
    out = tmp_path_factory.mktemp("coco128_json") / "out"
    convert_coco(coco128_module / "val2017", coco128_module / COCO128_JSON, out, num_workers=2)
    return read_rows(out)


# ----------------------------------------------------------------------------------------------------
# coco128 as YOLO txt and as VOC XML: rows equal to the COCO json conversion
# ----------------------------------------------------------------------------------------------------

def test_coco128_as_yolo_txt_converts_to_the_rows_of_the_coco_json(coco128_module, coco128_rows, tmp_path):
    document = json.loads((coco128_module / COCO128_JSON).read_text())
    data = write_yolo(document, coco128_module / "val2017", tmp_path / "yolo")
    out = tmp_path / "out"
    summary = convert_yolo(data, out, split="train", num_workers=2)
    rows = read_rows(out)
    assert_rows_match(rows, coco128_rows, atol=1e-3, skip_crowd_in_want=True)  # YOLO txt has no crowd boxes
    assert summary.num_images == 128 and summary.num_boxes == 929 and summary.num_background == 2
    manifest = manifest_of(out)
    assert manifest["source_format"] == "yolo"
    assert manifest["source"]["layout"] == "ultralytics" and manifest["source"]["split"] == "train"
    assert manifest["source"]["class_order"] == "names of data.yaml"
    assert [c["name"] for c in manifest["categories"]] == [c["name"] for c in category_order(document)]
    assert [c["id"] for c in manifest["categories"]] == list(range(80))
    assert manifest["skipped"] == [] and manifest["source_problems"] == []
    assert verify_output(out).ok


def test_coco128_as_voc_xml_converts_to_the_rows_of_the_coco_json(coco128_module, coco128_rows, tmp_path):
    document = json.loads((coco128_module / COCO128_JSON).read_text())
    voc_dir = write_voc(document, coco128_module / "val2017", tmp_path / "voc")
    out = tmp_path / "out"
    summary = convert_voc(voc_dir, out, split="train", names_file=voc_dir / "names.txt", num_workers=2)
    rows = read_rows(out)
    assert_rows_match(rows, coco128_rows, atol=1e-3)  # crowd boxes came back as difficult -> iscrowd
    assert summary.num_boxes == 939 and sum(int(r["iscrowd"][: int(r["num_boxes"])].sum()) for r in rows) == 10
    manifest = manifest_of(out)
    assert manifest["source_format"] == "voc" and manifest["source"]["difficult"] == "ignore"
    assert manifest["source"]["class_order"].startswith("lines of ")
    assert [c["name"] for c in manifest["categories"]] == [c["name"] for c in category_order(document)]
    written = json.loads((out / "annotations.json").read_text())
    assert manifest["annotation_sha256"] == hashlib.sha256((out / "annotations.json").read_bytes()).hexdigest()
    assert len(written["images"]) == 128 and len(written["annotations"]) == 939
    assert verify_output(out).ok


def test_the_same_images_from_one_labelling_tool_as_coco_voc_and_yolo_give_the_same_rows(labelme_dir, tmp_path):
    """labelme_voc3's real photos and drawn shapes, exported in each format's convention: COCO boxes as
    floats, VOC corners rounded to whole pixels, YOLO polygons with six decimals."""
    document = polygon_extent_document(json.loads((labelme_dir / "annotations.json").read_text()))
    ann_file = tmp_path / "coco.json"
    ann_file.write_text(json.dumps(document))
    outputs = {}
    convert_coco(labelme_dir, ann_file, tmp_path / "coco_out")
    outputs["coco"] = read_rows(tmp_path / "coco_out")
    voc_dir = write_voc(document, labelme_dir, tmp_path / "voc", integer=True)
    convert_voc(voc_dir, tmp_path / "voc_out", split="train", names_file=voc_dir / "names.txt")
    outputs["voc"] = read_rows(tmp_path / "voc_out")
    data = write_yolo(document, labelme_dir, tmp_path / "yolo", precision=6, polygons=True)
    convert_yolo(data, tmp_path / "yolo_out")
    outputs["yolo"] = read_rows(tmp_path / "yolo_out")
    assert len(outputs["coco"]) == 3 and sum(int(r["num_boxes"]) for r in outputs["coco"]) == 12
    for name in ("voc", "yolo"):
        assert_rows_match(outputs[name], outputs["coco"], atol=0.5)
    assert_rows_match(outputs["yolo"], outputs["coco"], atol=2e-3)  # six decimals of 500 px
    assert [text_of(r["file_name"]) for r in outputs["voc"]] == sorted(r["file_name"] for r in document["images"])


# ----------------------------------------------------------------------------------------------------
# Evaluation needs nothing else: difficult boxes are ignored as crowd boxes are
# ----------------------------------------------------------------------------------------------------

def test_difficult_boxes_are_ignored_by_evaluation_unless_kept(labelme_dir, tmp_path):
    from yolomodel.coco_eval import score_results

    document = polygon_extent_document(json.loads((labelme_dir / "annotations.json").read_text()))
    for k, ann in enumerate(document["annotations"]):
        ann["iscrowd"] = int(k in (0, 5))  # written as <difficult>1</difficult>
    voc_dir = write_voc(document, labelme_dir, tmp_path / "voc", integer=True)
    truths = {}
    for mode in ("ignore", "keep"):
        convert_voc(voc_dir, tmp_path / mode, split="train", names_file=voc_dir / "names.txt", difficult=mode)
        truths[mode] = json.loads((tmp_path / mode / "annotations.json").read_text())["annotations"]
    difficult = [a for a in truths["ignore"] if a["iscrowd"] == 1]
    assert len(difficult) == 2 and all(a["iscrowd"] == 0 for a in truths["keep"])
    hard = {(a["image_id"], tuple(a["bbox"])) for a in difficult}

    def detection(ann, score):
        return {"image_id": ann["image_id"], "category_id": ann["category_id"], "bbox": ann["bbox"], "score": score}

    # a detector that finds every object that is not difficult, and one of the difficult ones (lower score)
    found = [detection(a, 1.0) for a in truths["keep"] if (a["image_id"], tuple(a["bbox"])) not in hard]
    found.append(detection(difficult[0], 0.5))
    ignored = score_results(tmp_path / "ignore" / "annotations.json", found).stats[1]  # AP at IoU 0.5
    kept = score_results(tmp_path / "keep" / "annotations.json", found).stats[1]
    assert ignored == pytest.approx(1.0)  # the missed difficult box costs nothing, the hit on one is no false positive
    assert kept < 0.95


# ----------------------------------------------------------------------------------------------------
# Bad input through the converter and the tool
# ----------------------------------------------------------------------------------------------------

def bad_yolo(coco128_dir: Path, dest: Path) -> tuple[Path, dict]:
    """coco128's first 8 images as YOLO txt with one bad line, a duplicate line and an orphan label."""
    document = json.loads((coco128_dir / COCO128_JSON).read_text())
    images = sorted(document["images"], key=lambda r: r["id"])[:8]
    keep = {r["id"] for r in images}
    document = {**document, "images": images, "annotations": [a for a in document["annotations"]
                                                              if a["image_id"] in keep]}
    data = write_yolo(document, coco128_dir / "val2017", dest)
    labels = sorted((dest / "labels" / "train").glob("*.txt"))
    labels = [p for p in labels if p.read_text()]
    bad = labels[0]
    lines = bad.read_text().splitlines()
    bad.write_text("\n".join(lines + ["99 0.5 0.5 0.1 0.1"]) + "\n")
    duplicate = labels[1]
    duplicate.write_text(duplicate.read_text() + duplicate.read_text().splitlines()[0] + "\n")
    orphan = dest / "labels" / "train" / "lost_image.txt"
    orphan.write_text("0 0.5 0.5 0.1 0.1\n")
    return data, {"bad": (bad, len(lines) + 1), "duplicate": duplicate, "orphan": orphan}


def test_default_run_skips_and_lists_each_problem_with_file_and_line(coco128_dir, tmp_path):
    data, where = bad_yolo(coco128_dir, tmp_path / "yolo")
    out = tmp_path / "out"
    result = subprocess.run([sys.executable, str(TOOL), "--format", "yolo", "--data", str(data), "--output_dir",
                             str(out), "--no_progress", "--verify_after"], capture_output=True, text=True,
                            timeout=120, cwd=ROOT)
    assert result.returncode == 0, result.stderr
    bad, line = where["bad"]
    assert f"{bad}:{line}: class 99 is outside names (0..79)" in result.stdout
    assert f"{where['orphan']}: label file without an image" in result.stdout
    assert str(where["duplicate"]) in result.stdout and "duplicate" in result.stdout
    assert result.stdout.rstrip().endswith("OK")
    manifest = manifest_of(out)
    assert manifest["num_images"] == 7
    (skipped,) = manifest["skipped"]
    assert skipped["reason"] == "unknown_class" and skipped["file_name"] == f"images/train/{bad.stem}.jpg"
    listed = {(p["reason"], p["file"], p["line"]) for p in manifest["source_problems"]}
    assert ("unknown_class", str(bad), line) in listed
    assert ("label_without_image", str(where["orphan"]), None) in listed
    assert any(reason == "duplicate_line" and file == str(where["duplicate"]) for reason, file, _ in listed)
    assert manifest["source"]["duplicate_lines_dropped"] == 1


def test_strict_stops_before_writing_and_leaves_the_existing_output(coco128_dir, tmp_path):
    data, where = bad_yolo(coco128_dir, tmp_path / "yolo")
    out = tmp_path / "out"
    bad, line = where["bad"]
    bad_text = bad.read_text()
    bad.write_text("\n".join(bad_text.splitlines()[:-1]) + "\n")
    where["orphan"].unlink()
    convert_yolo(data, out)  # a good conversion first
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    bad.write_text(bad_text)
    with pytest.raises(ConversionError) as caught:
        convert_yolo(data, out, strict=True)
    message = str(caught.value)
    assert "--strict" in message and "nothing was written" in message
    assert f"{bad}:{line}: class 99 is outside names" in message
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before
    assert not [p for p in tmp_path.iterdir() if ".partial-" in p.name]
    # a duplicate line alone is a fix, not a --strict stop
    bad.write_text("\n".join(bad_text.splitlines()[:-1]) + "\n")
    summary = convert_yolo(data, out, strict=True)
    assert summary.num_images == 8


def test_voc_problems_reach_the_manifest_and_strict_stops_on_them(labelme_dir, tmp_path):
    document = polygon_extent_document(json.loads((labelme_dir / "annotations.json").read_text()))
    voc_dir = write_voc(document, labelme_dir, tmp_path / "voc", integer=True)
    xml = voc_dir / "Annotations" / "2011_000025.xml"
    xml.write_text(xml.read_text().replace("<name>", "<nam>", 1))
    line = next(k for k, text in enumerate(xml.read_text().splitlines(), start=1) if "<nam>" in text)
    out = tmp_path / "out"
    summary = convert_voc(voc_dir, out, split="train", names_file=voc_dir / "names.txt")
    assert summary.num_images == 2
    (entry,) = manifest_of(out)["source_problems"]
    assert entry["reason"] == "malformed_xml" and entry["file"] == str(xml) and entry["line"] == line
    with pytest.raises(ConversionError, match=f"{xml}:{line}: malformed XML"):
        convert_voc(voc_dir, tmp_path / "strict_out", split="train", names_file=voc_dir / "names.txt", strict=True)
    assert not (tmp_path / "strict_out").exists()


@pytest.mark.parametrize("args, words", [
    (["--format", "yolo"], "--format yolo needs --data"),
    (["--format", "voc"], "--format voc needs --voc_dir"),
    (["--format", "yolo", "--data", "x.yaml", "--ann_file", "a.json"], "--ann_file is for --format coco"),
    (["--format", "coco", "--image_dir", "i", "--ann_file", "a.json", "--split", "train"],
     "--split is for --format yolo or voc"),
    (["--format", "yolo", "--data", "x.yaml", "--difficult", "drop"], "--difficult is for --format voc"),
    (["--format", "yolo", "--data", "missing.yaml"], "--data missing.yaml is not a file"),
])
def test_tool_names_flags_that_do_not_fit_the_format(tmp_path, args, words):
    result = subprocess.run([sys.executable, str(TOOL), *args, "--output_dir", str(tmp_path / "out"),
                             "--no_progress"], capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert result.returncode == 2 and words in result.stderr, result.stderr
    assert "Traceback" not in result.stderr and not (tmp_path / "out").exists()


def test_tool_converts_voc_with_names_and_difficult_and_verifies(labelme_dir, tmp_path):
    document = polygon_extent_document(json.loads((labelme_dir / "annotations.json").read_text()))
    document["annotations"][0]["iscrowd"] = 1
    voc_dir = write_voc(document, labelme_dir, tmp_path / "voc", integer=True)
    out = tmp_path / "out"
    result = subprocess.run([sys.executable, str(TOOL), "--format", "voc", "--voc_dir", str(voc_dir), "--split",
                             "train", "--names", str(voc_dir / "names.txt"), "--difficult", "drop", "--output_dir",
                             str(out), "--no_progress", "--verify_after"], capture_output=True, text=True,
                            timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.rstrip().endswith("OK") and "voc" in result.stdout
    manifest = manifest_of(out)
    assert manifest["num_boxes"] == 11 and manifest["source"]["difficult"] == "drop"
    picture = decode_stored(read_rows(out)[0]["image"])
    assert picture.ndim == 3
