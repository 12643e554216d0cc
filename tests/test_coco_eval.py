"""yolomodel.coco_eval: mapping back to original pixels, results json, pycocotools scoring."""
from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest

from yolodata.augment.letterbox import letterbox_matrix, to_original_pixels
from yolodata.rng import keyed_rng
from yolomodel.coco_eval import (CocoEvalError, batch_results, entry_problem, format_summary,
                                 load_ground_truth, score_detections, score_results,
                                 write_results_json)

GT_NAME = "instances_val2014_100.json"
FAKE_RESULTS_NAME = "instances_val2014_fakebbox100_results.json"
REFERENCE_OUTPUT_NAME = "val2014_fake_eval_res.txt"
SUMMARY_LINE = re.compile(r"^ Average (Precision|Recall) .* = (-?\d\.\d{3})$")


def reference_bbox_lines(cocoapi_dir: Path) -> list[str]:
    """The 12 summary lines of the bbox section of cocoapi's own printed result."""
    text = (cocoapi_dir / REFERENCE_OUTPUT_NAME).read_text()
    section = text.split("type=bbox", 1)[1].split("type=keypoints", 1)[0]
    lines = [line for line in section.splitlines() if SUMMARY_LINE.match(line)]
    assert len(lines) == 12
    return lines


def test_fake_results_score_exactly_as_cocoapi_printed(cocoapi_dir):
    scores = score_results(cocoapi_dir / GT_NAME, cocoapi_dir / FAKE_RESULTS_NAME)
    expected_lines = reference_bbox_lines(cocoapi_dir)
    assert scores.text.splitlines() == expected_lines
    expected_numbers = [float(SUMMARY_LINE.match(line).group(2)) for line in expected_lines]
    assert np.round(scores.stats, 3).tolist() == expected_numbers
    assert scores.map50_95 == pytest.approx(0.5045806987249628, abs=1e-12)
    assert scores.map50 == pytest.approx(0.697, abs=5e-4)


def test_results_given_as_a_list_score_the_same(cocoapi_dir):
    entries = json.loads((cocoapi_dir / FAKE_RESULTS_NAME).read_text())
    before = json.dumps(entries)
    scores = score_results(cocoapi_dir / GT_NAME, entries)
    assert scores.map50_95 == pytest.approx(0.5045806987249628, abs=1e-12)
    assert json.dumps(entries) == before  # pycocotools adds keys to what it gets: not to ours


def test_ground_truth_boxes_as_detections_score_one(cocoapi_dir):
    document = json.loads((cocoapi_dir / GT_NAME).read_text())
    entries = [{"image_id": a["image_id"], "category_id": a["category_id"], "bbox": a["bbox"], "score": 1.0}
               for a in document["annotations"] if not a["iscrowd"]]
    scores = score_results(cocoapi_dir / GT_NAME, entries)
    assert scores.stats[0] == pytest.approx(1.0) and scores.stats[1] == pytest.approx(1.0)


def test_no_detections_scores_zero_without_crashing(cocoapi_dir):
    scores = score_detections(load_ground_truth(cocoapi_dir / GT_NAME), [])
    assert scores.stats.tolist() == [0.0] * 12
    assert scores.text.count("= 0.000") == 12


def test_empty_results_file_scores_zero(cocoapi_dir, tmp_path):
    path = write_results_json([], tmp_path / "empty.json")
    assert score_results(cocoapi_dir / GT_NAME, path).stats.tolist() == [0.0] * 12


def test_format_summary_is_cocoapi_reference_format():
    text = format_summary([0.5, 0.6, 0.7, -1, 0.1, 0.2, 0.3, 0.4, 0.45, 0.05, 0.15, 0.25])
    lines = text.splitlines()
    assert lines[0] == " Average Precision (AP) @[ IoU=0.50:0.95 | area=   all | maxDets=100 ] = 0.500"
    assert lines[3] == " Average Precision (AP) @[ IoU=0.50:0.95 | area= small | maxDets=100 ] = -1.000"
    assert lines[6] == " Average Recall    (AR) @[ IoU=0.50:0.95 | area=   all | maxDets=  1 ] = 0.300"
    with pytest.raises(ValueError, match="12"):
        format_summary([0.5])


# ---------------------------------------------------------------------------------------------
# Bad files
# ---------------------------------------------------------------------------------------------

