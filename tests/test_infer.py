"""Inference on image files: finding inputs, letterbox geometry and its inverse, drawing, the json, the CLI."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path, PurePosixPath

import cv2
import numpy as np
import pytest

from yolodata.augment.letterbox import letterbox_matrix
from yolodata.augment.letterbox import to_original_pixels
from yolodata.boxes import transform_boxes
from yolodata.rng import keyed_rng
from detection_stand_ins import rectangle_image, red_extent_predictor
from yolomodel.infer import (DETECTIONS_NAME, Detector, InferenceError, Progress, check_class_count,
                             class_names_from, check_detection_settings, detections_document, letterbox_input,
                             output_names, run_inference, write_detections_json)
from yolomodel.sources import find_sources as find_images
from yolomodel.sources import read_image

PROJECT_ROOT = Path(__file__).resolve().parents[1]
# --- geometry ---------------------------------------------------------------------------------

@pytest.mark.parametrize("orig_hw", [(480, 640), (640, 360), (100, 60), (33, 500)])
def test_boxes_round_trip_through_the_letterbox(orig_hw):
    testing_shape = 256
    height, width = orig_hw
    rng = keyed_rng(0, height, width, purpose="test_infer_boxes")
    corners = np.sort(rng.uniform(0, 1, (20, 2, 2)), axis=1)
    original = np.zeros((20, 6), np.float32)
    original[:, [0, 2]] = corners[:, :, 0] * width
    original[:, [1, 3]] = corners[:, :, 1] * height
    original[:, 4] = rng.uniform(0, 1, 20)
    original[:, 5] = rng.integers(0, 5, 20)
    matrix, scale, pad = letterbox_matrix(orig_hw, (testing_shape, testing_shape), scaleup=False)
    letterboxed = transform_boxes(original, matrix)
    back = to_original_pixels(letterboxed, scale, pad, orig_hw)
    np.testing.assert_allclose(back[:, :4], original[:, :4], atol=1e-3 * max(1.0, 1 / scale))
    np.testing.assert_array_equal(back[:, 4:], original[:, 4:])
    _, input_scale, input_pad = letterbox_input(np.zeros(orig_hw + (3,), np.uint8), testing_shape)
    assert (input_scale, tuple(input_pad)) == (scale, tuple(pad))
    assert scale <= 1.0  # small images are not enlarged, as in the eval pipeline


def test_boxes_beyond_the_picture_are_clipped_to_it():
    # a 100 x 200 (h x w) image in 256: scale 1, pad (28, 78)
    boxes = np.array([[0, 60, 256, 200, 0.5, 2]], np.float32)
    back = to_original_pixels(boxes, 1.0, (28, 78), (100, 200))
    np.testing.assert_allclose(back[0], [0, 0, 200, 100, 0.5, 2])


def test_detector_maps_a_found_object_back_to_its_original_pixels():
    box = (210, 90, 330, 180)
    image = rectangle_image(300, 450, box)
    calls = []
    detector = Detector(red_extent_predictor(calls=calls), 160, conf_thresh=0.25)
    detections = detector(image)
    network_input = calls[0]
    assert network_input.dtype == np.uint8 and network_input.shape == (1, 160, 160, 3)
    # scale 160/450: the picture is 107 rows high, padded with gray 114 above and below
    assert np.all(network_input[0, :20] == 114) and np.all(network_input[0, -20:] == 114)
    assert detections.shape == (1, 6)
    scale = 160 / 450
    # the red extent in the input is exact to a pixel, so back in the original to 1 / scale pixels
    np.testing.assert_allclose(detections[0, :4], box, atol=1.0 / scale + 0.5)
    assert detections[0, 4] == pytest.approx(0.9) and detections[0, 5] == 1
    assert image[0, 0].tolist() == [90, 90, 90]  # the caller's image is untouched


def test_bad_settings_are_refused_with_the_flag_to_fix():
    with pytest.raises(InferenceError, match="testing_shape"):
        check_detection_settings(100, 0.25, 0.45, 300)
    with pytest.raises(InferenceError, match="conf_thresh"):
        check_detection_settings(640, 1.5, 0.45, 300)
    with pytest.raises(InferenceError, match="max_det"):
        check_detection_settings(640, 0.25, 0.45, 0)
    with pytest.raises(InferenceError, match="names 2 classes but the network has 3"):
        check_class_count(["a", "b"], 3, "--names n.txt")


# --- inputs and outputs -----------------------------------------------------------------------

def write_jpeg(path: Path, image: np.ndarray) -> Path:
    """Write ``image`` JPEG-encoded under ``path`` whatever its suffix (PNG for a .png or .PNG name)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    ok, encoded = cv2.imencode(".png" if path.suffix.lower() == ".png" else ".jpg", image)
    assert ok
    path.write_bytes(encoded.tobytes())
    return path


