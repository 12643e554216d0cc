"""A COCO json streamed to disk unit by unit (``StreamedCocoUnits``) gives exactly what the in-memory
document gives (``DocumentUnits``): same units, unit documents, problems and json errors; and the
streaming reader (``json_stream``) gives ``json.load``'s values whatever the chunk boundaries."""
from __future__ import annotations

import hashlib
import io
import json
import os
import pickle
from pathlib import Path

import pytest

from yolodata.convert import SourceDocument, read_coco_document
from yolodata.convert.coco_stream import StreamedCocoUnits
from yolodata.convert.problems import ConversionError
from yolodata.convert.unit_sources import DocumentUnits
from yolodata.json_stream import JsonStreamError, NotAnObject, StreamedArray, read_object_members

from test_unit_sources import bad_document, coco128_source

TRICKY_NUMBERS = [0.1, 2.675, 1e-320, 5e-324, 1.7976931348623157e308, -0.0, 1e22, 123456789.12345679,
                  0.30000000000000004, 3, -7, 2 ** 70, 1.5e-7]


def streamed(data: bytes, chunk_bytes: int) -> tuple[list, dict]:
    elements: dict = {}
    members, _ = read_object_members(io.BytesIO(data), {"images", "annotations"},
                                     lambda key, text, value: elements.setdefault(key, []).append((text, value)),
                                     chunk_bytes=chunk_bytes)
    return members, elements


@pytest.mark.parametrize("chunk_bytes", [4, 5, 7, 64, 1 << 20])
@pytest.mark.parametrize("encoding", ["utf-8", "utf-8-sig", "utf-16"])
def test_stream_gives_json_load_values_and_source_texts(chunk_bytes, encoding):
    document = {"info": {"note": "caf\u00e9 \u2603 \"quoted\" \\ \t tab", "n": TRICKY_NUMBERS},
                "annotations": [{"id": i, "bbox": TRICKY_NUMBERS[i:i + 4], "s": "x" * (i * 7)} for i in range(9)],
                "images": [], "extra": [[], {}, None, True, False], "categories": [{"id": 1, "name": "a"}]}
    for text in (json.dumps(document), json.dumps(document, indent=2), json.dumps(document, separators=(",", ":")),
                 "\n " + json.dumps(document, indent="\t") + " \r\n"):
        text = text.replace('"n": [', '"n": [NaN, -Infinity, ')
        data = text.encode(encoding)
        members, elements = streamed(data, chunk_bytes)
        expected = json.loads(data)
        assert [key for key, _ in members] == list(expected)
        assert dict(members)["annotations"] == StreamedArray(9) and dict(members)["images"] == StreamedArray(0)
        info = dict(members)["info"]
        assert json.dumps(info) == json.dumps(expected["info"])     # NaN compares unequal; its text does not
        assert dict(members)["extra"] == expected["extra"]
        assert [value for _, value in elements["annotations"]] == expected["annotations"]
        assert [json.loads(source) for source, _ in elements["annotations"]] == expected["annotations"]
        assert "images" not in elements


@pytest.mark.parametrize("text", ['{"a": [1, 2', '{"a": 1} x', '{"a" 1}', '{"a": 1,}', '{"images": [1 2]}',
                                  '{"images": [{"id": tru}]}', '', '   ', '{"a": "unterminated}',
                                  '{"a":\n  [1,\n   nul]}', '{"images": [1,]}'])
@pytest.mark.parametrize("chunk_bytes", [4, 1 << 20])
def test_invalid_json_is_located_as_json_load_locates_it(text, chunk_bytes):
    with pytest.raises(json.JSONDecodeError) as expected:
        json.loads(text)
    with pytest.raises(JsonStreamError) as raised:
        streamed(text.encode(), chunk_bytes)
    assert str(raised.value) == str(expected.value)


@pytest.mark.parametrize("text, type_name", [("[1, 2]", "list"), ("3.5", "float"), ('"s"', "str"),
                                             ("null", "NoneType")])
def test_a_top_level_that_is_no_object_is_named(text, type_name):
    with pytest.raises(NotAnObject, match=f"top level is a {type_name}"):
        streamed(text.encode(), 4)


def write_json(path: Path, document: dict, **dump_options) -> Path:
    path.write_text(json.dumps(document, **dump_options), encoding="utf-8")
    return path


def assert_same_units(streamed_units, document_units) -> None:
    assert streamed_units.units == document_units.units
    assert streamed_units.problems == document_units.problems
    for name in ("categories", "other_members", "member_order", "annotation_sha256", "annotation_file", "name",
                 "source_format", "source_problems"):
        assert getattr(streamed_units, name) == getattr(document_units, name), name
    for spec in document_units.units:
        assert streamed_units.load_unit(spec.index) == document_units.load_unit(spec.index)


