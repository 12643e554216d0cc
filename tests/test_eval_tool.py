"""yolomodel.evaluation, the eval command (yolomodel.cli.eval, tools/eval.py) and scripts/run_eval.sh:
scoring a results file, the model chain, checkpoints, ranks."""
from __future__ import annotations

import json
import os
import re
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from yolodata.convert import convert_coco
from yolodata.pipeline import create_eval_dataset
from yolodata.synthetic import make_synthetic_coco
from yolomodel import evaluation
from yolomodel.class_report import REPORT_FILES
from yolomodel.cli import eval as eval_cli
from yolomodel.coco_eval import entry_problem, load_ground_truth, score_detections
from yolomodel.checkpoint.loading import ModelLoadError
from yolomodel.nms import NmsOptions

PROJECT_ROOT = Path(__file__).resolve().parents[1]
EVAL_SCRIPT = PROJECT_ROOT / "tools" / "eval.py"
RUN_EVAL_SH = PROJECT_ROOT / "scripts" / "run_eval.sh"
SUMMARY_NUMBER = re.compile(r"^ Average (?:Precision|Recall) .* = (-?\d\.\d{3})$", re.M)
SYNTHETIC_IDS = {1, 3, 5, 7, 9}


def run_tool(*args, env=None, timeout=300):
    return subprocess.run([sys.executable, str(EVAL_SCRIPT), *map(str, args)], capture_output=True,
                          text=True, cwd=PROJECT_ROOT, env=env, timeout=timeout)


def summary_numbers(text: str) -> list[float]:
    return [float(v) for v in SUMMARY_NUMBER.findall(text)]


# ---------------------------------------------------------------------------------------------
# Mode (a): a results file, no model
# ---------------------------------------------------------------------------------------------

def test_cli_prints_cocoapi_reference_for_its_fake_results(cocoapi_dir):
    done = run_tool("--ann_file", cocoapi_dir / "instances_val2014_100.json",
                    "--results_file", cocoapi_dir / "instances_val2014_fakebbox100_results.json")
    assert done.returncode == 0, done.stderr
    reference = (cocoapi_dir / "val2014_fake_eval_res.txt").read_text()
    bbox_section = reference.split("type=bbox", 1)[1].split("type=keypoints", 1)[0]
    expected = summary_numbers(bbox_section)
    assert len(expected) == 12
    assert summary_numbers(done.stdout) == expected
    assert expected[0] == 0.505
    lines = done.stdout.splitlines()
    assert lines[0] == eval_cli.RESULT_HEADER
    assert lines[1:13] == [line for line in bbox_section.splitlines() if SUMMARY_NUMBER.match(line)]
    assert lines[13].startswith("testing cost time ")
    # then the per-class table (its "all" row repeats the mAPs) and the worst classes; no files without --output_dir
    assert lines[14].startswith("per-class results: P and R at confidence ")
    all_row = lines[16].split()
    assert all_row[0] == "all" and [float(v) for v in all_row[-2:]] == [expected[1], expected[0]]
    assert lines[-1].startswith("lowest AP@0.5:0.95 (5 of ")


def test_cli_writes_the_per_class_report_into_output_dir(cocoapi_dir, tmp_path):
    done = run_tool("--ann_file", cocoapi_dir / "instances_val2014_100.json", "--results_file",
                    cocoapi_dir / "instances_val2014_fakebbox100_results.json", "--output_dir", tmp_path / "report")
    assert done.returncode == 0, done.stderr
    assert sorted(p.name for p in (tmp_path / "report").iterdir()) == sorted(REPORT_FILES)
    assert f"per-class report written to {tmp_path / 'report'}" in done.stdout


def test_main_user_errors_exit_2_with_a_message(cocoapi_dir, tmp_path, capsys):
    ground_truth = cocoapi_dir / "instances_val2014_100.json"
    assert eval_cli.main(["--ann_file", str(ground_truth), "--results_file", str(ground_truth)]) == 2
    captured = capsys.readouterr()
    assert captured.err.startswith("error: results file") and str(ground_truth) in captured.err
    assert "not a COCO results json" in captured.err and captured.out == ""
    bad = tmp_path / "dets.json"
    bad.write_text(json.dumps([{"image_id": 1, "category_id": 1, "bbox": [0, 0, 1, 1], "score": 0.5}]))
    assert eval_cli.main(["--ann_file", str(ground_truth), "--results_file", str(bad)]) == 2
    assert "image id(s) that the ground truth does not have" in capsys.readouterr().err
    assert eval_cli.main(["--ann_file", str(tmp_path / "gt.json"), "--results_file", str(bad)]) == 2
    assert "does not exist" in capsys.readouterr().err
    with pytest.raises(SystemExit) as info:  # neither mode's arguments
        eval_cli.main(["--ann_file", str(ground_truth)])
    assert info.value.code == 2
    assert "--results_file" in capsys.readouterr().err