def test_find_images_walks_folders_and_reports_what_it_cannot_use(tmp_path):
    picture = rectangle_image(40, 60, (5, 5, 20, 20))
    folder = tmp_path / "photos"
    write_jpeg(folder / "b.jpg", picture)
    write_jpeg(folder / "a.PNG", picture)
    write_jpeg(folder / "sub" / "c.bmp", picture)
    write_jpeg(folder / ".hidden.jpg", picture)
    write_jpeg(folder / ".cache" / "d.jpg", picture)
    (folder / "notes.txt").write_text("not an image")
    (tmp_path / "empty").mkdir()
    single = write_jpeg(tmp_path / "single.weird", picture)  # a file given by name is used whatever its suffix

    sources, failures = find_images([folder, single, folder / "b.jpg", tmp_path / "missing.jpg", tmp_path / "empty"])
    assert [str(s.relative) for s in sources] == ["a.PNG", "b.jpg", "sub/c.bmp", "single.weird"]
    assert [Path(f.file).name for f in failures] == ["missing.jpg", "empty"]
    assert "does not exist" in failures[0].reason and "no image files" in failures[1].reason


def test_output_names_never_collide():
    relatives = [PurePosixPath(p) for p in ("x.jpg", "x.png", "a/x.jpg", "x.jpg", "y", "y.jpg")]
    names = output_names(relatives)
    assert names == ["x_jpg.jpg", "x_png.jpg", "a/x.jpg", "x_jpg_2.jpg", "y.jpg", "y_jpg.jpg"]
    assert output_names([PurePosixPath("sub/photo.jpeg")]) == ["sub/photo.jpg"]