def _write(tmp_path, name, content) -> Path:
    path = tmp_path / name
    path.write_text(content if isinstance(content, str) else json.dumps(content))
    return path


GOOD = {"image_id": 42, "category_id": 18, "bbox": [1.0, 2.0, 3.0, 4.0], "score": 0.5}


@pytest.mark.parametrize("content, words", [
    ("not json at all", "cannot be read as JSON"),
    ({"annotations": [], "images": []}, "ground-truth"),
    ("42", "JSON int, not a list"),
    ([GOOD, [1, 2]], "entry #1 is a list"),
    ([{k: v for k, v in GOOD.items() if k != "bbox"}], r"lacks \['bbox'\]"),
    ([dict(GOOD, bbox=[1, 2, 3])], "four finite numbers"),
    ([dict(GOOD, bbox=[1, 2, -3, 4])], "negative width"),
    ([dict(GOOD, score="high")], "score 'high'"),
    ([dict(GOOD, image_id="42")], "image_id '42'"),
    ([dict(GOOD, category_id=18.5)], "category_id 18.5"),
    ([GOOD, dict(GOOD, image_id=123456789)], "image id.*123456789.*another dataset"),
    ([dict(GOOD, category_id=12)], r"category id\(s\) \[12\]"),
])
def test_bad_results_file_is_explained(cocoapi_dir, tmp_path, content, words):
    path = _write(tmp_path, "dets.json", content)
    with pytest.raises(CocoEvalError, match=words) as info:
        score_results(cocoapi_dir / GT_NAME, path)
    assert str(path) in str(info.value)


def test_missing_or_bad_ground_truth_is_explained(cocoapi_dir, tmp_path):
    with pytest.raises(CocoEvalError, match="does not exist"):
        score_results(tmp_path / "nope.json", cocoapi_dir / FAKE_RESULTS_NAME)
    with pytest.raises(CocoEvalError, match="not a COCO instances json"):
        score_results(_write(tmp_path, "gt.json", [GOOD]), cocoapi_dir / FAKE_RESULTS_NAME)
    with pytest.raises(CocoEvalError, match="no images"):
        score_results(_write(tmp_path, "gt2.json", {"images": [], "annotations": [], "categories": []}), [])
    with pytest.raises(CocoEvalError, match="does not exist"):
        score_results(cocoapi_dir / GT_NAME, tmp_path / "missing-results.json")


@pytest.mark.parametrize("change, words", [
    (lambda d: d["images"][0].update(id=1.5), 'image 1.5 \\(a.jpg\\)'),
    (lambda d: d["images"][0].pop("id"), "image null \\(a.jpg\\)"),
    (lambda d: d["categories"][0].update(id="7"), 'category #0 has id "7".*\\(7, not "7"\\)'),
    (lambda d: d["annotations"].append("box"), "annotations have a image_id .*annotation #1 is not an object"),
    (lambda d: d["annotations"][0].update(category_id=None), "annotation #0 has category_id null"),
])
def test_ground_truth_ids_that_are_not_integers_are_named(tmp_path, change, words):
    document = {"images": [{"id": 1, "width": 100, "height": 80, "file_name": "a.jpg"}],
                "annotations": [{"id": 1, "image_id": 1, "category_id": 7, "bbox": [10, 10, 30, 20]}],
                "categories": [{"id": 7, "name": "thing"}]}
    change(document)
    ann_file = _write(tmp_path, "gt.json", document)
    with pytest.raises(CocoEvalError, match=f"ground-truth file {re.escape(str(ann_file))}: .*{words}"):
        load_ground_truth(ann_file)


def test_ground_truth_without_area_or_iscrowd_is_scored(tmp_path):
    document = {"images": [{"id": 1, "width": 100, "height": 80, "file_name": "a.jpg"}],
                "annotations": [{"id": 1, "image_id": 1, "category_id": 7, "bbox": [10, 10, 30, 20]}],
                "categories": [{"id": 7, "name": "thing"}]}
    ann_file = _write(tmp_path, "gt.json", document)
    scores = score_results(ann_file, [{"image_id": 1, "category_id": 7, "bbox": [10, 10, 30, 20], "score": 0.9}])
    assert scores.stats[0] == pytest.approx(1.0)
    assert json.loads(ann_file.read_text()) == document