def ground_truth_with_string_ids(cocoapi_dir: Path, folder: Path, num_images: int = 3) -> tuple[Path, Path, list]:
    """The first images of cocoapi's real val2014 ground truth with their ids written as strings (as some
    exporters write them), and cocoapi's real results for those images (integer ids, as pycocotools
    writes them). Returns (ground-truth file, results file, the string ids)."""
    document = json.loads((cocoapi_dir / "instances_val2014_100.json").read_text())
    images = document["images"][:num_images]
    kept = {image["id"] for image in images}
    string_ids = [str(image["id"]) for image in images]
    document["images"] = [dict(image, id=str(image["id"])) for image in images]
    document["annotations"] = [dict(a, image_id=str(a["image_id"])) for a in document["annotations"]
                               if a["image_id"] in kept]
    results = [r for r in json.loads((cocoapi_dir / "instances_val2014_fakebbox100_results.json").read_text())
               if r["image_id"] in kept]
    assert document["annotations"] and results
    ground_truth, results_file = folder / "gt_string_ids.json", folder / "dets.json"
    ground_truth.write_text(json.dumps(document))
    results_file.write_text(json.dumps(results))
    return ground_truth, results_file, string_ids


def test_string_image_ids_in_the_ground_truth_are_named_not_blamed_on_the_results(cocoapi_dir, tmp_path, capsys):
    ground_truth, results_file, string_ids = ground_truth_with_string_ids(cocoapi_dir, tmp_path)
    assert eval_cli.main(["--ann_file", str(ground_truth), "--results_file", str(results_file)]) == 2
    error = capsys.readouterr().err
    assert error.startswith(f"error: ground-truth file {ground_truth}: 3 of its 3 images have an id that is not an "
                            f"integer")
    first = json.loads(ground_truth.read_text())["images"][0]
    assert f'image "{string_ids[0]}" ({first["file_name"]})' in error   # the id as written, with its file
    assert f'write the ids as JSON numbers ({string_ids[0]}, not "{string_ids[0]}")' in error
    assert str(results_file) not in error and "does not have" not in error and "Traceback" not in error

    # images fixed, annotations still pointing at "1146": named as well
    document = json.loads(ground_truth.read_text())
    document["images"] = [dict(image, id=int(image["id"])) for image in document["images"]]
    ground_truth.write_text(json.dumps(document))
    assert eval_cli.main(["--ann_file", str(ground_truth), "--results_file", str(results_file)]) == 2
    error = capsys.readouterr().err
    assert f"annotations have a image_id that is not an integer (first: annotation #0 has image_id " \
           f'"{document["annotations"][0]["image_id"]}")' in error


# ---------------------------------------------------------------------------------------------
# A tiny converted synthetic val set and random yolov5n checkpoints
# ---------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def val_dir(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("eval-synthetic")
    made = make_synthetic_coco(root / "coco", num_images=40, seed=3, image_size=((90, 200), (90, 200)))
    out = root / "val"
    convert_coco(made.image_dir, made.val_json, out, shard_num=2)
    return out


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory) -> dict:
    """Random yolov5n checkpoints: 'meta' (5 classes, with metadata), 'ema' (ema.* differing from the
    raw weights), 'classes3' (3 classes, no metadata), 'unrelated' (not a YOLOv5)."""
    import mindspore as ms
    from mindspore import nn

    from yolomodel.network import create_yolov5

    folder = tmp_path_factory.mktemp("eval-ckpt")
    net = create_yolov5("yolov5n", 5)
    paths = {name: folder / f"{name}.ckpt" for name in ("meta", "ema", "classes3", "unrelated")}
    ms.save_checkpoint(net, str(paths["meta"]),
                       append_dict={"yolov5_version": "yolov5n", "num_classes": 5})
    raw = [{"name": p.name, "data": p} for p in net.get_parameters()]
    ema = [{"name": "ema." + p.name, "data": ms.Tensor(p.asnumpy() + 0.25)} for p in net.get_parameters()]
    ms.save_checkpoint(raw + ema, str(paths["ema"]))
    ms.save_checkpoint(create_yolov5("yolov5n", 3), str(paths["classes3"]))
    ms.save_checkpoint(nn.Dense(3, 2), str(paths["unrelated"]))
    return paths


