"""COCO -> MindRecord conversion on the real data in ../shared/data, read back with plain MindDataset."""
from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import cv2
import numpy as np
import pytest

from yolodata import convert as convert_lib
from yolodata import manifest as manifest_lib
from yolodata.checks import resolve_num_workers
from yolodata import mindrecord_shards
from yolodata.convert import ConversionError, convert_coco
from yolodata.image_io import decode_stored
from yolodata.schema import FIELDS, MINDRECORD_SCHEMA
from yolodata.verify import verify_output

COCO128_JSON = Path("annotations") / "instances_val2017.json"


def read_rows(output_dir) -> list[dict]:
    """Every row of the whole file set, in MindDataset's order, through plain MindDataset."""
    import mindspore.dataset as ds

    files = manifest_lib.load_manifest(output_dir).shard_paths
    dataset = ds.MindDataset([str(p) for p in files], columns_list=list(FIELDS), shuffle=False)
    return list(dataset.create_dict_iterator(output_numpy=True, num_epochs=1))


def row_file_name(row) -> str:
    value = row["file_name"]
    value = value.item() if isinstance(value, np.ndarray) else value
    return value.decode() if isinstance(value, bytes) else str(value)


def expected_labels(annotations: list, index_of_category: dict, width: int, height: int):
    """What the rows must hold, computed here independently: xyxy clipped, empty boxes dropped."""
    boxes, classes, crowd = [], [], []
    for ann in annotations:
        x, y, w, h = (float(v) for v in ann["bbox"])
        box = np.array([x, y, x + w, y + h], np.float32)
        box = np.clip(box, 0, np.array([width, height, width, height], np.float32))
        if box[2] - box[0] > 0 and box[3] - box[1] > 0:
            boxes.append(box)
            classes.append(index_of_category[ann["category_id"]])
            crowd.append(int(ann.get("iscrowd", 0)))
    return np.array(boxes, np.float32).reshape(-1, 4), np.array(classes, np.int32), np.array(crowd, np.int32)


def check_rows_against_json(output_dir, document: dict, image_dir: Path, *, check_pixels=True) -> list[dict]:
    """Assert every row equals the json (ids, names, sizes, boxes, classes, crowd) and the source pixels."""
    manifest = manifest_lib.load_manifest(output_dir)
    index_of_category = {c.id: c.index for c in manifest.categories}
    records = {r["id"]: r for r in document["images"]}
    annotations = {}
    for ann in document["annotations"]:
        annotations.setdefault(ann["image_id"], []).append(ann)
    rows = read_rows(output_dir)
    assert len(rows) == manifest.num_images
    ids = [int(row["image_id"]) for row in rows]
    assert ids == sorted(ids) and len(set(ids)) == len(ids)
    stored_index = manifest.stored_row_index(np.arange(len(rows)))
    for position, row in enumerate(rows):
        record = records[int(row["image_id"])]
        assert int(row["row_index"]) == stored_index[position]
        assert row_file_name(row) == record["file_name"]
        assert (int(row["height"]), int(row["width"])) == (record["height"], record["width"])
        boxes, classes, crowd = expected_labels(annotations.get(record["id"], []), index_of_category,
                                                record["width"], record["height"])
        num_boxes = int(row["num_boxes"])
        assert num_boxes == len(boxes)
        np.testing.assert_array_equal(row["boxes"].reshape(-1, 4)[:num_boxes], boxes)
        np.testing.assert_array_equal(row["classes"].reshape(-1)[:num_boxes], classes)
        np.testing.assert_array_equal(row["iscrowd"].reshape(-1)[:num_boxes], crowd)
        if num_boxes == 0:  # background: the placeholder row, never an empty array
            assert row["boxes"].shape == (1, 4) and row["classes"].tolist() == [-1]
        if check_pixels:
            source = cv2.imdecode(np.fromfile(str(image_dir / record["file_name"]), np.uint8), cv2.IMREAD_COLOR)
            assert np.array_equal(decode_stored(row["image"]), source)
    return rows


@pytest.fixture(scope="module")
def coco128_output(tmp_path_factory):
    from conftest import shared_data_path

    source = shared_data_path("coco128")
    out = tmp_path_factory.mktemp("coco128") / "out"
    summary = convert_coco(source / "val2017", source / COCO128_JSON, out, num_workers=2)
    return source, out, summary


def test_coco128_reads_back_with_plain_minddataset_equal_to_the_json(coco128_output):
    source, out, summary = coco128_output
    document = json.loads((source / COCO128_JSON).read_text())
    rows = check_rows_against_json(out, document, source / "val2017")
    assert len(rows) == 128 and summary.num_images == 128
    assert sum(int(row["num_boxes"]) for row in rows) == 939 == summary.num_boxes
    # the two images without annotations are background rows
    annotated = {a["image_id"] for a in document["annotations"]}
    background = [int(r["image_id"]) for r in rows if int(r["num_boxes"]) == 0]
    assert background == sorted(r["id"] for r in document["images"] if r["id"] not in annotated)
    assert len(background) == 2
    # crowd annotations are kept and flagged
    assert sum(int(r["iscrowd"][: int(r["num_boxes"])].sum()) for r in rows) == 10