def test_entry_problem_accepts_a_good_entry():
    assert entry_problem(GOOD) is None
    assert entry_problem(dict(GOOD, bbox=[1, 2, float("nan"), 4])) is not None
    assert entry_problem(dict(GOOD, image_id=True)) is not None


# ---------------------------------------------------------------------------------------------
# Mapping back to original pixels and results entries
# ---------------------------------------------------------------------------------------------

def test_letterboxed_boxes_map_back_to_original_pixels():
    for case in range(30):
        rng = keyed_rng(3, case, purpose="test-unletterbox")
        height, width = (int(v) for v in rng.integers(20, 1500, size=2))
        _, scale, pad = letterbox_matrix((height, width), (640, 640), scaleup=False)
        xy1 = rng.uniform(0, [width, height], size=(12, 2))
        xy2 = np.minimum(xy1 + rng.uniform(1, 300, size=(12, 2)), [width, height])
        original = np.concatenate([xy1, xy2, rng.uniform(0, 1, (12, 1)), rng.integers(0, 5, (12, 1))], axis=1)
        letterboxed = original.copy()
        letterboxed[:, [0, 2]] = original[:, [0, 2]] * scale + pad[0]
        letterboxed[:, [1, 3]] = original[:, [1, 3]] * scale + pad[1]
        letterboxed = letterboxed.astype(np.float32)
        before = letterboxed.copy()
        mapped = to_original_pixels(letterboxed, np.float32(scale), np.float32(pad), (height, width))
        np.testing.assert_allclose(mapped[:, :4], original[:, :4], atol=1e-3 * max(1.0, 1 / scale))
        np.testing.assert_array_equal(mapped[:, 4:], letterboxed[:, 4:])
        np.testing.assert_array_equal(letterboxed, before)


def test_boxes_are_clipped_to_the_original_image():
    detections = np.asarray([[-30, -5, 700, 300, 0.9, 0]], np.float32)
    mapped = to_original_pixels(detections, 0.5, (20, 40), (400, 600))
    np.testing.assert_allclose(mapped[0, :4], [0, 0, 600, 400])


def test_batch_results_maps_ids_and_skips_padding_rows():
    category_ids = np.asarray([1, 3, 5, 7, 9])
    detections = [np.asarray([[110, 60, 130, 100, 0.87654321, 4], [0, 0, 10, 10, 0.5, 0]], np.float32),
                  np.asarray([[1, 1, 2, 2, 0.9, 1]], np.float32),  # padding row: skipped
                  np.zeros((0, 6), np.float32)]
    results = batch_results(detections, image_id=np.asarray([17, -1, 23]),
                            orig_hw=np.asarray([[300, 400], [100, 200], [50, 50]]),
                            scale=np.asarray([0.5, 0.5, 1.0], np.float32),
                            pad=np.asarray([[10, 20], [10, 20], [0, 0]], np.float32), category_ids=category_ids)
    assert results == [
        {"image_id": 17, "category_id": 9, "bbox": [200.0, 80.0, 40.0, 80.0], "score": 0.87654},
        {"image_id": 17, "category_id": 1, "bbox": [0.0, 0.0, 0.0, 0.0], "score": 0.5},
    ]
    json.dumps(results)  # plain Python types only
    with pytest.raises(ValueError, match="class index 5 .* 5 categories"):
        batch_results([np.asarray([[0, 0, 1, 1, 0.5, 5]], np.float32)], [1], [[10, 10]], [1.0], [[0, 0]],
                      category_ids)
    with pytest.raises(ValueError, match="one detection array per image"):
        batch_results(detections[:2], [1, 2, 3], [[1, 1]] * 3, [1] * 3, [[0, 0]] * 3, category_ids)


def test_results_json_written_atomically(tmp_path):
    target = tmp_path / "sub" / "results.json"
    write_results_json([GOOD], target)
    write_results_json([GOOD, GOOD], target)  # replaces the earlier file
    assert json.loads(target.read_text()) == [GOOD, GOOD]
    assert sorted(p.name for p in target.parent.iterdir()) == ["results.json"]
    with pytest.raises(TypeError):
        write_results_json([{"x": object()}], target)
    assert json.loads(target.read_text()) == [GOOD, GOOD]  # a failed write leaves the old file
    assert sorted(p.name for p in target.parent.iterdir()) == ["results.json"]