def load_for(checkpoint, num_categories, version=None, num_classes=None):
    """(InferenceNet, description) of ``checkpoint`` for a dataset of ``num_categories``."""
    loaded = evaluation.load_model_for_dataset(checkpoint, num_categories, version=version, num_classes=num_classes)
    return loaded.network, loaded.describe()


def test_ema_weights_are_preferred(checkpoints):
    import mindspore as ms

    inference_net, description = load_for(checkpoints["ema"], 5, version="yolov5n")
    assert "EMA weights" in description
    stored = ms.load_checkpoint(str(checkpoints["ema"]))
    loaded = {name: p.asnumpy() for name, p in inference_net.net.parameters_and_names()}
    weight = "backbone.stem.conv.conv.weight"
    np.testing.assert_array_equal(loaded[weight], stored["ema." + weight].asnumpy())
    moving = next(name for name in loaded if "moving_mean" in name)
    np.testing.assert_array_equal(loaded[moving], stored["ema." + moving].asnumpy())

    _, description = load_for(checkpoints["meta"], 5)
    assert description.startswith("yolov5n, 5 classes, weights (no EMA")  # version from the metadata


@pytest.mark.parametrize("name, args, classes, words", [
    ("classes3", dict(version="yolov5n"), 5, "detection heads for 3 classes, not 5"),
    ("classes3", dict(), 3, "pass --yolov5_version"),        # a plain weights file names no size
    ("meta", dict(version="yolov5s"), 5, "holds a yolov5n"),
    ("meta", dict(num_classes=4), 4, "trained for 5 classes"),
    ("meta", dict(), 80, "the dataset has 80 categories"),
    ("unrelated", dict(version="yolov5n"), 5, "not a YOLOv5 checkpoint of this project"),
])
def test_checkpoint_mismatch_is_explained(checkpoints, name, args, classes, words):
    with pytest.raises(ModelLoadError, match=words):
        load_for(checkpoints[name], classes, **args)


def test_unreadable_checkpoint_is_explained(tmp_path):
    junk = tmp_path / "junk.ckpt"
    junk.write_bytes(bytes(range(256)) * 4)
    with pytest.raises(ModelLoadError, match="cannot read checkpoint"):
        load_for(junk, 5)
    with pytest.raises(ModelLoadError, match="does not exist"):
        load_for(tmp_path / "missing.ckpt", 5)


def test_cli_wrong_class_count_exits_2_without_traceback(val_dir, checkpoints):
    done = run_tool("--mindrecord", val_dir, "--pretrained", checkpoints["classes3"],
                    "--yolov5_version", "yolov5n", "--testing_shape", 64)
    assert done.returncode == 2
    assert "Traceback" not in done.stderr
    assert "error: checkpoint" in done.stderr and "class count" in done.stderr


def test_model_mode_checks_the_ground_truth_before_the_checkpoint(val_dir, cocoapi_dir, tmp_path, capsys):
    ground_truth, _, string_ids = ground_truth_with_string_ids(cocoapi_dir, tmp_path)
    code = eval_cli.main(["--mindrecord", str(val_dir), "--pretrained", str(tmp_path / "not_read.ckpt"),
                          "--ann_file", str(ground_truth), "--testing_shape", "64"])
    assert code == 2
    error = capsys.readouterr().err
    assert f"ground-truth file {ground_truth}" in error and f'"{string_ids[0]}"' in error


def test_evaluate_refuses_a_network_of_another_class_count_and_a_bad_rank(val_dir):
    from yolomodel.network import InferenceNet, create_yolov5

    three_classes = InferenceNet(create_yolov5("yolov5n", 3))
    with pytest.raises(ModelLoadError, match="the network has 3 classes but the dataset has 5 categories"):
        evaluation.evaluate(three_classes, val_dir, testing_shape=64, per_batch_size=2)
    with pytest.raises(ValueError, match="rank must be at most 1, got 2"):
        evaluation.evaluate(three_classes, val_dir, testing_shape=64, per_batch_size=2, rank=2, group_size=2)


# ---------------------------------------------------------------------------------------------
# The chain pipeline -> predictions -> NMS -> original pixels -> results, with a perfect predictor
# ---------------------------------------------------------------------------------------------

