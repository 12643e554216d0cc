"""YOLOv5 target assignment (yolodata.pipeline.targets) against a plainly written reference of the same rule.

The reference below loops over images, boxes, anchors and cells and states YOLOv5's build_targets rule
line by line; it shares no code with the implementation. Both are compared as multisets of
(image, stride, flat index, tx, ty, tw, th, class) entries and, more strictly, slot by slot.
"""
from __future__ import annotations

import json
import logging
import math
from collections import defaultdict

import numpy as np
import pytest

from yolodata.pipeline.targets import STRIDES, YOLOV5_ANCHORS, build_targets

ANCHORS_PX = [[(10, 13), (16, 30), (33, 23)],
              [(30, 61), (62, 45), (59, 119)],
              [(116, 90), (156, 198), (373, 326)]]


# --- the reference --------------------------------------------------------------------------------

def reference_targets(labels_list, input_hw, *, anchor_t=4.0, max_boxes=256):
    """dict stride -> list of (image, slot k, flat index, tx, ty, tw, th, class), plus the kept boxes.

    YOLOv5's rule, one box, one anchor, one cell at a time.
    """
    height, width = input_hw
    entries = {stride: [] for stride in STRIDES}
    kept_boxes = []
    for image, rows in enumerate(labels_list):
        objects = []
        for x1, y1, x2, y2, cls, crowd in np.asarray(rows, np.float32).reshape(-1, 6).tolist():
            if crowd != 0 or x2 <= x1 or y2 <= y1:
                continue                       # crowd and empty boxes are never targets
            objects.append((x1, y1, x2, y2, cls))
        objects = objects[:max_boxes]
        kept_boxes.append(objects)
        for level, stride in enumerate(STRIDES):
            grid_w, grid_h = width // stride, height // stride
            for j, (x1, y1, x2, y2, cls) in enumerate(objects):
                gx, gy = (x1 + x2) / 2 / stride, (y1 + y2) / 2 / stride
                gw, gh = (x2 - x1) / stride, (y2 - y1) / stride
                for a, (anchor_w_px, anchor_h_px) in enumerate(ANCHORS_PX[level]):
                    aw, ah = anchor_w_px / stride, anchor_h_px / stride
                    if max(gw / aw, aw / gw, gh / ah, ah / gh) >= anchor_t:
                        continue
                    cx, cy = math.floor(gx), math.floor(gy)
                    cells = [(0, cx, cy)]
                    if gx % 1 < 0.5 and gx > 1:
                        cells.append((1, cx - 1, cy))
                    elif gx % 1 > 0.5 and gx < grid_w - 1:
                        cells.append((1, cx + 1, cy))
                    if gy % 1 < 0.5 and gy > 1:
                        cells.append((2, cx, cy - 1))
                    elif gy % 1 > 0.5 and gy < grid_h - 1:
                        cells.append((2, cx, cy + 1))
                    for c, cell_x, cell_y in cells:
                        cell_x = min(max(cell_x, 0), grid_w - 1)
                        cell_y = min(max(cell_y, 0), grid_h - 1)
                        flat = a * grid_h * grid_w + cell_y * grid_w + cell_x
                        k = (j * 3 + a) * 3 + c
                        entries[stride].append((image, k, flat, gx - cell_x, gy - cell_y, gw, gh, cls))
    return entries, kept_boxes


def implementation_entries(result, stride):
    """The valid entries of build_targets' output in the reference's tuple layout."""
    indices = result[f"target_indices_s{stride}"]
    values = result[f"target_values_s{stride}"]
    images, slots = np.nonzero(values[..., 5])
    return [(int(i), int(k), int(indices[i, k]), *values[i, k, :4].tolist(), float(values[i, k, 4]))
            for i, k in zip(images, slots)]


def assert_entries_equal(got, expected, what):
    """Multiset equality: integers exactly, floats to float32 precision."""
    got, expected = sorted(got), sorted(expected)
    assert len(got) == len(expected), f"{what}: {len(got)} entries, reference has {len(expected)}"
    if not got:
        return
    got_arr, expected_arr = np.asarray(got, np.float64), np.asarray(expected, np.float64)
    # columns: image, k, flat, tx, ty, tw, th, class
    np.testing.assert_array_equal(got_arr[:, [0, 1, 2, 7]], expected_arr[:, [0, 1, 2, 7]], err_msg=what)
    np.testing.assert_allclose(got_arr[:, 3:7], expected_arr[:, 3:7], rtol=1e-6, atol=1e-5, err_msg=what)


