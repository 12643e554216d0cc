"""The synthetic COCO generator: deterministic bytes, exact boxes, a clean split, valid COCO json."""
from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import cv2
import numpy as np
import pytest
from pycocotools.coco import COCO

from yolodata import synthetic

SMALL = (160, 224)   # image size for the tests that write whole datasets (keeps them fast)


def compose_visible_masks(image: synthetic.SyntheticImage):
    """The test's own occlusion bookkeeping: re-rasterize every object's mask from its spec, paint
    them in order (later on top) and return per object (visible bool (H, W), in-frame bool (H, W))."""
    height, width = image.image_bgr.shape[:2]
    owner = np.full((height, width), -1, np.int32)
    in_frame = []
    for index, obj in enumerate(image.objects):
        patch, x0, y0 = synthetic.shape_mask(obj.spec)
        full = np.zeros((height, width), bool)
        # paste the patch where it overlaps the frame
        ys, xs = np.nonzero(patch)
        ys, xs = ys + y0, xs + x0
        inside = (ys >= 0) & (ys < height) & (xs >= 0) & (xs < width)
        full[ys[inside], xs[inside]] = True
        owner[full] = index
        in_frame.append(full)
    return [(owner == index, in_frame[index]) for index in range(len(image.objects))]


def extent(mask: np.ndarray) -> tuple[int, int, int, int]:
    rows, cols = np.nonzero(mask)
    return int(cols.min()), int(rows.min()), int(cols.max()) + 1, int(rows.max()) + 1


def geometric_extent(spec: synthetic.ShapeSpec) -> np.ndarray:
    """Extent of the ideal (continuous) shape, from its parameters alone."""
    if spec.kind in ("circle", "ring"):
        radius = spec.size / 2
        return np.array([spec.cx - radius, spec.cy - radius, spec.cx + radius, spec.cy + radius])
    vertices = synthetic.shape_polygon(spec)
    return np.concatenate([vertices.min(axis=0), vertices.max(axis=0)])


@pytest.fixture(scope="module")
def rendered():
    """Thirty images at the default size, with the lossless pixels."""
    return [synthetic.render_synthetic_image(7, index) for index in range(30)]


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    output = tmp_path_factory.mktemp("synthetic") / "shapes"
    return synthetic.make_synthetic_coco(output, num_images=60, seed=3, image_size=SMALL, num_workers=2)


# --- boxes ---------------------------------------------------------------------------------------

def test_every_box_is_the_extent_of_its_objects_visible_pixels(rendered):
    num_objects = 0
    for image in rendered:
        for obj, (visible, _) in zip(image.objects, compose_visible_masks(image)):
            num_objects += 1
            assert obj.box_xyxy == extent(visible)
            assert obj.visible_area == int(visible.sum())
    assert num_objects > 60


def test_the_drawn_pixels_are_exactly_the_visible_masks(rendered):
    for image in rendered:
        height, width = image.image_bgr.shape[:2]
        for obj, (visible, _) in zip(image.objects, compose_visible_masks(image)):
            # the box plus a 3-pixel margin holds every visible pixel (the box is checked elsewhere)
            x1, y1, x2, y2 = obj.box_xyxy
            window = (slice(max(y1 - 3, 0), min(y2 + 3, height)), slice(max(x1 - 3, 0), min(x2 + 3, width)))
            assert visible[window].sum() == visible.sum()
            painted = np.all(image.image_bgr[window] == np.array(obj.colour, np.uint8), axis=2)
            assert painted[visible[window]].all()
            # around the object nothing else has its colour: the paint does not leak past the mask
            assert not (painted & ~visible[window]).any()


def test_unoccluded_boxes_match_the_ideal_shapes_extent(rendered):
    # Pixels belong to an object when their centre lies inside the shape, so a box edge lies within
    # half a pixel outside the ideal extent, and at most ~1.5 px inside it at a sharp polygon corner
    # whose tip falls between pixel centres (circles and rings: within half a pixel both ways).
    checked = 0
    for image in rendered:
        for obj, (visible, in_frame) in zip(image.objects, compose_visible_masks(image)):
            if not np.array_equal(visible, in_frame) or in_frame.sum() != obj.full_area:
                continue  # partly covered by a later object, or partly outside the frame
            ideal = geometric_extent(obj.spec)
            box = np.array(obj.box_xyxy, np.float64)
            outward = np.concatenate([ideal[:2] - box[:2], box[2:] - ideal[2:]])
            if obj.spec.kind in ("circle", "ring"):
                assert np.all(np.abs(outward) <= 0.5 + 1e-9)
            else:
                assert np.all(outward <= 0.5 + 1e-9) and np.all(outward >= -1.5)
            checked += 1
    assert checked > 50