def test_coco128_manifest(coco128_output):
    source, out, summary = coco128_output
    written = json.loads((out / "manifest.json").read_text())
    for key in manifest_lib.REQUIRED_KEYS:
        assert key in written
    manifest = manifest_lib.load_manifest(out)
    assert manifest.to_dict() == written  # the typed manifest carries every key the file holds
    assert manifest.num_images == 128 and manifest.num_boxes == 939
    categories = manifest.categories
    assert [c.index for c in categories] == list(range(80))
    ids = [c.id for c in categories]
    assert ids == sorted(ids) and ids[0] == 1 and ids[-1] == 90  # 1..90 with gaps -> 0..79 in id order
    assert next(c for c in categories if c.id == 13).index == 11  # 12 is one of COCO's gaps
    assert sum(manifest.boxes_per_category.values()) == 939
    assert manifest.boxes_per_category["person"] > 0
    assert manifest.skipped == () and manifest.num_crowd_boxes == 10
    import hashlib

    assert manifest.annotation_sha256 == hashlib.sha256((source / COCO128_JSON).read_bytes()).hexdigest()
    shard_file = out / "data.mindrecord0"
    assert manifest.shards == (manifest_lib.ShardEntry("data.mindrecord0", 128, shard_file.stat().st_size),)
    assert len(manifest.dataset_id) == 64 and manifest.dataset_id == summary.dataset_id
    assert manifest.converter_version == convert_lib.CONVERTER_VERSION
    assert manifest.source_format == "coco"


def test_coco128_annotations_json_is_the_coco_json_of_the_converted_images(coco128_output):
    from pycocotools.coco import COCO

    source, out, _ = coco128_output
    coco = COCO(str(out / "annotations.json"))
    original = json.loads((source / COCO128_JSON).read_text())
    assert sorted(coco.getImgIds()) == sorted(r["id"] for r in original["images"])
    assert len(coco.getAnnIds()) == 939
    assert max(coco.getAnnIds()) > 2 ** 31  # coco128's annotation ids beyond int32 are kept


def test_verify_passes_on_a_good_output_and_catches_a_damaged_one(coco128_output, tmp_path):
    _, out, _ = coco128_output
    report = verify_output(out)
    assert report.ok, report.format()
    assert report.num_rows == 128 and report.num_decoded == 128
    # a manifest that disagrees with the rows is caught
    damaged = tmp_path / "damaged"
    shutil.copytree(out, damaged)
    manifest = json.loads((damaged / "manifest.json").read_text())
    manifest["num_boxes"] += 1
    manifest["boxes_per_category"]["person"] += 1
    (damaged / "manifest.json").write_text(json.dumps(manifest))
    report = verify_output(damaged, decode=False)
    assert not report.ok and any("num_boxes" in p or "boxes" in p for p in report.problems)
    # a missing shard index is named
    (damaged / "data.mindrecord0.db").unlink()
    with pytest.raises(manifest_lib.ManifestError, match="data.mindrecord0.db"):
        verify_output(damaged)


def test_output_does_not_depend_on_the_number_of_workers(coco128_output, tmp_path):
    source, out, _ = coco128_output
    one = tmp_path / "one"
    convert_coco(source / "val2017", source / COCO128_JSON, one, num_workers=1)
    assert json.loads((one / "manifest.json").read_text()) == json.loads((out / "manifest.json").read_text())
    assert (one / "data.mindrecord0").read_bytes() == (out / "data.mindrecord0").read_bytes()
    assert (one / "annotations.json").read_bytes() == (out / "annotations.json").read_bytes()
    for left, right in zip(read_rows(one), read_rows(out)):
        assert left.keys() == right.keys()
        for name in left:
            assert np.array_equal(left[name], right[name]), name


def test_labelme_export_with_category_id_0_and_subfolder_file_names(labelme_dir, tmp_path):
    out = tmp_path / "out"
    summary = convert_coco(labelme_dir, labelme_dir / "annotations.json", out, num_workers=2)
    document = json.loads((labelme_dir / "annotations.json").read_text())
    assert summary.num_images == 3 and summary.skipped == []
    manifest = manifest_lib.load_manifest(out)
    assert manifest.categories[0] == manifest_lib.Category(index=0, id=0, name="_background_")
    assert [c.index for c in manifest.categories] == [c.id for c in manifest.categories]
    rows = check_rows_against_json(out, document, labelme_dir)
    assert all(row_file_name(r).startswith("JPEGImages/") for r in rows)
    assert sum(int(r["num_boxes"]) for r in rows) == len(document["annotations"]) == 12
    assert verify_output(out).ok