def compare_with_reference(labels_list, input_hw, *, anchor_t=4.0, max_boxes=256):
    result = build_targets(labels_list, input_hw, anchor_t=anchor_t, max_boxes=max_boxes)
    expected, kept_boxes = reference_targets(labels_list, input_hw, anchor_t=anchor_t, max_boxes=max_boxes)
    for stride in STRIDES:
        got = implementation_entries(result, stride)
        want = expected[stride]
        # the brief's comparison: multisets of (image, stride, flat index, tx, ty, tw, th, class) ...
        drop_slot = lambda rows: [(r[0], r[2], *r[3:]) for r in rows]  # noqa: E731
        assert_entries_equal([(e[0], 0) + e[1:] for e in drop_slot(got)],
                             [(e[0], 0) + e[1:] for e in drop_slot(want)], f"stride {stride} (sets)")
        # ... and the stricter one: every entry in the slot k = (j*3 + a)*3 + c of the contract
        assert_entries_equal(got, want, f"stride {stride} (slots)")
    boxes = result["boxes"]
    for image, objects in enumerate(kept_boxes):
        expected_rows = np.zeros((max_boxes, 6), np.float32)
        if objects:
            expected_rows[:len(objects), :5] = np.asarray(objects, np.float32)
            expected_rows[:len(objects), 5] = 1.0
        np.testing.assert_array_equal(boxes[image], expected_rows)
    return result, expected


# --- random box sets ------------------------------------------------------------------------------