@pytest.mark.parametrize("options", [{"shard_num": 3}, {"shard_size": 300_000}])
def test_coco128_streamed_units_equal_the_document_units(coco128_dir, tmp_path, options):
    source, image_dir = coco128_source(coco128_dir)
    units = StreamedCocoUnits(source.name, image_dir, tmp_path / "work", chunk_bytes=4096, **options)
    assert_same_units(units, DocumentUnits(source, image_dir, **options))
    assert units.annotation_sha256 == hashlib.sha256(Path(source.name).read_bytes()).hexdigest()
    spills = {p.name for p in (tmp_path / "work").iterdir()}     # the raw spills are gone; a unit of
    assert {f"unit-{spec.index:05d}.images.jsonl" for spec in units.units} <= spills   # backgrounds only has no
    assert spills <= {f"unit-{spec.index:05d}.{kind}.jsonl" for spec in units.units    # annotations file
                      for kind in ("images", "annotations")}
    again = pickle.loads(pickle.dumps(units))
    assert again.load_unit(1) == units.load_unit(1)
    with units.open_source() as file:
        assert file.read() == Path(source.name).read_bytes()


@pytest.mark.parametrize("layout", ["annotations_first", "pretty", "compact"])
def test_bad_records_stream_to_the_same_units_and_problems(tmp_path, layout):
    document, image_dir = bad_document(tmp_path)
    if layout == "annotations_first":
        document = {key: document[key] for key in ("annotations", "licenses", "categories", "images", "info")}
    dump_options = {"indent": 1} if layout == "pretty" else {"separators": (",", ":")}
    ann_file = write_json(tmp_path / "ann.json", document, **dump_options)
    data = ann_file.read_bytes()
    source = SourceDocument(read_coco_document(data, str(ann_file)), str(ann_file), data,
                            hashlib.sha256(data).hexdigest(), "coco", ann_file.name)
    for options in ({"shard_size": 1}, {"shard_num": 2}):
        units = StreamedCocoUnits(ann_file, image_dir, tmp_path / "work", chunk_bytes=61, **options)
        assert_same_units(units, DocumentUnits(source, image_dir, **options))
        assert len(units.problems) == 9


def test_floats_round_trip_exactly_through_the_spill(tmp_path):
    image_dir = tmp_path / "images"
    image_dir.mkdir()
    (image_dir / "a.jpg").write_bytes(b"x")
    boxes = [TRICKY_NUMBERS[i:i + 4] for i in range(len(TRICKY_NUMBERS) - 3)]
    document = {"images": [{"id": 1, "file_name": "a.jpg", "height": 10, "width": 10}],
                "annotations": [{"id": i, "image_id": 1, "category_id": 1, "bbox": box, "area": box[0]}
                                for i, box in enumerate(boxes)],
                "categories": [{"id": 1, "name": "a"}]}
    ann_file = write_json(tmp_path / "ann.json", document)
    text = ann_file.read_text().replace('"area": 0.1', '"area": 1E-1').replace('"area": 2.675', '"area": 2675e-3')
    ann_file.write_text(text)
    loaded = StreamedCocoUnits(ann_file, image_dir, tmp_path / "work", shard_num=1).load_unit(0)
    expected = json.loads(text)["annotations"]
    assert loaded["annotations"] == expected
    assert json.dumps(loaded["annotations"]) == json.dumps(expected)
    assert all(type(a) is type(b) for got, want in zip(loaded["annotations"], expected)
               for a, b in zip(got["bbox"], want["bbox"]))


@pytest.mark.parametrize("text", ["not json", '[{"images": []}]', '{"annotations": [], "categories": []}',
                                  '{"images": {}, "annotations": [], "categories": []}',
                                  '{"images": [], "annotations": [], "categories": [], "images": []}',
                                  '{"images": [], "annotations": [], "categories": 3}', b'\xff\xfe\xfa'])
def test_json_problems_stop_with_the_messages_of_the_in_memory_reader(tmp_path, text):
    data = text if isinstance(text, bytes) else text.encode()
    ann_file = tmp_path / "ann.json"
    ann_file.write_bytes(data)
    with pytest.raises(ConversionError) as expected:
        read_coco_document(data, str(ann_file))
    with pytest.raises(ConversionError) as raised:
        StreamedCocoUnits(ann_file, tmp_path, tmp_path / "work", shard_num=1)
    if "is not valid JSON" in str(expected.value):
        assert str(raised.value).startswith(f"{ann_file} is not valid JSON: ")
    else:
        assert str(raised.value) == str(expected.value)
    assert os.listdir(tmp_path / "work") == []


def test_a_missing_file_is_named(tmp_path):
    with pytest.raises(ConversionError, match="cannot read the annotation file .*nothing.json"):
        StreamedCocoUnits(tmp_path / "nothing.json", tmp_path, tmp_path / "work", shard_num=1)


def test_a_second_run_replaces_the_spills(tmp_path):
    document, image_dir = bad_document(tmp_path)
    ann_file = write_json(tmp_path / "ann.json", document)
    first = StreamedCocoUnits(ann_file, image_dir, tmp_path / "work", shard_num=2)
    units = [first.load_unit(i) for i in range(2)]
    second = StreamedCocoUnits(ann_file, image_dir, tmp_path / "work", shard_num=2)
    assert [second.load_unit(i) for i in range(2)] == units