def coco128_subset(source: Path, count: int) -> dict:
    document = json.loads((source / COCO128_JSON).read_text())
    images = sorted(document["images"], key=lambda r: r["id"])[:count]
    keep = {r["id"] for r in images}
    return {**document, "images": images, "annotations": [a for a in document["annotations"] if a["image_id"] in keep]}


def test_image_and_annotation_ids_beyond_int32(coco128_dir, tmp_path):
    document = coco128_subset(coco128_dir, 12)
    shift = 2 ** 40
    for record in document["images"]:
        record["id"] += shift
    for ann in document["annotations"]:
        ann["image_id"] += shift
        ann["id"] += 2 ** 45
    ann_file = tmp_path / "big_ids.json"
    ann_file.write_text(json.dumps(document))
    out = tmp_path / "out"
    convert_coco(coco128_dir / "val2017", ann_file, out, num_workers=2)
    rows = check_rows_against_json(out, document, coco128_dir / "val2017", check_pixels=False)
    assert [int(r["image_id"]) for r in rows] == sorted(r["id"] for r in document["images"])
    assert min(int(r["image_id"]) for r in rows) > 2 ** 40
    written = json.loads((out / "annotations.json").read_text())
    assert {a["id"] for a in written["annotations"]} == {a["id"] for a in document["annotations"]}


def test_boxes_outside_the_image_are_clipped_and_empty_ones_dropped_and_counted(coco128_dir, tmp_path):
    document = coco128_subset(coco128_dir, 4)
    record = document["images"][0]
    width, height = record["width"], record["height"]
    template = next(a for a in document["annotations"] if a["image_id"] == record["id"])
    extra = [
        [-10.0, -5.0, 50.0, 40.0],               # partly outside: clipped to [0, 0, 40, 35]
        [width - 20.0, 10.0, 100.0, 30.0],       # partly outside on the right
        [width + 5.0, 10.0, 20.0, 20.0],         # entirely outside: empty after clipping
        [15.0, 15.0, 0.0, 10.0],                 # zero width
        [30.0, 30.0, -5.0, 10.0],                # negative width
    ]
    for k, bbox in enumerate(extra):
        document["annotations"].append({**template, "id": 10 ** 13 + k, "bbox": bbox})
    ann_file = tmp_path / "outside.json"
    ann_file.write_text(json.dumps(document))
    out = tmp_path / "out"
    summary = convert_coco(coco128_dir / "val2017", ann_file, out, num_workers=2)
    assert summary.boxes_clipped == 3 and summary.boxes_dropped == 3
    manifest = manifest_lib.load_manifest(out)
    assert manifest.boxes_clipped == 3 and manifest.boxes_dropped == {"empty_after_clipping": 3}
    rows = check_rows_against_json(out, document, coco128_dir / "val2017", check_pixels=False)
    first = rows[0]
    stored = first["boxes"][: int(first["num_boxes"])]
    assert [0.0, 0.0, 40.0, 35.0] in stored.tolist()
    assert [width - 20.0, 10.0, float(width), 40.0] in stored.tolist()
    # annotations.json keeps the original annotations (evaluation uses the json as given)
    written = json.loads((out / "annotations.json").read_text())
    assert len(written["annotations"]) == len(document["annotations"])


def test_background_images_are_kept_or_dropped_with_drop_empty(coco128_dir, tmp_path):
    document = json.loads((coco128_dir / COCO128_JSON).read_text())
    out = tmp_path / "out"
    summary = convert_coco(coco128_dir / "val2017", coco128_dir / COCO128_JSON, out, drop_empty=True)
    assert summary.num_images == 126 and summary.num_background == 0
    assert [p.reason for p in summary.skipped] == ["empty_dropped", "empty_dropped"]
    rows = read_rows(out)
    assert all(int(r["num_boxes"]) > 0 for r in rows)
    written = json.loads((out / "annotations.json").read_text())
    assert len(written["images"]) == 126 and len(written["annotations"]) == len(document["annotations"])
    assert manifest_lib.load_manifest(out).options["drop_empty"] is True


def test_quirky_images_become_three_channel_rows_in_the_json_frame(quirks_dir, tmp_path):
    files = [  # (file_name, width, height) as a json would state them
        ("mmcv/grayscale.jpg", 400, 300),
        ("pillow/pil_sample_cmyk.jpg", 100, 100),
        ("mmcv/gray_alpha.png", 500, 400),
        ("mmcv/color_exif.jpg", 300, 400),            # displayed frame: original bytes
        ("pillow/hopper_orientation_6.jpg", 128, 128),
        ("pillow/orientation_rectangle.jpg", 2, 1),   # stored frame of an EXIF-8 image: re-encoded
        ("mmcv/color.jpg", 640, 480),                  # fits neither frame: reported
    ]
    images = [{"id": k + 1, "file_name": name, "width": w, "height": h} for k, (name, w, h) in enumerate(files)]
    annotations = [{"id": k + 1, "image_id": k + 1, "category_id": 7, "bbox": [0, 0, 1, 1], "iscrowd": 0}
                   for k in range(len(files))]
    ann_file = tmp_path / "quirks.json"
    ann_file.write_text(json.dumps({"images": images, "annotations": annotations,
                                    "categories": [{"id": 7, "name": "thing"}]}))
    out = tmp_path / "out"
    summary = convert_coco(quirks_dir, ann_file, out, num_workers=2)
    assert summary.num_images == 6
    assert [(p.file_name, p.reason) for p in summary.skipped] == [("mmcv/color.jpg", "size_mismatch")]
    assert "fits neither" in summary.skipped[0].message
    assert [r["file_name"] for r in summary.reencoded] == ["pillow/orientation_rectangle.jpg"]
    for row in read_rows(out):
        picture = decode_stored(row["image"])
        assert picture.shape == (int(row["height"]), int(row["width"]), 3)
    assert verify_output(out).ok


