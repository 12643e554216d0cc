"""Fine-tuning from an imported YOLOv5 checkpoint, and eval / infer / export of imported and fine-tuned models.

One short training run is shared (it compiles yolov5n once): ``yolo-train --weights`` an imported
v7.0 checkpoint (3 classes, v6.0 layout) on the 5-class synthetic set, ``--freeze 10``, 2 epochs at a
64 px training shape. The cheaper checks of what is loaded use ``session.prepare`` (no compilation).
"""
from __future__ import annotations

import importlib.util
import json
import logging
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml

from conftest import shared_data_path, write_rectangle_coco
from yolodata.convert import convert_coco
from yolodata.synthetic import make_synthetic_coco
from yolomodel.network import create_yolov5
from yolomodel.train import checkpoint as ckpt_lib
from yolomodel.train import config as config_lib
from yolomodel.train import session as session_lib
from yolomodel.checkpoint.yolov5_import import import_yolov5

ROOT = Path(__file__).resolve().parents[1]
NO_AUGMENT = {"mosaic": 0.0, "translate": 0.0, "scale": 0.0, "fliplr": 0.0, "hsv_h": 0.0, "hsv_s": 0.0,
              "hsv_v": 0.0, "extras": 0.0}
CUSTOM3 = "yolov5n_v7.0_custom3_last"


