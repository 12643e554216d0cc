"""The exported ONNX and MINDIR files run by yolo-infer: the same detections as the checkpoint on coco128,
their sidecars checked, a dynamic batch, and the mistakes a user can make explained."""
from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import cv2
import mindspore as ms
import numpy as np
import pytest

from conftest import shared_data_path
from yolodata.rng import keyed_rng
from yolomodel.cli import export as export_cli
from yolomodel.infer import Detector, letterbox_input
from yolomodel.network import InferenceNet, create_yolov5
from yolomodel.runtimes import CheckpointRuntime, MindirRuntime, OnnxRuntime, open_runtime
from yolomodel.sidecar import DYNAMIC, ExportedModelError, read_sidecar, sidecar_path
from yolomodel.sources import find_sources
from yolomodel.checkpoint.format import save_checkpoint_atomic

PROJECT_ROOT = Path(__file__).resolve().parents[1]
AGREEMENT_SHAPE = 256     # small enough to keep three runs over coco128 short, large enough to detect plenty
SMALL_SHAPE = 64


def export(checkpoint, file_format: str, file_name: Path, shape: int, *flags) -> Path:
    code = export_cli.main(["--ckpt_file", str(checkpoint), "--file_format", file_format, "--testing_shape",
                            str(shape), "--file_name", str(file_name), *map(str, flags)])
    assert code == 0
    return file_name.with_name(file_name.name + "." + file_format.lower())


@pytest.mark.slow
def test_onnx_and_mindir_detect_what_the_checkpoint_detects_on_coco128(tmp_path, coco128_dir, graph_mode):
    """The real COCO yolov5n (v6.1): same number of detections after NMS on every coco128 picture, same
    classes, scores within 1e-5, boxes within 1e-3 px of the network's input (the pixels the three
    runtimes compute in), i.e. 1e-3 / scale in the picture's own pixels (scale = 256 / 640 for most).

    onnxruntime's float32 kernels differ from MindSpore's: measured up to about 4.4e-4 input pixels on a
    620 px wide box (relative 2e-6); MINDIR runs MindSpore's own kernels.
    """
    weights = shared_data_path("yolov5_pt", "yolov5n_v6.1_coco.pt")
    runtimes = {"checkpoint": open_runtime(weights),
                "onnx": open_runtime(export(weights, "ONNX", tmp_path / "n", AGREEMENT_SHAPE)),
                "mindir": open_runtime(export(weights, "MINDIR", tmp_path / "n", AGREEMENT_SHAPE))}
    assert isinstance(runtimes["onnx"], OnnxRuntime) and isinstance(runtimes["mindir"], MindirRuntime)
    assert runtimes["onnx"].class_names == runtimes["checkpoint"].class_names  # from the sidecar
    assert runtimes["onnx"].class_names[0] == "person"
    sources, failures = find_sources([coco128_dir / "val2017"])
    assert len(sources) == 128 and failures == []
    detectors = {name: Detector(runtime, AGREEMENT_SHAPE) for name, runtime in runtimes.items()}
    total = 0
    for source in sources:
        image = source.read()
        _, scale, _ = letterbox_input(image, AGREEMENT_SHAPE)
        expected = detectors["checkpoint"](image)
        total += len(expected)
        for name in ("onnx", "mindir"):
            got = detectors[name](image)
            assert got.shape == expected.shape, f"{name} on {source.path.name}: {len(got)} vs {len(expected)}"
            np.testing.assert_allclose(got[:, :4], expected[:, :4], rtol=0, atol=1e-3 / scale,
                                       err_msg=f"{name} {source.path}")
            np.testing.assert_allclose(got[:, 4], expected[:, 4], rtol=0, atol=1e-5, err_msg=f"{name} {source.path}")
            np.testing.assert_array_equal(got[:, 5], expected[:, 5])
    assert total > 300  # the comparison covers many real detections


@pytest.fixture(scope="module")
def small_exports(tmp_path_factory):
    """A random yolov5n (3 classes, named) exported at 64 px: ONNX fixed batch 2, ONNX and MINDIR with a
    dynamic batch; and a 5-class ONNX (another model); with the network they come from."""
    folder = tmp_path_factory.mktemp("small_exports")
    model = create_yolov5("yolov5n", 3, seed=0)
    metadata = {"yolov5_version": "yolov5n", "num_classes": 3, "training_shape": SMALL_SHAPE,
                "class_names": json.dumps(["cat", "dog", "emu"])}
    checkpoint = save_checkpoint_atomic(folder / "three.ckpt", model, metadata)
    other = save_checkpoint_atomic(folder / "five.ckpt", create_yolov5("yolov5n", 5, seed=1),
                                   {"yolov5_version": "yolov5n", "num_classes": 5})
    return {
        "checkpoint": checkpoint,
        "net": InferenceNet(model),
        "fixed": export(checkpoint, "ONNX", folder / "fixed", SMALL_SHAPE, "--batch_size", 2),
        "onnx_dynamic": export(checkpoint, "ONNX", folder / "dyn", SMALL_SHAPE, "--dynamic_batch"),
        "mindir_dynamic": export(checkpoint, "MINDIR", folder / "dyn", SMALL_SHAPE, "--dynamic_batch"),
        "other": export(other, "ONNX", folder / "other", SMALL_SHAPE),
    }