def test_shards_keep_image_id_order_across_files(coco128_dir, tmp_path):
    import mindspore.dataset as ds

    out = tmp_path / "out"
    summary = convert_coco(coco128_dir / "val2017", coco128_dir / COCO128_JSON, out, shard_num=3)
    manifest = manifest_lib.load_manifest(out)
    files = manifest.shard_paths
    assert [p.name for p in files] == ["data.mindrecord0", "data.mindrecord1", "data.mindrecord2"]
    counts = [s.num_rows for s in manifest.shards]
    assert counts == [s["num_rows"] for s in summary.shards] and sum(counts) == 128
    # the three files split the images' bytes nearly equally (plan_units), in image-id order
    stored = [sum(np.asarray(r["image"]).nbytes for r in rows_of_file(path)) for path in files]
    assert max(stored) - min(stored) < 2 * max(np.asarray(r["image"]).nbytes for r in read_rows(out))
    rows = read_rows(out)
    assert [int(r["image_id"]) for r in rows] == sorted(int(r["image_id"]) for r in rows)
    # schema 3: each file is a set of its own, row_index counts within the file
    starts = manifest.shard_row_starts()
    for path, start, count in zip(files, starts, counts):
        block = [int(r["row_index"]) for r in rows_of_file(path)]
        assert block == list(range(count))
        assert {manifest.shard_of_row(i) for i in range(start, start + count)} == {path.name}
        header, _ = mindrecord_shards.read_header(path)
        assert header["shard_addresses"] == [path.name]
    assert manifest.stored_row_index(np.arange(128)).tolist() == [i - starts[manifest.shard_paths.index(
        out / manifest.shard_of_row(i))] for i in range(128)]
    # SubsetSampler over the manifest's file list indexes the global row order
    picked = ds.MindDataset([str(p) for p in files], columns_list=["image_id"],
                            sampler=ds.SubsetSampler([127, 0, 64, 64]))
    ids = [int(r["image_id"]) for r in rows]
    assert [int(r["image_id"]) for r in picked.create_dict_iterator(output_numpy=True)] == \
        [ids[127], ids[0], ids[64], ids[64]]
    assert verify_output(out, decode=False).ok


def rows_of_file(path) -> list[dict]:
    import mindspore.dataset as ds

    return list(ds.MindDataset([str(path)], columns_list=["image", "row_index"], shuffle=False)
                .create_dict_iterator(output_numpy=True, num_epochs=1))


def test_shards_do_not_depend_on_the_number_of_workers(coco128_dir, tmp_path):
    document = coco128_subset(coco128_dir, 23)
    ann_file = tmp_path / "subset.json"
    ann_file.write_text(json.dumps(document))
    outputs = []
    for workers in (1, 2):
        out = tmp_path / f"workers{workers}"
        convert_coco(coco128_dir / "val2017", ann_file, out, shard_num=4, num_workers=workers)
        outputs.append(out)
    names = sorted(p.name for p in outputs[0].iterdir())
    assert names == sorted(p.name for p in outputs[1].iterdir())
    for name in names:
        assert (outputs[0] / name).read_bytes() == (outputs[1] / name).read_bytes(), name
    counts = [s.num_rows for s in manifest_lib.load_manifest(outputs[0]).shards]
    assert len(counts) == 4 and sum(counts) == 23 and min(counts) >= 1


def test_shard_file_names_follow_filewriter():
    names = [p.name for p in mindrecord_shards.shard_paths(Path("x"), 12)]
    assert names[0] == "data.mindrecord00" and names[-1] == "data.mindrecord11"
    assert [p.name for p in mindrecord_shards.shard_paths(Path("x"), 1)] == ["data.mindrecord0"]


def test_shard_runs_split_the_plan_evenly_and_in_order():
    assert convert_lib.shard_starts(10, 3) == [0, 3, 6]
    assert [convert_lib.shard_of_position([0, 3, 6], p) for p in range(10)] == [0, 0, 0, 1, 1, 1, 2, 2, 2, 2]
    # fewer images than shards: some runs are empty, the order is kept (the converter plans at most one
    # shard per image, and writes no file for an empty one: tests/test_convert_rough_edges.py)
    starts = convert_lib.shard_starts(2, 4)
    assert [convert_lib.shard_of_position(starts, p) for p in range(2)] == [1, 3]