def test_every_object_keeps_most_of_its_pixels_visible(rendered):
    touching_border = overlapping = 0
    for image in rendered:
        height, width = image.image_bgr.shape[:2]
        masks = compose_visible_masks(image)
        for obj, (visible, in_frame) in zip(image.objects, masks):
            assert visible.sum() >= 0.6 * obj.full_area
            x1, y1, x2, y2 = obj.box_xyxy
            touching_border += x1 == 0 or y1 == 0 or x2 == width or y2 == height
            overlapping += int(in_frame.sum() > visible.sum())
    # the scenes really contain border crossings and occlusions, not only isolated shapes
    assert touching_border >= 5
    assert overlapping >= 3


def test_objects_have_the_configured_sizes_and_all_classes_occur(rendered):
    kinds = [obj.spec.kind for image in rendered for obj in image.objects]
    assert set(kinds) == set(synthetic.SHAPE_KINDS)
    for image in rendered:
        shorter = min(image.image_bgr.shape[:2])
        for obj in image.objects:
            assert 0.08 * shorter - 1e-6 <= obj.spec.size <= 0.4 * shorter + 1e-6


def test_a_background_image_has_no_objects():
    image = synthetic.render_synthetic_image(7, 0, num_objects=0)
    assert image.objects == ()
    assert (image.owner == -1).all()


def test_owner_map_and_boxes_stay_consistent_when_occlusion_is_unbounded():
    # min_visible_fraction=0 lets later objects hide earlier ones completely; those are dropped
    for index in range(6):
        image = synthetic.render_synthetic_image(1, index, objects_per_image=(20, 20), min_visible_fraction=0.0)
        assert image.owner.max() == len(image.objects) - 1
        for position, obj in enumerate(image.objects):
            assert obj.box_xyxy == extent(image.owner == position)


# --- determinism ---------------------------------------------------------------------------------

def read_tree(root):
    return {path.relative_to(root).as_posix(): path.read_bytes() for path in sorted(root.rglob("*"))
            if path.is_file()}


def test_same_seed_gives_the_same_bytes_for_any_worker_count_and_another_seed_differs(tmp_path):
    settings = dict(num_images=12, image_size=SMALL)
    first = synthetic.make_synthetic_coco(tmp_path / "a", seed=5, num_workers=1, **settings)
    second = synthetic.make_synthetic_coco(tmp_path / "b", seed=5, num_workers=2, **settings)
    other = synthetic.make_synthetic_coco(tmp_path / "c", seed=6, num_workers=2, **settings)
    tree_a, tree_b, tree_c = (read_tree(r.output_dir) for r in (first, second, other))
    assert len(tree_a) == 12 + 2
    assert tree_a == tree_b
    assert tree_a.keys() == tree_c.keys()
    assert all(tree_a[name] != tree_c[name] for name in tree_a if name.endswith(".jpg"))


# --- the written dataset -------------------------------------------------------------------------

def load(path):
    with open(path) as handle:
        return json.load(handle)


def test_split_is_disjoint_and_complete_and_files_exist(dataset):
    train, val = load(dataset.train_json), load(dataset.val_json)
    train_ids = {image["id"] for image in train["images"]}
    val_ids = {image["id"] for image in val["images"]}
    assert not train_ids & val_ids
    assert train_ids | val_ids == set(range(1, 61))
    assert (len(train_ids), len(val_ids)) == (dataset.num_train, dataset.num_val) == (48, 12)
    for coco in (train, val):
        for image in coco["images"]:
            assert (dataset.image_dir / image["file_name"]).is_file()
        image_ids = {image["id"] for image in coco["images"]}
        assert all(annotation["image_id"] in image_ids for annotation in coco["annotations"])
    annotation_ids = [a["id"] for coco in (train, val) for a in coco["annotations"]]
    assert len(annotation_ids) == len(set(annotation_ids))


def test_json_loads_with_pycocotools_and_has_non_contiguous_category_ids(dataset):
    for path in (dataset.train_json, dataset.val_json):
        coco = COCO(str(path))
        assert sorted(coco.getCatIds()) == [1, 3, 5, 7, 9]
        assert [c["name"] for c in coco.loadCats([1, 3, 5, 7, 9])] == list(synthetic.SHAPE_KINDS)
        assert len(coco.getImgIds()) > 0 and len(coco.getAnnIds()) > 0