def load_tool(name: str):
    spec = importlib.util.spec_from_file_location(f"tools_{name}", ROOT / "tools" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def run_eval(*args):
    """tools/eval.py in a subprocess (it selects the device, which a process can do only before any kernel ran)."""
    return subprocess.run([sys.executable, str(ROOT / "tools" / "eval.py"), *map(str, args)], capture_output=True,
                          text=True, cwd=ROOT, timeout=600)


def fixture_pt(stem: str) -> Path:
    return shared_data_path("yolov5_pt", f"{stem}.pt")


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    """The 5-class synthetic set (train and val shards), a 3-class rectangle set, the imported custom3 .ckpt."""
    root = tmp_path_factory.mktemp("finetune")
    synthetic = make_synthetic_coco(root / "syn", num_images=6, seed=3, image_size=(96, 128), val_fraction=0.34,
                                    background_fraction=0.0)
    train_dir, val_dir = root / "train", root / "val"
    convert_coco(synthetic.image_dir, synthetic.train_json, train_dir, shard_num=1)
    convert_coco(synthetic.image_dir, synthetic.val_json, val_dir, shard_num=1)
    image_dir, ann_file = write_rectangle_coco(root / "rect", num_images=3, size_range=(200, 260))
    rect_dir = root / "rect_shards"
    convert_coco(image_dir, ann_file, rect_dir, shard_num=1)
    config_file = root / "no_augment.yaml"
    config_file.write_text(yaml.safe_dump({"augment": NO_AUGMENT, "max_boxes": 16}))
    _, imported = import_yolov5(fixture_pt(CUSTOM3), root / "custom3.ckpt")
    categories = json.loads(synthetic.train_json.read_text())["categories"]
    return {"root": root, "train": train_dir, "val": val_dir, "rect": rect_dir, "rect_images": image_dir,
            "config": config_file, "imported": imported, "names": [c["name"] for c in categories]}


def train_flags(data, run_dir, *extra):
    return ["--config", str(data["config"]), "--mindrecord", str(data["train"]), "--training_shape", "64",
            "--per_batch_size", "2", "--max_epoch", "2", "--warmup_epochs", "0", "--lr", "0.001",
            "--log_interval", "1", "--num_parallel_workers", "1", "--ckpt_path", str(run_dir), *extra]


def prepared(data, tmp_path, *extra):
    messages = []
    args = config_lib.parse_config(train_flags(data, tmp_path / "run", *extra))
    session = session_lib.prepare(args, 0, 1, log=messages.append)
    return session, args, messages


@pytest.fixture(scope="module")
def finetuned(data):
    run_dir = data["root"] / "run"
    records = []
    handler = logging.Handler()
    handler.emit = records.append
    logging.getLogger().addHandler(handler)
    try:
        code = load_tool("train").main(train_flags(data, run_dir, "--weights", str(data["imported"]), "--freeze",
                                                   "10", "--val_mindrecord", str(data["val"]), "--eval_interval",
                                                   "2", "--save_period", "1"))
    finally:
        logging.getLogger().removeHandler(handler)
    return run_dir, code, [r.getMessage() for r in records]


def test_weights_load_all_but_the_heads_which_start_from_yolov5_priors(data, tmp_path):
    session, args, messages = prepared(data, tmp_path, "--weights", str(data["imported"]))
    network = session.parts.network
    assert (args.yolov5_version, args.yolov5_layout) == ("yolov5n", "v6.0")     # from the checkpoint
    assert network.layout == "v6.0" and network.num_classes == 5
    imported, _ = ckpt_lib.read_checkpoint(data["imported"])
    fresh = {p.name: p.asnumpy() for p in create_yolov5("yolov5n", 5, layout="v6.0", seed=args.seed).get_parameters()}
    for param in network.get_parameters():
        if param.name.startswith("head."):
            np.testing.assert_array_equal(param.asnumpy(), fresh[param.name], err_msg=param.name)
        else:
            np.testing.assert_array_equal(param.asnumpy(), imported[param.name].asnumpy(), err_msg=param.name)
    said = [m for m in messages if "head.*" in m]
    assert said and "NOT loaded" in said[0] and "class count differs (checkpoint: 3, this dataset: 5)" in said[0]
    assert "bias priors" in said[0]
    # the EMA starts from the loaded weights
    ema = {p.name[len("ema."):]: p.asnumpy() for p in session.parts.ema.ema_params}
    np.testing.assert_array_equal(ema["neck.top_down3.cv1.conv.weight"],
                                  imported["neck.top_down3.cv1.conv.weight"].asnumpy())
    assert session.position.yolov5_layout == "v6.0" and ckpt_lib.decode_class_names(
        {"class_names": session.position.class_names}) == data["names"]


def test_a_pt_is_imported_on_the_fly_and_the_same_class_count_loads_the_heads(data, tmp_path):
    shards = data["rect"]                                     # 3 classes, as the custom3 checkpoint
    messages = []
    args = config_lib.parse_config(["--config", str(data["config"]), "--mindrecord", str(shards), "--weights",
                                    str(fixture_pt(CUSTOM3)), "--training_shape", "64", "--ckpt_path",
                                    str(tmp_path / "run")])
    session = session_lib.prepare(args, 0, 1, log=messages.append)
    imported, _ = ckpt_lib.read_checkpoint(data["imported"])
    for param in session.parts.network.get_parameters():
        np.testing.assert_array_equal(param.asnumpy(), imported[param.name].asnumpy(), err_msg=param.name)
    assert any("heads included" in m for m in messages)


@pytest.mark.parametrize("flags, message", [
    (["--yolov5_layout", "v5.0"], "--yolov5_layout v5.0 but --weights .* holds a v6.0"),
    (["--yolov5_version", "yolov5s"], "--yolov5_version yolov5s but --weights .* holds a yolov5n"),
])
def test_flags_that_contradict_the_weights_are_refused(data, tmp_path, flags, message):
    with pytest.raises(ValueError, match=message):
        prepared(data, tmp_path, "--weights", str(data["imported"]), *flags)


def test_from_scratch_the_layout_is_a_choice_and_v5_0_the_default(data, tmp_path):
    session, args, _ = prepared(data, tmp_path, "--yolov5_version", "yolov5n")
    assert args.yolov5_layout == "v5.0" and session.parts.network.layout == "v5.0"
    session, args, _ = prepared(data, tmp_path, "--yolov5_version", "yolov5n", "--yolov5_layout", "v7.0")
    assert args.yolov5_layout == "v6.0" and session.position.yolov5_layout == "v6.0"
    assert "backbone.sppf.cv1.conv.weight" in {p.name for p in session.parts.network.get_parameters()}


def test_freeze_follows_yolov5(data, tmp_path):
    session, _, messages = prepared(data, tmp_path, "--yolov5_version", "yolov5n", "--freeze", "10")
    trained = {p.name for p in session.parts.optimizer.parameters}
    network = {p.name for p in session.parts.network.get_parameters() if "moving_" not in p.name}
    assert trained == {n for n in network if not n.startswith("backbone.")}
    assert any("--freeze: YOLOv5 layers 0-9 are frozen" in m for m in messages)
    session, _, _ = prepared(data, tmp_path, "--yolov5_version", "yolov5n", "--freeze", "0", "1", "24")
    trained = {p.name for p in session.parts.optimizer.parameters}
    assert not any(n.startswith(("backbone.stem.", "backbone.down2.", "head.")) for n in trained)
    assert any(n.startswith("backbone.c3_2.") for n in trained)


@pytest.mark.slow
def test_finetune_runs_keeps_the_frozen_backbone_and_records_the_model(data, finetuned):
    run_dir, code, messages = finetuned
    assert code == 0, messages[-5:]
    assert any("layers 0-9 are frozen" in m for m in messages)
    steps = [m for m in messages if re.match(r"epoch\[\d\], iter\[\d+\], loss:", m)]
    assert len(steps) == 4 and all(np.isfinite(float(re.search(r"loss:([0-9.]+)", m).group(1))) for m in steps)
    final = run_dir / "ckpt_0" / "0-2_2.ckpt"
    params, metadata = ckpt_lib.read_checkpoint(final)
    assert (metadata["yolov5_version"], metadata["yolov5_layout"], metadata["num_classes"]) == ("yolov5n", "v6.0", 5)
    assert ckpt_lib.decode_class_names(metadata) == data["names"]
    imported, _ = ckpt_lib.read_checkpoint(data["imported"])
    backbone_weights = [n for n in imported if n.startswith("backbone.") and "moving_" not in n]
    for name in backbone_weights:                       # frozen: no update reached them, nor their EMA
        np.testing.assert_array_equal(params[name].asnumpy(), imported[name].asnumpy(), err_msg=name)
        np.testing.assert_allclose(params["ema." + name].asnumpy(), imported[name].asnumpy(), rtol=1e-6, atol=1e-7)
    neck = "neck.top_down3.cv1.conv.weight"
    assert not np.array_equal(params[neck].asnumpy(), imported[neck].asnumpy())    # trained
    # validation during training builds the same network (v6.0 layout, the checkpoint's anchors)
    assert any("validating the EMA weights on" in m for m in messages)
    best, _ = ckpt_lib.read_checkpoint(run_dir / "ckpt_0" / "best.ckpt")
    np.testing.assert_array_equal(best["ema." + neck].asnumpy(), params["ema." + neck].asnumpy())
    saved = yaml.safe_load((run_dir / "config.yaml").read_text())
    assert (saved["yolov5_version"], saved["yolov5_layout"], saved["freeze"]) == ("yolov5n", "v6.0", [10])
    assert saved["resume_yolov5"] == str(data["imported"])


@pytest.mark.slow
def test_resume_reads_the_layout_back(data, finetuned, tmp_path):
    run_dir, _, _ = finetuned
    checkpoint = run_dir / "ckpt_0" / "0-1_2.ckpt"
    session, args, _ = prepared(data, tmp_path, "--resume", str(checkpoint), "--freeze", "10")
    assert (args.yolov5_version, args.yolov5_layout, session.parts.network.layout) == ("yolov5n", "v6.0", "v6.0")
    assert session.position.epoch == 1
    with pytest.raises(ValueError, match="--yolov5_layout v5.0 but --resume"):
        prepared(data, tmp_path, "--resume", str(checkpoint), "--freeze", "10", "--yolov5_layout", "v5.0")


@pytest.mark.slow
def test_eval_and_export_accept_the_finetuned_checkpoint(data, finetuned, tmp_path, capsys):
    run_dir, _, _ = finetuned
    final = run_dir / "ckpt_0" / "0-2_2.ckpt"
    done = run_eval("--mindrecord", data["val"], "--pretrained", final, "--testing_shape", 64, "--per_batch_size", 2,
                    "--results_file", tmp_path / "results.json", "--num_parallel_workers", 1)
    out = done.stdout
    assert done.returncode == 0, done.stderr[-2000:]
    assert "yolov5n, 5 classes, EMA weights" in out and "(v6.0 layout)" in out
    assert len(re.findall(r"^ Average (?:Precision|Recall) .* = -?\d\.\d{3}$", out, re.M)) == 12
    # the small half-precision weights file written when training ends exports like the training checkpoint
    weights_file = run_dir / "ckpt_0" / "last_weights.ckpt"
    code = load_tool("export").main(["--ckpt_file", str(weights_file), "--file_format", "MINDIR", "--testing_shape",
                                     "64", "--file_name", str(tmp_path / "finetuned")])
    out = capsys.readouterr().out
    assert code == 0 and (tmp_path / "finetuned.mindir").is_file()
    assert "(v6.0 layout" in out and f"classes {', '.join(data['names'])}" in out


@pytest.mark.slow
def test_imported_checkpoint_runs_directly_with_its_class_names(data, tmp_path, capsys):
    ort = pytest.importorskip("onnxruntime")
    import mindspore as ms

    from yolomodel.checkpoint.loading import load_inference_net

    out_dir = tmp_path / "detections"
    code = load_tool("infer").main(["--pretrained", str(data["imported"]), "--images", str(data["rect_images"]),
                                    "--output_dir", str(out_dir), "--testing_shape", "64", "--conf_thresh", "0.001"])
    assert code == 0
    document = json.loads((out_dir / "detections.json").read_text())
    assert document["class_names"] == ["cat", "dog", "person"]                 # no --names: the checkpoint's
    assert document["model"]["yolov5_layout"] == "v6.0" and len(document["images"]) == 3
    names = {d["class_name"] for image in document["images"] for d in image["detections"]}
    assert names and names <= {"cat", "dog", "person"}
    capsys.readouterr()
    # eval on a 3-class dataset: the names differ from the dataset's, classes are matched by index
    done = run_eval("--mindrecord", data["rect"], "--pretrained", data["imported"], "--testing_shape", 64,
                    "--per_batch_size", 3, "--results_file", tmp_path / "r.json", "--num_parallel_workers", 1)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "class names (cat, dog, person...) differ" in done.stderr and "Average Precision" in done.stdout
    # ONNX export of the imported v6.0 network computes what MindSpore computes
    assert load_tool("export").main(["--ckpt_file", str(data["imported"]), "--file_format", "ONNX",
                                     "--testing_shape", "64", "--file_name", str(tmp_path / "custom3")]) == 0
    images = np.random.default_rng(0).integers(0, 256, (1, 64, 64, 3), dtype=np.uint8)
    expected = load_inference_net(data["imported"]).network(ms.Tensor(images)).asnumpy()
    session = ort.InferenceSession(str(tmp_path / "custom3.onnx"), providers=["CPUExecutionProvider"])
    result = session.run(["predictions"], {"images": images})[0]
    np.testing.assert_allclose(result[..., :4], expected[..., :4], rtol=0, atol=1e-3)
    np.testing.assert_allclose(result[..., 4:], expected[..., 4:], rtol=0, atol=1e-5)


def test_the_shipped_finetune_config_holds_yolov5s_finetune_hyperparameters(tmp_path):
    from yolodata.augment.policy import AugmentConfig

    args = config_lib.parse_config(["--config", str(ROOT / "configs" / "finetune_yolov5.yaml"), "--mindrecord", "x",
                                    "--weights", "yolov5s.ckpt", "--max_epoch", "100", "--t_max", "100"])
    assert (args.lr, args.eta_min, args.momentum, args.weight_decay, args.warmup_epochs) == \
        (0.0032, 0.000384, 0.843, 0.00036, 2)
    assert args.lr_scheduler == "cosine_annealing" and args.resume_yolov5 == "yolov5s.ckpt"
    augment = AugmentConfig(**args.augment)        # every key is one the pipeline knows
    assert (augment.scale, augment.mosaic, augment.hsv_s) == (0.898, 1.0, 0.664)