@pytest.mark.parametrize("shard_num", [1, 3])
def test_public_and_native_writer_paths_store_identical_files(coco128_dir, tmp_path, monkeypatch, shard_num):
    document = coco128_subset(coco128_dir, 20)
    ann_file = tmp_path / "subset.json"
    ann_file.write_text(json.dumps(document))
    native, public = tmp_path / "native", tmp_path / "public"
    native_calls = []
    original_native = mindrecord_shards._NativeRowWriter.write

    def counted_native(self, encoded):
        native_calls.append(len(encoded))
        return original_native(self, encoded)

    monkeypatch.setattr(mindrecord_shards._NativeRowWriter, "write", counted_native)
    convert_coco(coco128_dir / "val2017", ann_file, native, shard_num=shard_num, num_workers=1)  # in this process
    # rows reach MindRecord a few at a time whatever shard_num: memory does not grow with the dataset
    assert sum(native_calls) == 20 and max(native_calls) <= mindrecord_shards.ROWS_PER_WRITE
    # as on a MindSpore without the FileWriter internals: every row goes through write_raw_data
    monkeypatch.setattr(mindrecord_shards._NativeRowWriter, "open", classmethod(lambda cls, writer: None))
    calls = []
    from mindspore.mindrecord import FileWriter

    original = FileWriter.write_raw_data

    def counted(self, rows, *args, **kwargs):
        calls.append(len(rows))
        return original(self, rows, *args, **kwargs)

    monkeypatch.setattr(FileWriter, "write_raw_data", counted)
    convert_coco(coco128_dir / "val2017", ann_file, public, shard_num=shard_num, num_workers=1)
    assert sum(calls) == 20 and max(calls) <= mindrecord_shards.ROWS_PER_WRITE
    names = sorted(p.name for p in native.iterdir())
    assert names == sorted(p.name for p in public.iterdir())
    for name in names:
        assert (native / name).read_bytes() == (public / name).read_bytes(), name


def synthetic_rows(count: int, seed: int = 0) -> list[dict]:
    rng = np.random.default_rng(seed)
    rows = []
    for index in range(count):
        num_boxes = int(rng.integers(1, 4))
        rows.append({"image": rng.integers(0, 256, int(rng.integers(10, 3000)), dtype=np.uint8).tobytes(),
                     "image_id": 1000 + index, "file_name": f"f{index}.jpg", "height": 10, "width": 12,
                     "orig_height": 20, "orig_width": 24, "stored_scale": 0.5, "num_boxes": num_boxes, "boxes": rng.random((num_boxes, 4), dtype=np.float32),
                     "classes": np.arange(num_boxes, dtype=np.int32), "iscrowd": np.zeros(num_boxes, np.int32),
                     "row_index": index})
    return rows


@pytest.mark.parametrize("num_rows, shard_num", [(7, 3), (50, 4), (2, 4), (23, 12), (9, 1)])
def test_shard_set_writer_matches_one_filewriter_call(tmp_path, num_rows, shard_num):
    """Shard by shard in small calls, then linked: the files of FileWriter(shard_num=N) with every row."""
    from mindspore.mindrecord import FileWriter

    rows = synthetic_rows(num_rows)
    reference, ours = tmp_path / "reference", tmp_path / "ours"
    reference.mkdir()
    paths = mindrecord_shards.shard_paths(reference, shard_num)
    writer = FileWriter(str(paths[0]) if shard_num == 1 else str(reference / "data.mindrecord"), shard_num=shard_num)
    writer.add_schema(dict(MINDRECORD_SCHEMA), mindrecord_shards.SCHEMA_DESCRIPTION)
    writer.add_index(list(mindrecord_shards.INDEX_FIELDS))
    writer.write_raw_data(rows)
    writer.commit()
    sizes = [mindrecord_shards.rows_in_header(mindrecord_shards.read_header(p)[0]) for p in paths]
    assert sum(sizes) == num_rows
    ours.mkdir()
    shard_writer = mindrecord_shards.ShardSetWriter(ours, shard_num)
    for row, shard in zip(rows, [k for k, size in enumerate(sizes) for _ in range(size)]):
        shard_writer.add(row, shard)
    shards = shard_writer.close()
    assert shards == [{"file": p.name, "num_rows": size, "num_bytes": (ours / p.name).stat().st_size}
                      for p, size in zip(paths, sizes)]
    assert sorted(p.name for p in ours.iterdir()) == sorted(p.name for p in reference.iterdir())
    for path in paths:
        mine = ours / path.name
        theirs_header, area = mindrecord_shards.read_header(path)
        mine_header, _ = mindrecord_shards.read_header(mine)
        # compression_size is the reader's size estimate: FileWriter's own total is not the sum of its rows'
        assert {**mine_header, "compression_size": 0} == {**theirs_header, "compression_size": 0}
        assert list(mine_header) == list(theirs_header)  # key order as MindSpore writes it
        assert mine.read_bytes()[area:] == path.read_bytes()[area:]  # the pages
        assert Path(f"{mine}.db").read_bytes() == Path(f"{path}.db").read_bytes()
        assert mine.stat().st_mode == path.stat().st_mode
    import mindspore.dataset as ds

    read = ds.MindDataset(str(ours / paths[0].name), columns_list=["row_index"], shuffle=False)
    assert [int(r["row_index"]) for r in read.create_dict_iterator(output_numpy=True)] == list(range(num_rows))


