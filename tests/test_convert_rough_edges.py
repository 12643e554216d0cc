"""Rough edges that real third-party datasets showed, each on a small real-shaped file.

The images are real coco128 JPEGs (../shared/data); the jsons are coco128's own records reshaped the
way other exporters write them: string image ids, sahi's "area" of the whole image, more shards than
images, images that fail to decode, and an annotation document built in memory by another reader.
"""
from __future__ import annotations

import json
import os
import stat
from pathlib import Path

import pytest

from yolodata import manifest as manifest_lib
from yolodata import mindrecord_shards
from yolodata.convert import ConversionError, SourceDocument, convert_coco, convert_document, planned_shard_count, \
    plan_source
from yolodata.verify import verify_output

COCO128_JSON = Path("annotations") / "instances_val2017.json"


def coco128_images(coco128_dir: Path, count: int, *, annotated: bool = True) -> dict:
    """coco128's json cut to its first ``count`` images (by id; only annotated ones with ``annotated``)."""
    document = json.loads((coco128_dir / COCO128_JSON).read_text())
    with_boxes = {a["image_id"] for a in document["annotations"]}
    images = [r for r in sorted(document["images"], key=lambda r: r["id"]) if r["id"] in with_boxes or not annotated]
    images = images[:count]
    keep = {r["id"] for r in images}
    return {**document, "images": images, "annotations": [a for a in document["annotations"] if a["image_id"] in keep]}


def write_json(path: Path, document: dict) -> Path:
    path.write_text(json.dumps(document))
    return path


def image_folder_with_links(coco128_dir: Path, folder: Path, document: dict, broken: dict | None = None) -> Path:
    """A folder of symlinks to the document's coco128 images; ``broken`` {file_name: bytes} replaces some."""
    folder.mkdir(parents=True)
    for record in document["images"]:
        target = folder / record["file_name"]
        if broken and record["file_name"] in broken:
            target.write_bytes(broken[record["file_name"]])
        else:
            target.symlink_to(coco128_dir / "val2017" / record["file_name"])
    return folder


def read_row_ids(output_dir: Path) -> list:
    import mindspore.dataset as ds

    files = manifest_lib.load_manifest(output_dir).shard_paths
    rows = ds.MindDataset([str(p) for p in files], columns_list=["image_id"], shuffle=False)
    return [(position, int(r["image_id"])) for position, r in enumerate(rows.create_dict_iterator(output_numpy=True))]


# ----------------------------------------------------------------------------------------------------
# String image ids: named as written
# ----------------------------------------------------------------------------------------------------

def test_string_image_ids_are_named_as_written_and_their_annotations_go_with_them(coco128_dir, tmp_path):
    document = coco128_images(coco128_dir, 6)
    as_strings = {r["id"] for r in document["images"][:2]}
    for record in document["images"]:
        if record["id"] in as_strings:
            record["id"] = str(record["id"])
    for ann in document["annotations"]:
        if ann["image_id"] in as_strings:
            ann["image_id"] = str(ann["image_id"])
    ann_file = write_json(tmp_path / "string_ids.json", document)
    summary = convert_coco(coco128_dir / "val2017", ann_file, tmp_path / "out", num_workers=2)
    assert summary.num_images == 4
    named = {p.file_name: p for p in summary.skipped}
    assert len(named) == 2
    for record in document["images"][:2]:
        problem = named[record["file_name"]]
        text = problem.describe()
        assert text.startswith(f'image "{record["id"]}" ({record["file_name"]}): ')
        assert "is a string" in text and f"write {record['id']} without the quotes" in text
        assert "None" not in text
    # their annotations are skipped with their image, not reported as naming an unknown image
    assert summary.skipped_annotations == []
    manifest = manifest_lib.load_manifest(tmp_path / "out")
    assert sorted(entry["image_id"] for entry in manifest.skipped) == sorted(r["id"] for r in document["images"][:2])
    table = summary.format_table()
    assert f'skipped image "{document["images"][0]["id"]}" ({document["images"][0]["file_name"]})' in table


def test_a_json_with_only_string_ids_stops_naming_one_as_written(coco128_dir, tmp_path):
    document = coco128_images(coco128_dir, 3)
    for record in document["images"]:
        record["id"] = str(record["id"])
    for ann in document["annotations"]:
        ann["image_id"] = str(ann["image_id"])
    ann_file = write_json(tmp_path / "string_ids.json", document)
    first = document["images"][0]
    with pytest.raises(ConversionError, match=f'e.g. image "{first["id"]}" \\({first["file_name"]}\\)'):
        convert_coco(coco128_dir / "val2017", ann_file, tmp_path / "out")
    assert not (tmp_path / "out").exists()


# ----------------------------------------------------------------------------------------------------
# Shards: never an empty file
# ----------------------------------------------------------------------------------------------------