def test_run_inference_skips_unreadable_images_and_writes_the_rest(tmp_path, quirks_dir):
    box = (30, 20, 90, 60)
    folder = tmp_path / "in"
    write_jpeg(folder / "good.jpg", rectangle_image(120, 160, box))
    (folder / "empty.jpg").write_bytes(b"")
    good_bytes = (folder / "good.jpg").read_bytes()
    (folder / "truncated.jpg").write_bytes(good_bytes[: len(good_bytes) // 2])
    (folder / "text.png").write_text("this is not a picture")
    exif = quirks_dir / "mmcv" / "color_exif.jpg"  # stored 400 x 300, shown (EXIF) 300 wide x 400 high
    sources, failures = find_images([folder, exif])
    output_dir = tmp_path / "out"
    reported = []

    class Recorder(Progress):
        def failure(self, failure):
            reported.append(failure)

    report = run_inference(sources, Detector(red_extent_predictor(), 128, conf_thresh=0.25), output_dir,
                           class_names=["circle", "square", "cross"], category_ids=[1, 3, 5],
                           progress=Recorder())
    assert failures == []
    assert sorted(Path(f.file).name for f in report.failures) == ["empty.jpg", "text.png", "truncated.jpg"]
    reasons = {Path(f.file).name: f.reason for f in report.failures}
    assert "empty" in reasons["empty.jpg"] and "truncated" in reasons["truncated.jpg"]
    assert "decode" in reasons["text.png"]
    assert reported == report.failures

    entries = {entry["output"]: entry for entry in report.images}
    assert sorted(entries) == ["color_exif.jpg", "good.jpg"]
    good = entries["good.jpg"]
    assert (good["width"], good["height"]) == (160, 120)
    [detection] = good["detections"]
    assert detection["class_index"] == 1 and detection["class_name"] == "square" and detection["category_id"] == 3
    np.testing.assert_allclose(detection["bbox"], box, atol=1.5)
    assert (entries["color_exif.jpg"]["width"], entries["color_exif.jpg"]["height"]) == (300, 400)
    drawn = cv2.imread(str(output_dir / "good.jpg"))
    assert drawn.shape == (120, 160, 3)
    assert not np.array_equal(drawn, cv2.imread(str(folder / "good.jpg")))  # the box was drawn
    assert cv2.imread(str(output_dir / "color_exif.jpg")).shape == (400, 300, 3)

    path = write_detections_json(detections_document(report, model={"yolov5_version": "test"}, settings={},
                                                     class_names=["circle", "square", "cross"],
                                                     extra_failures=failures), output_dir)
    document = json.loads(path.read_text(encoding="utf-8"))
    assert path.name == DETECTIONS_NAME
    assert document["images"] == report.images
    assert len(document["failed"]) == 3 and set(document["failed"][0]) == {"file", "reason"}


def test_outputs_may_not_overwrite_the_inputs(tmp_path):
    write_jpeg(tmp_path / "a.jpg", rectangle_image(40, 40, (1, 1, 5, 5)))
    sources, _ = find_images([tmp_path])
    with pytest.raises(InferenceError, match="overwrite the input"):
        run_inference(sources, Detector(red_extent_predictor(), 64), tmp_path)
    assert read_image(tmp_path / "a.jpg").shape == (40, 40, 3)


def test_read_image_gives_three_channel_bgr_for_gray_alpha_and_cmyk(quirks_dir):
    for name in ("mmcv/gray_alpha.png", "mmcv/grayscale.jpg", "pillow/pil_sample_cmyk.jpg"):
        image = read_image(quirks_dir / name)
        assert image.dtype == np.uint8 and image.ndim == 3 and image.shape[2] == 3, name


# --- the command line with a real (random) network --------------------------------------------

@pytest.fixture(scope="module")
def synthetic_setup(tmp_path_factory):
    """A random yolov5n checkpoint for the 5 synthetic classes, 3 synthetic images and their MindRecord."""
    from yolodata.convert import convert_coco
    from yolodata.synthetic import make_synthetic_coco
    from yolomodel.network import create_yolov5
    from yolomodel.checkpoint.format import save_checkpoint_atomic

    root = tmp_path_factory.mktemp("infer_cli")
    coco = make_synthetic_coco(root / "coco", num_images=3, image_size=(96, 128), val_fraction=0.0,
                               background_fraction=0.0, num_workers=1)
    convert_coco(coco.image_dir, coco.train_json, root / "mindrecord", num_workers=1)
    checkpoint = save_checkpoint_atomic(root / "yolov5n.ckpt", create_yolov5("yolov5n", 5),
                                        {"yolov5_version": "yolov5n", "num_classes": 5, "training_shape": 128})
    return root, coco, checkpoint


def run_cli(*args):
    return subprocess.run([sys.executable, str(PROJECT_ROOT / "tools" / "infer.py"), *map(str, args)],
                          capture_output=True, text=True, cwd=PROJECT_ROOT, timeout=300)


@pytest.mark.slow
def test_cli_detects_draws_and_names_classes_from_the_manifest(synthetic_setup):
    root, coco, checkpoint = synthetic_setup
    (root / "broken.jpg").write_bytes(b"\xff\xd8 not really a jpeg")
    output_dir = root / "out"
    result = run_cli("--pretrained", checkpoint, "--images", coco.image_dir, root / "broken.jpg",
                     "--output_dir", output_dir, "--testing_shape", 128, "--conf_thresh", 0.001, "--max_det", 5,
                     "--mindrecord", root / "mindrecord")
    assert result.returncode == 0, result.stderr
    assert "Traceback" not in result.stderr
    assert "broken.jpg" in result.stderr and "3 picture(s), 3 frame(s) processed" in result.stdout
    document = json.loads((output_dir / DETECTIONS_NAME).read_text(encoding="utf-8"))
    assert document["model"]["yolov5_version"] == "yolov5n" and document["model"]["num_classes"] == 5
    assert document["class_names"] == ["circle", "rectangle", "triangle", "cross", "ring"]
    assert [Path(entry["file"]).name for entry in document["images"]] == ["000001.jpg", "000002.jpg", "000003.jpg"]
    assert [Path(f["file"]).name for f in document["failed"]] == ["broken.jpg"]
    detections = [d for entry in document["images"] for d in entry["detections"]]
    assert detections, "a random network at conf_thresh 0.001 detects something"
    for entry in document["images"]:
        assert len(entry["detections"]) <= 5
        image = cv2.imread(str(output_dir / entry["output"]))
        assert image.shape[:2] == (entry["height"], entry["width"])
        for detection in entry["detections"]:
            x1, y1, x2, y2 = detection["bbox"]
            assert 0 <= x1 <= x2 <= entry["width"] and 0 <= y1 <= y2 <= entry["height"]
            assert detection["category_id"] == [1, 3, 5, 7, 9][detection["class_index"]]
            assert detection["class_name"] == document["class_names"][detection["class_index"]]
            assert detection["score"] >= 0.001


def test_cli_exits_2_when_no_image_can_be_read(synthetic_setup, tmp_path):
    _, _, checkpoint = synthetic_setup
    (tmp_path / "a.jpg").write_bytes(b"")
    result = run_cli("--pretrained", checkpoint, "--images", tmp_path / "a.jpg", tmp_path / "nothing.png",
                     "--output_dir", tmp_path / "out", "--testing_shape", 64)
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    assert "a.jpg" in result.stderr and "nothing.png" in result.stderr and "does not exist" in result.stderr
    assert "error:" in result.stderr
    assert os.path.isfile(tmp_path / "out" / DETECTIONS_NAME)  # the failures are in the json too


def test_class_name_sources_are_checked(tmp_path):
    names_file = tmp_path / "names.txt"
    names_file.write_text("cat\n\ndog\n", encoding="utf-8")
    names, ids, _ = class_names_from(names_file=names_file)
    assert (names, ids) == (["cat", "dog"], None)
    with pytest.raises(InferenceError, match="manifest.json is missing"):
        class_names_from(mindrecord=tmp_path)
    (tmp_path / "blank.txt").write_text("\n", encoding="utf-8")
    with pytest.raises(InferenceError, match="no class names"):
        class_names_from(names_file=tmp_path / "blank.txt")
    assert class_names_from() == (None, None, None)