def test_shard_set_writer_needs_rows_in_shard_order(tmp_path):
    writer = mindrecord_shards.ShardSetWriter(tmp_path, 2)
    row = synthetic_rows(1)[0]
    writer.add(row, 1)
    with pytest.raises(ValueError, match="shard order"):
        writer.add(row, 0)
    writer.discard()


def test_load_manifest_names_what_is_missing(coco128_output, tmp_path):
    _, out, _ = coco128_output
    with pytest.raises(manifest_lib.ManifestError, match="is not a folder"):
        manifest_lib.load_manifest(tmp_path / "nowhere")
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(manifest_lib.ManifestError, match="manifest.json is missing"):
        manifest_lib.load_manifest(empty)
    copy = tmp_path / "copy"
    shutil.copytree(out, copy)
    (copy / "data.mindrecord0").unlink()
    with pytest.raises(manifest_lib.ManifestError, match=r"missing \['data.mindrecord0'\]"):
        manifest_lib.load_manifest(copy)
    manifest = json.loads((out / "manifest.json").read_text())
    del manifest["dataset_id"]
    (copy / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(manifest_lib.ManifestError, match="dataset_id"):
        manifest_lib.load_manifest(copy)


def test_shard_of_row_uses_cumulative_counts():
    shards = tuple(manifest_lib.ShardEntry(name, rows) for name, rows in (("a", 10), ("b", 0), ("c", 10)))
    manifest = manifest_lib.Manifest(num_images=20, num_boxes=0, categories=(manifest_lib.Category(0, 1, "x"),),
                                     shards=shards, dataset_id="", annotation_sha256="", converter_version="")
    assert [manifest.shard_of_row(i) for i in (0, 9, 10, 19)] == ["a", "a", "c", "c"]
    with pytest.raises(ValueError, match="outside"):
        manifest.shard_of_row(20)


@pytest.mark.parametrize("categories, message", [
    ([], "non-empty list"),
    ([{"index": 0, "id": 1}], "bad category entry"),
    ([{"index": 0, "id": 1, "name": "a"}, {"index": 0, "id": 2, "name": "b"}], "index 0 appears twice"),
    ([{"index": 1, "id": 3, "name": "x"}], r"indices must be 0..0"),
    ([{"index": 0, "id": 3, "name": "x"}, {"index": 1, "id": 3, "name": "y"}], "ids must be distinct"),
    ([{"index": True, "id": 3, "name": "x"}], "bad category entry"),
])
def test_manifest_categories_are_checked_in_one_place(categories, message):
    with pytest.raises(manifest_lib.ManifestError, match=message):
        manifest_lib.parse_categories(categories, "manifest.json")


def test_manifest_categories_give_names_and_ids_in_index_order():
    categories = manifest_lib.parse_categories([{"index": 1, "id": 90, "name": "b"}, {"index": 0, "id": 2, "name": "a"}],
                                               "manifest.json")
    shards = (manifest_lib.ShardEntry("s", 0),)
    manifest = manifest_lib.Manifest(num_images=0, num_boxes=0, categories=categories, shards=shards, dataset_id="",
                                     annotation_sha256="", converter_version="")
    assert manifest.class_names == ["a", "b"] and manifest.category_ids.tolist() == [2, 90]
    assert manifest.num_classes == 2


def test_dataset_id_depends_on_ids_boxes_and_annotation_file():
    base = manifest_lib.compute_dataset_id(1, [1, 2], [3, 0], "abc")
    assert base == manifest_lib.compute_dataset_id(1, [1, 2], [3, 0], "abc")
    assert base != manifest_lib.compute_dataset_id(1, [2, 1], [3, 0], "abc")
    assert base != manifest_lib.compute_dataset_id(1, [1, 2], [2, 0], "abc")
    assert base != manifest_lib.compute_dataset_id(1, [1, 2], [3, 0], "abd")
    assert base != manifest_lib.compute_dataset_id(2, [1, 2], [3, 0], "abc")


def test_rejects_bad_arguments(coco128_dir, tmp_path):
    with pytest.raises(ValueError, match="shard_num"):
        convert_coco(coco128_dir / "val2017", coco128_dir / COCO128_JSON, tmp_path / "o", shard_num=0)
    with pytest.raises(ValueError, match="num_workers"):
        convert_coco(coco128_dir / "val2017", coco128_dir / COCO128_JSON, tmp_path / "o", num_workers=0)
    with pytest.raises(ConversionError, match="is not a folder"):
        convert_coco(tmp_path / "no_images", coco128_dir / COCO128_JSON, tmp_path / "o")
    assert resolve_num_workers(10 ** 6) == os.cpu_count()
    assert not (tmp_path / "o").exists()


def test_throughput_benchmark_runs_on_a_tiny_set(tmp_path, coco128_dir, capsys):
    from benchmarks import convert_throughput

    assert convert_throughput.main(["--num_images", "24", "--repeats", "1", "--num_workers", "1"]) == 0
    printed = capsys.readouterr().out
    assert "coco128 repeated to 24 images" in printed
    assert "images/s" in printed and "ratio" in printed


def test_tool_converts_shows_progress_and_verifies(labelme_dir, tmp_path):
    import subprocess
    import sys

    tool = Path(__file__).resolve().parents[1] / "tools" / "coco2mindrecord.py"
    out = tmp_path / "out"
    result = subprocess.run([sys.executable, str(tool), "--image_dir", str(labelme_dir), "--ann_file",
                             str(labelme_dir / "annotations.json"), "--output_dir", str(out), "--num_workers", "2",
                             "--verify_after"], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert "img/s" in result.stderr  # the tqdm bar
    for row in ("images", "boxes", "skipped", "shards", "bytes", "time"):
        assert any(line.startswith(row) for line in result.stdout.splitlines()), row
    assert "3 rows read with MindDataset" in result.stdout and result.stdout.rstrip().endswith("OK")

    manifest = json.loads((out / "manifest.json").read_text())
    manifest["dataset_id"] = "0" * 64
    (out / "manifest.json").write_text(json.dumps(manifest))
    result = subprocess.run([sys.executable, str(tool), "--verify", str(out)], capture_output=True, text=True,
                            timeout=120)
    assert result.returncode == 1 and "dataset_id" in result.stdout and "FAILED" in result.stdout

    result = subprocess.run([sys.executable, str(tool), "--verify", str(tmp_path / "missing")],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 2 and "is not a folder" in result.stderr and "Traceback" not in result.stderr


def test_cli_main_runs_in_process_with_exit_codes(labelme_dir, tmp_path, capsys):
    import signal

    from yolodata.cli import coco2mindrecord

    handler = signal.getsignal(signal.SIGTERM)
    out = tmp_path / "out"
    assert coco2mindrecord.main(["--image_dir", str(labelme_dir), "--ann_file", str(labelme_dir / "annotations.json"),
                                 "--output_dir", str(out), "--no_progress", "--num_workers", "1"]) == 0
    assert any(line.startswith("images   3") for line in capsys.readouterr().out.splitlines())
    assert coco2mindrecord.main(["--verify", str(tmp_path / "missing")]) == coco2mindrecord.EXIT_USER_ERROR
    assert "is not a folder" in capsys.readouterr().err
    assert signal.getsignal(signal.SIGTERM) is handler  # the command's SIGTERM handling ends with it


# ----------------------------------------------------------------------------------------------------
# Pieces of the converter: incremental json reading, labels of many images at once, decoding ahead
# ----------------------------------------------------------------------------------------------------

JSON_CASES = ['{}', ' {\n} ', '{"a":1}', '{"a":[1,2,{"x":[]}],"b":"s"}', '{"a" : [ 1 , 2 ] , "b" : [ ] }\n',
              '{"a":[1,2,]}', '{"a":1,}', '{"a":1', '{"a" 1}', '{a:1}', '[1,2]', '"x"', '{"a":1} x',
              '{"a":[1 2]}', '{"a":NaN,"b":-Infinity,"c":1e400}', '', '   ', '{"a":[', '{"a":[1,',
              '{"a":"\\u00e9\\ud83d\\ude00"}', '{"a":1,"a":2}', '{"a":[{"b":[1.5,2]}],"c":{"d":null}}']


@pytest.mark.parametrize("text", JSON_CASES)
def test_json_members_give_what_json_loads_gives(text):
    from yolodata.json_members import NotAnObject, iter_object_members

    try:
        expected = ("value", json.loads(text))
    except json.JSONDecodeError as error:
        expected = ("error", error.msg, error.pos)
    try:
        got = ("value", dict(iter_object_members(text, elementwise={"a", "b"})))
    except NotAnObject as error:
        got = ("value", error.value)
    except json.JSONDecodeError as error:
        got = ("error", error.msg, error.pos)
    assert repr(got) == repr(expected)


def test_json_members_read_a_real_coco_file_like_json_loads(coco128_dir):
    from yolodata.json_members import decode_json_bytes, iter_object_members

    data = (coco128_dir / COCO128_JSON).read_bytes()
    members = list(iter_object_members(decode_json_bytes(b"\xef\xbb\xbf" + data), {"images", "annotations"}))
    assert dict(members) == json.loads(data)
    assert [key for key, _ in members] == list(json.loads(data))


def test_decoding_starts_when_the_images_list_is_parsed(coco128_dir, tmp_path):
    """The images list reaches the converter before the rest of the file is even checked for syntax."""
    document = coco128_subset(coco128_dir, 3)
    text = json.dumps({"images": document["images"], "categories": document["categories"]})
    seen = []
    with pytest.raises(ConversionError, match="is not valid JSON"):
        convert_lib.read_coco_document((text[:-1] + ', "annotations": [{"id": 1,]}').encode(), "x.json",
                                       on_images=lambda images: seen.append(len(images)))
    assert seen == [3]
    with pytest.raises(ConversionError, match="key 'images' appears twice"):
        convert_lib.read_coco_document(b'{"images": [], "images": []}', "x.json")


def test_labels_of_many_images_equal_the_per_image_labels(coco128_dir):
    document = json.loads((coco128_dir / COCO128_JSON).read_text())
    categories = convert_lib.parse_categories(document["categories"])
    class_of_category = {c.id: c.index for c in categories}
    images = sorted(document["images"], key=lambda r: r["id"])
    by_image = {}
    for ann in document["annotations"]:
        by_image.setdefault(ann["image_id"], []).append(ann)
    lists = [by_image.get(r["id"], []) for r in images]
    # boxes outside, across and on the border of the first image, empty and negative ones, a crowd box
    width, height = images[0]["width"], images[0]["height"]
    template = lists[0][0]
    lists[0] = lists[0] + [{**template, "bbox": bbox, "iscrowd": crowd} for bbox, crowd in [
        ([-10.0, -5.0, 50.0, 40.0], 0), ([width - 20.5, 10.25, 100.0, 30.0], 1), ([width + 5.0, 1.0, 2.0, 2.0], 0),
        ([15, 15, 0, 10], 0), ([30.0, 30.0, -5.0, 10.0], 0), ([0.1, 0.2, width - 0.1, height - 0.2], 0),
        ([1e-7, 1e-7, 1e-7, 1e-7], 0)]]
    widths, heights = [r["width"] for r in images], [r["height"] for r in images]
    together = convert_lib.labels_for_images(lists, class_of_category, widths, heights)
    assert len(together) == len(images)
    for annotations, width, height, (labels, clipped, dropped) in zip(lists, widths, heights, together):
        alone, alone_clipped, alone_dropped = convert_lib.labels_from_annotations(annotations, class_of_category,
                                                                                  width, height)
        assert labels.dtype == alone.dtype == np.float32 and labels.shape == alone.shape
        assert labels.tobytes() == alone.tobytes()
        assert (clipped, dropped) == (alone_clipped, alone_dropped)
    assert together[0][1] == 3 and together[0][2] == 3
    assert convert_lib.labels_for_images([[], []], class_of_category, [5, 5], [5, 5])[1][0].shape == (0, 6)


@pytest.mark.parametrize("num_workers", [1, 2])
def test_ordered_prefetch_keeps_order_bounds_memory_and_skips_dropped_items(num_workers):
    import threading

    from yolodata.ordered_prefetch import OrderedPrefetch

    lock = threading.Lock()
    started, consumed, ahead = [], [], []

    def work(item):
        with lock:
            started.append(item)
            ahead.append(len(started) - len(consumed))
        return item * item

    items = list(range(40))
    with OrderedPrefetch(items, work, num_workers=num_workers, max_weight=6, weight=lambda item: 2,
                         items_per_task=2) as prefetch:
        results = []
        for item, result in prefetch:
            with lock:
                consumed.append(item)
            results.append((item, result))
            if item == 9:
                prefetch.drop({12, 13, 30}, key=lambda value: value)
    assert results == [(i, i * i) for i in items if i not in (12, 13, 30)]
    # at most max_weight (3 items) plus one task of 2 items, and one task per thread, are ever ahead
    assert max(ahead) <= max(3 + 2, 2 * num_workers) + 2
    assert 30 not in started  # dropped before any thread reached it


def test_an_early_exit_stops_the_threads():
    from yolodata.ordered_prefetch import OrderedPrefetch

    import time

    done = []

    def slow(item):
        time.sleep(0.001)
        done.append(item)

    with pytest.raises(RuntimeError):
        with OrderedPrefetch(range(1000), slow, num_workers=2, max_weight=10 ** 9, items_per_task=4) as prefetch:
            for item, _ in prefetch:
                if item == 3:
                    raise RuntimeError("stop")
    assert len(done) < 1000


def test_the_gil_switch_interval_is_restored(coco128_dir, tmp_path):
    import sys

    before = sys.getswitchinterval()
    convert_coco(coco128_dir / "val2017", coco128_dir / COCO128_JSON, tmp_path / "out", num_workers=2)
    assert sys.getswitchinterval() == before
    (tmp_path / "bad.json").write_text('{"images": [], "annotations": 1, "categories": []}')
    with pytest.raises(ConversionError):
        convert_coco(coco128_dir / "val2017", tmp_path / "bad.json", tmp_path / "out2")
    assert sys.getswitchinterval() == before