def test_more_shards_than_images_writes_one_shard_per_image_and_says_so(coco128_dir, tmp_path):
    ann_file = write_json(tmp_path / "three.json", coco128_images(coco128_dir, 3))
    out = tmp_path / "out"
    summary = convert_coco(coco128_dir / "val2017", ann_file, out, shard_num=5, num_workers=2)
    manifest = manifest_lib.load_manifest(out)
    assert [(s.file, s.num_rows) for s in manifest.shards] == [("data.mindrecord0", 1), ("data.mindrecord1", 1),
                                                                ("data.mindrecord2", 1)]
    assert sorted(p.name for p in out.iterdir() if p.name.startswith("data")) == [
        "data.mindrecord0", "data.mindrecord0.db", "data.mindrecord1", "data.mindrecord1.db", "data.mindrecord2",
        "data.mindrecord2.db"]
    for path in manifest.shard_paths:  # every file holds a row, as its own header says
        assert mindrecord_shards.rows_in_header(mindrecord_shards.read_header(path)[0]) == 1
    [warning] = summary.warnings
    assert warning.kind == "shards_capped" and warning.count == 2
    assert "shard_num 5" in warning.message and "wrote 3 shard file(s)" in warning.message
    assert "only 3 image(s)" in warning.message
    assert [w["kind"] for w in manifest.warnings] == ["shards_capped"]
    assert manifest.options["shard_num"] == 5  # what was asked; the shards list says what was written
    assert sum(line.startswith("warning") for line in summary.format_table().splitlines()) == 1
    expected_ids = sorted(r["id"] for r in coco128_images(coco128_dir, 3)["images"])
    assert [row_id for _, row_id in read_row_ids(out)] == expected_ids
    assert verify_output(out).ok