@pytest.mark.slow
def test_dynamic_and_fixed_batches_give_the_networks_predictions(small_exports):
    images = keyed_rng(0, purpose="test_infer_runtimes").integers(0, 256, (3, SMALL_SHAPE, SMALL_SHAPE, 3),
                                                                  dtype=np.uint8)
    expected = small_exports["net"](ms.Tensor(images)).asnumpy()
    for key in ("onnx_dynamic", "mindir_dynamic", "fixed"):
        runtime = open_runtime(small_exports[key])
        assert runtime.batch_size == (2 if key == "fixed" else None)
        assert runtime.class_names == ("cat", "dog", "emu") and runtime.testing_shape == SMALL_SHAPE
        for count in (1, 3):  # the fixed batch-2 graph gets padded batches
            got = runtime(images[:count])
            assert got.shape == expected[:count].shape, key
            np.testing.assert_allclose(got[..., :4], expected[:count, ..., :4], rtol=0, atol=1e-3, err_msg=key)
            np.testing.assert_allclose(got[..., 4:], expected[:count, ..., 4:], rtol=0, atol=1e-5, err_msg=key)
    sidecar = read_sidecar(small_exports["onnx_dynamic"], file_format="ONNX")
    assert sidecar["batch_size"] == DYNAMIC and sidecar["input"]["layout"] == "NHWC"
    assert sidecar["yolov5_version"] == "yolov5n" and np.asarray(sidecar["anchors"]).shape == (3, 3, 2)


@pytest.mark.slow
def test_missing_foreign_and_mismatched_sidecars_are_explained(small_exports, tmp_path):
    model = shutil.copy(small_exports["onnx_dynamic"], tmp_path / "model.onnx")
    with pytest.raises(ExportedModelError, match="has no sidecar .*model.onnx.json.*export again with yolo-export"):
        open_runtime(model)
    # the sidecar of another export (5 classes) beside this file
    shutil.copy(sidecar_path(small_exports["other"]), sidecar_path(model))
    with pytest.raises(ExportedModelError, match="belongs to another file"):
        open_runtime(model)
    # the file replaced by another model with the sidecar left: the hash tells
    shutil.copy(sidecar_path(small_exports["onnx_dynamic"]), sidecar_path(model))
    assert isinstance(open_runtime(model), OnnxRuntime)
    shutil.copy(small_exports["other"], model)
    with pytest.raises(ExportedModelError, match="belongs to another file"):
        open_runtime(model)
    with pytest.raises(ExportedModelError, match="holds a yolov5n .*exported from another model size"):
        open_runtime(small_exports["fixed"], version="yolov5s")
    with pytest.raises(ExportedModelError, match="exported for 64x64 input"):
        open_runtime(small_exports["fixed"], testing_shape=320)
    with pytest.raises(ExportedModelError, match="detects 3 classes"):
        open_runtime(small_exports["fixed"], num_classes=80)
    broken = sidecar_path(small_exports["fixed"]).read_text().replace('"sidecar_version": 1', '"sidecar_version": 9')
    copy = shutil.copy(small_exports["fixed"], tmp_path / "fixed.onnx")
    sidecar_path(copy).write_text(broken)
    with pytest.raises(ExportedModelError, match="version 9"):
        open_runtime(copy)
    assert isinstance(open_runtime(small_exports["checkpoint"]), CheckpointRuntime)


@pytest.mark.slow
def test_cli_runs_an_exported_model_and_explains_a_missing_sidecar(small_exports, tmp_path):
    pictures = tmp_path / "pictures"
    pictures.mkdir()
    rng = keyed_rng(1, purpose="test_infer_runtimes_cli")
    for index in range(2):
        cv2.imwrite(str(pictures / f"{index}.png"), rng.integers(0, 256, (48, 80, 3), dtype=np.uint8))
    command = [sys.executable, str(PROJECT_ROOT / "tools" / "infer.py"), "--source", str(pictures), "--conf_thresh",
               "0.001", "--save_txt"]
    result = subprocess.run(command + ["--pretrained", str(small_exports["mindir_dynamic"]), "--output_dir",
                                       str(tmp_path / "out")], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    document = json.loads((tmp_path / "out" / "detections.json").read_text())
    assert document["model"]["runtime"] == "mindir" and document["settings"]["testing_shape"] == SMALL_SHAPE
    assert document["class_names"] == ["cat", "dog", "emu"]
    assert sorted(p.name for p in (tmp_path / "out" / "labels").iterdir()) == ["0.txt", "1.txt"]
    lonely = shutil.copy(small_exports["fixed"], tmp_path / "lonely.onnx")
    result = subprocess.run(command + ["--pretrained", str(lonely), "--output_dir", str(tmp_path / "out2")],
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert "has no sidecar" in result.stderr and "lonely.onnx.json" in result.stderr
