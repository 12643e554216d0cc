"""--max_side: large pictures stored shrunk with scaled boxes, small ones unchanged, evaluation in
original pixels, every pipeline reading the stored pictures, and sets of the older schema still read."""
from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import cv2
import numpy as np
import pytest

from benchmarks.format_exports import write_voc, write_yolo
from yolodata import mindrecord_shards, visualize as vis
from yolodata.cli import coco2mindrecord
from yolodata.convert import convert_coco, convert_voc, convert_yolo
from yolodata.convert.units import ROW_OVERHEAD_BYTES
from yolodata.convert.shrink import HINT_LONG_SIDE, ShrinkOptions, ShrinkTally, scale_labels, shrink_hint
from yolodata.pipeline.eval_batches import EvalGeometry, rect_batch_shape
from yolodata.manifest import load_manifest
from yolodata.pipeline import EVAL_COLUMNS, TRAIN_COLUMNS, create_eval_dataset, create_train_dataset
from yolodata.pipeline.rows import reduced_decode_factor
from yolodata.schema import FIELDS, MINDRECORD_SCHEMA, ORIGINAL_SIZE_FIELDS, SHARD_PREFIX
from yolodata.verify import verify_output
from yolomodel.coco_eval import batch_results

MAX_SIDE = 300
RED, GREEN = (0, 0, 255), (0, 255, 0)   # BGR; class 0 is red, class 1 green
# file name, (height, width), [(class, x1, y1, x2, y2)] in original pixels
PICTURES = {
    "large.jpg": ((600, 800), [(0, 80, 60, 400, 300), (1, 480, 320, 760, 560)]),
    "tall.png": ((900, 600), [(1, 40, 100, 300, 500), (0, 320, 520, 580, 880)]),
    "small.jpg": ((150, 200), [(0, 20, 30, 120, 110)]),
}


def write_pictures(folder: Path) -> tuple[Path, Path, dict]:
    """The three pictures (coloured rectangles on gray) and their COCO json; returns (image dir, json, doc)."""
    image_dir = folder / "images"
    image_dir.mkdir(parents=True)
    images, annotations = [], []
    for image_id, (name, ((height, width), boxes)) in enumerate(PICTURES.items(), start=1):
        canvas = np.full((height, width, 3), 128, np.uint8)
        for class_index, x1, y1, x2, y2 in boxes:
            canvas[y1:y2, x1:x2] = (RED, GREEN)[class_index]
            annotations.append({"id": len(annotations) + 1, "image_id": image_id, "category_id": class_index + 1,
                                "bbox": [x1, y1, x2 - x1, y2 - y1], "area": float((x2 - x1) * (y2 - y1)),
                                "iscrowd": 0})
        params = [cv2.IMWRITE_JPEG_QUALITY, 95] if name.endswith(".jpg") else []
        cv2.imwrite(str(image_dir / name), canvas, params)
        images.append({"id": image_id, "file_name": name, "height": height, "width": width})
    document = {"images": images, "annotations": annotations,
                "categories": [{"id": 1, "name": "red"}, {"id": 2, "name": "green"}]}
    ann_file = folder / "instances.json"
    ann_file.write_text(json.dumps(document))
    return image_dir, ann_file, document


@pytest.fixture(scope="module")
def pictures(tmp_path_factory):
    return write_pictures(tmp_path_factory.mktemp("max_side_pictures"))


@pytest.fixture(scope="module")
def shrunk(pictures, tmp_path_factory):
    image_dir, ann_file, _ = pictures
    out = tmp_path_factory.mktemp("max_side") / "shrunk"
    summary = convert_coco(image_dir, ann_file, out, max_side=MAX_SIDE)
    return out, summary


@pytest.fixture(scope="module")
def plain(pictures, tmp_path_factory):
    image_dir, ann_file, _ = pictures
    out = tmp_path_factory.mktemp("max_side") / "plain"
    convert_coco(image_dir, ann_file, out)
    return out


def rows_by_name(folder: Path) -> dict:
    import mindspore.dataset as ds

    manifest = load_manifest(folder)
    columns = list(FIELDS) if manifest.has_original_sizes else [f for f in FIELDS if f not in ORIGINAL_SIZE_FIELDS]
    dataset = ds.MindDataset(str(manifest.shard_paths[0]), columns_list=columns, shuffle=False)
    rows = {}
    for row in dataset.create_dict_iterator(output_numpy=True, num_epochs=1):
        name = row["file_name"].item() if isinstance(row["file_name"], np.ndarray) else row["file_name"]
        rows[Path(name.decode() if isinstance(name, bytes) else str(name)).name] = row
    return rows


