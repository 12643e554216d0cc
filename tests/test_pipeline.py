"""The training and eval pipelines end to end on converted shards (MindDataset, threads, batches)."""
from __future__ import annotations

import hashlib
import json
import shutil

import cv2
import numpy as np
import pytest

from conftest import RECT_COLOURS_BGR, shared_data_path, write_rectangle_coco
from yolodata.augment.policy import AugmentConfig
from yolodata.convert import convert_coco
from yolodata.pipeline.eval_batches import EvalGeometry
from yolodata.pipeline import EVAL_COLUMNS, TRAIN_COLUMNS, create_eval_dataset, create_train_dataset
from yolodata.pipeline.sampler import multiscale_shapes
from yolodata.pipeline.targets import STRIDES

NO_COLOUR = dict(hsv_h=0.0, hsv_s=0.0, hsv_v=0.0, extras=0.0)


@pytest.fixture(scope="module")
def rect_shards(tmp_path_factory):
    """22 rectangle images converted into 3 shards (22 is not a multiple of the batch sizes used)."""
    folder = tmp_path_factory.mktemp("rect")
    image_dir, ann_file = write_rectangle_coco(folder, num_images=22, seed=3)
    out = folder / "shards"
    convert_coco(image_dir=image_dir, ann_file=ann_file, output_dir=out, shard_num=3, progress=False)
    return out


def batches(dataset):
    return [dict(zip(TRAIN_COLUMNS, b)) for b in dataset.create_tuple_iterator(output_numpy=True, num_epochs=1)]


def test_train_columns_dtypes_and_shapes(rect_shards):
    dataset = create_train_dataset(rect_shards, per_batch_size=4, training_shape=160, num_parallel_workers=2,
                                   max_boxes=32)
    out = batches(dataset)
    assert len(out) == dataset.num_steps == dataset.steps_per_epoch == 6  # ceil(22 / 4)
    first = out[0]
    assert first["image"].dtype == np.uint8 and first["image"].shape == (4, 160, 160, 3)
    assert first["image_id"].dtype == np.int64 and first["image_id"].shape == (4,)
    assert first["boxes"].dtype == np.float32 and first["boxes"].shape == (4, 32, 6)
    for stride in STRIDES:
        assert first[f"target_indices_s{stride}"].dtype == np.int32
        assert first[f"target_indices_s{stride}"].shape == (4, 32 * 9)
        assert first[f"target_values_s{stride}"].shape == (4, 32 * 9, 6)
    # every image id of the dataset appears (22 images, 24 slots: 2 wrap-around repeats)
    ids = np.concatenate([b["image_id"] for b in out])
    assert set(ids.tolist()) == set(range(1, 23))


def _colour_extent_ok(image_rgb, box, colour_rgb, tolerance=2):
    """The box's edges sit on its colour's edges: inside lines are the colour, outside lines are not."""
    height, width = image_rgb.shape[:2]
    mask = np.all(np.abs(image_rgb.astype(int) - np.array(colour_rgb)) < 60, axis=-1)
    x1, y1, x2, y2 = box
    xi1, yi1, xi2, yi2 = (int(np.floor(x1)), int(np.floor(y1)), int(np.ceil(x2)), int(np.ceil(y2)))
    t = tolerance + 1
    inner = mask[yi1 + t:yi2 - t, xi1 + t:xi2 - t]
    if inner.size and inner.mean() < 0.9:
        return False
    for line in (mask[max(0, yi1 - t), xi1 + t:xi2 - t] if yi1 - t >= 0 else None,
                 mask[min(height - 1, yi2 + t - 1), xi1 + t:xi2 - t] if yi2 + t - 1 < height else None,
                 mask[yi1 + t:yi2 - t, max(0, xi1 - t)] if xi1 - t >= 0 else None,
                 mask[yi1 + t:yi2 - t, min(width - 1, xi2 + t - 1)] if xi2 + t - 1 < width else None):
        if line is not None and line.size and line.mean() > 0.5:
            return False
    return True


