"""Work units from an in-memory document (``DocumentUnits``): every image once, in id order, duplicate
ids together, and every problem of the whole-document plan reported exactly once (by the routing or by
the unit that holds the record), with the same message."""
from __future__ import annotations

import json
import pickle
from pathlib import Path

import pytest

from yolodata.convert import SourceDocument, check_images, parse_categories, plan_conversion, plan_source, \
    read_annotation_file
from yolodata.convert.problems import problem_order
from yolodata.convert.unit_sources import DocumentUnits
from yolodata.convert.units import ROW_OVERHEAD_BYTES


def coco128_source(coco128_dir: Path) -> tuple[SourceDocument, Path]:
    """coco128's json as the converter reads it, and its image folder."""
    ann_file = coco128_dir / "annotations" / "instances_val2017.json"
    data, sha256 = read_annotation_file(ann_file)
    return SourceDocument(json.loads(data), str(ann_file), data, sha256, "coco", ann_file.name), coco128_dir / "val2017"


def unit_plan_problems(units, image_dir) -> tuple[list, list]:
    """(image problems, annotation problems) of planning every unit on its own, plus the routing's."""
    categories = parse_categories(units.categories, units.name)
    image_problems = [p for p in units.problems if p.about == "image"]
    annotation_problems = [p for p in units.problems if p.about == "annotation"]
    for spec in units.units:
        unit = units.load_unit(spec.index)
        checks = check_images(unit["images"], Path(image_dir), positions=unit["image_positions"])
        source = SourceDocument({**unit, "categories": units.categories}, units.name, b"", "", "coco")
        plan = plan_conversion(source, checks, categories, drop_empty=False,
                               annotation_positions=unit["annotation_positions"])
        image_problems += plan.problems
        annotation_problems += plan.annotation_problems
    return sorted(image_problems, key=problem_order), annotation_problems


def test_coco128_units_cover_every_image_once_in_id_order(coco128_dir):
    source, image_dir = coco128_source(coco128_dir)
    images = source.document["images"]
    for options in ({"shard_num": 3}, {"shard_size": 400_000}, {"shard_num": 1}):
        units = DocumentUnits(source, image_dir, **options)
        loaded = [units.load_unit(spec.index) for spec in units.units]
        ids = [record["id"] for unit in loaded for record in unit["images"]]
        assert ids == sorted(record["id"] for record in images)
        for spec, unit in zip(units.units, loaded):
            assert (spec.first_image_id, spec.last_image_id, spec.num_images) == (
                unit["images"][0]["id"], unit["images"][-1]["id"], len(unit["images"]))
            assert spec.planned_bytes == sum((image_dir / r["file_name"]).stat().st_size for r in unit["images"])
            assert [images[p] for p in unit["image_positions"]] == unit["images"]
            assert {a["image_id"] for a in unit["annotations"]} <= {r["id"] for r in unit["images"]}
        annotations = [a for unit in loaded for a in unit["annotations"]]
        assert sorted(a["id"] for a in annotations) == sorted(a["id"] for a in source.document["annotations"])
        if "shard_num" in options:
            assert len(units.units) == options["shard_num"]
        else:
            assert all(spec.planned_bytes + spec.num_images * ROW_OVERHEAD_BYTES <= 400_000
                       for spec in units.units if spec.num_images > 1)
        assert units.problems == () and units.annotation_sha256 == source.sha256
        whole = plan_source(source, image_dir)
        assert unit_plan_problems(units, image_dir) == (whole.problems, whole.annotation_problems)


def bad_document(folder: Path) -> tuple[dict, Path]:
    """A document with one of each record problem, between good images whose files exist."""
    image_dir = folder / "images"
    image_dir.mkdir()
    images = []
    for image_id in range(1, 13):
        name = f"img{image_id}.jpg"
        (image_dir / name).write_bytes(b"x" * (1000 * image_id))
        images.append({"id": image_id, "file_name": name, "height": 20, "width": 30})
    images[3]["file_name"] = "missing.jpg"                              # id 4: missing file
    images[4]["height"] = -1                                            # id 5: bad record with usable id
    images.append({"id": 7, "file_name": "img7b.jpg", "height": 20, "width": 30})   # duplicate id 7
    images += [{"id": "2299", "file_name": "s.jpg", "height": 20, "width": 30},      # string id
               ["not", "a", "record"],                                              # not an object
               {"file_name": "noid.jpg", "height": 1, "width": 1},                  # no id
               {"id": 2 ** 70, "file_name": "big.jpg", "height": 1, "width": 1}]    # id beyond int64
    images.reverse()  # source order is not id order
    box = {"category_id": 1, "bbox": [1.5, 2.0, 5.25, 6.0], "iscrowd": 0, "area": 31.5}
    annotations = [{**box, "id": 100 + i, "image_id": image_id}
                   for i, image_id in enumerate([1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 12, 1])]
    annotations += [{**box, "id": 200, "image_id": 999},              # unknown image
                    {**box, "id": 201, "image_id": "2299"},           # the string-id image: skipped with it
                    {**box, "id": 202, "image_id": "5"},              # a string naming no image
                    {**box, "id": 203, "image_id": 2 ** 70},          # the huge-id image: skipped with it
                    {**box, "id": 204, "image_id": 3.0},              # a float id
                    "not an annotation",
                    {**box, "id": 205, "image_id": 9, "bbox": [1, 2, 3]},   # bad box: image 9 skipped
                    {**box, "id": 206, "image_id": 10, "category_id": 77}]  # unknown category
    annotations.insert(3, {**box, "id": 207, "image_id": -5})
    document = {"info": {"year": 2026}, "images": images, "annotations": annotations,
                "categories": [{"id": 1, "name": "thing"}], "licenses": []}
    return document, image_dir