def colour_extent(image_bgr: np.ndarray, colour) -> np.ndarray:
    """x1, y1, x2, y2 (pixel edges) of the pixels close to ``colour``."""
    close = np.abs(image_bgr.astype(np.int16) - np.asarray(colour, np.int16)).max(axis=2) < 60
    ys, xs = np.nonzero(close)
    return np.array([xs.min(), ys.min(), xs.max() + 1, ys.max() + 1], np.float64)


def test_large_pictures_stored_shrunk_small_ones_byte_identical(pictures, shrunk):
    image_dir, _, document = pictures
    out, summary = shrunk
    rows = rows_by_name(out)
    for name, ((height, width), _) in PICTURES.items():
        row = rows[name]
        scale = min(1.0, MAX_SIDE / max(height, width))
        assert (int(row["orig_height"]), int(row["orig_width"])) == (height, width)
        assert float(row["stored_scale"]) == scale
        assert (int(row["height"]), int(row["width"])) == (round(height * scale), round(width * scale))
        stored = cv2.imdecode(np.frombuffer(row["image"].tobytes(), np.uint8), cv2.IMREAD_COLOR)
        assert stored.shape[:2] == (int(row["height"]), int(row["width"]))
    assert rows["small.jpg"]["image"].tobytes() == (image_dir / "small.jpg").read_bytes()
    assert rows["large.jpg"]["image"].tobytes()[:2] == b"\xff\xd8"  # a JPEG stays a JPEG
    manifest = load_manifest(out)
    assert manifest.options["max_side"] == MAX_SIDE and manifest.options["jpeg_quality"] == 95
    source = sum((image_dir / n).stat().st_size for n in ("large.jpg", "tall.png"))
    stored = sum(len(rows[n]["image"].tobytes()) for n in ("large.jpg", "tall.png"))
    assert manifest.shrunk == {"num_images": 2, "source_bytes": source, "stored_bytes": stored}
    assert f"2 picture(s) to a long side of {MAX_SIDE} px: {source:,} -> {stored:,} bytes" in summary.format_table()
    # annotations.json stays the original ground truth
    assert json.loads(manifest.annotations_path.read_text()) == document
    assert verify_output(out).ok


def test_boxes_scaled_onto_the_stored_picture(shrunk):
    out, _ = shrunk
    rows = rows_by_name(out)
    for name, ((height, width), boxes) in PICTURES.items():
        row = rows[name]
        scale = float(row["stored_scale"])
        want = np.array([box[1:] for box in boxes], np.float64) * scale
        got = np.asarray(row["boxes"], np.float64).reshape(-1, 4)
        np.testing.assert_allclose(got, want, atol=1e-4)
        stored = cv2.imdecode(np.frombuffer(row["image"].tobytes(), np.uint8), cv2.IMREAD_COLOR)
        for box, class_index in zip(got, np.asarray(row["classes"]).reshape(-1)):
            # area shrinking blends a pixel row at each edge: the colour's extent is within one pixel
            np.testing.assert_allclose(colour_extent(stored, (RED, GREEN)[class_index]), box, atol=1.0)


def test_png_stays_a_lossless_png_of_the_area_shrunk_picture(pictures, shrunk):
    image_dir, _, _ = pictures
    out, _ = shrunk
    row = rows_by_name(out)["tall.png"]
    data = row["image"].tobytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    original = cv2.imread(str(image_dir / "tall.png"), cv2.IMREAD_COLOR)
    scale = float(row["stored_scale"])
    want = cv2.resize(original, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA)
    np.testing.assert_array_equal(cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR), want)