def random_box_set(rng, input_hw, kind):
    """float32 (N, 6) label rows of one flavour; see the parametrisation below."""
    height, width = input_hw
    n = int(rng.integers(0, 40))
    if kind == "empty":
        return np.zeros((0, 6), np.float32)
    if kind == "uniform":
        xy = rng.uniform(0, [width, height], size=(n, 2))
        wh = rng.uniform(1, [width, height], size=(n, 2))
        x1y1, x2y2 = xy, np.minimum(xy + wh, [width, height])
    elif kind == "edges":      # boxes touching the image borders, clipped like the pipeline does
        centre = rng.choice([0.0, 1.0], size=(n, 2)) * [width, height] + rng.normal(0, 20, size=(n, 2))
        wh = rng.uniform(2, 200, size=(n, 2))
        x1y1 = np.clip(centre - wh / 2, 0, [width, height])
        x2y2 = np.clip(centre + wh / 2, 0, [width, height])
    elif kind == "beyond_edges":  # unclipped boxes whose centre may lie outside: cells are clamped
        centre = rng.uniform(-60, [width + 60, height + 60], size=(n, 2))
        wh = rng.uniform(4, 300, size=(n, 2))
        x1y1, x2y2 = centre - wh / 2, centre + wh / 2
    elif kind == "tiny":
        xy = rng.uniform(0, [width - 4, height - 4], size=(n, 2))
        x1y1, x2y2 = xy, xy + rng.uniform(0.2, 4, size=(n, 2))
    elif kind == "huge":
        wh = rng.uniform(0.6, 1.0, size=(n, 2)) * [width, height]
        x1y1 = rng.uniform(0, 1, size=(n, 2)) * ([width, height] - wh)
        x2y2 = x1y1 + wh
    elif kind == "cell_boundaries":   # integer pixel boxes with centres on multiples of 4 px: frac 0 or .5
        centre = rng.integers(0, [width // 4 + 1, height // 4 + 1], size=(n, 2)) * 4.0
        half = rng.integers(1, 60, size=(n, 2)).astype(np.float64)
        x1y1 = np.clip(centre - half, 0, [width, height])
        x2y2 = np.clip(centre + half, 0, [width, height])
    elif kind == "ratio_boundaries":  # sizes exactly 4x or 1/4 of an anchor, and just inside
        anchors = YOLOV5_ANCHORS.reshape(-1, 2)[rng.integers(0, 9, size=n)].astype(np.float64)
        factor = rng.choice([4.0, 0.25, 3.999, 0.2501, 1.0], size=(n, 2))
        wh = np.minimum(anchors * factor, [width, height])
        x1y1 = rng.uniform(0, 1, size=(n, 2)) * ([width, height] - wh)
        x2y2 = x1y1 + wh
    else:
        raise AssertionError(kind)
    rows = np.zeros((n, 6), np.float32)
    rows[:, 0:2], rows[:, 2:4] = x1y1, x2y2
    rows[:, 4] = rng.integers(0, 80, size=n)
    rows[:, 5] = rng.random(n) < 0.1          # some crowd rows everywhere
    return rows


KINDS = ("uniform", "edges", "beyond_edges", "tiny", "huge", "cell_boundaries", "ratio_boundaries", "empty")


@pytest.mark.parametrize("input_hw", [(640, 640), (320, 640), (416, 256)])
def test_build_targets_matches_the_reference_on_many_random_box_sets(input_hw):
    rng = np.random.default_rng(sum(input_hw))
    num_entries = 0
    for trial in range(12):
        batch = [random_box_set(rng, input_hw, KINDS[(trial + i) % len(KINDS)]) for i in range(8)]
        _, expected = compare_with_reference(batch, input_hw)
        num_entries += sum(len(v) for v in expected.values())
    assert num_entries > 5000     # the comparison covered plenty of assignments


def test_cell_boundary_cases_give_the_documented_neighbours():
    """Centres exactly on a cell edge and exactly mid-cell, written out by hand (stride 8, 64x64 input).

    A 16x24 box matches all three stride-8 anchors, so each case yields the same cells for a = 0, 1, 2.
    """
    cases = {  # centre (px) -> expected (cell x, cell y) per c in (centre, x-neighbour, y-neighbour)
        (20.0, 12.0): [(2, 1), None, None],          # gx = 2.5, gy = 1.5: mid-cell, no neighbour
        (16.0, 16.0): [(2, 2), (1, 2), (2, 1)],      # gx = gy = 2.0 exactly: left and up only
        (8.0, 8.0): [(1, 1), None, None],            # gx = gy = 1.0: not > 1, and frac 0 is not > .5
        (19.0, 13.0): [(2, 1), (1, 1), (2, 2)],      # frac .375 -> left; frac .625 -> down
        (60.0, 58.0): [(7, 7), None, (7, 6)],        # gx = 7.5 mid-cell; gy = 7.25 -> up
        (54.0, 4.0): [(6, 0), (7, 0), None],         # gx = 6.75 -> right (6.75 < 7); gy = .5 none
        (59.0, 59.0): [(7, 7), (6, 7), (7, 6)],      # gx = gy = 7.375 in the last cell: left and up
    }
    for (cx, cy), expected_cells in cases.items():
        row = np.array([[cx - 8, cy - 12, cx + 8, cy + 12, 5, 0]], np.float32)
        result = build_targets([row], (64, 64), max_boxes=1)
        values, indices = result["target_values_s8"][0], result["target_indices_s8"][0]
        for a in range(3):
            for c, cell in enumerate(expected_cells):
                k = (0 * 3 + a) * 3 + c
                if cell is None:
                    assert values[k, 5] == 0 and indices[k] == 0 and not values[k].any(), (cx, cy, c)
                    continue
                assert values[k, 5] == 1, (cx, cy, c)
                assert indices[k] == a * 64 + cell[1] * 8 + cell[0], (cx, cy, c)
                np.testing.assert_allclose(values[k, :5], [cx / 8 - cell[0], cy / 8 - cell[1], 2, 3, 5])


def test_anchor_ratio_threshold_is_strict():
    """gw / aw == anchor_t exactly does not match; just below does (anchor 10x13 px at stride 8)."""
    def matched_anchor0(width_px, height_px):
        row = np.array([[100, 100, 100 + width_px, 100 + height_px, 0, 0]], np.float32)
        values = build_targets([row], (256, 256), max_boxes=1)["target_values_s8"][0]
        return bool(values[0, 5])            # k = 0: box 0, anchor 0, centre cell

    assert not matched_anchor0(40.0, 13.0)   # width ratio exactly 4
    assert matched_anchor0(39.99, 13.0)
    assert not matched_anchor0(10.0, 3.25)   # height ratio exactly 1/4
    assert matched_anchor0(10.0, 3.26)


def test_shapes_dtypes_and_empty_entries():
    batch = [np.array([[10, 10, 50, 60, 3, 0], [0, 0, 640, 640, 1, 1]], np.float32),
             np.zeros((0, 6), np.float32),
             np.array([[600, 600, 640, 640, 7, 0]], np.float32)]
    result = build_targets(batch, (640, 640), max_boxes=4)
    assert result["boxes"].shape == (3, 4, 6) and result["boxes"].dtype == np.float32
    for stride in STRIDES:
        indices, values = result[f"target_indices_s{stride}"], result[f"target_values_s{stride}"]
        assert indices.shape == (3, 4 * 9) and indices.dtype == np.int32
        assert values.shape == (3, 4 * 9, 6) and values.dtype == np.float32
        invalid = values[..., 5] == 0
        assert (indices[invalid] == 0).all() and not values[invalid].any()
        grid = 640 // stride
        assert ((indices >= 0) & (indices < 3 * grid * grid)).all()
        assert set(np.unique(values[..., 5])) <= {0.0, 1.0}
    assert result["num_dropped_boxes"] == 0
    # the crowd row is not in boxes; the background image has no valid box and no target
    np.testing.assert_array_equal(result["boxes"][0, :, 5], [1, 0, 0, 0])
    assert not result["boxes"][1].any()
    assert not any(result[f"target_values_s{s}"][1].any() for s in STRIDES)
    # the fixed shapes do not depend on the content
    empty = build_targets([np.zeros((0, 6), np.float32)] * 3, (640, 640), max_boxes=4)
    for key, value in result.items():
        if isinstance(value, np.ndarray):
            assert empty[key].shape == value.shape and empty[key].dtype == value.dtype


def test_more_than_max_boxes_keeps_the_first_and_reports_the_rest(caplog):
    rng = np.random.default_rng(1)
    many = random_box_set(rng, (640, 640), "uniform")
    while len(many) < 20:
        many = random_box_set(rng, (640, 640), "uniform")
    many[:, 5] = 0
    many[3, 5] = 1                              # a crowd row does not take a slot
    batch = [many, many[:5]]
    with caplog.at_level(logging.WARNING, logger="yolodata.pipeline.targets"):
        result, _ = compare_with_reference(batch, (640, 640), max_boxes=8)
    objects = len(many) - 1
    assert result["num_dropped_boxes"] == objects - 8
    np.testing.assert_array_equal(result["boxes"][0, :, :4], np.delete(many, 3, axis=0)[:8, :4])
    assert f"{objects - 8} box(es) dropped" in caplog.text and "max_boxes=8" in caplog.text


def test_inputs_are_not_modified():
    rng = np.random.default_rng(2)
    batch = [random_box_set(rng, (640, 640), kind) for kind in KINDS]
    copies = [b.copy() for b in batch]
    anchors = YOLOV5_ANCHORS.copy()
    build_targets(batch, (640, 640), anchors=anchors, max_boxes=16)
    for original, copy in zip(batch, copies):
        np.testing.assert_array_equal(original, copy)
    np.testing.assert_array_equal(anchors, YOLOV5_ANCHORS)


def test_exported_anchors_and_strides():
    assert STRIDES == (8, 16, 32)
    assert YOLOV5_ANCHORS.dtype == np.float32 and YOLOV5_ANCHORS.shape == (3, 3, 2)
    np.testing.assert_array_equal(YOLOV5_ANCHORS, np.asarray(ANCHORS_PX, np.float32))


@pytest.mark.parametrize("kwargs, message", [
    (dict(input_hw=(600, 640)), "multiple of every stride"),
    (dict(input_hw=640), r"input_hw must be \(height, width\)"),
    (dict(max_boxes=0), "max_boxes must be a positive integer"),
    (dict(max_boxes=2.5), "max_boxes must be a positive integer"),
    (dict(anchor_t=1.0), "anchor_t must be greater than 1"),
    (dict(anchors=np.ones((3, 3), np.float32)), "anchors must have shape"),
    (dict(labels_list=[np.zeros((2, 5), np.float32)]), r"must have shape \(N, 6\)"),
    (dict(labels_list=[np.full((1, 6), np.nan, np.float32)]), "NaN or infinite"),
])
def test_build_targets_rejects_bad_arguments(kwargs, message):
    arguments = dict(labels_list=[np.zeros((0, 6), np.float32)], input_hw=(640, 640))
    arguments.update(kwargs)
    with pytest.raises(ValueError, match=message):
        build_targets(arguments.pop("labels_list"), arguments.pop("input_hw"), **arguments)


# --- real data ------------------------------------------------------------------------------------

def test_coco128_annotations_letterboxed_to_640_match_the_reference(coco128_dir):
    """Real COCO box distributions (tiny to full-image boxes, crowd rows, images without boxes)."""
    data = json.loads((coco128_dir / "annotations" / "instances_val2017.json").read_text())
    category_index = {c["id"]: i for i, c in enumerate(sorted(data["categories"], key=lambda c: c["id"]))}
    rows_by_image = defaultdict(list)
    for ann in data["annotations"]:
        x, y, w, h = ann["bbox"]
        rows_by_image[ann["image_id"]].append([x, y, x + w, y + h, category_index[ann["category_id"]],
                                               ann["iscrowd"]])
    batch = []
    for image in sorted(data["images"], key=lambda im: im["id"]):
        rows = np.asarray(rows_by_image[image["id"]], np.float64).reshape(-1, 6)
        scale = 640 / max(image["height"], image["width"])      # letterbox to 640x640
        pad_x = (640 - image["width"] * scale) / 2
        pad_y = (640 - image["height"] * scale) / 2
        rows[:, [0, 2]] = rows[:, [0, 2]] * scale + pad_x
        rows[:, [1, 3]] = rows[:, [1, 3]] * scale + pad_y
        batch.append(rows.astype(np.float32))
    assert sum(len(b) == 0 for b in batch) == 2 and sum(int(b[:, 5].sum()) for b in batch) == 10
    _, expected = compare_with_reference(batch, (640, 640), max_boxes=64)
    assert sum(len(v) for v in expected.values()) > 2000
