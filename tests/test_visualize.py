"""yolodata.visualize (package) and its command line (yolodata.cli.visualize, tools/visualize.py):
sample grids with their boxes, label statistics."""
from __future__ import annotations

import json
import math
import subprocess
import sys

import cv2
import numpy as np
import pytest

from conftest import PROJECT_ROOT, write_rectangle_coco
from yolodata import visualize as vis
from yolodata.cli import visualize as visualize_cli
from yolodata.convert import convert_coco
from yolodata.fileio import write_file_atomic
from yolodata.manifest import load_manifest
from yolodata.pipeline import TRAIN_COLUMNS, create_train_dataset
from yolodata.pipeline.sampler import epoch_order, padded_epoch_order

TOOL = PROJECT_ROOT / "tools" / "visualize.py"
MIN_CHECKED_BOX = 36  # tile pixels: more than twice a name plate's height at the tile sizes used here


@pytest.fixture(scope="module")
def rect_dataset(tmp_path_factory):
    """13 small rectangle images (one without boxes, one crowd box) converted into 2 shards.

    Returns (shard folder, the COCO json as a dict, image folder).
    """
    folder = tmp_path_factory.mktemp("vis_rect")
    image_dir, ann_file = write_rectangle_coco(folder, num_images=12, seed=4, size_range=(120, 220))
    document = json.loads(ann_file.read_text())
    document["annotations"][0]["iscrowd"] = 1
    cv2.imwrite(str(image_dir / "background.png"), np.full((150, 170, 3), 128, np.uint8))
    document["images"].append({"id": 13, "file_name": "background.png", "height": 150, "width": 170})
    ann_file.write_text(json.dumps(document))
    out = folder / "shards"
    convert_coco(image_dir=image_dir, ann_file=ann_file, output_dir=out, shard_num=2)
    return out, document, image_dir


@pytest.fixture(scope="module")
def four_image_dataset(tmp_path_factory):
    """4 small rectangle images in one shard: fewer images than the default 16 tiles.

    Returns (shard folder, image ids in row order).
    """
    folder = tmp_path_factory.mktemp("vis_four")
    image_dir, ann_file = write_rectangle_coco(folder, num_images=4, seed=11, size_range=(120, 200))
    out = folder / "shards"
    convert_coco(image_dir=image_dir, ann_file=ann_file, output_dir=out, shard_num=1)
    return out, [1, 2, 3, 4]


# --- helpers: an independent check of where outlines are -----------------------------------------

def expected_extent(box, scale, pad_x, pad_y, tile_size):
    """Pixel edges [x1, x2) x [y1, y2) of a box mapped into a tile, rounded to the nearest edge."""
    x1, y1, x2, y2 = (math.floor(v * scale + p + 0.5) for v, p in zip(box[:4], (pad_x, pad_y, pad_x, pad_y)))
    x1, y1 = min(max(x1, 0), tile_size - 1), min(max(y1, 0), tile_size - 1)
    x2, y2 = min(max(x2, x1 + 1), tile_size), min(max(y2, y1 + 1), tile_size)
    return x1, y1, x2, y2