def perfect_predictor(ann_file: Path, category_ids: np.ndarray, rows_per_image: int = 16):
    """``predict(batch)`` returning the ground truth of each image as decoded predictions: boxes moved
    into the letterboxed input by the batch's scale and pad, objectness 1, one-hot classes."""
    document = json.loads(ann_file.read_text())
    class_of = {int(c): k for k, c in enumerate(category_ids)}
    boxes_of = {}
    for annotation in document["annotations"]:
        boxes_of.setdefault(annotation["image_id"], []).append(
            annotation["bbox"] + [class_of[annotation["category_id"]]])

    def predict(batch):
        out = np.zeros((len(batch["image_id"]), rows_per_image, 5 + len(category_ids)), np.float32)
        out[:, :, 2:4] = 1.0
        for k, image_id in enumerate(batch["image_id"]):
            for row, (x, y, w, h, cls) in enumerate(boxes_of.get(int(image_id), [])):
                scale, (pad_x, pad_y) = batch["scale"][k], batch["pad"][k]
                out[k, row, :4] = [(x + w / 2) * scale + pad_x, (y + h / 2) * scale + pad_y, w * scale, h * scale]
                out[k, row, 4] = 1.0
                out[k, row, 5 + cls] = 0.95
        return out

    return predict


NMS_OPTIONS = NmsOptions(conf_thresh=0.001, nms_thresh=0.65, max_det=300, multi_label=False)


def test_perfect_predictions_score_one_and_cover_every_image_once(val_dir):
    from yolodata.manifest import load_manifest

    category_ids = load_manifest(val_dir).category_ids
    ann_file = val_dir / "annotations.json"
    predict = perfect_predictor(ann_file, category_ids)
    dataset = create_eval_dataset(val_dir, per_batch_size=3, testing_shape=128)  # 8 images: a padded batch
    results = evaluation.predict_results(dataset, predict, category_ids, NMS_OPTIONS)
    assert all(entry_problem(entry) is None for entry in results)
    assert {r["category_id"] for r in results} <= SYNTHETIC_IDS
    document = json.loads(ann_file.read_text())
    assert len(results) == len(document["annotations"])  # nothing lost, nothing twice (padding skipped)
    scores = score_detections(load_ground_truth(ann_file), results)
    assert scores.stats[0] == pytest.approx(1.0) and scores.stats[1] == pytest.approx(1.0)

    # two ranks, each a contiguous block: together exactly the single-process results
    parts = []
    for rank in range(2):
        rank_dataset = create_eval_dataset(val_dir, per_batch_size=3, testing_shape=128, rank=rank, group_size=2)
        parts.append(evaluation.results_to_words(
            evaluation.predict_results(rank_dataset, predict, category_ids, NMS_OPTIONS)))
    assert evaluation.merge_rank_parts(parts) == results


def test_results_travel_between_ranks_bit_exactly():
    results = [{"image_id": 2**53 + 1, "category_id": 90, "bbox": [0.1, 1 / 3, 129.011, 1e-300], "score": 0.00278},
               {"image_id": 1, "category_id": 1, "bbox": [0.0, 0.0, 0.0, 0.0], "score": 1.0}]
    words = evaluation.results_to_words(results)
    assert words.dtype == np.int32 and words.shape == (2, evaluation.RESULT_WORDS)
    assert evaluation.words_to_results(words) == results
    assert evaluation.merge_rank_parts([words[1:], words[:0], words[:1]]) == [results[1], results[0]]
    assert evaluation.words_to_results(evaluation.results_to_words([])) == []


# ---------------------------------------------------------------------------------------------
# Mode (b) end to end: scripts/run_eval.sh -> tools/eval.py with a random yolov5n, and two ranks
# ---------------------------------------------------------------------------------------------

def _check_results_file(path: Path, val_dir: Path) -> list:
    results = json.loads(path.read_text())
    assert isinstance(results, list) and results  # a random network still proposes boxes at 0.001
    assert all(entry_problem(entry) is None for entry in results)
    image_ids = {image["id"] for image in json.loads((val_dir / "annotations.json").read_text())["images"]}
    assert {r["image_id"] for r in results} <= image_ids
    assert {r["category_id"] for r in results} <= SYNTHETIC_IDS
    return results


# the options of both runs that are compared: small input, batches of 2 (8 images: 4 per rank)
MODEL_RUN_OPTIONS = ["--per_batch_size", "2", "--multi_label", "--max_det", "20"]


@pytest.fixture(scope="module")
def script_run(val_dir, checkpoints, tmp_path_factory):
    """One single-process evaluation of the random yolov5n through scripts/run_eval.sh."""
    out = tmp_path_factory.mktemp("eval-script-run")
    # without the project's .venv the script runs python3 from PATH: make it the one running these tests
    env = dict(os.environ, TESTING_SHAPE="64", EVAL_OUTPUT_DIR=str(out),
               PATH=f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}")
    done = subprocess.run(["bash", str(RUN_EVAL_SH), str(val_dir), str(checkpoints["meta"]), *MODEL_RUN_OPTIONS],
                          capture_output=True, text=True, env=env, timeout=300)
    return done, out