def test_whole_chain_boxes_follow_pixels(rect_shards):
    """Mosaic + affine + flips + letterbox path: each box equals its rectangle's pixel extent."""
    checked = 0
    for mosaic in (1.0, 0.0):
        dataset = create_train_dataset(rect_shards, per_batch_size=4, training_shape=256, seed=11,
                                       num_parallel_workers=2, augment=AugmentConfig(mosaic=mosaic, **NO_COLOUR))
        for batch in batches(dataset):
            for image, boxes in zip(batch["image"], batch["boxes"]):
                for box in boxes[boxes[:, 5] > 0]:
                    colour_rgb = RECT_COLOURS_BGR[int(box[4])][::-1]
                    assert _colour_extent_ok(image, box[:4], colour_rgb), (mosaic, box)
                    checked += 1
    assert checked > 50


# the options whose draws must also be independent of workers and resume: mixup (half the mosaics get a
# second one blended in) and YOLOv5's image weights (22 images, weights 1..22)
SAMPLING_VARIANTS = {"plain": {}, "mixup": {"augment": AugmentConfig(mixup=0.5)},
                     "image-weights": {"image_weights": np.arange(1, 23, dtype=np.float64)}}


@pytest.mark.parametrize("variant", sorted(SAMPLING_VARIANTS))
def test_batches_identical_for_any_number_of_workers(rect_shards, variant):
    kwargs = dict(per_batch_size=4, training_shape=128, seed=5, resize_rate=2, **SAMPLING_VARIANTS[variant])
    one = batches(create_train_dataset(rect_shards, num_parallel_workers=1, **kwargs))
    two = batches(create_train_dataset(rect_shards, num_parallel_workers=2, **kwargs))
    assert len(one) == len(two)
    for a, b in zip(one, two):
        for name in TRAIN_COLUMNS:
            np.testing.assert_array_equal(a[name], b[name])


@pytest.mark.parametrize("variant", sorted(SAMPLING_VARIANTS))
def test_resume_equals_continue(rect_shards, variant):
    kwargs = dict(per_batch_size=4, training_shape=128, seed=7, num_parallel_workers=2, resize_rate=1,
                  **SAMPLING_VARIANTS[variant])
    full = batches(create_train_dataset(rect_shards, start_epoch=1, num_epochs=2, **kwargs))
    resumed = batches(create_train_dataset(rect_shards, start_epoch=1, start_step=4, num_epochs=2, **kwargs))
    assert len(resumed) == len(full) - 4
    for a, b in zip(full[4:], resumed):
        for name in TRAIN_COLUMNS:
            np.testing.assert_array_equal(a[name], b[name])
    # another epoch is another order
    assert not np.array_equal(np.concatenate([b["image_id"] for b in full[:6]]),
                              np.concatenate([b["image_id"] for b in full[6:]]))


def test_global_batches_same_for_any_group_size(rect_shards):
    kwargs = dict(training_shape=128, seed=2, num_parallel_workers=2, resize_rate=1)
    single = batches(create_train_dataset(rect_shards, per_batch_size=4, **kwargs))
    ranks = [batches(create_train_dataset(rect_shards, per_batch_size=2, rank=r, group_size=2, **kwargs))
             for r in range(2)]
    assert len(ranks[0]) == len(ranks[1]) == len(single)
    for step, whole in enumerate(single):
        parts = np.concatenate([ranks[r][step]["image_id"] for r in range(2)])
        assert sorted(parts.tolist()) == sorted(whole["image_id"].tolist())
        # multi-scale: every rank and the single process use the same shape at the same step
        shapes = {ranks[0][step]["image"].shape[1], ranks[1][step]["image"].shape[1], whole["image"].shape[1]}
        assert len(shapes) == 1 and shapes.pop() in multiscale_shapes(128)


def test_resume_against_changed_shards_fails(rect_shards):
    with pytest.raises(ValueError, match="changed"):
        create_train_dataset(rect_shards, per_batch_size=4, training_shape=128, expected_dataset_id="0" * 64)