def test_json_boxes_are_the_rendered_boxes_and_lie_inside_their_images(dataset):
    _, is_background = synthetic.split_and_backgrounds(60, 3, 0.2, 0.05)
    assert is_background.sum() == 3   # round(60 * 0.05)
    boxes_per_name = {name: 0 for name in synthetic.SHAPE_KINDS}
    background_images = 0
    for coco in (load(dataset.train_json), load(dataset.val_json)):
        by_image = {image["id"]: [] for image in coco["images"]}
        for annotation in coco["annotations"]:
            by_image[annotation["image_id"]].append(annotation)
        for image in coco["images"]:
            annotations = by_image[image["id"]]
            background_images += not annotations
            index = image["id"] - 1
            rendered = synthetic.render_synthetic_image(
                3, index, image_size=SMALL, num_objects=0 if is_background[index] else None)
            assert (image["height"], image["width"]) == rendered.image_bgr.shape[:2]
            expected = [[x1, y1, x2 - x1, y2 - y1] for x1, y1, x2, y2 in (o.box_xyxy for o in rendered.objects)]
            assert [a["bbox"] for a in annotations] == expected
            for annotation, obj in zip(annotations, rendered.objects):
                x, y, w, h = annotation["bbox"]
                assert 0 <= x < x + w <= image["width"] and 0 <= y < y + h <= image["height"]
                assert annotation["category_id"] == obj.category_id and annotation["iscrowd"] == 0
                assert annotation["area"] == obj.visible_area <= w * h
                boxes_per_name[synthetic.SHAPE_KINDS[(obj.category_id - 1) // 2]] += 1
    assert background_images == dataset.num_background == 3
    assert boxes_per_name == dataset.boxes_per_category


def test_the_jpegs_are_the_rendered_images(dataset):
    _, is_background = synthetic.split_and_backgrounds(60, 3, 0.2, 0.05)
    checked = 0
    for image in load(dataset.val_json)["images"][:6]:
        decoded = cv2.imread(str(dataset.image_dir / image["file_name"]), cv2.IMREAD_COLOR)
        index = image["id"] - 1
        rendered = synthetic.render_synthetic_image(
            3, index, image_size=SMALL, num_objects=0 if is_background[index] else None)
        difference = np.abs(decoded.astype(np.int16) - rendered.image_bgr.astype(np.int16))
        assert difference.mean() < 4   # JPEG quality 90 of the lossless rendering
        checked += 1
    assert checked == 6


def test_image_size_ranges_are_respected(tmp_path):
    result = synthetic.make_synthetic_coco(tmp_path / "sizes", num_images=10, image_size=((96, 128), (100, 200)))
    images = load(result.train_json)["images"] + load(result.val_json)["images"]
    assert all(96 <= image["height"] <= 128 and 100 <= image["width"] <= 200 for image in images)
    assert len({(image["height"], image["width"]) for image in images}) > 1


# --- argument checks -----------------------------------------------------------------------------

@pytest.mark.parametrize("kwargs, message", [
    (dict(num_images=0), "num_images"),
    (dict(num_images=4, val_fraction=1.5), "val_fraction"),
    (dict(num_images=4, image_size=(16, 640)), "image_size"),
    (dict(num_images=4, image_size="480x640"), "image_size"),
    (dict(num_images=4, objects_per_image=(3, 1)), "objects_per_image"),
    (dict(num_images=4, object_size=(0.0, 0.4)), "object_size"),
])
def test_bad_arguments_raise_value_errors_that_name_the_argument(tmp_path, kwargs, message):
    with pytest.raises(ValueError, match=message):
        synthetic.make_synthetic_coco(tmp_path / "out", **kwargs)


def test_a_non_empty_output_dir_needs_overwrite(tmp_path):
    (tmp_path / "keep.txt").write_text("user data")
    with pytest.raises(ValueError, match="overwrite"):
        synthetic.make_synthetic_coco(tmp_path, num_images=2, image_size=SMALL)
    result = synthetic.make_synthetic_coco(tmp_path, num_images=2, image_size=SMALL, overwrite=True)
    assert (tmp_path / "keep.txt").read_text() == "user data"
    assert (result.num_train, result.num_val) == (1, 1)   # both splits non-empty even for 2 images


def test_command_line_tool_writes_a_dataset_and_prints_a_summary(tmp_path, capsys):
    script = Path(__file__).resolve().parents[1] / "tools" / "make_synthetic_coco.py"
    spec = importlib.util.spec_from_file_location("make_synthetic_coco", script)
    tool = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(tool)
    output = tmp_path / "cli"
    code = tool.main(["--output_dir", str(output), "--num_images", "5", "--seed", "2",
                      "--image_size", "96-128", "160", "--val_fraction", "0.4"])
    assert code == 0
    printed = capsys.readouterr().out
    assert "images: 5 (3 train, 2 val" in printed and "ring" in printed and str(output) in printed
    assert len(list((output / "images").glob("*.jpg"))) == 5
    # a second run into the same folder is refused with a message, not a traceback
    assert tool.main(["--output_dir", str(output), "--num_images", "5"]) == 2
    assert "overwrite" in capsys.readouterr().err