@pytest.mark.parametrize("num_images, shard_num, bad_positions, expected_rows", [
    (11, 11, [4], [1] * 10),          # 11 planned files named 00..10: 10 files, 04 missing
    (2, 2, [0], [1]),                 # the second planned file alone: data.mindrecord1
    (6, 6, [2, 3], [1] * 4),          # two units in the middle fail entirely
])
def test_a_shard_whose_images_all_fail_to_decode_gets_no_file(coco128_dir, tmp_path, num_images, shard_num,
                                                              bad_positions, expected_rows):
    document = coco128_images(coco128_dir, num_images)
    donor = (coco128_dir / "val2017" / document["images"][0]["file_name"]).read_bytes()
    broken = {}
    for k, position in enumerate(bad_positions):  # a real JPEG cut short, and bytes that are no picture
        name = document["images"][position]["file_name"]
        broken[name] = donor[: len(donor) // 2] if k % 2 == 0 else b"\xff\xd8\xff\xe0 not a JPEG " * 40 + b"\xff\xd9"
    image_dir = image_folder_with_links(coco128_dir, tmp_path / "images", document, broken)
    ann_file = write_json(tmp_path / "ann.json", document)
    out = tmp_path / "out"
    summary = convert_coco(image_dir, ann_file, out, shard_num=shard_num, num_workers=2)
    manifest = manifest_lib.load_manifest(out)
    assert [s.num_rows for s in manifest.shards] == expected_rows
    # each unit's file keeps the name it was written under (its .db names it): the failed ones leave gaps
    assert [s.file for s in manifest.shards] == [p.name for k, p in enumerate(mindrecord_shards.shard_paths(
        out, shard_num)) if k not in bad_positions]
    assert sorted(p.name for p in out.iterdir() if p.name.startswith("data.mindrecord")) == sorted(
        name for s in manifest.shards for name in (s.file, s.file + ".db"))
    assert sorted(p.file_name for p in summary.skipped) == sorted(broken)
    [warning] = summary.warnings
    assert warning.kind == "shards_capped" and warning.count == shard_num - len(expected_rows)
    assert "failed to read or decode" in warning.message
    good_ids = [r["id"] for k, r in enumerate(document["images"]) if k not in bad_positions]
    assert read_row_ids(out) == list(enumerate(good_ids))
    for path in manifest.shard_paths:  # each file is a set of its own (schema 3)
        header, _ = mindrecord_shards.read_header(path)
        assert header["shard_addresses"] == [path.name]
    assert verify_output(out).ok


def test_the_plan_never_has_more_shards_than_images():
    assert [planned_shard_count(num_images, 4) for num_images in (1, 3, 4, 100)] == [1, 3, 4, 4]


# ----------------------------------------------------------------------------------------------------
# Ground-truth area that contradicts its box
# ----------------------------------------------------------------------------------------------------

def test_areas_that_contradict_their_boxes_are_counted_in_one_warning(coco128_dir, tmp_path):
    document = coco128_images(coco128_dir, 5)
    size_of = {r["id"]: (r["width"], r["height"]) for r in document["images"]}
    sahi_images = {r["id"] for r in document["images"][:3]}
    larger = 0
    for ann in document["annotations"]:
        if ann["image_id"] in sahi_images:  # as sahi's sliced export writes it: the whole image's area
            width, height = size_of[ann["image_id"]]
            ann["area"] = width * height
            larger += ann["area"] > ann["bbox"][2] * ann["bbox"][3] * 1.5  # far beyond any rounding
    untouched = [a for a in document["annotations"] if a["image_id"] not in sahi_images]
    del untouched[0]["area"]
    assert larger == sum(a["image_id"] in sahi_images for a in document["annotations"]) > 0
    ann_file = write_json(tmp_path / "sahi_like.json", document)
    out = tmp_path / "out"
    summary = convert_coco(coco128_dir / "val2017", ann_file, out, num_workers=2)
    [warning] = summary.warnings
    total = len(document["annotations"])
    assert warning.kind == "area_contradicts_box" and warning.count == larger + 1
    assert f"{larger + 1} of {total} annotations" in warning.message
    assert f"{larger} larger than the box" in warning.message and "1 missing or not a number" in warning.message
    assert "APs/APm/APl" in warning.message
    table = summary.format_table()
    assert sum(line.startswith("warning") for line in table.splitlines()) == 1
    manifest = manifest_lib.load_manifest(out)
    assert manifest.warnings == ({"kind": "area_contradicts_box", "count": larger + 1, "message": warning.message},)
    # the json is kept as given (the rows use the boxes)
    assert json.loads((out / "annotations.json").read_text()) == document
    assert verify_output(out, decode=False).ok


def test_real_coco_areas_give_no_warning(coco128_dir, tmp_path):
    ann_file = write_json(tmp_path / "subset.json", coco128_images(coco128_dir, 12, annotated=False))
    summary = convert_coco(coco128_dir / "val2017", ann_file, tmp_path / "out", num_workers=2)
    assert summary.warnings == [] and manifest_lib.load_manifest(tmp_path / "out").warnings == ()
    assert "warning" not in summary.format_table()


# ----------------------------------------------------------------------------------------------------
# Permissions: every output file as the umask says, shards included
# ----------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("umask, mode", [(0o022, 0o644), (0o027, 0o640)])
def test_every_output_file_gets_the_permissions_the_umask_gives(coco128_dir, tmp_path, umask, mode):
    ann_file = write_json(tmp_path / "four.json", coco128_images(coco128_dir, 4))
    out = tmp_path / "out"
    previous = os.umask(umask)
    try:
        convert_coco(coco128_dir / "val2017", ann_file, out, shard_num=2, num_workers=2)
    finally:
        os.umask(previous)
    modes = {p.name: stat.S_IMODE(p.stat().st_mode) for p in out.iterdir()}
    assert set(modes) == {"data.mindrecord0", "data.mindrecord0.db", "data.mindrecord1", "data.mindrecord1.db",
                          "manifest.json", "annotations.json"}
    assert modes == {name: mode for name in modes}


# ----------------------------------------------------------------------------------------------------
# The seam for other annotation formats: a document built in memory
# ----------------------------------------------------------------------------------------------------

def test_a_document_built_in_memory_converts_like_the_same_json_file(coco128_dir, tmp_path):
    document = coco128_images(coco128_dir, 5, annotated=False)
    source = SourceDocument.from_document(document, "YOLO labels in somewhere/labels", source_format="yolo")
    plan = plan_source(source, coco128_dir / "val2017")
    assert [e.image_id for e in plan.entries] == sorted(r["id"] for r in document["images"])
    from_memory, from_file = tmp_path / "memory", tmp_path / "file"
    convert_document(source, coco128_dir / "val2017", from_memory, shard_num=2, num_workers=2)
    ann_file = tmp_path / "same.json"
    ann_file.write_bytes(source.raw_bytes)
    convert_coco(coco128_dir / "val2017", ann_file, from_file, shard_num=2, num_workers=2)
    names = sorted(p.name for p in from_memory.iterdir())
    assert names == sorted(p.name for p in from_file.iterdir())
    for name in names:
        if name != "manifest.json":
            assert (from_memory / name).read_bytes() == (from_file / name).read_bytes(), name
    memory, file = manifest_lib.load_manifest(from_memory), manifest_lib.load_manifest(from_file)
    assert memory.source_format == "yolo" and file.source_format == "coco"
    assert memory.annotation_file is None and file.annotation_file == "same.json"
    assert memory.dataset_id == file.dataset_id
    with pytest.raises(ConversionError, match="YOLO labels in x is not a COCO instances json: key 'categories'"):
        SourceDocument.from_document({"images": [], "annotations": []}, "YOLO labels in x", source_format="yolo")