def test_bad_arguments_are_explained(rect_shards):
    with pytest.raises(ValueError, match="per_batch_size"):
        create_train_dataset(rect_shards, per_batch_size=0)
    with pytest.raises(ValueError, match="unknown augmentation"):
        create_train_dataset(rect_shards, per_batch_size=2, augment=AugmentConfig.from_mapping({"mosiac": 1.0}))
    with pytest.raises(ValueError, match="AugmentConfig.from_mapping"):
        create_train_dataset(rect_shards, per_batch_size=2, augment={"mosaic": 1.0})
    with pytest.raises(ValueError, match="anchors must have shape"):
        create_train_dataset(rect_shards, per_batch_size=2, anchors=np.ones((3, 2, 3), np.float32))
    with pytest.raises(ValueError, match="anchor_t must be greater than 1"):
        create_train_dataset(rect_shards, per_batch_size=2, anchor_t=0.5)
    with pytest.raises(ValueError, match="multiple of 32"):
        create_train_dataset(rect_shards, per_batch_size=2, training_shape=100)
    with pytest.raises(ValueError, match="tools/coco2mindrecord.py"):
        create_train_dataset(rect_shards / "missing", per_batch_size=2)


@pytest.fixture
def corrupt_shards(tmp_path, rect_shards):
    """A copy of the shards with one image's bytes replaced by garbage (each file rewritten with FileWriter)."""
    from mindspore.mindrecord import FileReader, FileWriter

    from yolodata.schema import MINDRECORD_SCHEMA

    out = tmp_path / "corrupt"
    out.mkdir()
    for name in ("manifest.json", "annotations.json"):
        shutil.copy(rect_shards / name, out / name)
    manifest = json.loads((out / "manifest.json").read_text())
    bad_row, position = 5, 0
    for shard in manifest["shards"]:  # schema 3: each file a set of its own, row_index within the file
        reader = FileReader(str(rect_shards / shard["file"]))
        rows = sorted((dict(row) for row in reader.get_next()), key=lambda r: int(r["row_index"]))
        reader.close()
        for row in rows:  # FileReader gives a float64 scalar as numpy.float64, which FileWriter refuses
            row["stored_scale"] = float(row["stored_scale"])
        if position <= bad_row < position + len(rows):
            rows[bad_row - position]["image"] = b"\xff\xd8 this is not a picture"
            bad_id = int(rows[bad_row - position]["image_id"])
        position += len(rows)
        writer = FileWriter(str(out / shard["file"]), shard_num=1, overwrite=True)
        writer.add_schema(MINDRECORD_SCHEMA, "yolodata")
        writer.write_raw_data(rows)
        writer.commit()
    return out, bad_id


def test_bad_row_names_shard_and_image(corrupt_shards):
    folder, bad_id = corrupt_shards
    dataset = create_train_dataset(folder, per_batch_size=4, training_shape=128, num_parallel_workers=2)
    with pytest.raises(RuntimeError, match=f"image_id {bad_id}") as error:
        batches(dataset)
    assert "data.mindrecord" in str(error.value)


def test_bad_row_skipped_and_counted(corrupt_shards):
    folder, bad_id = corrupt_shards
    dataset = create_train_dataset(folder, per_batch_size=4, training_shape=128, num_parallel_workers=2,
                                   skip_bad_rows=True)
    out = batches(dataset)
    assert len(out) == dataset.num_steps
    assert len(dataset.bad_rows) == 1 and f"image_id {bad_id}" in dataset.bad_rows.messages[0]


def eval_batches(dataset):
    return [dict(zip(EVAL_COLUMNS, b)) for b in dataset.create_tuple_iterator(output_numpy=True, num_epochs=1)]


def test_eval_bad_row_named_or_left_out_never_scored_as_another_image(corrupt_shards):
    folder, bad_id = corrupt_shards
    manifest = json.loads((folder / "manifest.json").read_text())
    strict = create_eval_dataset(folder, per_batch_size=4, testing_shape=128, num_parallel_workers=2)
    with pytest.raises(RuntimeError, match=f"image_id {bad_id}"):
        eval_batches(strict)
    dataset = create_eval_dataset(folder, per_batch_size=4, testing_shape=128, num_parallel_workers=2,
                                  skip_bad_rows=True)
    ids = np.concatenate([b["image_id"] for b in eval_batches(dataset)])
    ids = ids[ids != -1]
    annotations = json.loads((folder / "annotations.json").read_text())
    expected = sorted(img["id"] for img in annotations["images"] if img["id"] != bad_id)
    assert sorted(ids.tolist()) == expected and len(expected) == manifest["num_images"] - 1
    assert len(dataset.bad_rows) == 1 and f"image_id {bad_id}" in dataset.bad_rows.messages[0]