def test_small_chunks_everywhere_give_the_same_units(tmp_path, monkeypatch, coco128_dir):
    """The chunked paths (index spill, annotation routing, buffered unit files) with chunks of a few records."""
    from yolodata.convert import coco_stream, unit_sources

    monkeypatch.setattr(unit_sources, "CHUNK_RECORDS", 5)
    monkeypatch.setattr(coco_stream, "ROUTE_CHUNK_LINES", 7)
    monkeypatch.setattr(coco_stream, "DIRECT_CHUNK_LINES", 3)
    monkeypatch.setattr(coco_stream, "FLUSH_CHARS", 1000)
    document, image_dir = bad_document(tmp_path)
    ann_file = write_json(tmp_path / "ann.json", document)
    source = SourceDocument.from_document(json.loads(ann_file.read_text()), str(ann_file), source_format="coco",
                                          annotation_file=ann_file.name)
    expected = DocumentUnits(source, image_dir, shard_num=3)
    first = {key: document[key] for key in ("annotations", "images", "categories")}
    for path in (ann_file, write_json(tmp_path / "first.json", first)):   # routed while reading / after it
        units = StreamedCocoUnits(path, image_dir, tmp_path / "work", shard_num=3, chunk_bytes=50)
        assert units.units == expected.units and units.problems == expected.problems
        assert [units.load_unit(i) for i in range(3)] == [expected.load_unit(i) for i in range(3)]
    coco, coco_images = coco128_source(coco128_dir)
    units = StreamedCocoUnits(coco.name, coco_images, tmp_path / "work", shard_size=1_000_000)
    expected = DocumentUnits(coco, coco_images, shard_size=1_000_000)
    assert units.units == expected.units
    assert [units.load_unit(s.index) for s in units.units] == [expected.load_unit(s.index) for s in expected.units]


def test_the_streamed_driver_does_not_import_mindspore(tmp_path):
    import subprocess
    import sys

    document, image_dir = bad_document(tmp_path)
    ann_file = write_json(tmp_path / "ann.json", document)
    code = ("import sys\nfrom yolodata.convert.coco_stream import StreamedCocoUnits\n"
            f"StreamedCocoUnits({str(ann_file)!r}, {str(image_dir)!r}, {str(tmp_path / 'work')!r}, shard_num=2)\n"
            "print(sorted(m for m in sys.modules if m.split('.')[0] in ('mindspore', 'ray')))\n")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                          cwd=Path(__file__).resolve().parents[1])
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.split() == ["[]"]


def test_a_yolo_dataset_streamed_through_its_reader_gives_the_document_units(coco128_dir, tmp_path):
    from benchmarks.format_exports import write_yolo
    from yolodata.convert.sources import yolo_units

    document = json.loads((coco128_dir / "annotations" / "instances_val2017.json").read_text())
    data_file = write_yolo(document, coco128_dir / "val2017", tmp_path / "yolo")
    labels = sorted((tmp_path / "yolo" / "labels" / "train").glob("*.txt"))
    labels[3].write_text("99 0.5 0.5 0.1 0.1\n")                        # an image left out by the reader
    labels[5].write_text(labels[5].read_text() + labels[5].read_text())  # duplicate lines: a fix, counted
    in_memory, root = yolo_units(data_file, shard_num=5)
    streamed, streamed_root = yolo_units(data_file, shard_num=5, work_dir=tmp_path / "work")
    assert streamed_root == root and streamed.source_problems == in_memory.source_problems
    assert len(streamed.source_problems) >= 2 and any(p.is_error for p in streamed.source_problems)
    assert_same_units(streamed, in_memory)
    assert streamed.details == in_memory.details
    with streamed.open_source() as file:
        assert file.read() == in_memory.open_source().read()
    assert pickle.loads(pickle.dumps(streamed)).load_unit(2) == in_memory.load_unit(2)


@pytest.mark.parametrize("with_names", [True, False])
def test_a_voc_dataset_streamed_through_its_reader_gives_the_document_units(coco128_dir, tmp_path, with_names):
    from benchmarks.format_exports import write_voc
    from yolodata.convert.sources import voc_units

    document = json.loads((coco128_dir / "annotations" / "instances_val2017.json").read_text())
    voc_dir = write_voc(document, coco128_dir / "val2017", tmp_path / "voc")
    xml_files = sorted((voc_dir / "Annotations").glob("*.xml"))
    xml_files[2].write_text("<annotation><size>")                       # malformed: its image left out
    names = {"names_file": voc_dir / "names.txt"} if with_names else {}
    in_memory, root = voc_units(voc_dir, split="train", shard_size=3_000_000, **names)
    streamed, streamed_root = voc_units(voc_dir, split="train", shard_size=3_000_000, work_dir=tmp_path / "work",
                                        **names)
    assert streamed_root == root and streamed.source_problems == in_memory.source_problems
    assert [p.reason for p in streamed.source_problems] == ["malformed_xml"]
    assert_same_units(streamed, in_memory)
    assert streamed.details == in_memory.details and len(streamed.units) > 2
    with streamed.open_source() as file:
        assert file.read() == in_memory.open_source().read()