def test_eval_maps_one_images_detections_back_to_exact_original_pixels(shrunk, plain):
    """The shrunk set's eval batch carries the original size and one scale from the original pixels:
    the same scale and pad as letterboxing the original itself, so a detection maps to the same
    original pixels; and the red rectangle found in the letterboxed pixels maps onto its original box."""
    testing_shape = 160
    got = {}
    for name, folder in (("shrunk", shrunk[0]), ("plain", plain)):
        dataset = create_eval_dataset(folder, per_batch_size=3, testing_shape=testing_shape, num_parallel_workers=1)
        got[name] = [dict(zip(EVAL_COLUMNS, b)) for b in dataset.create_tuple_iterator(output_numpy=True,
                                                                                      num_epochs=1)][0]
    batch, reference = got["shrunk"], got["plain"]
    k = 0  # image id 1, large.jpg: 800x600 stored as 300x225
    assert batch["image_id"][k] == 1
    assert batch["orig_hw"][k].tolist() == [600, 800] == reference["orig_hw"][k].tolist()
    assert batch["scale"][k] == np.float32(testing_shape / 800)
    np.testing.assert_array_equal(batch["pad"][k], reference["pad"][k])
    red = colour_extent(batch["image"][k][:, :, ::-1], RED)  # RGB batch -> BGR for the colour
    detection = np.array([[*red, 0.9, 0.0]], np.float32)
    category_ids = np.array([1, 2], np.int64)
    mapped = {name: batch_results([detection], b["image_id"][:1], b["orig_hw"][:1], b["scale"][:1], b["pad"][:1],
                                  category_ids)[0]["bbox"] for name, b in got.items()}
    assert mapped["shrunk"] == pytest.approx(mapped["plain"], abs=1e-3)
    x1, y1, x2, y2 = PICTURES["large.jpg"][1][0][1:]
    # one letterboxed pixel is 5 original pixels here
    assert mapped["shrunk"] == pytest.approx([x1, y1, x2 - x1, y2 - y1], abs=5.0)


def test_yolov5_val_scales_up_and_shapes_from_the_stored_size(shrunk):
    """val.py computes its scale-up and rect shapes from the loaded picture: here the stored one."""
    testing_shape = 384  # above the stored 300: val.py enlarges
    dataset = create_eval_dataset(shrunk[0], per_batch_size=1, testing_shape=testing_shape,
                                  geometry=EvalGeometry.yolov5_val(), num_parallel_workers=1)
    for values in dataset.create_tuple_iterator(output_numpy=True, num_epochs=1):
        batch = dict(zip(EVAL_COLUMNS, values))
        name = {1: "large.jpg", 2: "tall.png", 3: "small.jpg"}[int(batch["image_id"][0])]
        (height, width), _ = PICTURES[name]
        stored_scale = min(1.0, MAX_SIDE / max(height, width))
        stored_hw = (round(height * stored_scale), round(width * stored_scale))
        assert batch["scale"][0] == pytest.approx(testing_shape / max(stored_hw) * stored_scale, rel=1e-6)
        assert batch["image"].shape[1:3] == rect_batch_shape([stored_hw[0] / stored_hw[1]], testing_shape)
        assert batch["orig_hw"][0].tolist() == [height, width]


def test_train_pipeline_and_visualize_read_the_stored_pictures(shrunk):
    out, _ = shrunk
    dataset = create_train_dataset(out, per_batch_size=3, training_shape=128, num_parallel_workers=1,
                                   augment=None)
    batch = dict(zip(TRAIN_COLUMNS, next(dataset.create_tuple_iterator(output_numpy=True, num_epochs=1))))
    assert batch["image"].shape == (3, 128, 128, 3)
    valid = batch["boxes"][..., 5] > 0
    assert valid.sum() >= 3 and (batch["boxes"][valid][:, :4] <= 128).all()
    rows = rows_by_name(out)
    for sample in vis.raw_samples(out, num=3, seed=0):
        name = sample.caption.split()[-1]
        row = rows[name]
        stored = cv2.imdecode(np.frombuffer(row["image"].tobytes(), np.uint8), cv2.IMREAD_COLOR)
        np.testing.assert_array_equal(sample.image, stored[:, :, ::-1])
        for label in sample.labels:
            extent = colour_extent(stored, (RED, GREEN)[int(label[4])])
            np.testing.assert_allclose(label[:4], extent, atol=1.0)


def test_yolo_and_voc_sources_are_shrunk_too(pictures, tmp_path):
    image_dir, _, document = pictures
    data_file = write_yolo(document, image_dir, tmp_path / "yolo")
    voc_dir = write_voc(document, image_dir, tmp_path / "voc", split=None)
    for out, convert in ((tmp_path / "from_yolo", lambda o: convert_yolo(data_file, o, max_side=MAX_SIDE)),
                         (tmp_path / "from_voc", lambda o: convert_voc(voc_dir, o, max_side=MAX_SIDE))):
        summary = convert(out)
        assert summary.shrink.num_shrunk == 2
        rows = rows_by_name(out)
        row = rows["large.jpg"]
        assert (int(row["height"]), int(row["width"]), int(row["orig_height"])) == (225, 300, 600)
        np.testing.assert_allclose(np.asarray(row["boxes"]).reshape(-1, 4)[0], np.array([80, 60, 400, 300]) * 0.375,
                                   atol=1e-3)
        assert rows["small.jpg"]["image"].tobytes() == (image_dir / "small.jpg").read_bytes()
        assert verify_output(out).ok