@pytest.mark.parametrize("options", [{"shard_size": 1}, {"shard_num": 3}, {"shard_size": 9000}])
def test_bad_records_are_reported_once_with_the_whole_document_messages(tmp_path, options):
    document, image_dir = bad_document(tmp_path)
    units = DocumentUnits(document, image_dir, **options)
    whole = plan_source(SourceDocument.from_document(document, "the document", source_format="coco"), image_dir)
    image_problems, annotation_problems = unit_plan_problems(units, image_dir)
    assert [p.describe() for p in image_problems] == [p.describe() for p in whole.problems]
    assert image_problems == whole.problems
    assert sorted(annotation_problems, key=problem_order) == sorted(whole.annotation_problems, key=problem_order)
    reasons = sorted(p.reason for p in units.problems)
    assert reasons == ["bad_annotation", "bad_image_record", "bad_image_record", "bad_image_record",
                       "bad_image_record", "unknown_image", "unknown_image", "unknown_image", "unknown_image"]
    assert units.other_members == {"info": {"year": 2026}, "licenses": []}
    assert units.member_order == ("info", "images", "annotations", "categories", "licenses")


def test_duplicate_ids_land_in_one_unit(tmp_path):
    document, image_dir = bad_document(tmp_path)
    units = DocumentUnits(document, image_dir, shard_size=1)   # one id per unit
    usable_ids = sorted({r["id"] for r in document["images"] if isinstance(r, dict)
                         and type(r.get("id")) is int and r["id"] < 2 ** 63})
    assert [spec.first_image_id for spec in units.units] == usable_ids
    seven = [units.load_unit(s.index) for s in units.units if s.first_image_id == 7]
    assert [r["file_name"] for r in seven[0]["images"]] == ["img7b.jpg", "img7.jpg"]   # source order
    assert seven[0]["image_positions"] == sorted(seven[0]["image_positions"])
    assert [s.planned_bytes for s in units.units if s.first_image_id in (4, 5, 7)] == [0, 0, 0]


def test_document_units_pickle_and_keep_the_source(tmp_path):
    document, image_dir = bad_document(tmp_path)
    source = SourceDocument.from_document(document, "the document", source_format="coco")
    units = DocumentUnits(source, image_dir, shard_num=2)
    again = pickle.loads(pickle.dumps(units))
    assert again.units == units.units and again.problems == units.problems
    assert [again.load_unit(i) for i in range(2)] == [units.load_unit(i) for i in range(2)]
    assert again.open_source().read() == source.raw_bytes
    assert units.categories == document["categories"] and units.annotation_sha256 == source.sha256


def test_yolo_and_voc_datasets_give_units_of_their_reader_document(coco128_dir, tmp_path):
    from benchmarks.format_exports import write_voc, write_yolo
    from yolodata.convert.sources import voc_units, yolo_units
    from yolodata.formats import read_voc_dataset, read_yolo_dataset

    document = json.loads((coco128_dir / "annotations" / "instances_val2017.json").read_text())
    data_file = write_yolo(document, coco128_dir / "val2017", tmp_path / "yolo")
    (tmp_path / "yolo" / "labels" / "train" / sorted(p.name for p in (tmp_path / "yolo" / "labels" / "train")
                                                     .glob("*.txt"))[3]).write_text("99 0.5 0.5 0.1 0.1\n")
    voc_dir = write_voc(document, coco128_dir / "val2017", tmp_path / "voc")
    for (units, image_root), dataset in (
            (yolo_units(data_file, shard_num=4), read_yolo_dataset(data_file, "train")),
            (voc_units(voc_dir, split="train", names_file=voc_dir / "names.txt", shard_size=2_000_000),
             read_voc_dataset(voc_dir, "train", names_file=voc_dir / "names.txt"))):
        assert image_root == dataset.image_root
        loaded = [units.load_unit(spec.index) for spec in units.units]
        assert [r for unit in loaded for r in unit["images"]] == sorted(dataset.document["images"],
                                                                         key=lambda r: r["id"])
        assert sorted(a["id"] for unit in loaded for a in unit["annotations"]) == sorted(
            a["id"] for a in dataset.document["annotations"])
        assert units.source_problems == tuple(dataset.problems) and units.details == dataset.source
        assert units.source_format == dataset.source_format and units.problems == ()
        assert sum(spec.planned_bytes for spec in units.units) == sum(
            (image_root / r["file_name"]).stat().st_size for r in dataset.document["images"])
    units, _ = yolo_units(data_file, shard_num=4)
    assert len(units.units) == 4
    assert [(p.reason, p.image_id) for p in units.source_problems] == [("unknown_class", 4)]   # the bad label file
    assert 4 not in {r["id"] for spec in units.units for r in units.load_unit(spec.index)["images"]}