@pytest.mark.parametrize("geometry", [EvalGeometry(), EvalGeometry(rect=True), EvalGeometry.yolov5_val()],
                         ids=["square", "rect", "yolov5-val"])
def test_eval_every_image_once_across_ranks_and_mapping_round_trip(rect_shards, geometry):
    manifest = json.loads((rect_shards / "manifest.json").read_text())
    annotations = json.loads((rect_shards / "annotations.json").read_text())
    by_id = {img["id"]: img for img in annotations["images"]}
    seen, shapes = [], set()
    for rank in range(3):
        dataset = create_eval_dataset(rect_shards, per_batch_size=4, testing_shape=256, rank=rank, group_size=3,
                                      num_parallel_workers=2, geometry=geometry)
        for batch in eval_batches(dataset):
            height, width = batch["image"].shape[1:3]
            shapes.add((height, width))
            assert batch["image"].shape[0] == 4 and batch["image"].dtype == np.uint8
            assert height % 32 == 0 and width % 32 == 0 and max(height, width) <= 256 + 32
            if not geometry.rect:
                assert (height, width) == (256, 256)
            for image, image_id, hw, scale, pad in zip(batch["image"], batch["image_id"], batch["orig_hw"],
                                                       batch["scale"], batch["pad"]):
                if image_id < 0:
                    continue
                seen.append(int(image_id))
                info = by_id[int(image_id)]
                assert tuple(hw) == (info["height"], info["width"])
                original_long_side = max(info["height"], info["width"])
                # the long side becomes the test size; smaller images are enlarged only with scaleup
                expected = 256 if geometry.scaleup else min(256, original_long_side)
                assert original_long_side * scale == pytest.approx(expected, abs=1e-3)
                assert scale <= 1.0 or geometry.scaleup
                # a ground-truth box mapped into the letterboxed image and back lands where it started,
                # and its rectangle is there in the pixels
                ann = next(a for a in annotations["annotations"] if a["image_id"] == image_id)
                x, y, w, h = ann["bbox"]
                mapped = np.array([x, y, x + w, y + h]) * scale + np.tile(pad, 2)
                back = (mapped - np.tile(pad, 2)) / scale
                np.testing.assert_allclose(back, [x, y, x + w, y + h], atol=1e-3)
                category = next(c["index"] for c in manifest["categories"] if c["id"] == ann["category_id"])
                colour_rgb = RECT_COLOURS_BGR[category][::-1]
                assert _colour_extent_ok(image, mapped, colour_rgb)
    assert sorted(seen) == sorted(by_id)
    assert dataset.batch_shapes  # the last rank's distinct shapes are listed
    if geometry.rect:
        assert len(shapes) > 1  # the rectangle set has wide and tall images


def test_eval_enlarges_small_images_only_with_scaleup(rect_shards):
    """The rectangle images are 300-700 px: at 768 they are enlarged with scaleup (as YOLOv5's val.py)."""
    for geometry in (EvalGeometry.yolov5_val(), EvalGeometry(rect=True)):
        dataset = create_eval_dataset(rect_shards, per_batch_size=8, testing_shape=768, geometry=geometry)
        batch = eval_batches(dataset)[0]
        for hw, scale, image_id in zip(batch["orig_hw"], batch["scale"], batch["image_id"]):
            if image_id >= 0:
                expected = 768 / max(hw) if geometry.scaleup else 1.0
                assert scale == pytest.approx(expected, rel=1e-6)


def test_eval_pixels_equal_opencv_letterbox(rect_shards):
    annotations = json.loads((rect_shards / "annotations.json").read_text())
    dataset = create_eval_dataset(rect_shards, per_batch_size=8, testing_shape=704, num_parallel_workers=1)
    batch = eval_batches(dataset)[0]
    image_dir = rect_shards.parent / "images"
    for image, image_id, scale, pad in zip(batch["image"], batch["image_id"], batch["scale"], batch["pad"]):
        info = next(i for i in annotations["images"] if i["id"] == image_id)
        source = cv2.imread(str(image_dir / info["file_name"]))
        # testing_shape 704 is larger than every image here (< 700 px): no resize, only padding
        assert scale == 1.0
        px, py = int(pad[0]), int(pad[1])
        np.testing.assert_array_equal(image[py:py + info["height"], px:px + info["width"]], source[..., ::-1])