def test_command_line_flags(pictures, tmp_path, capsys):
    image_dir, ann_file, _ = pictures
    out = tmp_path / "cli"
    assert coco2mindrecord.main(["--image_dir", str(image_dir), "--ann_file", str(ann_file), "--output_dir", str(out),
                                 "--max_side", "400", "--jpeg_quality", "80", "--no_progress"]) == 0
    assert re.search(r"\nshrunk +2 picture\(s\) to a long side of 400 px", capsys.readouterr().out)
    assert load_manifest(out).options["jpeg_quality"] == 80
    with pytest.raises(SystemExit):
        coco2mindrecord.main(["--image_dir", str(image_dir), "--ann_file", str(ann_file), "--output_dir",
                              str(tmp_path / "x"), "--jpeg_quality", "80"])
    assert "--jpeg_quality applies to the pictures --max_side shrinks" in capsys.readouterr().err
    assert coco2mindrecord.main(["--image_dir", str(image_dir), "--ann_file", str(ann_file), "--output_dir",
                                 str(tmp_path / "y"), "--max_side", "8"]) == 2
    assert "max_side" in capsys.readouterr().err


def test_scale_labels_and_options():
    labels = np.array([[10, 20, 90, 79.9, 1, 0]], np.float32)
    scaled = scale_labels(labels, 0.5, (40, 45))
    np.testing.assert_allclose(scaled[0], [5, 10, 45, 39.95, 1, 0], rtol=1e-6)
    assert labels[0, 2] == 90  # input untouched
    assert scale_labels(labels, 0.25, (20, 22))[0, 2] == 22  # the part beyond the rounded size is trimmed
    assert ShrinkOptions(1280).scale_for((3024, 4032)) == 1280 / 4032
    assert ShrinkOptions(1280).scale_for((720, 1280)) == 1.0 and ShrinkOptions().scale_for((9000, 9000)) == 1.0
    with pytest.raises(ValueError, match="jpeg_quality"):
        ShrinkOptions(640, jpeg_quality=101)