def outline_is_at(tile_image, extent, colour, thickness):
    """True when the box's colour lines run exactly along ``extent`` (drawn inward, ``thickness`` px).

    Lines: at least 80 % of the sampled pixels on each edge line have the colour. Placement: one pixel
    outside the left, right and bottom lines and one pixel inside them, at most half of the pixels have
    it (a class-name plate or another box may cover some). Sampled where the box's own name plate
    cannot be: the lower half of the side edges, the right half of the top and bottom edges.
    """
    mask = np.all(tile_image == np.asarray(colour, np.uint8), axis=-1)
    size = mask.shape[0]
    x1, y1, x2, y2 = extent
    lower_rows = np.arange((y1 + y2) // 2, y2 - thickness)
    right_cols = np.arange((x1 + x2) // 2, x2 - thickness)
    lines = [mask[lower_rows, x1], mask[lower_rows, x2 - 1], mask[y1, right_cols], mask[y2 - 1, right_cols]]
    if min(line.mean() for line in lines) < 0.8:
        return False
    beside = []
    if x1 >= 1:
        beside.append(mask[lower_rows, x1 - 1])
    if x2 < size:
        beside.append(mask[lower_rows, x2])
    if y2 < size:
        beside.append(mask[y2, right_cols])
    beside += [mask[lower_rows, x1 + thickness], mask[lower_rows, x2 - 1 - thickness],
               mask[y2 - 1 - thickness, right_cols]]
    return all(line.mean() <= 0.5 for line in beside)


def check_outlines(grid, geometry, index, labels, scale, pad):
    """Number of boxes of tile ``index`` whose outline was checked (large enough to check both sides)."""
    size = geometry.tile_size
    x0, y0 = geometry.image_origin(index)
    tile_image = grid[y0:y0 + size, x0:x0 + size]
    thickness = vis.outline_thickness(size)
    checked = 0
    for label in labels:
        extent = expected_extent(label, scale, pad[0], pad[1], size)
        if min(extent[2] - extent[0], extent[3] - extent[1]) < MIN_CHECKED_BOX:
            continue  # too small: its own name plate (inside the box at the tile's top) may cover it
        assert outline_is_at(tile_image, extent, vis.class_colour(int(label[4])), thickness), (index, label)
        checked += 1
    return checked


def standing_apart(labels, margin):
    """The boxes that keep ``margin`` pixels away from every other box (whose lines or name plate could
    cover theirs)."""
    keep = []
    for i, box in enumerate(labels):
        others = np.delete(labels, i, axis=0)
        near = ((others[:, 0] < box[2] + margin) & (others[:, 2] > box[0] - margin)
                & (others[:, 1] < box[3] + margin) & (others[:, 3] > box[1] - margin))
        if not near.any():
            keep.append(box)
    return np.asarray(keep, np.float32).reshape(-1, 6)


def batches(dataset):
    return [dict(zip(TRAIN_COLUMNS, b)) for b in dataset.create_tuple_iterator(output_numpy=True, num_epochs=1)]


# --- pure layout and drawing ----------------------------------------------------------------------

def test_near_square_layout():
    assert [vis.near_square_layout(n) for n in (1, 2, 4, 5, 12, 16, 17)] == [
        (1, 1), (1, 2), (2, 2), (2, 3), (3, 4), (4, 4), (4, 5)]
    with pytest.raises(ValueError, match="positive"):
        vis.near_square_layout(0)


def test_grid_places_each_sample_in_its_tile():
    """5 flat samples of different shapes: a 2 x 3 grid, each tile's image area shows its sample
    letterboxed (padding gray 114 beside a tall image), the sixth cell stays empty."""
    colours = [(200, 30, 30), (30, 200, 30), (30, 30, 200), (200, 200, 30), (30, 200, 200)]
    shapes = [(100, 100), (50, 200), (200, 50), (64, 64), (300, 300)]
    samples = [vis.Sample(np.full(hw + (3,), c, np.uint8), np.zeros((0, 6), np.float32), f"id {i}")
               for i, (hw, c) in enumerate(zip(shapes, colours))]
    originals = [s.image.copy() for s in samples]
    grid, geometry = vis.render_grid(samples, ["a"], tile_size=96, gap=4)
    band = vis.caption_height(96)
    assert (geometry.rows, geometry.cols) == (2, 3)
    assert grid.shape == (2 * (band + 96) + 4, 3 * 96 + 2 * 4, 3) == geometry.grid_hw + (3,)
    for index, colour in enumerate(colours):
        x, y = geometry.tile_origin(index)
        assert (x, y) == ((index % 3) * 100, (index // 3) * (band + 96 + 4))
        ix, iy = geometry.image_origin(index)
        assert (ix, iy) == (x, y + band)
        np.testing.assert_array_equal(grid[iy + 48, ix + 48], colour)
        np.testing.assert_array_equal(grid[y + 1, x + 95], vis.CAPTION_BACKGROUND_RGB)  # caption band
    ix, iy = geometry.image_origin(2)  # 200 x 50 (tall): 96 high, 24 wide, centred; 36 px of padding
    np.testing.assert_array_equal(grid[iy + 48, ix + 35], (114, 114, 114))
    np.testing.assert_array_equal(grid[iy + 48, ix + 36], colours[2])
    np.testing.assert_array_equal(grid[iy + 48, ix + 60], (114, 114, 114))
    x, y = geometry.tile_origin(4)
    assert np.all(grid[y:, x + 100:] == 255)  # the empty sixth cell
    for sample, original in zip(samples, originals):
        np.testing.assert_array_equal(sample.image, original)


def test_outlines_drawn_on_the_box_edges():
    """Hand-made boxes in a 200 x 100 image shown in 150 px tiles (scale 0.75, 37 px top padding)."""
    image = np.full((100, 200, 3), 90, np.uint8)
    labels = np.array([[10, 20, 90, 80, 0, 0], [100.4, 10.6, 190, 95, 3, 1], [0, 0, 2, 2, 1, 0]], np.float32)
    tile = vis.render_tile(vis.Sample(image, labels, "id 7"), ["zero", "one", "two", "three"], 150)
    image_area = tile[vis.caption_height(150):]
    assert image_area.shape == (150, 150, 3)
    scale, pad = vis.fit_into_tile((100, 200), 150)
    assert (scale, pad) == (0.75, (0, 37))
    for label in labels[:2]:
        extent = expected_extent(label, 0.75, 0, 37, 150)
        assert outline_is_at(image_area, extent, vis.class_colour(int(label[4])), 1)
    # the tiny box keeps one visible pixel at its corner
    np.testing.assert_array_equal(image_area[37, 0], vis.class_colour(1))
    assert vis.box_caption(3, True, ["zero", "one", "two", "three"]) == "three (crowd)"
    assert vis.box_caption(9, False, ["zero"]) == "class 9"


# --- the three stages on real shards --------------------------------------------------------------

def test_full_stage_tiles_are_the_batch_with_its_boxes(rect_dataset):
    """The full stage shows the first samples of epoch 0 exactly as create_train_dataset yields them,
    and every box of the batch's ``boxes`` column is outlined where it says."""
    shards, _, _ = rect_dataset
    samples = vis.pipeline_samples(shards, num=8, stage="full", seed=3, training_shape=192, per_batch_size=4,
                                   num_workers=2)
    reference = batches(create_train_dataset(shards, per_batch_size=4, training_shape=192, seed=3,
                                             num_parallel_workers=1))[:2]
    images = np.concatenate([b["image"] for b in reference])
    boxes = np.concatenate([b["boxes"] for b in reference])
    ids = np.concatenate([b["image_id"] for b in reference])
    assert len(samples) == 8
    for sample, image, box_rows, image_id in zip(samples, images, boxes, ids):
        np.testing.assert_array_equal(sample.image, image)
        np.testing.assert_array_equal(sample.labels[:, :5], box_rows[box_rows[:, 5] > 0][:, :5])
        assert sample.caption == f"id {image_id}"

    grid, geometry = vis.render_grid(samples, ["class1", "class2", "class3"], tile_size=256)
    assert (geometry.rows, geometry.cols, geometry.num_tiles) == (3, 3, 8)
    checked = sum(check_outlines(grid, geometry, i, box_rows[box_rows[:, 5] > 0], 256 / 192, (0, 0))
                  for i, box_rows in enumerate(boxes))
    assert checked >= 6


def test_mosaic_stage_is_the_full_pipeline_without_colour_and_flips(rect_dataset):
    shards, _, _ = rect_dataset
    common = dict(num=4, seed=1, training_shape=96, num_workers=2)
    mosaic = vis.pipeline_samples(shards, stage="mosaic", **common)
    plain = vis.pipeline_samples(shards, stage="full", augment=dict(hsv_h=0, hsv_s=0, hsv_v=0, fliplr=0,
                                                                  flipud=0, extras=0), **common)
    jittered = vis.pipeline_samples(shards, stage="full", **common)
    for a, b in zip(mosaic, plain):
        np.testing.assert_array_equal(a.image, b.image)
        np.testing.assert_array_equal(a.labels, b.labels)
    assert any(not np.array_equal(a.image, c.image) for a, c in zip(mosaic, jittered))


def test_raw_stage_shows_stored_images_and_boxes(rect_dataset):
    """Raw tiles: the rows epoch 0 visits first, each the stored picture with its stored boxes,
    captioned with id and file name; outlines on the letterboxed boxes. Asking for more tiles than
    the 13 images shows each image once."""
    shards, document, image_dir = rect_dataset
    manifest = load_manifest(shards)
    samples = vis.raw_samples(shards, num=16, seed=2)
    assert len(samples) == 13
    order = epoch_order(13, seed=2, epoch=0, dataset_key=manifest.dataset_id)
    records = sorted(document["images"], key=lambda r: r["id"])
    annotations = {}
    for ann in document["annotations"]:
        annotations.setdefault(ann["image_id"], []).append(ann)
    grid, geometry = vis.render_grid(samples, manifest.class_names, tile_size=192)
    checked = 0
    for index, (sample, row) in enumerate(zip(samples, order)):
        record = records[row]
        assert sample.caption == f"id {record['id']}  {record['file_name']}"
        stored = cv2.cvtColor(cv2.imread(str(image_dir / record["file_name"])), cv2.COLOR_BGR2RGB)
        np.testing.assert_array_equal(sample.image, stored)
        want = sorted([a["bbox"][0], a["bbox"][1], a["bbox"][0] + a["bbox"][2], a["bbox"][1] + a["bbox"][3],
                       a["category_id"] - 1, a["iscrowd"]] for a in annotations.get(record["id"], []))
        assert sorted(sample.labels.tolist()) == want
        scale = min(192 / record["height"], 192 / record["width"])
        pad = ((192 - round(record["width"] * scale)) // 2, (192 - round(record["height"] * scale)) // 2)
        checked += check_outlines(grid, geometry, index, sample.labels, scale, pad)
    assert checked >= 10


# --- more tiles than stored images -------------------------------------------------------------

def test_sample_span_caps_raw_and_counts_the_epochs_of_the_pipeline():
    raw = vis.sample_span("raw", num=16, num_images=4)
    assert (raw.num_shown, raw.is_capped, raw.repeats_images) == (4, True, False)
    assert "4 stored images" in vis.span_note(raw) and "16 asked for" in vis.span_note(raw)
    # one batch of 16 from 4 images: epoch 0 padded to 16 samples, as training pads it
    padded = vis.sample_span("full", num=16, num_images=4)
    assert (padded.num_shown, padded.per_batch_size, padded.samples_per_epoch, padded.num_epochs,
            padded.num_steps) == (16, 16, 16, 1, 1)
    assert "pads its 4 images to 16 samples" in vis.span_note(padded)
    # batches of 2 from 4 images: 2 steps per epoch, 10 samples need 5 steps, so epochs 0, 1, 2
    epochs = vis.sample_span("mosaic", num=10, num_images=4, per_batch_size=2)
    assert (epochs.samples_per_epoch, epochs.num_epochs, epochs.num_steps) == (4, 3, 5)
    assert "span epochs 0 to 2" in vis.span_note(epochs)
    # 13 images in batches of 4: an epoch is 16 samples, the 17th sample starts epoch 1
    assert vis.sample_span("full", num=16, num_images=13, per_batch_size=4).num_epochs == 1
    assert vis.sample_span("full", num=17, num_images=13, per_batch_size=4).num_epochs == 2
    for stage, num in (("raw", 13), ("raw", 4), ("full", 13), ("mosaic", 8)):
        assert vis.span_note(vis.sample_span(stage, num=num, num_images=13, per_batch_size=4)) is None
    with pytest.raises(ValueError, match="stage must be one of"):
        vis.sample_span("augmented", num=4, num_images=4)


def test_raw_grid_of_a_small_set_shows_each_image_once_and_says_so(four_image_dataset, tmp_path, capsys):
    shards, image_ids = four_image_dataset
    grid_path = tmp_path / "raw.png"
    assert visualize_cli.main(["--mindrecord", str(shards), "--stage", "raw", "--num", "16", "--tile_size", "64",
                               "--output", str(grid_path)]) == 0
    out = capsys.readouterr().out
    assert "note: the dataset has 4 stored images: the raw grid shows each once, 4 tiles instead of the 16" in out
    assert "4 raw samples" in out and "2x2 grid" in out
    grid = cv2.imread(str(grid_path))
    assert grid.shape[:2] == vis.grid_geometry(4, 64).grid_hw
    samples = vis.raw_samples(shards, num=16, seed=0)
    assert sorted(int(s.caption.split()[1]) for s in samples) == image_ids  # every image, once


def test_pipeline_grid_beyond_one_epoch_follows_training_and_says_so(four_image_dataset, tmp_path, capsys):
    """10 mosaic samples in batches of 2 from 4 images: the samples of epochs 0, 1 and 2 in training's
    order, and a note that says they span those epochs."""
    shards, image_ids = four_image_dataset
    manifest = load_manifest(shards)
    argv = ["--mindrecord", str(shards), "--stage", "mosaic", "--num", "10", "--per_batch_size", "2",
            "--training_shape", "64", "--tile_size", "64", "--num_workers", "1", "--output", str(tmp_path / "m.jpg")]
    assert visualize_cli.main(argv) == 0
    out = capsys.readouterr().out
    assert "note: 10 mosaic samples from 4 stored images, so images repeat" in out
    assert "span epochs 0 to 2 of training" in out and "10 mosaic samples" in out.splitlines()[-1]

    samples = vis.pipeline_samples(shards, num=10, stage="mosaic", per_batch_size=2, training_shape=64,
                                   num_workers=1)
    rows = np.concatenate([padded_epoch_order(4, seed=0, epoch=epoch, dataset_key=manifest.dataset_id,
                                              global_batch_size=2) for epoch in range(3)])[:10]
    epochs = ["", "", "", "", "  epoch 1", "  epoch 1", "  epoch 1", "  epoch 1", "  epoch 2", "  epoch 2"]
    assert [s.caption for s in samples] == [f"id {image_ids[r]}{e}" for r, e in zip(rows, epochs)]
    # the same image in two epochs is drawn with different augmentation
    again = 4 + int(np.flatnonzero(rows[4:8] == rows[0])[0])  # rows[0] in epoch 1
    assert not np.array_equal(samples[0].image, samples[again].image)

    assert visualize_cli.main(["--mindrecord", str(shards), "--stage", "full", "--training_shape", "64",
                               "--tile_size", "64", "--num_workers", "1", "--output", str(tmp_path / "f.jpg")]) == 0
    out = capsys.readouterr().out  # the default: 16 tiles in one batch of 16
    assert "note: 16 full samples from 4 stored images" in out and "pads its 4 images to 16 samples" in out
    assert visualize_cli.main(["--mindrecord", str(shards), "--stage", "full", "--num", "4", "--training_shape",
                               "64", "--tile_size", "64", "--num_workers", "1", "--output",
                               str(tmp_path / "f4.jpg")]) == 0
    assert "note:" not in capsys.readouterr().out


# --- label statistics -----------------------------------------------------------------------------

def test_statistics_equal_the_manifest(rect_dataset, tmp_path):
    shards, document, _ = rect_dataset
    stats, manifest = vis.dataset_label_statistics(shards, num_workers=2)
    assert stats.num_images == manifest.num_images == 13
    assert stats.num_boxes == manifest.num_boxes == len(document["annotations"])
    assert stats.num_crowd_boxes == manifest.num_crowd_boxes == 1
    assert stats.num_background_images == manifest.num_background_images == 1
    assert stats.counts_by_key(manifest.category_keys) == manifest.boxes_per_category
    per_image = [sum(a["image_id"] == i for a in document["annotations"]) for i in range(1, 14)]
    assert stats.boxes_per_image.tolist() == per_image
    assert np.all((stats.relative_sizes > 0) & (stats.relative_sizes <= 1))
    assert np.all((stats.relative_centres > 0) & (stats.relative_centres < 1))

    figure = vis.label_figure(stats, manifest.class_names)
    path = write_file_atomic(tmp_path / "new" / "labels.jpg", vis.encode_figure(figure, ".jpg"))
    picture = cv2.imread(str(path))
    assert picture is not None and picture.shape == (900, 1000, 3)
    assert sorted(p.name for p in path.parent.iterdir()) == ["labels.jpg"]  # no temporary file left

    text = vis.format_statistics(stats, manifest.category_keys)
    assert f"boxes: {stats.num_boxes} (1 crowd)" in text
    for key, count in manifest.boxes_per_category.items():
        assert f"{key}  {count}" in text.replace(" " * 3, " ")


def test_statistics_on_coco128_equal_its_manifest(coco128_dir, tmp_path):
    """Real COCO: crowd boxes, 2 images without annotations, category ids 1..90 (not contiguous)."""
    out = tmp_path / "coco128"
    convert_coco(image_dir=coco128_dir / "val2017", ann_file=coco128_dir / "annotations" / "instances_val2017.json",
                 output_dir=out, shard_num=2)
    stats, manifest = vis.dataset_label_statistics(out)
    assert (stats.num_images, stats.num_boxes, stats.num_crowd_boxes, stats.num_background_images) == (
        manifest.num_images, manifest.num_boxes, manifest.num_crowd_boxes,
        manifest.num_background_images)
    assert stats.counts_by_key(manifest.category_keys) == manifest.boxes_per_category
    assert stats.num_crowd_boxes == 10 and stats.num_background_images == 2

    samples = vis.raw_samples(out, num=9, seed=0)
    grid, geometry = vis.render_grid(samples, manifest.class_names, tile_size=256)
    assert grid.shape[:2] == geometry.grid_hw and (geometry.rows, geometry.cols) == (3, 3)
    checked = 0
    for index, sample in enumerate(samples):
        assert sample.caption.endswith(".jpg")
        scale, pad = vis.fit_into_tile(sample.image.shape[:2], 256)
        # on real photos boxes overlap and share edges: check the boxes that stand apart
        checked += check_outlines(grid, geometry, index, standing_apart(sample.labels, 20 / scale), scale, pad)
    assert checked >= 2


def test_statistics_reject_a_class_outside_the_categories():
    rows = [(5, 10, 10, np.array([[1, 1, 4, 4, 2, 0]], np.float32))]
    with pytest.raises(ValueError, match="image_id 5: class index 2 is outside 0..1"):
        vis.label_statistics(rows, 2)


# --- the command line -----------------------------------------------------------------------------

def test_cli_writes_grid_and_labels_with_the_same_bytes_for_a_seed(rect_dataset, tmp_path):
    """Two processes with different worker counts: byte-identical grid and figure."""
    shards, _, _ = rect_dataset
    outputs = []
    for workers in (1, 2):
        folder = tmp_path / f"run{workers}" / "nested"
        command = [sys.executable, str(TOOL), "--mindrecord", str(shards), "--num", "5", "--seed", "9",
                   "--training_shape", "96", "--tile_size", "96", "--degrees", "5", "--num_workers", str(workers),
                   "--output", str(folder / "grid.jpg"), "--labels", str(folder / "labels.png")]
        result = subprocess.run(command, capture_output=True, text=True, timeout=240)
        assert result.returncode == 0, result.stderr
        assert "images: 13 (1 without boxes)" in result.stdout
        assert sorted(p.name for p in folder.iterdir()) == ["grid.jpg", "labels.png"]
        outputs.append(((folder / "grid.jpg").read_bytes(), (folder / "labels.png").read_bytes()))
    assert outputs[0] == outputs[1]
    grid = cv2.imdecode(np.frombuffer(outputs[0][0], np.uint8), cv2.IMREAD_COLOR)
    geometry = vis.grid_geometry(5, 96)
    assert grid.shape[:2] == geometry.grid_hw and (geometry.rows, geometry.cols) == (2, 3)


def test_cli_missing_folder_is_a_clear_error(tmp_path):
    result = subprocess.run([sys.executable, str(TOOL), "--mindrecord", str(tmp_path / "nope"),
                             "--output", str(tmp_path / "g.jpg")], capture_output=True, text=True, timeout=120)
    assert result.returncode == 2
    assert result.stderr.startswith("error: ") and "is not a folder" in result.stderr
    assert "Traceback" not in result.stderr
    assert not (tmp_path / "g.jpg").exists()


def test_cli_bad_arguments_exit_2(rect_dataset, tmp_path, capsys):
    shards, _, _ = rect_dataset
    (tmp_path / "empty").mkdir()
    cases = [
        (["--mindrecord", str(tmp_path / "empty"), "--labels", str(tmp_path / "l.png")], "manifest.json is missing"),
        (["--mindrecord", str(shards), "--output", str(tmp_path / "g.gif")], "--output"),
        (["--mindrecord", str(shards), "--labels", str(tmp_path / "l.xyz")], "--labels"),
        (["--mindrecord", str(shards), "--output", str(tmp_path / "g.jpg"), "--num", "0"], "--num"),
        (["--mindrecord", str(shards), "--output", str(tmp_path / "g.jpg"), "--fliplr", "2"], "fliplr"),
    ]
    for argv, message in cases:
        assert visualize_cli.main(argv) == 2
        err = capsys.readouterr().err
        assert err.startswith("error: ") and message in err, (argv, err)
    with pytest.raises(SystemExit) as exit_info:
        visualize_cli.main(["--mindrecord", str(shards)])  # nothing to write
    assert exit_info.value.code == 2
    assert not list(tmp_path.glob("*.jpg")) and not list(tmp_path.glob("*.png"))