# --- bitwise reproducibility across code changes ----------------------------------------------------
# sha256 over every column (name, dtype, shape, bytes) of the batches of a few settings. The values
# were computed with the pipeline as it stood before the augmentation policy moved out of
# pipeline.py into yolodata/augment/policy.py (commit a012776): a refactoring must leave them as they
# are. They change only when what training sees changes (the policy, a transform, the sampler, target
# building) or when OpenCV/libjpeg decode or resize differently; after such an intended change,
# recompute them and say why in the commit.
PINNED_SETTINGS = {
    # YOLOv5's defaults, multi-scale every step
    "default": dict(per_batch_size=4, training_shape=160, resize_rate=1, seed=21),
    # mosaic half the time, rotation, shear, perspective (the canvas path), both flips, frequent extras
    "warped": dict(per_batch_size=3, training_shape=128, seed=4,
                   augment=AugmentConfig(mosaic=0.5, degrees=10.0, translate=0.2, scale=0.6, shear=3.0,
                                         perspective=0.0005, flipud=0.5, extras=0.3)),
    # letterbox + affine only, no colour, resumed inside epoch 2
    "letterbox": dict(per_batch_size=4, training_shape=192, seed=8, start_epoch=2, start_step=1,
                      augment=AugmentConfig(mosaic=0.0, hsv_h=0.0, hsv_s=0.0, hsv_v=0.0)),
}
PINNED_DIGESTS = {
    "default": "2534e0547b1d40c0f88770f93a953775ce773586b92f6b5a1fc5169c19600f92",
    "warped": "a3c850cae11ce8279502401c68c0aaa4005c0f7bae50fb58f8611452d5e4925c",
    "letterbox": "da7a4219b82ebbdbb90c6e244feb628def0eca79dea2c6d1f880aebcac8495c6",
    "coco128": "2baed4ae347342a64ce8a7beb0800dfff733bd739e8048610f36c1015fdee4b2",
}
# real JPEGs (640 px: decoded at full size for a 256 input, REDUCED_DECODE_MARGIN), YOLOv5's defaults
COCO128_SETTING = dict(per_batch_size=4, training_shape=256, seed=0)


def batches_digest(dataset) -> str:
    digest = hashlib.sha256()
    for batch in batches(dataset):
        for name in TRAIN_COLUMNS:
            column = np.ascontiguousarray(batch[name])
            digest.update(f"{name}:{column.dtype.str}:{column.shape}".encode())
            digest.update(column.tobytes())
    return digest.hexdigest()


def pinned_dataset(folder, setting: dict):
    return create_train_dataset(folder, num_parallel_workers=2, **setting)


@pytest.mark.parametrize("name", sorted(PINNED_SETTINGS))
def test_batches_bitwise_equal_to_the_pinned_ones(rect_shards, name):
    assert batches_digest(pinned_dataset(rect_shards, PINNED_SETTINGS[name])) == PINNED_DIGESTS[name], name


@pytest.fixture(scope="module")
def coco128_subset_shards(tmp_path_factory):
    source = shared_data_path("coco128")
    document = json.loads((source / "annotations" / "instances_val2017.json").read_text())
    images = sorted(document["images"], key=lambda record: record["id"])[:12]
    keep = {record["id"] for record in images}
    document = {**document, "images": images,
                "annotations": [a for a in document["annotations"] if a["image_id"] in keep]}
    folder = tmp_path_factory.mktemp("coco128_subset")
    ann_file = folder / "instances.json"
    ann_file.write_text(json.dumps(document))
    convert_coco(image_dir=source / "val2017", ann_file=ann_file, output_dir=folder / "shards", progress=False)
    return folder / "shards"


def test_coco128_batches_bitwise_equal_to_the_pinned_ones(coco128_subset_shards):
    assert batches_digest(pinned_dataset(coco128_subset_shards, COCO128_SETTING)) == PINNED_DIGESTS["coco128"]