def test_hint_once_when_many_pictures_are_far_larger_than_training(tmp_path):
    tally = ShrinkTally()
    for _ in range(3):
        tally.add((3024, 4032), 2_000_000, 2_000_000, False, 0.08)
    tally.add((480, 640), 100_000, 100_000, False, 0.004)
    hint = shrink_hint(tally, 4)
    assert hint.startswith("3 of 4 pictures have a long side of 2560 px or more")
    assert "--max_side 1280 would store them in about 1 MiB instead of 6 MiB" in hint
    assert "from about 0.2 s to 0.0 s" in hint
    assert shrink_hint(tally, 13) is None  # under a quarter of the set
    # through a conversion: one line in the summary, none when --max_side is given
    image_dir = tmp_path / "images"
    image_dir.mkdir()
    cv2.imwrite(str(image_dir / "photo.jpg"), np.full((HINT_LONG_SIDE * 3 // 4, HINT_LONG_SIDE, 3), 90, np.uint8))
    document = {"images": [{"id": 1, "file_name": "photo.jpg", "height": HINT_LONG_SIDE * 3 // 4,
                            "width": HINT_LONG_SIDE}], "annotations": [], "categories": [{"id": 1, "name": "a"}]}
    (tmp_path / "a.json").write_text(json.dumps(document))
    table = convert_coco(image_dir, tmp_path / "a.json", tmp_path / "out").format_table()
    assert table.count("--max_side 1280 would") == 1
    table = convert_coco(image_dir, tmp_path / "a.json", tmp_path / "out2", max_side=1280).format_table()
    assert "would" not in table and re.search(r"\nshrunk +1 picture\(s\)", table)


def rewrite_as_schema_one(folder: Path, target: Path) -> None:
    """``folder`` as converter 1.2 wrote it: rows without the original-size columns, schema_version 1."""
    from mindspore.mindrecord import FileReader, FileWriter

    target.mkdir()
    shutil.copy(folder / "annotations.json", target / "annotations.json")
    manifest = json.loads((folder / "manifest.json").read_text())
    reader = FileReader(str(folder / f"{SHARD_PREFIX}0"))
    rows = sorted((dict(row) for row in reader.get_next()), key=lambda r: int(r["row_index"]))
    reader.close()
    for row in rows:
        for field in ORIGINAL_SIZE_FIELDS:
            del row[field]
    writer = FileWriter(str(target / f"{SHARD_PREFIX}0"), shard_num=1)
    writer.add_schema({k: v for k, v in MINDRECORD_SCHEMA.items() if k not in ORIGINAL_SIZE_FIELDS}, "yolodata")
    writer.write_raw_data(rows)
    writer.commit()
    manifest.update(schema_version=1, converter_version="1.2.0")
    for key in ("shrunk",):
        manifest.pop(key)
    for key in ("max_side", "jpeg_quality"):
        manifest["options"].pop(key)
    (target / "manifest.json").write_text(json.dumps(manifest))


def test_sets_of_schema_one_are_still_read(plain, tmp_path):
    old = tmp_path / "old"
    rewrite_as_schema_one(plain, old)
    manifest = load_manifest(old)
    assert manifest.schema_version == 1 and not manifest.has_original_sizes
    assert manifest.dataset_id == load_manifest(plain).dataset_id  # same rows: same identity, same order
    assert verify_output(old).ok
    batches = {}
    for name, folder in (("old", old), ("new", plain)):
        dataset = create_eval_dataset(folder, per_batch_size=3, testing_shape=160, num_parallel_workers=1)
        batches[name] = dict(zip(EVAL_COLUMNS, next(dataset.create_tuple_iterator(output_numpy=True, num_epochs=1))))
    for column in EVAL_COLUMNS:
        np.testing.assert_array_equal(batches["old"][column], batches["new"][column])
    train = create_train_dataset(old, per_batch_size=3, training_shape=128, num_parallel_workers=1)
    assert next(train.create_tuple_iterator(output_numpy=True, num_epochs=1))[0].shape == (3, 128, 128, 3)


def test_reduced_decoding_only_with_twice_the_target_left():
    """JPEG reduced decoding keeps at least REDUCED_DECODE_MARGIN (2) times the batch's long side (README)."""
    assert reduced_decode_factor((3024, 4032), 640) == 2      # 2016 >= 1280; 1008 is not
    assert reduced_decode_factor((960, 1280), 640) == 1
    assert reduced_decode_factor((960, 1280), 320) == 2
    assert reduced_decode_factor((3024, 4032), 160) == 8
    assert reduced_decode_factor((480, 640), 256) == 1


@pytest.mark.parametrize("exif_frame, json_hw", [("displayed", (400, 300)), ("stored", (300, 400))])
def test_exif_rotated_picture_is_shrunk_in_the_frame_the_json_describes(quirks_dir, tmp_path, exif_frame, json_hw):
    """mmcv's color_exif.jpg is stored 400x300 and shown 300x400: the shrunk picture keeps the frame the
    json's size names (no orientation left to apply), its boxes scaled in that frame."""
    source = quirks_dir / "mmcv" / "color_exif.jpg"
    image_dir = tmp_path / "images"
    image_dir.mkdir()
    shutil.copy(source, image_dir / "photo.jpg")
    height, width = json_hw
    document = {"images": [{"id": 1, "file_name": "photo.jpg", "height": height, "width": width}],
                "annotations": [{"id": 1, "image_id": 1, "category_id": 1, "bbox": [20, 40, 100, 120], "area": 12000.0,
                                 "iscrowd": 0}], "categories": [{"id": 1, "name": "a"}]}
    (tmp_path / "a.json").write_text(json.dumps(document))
    out = tmp_path / "out"
    convert_coco(image_dir, tmp_path / "a.json", out, max_side=200, exif_frame=exif_frame)
    row = rows_by_name(out)["photo.jpg"]
    want_hw = (round(height * 0.5), round(width * 0.5))
    assert (int(row["height"]), int(row["width"])) == want_hw and float(row["stored_scale"]) == 0.5
    data = np.frombuffer(row["image"].tobytes(), np.uint8)
    # the stored bytes decode to the same picture with or without applying an orientation
    assert cv2.imdecode(data, cv2.IMREAD_COLOR).shape[:2] == want_hw
    assert cv2.imdecode(data, cv2.IMREAD_COLOR | cv2.IMREAD_IGNORE_ORIENTATION).shape[:2] == want_hw
    frame = cv2.imread(str(source), cv2.IMREAD_COLOR if exif_frame == "displayed"
                       else cv2.IMREAD_COLOR | cv2.IMREAD_IGNORE_ORIENTATION)
    want = cv2.resize(frame, None, fx=0.5, fy=0.5, interpolation=cv2.INTER_AREA)
    assert np.abs(cv2.imdecode(data, cv2.IMREAD_COLOR).astype(int) - want).mean() < 2  # JPEG q95 of it
    np.testing.assert_allclose(np.asarray(row["boxes"]).reshape(-1, 4)[0], [10, 20, 60, 80])
    assert verify_output(out).ok


def write_textured_photos(folder: Path, num_pictures: int) -> tuple[Path, Path]:
    """``num_pictures`` 480x640 JPEGs of blurred noise (they compress like photos, not like flat colour),
    one box each; returns (image dir, json)."""
    rng = np.random.default_rng(11)
    image_dir = folder / "images"
    image_dir.mkdir(parents=True)
    images, annotations = [], []
    for image_id in range(1, num_pictures + 1):
        noise = rng.integers(0, 256, (480, 640, 3), dtype=np.uint8)
        picture = cv2.GaussianBlur(noise, (0, 0), 1.5)
        cv2.imwrite(str(image_dir / f"photo_{image_id}.jpg"), picture, [cv2.IMWRITE_JPEG_QUALITY, 90])
        images.append({"id": image_id, "file_name": f"photo_{image_id}.jpg", "height": 480, "width": 640})
        annotations.append({"id": image_id, "image_id": image_id, "category_id": 1, "bbox": [100, 80, 200, 150],
                            "area": 30000.0, "iscrowd": 0})
    ann_file = folder / "instances.json"
    ann_file.write_text(json.dumps({"images": images, "annotations": annotations,
                                    "categories": [{"id": 1, "name": "thing"}]}))
    return image_dir, ann_file


def test_units_are_planned_by_the_bytes_the_shrunk_pictures_will_take(pictures, tmp_path):
    """--max_side sizes the files by what the pictures will take once shrunk (file bytes times
    max_side / long side), so --shard_size still means about that many bytes per output file."""
    from yolodata.convert.unit_sources import DocumentUnits

    image_dir, ann_file, document = pictures
    units = DocumentUnits(json.loads(ann_file.read_text()), image_dir, shard_num=1, max_side=MAX_SIDE)
    expected = 0
    for record in document["images"]:
        size = (image_dir / record["file_name"]).stat().st_size
        long_side = max(record["height"], record["width"])
        expected += size * MAX_SIDE // long_side if long_side > MAX_SIDE else size
    assert [unit.planned_bytes for unit in units.units] == [expected]
    plain = DocumentUnits(json.loads(ann_file.read_text()), image_dir, shard_num=1)
    assert plain.units[0].planned_bytes == sum((image_dir / r["file_name"]).stat().st_size
                                               for r in document["images"])

    photo_dir, photo_json = write_textured_photos(tmp_path / "photos", 12)
    file_bytes = sorted(p.stat().st_size for p in photo_dir.iterdir())
    shard_size = 3 * file_bytes[-1]                  # three photos as they are, about twelve shrunk to 160
    as_they_are = convert_coco(photo_dir, photo_json, tmp_path / "as_they_are", shard_size=shard_size)
    shrunk = convert_coco(photo_dir, photo_json, tmp_path / "shrunk", shard_size=shard_size, max_side=160)
    files = {name: load_manifest(tmp_path / name).shard_paths for name in ("as_they_are", "shrunk")}
    assert len(files["as_they_are"]) >= 4 and len(files["shrunk"]) < len(files["as_they_are"]) / 2
    assert as_they_are.num_images == shrunk.num_images == 12
    # every file within shard_size plus its largest row, as without --max_side (stored bytes: the
    # header's count; the file itself is mostly preallocated holes)
    for path in files["shrunk"]:
        stored = mindrecord_shards.stored_bytes(mindrecord_shards.read_header(path)[0])
        assert stored <= shard_size + ROW_OVERHEAD_BYTES + max(file_bytes) * 160 // 640