@pytest.mark.slow
def test_run_eval_sh_evaluates_a_random_yolov5n(script_run, val_dir):
    done, out = script_run
    assert done.returncode == 0, done.stdout[-2000:]
    assert "yolov5n, 5 classes" in done.stdout and "(8 images, 1 rank(s)) at 64" in done.stdout
    assert len(summary_numbers(done.stdout)) == 12
    assert eval_cli.RESULT_HEADER in done.stdout and "testing cost time" in done.stdout
    results = _check_results_file(out / "results.json", val_dir)
    per_image = {}
    for entry in results:
        per_image[entry["image_id"]] = per_image.get(entry["image_id"], 0) + 1
    assert max(per_image.values()) <= 20
    assert done.stdout.endswith((out / "log.txt").read_text())
    # the per-class report lands beside the results file
    assert all((out / name).stat().st_size > 0 for name in REPORT_FILES)
    assert "per-class results: P and R at confidence" in done.stdout and "\nall " in done.stdout


def test_run_eval_sh_refuses_missing_inputs(tmp_path):
    done = subprocess.run(["bash", str(RUN_EVAL_SH)], capture_output=True, text=True)
    assert done.returncode == 2 and "usage" in done.stderr
    done = subprocess.run(["bash", str(RUN_EVAL_SH), str(tmp_path / "nope"), str(tmp_path / "x.ckpt")],
                          capture_output=True, text=True)
    assert done.returncode == 2 and "not a folder" in done.stderr


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.mark.slow
def test_two_ranks_give_exactly_the_single_process_results(script_run, val_dir, checkpoints, tmp_path):
    msrun = shutil.which("msrun", path=str(Path(sys.executable).parent)) or shutil.which("msrun")
    if msrun is None:
        pytest.skip("msrun (MindSpore's launcher) is not installed beside this python")
    single, single_out = script_run
    assert single.returncode == 0, single.stdout[-2000:]
    # msrun starts `python` from PATH: make it the one running these tests
    env = dict(os.environ, PATH=f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}")
    done = subprocess.run(
        [msrun, "--worker_num=2", "--local_worker_num=2", f"--master_port={_free_port()}", "--join=True",
         f"--log_dir={tmp_path / 'logs'}", str(EVAL_SCRIPT), "--mindrecord", str(val_dir),
         "--pretrained", str(checkpoints["meta"]), "--testing_shape", "64", *MODEL_RUN_OPTIONS,
         "--results_file", str(tmp_path / "ranks.json"), "--is_distributed", "1"],
        capture_output=True, text=True, env=env, cwd=tmp_path, timeout=600)
    logs = [tmp_path / "logs" / f"worker_{rank}.log" for rank in (0, 1)]
    rank0, rank1 = (log.read_text() if log.exists() else "" for log in logs)
    assert done.returncode == 0, rank0[-3000:] + rank1[-3000:]
    assert "(8 images, 2 rank(s))" in rank0 and "rank 1: detections sent to rank 0" in rank1
    # every image once: the merged results equal the single process's, entry for entry
    single_results = _check_results_file(single_out / "results.json", val_dir)
    assert json.loads((tmp_path / "ranks.json").read_text()) == single_results
    assert summary_numbers(rank0) == summary_numbers(single.stdout)


def test_yolov5_val_flag_sets_val_py_settings_and_explicit_flags_win():
    from yolodata.pipeline.eval_batches import EvalGeometry
    from yolomodel.evaluation import eval_settings

    geometry, nms = eval_settings(yolov5_val=True)
    assert geometry == EvalGeometry(rect=True, scaleup=True, interpolation="yolov5", pad=0.5)
    assert (nms.conf_thresh, nms.nms_thresh, nms.max_det, nms.multi_label) == (0.001, 0.6, 300, True)
    geometry, nms = eval_settings(yolov5_val=True, nms_thresh=0.7, interpolation="linear")
    assert nms.nms_thresh == 0.7 and geometry.interpolation == "linear" and geometry.rect
    geometry, nms = eval_settings()
    assert geometry == EvalGeometry() and (nms.nms_thresh, nms.multi_label) == (0.65, False)
    with pytest.raises(ValueError, match="--nms_thresh"):
        eval_settings(nms_thresh=1.5)
